"""The real `natrl` command line, driven in subprocesses on short budgets.

Checks what a user sees (exit codes, one-line errors, progress and summary
lines) and the files a run writes: config.toml, progress.csv (columns and
rows), TensorBoard event files (read back with TensorBoard's own reader),
checkpoints (loaded back), model.pt, eval.json and a plot. SIGKILL and SIGINT
in the middle of training are sent for real.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from natrl.cli import main
from natrl.logger import KNOWN_COLUMNS, read_progress
from natrl.rl import load_agent

_SCRIPT = Path(sys.executable).parent / "natrl"
NATRL = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "natrl.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
CUDA = torch.cuda.is_available()


def natrl(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run(
        [*NATRL, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """Start the CLI in the background."""
    return subprocess.Popen(
        [*NATRL, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def wait_for(predicate: object, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Poll ``predicate()`` until true; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc={proc.returncode}) before the condition held:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting")
        time.sleep(0.02)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard scalar, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt"))


# ----------------------------------------------------------------------------- one full run
@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """PPO on CartPole for 2048 steps (8 updates of 256) with evaluations and checkpoints."""
    cwd = tmp_path_factory.mktemp("ppo")
    run_dir = cwd / "run"
    proc = natrl(
        "train", "ppo", "CartPole-v1", "--steps", "2048", "--eval-every", "1024", "--eval-episodes", "2",
        "--checkpoint-every", "512", "--keep", "2", "--set", "n_epochs=2", "--run-dir", str(run_dir),
        cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    yield run_dir, proc


def test_train_writes_config_csv_and_summary(ppo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, proc = ppo_run
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("events.")) == [
        "checkpoints", "config.toml", "eval.json", "model.pt", "progress.csv",
    ]  # fmt: skip
    config = tomllib.loads((run_dir / "config.toml").read_text())
    run, hp = config["run"], config["hyperparameters"]
    assert (run["algo"], run["env"], run["seed"], run["steps"], run["device"]) == (
        "ppo", "CartPole-v1", 0, 2048, "cpu",
    )  # fmt: skip
    assert run["preset_source"].endswith("agents/ppo.toml") and run["preset_table"] == "CartPole-v1"
    assert run["expected_return"] == 475.0 and run["overrides"] == ["n_epochs=2"]
    assert hp["n_epochs"] == 2  # the override
    assert hp["n_envs"] == 8 and hp["batch_size"] == 256  # the CartPole preset
    assert hp["clip_range"] == 0.2 and hp["hidden_sizes"] == [64, 64]  # defaults are recorded too

    cols = read_progress(run_dir / "progress.csv")
    header = (run_dir / "progress.csv").read_text().splitlines()[0].split(",")
    assert header[: len(KNOWN_COLUMNS)] == list(KNOWN_COLUMNS)
    assert {"train/clip_fraction", "train/entropy", "train/value_loss", "train/explained_variance"} <= set(header)
    assert list(cols["time/total_timesteps"]) == list(range(256, 2049, 256))
    assert list(cols["train/n_updates"]) == list(range(1, 9))
    assert np.all(np.isfinite(cols["train/approx_kl"])) and np.all(cols["time/fps"] > 0)
    assert np.all(np.diff(cols["time/time_elapsed"]) > 0)
    evaluated = cols["time/total_timesteps"][np.isfinite(cols["eval/mean_reward"])]
    assert list(evaluated) == [1024, 2048]
    assert np.all(cols["eval/mean_reward"][np.isfinite(cols["eval/mean_reward"])] >= 8)  # CartPole ≥ 8

    summary = json.loads((run_dir / "eval.json").read_text())
    assert summary["timesteps"] == 2048 and summary["episodes"] == 2 and summary["deterministic"]
    assert summary["return_mean"] == pytest.approx(cols["eval/mean_reward"][-1])
    assert summary["expected_return"] == 475.0
    assert summary["reached_expected_return"] == (summary["return_mean"] >= 475.0)
    # the user is told the outcome and where the files are
    assert "evaluation at 2,048 steps (deterministic, 2 episodes)" in proc.stdout
    assert "natrl eval run/model.pt" in proc.stdout  # paths relative to the working directory
    assert "tensorboard --logdir" in proc.stdout
    assert re.search(r"step +1,024/2,048 .*steps/s .*return .*kl .*eval", proc.stdout)


def test_train_writes_tensorboard_events_and_loadable_checkpoints(
    ppo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, _ = ppo_run
    cols = read_progress(run_dir / "progress.csv")
    kl = scalars(run_dir, "train/approx_kl")
    assert [s for s, _ in kl] == list(range(256, 2049, 256))
    np.testing.assert_allclose([v for _, v in kl], cols["train/approx_kl"], rtol=1e-6)
    assert [s for s, _ in scalars(run_dir, "eval/mean_reward")] == [1024, 2048]
    assert scalars(run_dir, "rollout/ep_rew_mean")  # logged once episodes have ended

    assert checkpoint_steps(run_dir) == [1536, 2048]  # every 512 steps, the last 2 kept
    final = load_agent(str(run_dir / "checkpoints" / "step_2048.pt"))
    earlier = load_agent(str(run_dir / "checkpoints" / "step_1536.pt"))
    model = load_agent(str(run_dir / "model.pt"))
    assert (final.num_timesteps, earlier.num_timesteps, model.num_timesteps) == (2048, 1536, 2048)
    assert model.num_updates == 8
    obs = np.zeros(4, dtype=np.float32)
    assert model.predict(obs, deterministic=True)[0] == final.predict(obs, deterministic=True)[0]
    for p, q in zip(model.actor.parameters(), final.actor.parameters(), strict=True):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())


def test_eval_reproduces_the_final_evaluation(
    ppo_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    run_dir, _ = ppo_run
    proc = natrl("eval", str(run_dir), "--episodes", "2", cwd=tmp_path)  # a run dir means its model.pt
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "eval.json").read_text())
    assert "ppo on CartPole-v1 (2,048 steps)" in proc.stdout
    assert "over 2 episodes (deterministic)" in proc.stdout
    # same seeds, deterministic policy: the same returns as the run's final evaluation
    printed = re.search(r"returns: (.*)", proc.stdout)
    assert printed is not None
    assert [float(r) for r in printed.group(1).split(", ")] == summary["returns"]


def test_eval_video_writes_a_gif_or_names_the_missing_package(
    ppo_run: tuple[Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, _ = ppo_run
    gif = tmp_path / "cartpole.gif"
    code = main(["eval", str(run_dir / "model.pt"), "--video", str(gif)])
    err = capsys.readouterr().err
    if importlib.util.find_spec("pygame") is None:  # CartPole draws with pygame
        assert code == 2
        assert err.strip().splitlines() == [err.strip()]
        assert "pip install" in err and "pygame" in err
    else:
        assert code == 0, err
        assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")


def test_plot_draws_mean_and_spread_over_seeds(
    ppo_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    run_dir, _ = ppo_run
    # a second seed of the same experiment: the real run's files with another seed and curve
    runs = tmp_path / "runs"
    first, second = runs / "ppo-s0", runs / "ppo-s1"
    shutil.copytree(run_dir, first)
    shutil.copytree(run_dir, second)
    config = (second / "config.toml").read_text().replace("seed = 0", "seed = 1")
    (second / "config.toml").write_text(config)
    csv = (second / "progress.csv").read_text().splitlines()
    (second / "progress.csv").write_text("\n".join(csv[:5]) + "\n")  # a shorter run
    proc = natrl("plot", str(first), str(second), "-o", "curves.png", "--title", "CartPole", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote curves.png" in proc.stdout
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert width >= 600 and height >= 400  # readable in a README
    # a folder of runs expands to its runs; SVG keeps the labels as text comments
    assert main(["plot", str(runs), "-o", str(tmp_path / "all.svg"), "--band", "std"]) == 0
    svg = (tmp_path / "all.svg").read_text()
    for label in ("CartPole-v1", "ppo (2 seeds)", "environment steps", "evaluation return"):
        assert label in svg


# ----------------------------------------------------------------------------- naming, TRPO, --resume
def test_default_run_dir_overrides_and_extending_a_finished_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train", "trpo", "CartPole-v1", "--steps", "1024", "--n-envs", "2", "--set", "n_steps=256",
        "--set", "hidden_sizes=[32,32]", "--set", "max_kl=0.02", "--eval-every", "0",
        "--eval-episodes", "1", "-q",
    ]  # fmt: skip
    proc = natrl(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"trpo-CartPole-v1-s0-\d{8}-\d{6}", run_dir.name)
    hp = tomllib.loads((run_dir / "config.toml").read_text())["hyperparameters"]
    assert (hp["n_envs"], hp["n_steps"], hp["hidden_sizes"], hp["max_kl"]) == (2, 256, [32, 32], 0.02)
    cols = read_progress(run_dir / "progress.csv")
    assert list(cols["time/total_timesteps"]) == [512, 1024]
    assert np.all(cols["train/kl"] <= 0.02 * 1.01)  # TRPO's trust region, at the overridden radius
    assert np.all(np.isnan(cols["eval/mean_reward"]))  # --eval-every 0: no periodic evaluation
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 1  # but a final one

    # --resume without --run-dir finds the newest run of (algo, env, seed); --steps extends it
    proc = natrl("train", "trpo", "CartPole-v1", "--resume", "--steps", "1536", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resuming runs/" in proc.stdout and "at step 1,024/1,536" in proc.stdout
    assert list(read_progress(run_dir / "progress.csv")["time/total_timesteps"]) == [512, 1024, 1536]
    assert tomllib.loads((run_dir / "config.toml").read_text())["run"]["steps"] == 1536
    assert load_agent(str(run_dir / "model.pt")).num_timesteps == 1536
    # repeating the run's own --set on --resume is fine; changing a hyperparameter is not
    monkeypatch.chdir(tmp_path)
    assert main(["train", "trpo", "CartPole-v1", "--resume", "--set", "max_kl=0.05", "-q"]) == 2
    err = capsys.readouterr().err
    assert "max_kl=0.05 differs from the run's max_kl=0.02; a resumed run keeps" in err


def test_sigkill_mid_training_then_resume_continues_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "train", "ppo", "CartPole-v1", "--steps", "8192", "--checkpoint-every", "1024",
        "--eval-every", "2048", "--eval-episodes", "1", "--set", "n_epochs=5", "--run-dir", str(run_dir),
    ]  # fmt: skip
    proc = spawn(*args, cwd=tmp_path)
    wait_for(lambda: checkpoint_steps(run_dir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # every file left behind is whole and readable
    killed_at = max(checkpoint_steps(run_dir))
    assert killed_at < 8192
    for path in run_dir.rglob("*"):
        if path.is_dir() or path.name.endswith(".tmp"):  # .tmp: scratch of an interrupted atomic write
            continue
        if path.suffix == ".pt":
            assert load_agent(str(path)).num_timesteps == int(path.stem.split("_")[1])
        elif path.name == "config.toml":
            assert tomllib.loads(path.read_text())["run"]["steps"] == 8192
        elif path.name == "progress.csv":
            t = read_progress(path)["time/total_timesteps"]
            assert t[-1] >= killed_at and np.all(np.diff(t) == 256)
        elif path.name.startswith("events.out.tfevents"):
            assert [s for s, _ in scalars(run_dir, "train/approx_kl")][-1] >= killed_at
        elif path.name == ".lock":  # the killed writer's lock: stale now, replaced by the resume
            assert int(path.read_text().split()[0]) == proc.pid
        else:
            pytest.fail(f"unexpected file {path}")

    proc = natrl(*args, "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"at step {killed_at:,}/8,192 from" in proc.stdout
    cols = read_progress(run_dir / "progress.csv")
    # one continued curve: every update exactly once, no duplicated or missing steps
    assert list(cols["time/total_timesteps"]) == list(range(256, 8193, 256))
    assert list(cols["train/n_updates"]) == list(range(1, 33))
    assert np.all(np.diff(cols["time/time_elapsed"]) > 0)  # wall time continues too
    assert list(cols["time/total_timesteps"][np.isfinite(cols["eval/mean_reward"])]) == [2048, 4096, 6144, 8192]
    model = load_agent(str(run_dir / "model.pt"))
    assert (model.num_timesteps, model.num_updates) == (8192, 32)
    assert checkpoint_steps(run_dir)[-1] == 8192
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    kl_steps = [s for s, _ in scalars(run_dir, "train/approx_kl")]  # TensorBoard hides the purged overlap
    assert kl_steps == list(range(256, 8193, 256))


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = spawn(
        "train", "trpo", "CartPole-v1", "--steps", "200000", "--eval-every", "0", "--run-dir", str(run_dir),
        cwd=tmp_path,
    )  # fmt: skip
    progress = run_dir / "progress.csv"
    wait_for(lambda: progress.is_file() and len(progress.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    steps = read_progress(progress)["time/total_timesteps"]
    assert checkpoint_steps(run_dir) == [int(steps[-1])]  # saved at the last finished update
    assert f"interrupted at step {int(steps[-1]):,}/200,000" in out
    assert "resume with: natrl train trpo CartPole-v1 --run-dir run --resume" in out  # relative to cwd
    assert "Traceback" not in err
    assert not (run_dir / "model.pt").exists()


# ----------------------------------------------------------------------------- errors
def test_user_errors_are_one_line_on_stderr_with_exit_code_2(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.toml").write_text("")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00not a checkpoint at all")
    train = ["train", "trpo", "CartPole-v1", "--steps", "512"]
    cases = {
        "unknown algorithm 'foo'; choose from trpo, npg, ppo": ["train", "foo", "CartPole-v1"],
        "unknown environment id 'CartPoel-v1'. Did you mean 'CartPole-v1'": ["train", "trpo", "CartPoel-v1"],
        "unknown hyperparameter 'max_kll' for trpo": [*train, "--set", "max_kll=0.1"],
        "invalid hyperparameter max_kl='abc': must be a finite number, 'lin_<number>' or a function": [
            *train,
            "--set",
            "max_kl=abc",
        ],
        f"run directory {existing} already exists": [*train, "--run-dir", str(existing)],
        "no checkpoint at missing.pt": ["eval", "missing.pt"],
        "corrupt.pt is not a readable natrl checkpoint": ["eval", "corrupt.pt"],
    }
    procs = {msg: spawn(*args, cwd=tmp_path) for msg, args in cases.items()}
    for msg, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (msg, err)
        assert lines == [f"natrl: error: {lines[0][len('natrl: error: ') :]}"], (msg, err)  # one line
        assert msg in lines[0], (msg, lines[0])
        assert out == ""
    assert not (tmp_path / "runs").exists()  # a failed start leaves no run directory behind
    assert sorted(p.name for p in existing.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "max_kl=-1"], "invalid hyperparameter max_kl=-1.0: must be > 0"),
        (["--set", "hidden_sizes=64"], "hidden_sizes must be a list of integers like [64, 64]"),
        (["--set", "max_kl"], "--set expects KEY=VALUE, got 'max_kl'"),
        (["--device", "gpu"], "unknown device 'gpu'; use cpu or cuda"),
        (["--device", "cuda:99"], "CUDA is not available" if not CUDA else "GPU(s)"),
        (["--run-dir", "nope", "--resume"], "cannot resume: run directory nope does not exist"),
        (["--resume"], "nothing to resume: no trpo run on CartPole-v1 with seed 0 under runs/"),
        (["--steps", "-5"], "argument --steps: a step count must be a positive whole number"),
        (["--steps", "lots"], "argument --steps: not a step count: 'lots'"),
    ],
)
def test_more_user_errors_in_process(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["train", "trpo", "CartPole-v1", *args])
    except SystemExit as exc:  # argparse's own errors exit from the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "error:" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_eval_errors_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "half.pt").write_bytes(b"PK\x03\x04" + bytes(100))  # a truncated zip archive
    (tmp_path / "empty_run").mkdir()
    cases = {
        "is not a readable natrl checkpoint (corrupt or truncated?)": ["eval", str(tmp_path / "half.pt")],
        "holds no model.pt and no checkpoints": ["eval", str(tmp_path / "empty_run")],
        "nowhere does not exist": ["plot", str(tmp_path / "nowhere")],
        "is not a natrl run directory (no progress.csv) and holds none": ["plot", str(tmp_path / "empty_run")],
    }
    for message, args in cases.items():
        assert main(args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err


def test_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = natrl("list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"CartPole-v1 +100,000 steps +expected return 475", proc.stdout)
    assert all(f"  {algo} " in proc.stdout for algo in ("trpo", "npg", "ppo"))
    assert "gymnasium.pprint_registry()" in proc.stdout
    assert main(["list", "--params", "ppo"]) == 0
    params = capsys.readouterr().out
    assert re.search(r"clip_range +0\.2 +ε of the clipped surrogate", params)
    assert re.search(r"n_envs +1 +parallel environments", params)  # inherited fields too
    assert re.search(r"target_kl +none ", params)


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["plot"], ["list"]])
def test_help_has_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "natrl " in out
    if not command:
        for sub in ("train", "eval", "plot", "list", "bench"):
            assert sub in out
    if command == ["train"]:
        for option in ("--steps", "--seed", "--n-envs", "--device", "--set", "--run-dir", "--resume"):
            assert option in out


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("total_steps = -5", "total_steps = -5 in [CartPole-v1]; it must be a positive integer"),
        ('max_kl = "0.02"', "invalid hyperparameter max_kl='0.02': must be a finite number"),
        ("max_kl = inf", "invalid hyperparameter max_kl=inf: must be a finite number"),
    ],
)
def test_bad_preset_values_are_one_line(
    table: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "trpo.toml").write_text(f"[CartPole-v1]\n{table}\n")
    assert main(["train", "trpo", "CartPole-v1", "--agents-dir", "specs"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


def test_a_missing_agents_dir_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "trpo", "CartPole-v1", "--agents-dir", "specz"]) == 2
    err = capsys.readouterr().err
    assert "agents directory specz is not a folder" in err and len(err.strip().splitlines()) == 1


def test_one_writer_per_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "ppo", "CartPole-v1", "--steps", "200000", "--checkpoint-every", "512",
            "--eval-every", "0", "--run-dir", str(run_dir)]  # fmt: skip
    proc = spawn(*args, cwd=tmp_path)
    try:
        wait_for(lambda: checkpoint_steps(run_dir), proc)
        # a second writer, resuming the run that still runs: refused, nothing touched
        csv_before = (run_dir / "progress.csv").read_bytes()
        assert main([*args, "--resume", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"is being written by process {proc.pid}" in err and len(err.strip().splitlines()) == 1
        assert (run_dir / "progress.csv").read_bytes()[: len(csv_before)] == csv_before
    finally:
        proc.kill()
        proc.communicate()
    # the writer is gone: its lock is stale and the run resumes
    assert (
        main([*args[:3], "--steps", str(max(checkpoint_steps(run_dir)) + 256), *args[5:], "--resume", "--quiet"]) == 0
    )
    assert not (run_dir / ".lock").exists()


def test_resume_skips_a_checkpoint_of_another_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for env in ("CartPole-v1", "Acrobot-v1"):
        assert main(["train", "trpo", env, "--steps", "512", "--set", "n_steps=128", "--set", "n_envs=2",
                     "--checkpoint-every", "256", "--eval-every", "0", "--run-dir", str(tmp_path / env),
                     "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    foreign = tmp_path / "Acrobot-v1" / "checkpoints" / "step_512.pt"
    shutil.copy(foreign, tmp_path / "CartPole-v1" / "checkpoints" / "step_768.pt")
    code = main(["train", "trpo", "CartPole-v1", "--steps", "1024", "--run-dir", str(tmp_path / "CartPole-v1"),
                 "--resume", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert (
        "skipping checkpoint" in err and "holds a trpo agent on Acrobot-v1, but the run is trpo on CartPole-v1" in err
    )
    assert load_agent(str(tmp_path / "CartPole-v1" / "model.pt")).env_id == "CartPole-v1"

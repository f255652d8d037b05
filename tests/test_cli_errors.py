"""Every CLI error is one line and nothing is silently wrong (issue 30).

Each case runs ``natrl.cli.main`` in-process and checks what a user sees: exactly one line
``natrl: error: …`` on stderr, exit code 2, the thing at fault named, and no half-made state left
behind (no stale ``.lock``, no empty run directory, a damaged ``progress.csv`` untouched when refused).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_lines import one_error_line

from natrl.cli import main
from natrl.logger import KNOWN_COLUMNS, read_progress

SMALL = ["--set", "n_steps=128", "--set", "n_envs=1", "--set", "hidden_sizes=[16]", "--set", "critic_epochs=1",
         "--eval-every", "0", "--eval-episodes", "1", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TRPO run of 512 steps: 4 progress rows, checkpoints at 256 and 512."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    code = main(["train", "trpo", "CartPole-v1", "--steps", "512", "--checkpoint-every", "256", *SMALL,
                 "--run-dir", str(run_dir)])  # fmt: skip
    assert code == 0
    assert list(read_progress(run_dir / "progress.csv")["time/total_timesteps"]) == [128, 256, 384, 512]
    return run_dir


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    return run_dir


def resume(run_dir: Path, steps: int = 768) -> list[str]:
    return ["train", "trpo", "CartPole-v1", "--steps", str(steps), "--run-dir", str(run_dir), "--resume", "--quiet"]


def test_extending_a_run_says_that_its_linear_schedules_stretch(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # TRPO's CartPole preset shrinks max_kl linearly to 0 over the budget (SB3's progress remaining): a longer budget
    # moves where it reaches 0, which the resumed run says in one line
    run_dir = copy_run(finished_run, tmp_path)
    assert main(resume(run_dir)[:-1]) == 0  # without --quiet
    out = capsys.readouterr().out
    assert "natrl train: the linear schedules of max_kl now run to 0 at 768 steps instead of 512\n" in out


# ----------------------------------------------------------------------------- progress.csv on resume
def test_resume_repairs_a_progress_csv_with_a_row_cut_mid_file_and_a_cut_last_row(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    progress = run_dir / "progress.csv"
    lines = progress.read_text().splitlines()
    damaged = [lines[0], lines[1], lines[2][:20], *lines[3:]]  # the row of step 256 cut in the middle
    progress.write_text("\n".join(damaged) + "\n" + lines[4][:15])  # and a last row cut off
    assert main(resume(run_dir)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("natrl: warning: "), err
    assert str(progress) in err[0] and "1 damaged row (line 3) is dropped" in err[0]
    assert "last line was cut off" in err[0] and "kept as progress.csv.damaged" in err[0]
    # the rows that could be read are kept; the run continues after them
    assert list(read_progress(progress)["time/total_timesteps"]) == [128, 384, 512, 640, 768]
    assert (run_dir / "progress.csv.damaged").read_text().splitlines()[2] == lines[2][:20]
    assert not (run_dir / ".lock").exists()


def test_resume_rewrites_a_damaged_header_that_still_names_its_extra_columns(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    progress = run_dir / "progress.csv"
    lines = progress.read_text().splitlines()
    header = lines[0].split(",")
    progress.write_text("\n".join([",".join(["\x00" * 9, *header[1:]]), *lines[1:]]) + "\n")
    assert main(resume(run_dir)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 1 was not a progress.csv header and is rewritten" in err[0], err
    assert progress.read_text().splitlines()[0] == lines[0]
    cols = read_progress(progress)
    assert list(cols["time/total_timesteps"]) == [128, 256, 384, 512, 640, 768]
    assert np.isfinite(cols["train/kl"]).all()  # rows written after the repair are not empty cells


def test_resume_refuses_a_garbage_header_in_one_line_and_touches_nothing(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    progress = run_dir / "progress.csv"
    lines = progress.read_text().splitlines()
    damaged = "garbage\n" + "\n".join(lines[1:]) + "\n"
    progress.write_text(damaged)
    line = one_error_line(capsys, resume(run_dir))
    assert str(progress) in line and "line 1 is not a natrl progress.csv header" in line
    assert f"mv {progress} {progress}.damaged" in line  # what to do
    assert progress.read_text() == damaged
    assert not (run_dir / ".lock").exists()
    # doing what it says resumes the run with a new progress.csv
    progress.rename(run_dir / "progress.csv.damaged")
    assert main(resume(run_dir)) == 0
    assert list(read_progress(progress)["time/total_timesteps"]) == [640, 768]
    assert progress.read_text().splitlines()[0].split(",")[: len(KNOWN_COLUMNS)] == list(KNOWN_COLUMNS)


# ----------------------------------------------------------------------------- env_kwargs
def test_an_env_keyword_the_env_does_not_take_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, ["train", "trpo", "CartPole-v1", "--env-kwargs", "bogus=1", "--steps", "256"])
    assert "CartPole-v1 takes no keyword 'bogus' (given with --env-kwargs)" in line
    assert "sutton_barto_reward" in line  # the keywords it takes
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "trpo.toml").write_text(
        "[CartPole-v1]\ntotal_steps = 256\n[CartPole-v1.env_kwargs]\nbogus = 1\n"
    )
    line = one_error_line(capsys, ["train", "trpo", "CartPole-v1", "--agents-dir", "specs"])
    assert "takes no keyword 'bogus' (given with [CartPole-v1.env_kwargs] in specs/trpo.toml)" in line
    assert list(tmp_path.iterdir()) == [tmp_path / "specs"]  # no run directory


# ----------------------------------------------------------------------------- bench --report
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "it holds a JSON list, not an object with metadata and runs"),
        ('{"metadata": {}}', "its 'runs' entry is missing, not a list"),
        ('{"metadata": {}, "runs": [{"library": "natrl", "algo": "trpo", "env": "E", "status": "ok", "seed": "0"}]}',
         "runs[0].seed is '0', not an integer"),
        ('{"metadata": {}, "runs": [{"library": "natrl", "algo": "trpo", "env": "E", "status": "ok", "seed": 0, '
         '"steps_per_second": "fast"}]}', "runs[0].steps_per_second is 'fast', not a number"),
        ("{not json", "Expecting property name"),
    ],
)  # fmt: skip
def test_bench_report_of_a_file_that_is_not_results_json_is_one_line(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "results.json"
    source.write_text(content)
    line = one_error_line(capsys, ["bench", "--report", str(source), "--out", str(tmp_path / "out")])
    assert f"cannot read results from {source}" in line and message in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- --agents-dir
@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--params", "trpo"],
        ["bench", "--algos", "trpo", "--envs", "CartPole-v1", "--seeds", "0", "--dry-run"],
        ["bench", "--report", "results.json"],
    ],
)
def test_a_missing_agents_dir_fails_every_command_in_one_line(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.json").write_text('{"metadata": {}, "runs": []}')
    line = one_error_line(capsys, [*argv, "--agents-dir", str(tmp_path / "nonexistent")])
    assert f"agents directory {tmp_path / 'nonexistent'} is not a folder" in line


# ----------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize(
    ("algo", "item", "message"),
    [
        ("trpo", "critic_epochs=0", "invalid hyperparameter critic_epochs=0: an integer >= 1"),
        ("acktr", "critic_epochs=0", "invalid hyperparameter critic_epochs=0: an integer >= 1"),
        ("ppo", "vf_coef=0", "invalid hyperparameter vf_coef=0.0: must be > 0"),
        ("trpo", "torch_threads=1000000000", "invalid hyperparameter torch_threads=1000000000: None or an integer "
         "from 1 to 1024"),
        ("trpo", "torch_threads=0", "torch_threads=0"),
        ("trpo", "cg_iters=0", "invalid hyperparameter cg_iters=0: an integer >= 1"),
        ("ppo", "n_epochs=0", "invalid hyperparameter n_epochs=0: an integer >= 1"),
        ("trpo", "damping=nan", "invalid hyperparameter damping=nan: must be a finite number"),
        ("ppo", "ent_coef=inf", "invalid hyperparameter ent_coef=inf: must be a finite number"),
    ],
)  # fmt: skip
def test_hyperparameters_that_would_be_silently_wrong_are_refused(
    algo: str,
    item: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, ["train", algo, "CartPole-v1", "--steps", "256", "--set", item])
    assert message in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the file system
def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_run_dir_under_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somefile").write_text("")
    line = one_error_line(capsys, ["train", "trpo", "CartPole-v1", "--steps", "256", *SMALL,
                                   "--run-dir", "somefile/run"])  # fmt: skip
    assert "somefile/run: Not a directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]


def test_a_full_disk_when_a_run_starts_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("natrl.atomic.os.fsync", _no_space)
    line = one_error_line(capsys, ["train", "trpo", "CartPole-v1", "--steps", "256", *SMALL, "--run-dir", "run"])
    assert "run/config.toml: No space left on device; the disk is full" in line
    assert list(tmp_path.iterdir()) == []  # no lock, no scratch file, no empty run directory


def test_a_full_disk_while_training_is_one_line_naming_the_file_and_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from natrl.logger import CSVOutput

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(CSVOutput, "_write", _no_space)
    line = one_error_line(capsys, ["train", "trpo", "CartPole-v1", "--steps", "256", *SMALL, "--run-dir", "run"])
    assert "run/progress.csv: No space left on device" in line
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_full_disk_on_resume_is_one_line_and_releases_the_lock(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    before = (run_dir / "progress.csv").read_bytes()
    monkeypatch.setattr("natrl.atomic.os.fsync", _no_space)
    line = one_error_line(capsys, resume(run_dir))
    assert f"{run_dir}/progress.csv: No space left on device" in line
    assert not (run_dir / ".lock").exists()
    assert (run_dir / "progress.csv").read_bytes() == before
    assert not list(run_dir.glob(".*.tmp"))


def _read_only_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a lock file fails as on a read-only file system (root ignores chmod)."""
    real_open = os.open

    def read_only(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("natrl.runs.lock.os.open", read_only)


def test_a_read_only_run_dir_on_resume_is_one_line(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    _read_only_locks(monkeypatch)
    line = one_error_line(capsys, resume(run_dir))
    assert f"{run_dir}/.lock: Read-only file system; the file system is read-only" in line
    assert not (run_dir / ".lock").exists()


def test_a_read_only_new_run_dir_is_one_line_and_leaves_no_empty_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _read_only_locks(monkeypatch)
    line = one_error_line(capsys, ["train", "trpo", "CartPole-v1", "--steps", "256", *SMALL, "--run-dir", "run"])
    assert "run/.lock: Read-only file system" in line
    assert list(tmp_path.iterdir()) == []


def test_plot_output_that_cannot_be_written_is_one_line(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somefile").write_text("")
    line = one_error_line(capsys, ["plot", str(finished_run), "-o", "somefile/curves.png"])
    assert "somefile: Not a directory" in line
    line = one_error_line(capsys, ["plot", str(finished_run), "-o", "curves.xyz"])
    assert "Format 'xyz' is not supported" in line
    monkeypatch.setattr("natrl.atomic.os.fsync", _no_space)
    line = one_error_line(capsys, ["plot", str(finished_run), "-o", "curves.png"])
    assert "curves.png: No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]  # no half-written image


def test_plot_of_a_run_with_no_rows_yet_is_one_line_and_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.csv").write_text(",".join(KNOWN_COLUMNS) + "\n")  # a run killed before its first update
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" warning came before the line
        line = one_error_line(capsys, ["plot", str(run), "-o", str(tmp_path / "curves.png")])
    assert line.startswith("natrl: error: nothing to plot: no run has values of")


def test_the_results_file_round_trips_through_the_schema_check(tmp_path: Path) -> None:
    from natrl.bench.results import read_results, write_results

    row = {"index": 0, "library": "natrl", "algo": "trpo", "env": "CartPole-v1", "seed": 0, "status": "ok",
           "steps": 256, "final_eval_mean": float("nan"), "curve": [{"steps": 256, "train_seconds": 1.0,
                                                                      "mean": float("nan")}]}  # fmt: skip
    write_results(tmp_path, [row], {"command": "natrl bench"})
    meta, runs = read_results(tmp_path)
    assert meta["command"] == "natrl bench" and runs[0]["final_eval_mean"] is None
    assert json.loads((tmp_path / "results.json").read_text())["runs"][0]["curve"][0]["mean"] is None

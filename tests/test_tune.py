"""``natrl tune``: Optuna studies of natrl's hyperparameters (natrl/runs/tune.py, natrl/cli/tune.py).

Tiny budgets on CartPole: a study in SQLite holds its trials and a rerun adds to it; the objective is the final
evaluation ``natrl train`` writes for the same hyperparameters; the median pruner stops a trial below the
median; the best trial is a preset natrl's loader reads; a bad storage is one line; a SIGKILLed trial is
retried when the study is run again; two processes share the trials.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

optuna = pytest.importorskip("optuna")

from natrl import A2C, ACKTR, NPG, PPO, TRPO  # noqa: E402
from natrl.cli import main  # noqa: E402
from natrl.presets import load_preset  # noqa: E402
from natrl.runs.search_spaces import SEARCH_SPACES, sample_a2c, sample_ppo, sample_trpo  # noqa: E402
from natrl.runs.tune import (  # noqa: E402
    EVALUATIONS,
    PRESET_ATTR,
    TuneError,
    TuneSpec,
    objective,
    open_storage,
    open_study,
)

STEPS = 1024
TINY = ["--steps", str(STEPS), "--eval-episodes", "2", "-q"]


def _study(root: Path, name: str = "trpo-CartPole-v1") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'runs/tune/trpo-CartPole-v1.db'}")


def test_a_study_in_sqlite_continues_when_rerun_and_writes_a_loadable_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "trpo", "CartPole-v1", "--trials", "3", *TINY]) == 0
    study = _study(tmp_path)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # the first trial runs natrl's preset unchanged; the others sample the search space
    assert (
        trials[0].params == {} and trials[0].user_attrs[PRESET_ATTR] and trials[0].user_attrs["hyperparameters"] == {}
    )
    assert all(t.params and not t.user_attrs.get(PRESET_ATTR) for t in trials[1:])
    assert study.user_attrs["natrl"] == {"algo": "trpo", "env": "CartPole-v1", "steps": STEPS, "seeds": [0],
                                         "eval_episodes": 2}  # fmt: skip
    for t in trials:  # the objective is the mean of the seeds' final evaluations
        assert t.value == pytest.approx(sum(t.user_attrs["returns"]) / len(t.user_attrs["returns"]))
        assert len(t.intermediate_values) >= 1 and t.intermediate_values[EVALUATIONS] == t.value

    # the preset: natrl's [CartPole-v1] table with the best trial's values over it, loadable as agents/trpo.toml
    folder = tmp_path / "runs/tune/trpo-CartPole-v1"
    preset = load_preset("trpo", "CartPole-v1", TRPO.config_cls, directory=folder)
    best = study.best_trial
    assert preset.total_steps == STEPS and preset.expected_return is None
    natrl_preset = load_preset("trpo", "CartPole-v1", TRPO.config_cls)
    expected = {**natrl_preset.hyperparameters, **best.user_attrs["hyperparameters"]}
    expected = {k: v for k, v in expected.items() if v is not None}
    assert preset.hyperparameters == expected

    # rerunning the command adds trials to the same study, with new draws (the sampler is reseeded per rerun)
    assert main(["tune", "trpo", "CartPole-v1", "--trials", "2", *TINY]) == 0
    trials = _study(tmp_path).get_trials()
    assert len(trials) == 5
    assert trials[3].params != trials[0].params and trials[4].params != trials[1].params
    # ... but not with another budget, which would score trials differently
    capsys.readouterr()
    assert main(["tune", "trpo", "CartPole-v1", "--trials", "1", "--steps", "2048", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was run with steps 1024" in err
    # a hand-written preset file is never overwritten
    (tmp_path / "mine.toml").write_text("[CartPole-v1]\nn_steps = 64\n")
    assert main(["tune", "trpo", "CartPole-v1", "--trials", "1", *TINY, "--out", "mine.toml"]) == 2
    assert "was not written by natrl tune" in capsys.readouterr().err
    assert (tmp_path / "mine.toml").read_text() == "[CartPole-v1]\nn_steps = 64\n"
    assert len(_study(tmp_path).get_trials()) == 5  # refused before any trial ran


def test_the_objective_is_the_final_evaluation_natrl_train_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = {"n_steps_pow": 7, "batch_size": 64, "gamma": 0.99, "gae_lambda": 0.95, "critic_lr": 2e-3,
              "critic_epochs": 5, "cg_iters": 10, "target_kl": 0.02, "net_arch": "small",
              "activation": "relu"}  # fmt: skip
    trial = optuna.trial.FixedTrial(params)
    value = objective(trial, TuneSpec("trpo", "CartPole-v1", STEPS, (3,), eval_episodes=3))
    hp = trial.user_attrs["hyperparameters"]
    assert hp["n_steps"] == 128 and hp["gamma"] == pytest.approx(0.99) and hp["max_kl"] == 0.02
    sets = [f"{k}={json.dumps(v) if v is not None else 'none'}" for k, v in hp.items()]
    args = ["train", "trpo", "CartPole-v1", "--seed", "3", "--steps", str(STEPS), "--eval-episodes", "3", "-q",
            "--run-dir", "run"]  # fmt: skip
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    assert json.loads((tmp_path / "run/eval.json").read_text())["return_mean"] == value


def test_the_median_pruner_stops_a_trial_below_the_median_of_earlier_ones() -> None:
    spec = TuneSpec("trpo", "CartPole-v1", 4096, (0,), eval_episodes=2)
    study = open_study(optuna.storages.InMemoryStorage(), "prune", spec, startup_trials=1, enqueue_preset=False)
    # an earlier trial that reached 500 at every evaluation: CartPole after a few updates is far below it
    top = {j: 500.0 for j in range(1, EVALUATIONS + 1)}
    study.add_trial(optuna.trial.create_trial(value=500.0, state=optuna.trial.TrialState.COMPLETE,
                                              intermediate_values=top))  # fmt: skip
    study.optimize(lambda t: objective(t, spec), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    at = trial.user_attrs["pruned_at"]
    # pruned at the first evaluation after the warm-up (a third of the evaluations), long before the budget
    assert max(trial.intermediate_values) == EVALUATIONS // 3 and at["steps"] < 4096 / 2
    assert at["return"] == trial.intermediate_values[EVALUATIONS // 3]


def test_search_spaces_are_the_zoos_in_natrls_names() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hp = sample_trpo(trial, k=3, n_envs=2, total_steps=3000)
    dists = trial.distributions
    # rl_zoo3/hyperparams_opt.py's sample_trpo_params: its choices, in natrl's names
    assert dists["gamma"].choices == (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)
    assert dists["gae_lambda"].choices == (0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0)
    assert dists["target_kl"].choices == (0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.001)
    assert hp["max_kl"] == pytest.approx(3 * trial.params["target_kl"])  # sb3-contrib's per-dimension KL times k
    assert dists["critic_epochs"].choices == dists["cg_iters"].choices == (5, 10, 20, 25, 30)
    assert (dists["critic_lr"].low, dists["critic_lr"].high) == (1e-5, 1.0)
    assert (dists["n_steps_pow"].low, dists["n_steps_pow"].high) == (3, 10)  # 2^10 per env: 2 envs fit 3000 steps
    assert hp["critic_batch_size"] <= hp["n_steps"] and hp["ortho_init"] is False
    assert set(hp) == {"n_steps", "critic_batch_size", "gamma", "gae_lambda", "critic_lr", "critic_epochs",
                       "cg_iters", "max_kl", "ortho_init", "hidden_sizes", "critic_hidden_sizes",
                       "activation"}  # fmt: skip
    TRPO.config_cls(**hp)  # valid natrl values
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    hp = sample_ppo(trial, k=1, n_envs=8, total_steps=10**6)
    assert trial.distributions["clip_range"].choices == (0.1, 0.2, 0.3, 0.4)
    assert trial.distributions["n_steps_pow"].high == 12 and hp["batch_size"] <= hp["n_steps"] * 8
    PPO.config_cls(**hp)


def test_the_a2c_search_space_is_the_zoos_and_every_draw_builds_an_a2c() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    sample_a2c(trial, k=1, n_envs=8, total_steps=10**6)
    dists = trial.distributions
    # rl_zoo3/hyperparams_opt.py's sample_a2c_params (DLR-RM/rl-baselines3-zoo d477a07): its choices
    assert dists["gamma"].choices == (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)
    assert dists["gae_lambda"].choices == (0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0)
    assert dists["max_grad_norm"].choices == (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 5)
    assert dists["normalize_advantage"].choices == dists["use_rms_prop"].choices == (False, True)
    assert dists["ortho_init"].choices == (False, True) and dists["lr_schedule"].choices == ("linear", "constant")
    assert (dists["learning_rate"].low, dists["learning_rate"].high, dists["learning_rate"].log) == (1e-5, 1.0, True)
    assert (dists["ent_coef"].low, dists["ent_coef"].high, dists["ent_coef"].log) == (1e-8, 0.1, True)
    assert (dists["vf_coef"].low, dists["vf_coef"].high, dists["vf_coef"].log) == (1e-8, 1.0, False)
    assert (dists["n_steps_pow"].low, dists["n_steps_pow"].high) == (3, 11)  # 8 to 2,048 steps per env
    assert dists["net_arch"].choices == ("small", "medium") and dists["activation"].choices == ("tanh", "relu")

    # every draw is a valid A2C, on a discrete and a continuous env: the corners, then 24 random draws
    corners = [
        {"learning_rate": 1.0, "vf_coef": 1e-8, "ent_coef": 0.1, "lr_schedule": "linear", "n_steps_pow": 3},
        {"learning_rate": 1e-5, "vf_coef": 1.0, "ent_coef": 1e-8, "lr_schedule": "constant", "n_steps_pow": 11},
    ]
    for corner in corners:
        study.enqueue_trial(corner)  # asked first, the rest of each sampled
    linear = constant = 0
    for i in range(len(corners) + 24):
        trial = study.ask()
        env = "CartPole-v1" if i % 2 else "Pendulum-v1"
        hp = sample_a2c(trial, k=1, n_envs=2, total_steps=10**5)
        assert hp["n_steps"] == 2 ** trial.params["n_steps_pow"]
        lr = trial.params["learning_rate"]
        if trial.params["lr_schedule"] == "linear":  # the zoo's linear_schedule(lr): lr · progress remaining
            linear += 1
            assert hp["learning_rate"] == f"lin_{lr!r}"
        else:
            constant += 1
            assert hp["learning_rate"] == lr
        agent = A2C(env, seed=i, n_envs=2, **hp)
        for name in ("gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm", "normalize_advantage",
                     "use_rms_prop", "ortho_init", "activation"):  # fmt: skip
            assert getattr(agent.config, name) == trial.params.get(name, hp[name])
        assert list(agent.config.hidden_sizes) == {"small": [64, 64], "medium": [256, 256]}[trial.params["net_arch"]]
        assert isinstance(agent.optimizer, torch.optim.RMSprop) == trial.params["use_rms_prop"]
        assert agent.scheduled("learning_rate") == pytest.approx(lr, rel=1e-12)
        agent.close()
    assert linear and constant


def test_an_a2c_study_runs_and_writes_a_preset_a2c_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "a2c", "CartPole-v1", "--trials", "3", *TINY]) == 0
    db = f"sqlite:///{tmp_path / 'runs/tune/a2c-CartPole-v1.db'}"
    trials = optuna.load_study(study_name="a2c-CartPole-v1", storage=db).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert trials[0].user_attrs[PRESET_ATTR] and all("use_rms_prop" in t.params for t in trials[1:])
    best = max(trials, key=lambda t: t.value)
    preset = load_preset("a2c", "CartPole-v1", A2C.config_cls, directory=tmp_path / "runs/tune/a2c-CartPole-v1")
    assert preset.total_steps == STEPS and preset.expected_return is None
    natrl_preset = load_preset("a2c", "CartPole-v1", A2C.config_cls).hyperparameters
    expected = {**natrl_preset, **best.user_attrs["hyperparameters"]}
    assert preset.hyperparameters == {k: v for k, v in expected.items() if v is not None}
    A2C("CartPole-v1", **preset.hyperparameters).close()


def test_tune_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tune", "--help"])
    assert exit_.value.code == 0 and "examples:" in capsys.readouterr().out
    assert main(["tune", "ddpg", "CartPole-v1", *TINY]) == 2
    assert "ddpg" in capsys.readouterr().err


@pytest.mark.parametrize("algo", ["npg", "acktr"])
def test_npg_and_acktr_spaces_draw_valid_agents_with_the_step_in_joint_kl(algo: str) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    corner = {"n_steps_pow": 3, "batch_size": 512, "target_kl": 0.1, "kl_clip": 0.05, "learning_rate": 1.0}
    study.enqueue_trial(corner)  # the largest steps and batches with the shortest rollout, then random draws
    cls = {"npg": NPG, "acktr": ACKTR}[algo]
    for i in range(8):
        trial = study.ask()
        env, k = ("CartPole-v1", 1) if i % 2 else ("Pendulum-v1", 3)  # k: as if the Box had 3 dimensions
        hp = SEARCH_SPACES[algo](trial, k=k, n_envs=2, total_steps=10**5)
        if algo == "npg":  # the zoo's target_kl is a KL per action dimension; NPG's step_size the joint one
            assert hp["step_size"] == pytest.approx(k * trial.params["target_kl"]) and "max_kl" not in hp
        else:
            assert hp["kl_clip"] == trial.params["kl_clip"]  # a joint KL bound, as the presets' (no k)
            assert hp["critic_batch_size"] <= hp["n_steps"] * 2
        agent = cls(env, seed=i, n_envs=2, **hp)
        assert agent.config.n_steps == 2 ** trial.params["n_steps_pow"]
        agent.learn(2 * hp["n_steps"])  # one update with the drawn values
        assert all(bool(torch.isfinite(p).all()) for p in agent.actor.parameters())
        agent.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("postgresql://natrl:s3cret@127.0.0.1:9/optuna", "postgresql://natrl:***@127.0.0.1:9/optuna:"),
        ("sqlite:///{tmp}/file.txt/study.db", "file.txt"),
    ],
)
def test_a_storage_that_does_not_answer_is_one_line(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    start = time.monotonic()
    assert main(["tune", "trpo", "CartPole-v1", "--storage", url.format(tmp=tmp_path), *TINY]) == 2
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("natrl: error:") and message in err and "s3cret" not in err


def test_a_database_that_stays_locked_is_one_line_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the database: it answers nothing
    start = time.monotonic()
    try:
        with pytest.raises(TuneError, match=r"did not answer within 1 s|database is locked"):
            open_storage(f"sqlite:///{path}", timeout=1.0)
    finally:
        holder.close()
    assert time.monotonic() - start < 10


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_a_sigkilled_trial_is_retried_when_the_study_runs_again(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "natrl", "tune", "trpo", "CartPole-v1", "--trials", "1", "--steps", "8192",
            "--eval-episodes", "2", "--heartbeat", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env())
    db = tmp_path / "runs/tune/trpo-CartPole-v1.db"
    deadline = time.monotonic() + 120
    running = False
    while not running and time.monotonic() < deadline:  # wait until the trial runs (read with sqlite3 only)
        time.sleep(0.5)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                running = bool(con.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0])
        except sqlite3.OperationalError:  # no file or no table yet
            continue
    assert running and proc.poll() is None
    time.sleep(1.0)  # then kill its process without warning, mid-trial
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(4.0)  # longer than the grace period (3 heartbeats)
    done = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = _study(tmp_path).get_trials()
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and math.isfinite(trials[1].value)


@pytest.mark.slow
def test_parallel_trials_run_in_processes_on_one_storage(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "natrl", "tune", "trpo", "CartPole-v1", "--trials", "3", "--n-jobs", "2",
            *TINY[:-1]]  # fmt: skip
    done = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = _study(tmp_path).get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert done.stdout.count("return") == 3 + 1  # one line per trial, reported by the parent, and the best


def test_an_empty_study_name_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "trpo", "CartPole-v1", "--study-name", " ", *TINY]) == 2
    assert capsys.readouterr().err == (
        "natrl: error: --study-name is empty; give a name, or leave the option out for ALGO-ENV\n"
    )
    assert not list(tmp_path.iterdir())  # no database made

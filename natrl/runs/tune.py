"""Hyperparameter search with Optuna, as rl-baselines3-zoo tunes (``python -m rl_zoo3.train -optimize``).

A study tunes one (algorithm, environment) at a fixed step budget. Each trial samples hyperparameters from the
zoo's search space for the algorithm in natrl's names (:data:`natrl.runs.search_spaces.SEARCH_SPACES`), puts them
over natrl's preset for the env, and trains one agent per seed in turn. Every agent is evaluated deterministically
as ``natrl train`` evaluates a run (every budget/10 steps and after the last update, ``episodes`` episodes); each
evaluation is reported to the trial, and Optuna's median pruner stops a trial whose evaluation falls below the
median of the earlier trials at the same evaluation. The objective is the final deterministic evaluation, averaged
over the seeds: for each seed, the number ``natrl train`` writes to ``eval.json`` for the same hyperparameters.

Studies live in an Optuna storage: SQLite by default, any database URL (PostgreSQL, MySQL) to run trials on
several machines. Rerunning the same study continues it (``load_if_exists``); the study records its budget,
seeds and evaluation, and a rerun with others is refused. Running trials send a heartbeat; a trial whose
process died (``SIGKILL``, a lost machine) is marked failed once it has been silent for ``3 × heartbeat``
seconds and is retried with the same hyperparameters (Optuna's ``RetryHeartbeatStaleTrialCallback``,
``RetryFailedTrialCallback`` before Optuna 4.9).
Parallel trials run in separate processes, each calling ``study.optimize`` on the same storage (Optuna's way
for several processes or machines; its ``n_jobs`` runs threads, and natrl trains in the calling thread).

A new study's first trial is natrl's preset itself (enqueued, marked with the user attribute
``natrl_preset``), so the search starts from what ``natrl train`` would run and the best trial is never worse
than the preset on the objective. The sampler is TPE (seeded; ``multivariate=True`` as the zoo's), whose
first ``startup_trials`` trials are random, and the median pruner waits for as many finished trials and for a
third of the first seed's evaluations, as the zoo's does. Nothing here prints; :func:`run_study` reports
finished trials to a callable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natrl.runs.search_spaces import SEARCH_SPACES
from natrl.runs.toml import dumps_toml

if TYPE_CHECKING:
    import optuna

    from natrl.rl.agent import OnPolicyAgent

__all__ = [
    "EVALUATIONS",
    "PRESET_ATTR",
    "SEARCH_SPACES",
    "TuneError",
    "TuneSpec",
    "best_table",
    "check_preset_path",
    "default_storage",
    "objective",
    "open_storage",
    "open_study",
    "run_study",
    "write_preset",
]

EVALUATIONS = 10
"""Deterministic evaluations per agent: every budget/10 steps, as ``natrl train`` evaluates a run."""
PRESET_ATTR = "natrl_preset"
"""The user attribute of the trial that runs natrl's preset unchanged (the first trial of a new study)."""
_MARKER = "natrl tune"  # the first words of a preset file natrl tune wrote (and may write again)


class TuneError(ValueError):
    """A study that cannot be opened or continued, or a preset file that must not be overwritten (one line)."""


@dataclass(frozen=True)
class TuneSpec:
    """What a study tunes and how a trial is scored.

    Attributes:
        algo: natrl's algorithm name (``"trpo"``, ``"npg"``, ``"ppo"``, ``"a2c"``, ``"acktr"``: :data:`SEARCH_SPACES`).
        env_id: the environment id.
        total_steps: the step budget of every agent.
        seeds: one agent per seed; the objective is the mean of their final evaluations.
        eval_episodes: episodes per deterministic evaluation.
        device: where the agents train.
        agents_dir: the presets folder (None: natrl's, as ``natrl train`` finds it).
    """

    algo: str
    env_id: str
    total_steps: int
    seeds: tuple[int, ...] = (0,)
    eval_episodes: int = 10
    device: str = "cpu"
    agents_dir: str | None = None

    def study_attrs(self) -> dict[str, Any]:
        """What a study records so that a rerun scores trials the same way."""
        return {"algo": self.algo, "env": self.env_id, "steps": self.total_steps, "seeds": list(self.seeds),
                "eval_episodes": self.eval_episodes}  # fmt: skip


# ----------------------------------------------------------------------------- the objective


def _base(spec: TuneSpec) -> tuple[type[OnPolicyAgent], Any, Any]:
    """The agent class, natrl's preset for the env and its wrapper class (resolved from data only)."""
    import gymnasium as gym

    from natrl.presets import load_preset
    from natrl.rl import AGENTS
    from natrl.rl.trusted import resolve_class

    cls = AGENTS[spec.algo]
    preset = load_preset(spec.algo, spec.env_id, cls.config_cls, directory=spec.agents_dir)
    wrapper = None
    if preset.wrapper is not None:
        wrapper = resolve_class(preset.wrapper, gym.Wrapper, field="the preset's wrapper", hint="natrl train")
    return cls, preset, wrapper


def objective(trial: optuna.Trial, spec: TuneSpec) -> float:
    """Train one agent per seed with the trial's hyperparameters; the mean of their final evaluations.

    Each evaluation is reported to the trial at step ``seed_index · EVALUATIONS + j`` (the j-th evaluation of
    that seed's agent, j = 1 … EVALUATIONS, the last one after the last update), and the trial is pruned when
    Optuna's pruner says so. The trial's user attributes record the natrl hyperparameters sampled
    (``hyperparameters``) and each seed's final evaluation (``returns``).

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
        ValueError: hyperparameters natrl refuses (the trial fails; the study goes on).
    """
    import optuna

    from natrl.rl.config import build_config
    from natrl.rl.env import env_factory
    from natrl.rl.sb3_names import action_dims

    cls, preset, wrapper = _base(spec)
    n_envs = int(preset.hyperparameters.get("n_envs", 1))
    probe = env_factory(spec.env_id, preset.env_kwargs, wrapper)()
    k = action_dims(probe.action_space)
    probe.close()
    if trial.user_attrs.get(PRESET_ATTR):
        sampled: dict[str, Any] = {}  # natrl's preset as it is
    else:
        sampled = SEARCH_SPACES[spec.algo](trial, k=k, n_envs=n_envs, total_steps=spec.total_steps)
    trial.set_user_attr("hyperparameters", sampled)
    config = build_config(cls.config_cls, {**preset.hyperparameters, **sampled, "torch_threads": 1})
    every = max(spec.total_steps // EVALUATIONS, 1)
    finals: list[float] = []
    for index, seed in enumerate(spec.seeds):
        agent = cls(spec.env_id, seed=seed, device=spec.device, config=config, env_kwargs=preset.env_kwargs,
                    wrapper_class=wrapper, policy=preset.policy, policy_kwargs=preset.policy_kwargs)  # fmt: skip
        state = {"next": every, "last": math.nan, "pruned": False}

        def evaluate(agent: Any, stats: dict[str, float], index: int = index, state: dict = state) -> bool:
            step = agent.num_timesteps
            final = step >= spec.total_steps
            if not (step >= state["next"] or final):
                return True
            value = agent.evaluate(episodes=spec.eval_episodes, deterministic=True).mean
            state["next"] = (step // every + 1) * every  # natrl train's cadence (natrl.callbacks' every_timesteps)
            state["last"] = value
            j = EVALUATIONS if final else min(step // every, EVALUATIONS - 1)
            if math.isfinite(value):
                trial.report(value, index * EVALUATIONS + j)
            if not final and trial.should_prune():
                state["pruned"] = True
                return False
            return True

        try:
            agent.learn(spec.total_steps, callback=evaluate, progress_bar=False)
        finally:
            agent.close()
        if state["pruned"]:
            trial.set_user_attr("pruned_at", {"seed": seed, "steps": agent.num_timesteps, "return": state["last"]})
            raise optuna.TrialPruned(f"seed {seed}: {state['last']:.1f} at {agent.num_timesteps} steps")
        finals.append(float(state["last"]))
    trial.set_user_attr("returns", finals)
    return float(sum(finals) / len(finals))


# ----------------------------------------------------------------------------- storage and study


def default_storage(algo: str, env_id: str, root: str | os.PathLike[str] = "runs") -> str:
    """``sqlite:///<root>/tune/<algo>-<env>.db`` (``/`` and ``:`` of an env id become ``_``)."""
    safe = env_id.replace("/", "_").replace(":", "_")
    return f"sqlite:///{Path(root) / 'tune' / f'{algo}-{safe}.db'}"


def _redacted(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


def open_storage(url: str, *, heartbeat: int = 10, timeout: float = 60.0) -> optuna.storages.RDBStorage:
    """An Optuna database storage with heartbeats, retrying the trials of processes that died.

    Args:
        url: a SQLAlchemy database URL (``sqlite:///runs/tune/x.db``, ``postgresql://user:pw@host/db``); the
            folder of a SQLite file is created.
        heartbeat: seconds between the heartbeats of a running trial; one silent for ``3 × heartbeat`` seconds
            is marked failed and retried with the same hyperparameters.
        timeout: seconds to wait for the database.

    Raises:
        TuneError: not a database URL, a missing driver, a database that refuses or does not answer in time.
    """
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = _redacted(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise TuneError(
            f"--storage {shown}: not a database URL (e.g. sqlite:///runs/tune/study.db or "
            "postgresql://user:password@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args: dict[str, Any] = {"timeout": timeout}  # waits for another process's write lock
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        connect_args = {"connect_timeout": max(1, int(min(timeout, 30)))}
    box: dict[str, Any] = {}

    def connect() -> None:
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    box["storage"] = optuna.storages.RDBStorage(
                        url,
                        engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
                        heartbeat_interval=heartbeat,
                        grace_period=3 * heartbeat,
                        **_retry_stale_trials(),
                    )
                return
            except BaseException as exc:  # reported below as one line
                box["error"] = exc
                # two processes creating the same new database: the second finds the first's tables
                if "already exists" not in str(exc) or attempt == 2:
                    return
                time.sleep(0.5)

    worker = threading.Thread(target=connect, name="natrl-tune-storage", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TuneError(f"--storage {shown}: the database did not answer within {timeout:g} s")
    error = box.get("error")
    if isinstance(error, ImportError):  # Optuna's "Failed to import DB access module" wraps the driver's
        missing = error.__cause__ if isinstance(error.__cause__, ModuleNotFoundError) else error
        raise TuneError(
            f"--storage {shown}: the {backend} driver is not installed ({missing}); install the one SQLAlchemy "
            "names for the URL (e.g. pip install psycopg2-binary for postgresql://)"
        )
    if error is not None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TuneError(f"--storage {shown}: {' '.join(first.split())}")
    return box["storage"]


def _retry_stale_trials() -> dict[str, Any]:
    """RDBStorage's keyword that re-queues a stale trial (up to 3 times): Optuna >= 4.9 names it
    ``heartbeat_stale_trial_callback``, older versions ``failed_trial_callback``."""
    import optuna

    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}


def _sampler(seed: int, previous_trials: int, worker: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    import numpy as np
    import optuna

    # a different stream per rerun and per worker: a rerun must not draw the first run's random trials again
    state = int(np.random.SeedSequence([seed, previous_trials, worker]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(n_startup_trials=startup_trials, seed=state, multivariate=True)


def _pruner(startup_trials: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=EVALUATIONS // 3)


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    spec: TuneSpec,
    *,
    sampler_seed: int = 0,
    startup_trials: int = 10,
    worker: int = 0,
    enqueue_preset: bool = True,
) -> optuna.Study:
    """The study ``name`` in ``storage``, created or continued (maximising the objective).

    A study created here gets natrl's preset as its first trial when ``enqueue_preset`` (module docstring).

    Raises:
        TuneError: the study exists with another algorithm, env, budget, seeds or evaluation.
    """
    import optuna

    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(), pruner=_pruner(startup_trials),
    )  # fmt: skip
    wanted = spec.study_attrs()
    recorded = study.user_attrs.get("natrl")
    if recorded is None:
        study.set_user_attr("natrl", wanted)
        if enqueue_preset:
            study.enqueue_trial({}, user_attrs={PRESET_ATTR: True})
    elif recorded != wanted:
        diff = ", ".join(f"{k} {recorded.get(k)!r}" for k in wanted if recorded.get(k) != wanted[k])
        raise TuneError(
            f"study {name!r} was run with {diff}; rerun it with the same settings or choose another --study-name"
        )
    previous = len(study.get_trials(deepcopy=False))
    study.sampler = _sampler(sampler_seed, previous, worker, startup_trials)
    return study


def _optimize(
    url: str, name: str, spec_dict: dict[str, Any], trials: int, sampler_seed: int, startup_trials: int,
    worker: int, heartbeat: int,
) -> None:  # fmt: skip
    """One worker process: its share of the trials on the shared storage."""
    import optuna
    import torch

    torch.set_num_threads(1)  # this process is natrl tune's own; every agent trains with one thread
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = TuneSpec(**{**spec_dict, "seeds": tuple(spec_dict["seeds"])})
    storage = open_storage(url, heartbeat=heartbeat)
    study = open_study(storage, name, spec, sampler_seed=sampler_seed, startup_trials=startup_trials, worker=worker)
    study.optimize(lambda t: objective(t, spec), n_trials=trials, catch=(ValueError, FloatingPointError))


def run_study(
    spec: TuneSpec,
    *,
    storage: str,
    study_name: str,
    trials: int,
    n_jobs: int = 1,
    sampler_seed: int = 0,
    startup_trials: int = 10,
    heartbeat: int = 10,
    report: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run ``trials`` more trials of the study (created, or continued where a previous run left it).

    With ``n_jobs`` > 1, ``n_jobs`` processes share the trials, each running ``study.optimize`` on the storage
    (it must be a file or a server, not SQLite's ``:memory:``); this process reports their finished trials.

    Args:
        spec: what is tuned and how trials are scored.
        storage: the database URL (:func:`default_storage` for natrl's default).
        study_name: the study's name in the storage.
        trials: how many trials this call runs (in all processes together).
        n_jobs: parallel trials, one process each.
        sampler_seed: seeds TPE (with the study's trial count and the worker's index).
        startup_trials: random trials before TPE, and finished trials before the pruner prunes.
        heartbeat: seconds between a running trial's heartbeats (:func:`open_storage`).
        report: called with each trial that finished (complete, pruned or failed) during this call.

    Returns:
        the study, loaded again after the workers ended.

    Raises:
        TuneError: the storage or the study cannot be opened (see :func:`open_storage`, :func:`open_study`).
        RuntimeError: a worker process died.
    """
    if spec.algo not in SEARCH_SPACES:
        raise TuneError(f"natrl tune has search spaces for {', '.join(SEARCH_SPACES)}, not for {spec.algo}")
    db = open_storage(storage, heartbeat=heartbeat)
    study = open_study(db, study_name, spec, sampler_seed=sampler_seed, startup_trials=startup_trials)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def report_new() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                if report is not None:
                    report(t)

    if n_jobs <= 1:
        study.optimize(lambda t: objective(t, spec), n_trials=trials, catch=(ValueError, FloatingPointError),
                       callbacks=[lambda s, t: report_new()])  # fmt: skip
        return study
    shares = [trials // n_jobs + (1 if i < trials % n_jobs else 0) for i in range(n_jobs)]
    spec_dict = dataclasses.asdict(spec)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch or database state
    workers = [
        context.Process(
            target=_optimize,
            args=(storage, study_name, spec_dict, n, sampler_seed, startup_trials, i + 1, heartbeat),
            name=f"natrl-tune-{i + 1}",
        )
        for i, n in enumerate(shares)
        if n > 0
    ]
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(1.0)
            report_new()
    except BaseException:  # Ctrl-C or an error here: end the workers (their running trials are retried later)
        for w in workers:
            if w.is_alive():
                w.terminate()
        raise
    finally:
        for w in workers:
            w.join()
    report_new()
    failed = [w for w in workers if w.exitcode != 0]
    if failed:
        codes = ", ".join(f"{w.name} exit code {w.exitcode}" for w in failed)
        raise RuntimeError(f"natrl tune: worker process(es) ended abnormally ({codes})")
    return study


# ----------------------------------------------------------------------------- the tuned preset


def best_table(study: optuna.Study, spec: TuneSpec) -> tuple[dict[str, Any], Any]:
    """The best trial's preset table (natrl's preset for the env with the sampled values over it, the tuning
    budget as ``total_steps``, no ``expected_return``) and the natrl preset it starts from.

    Raises:
        TuneError: the study has no finished trial yet.
    """
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not done:
        raise TuneError(f"study {study.study_name!r} has no complete trial yet")
    best = max(done, key=lambda t: t.value if t.value is not None else -math.inf)
    _, preset, _ = _base(spec)
    table = {"total_steps": spec.total_steps, **preset.hyperparameters, **best.user_attrs["hyperparameters"]}
    return table, preset


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def check_preset_path(path: str | os.PathLike[str]) -> None:
    """Refuse to write over a file natrl tune did not write (a hand-written preset such as agents/trpo.toml).

    Raises:
        TuneError: ``path`` exists and does not start with natrl tune's header, or is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise TuneError(f"--out {path} is a folder; name a file such as {path / 'trpo.toml'}")
    if path.exists():
        first = path.read_text(encoding="utf-8", errors="replace").lstrip("# ").splitlines()[:1]
        if not (first and first[0].startswith(_MARKER)):
            raise TuneError(f"--out {path} exists and was not written by natrl tune; choose another file")


def write_preset(
    path: str | os.PathLike[str],
    env_id: str,
    table: dict[str, Any],
    *,
    header: str,
    env_kwargs: dict[str, Any] | None = None,
    wrapper: str | None = None,
    policy: str | None = None,
    policy_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``[env_id]`` (with its ``env_kwargs``/``policy_kwargs`` sub-tables) as an ``agents/<algo>.toml``
    file that :func:`natrl.presets.load_preset` reads.

    Raises:
        TuneError: ``path`` exists and was not written by natrl tune (a hand-written preset file is never
            overwritten).
    """
    from natrl.atomic import atomic_write_text

    path = Path(path)
    check_preset_path(path)
    body = dict(table)
    if wrapper is not None:
        body["wrapper"] = wrapper
    if policy is not None:
        body["policy"] = policy
    text = dumps_toml({env_id: body}, f"{_MARKER}: {header}")
    for sub, values in (("env_kwargs", env_kwargs), ("policy_kwargs", policy_kwargs)):
        if values:
            text += "\n" + dumps_toml({sub: values}).replace(f"[{sub}]", f"[{_key(env_id)}.{sub}]", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path

# ruff: noqa: E501  (the catalogue's tables read best one case per line)
"""Red-team catalogue (issue 30): bad inputs and faults against natrl, each outcome classified.

Every case runs in its own folder under a scratch directory:

* CLI cases run ``python -m natrl ...`` as a subprocess (one torch thread, a timeout each, tiny budgets such as
  ``--steps 256 --set n_steps=64``);
* API cases run in a worker subprocess (``--api-worker``), each under an alarm; a case that kills the worker
  (abort, segfault) is recorded and the worker restarted for the rest;
* fault cases (SIGKILL/SIGINT during training then resume, a full disk via a tiny tmpfs, a read-only file
  system, a path through a regular file, corrupt / truncated checkpoints, a damaged progress.csv, ...) run
  from this process. The mount-based ones need root; without it they are "skipped".

Outcome of a bad input:

* ``clean``: CLI: exit code != 0 and exactly one line on stderr that names the problem (one of the case's
  keywords), no traceback; API: a ValueError / TypeError (or a natrl exception class) whose one-line message
  names the argument;
* ``unclear``: an error of that kind, but it does not name the argument/field, or it is more than one line;
* ``traceback``: a raw traceback, an unexpected exception type (KeyError, AttributeError, RuntimeError,
  ZeroDivisionError, AssertionError, IndexError, OverflowError, ...) or a crash / abort;
* ``silent-wrong``: accepted (exit 0 / no exception) where the input is invalid, or a wrong result (e.g.
  a non-finite parameter, ``success=True`` after a NaN gradient, a checkpoint with NaN written to disk);
* ``hang``: ran past its timeout.

Some inputs are extreme but valid (``--set max_kl=1e30``): for those (``expect=either``) a successful run
and a clean one-line refusal are both ``clean``. Faults are ``survived`` (a clear message or a completed
recovery and no data lost) or ``lost-data``; a fault whose data survived but whose message was a traceback or
unclear gets that category instead.

After every case, every ``.pt`` file the case wrote is loaded with ``torch.load(weights_only=True)`` and the
files holding a non-finite float tensor are counted (a case that wrote one is ``silent-wrong``).

    python scripts/red_team.py --out red_team.json           # the whole catalogue (~15 min on one core)
    python scripts/red_team.py --only 'eval\\.' --jobs 2      # a subset (regex on case ids), two at a time
    python scripts/red_team.py --list                        # the catalogue without running it
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

NATRL = [sys.executable, "-m", "natrl"]
CATEGORIES = ("clean", "unclear", "traceback", "silent-wrong", "hang", "survived", "lost-data", "skipped")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TINY = ["--steps", "256", "--set", "n_steps=64", "--eval-episodes", "1", "-q"]


def _env() -> dict[str, str]:
    env = {**os.environ, **ONE_THREAD}
    env.pop("DISPLAY", None)  # headless, as on a server: --render must fail in one line, not hang
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ---------------------------------------------------------------------------------------------- non-finite scan
def _nonfinite_in(obj: Any, seen: set[int] | None = None) -> bool:
    import torch

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return bool(obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all())
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_nonfinite_in(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_nonfinite_in(v, seen) for v in obj)
    return False


def scan_pt_files(root: Path, since: float) -> tuple[list[str], list[str]]:
    """(.pt files written under root since ``since`` that hold a non-finite float tensor, unreadable ones)."""
    import torch

    bad, unreadable = [], []
    for path in sorted(root.rglob("*.pt")):
        try:
            if not path.is_file() or path.stat().st_mtime < since - 1.0:
                continue
        except OSError:
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            unreadable.append(str(path.relative_to(root)))
            continue
        if _nonfinite_in(state):
            bad.append(str(path.relative_to(root)))
    return bad, unreadable


# ---------------------------------------------------------------------------------------------- case records
@dataclasses.dataclass
class Case:
    id: str
    kind: str  # "cli" | "api" | "fault"
    desc: str
    names: tuple[str, ...] = ()  # the message must contain one of these (case-insensitive)
    expect: str = "error"  # "error" | "either" | "ok" | "result"
    argv: list[str] = dataclasses.field(default_factory=list)
    setup: Callable[[Path, dict[str, Any]], None] | None = None
    timeout: float = 60.0
    fn: Callable[..., Any] | None = None  # api / fault body
    io: bool = False  # an OSError is an acceptable error type (API cases about files)


@dataclasses.dataclass
class Outcome:
    id: str
    kind: str
    category: str
    input: str
    output: str
    note: str = ""
    seconds: float = 0.0
    nonfinite_files: list[str] = dataclasses.field(default_factory=list)


CASES: list[Case] = []


def cli(cid: str, argv: Sequence[str], names: Sequence[str] = (), *, expect: str = "error", desc: str = "",
        setup: Callable[[Path, dict[str, Any]], None] | None = None, timeout: float = 60.0) -> None:  # fmt: skip
    CASES.append(Case(cid, "cli", desc, tuple(names), expect, list(argv), setup, timeout))


def api(cid: str, names: Sequence[str] = (), *, expect: str = "error", desc: str = "", timeout: float = 60.0,
        io: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # fmt: skip
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        text = desc or (fn.__doc__ or "").strip() or _source(fn)
        CASES.append(Case(cid, "api", text, tuple(names), expect, timeout=timeout, fn=fn, io=io))
        return fn

    return deco


def _source(fn: Callable[..., Any]) -> str:
    """The code of a case (its lambda) on one line, as its description."""
    import inspect

    try:
        src = " ".join(inspect.getsource(fn).split())
    except (OSError, TypeError):
        return ""
    if "lambda ctx" in src:
        src = src[src.index("lambda ctx") :]
        while src.endswith(")") and src.count(")") > src.count("("):
            src = src[:-1]
    return src[:300]


def fault(cid: str, desc: str, *, timeout: float = 180.0, root: bool = False) -> Callable[..., Any]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        CASES.append(Case(cid, "fault", desc, expect="root" if root else "fault", timeout=timeout, fn=fn))
        return fn

    return deco


# ---------------------------------------------------------------------------------------------- classification
def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _names_ok(message: str, names: Sequence[str]) -> bool:
    low = message.lower()
    return not names or any(n.lower() in low for n in names)


def classify_cli(case: Case, rc: int | None, out: str, err: str) -> tuple[str, str]:
    """(category, note) of a CLI run."""
    if rc is None:
        return "hang", f"no exit within {case.timeout:.0f}s"
    lines = _stderr_lines(err)
    if "Traceback (most recent call last)" in err or "Traceback (most recent call last)" in out:
        last = lines[-1] if lines else ""
        return "traceback", f"rc={rc}; {last[:300]}"
    if rc < 0:
        return "traceback", f"killed by signal {-rc} ({signal.Signals(-rc).name})"
    if rc == 0:
        if case.expect in ("either", "ok"):
            warned = [ln for ln in lines if "Warning" in ln or "error" in ln.lower()]
            if warned:
                return "unclear", f"accepted, but stderr shows {warned[0].strip()[:160]!r}"
            return "clean", "accepted (valid input)"
        return "silent-wrong", "exit 0: the invalid input was accepted"
    if case.expect == "ok":
        return ("unclear" if len(lines) == 1 else "traceback"), f"a valid input failed: rc={rc}"
    if len(lines) == 0:
        return "unclear", f"rc={rc} with nothing on stderr"
    if len(lines) > 1:
        return "unclear", f"rc={rc}; {len(lines)} lines on stderr"
    if not _names_ok(lines[0], case.names):
        return "unclear", f"rc={rc}; the line names none of {list(case.names)}"
    return "clean", f"rc={rc}"


_ACCEPTED = ("ValueError", "TypeError")
_RAW = ("KeyError", "AttributeError", "ZeroDivisionError", "AssertionError", "IndexError", "RuntimeError",
        "OverflowError", "MemoryError", "NotImplementedError", "UnboundLocalError", "NameError", "RecursionError",
        "StopIteration", "SystemError")  # fmt: skip


def classify_api(case: Case, r: dict[str, Any]) -> tuple[str, str]:
    status = r.get("status")
    if status == "hang":
        return "hang", f"no return within {case.timeout:.0f}s"
    if status == "crash":
        return "traceback", r.get("note", "the worker process died")
    if status == "returned":
        problem = r.get("problem")
        if case.expect == "error":
            return "silent-wrong", "no error: " + (problem or r.get("value", ""))
        if problem:
            return "silent-wrong", problem
        return "clean", "accepted" if case.expect == "either" else "correct result"
    # raised
    mro, module, msg = r.get("exc_mro", []), r.get("exc_module", ""), r.get("message", "")
    name = r.get("exc_type", "")
    ok_type = any(m in _ACCEPTED for m in mro) or module.startswith("natrl")
    if case.io and "OSError" in mro:
        ok_type = True
    raw_first = [m for m in mro if m in _RAW]
    if raw_first and not module.startswith("natrl") and not any(m in _ACCEPTED for m in mro):
        ok_type = False
    if not ok_type:
        return "traceback", f"{name}: {msg[:300]}"
    if case.expect == "result":
        return "unclear", f"raised {name} instead of returning the documented result: {msg[:200]}"
    if "\n" in msg.strip():
        return "unclear", f"{name}: a message of {len(msg.strip().splitlines())} lines"
    if not _names_ok(msg, case.names):
        return "unclear", f"{name}: names none of {list(case.names)}"
    return "clean", name


# ---------------------------------------------------------------------------------------------- fixtures
def _run(argv: Sequence[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NATRL, *argv], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


class _Replace:
    """What an edit returns to save another object than the (edited) checkpoint dict."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def _edit_checkpoint(src: Path, dst: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    out = edit(state)
    torch.save(out.obj if isinstance(out, _Replace) else state, dst)


class _Evil:
    """Unpickling this runs code (touches a marker file): a weights-only loader must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def make_fixtures(fx: Path) -> dict[str, Any]:
    """A tiny TRPO CartPole run, a PPO Pendulum run, damaged checkpoints, bench / plot / agents-dir inputs."""
    import numpy as np
    import torch

    fx.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, Any] = {"fx": str(fx)}
    r = _run(["train", "trpo", "CartPole-v1", "--steps", "256", "--set", "n_steps=64", "--set", "n_envs=1",
              "--checkpoint-every", "64",
              "--eval-episodes", "1", "-q", "--run-dir", str(fx / "trpo_cp")], fx)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"fixture run failed: {r.stderr}")
    r = _run(["train", "ppo", "Pendulum-v1", "--steps", "128", "--set", "n_steps=64", "--set", "batch_size=32",
              "--eval-episodes", "1", "-q", "--run-dir", str(fx / "ppo_pend")], fx)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"fixture run failed: {r.stderr}")
    model = fx / "trpo_cp" / "model.pt"
    ctx["model"], ctx["run"], ctx["ppo_model"] = str(model), str(fx / "trpo_cp"), str(fx / "ppo_pend" / "model.pt")
    ck = fx / "ckpt"
    ck.mkdir(exist_ok=True)

    def first_float(d: dict[str, Any]) -> str:
        return next(k for k, v in d.items() if torch.is_tensor(v) and v.is_floating_point())

    def set_nan(s: dict[str, Any]) -> None:
        k = first_float(s["actor"])
        s["actor"][k] = s["actor"][k].clone()
        s["actor"][k].view(-1)[0] = float("nan")

    def set_inf(s: dict[str, Any]) -> None:
        k = first_float(s["critic"])
        s["critic"][k] = torch.full_like(s["critic"][k], float("inf"))

    def wrong_shape(s: dict[str, Any]) -> None:
        k = first_float(s["actor"])
        s["actor"][k] = torch.zeros(3, 3)

    edits: dict[str, Callable[[dict[str, Any]], Any]] = {
        "nan": set_nan,
        "inf": set_inf,
        "noconfig": lambda s: s.pop("config"),
        "nosteps": lambda s: s.pop("num_timesteps"),
        "negsteps": lambda s: s.__setitem__("num_timesteps", -5),
        "strsteps": lambda s: s.__setitem__("num_timesteps", "abc"),
        "floatsteps": lambda s: s.__setitem__("num_timesteps", 1.5),
        "version": lambda s: s.__setitem__("version", 999),
        "format": lambda s: s.__setitem__("format", "foo"),
        "notdict": lambda s: _Replace([1, 2, 3]),
        "algo": lambda s: s.__setitem__("algo", "foo"),
        "envid": lambda s: (s.__setitem__("env", "Nope-v0"), s.__setitem__("env_id", "Nope-v0")),
        "envcode": lambda s: (s.__setitem__("env", "os:system"), s.__setitem__("env_id", "os:system")),
        "envint": lambda s: s.__setitem__("env", 123),
        "badconfig": lambda s: s["config"].__setitem__("n_steps", -1),
        "unknownconfig": lambda s: s["config"].__setitem__("bogus", 1),
        "configstr": lambda s: s.__setitem__("config", "abc"),
        "nanconfig": lambda s: s["config"].__setitem__("gamma", float("nan")),
        "hugenet": lambda s: s["config"].__setitem__("hidden_sizes", [10**12]),
        "policy": lambda s: s.__setitem__("policy", "EvilPolicy"),
        "policykw": lambda s: s.__setitem__("policy_kwargs", {"activation_fn": "class:os.system"}),
        "policykw_unknown": lambda s: s.__setitem__("policy_kwargs", {"bogus": 1}),
        "wrapper": lambda s: s.__setitem__("wrapper_class", "class:subprocess.Popen"),
        "shape": wrong_shape,
        "noactor": lambda s: s.pop("actor"),
        "seedneg": lambda s: s.__setitem__("seed", -1),
        "seedhuge": lambda s: s.__setitem__("seed", 2**70),
        "seedfloat": lambda s: s.__setitem__("seed", 1.5),
        "seedstr": lambda s: s.__setitem__("seed", "x"),
        "envkwargs": lambda s: s.__setitem__("env_kwargs", {"bogus": 1}),
        "envkwargs_str": lambda s: s.__setitem__("env_kwargs", "abc"),
        "rng": lambda s: s.__setitem__("rng", {"bit_generator": "nope"}),
        "generator": lambda s: s.__setitem__("generator", torch.zeros(3)),
        "algostate_nan": lambda s: s.__setitem__("algo_state", {"x": torch.tensor([float("nan")])}),
        "algostate_str": lambda s: s.__setitem__("algo_state", "abc"),
        "obsnorm_nan": lambda s: (
            s["config"].__setitem__("normalize_obs", True),
            s.__setitem__(
                "obs_normalizer", {"mean": torch.full((4,), float("nan")), "var": torch.ones(4), "count": 1.0}
            ),
        ),
    }
    for name, edit in edits.items():
        _edit_checkpoint(model, ck / f"{name}.pt", edit)
    data = model.read_bytes()
    (ck / "truncated.pt").write_bytes(data[: len(data) // 2])
    (ck / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (ck / "empty.pt").write_bytes(b"")
    (ck / "json.pt").write_text('{"format": "natrl"}')
    marker = fx / "PWNED"
    torch.save({"format": "natrl-agent", "evil": _Evil(str(marker))}, ck / "malicious.pt")
    ctx["marker"] = str(marker)
    # bench --report inputs
    rep = fx / "report"
    rep.mkdir(exist_ok=True)
    (rep / "list.json").write_text("[1, 2, 3]")
    (rep / "dict.json").write_text('{"foo": 1}')
    (rep / "empty.json").write_text("")
    (rep / "garbage.json").write_bytes(b"\x00\xff{{{not json")
    (rep / "rows_bad.json").write_text('{"rows": [{"algo": 5, "return": "x"}]}')
    (rep / "nan.json").write_text('{"rows": NaN}')
    # agents dirs
    ag = fx / "agents"
    for name, text in {
        "garbage": "[default\nn_steps = = 3\n",
        "badvalue": "[default]\ngamma = 2.0\n",
        "unknownkey": "[default]\nbogus = 1\n",
        "negsteps": "[default]\ntotal_steps = -5\n",
        "strsteps": '[default]\ntotal_steps = "abc"\n',
        "hidden": '[default]\nhidden_sizes = "x"\n',
        "envkw": "[default]\n[CartPole-v1]\nenv_kwargs = 5\n",
        "wrapper": '[CartPole-v1]\nwrapper = "os:system"\n',
        "policy": '[CartPole-v1]\npolicy = "EvilPolicy"\n',
        "nan": "[default]\nmax_kl = nan\n",
    }.items():
        (ag / name).mkdir(parents=True, exist_ok=True)
        (ag / name / "trpo.toml").write_text(text)
    (ag / "empty").mkdir(parents=True, exist_ok=True)
    (fx / "a_file").write_text("not a folder\n")
    # plot inputs
    pl = fx / "plot"
    header = (fx / "trpo_cp" / "progress.csv").read_text().splitlines()[0]
    for name, text in {
        "garbage": "\x00\x01garbage,,,\n;;;\n",
        "header_only": header + "\n",
        "nan": header + "\n" + ",".join(["nan"] * len(header.split(","))) + "\n",
        "text_values": header + "\n" + ",".join(["abc"] * len(header.split(","))) + "\n",
    }.items():
        d = pl / name
        shutil.copytree(fx / "trpo_cp", d, dirs_exist_ok=True)
        (d / "progress.csv").write_text(text)
    (pl / "empty_dir").mkdir(parents=True, exist_ok=True)
    # rl-baselines3-zoo hyperparameter files (natrl train --hyperparams)
    zoo = fx / "zoo"
    zoo.mkdir(exist_ok=True)
    head = "CartPole-v1:\n  n_envs: 1\n  n_timesteps: 256\n  policy: 'MlpPolicy'\n  n_steps: 64\n"
    fan = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 6))
    for name, text in {
        "valid": head,
        "garbage": ": : :\n\t- [\n",
        "list": "- 1\n- 2\n",
        "empty": "",
        "noenv": "Pendulum-v1:\n  n_steps: 64\n",
        "unknown_key": head + "  bogus: 1\n",
        "python_tag": head + f'  gamma: !!python/object/apply:os.system ["touch {marker}"]\n',
        "policy_kwargs_code": head + f"  policy_kwargs: \"dict(net_arch=__import__('os').system('touch {marker}'))\"\n",
        "normalize_code": head + f"  normalize: \"__import__('os').system('touch {marker}')\"\n",
        "policy_kwargs_bad_literal": head + '  policy_kwargs: "dict(net_arch=[64, -1])"\n',
        "n_steps_negative": head.replace("n_steps: 64", "n_steps: -1"),
        "n_timesteps_str": head.replace("n_timesteps: 256", "n_timesteps: abc"),
        "n_timesteps_inf": head.replace("n_timesteps: 256", "n_timesteps: !!float 1e400"),
        "gamma_nan": head + "  gamma: .nan\n",
        "policy_class_path": head.replace("'MlpPolicy'", "'os.system'"),
        "env_wrapper_code": head + "  env_wrapper: os.system\n",
        "frame_stack": head + "  frame_stack: 4\n",
        "anchor_fanout": "Pendulum-v1:\n  x0: &l0 [0]\n"
        + "".join("  " + ln + "\n" for ln in fan.splitlines())
        + head
        + "  n_steps: *l5\n",
        "table_not_mapping": "CartPole-v1: 5\n",
    }.items():
        (zoo / f"{name}.yml").write_text(text)
    d = pl / "no_progress"
    shutil.copytree(fx / "trpo_cp", d, dirs_exist_ok=True)
    (d / "progress.csv").unlink()
    return ctx


# ================================================================================================ CLI catalogue
def train(algo: str = "trpo", env: str = "CartPole-v1", *extra: str, tiny: bool = True) -> list[str]:
    return ["train", algo, env, *(TINY if tiny else []), "--run-dir", "run", *extra]


cli("train.control", train(), expect="ok", desc="control: a valid tiny TRPO run")
cli("train.algo_unknown", ["train", "foo", "CartPole-v1", *TINY], ["foo", "algorithm"])
cli("train.algo_empty", ["train", "", "CartPole-v1", *TINY], ["algorithm"])
cli("train.env_unknown", train("trpo", "CartPole-v99"), ["CartPole-v99"])
cli("train.env_empty", train("trpo", ""), ["env", "''"])
cli("train.env_module_colon", train("trpo", "os:system"), ["os:system", "system"])
cli("train.env_missing_module", train("trpo", "nonexistent_pkg_xyz:Foo-v0"), ["nonexistent_pkg_xyz"])
cli("train.env_tuple_obs", train("trpo", "Blackjack-v1"), ["Tuple", "space", "observation"], expect="either")
cli("train.env_box2d_missing", train("trpo", "LunarLander-v3"), ["box2d", "LunarLander"], expect="either")
cli("train.env_discrete_obs", train("ppo", "FrozenLake-v1"), ["Discrete", "space"], expect="either")
for v in ["0", "-5", "abc", "nan", "inf", "1.5", "", "1e400"]:
    cli(f"train.steps[{v or 'empty'}]", ["train", "trpo", "CartPole-v1", "--steps", v, "--run-dir", "run", "-q"],
        ["--steps", "step"])  # fmt: skip
for v in ["-1", "1.5", "abc", "18446744073709551616", "99999999999999999999999", "", "nan"]:
    cli(f"train.seed[{v or 'empty'}]", train("trpo", "CartPole-v1", "--seed", v), ["seed"])
for v in ["0", "-1", "abc", "2.5"]:
    cli(f"train.n_envs[{v}]", train("trpo", "CartPole-v1", "--n-envs", v), ["n-envs", "n_envs"])
for v in ["meta", "cuda", "cuda:99", "gpu", "", "cuda:-1", "mps"]:  # '' may mean the default (cpu)
    cli(f"train.device[{v or 'empty'}]", train("trpo", "CartPole-v1", "--device", v), ["device"],
        expect="either" if v == "" else "error")  # fmt: skip
for cid, item, names in [
    ("no_equals", "n_steps", ["n_steps", "KEY=VALUE"]),
    ("no_key", "=5", ["KEY=VALUE", "=5"]),
    ("unknown", "bogus=1", ["bogus"]),
    ("seed_key", "seed=1", ["seed"]),
    ("empty_value", "n_steps=", ["n_steps"]),
    ("uppercase", "N_STEPS=64", ["N_STEPS"]),
]:
    cli(f"train.set.{cid}", train("trpo", "CartPole-v1", "--set", item), names)


def _config_fields() -> dict[str, list[tuple[str, Any]]]:
    """algo -> [(numeric field, type)] of its config class (every int/float hyperparameter)."""
    import dataclasses as dc
    import typing

    from natrl.rl import AGENTS

    out: dict[str, list[tuple[str, Any]]] = {}
    for algo, cls in AGENTS.items():
        hints = typing.get_type_hints(cls.config_cls)
        fields = []
        for f in dc.fields(cls.config_cls):
            tp = hints[f.name]
            args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            if typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in args):
                continue  # hidden_sizes: a list, not a number
            if any(a in (int, float) for a in args):
                fields.append((f.name, f.default))
        out[algo] = fields
    return out


# a value out of range for each numeric hyperparameter (the type is right, the range is not)
OUT_OF_RANGE = {
    "n_envs": "0", "n_steps": "0", "gamma": "1.5", "gae_lambda": "-0.1", "log_std_init": "-21",
    "torch_threads": "1000000000", "max_rejected_updates": "0", "sequence_length": "0", "workers": "-1",
    "critic_lr": "0", "critic_epochs": "0", "critic_batch_size": "0", "cg_iters": "0", "cg_tol": "-1",
    "damping": "-1", "fisher_subsample": "0", "kfac_factor_decay": "1", "max_kl": "0",
    "line_search_shrink": "1", "line_search_max_backtracks": "-1", "line_search_accept_ratio": "1",
    "step_size": "-0.01", "learning_rate": "-1", "n_epochs": "0", "batch_size": "0", "clip_range": "0",
    "clip_range_vf": "-0.2", "ent_coef": "-0.01", "vf_coef": "0", "max_grad_norm": "0", "target_kl": "0",
    "momentum": "1", "kl_clip": "0", "factor_decay": "1.5", "inverse_interval": "0", "critic_kfac_lr": "-1",
}  # fmt: skip
# values of the wrong type or not finite, rotated over the fields
BAD_TYPED = ["nan", "inf", "-inf", '"abc"', "true", "[1, 2]", "", "1e400", "abc", "{}"]


# fields whose checks differ between algorithms (tested once per algorithm that has them)
PER_ALGO_FIELDS = {"learning_rate", "ent_coef", "damping"}


def _sweep_fields() -> list[tuple[str, str, Any]]:
    """(algo, field, default): every numeric hyperparameter once (per algorithm where its check differs)."""
    fields = _config_fields()
    seen: set[str] = set()
    out = []
    for algo in ("trpo", "npg", "ppo", "acktr"):
        for name, default in fields[algo]:
            if name in seen and name not in PER_ALGO_FIELDS:
                continue
            if name in seen and any(a == algo and n == name for a, n, _ in out):
                continue
            seen.add(name)
            out.append((algo, name, default))
    return out


def _set_sweep() -> None:
    k = 0
    for algo, name, _default in _sweep_fields():
        if True:
            env = "CartPole-v1"
            k += 1
            if k % 2:  # alternately a value out of range and one of the wrong type / not finite
                rng_value = OUT_OF_RANGE.get(name, "-1")
                if name == "sequence_length":
                    rng_value = "3"  # does not divide n_steps=64
                cli(f"train.set.range[{algo}:{name}={rng_value}]", train(algo, env, "--set", f"{name}={rng_value}"),
                    [name], desc=f"--set {name} out of range")  # fmt: skip
            else:
                bad = BAD_TYPED[(k // 2) % len(BAD_TYPED)]
                cli(f"train.set.type[{algo}:{name}={bad or 'empty'}]", train(algo, env, "--set", f"{name}={bad}"),
                    [name], desc=f"--set {name} of the wrong type / not finite")  # fmt: skip


_set_sweep()
# the previous red team's --set findings, explicitly (the sweep above may give these fields another value)
cli("train.set.critic_epochs_zero", train("trpo", "CartPole-v1", "--set", "critic_epochs=0"), ["critic_epochs"])
cli(
    "train.set.torch_threads_huge", train("trpo", "CartPole-v1", "--set", "torch_threads=1000000000"), ["torch_threads"]
)
cli("train.set.ppo_n_epochs_zero", train("ppo", "CartPole-v1", "--set", "n_epochs=0"), ["n_epochs"])
for cid, item in [
    ("hidden_zero", "hidden_sizes=[0]"), ("hidden_neg", "hidden_sizes=[-1]"), ("hidden_float", "hidden_sizes=[64.5]"),
    ("hidden_str", "hidden_sizes=abc"), ("hidden_nested", "hidden_sizes=[[64]]"),
    ("hidden_huge", "hidden_sizes=[1000000000000]"), ("critic_hidden_zero", "critic_hidden_sizes=[0]"),
    ("activation_unknown", "activation=sigmoid"), ("activation_int", "activation=1"), ("activation_empty", "activation="),
    ("vec_env", "vec_env=bogus"), ("obs_norm_update", "obs_norm_update=bogus"), ("action_bound", "action_bound=bogus"),
    ("curvature", "curvature=bogus"), ("normalize_obs_int", "normalize_obs=1"), ("normalize_obs_str", 'normalize_obs="true"'),
    ("ortho_init_yes", "ortho_init=yes"), ("fast_paths_2", "fast_paths=2"), ("max_kl_lin_abc", "max_kl=lin_abc"),
    ("max_kl_lin_neg", "max_kl=lin_-1"), ("max_kl_lin_nan", "max_kl=lin_nan"), ("max_kl_exp", "max_kl=exp_0.1"),
    ("max_kl_lin_empty", "max_kl=lin_"), ("max_kl_lin_inf", "max_kl=lin_inf"), ("ray_address_int", "ray_address=123"),
    ("n_steps_huge", "n_steps=1000000000000"), ("n_steps_float", "n_steps=64.0"),
]:  # fmt: skip
    key = item.partition("=")[0]
    cli(f"train.set.{cid}", train("trpo", "CartPole-v1", "--set", item), [key])
# extreme but valid values: a clean refusal or a finished run with finite files are both fine
for algo, item in [
    ("trpo", "max_kl=1e30"), ("trpo", "damping=1e30"), ("trpo", "cg_tol=1e30"), ("trpo", "log_std_init=5"),
    ("npg", "step_size=1e30"), ("ppo", "learning_rate=1e10"), ("ppo", "ent_coef=1e30"), ("ppo", "clip_range=1e30"),
    ("ppo", "vf_coef=1e30"), ("acktr", "learning_rate=1e30"), ("acktr", "kl_clip=1e30"), ("trpo", "hidden_sizes=[]"),
    ("ppo", "batch_size=100000"), ("trpo", "critic_lr=1e10"),
]:  # fmt: skip
    cli(f"train.extreme[{algo}:{item}]", train(algo, "Pendulum-v1", "--set", item), [item.partition("=")[0]],
        expect="either", timeout=90)  # fmt: skip
cli("train.extreme[trpo:log_std_init=-20,Pendulum]", train("trpo", "Pendulum-v1", "--set", "log_std_init=-20"),
    ["log_std"], expect="either", timeout=90)  # fmt: skip
for cid, item, names in [
    ("bogus", "bogus=1", ["bogus"]),
    ("max_episode_steps_neg", "max_episode_steps=-1", ["max_episode_steps"]),
    ("max_episode_steps_zero", "max_episode_steps=0", ["max_episode_steps"]),
    ("max_episode_steps_str", "max_episode_steps=abc", ["max_episode_steps"]),
    ("max_episode_steps_float", "max_episode_steps=1.5", ["max_episode_steps"]),
    ("max_episode_steps_nan", "max_episode_steps=nan", ["max_episode_steps"]),
    ("render_mode_human", "render_mode=human", ["render_mode", "render", "display"]),
    ("render_mode_bogus", "render_mode=bogus", ["render_mode"]),
    ("no_key", "=1", ["KEY=VALUE", "env-kwargs"]),
    ("no_equals", "noeq", ["KEY=VALUE", "env-kwargs"]),
    ("sutton_barto_str", "sutton_barto_reward=maybe", ["sutton_barto_reward"]),
    ("disable_env_checker", "disable_env_checker=5", ["disable_env_checker"]),
]:
    cli(f"train.env_kwargs.{cid}", train("trpo", "CartPole-v1", "--env-kwargs", item), names)
for cid, w, names, env in [
    ("builtins_int", "builtins:int", ["int", "wrapper"], "CartPole-v1"),
    ("clipaction_discrete", "gymnasium.wrappers:ClipAction", ["ClipAction"], "CartPole-v1"),
    ("timelimit_no_arg", "gymnasium.wrappers:TimeLimit", ["TimeLimit"], "CartPole-v1"),
    ("no_colon", "gymnasium.wrappers.ClipAction", ["MODULE:CLASS", "wrapper"], "CartPole-v1"),
    ("missing_module", "nonexistent_mod_xyz:X", ["nonexistent_mod_xyz"], "CartPole-v1"),
    ("missing_class", "gymnasium.wrappers:Nope", ["Nope"], "CartPole-v1"),
    ("function", "os:system", ["system", "wrapper"], "CartPole-v1"),
    ("framestack_no_arg", "gymnasium.wrappers:FrameStackObservation", ["FrameStackObservation", "stack_size"],
     "CartPole-v1"),
    ("rescale_no_arg", "gymnasium.wrappers:RescaleAction", ["RescaleAction"], "Pendulum-v1"),
    ("record_video", "gymnasium.wrappers:RecordVideo", ["RecordVideo", "render"], "CartPole-v1"),
    ("empty", "", ["wrapper", "MODULE:CLASS"], "CartPole-v1"),
]:  # fmt: skip
    cli(f"train.wrapper.{cid}", train("trpo", env, "--wrapper", w), names, expect="either" if w == "" else "error")
cli("train.wrapper.normalize_obs_valid", train("trpo", "CartPole-v1", "--wrapper",
    "gymnasium.wrappers:NormalizeObservation"), ["NormalizeObservation"], expect="either")  # fmt: skip
for cid, pkg in [("missing", "nonexistent_pkg_xyz"), ("empty", ""), ("relative", ".foo")]:
    cli(f"train.gym_packages.{cid}", train("trpo", "CartPole-v1", "--gym-packages", pkg),
        ["gym-packages", "gym_packages", pkg or "''"])  # fmt: skip
for cid, pol, names, expect in [
    ("bogus", "Bogus", ["Bogus", "policy"], "error"),
    ("cnn_on_vector", "CnnPolicy", ["CnnPolicy", "image", "observation"], "error"),
    ("empty", "", ["policy"], "either"),
    ("lstm", "MlpLstmPolicy", ["MlpLstmPolicy"], "either"),
]:
    cli(f"train.policy.{cid}", train("trpo", "CartPole-v1", "--policy", pol), names, expect=expect)
for flag, values in {
    "--eval-every": ["-1", "abc"], "--eval-episodes": ["0", "-1", "1.5"], "--checkpoint-every": ["0", "-1"],
    "--keep": ["0", "-1", "abc"], "--workers": ["-1", "abc", "1.5"],
}.items():  # fmt: skip
    for v in values:
        cli(f"train.flag[{flag}={v}]", train("trpo", "CartPole-v1", flag, v), [flag, flag[2:].replace("-", "_")])
cli("train.unknown_flag", train("trpo", "CartPole-v1", "--bogus"), ["--bogus"])
cli("train.missing_args", ["train"], ["ALGO", "ENV", "required"])
cli("train.ray_address_without_workers", train("trpo", "CartPole-v1", "--ray-address", "bogus://x"),
    ["ray", "workers"], expect="either")  # fmt: skip


def _mk_nonempty_run(wd: Path, ctx: dict[str, Any]) -> None:
    (wd / "run").mkdir()
    (wd / "run" / "something.txt").write_text("x")


def _copy_run(wd: Path, ctx: dict[str, Any]) -> None:
    shutil.copytree(ctx["run"], wd / "run", copy_function=shutil.copy2)


def _a_file(wd: Path, ctx: dict[str, Any]) -> None:
    (wd / "afile").write_text("x\n")


def _empty_dir(wd: Path, ctx: dict[str, Any]) -> None:
    (wd / "emptydir").mkdir()


cli("train.run_dir.existing_nonempty", train(), ["run", "exists"], setup=_mk_nonempty_run)
cli("train.run_dir.through_file", ["train", "trpo", "CartPole-v1", *TINY, "--run-dir", "afile/run"],
    ["afile", "not a folder", "Not a directory"], setup=_a_file)  # fmt: skip
cli("train.run_dir.is_file", ["train", "trpo", "CartPole-v1", *TINY, "--run-dir", "afile"], ["afile"], setup=_a_file)
cli("train.run_dir.dev_null", ["train", "trpo", "CartPole-v1", *TINY, "--run-dir", "/dev/null"], ["/dev/null"])
cli("train.run_dir.proc", ["train", "trpo", "CartPole-v1", *TINY, "--run-dir", "/proc/natrl_red_team/run"],
    ["/proc/natrl_red_team"])  # fmt: skip
cli("train.resume.nothing", ["train", "trpo", "CartPole-v1", "--resume", "-q"], ["resume", "run"])
cli("train.resume.missing_dir", ["train", "trpo", "CartPole-v1", "--resume", "--run-dir", "nope", "-q"], ["nope"])
cli("train.resume.empty_dir", ["train", "trpo", "CartPole-v1", "--resume", "--run-dir", "emptydir", "-q"],
    ["emptydir", "config.toml"], setup=_empty_dir)  # fmt: skip
cli("train.resume.different_set", ["train", "trpo", "CartPole-v1", "--resume", "--run-dir", "run", "-q", "--set",
    "n_steps=32"], ["n_steps"], setup=_copy_run)  # fmt: skip
cli("train.resume.different_seed", ["train", "trpo", "CartPole-v1", "--resume", "--run-dir", "run", "-q", "--seed",
    "5"], ["seed"], setup=_copy_run)  # fmt: skip
cli("train.resume.other_algo", ["train", "ppo", "CartPole-v1", "--resume", "--run-dir", "run", "-q"],
    ["trpo", "ppo"], setup=_copy_run)  # fmt: skip
cli("train.resume.other_env", ["train", "trpo", "Pendulum-v1", "--resume", "--run-dir", "run", "-q"],
    ["Pendulum-v1", "CartPole-v1"], setup=_copy_run)  # fmt: skip
cli("train.resume.other_wrapper", ["train", "trpo", "CartPole-v1", "--resume", "--run-dir", "run", "-q", "--wrapper",
    "gymnasium.wrappers:NormalizeObservation"], ["wrapper"], setup=_copy_run)  # fmt: skip
cli("train.resume.steps_below_done", ["train", "trpo", "CartPole-v1", "--resume", "--run-dir", "run", "-q", "--steps",
    "64"], ["steps"], expect="either", setup=_copy_run)  # fmt: skip
for name, names in [("garbage", ["trpo.toml", "TOML"]), ("badvalue", ["n_steps"]), ("unknownkey", ["bogus"]),
                    ("negsteps", ["total_steps"]), ("strsteps", ["total_steps"]), ("hidden", ["hidden_sizes"]),
                    ("envkw", ["env_kwargs"]), ("wrapper", ["wrapper", "os:system"]), ("policy", ["EvilPolicy"]),
                    ("nan", ["max_kl"])]:  # fmt: skip
    cli(
        f"train.agents_dir.{name}",
        train("trpo", "CartPole-v1", "--agents-dir", "{fx}/agents/" + name),
        {"badvalue": ["gamma"], "wrapper": ["trpo.toml"]}.get(name, names),
    )  # the wrapper came from the file
cli("train.agents_dir.nonexistent", train("trpo", "CartPole-v1", "--agents-dir", "/nonexistent"), ["/nonexistent"])
cli("train.agents_dir.a_file", train("trpo", "CartPole-v1", "--agents-dir", "{fx}/a_file"), ["a_file"])
cli("train.agents_dir.empty", train("trpo", "CartPole-v1", "--agents-dir", "{fx}/agents/empty"), ["trpo.toml"],
    expect="either")  # fmt: skip

# ---- train --hyperparams (rl-baselines3-zoo files)
ZOO_NAMES = {
    "garbage": ["garbage.yml", "YAML"], "list": ["list.yml"], "empty": ["empty.yml"], "noenv": ["CartPole-v1"],
    "unknown_key": ["bogus"], "python_tag": ["python", "tag"], "policy_kwargs_code": ["policy_kwargs"],
    "normalize_code": ["normalize"], "policy_kwargs_bad_literal": ["net_arch", "hidden_sizes"],
    "n_steps_negative": ["n_steps"], "n_timesteps_str": ["n_timesteps"], "n_timesteps_inf": ["n_timesteps"],
    "gamma_nan": ["gamma"], "policy_class_path": ["policy", "os.system"], "env_wrapper_code": ["env_wrapper", "os.system"],
    "frame_stack": ["frame_stack"], "anchor_fanout": ["n_steps"], "table_not_mapping": ["CartPole-v1"],
}  # fmt: skip
ZOO = ["train", "trpo", "CartPole-v1", "--eval-episodes", "1", "-q", "--run-dir", "run", "--hyperparams"]
cli("train.hyperparams.valid", [*ZOO, "{fx}/zoo/valid.yml"], expect="ok", desc="control: a valid zoo file")
for name, names in ZOO_NAMES.items():
    cli(f"train.hyperparams.{name}", [*ZOO, f"{{fx}}/zoo/{name}.yml"], names)
cli("train.hyperparams.missing", [*ZOO, "nope.yml"], ["nope.yml"])
cli("train.hyperparams.ppo_file_for_npg", ["train", "npg", "CartPole-v1", "-q", "--run-dir", "run", "--hyperparams",
    "{fx}/zoo/valid.yml"], ["npg"])  # fmt: skip
cli("train.hyperparams.with_set_conflict", [*ZOO, "{fx}/zoo/valid.yml", "--set", "n_steps=-5"], ["n_steps"])

# ---- tune
TUNE = ["tune", "trpo", "CartPole-v1", "--trials", "1", "--steps", "256", "--eval-episodes", "1", "-q", "--storage",
        "sqlite:///t.db", "--out", "best.toml"]  # fmt: skip


def tune(**flags: str) -> list[str]:
    argv = list(TUNE)
    for flag, value in flags.items():
        opt = "--" + flag.replace("_", "-")
        if opt in argv:
            argv[argv.index(opt) + 1] = value
        else:
            argv += [opt, value]
    return argv


def _garbage_db(wd: Path, ctx: dict[str, Any]) -> None:
    (wd / "garbage.db").write_bytes(b"\x00\xffnot a database" * 100)
    _a_file(wd, ctx)


cli("tune.control", tune(), expect="ok", timeout=120, desc="control: one tiny trial")
cli("tune.algo_no_space", ["tune", "npg", "CartPole-v1", "--trials", "1", "-q"], ["npg", "search space"])
cli("tune.algo_unknown", ["tune", "foo", "CartPole-v1", "--trials", "1", "-q"], ["foo"])
cli("tune.env_unknown", [*tune()[:2], "Nope-v0", *tune()[3:]], ["Nope-v0"])
for cid, flags, names in [
    ("trials_zero", {"trials": "0"}, ["trials"]), ("trials_negative", {"trials": "-1"}, ["trials"]),
    ("trials_abc", {"trials": "abc"}, ["trials"]), ("n_jobs_zero", {"n_jobs": "0"}, ["n-jobs", "n_jobs"]),
    ("n_jobs_negative", {"n_jobs": "-1"}, ["n-jobs", "n_jobs"]), ("storage_bogus", {"storage": "bogus://x"}, ["storage", "bogus"]),
    ("storage_missing_dir", {"storage": "sqlite:///new_dir/sub/x.db"}, ["storage", "new_dir"]),
    ("storage_empty", {"storage": ""}, ["storage"]), ("storage_through_file", {"storage": "sqlite:///afile/x.db"}, ["afile", "storage"]),
    ("storage_garbage_db", {"storage": "sqlite:///garbage.db"}, ["garbage.db", "storage", "database"]),
    ("study_name_empty", {"study_name": ""}, ["study"]), ("steps_zero", {"steps": "0"}, ["steps"]),
    ("seeds_negative", {"seeds": "-1"}, ["seed"]), ("seeds_abc", {"seeds": "abc"}, ["seed"]),
    ("seeds_huge", {"seeds": "18446744073709551616"}, ["seed"]), ("eval_episodes_zero", {"eval_episodes": "0"}, ["eval-episodes"]),
    ("out_through_file", {"out": "afile/best.toml"}, ["afile"]), ("out_empty", {"out": ""}, ["out"]),
    ("out_a_directory", {"out": "."}, ["out", "directory"]),
    ("sampler_seed_negative", {"sampler_seed": "-1"}, ["sampler-seed", "seed"]), ("sampler_seed_abc", {"sampler_seed": "abc"}, ["sampler-seed"]),
    ("startup_trials_negative", {"startup_trials": "-1"}, ["startup-trials", "startup_trials"]),
    ("heartbeat_zero", {"heartbeat": "0"}, ["heartbeat"]), ("heartbeat_nan", {"heartbeat": "nan"}, ["heartbeat"]),
    ("heartbeat_negative", {"heartbeat": "-1"}, ["heartbeat"]), ("device_meta", {"device": "meta"}, ["device"]),
    ("agents_dir_nonexistent", {"agents_dir": "/nonexistent"}, ["/nonexistent"]),
]:  # fmt: skip
    either = cid in ("storage_missing_dir", "storage_empty", "study_name_empty", "out_empty")  # created / default
    cli(f"tune.{cid}", tune(**flags), names, setup=_garbage_db, timeout=120, expect="either" if either else "error")

# ---- eval
cli("eval.control", ["eval", "{model}", "--episodes", "1"], expect="ok")
cli("eval.missing_file", ["eval", "nope.pt"], ["nope.pt"])
cli("eval.dir_without_model", ["eval", "emptydir"], ["emptydir"], setup=_empty_dir)
cli("eval.dev_null", ["eval", "/dev/null"], ["/dev/null"])
cli("eval.empty_string", ["eval", ""], ["model", "checkpoint", "''", " . ", "holds no"])
cli("eval.plot_dir_as_model", ["eval", "{fx}/plot/no_progress/config.toml"], ["config.toml"])
EVAL_NAMES = {
    "nan": ["non-finite", "nan"], "inf": ["non-finite", "inf"], "noconfig": ["config"], "nosteps": ["num_timesteps"],
    "negsteps": ["num_timesteps", "negative"], "strsteps": ["num_timesteps"], "floatsteps": ["num_timesteps"],
    "version": ["version"], "format": ["not a natrl", "format"], "notdict": ["not a natrl"], "algo": ["foo", "algo"],
    "envid": ["Nope-v0"], "envcode": ["os:system"], "envint": ["env"], "badconfig": ["n_steps"],
    "unknownconfig": ["bogus"], "configstr": ["config"], "nanconfig": ["gamma"], "hugenet": ["hidden_sizes"],
    "policy": ["EvilPolicy", "policy"], "policykw": ["os.system", "activation_fn", "policy_kwargs"],
    "policykw_unknown": ["bogus", "policy_kwargs"], "wrapper": ["Popen", "wrapper"],
    "shape": ["shape", "size", "fit"], "noactor": ["actor"], "seedneg": ["seed"], "seedhuge": ["seed"],
    "seedfloat": ["seed"], "seedstr": ["seed"], "envkwargs": ["bogus"], "envkwargs_str": ["env_kwargs"],
    "rng": ["rng"], "algostate_nan": ["algo_state", "non-finite"], "algostate_str": ["algo_state"],
    "obsnorm_nan": ["obs_normalizer", "non-finite"], "truncated": ["truncated", "corrupt"],
    "garbage": ["corrupt", "not a readable"], "empty": ["corrupt", "empty", "not a readable"],
    "json": ["corrupt", "not a readable"], "malicious": ["corrupt", "not a readable", "unsafe"],
}  # fmt: skip
CLI_EVAL_CKPTS = ("nan", "inf", "noconfig", "nosteps", "negsteps", "version", "envcode", "policykw", "wrapper",
                  "shape", "seedneg", "seedhuge", "envkwargs", "hugenet", "obsnorm_nan", "truncated", "garbage", "empty",
                  "malicious")  # fmt: skip
for name in CLI_EVAL_CKPTS:  # every damaged checkpoint is also loaded through the API (api.load_agent.*)
    names = EVAL_NAMES[name]
    cli(f"eval.ckpt.{name}", ["eval", f"{{fx}}/ckpt/{name}.pt", "--episodes", "1"], names)
cli("eval.ckpt.generator_state_bad", ["eval", "{fx}/ckpt/generator.pt", "--episodes", "1"], ["generator"],
    expect="either")  # fmt: skip
for flag, v, names in [
    ("--episodes", "0", ["episodes"]), ("--episodes", "-1", ["episodes"]), ("--episodes", "abc", ["episodes"]),
    ("--seed", "-1", ["seed"]), ("--seed", "abc", ["seed"]), ("--env", "Nope-v0", ["Nope-v0"]), ("--env", "Pendulum-v1", ["space"]),
    ("--env", "os:system", ["os:system", "system"]), ("--env", "", ["env", "''"]), ("--device", "meta", ["device"]),
    ("--device", "cuda", ["cuda", "device"]), ("--device", "gpu", ["gpu", "device"]), ("--fps", "0", ["fps"]),
    ("--fps", "-5", ["fps"]), ("--video", "out.xyz", ["video", ".xyz"]), ("--video", "out", ["video", "(none)"]),
    ("--video", "afile/a.gif", ["afile"]),
    ("--gym-packages", "nonexistent_pkg_xyz", ["nonexistent_pkg_xyz"]),
]:  # fmt: skip
    cli(f"eval.flag[{flag}={v or 'empty'}]", ["eval", "{model}", "--episodes", "1", flag, v], names,
        setup=_a_file if v.startswith("afile") else None)  # fmt: skip
cli("eval.render_headless", ["eval", "{model}", "--render"], ["render", "display"])
cli("eval.render_and_video", ["eval", "{model}", "--render", "--video", "a.gif"], ["--render", "--video"])
for v in ["18446744073709551616", "4294967296"]:  # Gymnasium takes any non-negative seed: valid
    cli(f"eval.flag[--seed={v}]", ["eval", "{model}", "--episodes", "1", "--seed", v], ["seed"], expect="either")
cli("eval.video_missing_parent", ["eval", "{model}", "--video", "new_dir/sub/a.gif"], ["new_dir"], expect="either")

# ---- bench
BENCH = ["bench", "--algos", "trpo", "--envs", "CartPole-v1", "--seeds", "0", "--steps", "256", "--set", "n_steps=64",
         "--eval-episodes", "1", "-q", "--out", "out"]  # fmt: skip


def bench(**flags: str) -> list[str]:
    argv = list(BENCH)
    for flag, value in flags.items():
        opt = "--" + flag.replace("_", "-")
        if opt in argv:
            i = argv.index(opt)
            argv[i + 1] = value
        else:
            argv += [opt, value]
    return argv


for name, names in [("list", ["list.json", "results"]), ("dict", ["dict.json", "results", "rows"]),
                    ("empty", ["empty.json"]), ("garbage", ["garbage.json"]), ("rows_bad", ["rows_bad.json"]),
                    ("nan", ["nan.json"])]:  # fmt: skip
    cli(f"bench.report.{name}", ["bench", "--report", f"{{fx}}/report/{name}.json", "--out", "out"], names)
cli("bench.report.missing", ["bench", "--report", "nope.json", "--out", "out"], ["nope.json"])
cli("bench.report.empty_dir", ["bench", "--report", "emptydir", "--out", "out"], ["emptydir", "results"],
    setup=_empty_dir)  # fmt: skip
cli("bench.report.model_pt", ["bench", "--report", "{model}", "--out", "out"], ["model.pt"])
for cid, flags, names in [
    ("agents_dir_nonexistent", {"agents_dir": "/nonexistent"}, ["/nonexistent"]),
    ("algos_unknown", {"algos": "foo"}, ["foo"]),
    ("algos_empty", {"algos": ""}, ["algos", "algorithm"]),
    ("envs_unknown", {"envs": "Nope-v0"}, ["Nope-v0"]),
    ("envs_empty", {"envs": ""}, ["envs", "env"]),
    ("seeds_negative", {"seeds": "-1"}, ["seed"]),
    ("seeds_abc", {"seeds": "abc"}, ["seed"]),
    ("seeds_reversed_range", {"seeds": "3-1"}, ["seed", "3-1"]),
    ("seeds_empty", {"seeds": ""}, ["seed"]),
    ("seeds_huge", {"seeds": "18446744073709551616"}, ["seed"]),
    ("steps_zero", {"steps": "0"}, ["steps"]),
    ("steps_abc", {"steps": "abc"}, ["steps"]),
    ("against_unknown", {"against": "foo"}, ["foo", "against"]),
    ("eval_every_negative", {"eval_every": "-1"}, ["eval-every", "eval_every"]),
    ("eval_episodes_zero", {"eval_episodes": "0"}, ["eval-episodes", "eval_episodes"]),
    ("ray_cpus_zero", {"ray_cpus": "0"}, ["ray-cpus", "ray_cpus"]),
    ("device_meta", {"device": "meta"}, ["device", "meta"]),
    ("device_cuda", {"device": "cuda"}, ["cuda"]),
    ("status_every_zero", {"status_every": "0"}, ["status-every", "status_every"]),
    ("status_every_nan", {"status_every": "nan"}, ["status-every", "status_every"]),
    ("status_every_negative", {"status_every": "-1"}, ["status-every", "status_every"]),
    ("set_unknown", {"set": "bogus=1"}, ["bogus"]),
    ("set_range", {"set": "n_steps=-1"}, ["--set"]),  # the value came from --set, not from the preset
    ("set_nan", {"set": "max_kl=nan"}, ["--set"]),
    ("policy_bogus", {"policy": "Bogus"}, ["Bogus"]),
    ("out_through_file", {"out": "afile/out"}, ["afile"]),
    ("index_nonexistent", {"index": "/nonexistent"}, ["/nonexistent"]),
    ("index_a_file", {"index": "afile"}, ["afile"]),
]:
    argv = bench(**flags)
    if cid.startswith("index"):
        argv = ["bench", "--index", flags["index"]]
    cli(f"bench.{cid}", argv, names, setup=_a_file if "afile" in str(flags) else None, timeout=90)
cli("bench.index_garbage_json", ["bench", "--index", "{fx}/report"], ["json", "report"], expect="either")

# ---- plot
for cid, out_path, names in [
    ("missing_dir", "new_dir/sub/x.png", ["new_dir"]),  # created: either
    ("through_file", "afile/x.png", ["afile"]),
    ("bad_suffix", "x.txt", ["txt", "format", "suffix"]),
    ("empty", "", ["output", "''", "-o"]),
    ("a_directory", "emptydir", ["emptydir"]),  # writes emptydir.png: either
    ("existing_dir_with_suffix", "dir.png", ["dir.png", "directory"]),
]:

    def _both(wd: Path, ctx: dict[str, Any]) -> None:
        _a_file(wd, ctx)
        _empty_dir(wd, ctx)

    def _setup(wd: Path, ctx: dict[str, Any]) -> None:
        _both(wd, ctx)
        (wd / "dir.png").mkdir()

    cli(f"plot.output.{cid}", ["plot", "{run}", "-o", out_path], names, setup=_setup,
        expect="either" if cid in ("missing_dir", "a_directory") else "error")  # fmt: skip
for cid, run, names in [
    ("missing_run", "nope", ["nope"]), ("empty_dir", "{fx}/plot/empty_dir", ["empty_dir", "no run"]),
    ("garbage_csv", "{fx}/plot/garbage", ["progress.csv"]), ("header_only", "{fx}/plot/header_only", ["progress.csv", "no"]),
    ("nan_values", "{fx}/plot/nan", ["progress.csv", "nan", "finite", "nothing to plot"]),
    ("text_values", "{fx}/plot/text_values", ["progress.csv", "nothing to plot"]), ("no_progress", "{fx}/plot/no_progress", ["progress.csv"]),
    ("a_file", "{fx}/a_file", ["a_file"]),
]:  # fmt: skip
    cli(f"plot.input.{cid}", ["plot", run, "-o", "x.png"], names)
cli("plot.metric_bogus", ["plot", "{run}", "-o", "x.png", "--metric", "bogus"], ["bogus"])
cli("plot.band_bogus", ["plot", "{run}", "-o", "x.png", "--band", "bogus"], ["band"])
cli("plot.metric_text_column", ["plot", "{run}", "-o", "x.png", "--metric", "time/total_timesteps"], ["time/total_timesteps"],
    expect="either")  # fmt: skip

# ---- list and top level
cli("list.agents_dir_nonexistent", ["list", "--agents-dir", "/nonexistent"], ["/nonexistent"])
cli("list.agents_dir_a_file", ["list", "--agents-dir", "{fx}/a_file"], ["a_file"])
cli("list.agents_dir_garbage", ["list", "--agents-dir", "{fx}/agents/garbage"], ["trpo.toml", "TOML"])
cli("list.agents_dir_badvalue", ["list", "--agents-dir", "{fx}/agents/badvalue"], ["n_steps"], expect="either")
cli("list.params_unknown", ["list", "--params", "foo"], ["foo"])
cli("list.params_empty", ["list", "--params", ""], ["algorithm", "''"], expect="either")
cli("top.unknown_command", ["bogus"], ["bogus"])


# ================================================================================================ API catalogue
# (run inside the worker: imports happen there)
def _agent(ctx: dict[str, Any], algo: str = "TRPO", **kw: Any) -> Any:
    import natrl

    key = ("agent", algo, tuple(sorted(kw.items())))
    if key not in ctx:
        ctx[key] = getattr(natrl, algo)("CartPole-v1", seed=0, n_steps=32, **kw)
    return ctx[key]


def _lstm(ctx: dict[str, Any]) -> Any:
    import natrl

    if "lstm" not in ctx:
        ctx["lstm"] = natrl.PPO("MlpLstmPolicy", "CartPole-v1", seed=0, n_steps=32, batch_size=32)
    return ctx["lstm"]


def _mk(algo: str = "TRPO", env: Any = "CartPole-v1", **kw: Any) -> Any:
    import natrl

    return getattr(natrl, algo)(env, **kw)


for v in [1.7, -1, "1", True, 2**70, float("nan"), [0]]:
    api(f"api.seed[{v!r}]", ["seed"], desc=f"TRPO('CartPole-v1', seed={v!r})")(lambda ctx, v=v: _mk(seed=v))
api("api.seed[np.float64(1.0)]", ["seed"])(lambda ctx: __import__("numpy") and _mk(seed=__import__("numpy").float64(1)))
for cid, env, names in [("none", None, ["env"]), ("int", 123, ["env", "123"]), ("unknown", "Nope-v0", ["Nope-v0"]),
                        ("empty", "", ["env", "''"]), ("module_colon", "os:system", ["os:system", "system"]),
                        ("object", object(), ["env", "object"]), ("factory_none", lambda: None, ["env", "None"])]:  # fmt: skip
    api(f"api.env.{cid}", names, desc=f"TRPO({env!r})")(lambda ctx, env=env: _mk(env=env))
for dev in ["meta", "cuda", 5, "gpu", "cuda:99", None]:
    api(f"api.device[{dev!r}]", ["device"], desc=f"TRPO('CartPole-v1', device={dev!r})")(
        lambda ctx, dev=dev: _mk(device=dev)
    )
for cid, pol, names in [("bogus", "Bogus", ["Bogus"]), ("int", 123, ["policy"]), ("cnn", "CnnPolicy", ["CnnPolicy"])]:
    api(f"api.policy.{cid}", names, desc=f"TRPO('CartPole-v1', policy={pol!r})")(lambda ctx, p=pol: _mk(policy=p))
for cid, pk, names in [
    ("log_std_nan", {"log_std_init": float("nan")}, ["log_std_init"]),
    ("log_std_inf", {"log_std_init": float("inf")}, ["log_std_init"]),
    ("log_std_str", {"log_std_init": "a"}, ["log_std_init"]),
    ("log_std_huge", {"log_std_init": 1e10}, ["log_std_init"]),
    ("net_arch_neg", {"net_arch": [-1]}, ["net_arch"]),
    ("net_arch_zero", {"net_arch": [0]}, ["net_arch"]),
    ("net_arch_str", {"net_arch": "abc"}, ["net_arch"]),
    ("net_arch_float", {"net_arch": [64.5]}, ["net_arch"]),
    ("net_arch_dict_neg", {"net_arch": {"pi": [-1], "vf": [64]}}, ["net_arch", "pi"]),
    ("net_arch_dict_bad_key", {"net_arch": {"policy": [64]}}, ["net_arch", "policy"]),
    ("activation_str_unknown", {"activation_fn": "sigmoidx"}, ["activation_fn", "activation"]),
    ("activation_function", {"activation_fn": os.system}, ["activation_fn"]),
    ("activation_int_class", {"activation_fn": int}, ["activation_fn"]),
    ("unknown_key", {"bogus": 1}, ["bogus"]),
    ("ortho_init_str", {"ortho_init": "yes"}, ["ortho_init"]),
    ("not_a_dict", "abc", ["policy_kwargs"]),
    ("features_extractor_int", {"features_extractor_class": int}, ["features_extractor"]),
]:
    api(f"api.policy_kwargs.{cid}", names, desc=f"TRPO('CartPole-v1', policy_kwargs={pk!r})")(
        lambda ctx, pk=pk: _mk(policy_kwargs=pk)
    )


def _hp_sweep() -> None:
    """Every numeric hyperparameter of every config, as constructor keywords: not finite, wrong type, range."""
    classes = {"trpo": "TRPO", "npg": "NPG", "ppo": "PPO", "acktr": "ACKTR"}
    values: list[Any] = [float("nan"), float("inf"), "abc", True, [1], None, complex(1, 1)]
    for algo, name, default in _sweep_fields():
        if True:
            cls, tag = classes[algo], name
            bad_range = OUT_OF_RANGE.get(name, "-1")
            rv: Any = json.loads(bad_range)
            if name == "sequence_length":
                rv = 5  # does not divide n_steps=32
            sweep = [rv, *values]
            for v in sweep:
                if v is None and default is None:
                    continue  # None is this field's default
                kw = {name: v}
                if name != "n_steps":
                    kw["n_steps"] = 32
                api(f"api.hp[{cls}:{tag}={v!r}]", [name], desc=f"{cls}('CartPole-v1', {name}={v!r})")(
                    lambda ctx, cls=cls, kw=kw: _mk(cls, **kw)
                )


_hp_sweep()
api("api.hp.unknown_kwarg", ["bogus"])(lambda ctx: _mk(bogus=1))
api("api.hp.config_wrong_class", ["PPOConfig", "TRPOConfig", "config"])(
    lambda ctx: _mk(config=__import__("natrl.rl", fromlist=["PPOConfig"]).PPOConfig())
)
api("api.hp.config_object", ["config"])(lambda ctx: _mk(config=object()))
api("api.hp.hidden_sizes_str_item", ["hidden_sizes"])(lambda ctx: _mk(hidden_sizes=[64, "a"]))
api("api.hp.hidden_sizes_float", ["hidden_sizes"])(lambda ctx: _mk(hidden_sizes=(64.0,)))
api("api.hp.schedule_wrong_arity", ["learning_rate"])(lambda ctx: _mk("PPO", learning_rate=lambda: 1e-3))
api("api.hp.schedule_returns_str", ["learning_rate"])(lambda ctx: _mk("PPO", learning_rate=lambda p: "x"))
api("api.hp.n_envs_with_instance", ["n_envs"], desc="TRPO(<one env instance without a spec>, n_envs=2)")(
    lambda ctx: _mk(env=_bad_env_factory("ok")(), n_envs=2)
)


@api("api.hp.schedule_negative_later", ["learning_rate", "schedule"], timeout=120)
def _neg_schedule(ctx: dict[str, Any]) -> Any:
    """PPO(learning_rate=lambda p: 2*p - 1): positive at the start, negative in the second half of learn."""
    agent = _mk("PPO", learning_rate=lambda p: 2 * p - 1, n_steps=64, batch_size=64, seed=0)
    agent.learn(512)
    return "learned 512 steps with a negative learning rate in the second half"


@api("api.hp.schedule_nan_later", ["max_kl", "schedule", "finite"], timeout=120)
def _nan_schedule(ctx: dict[str, Any]) -> Any:
    """TRPO(max_kl=lambda p: 0.01 if p > 0.6 else nan)."""
    agent = _mk("TRPO", max_kl=lambda p: 0.01 if p > 0.6 else float("nan"), n_steps=64, seed=0)
    agent.learn(512)
    return "learned 512 steps with max_kl=nan in the second half"


for v in [0, -1, float("nan"), "100", 1.5, True, None, 1e400, [64]]:
    api(f"api.learn.total_timesteps[{v!r}]", ["total_timesteps"], desc=f"agent.learn({v!r})")(
        lambda ctx, v=v: _agent(ctx).learn(v)
    )
for cid, cb, names in [("str", "abc", ["callback"]), ("int", 123, ["callback"]),
                       ("wrong_arity", lambda: True, ["callback"])]:  # fmt: skip
    api(f"api.learn.callback.{cid}", names, desc=f"agent.learn(64, callback={cb!r})")(
        lambda ctx, cb=cb: _agent(ctx).learn(64, callback=cb)
    )
for v in [0, -1, "1"]:
    api(f"api.learn.log_interval[{v!r}]", ["log_interval"])(lambda ctx, v=v: _agent(ctx).learn(64, log_interval=v))


class _BadEnvBase:
    pass


def _bad_env_factory(mode: str) -> Callable[[], Any]:
    import gymnasium as gym
    import numpy as np

    class BadEnv(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def __init__(self) -> None:
            self.t = 0

        def reset(self, *, seed: Any = None, options: Any = None) -> Any:
            super().reset(seed=seed)
            self.t = 0
            obs = np.zeros(3, np.float32)
            if mode == "reset_obs_only":
                return obs
            if mode == "reset_obs_nan":
                obs = np.full(3, np.nan, np.float32)
            return obs, {}

        def step(self, action: Any) -> Any:
            self.t += 1
            obs, reward, term, trunc, info = np.zeros(3, np.float32), 1.0, self.t % 10 == 0, False, {}
            if mode == "terminated_none":
                term = None
            elif mode == "terminated_str":
                term = "no"
            elif mode == "truncated_array":
                trunc = np.array([False, True])
            elif mode == "reward_nan":
                reward = float("nan")
            elif mode == "reward_inf":
                reward = float("inf")
            elif mode == "reward_str":
                reward = "1.0"
            elif mode == "reward_none":
                reward = None
            elif mode == "reward_array":
                reward = np.ones(2)
            elif mode == "obs_nan":
                obs = np.full(3, np.nan, np.float32)
            elif mode == "obs_inf":
                obs = np.full(3, np.inf, np.float32)
            elif mode == "obs_shape":
                obs = np.zeros(5, np.float32)
            elif mode == "obs_str":
                obs = "abc"
            elif mode == "info_none":
                info = None
            elif mode == "four_tuple":
                return obs, reward, term, info
            elif mode == "huge_reward":
                reward = 1e38
            return obs, reward, term, trunc, info

    return BadEnv


for mode, names in [
    ("terminated_none", ["terminated"]), ("terminated_str", ["terminated"]), ("truncated_array", ["truncated"]),
    ("reward_nan", ["reward"]), ("reward_inf", ["reward"]), ("reward_str", ["reward"]), ("reward_none", ["reward"]),
    ("reward_array", ["reward"]), ("obs_nan", ["observation", "obs"]), ("obs_inf", ["observation", "obs"]),
    ("obs_shape", ["observation", "shape"]), ("obs_str", ["observation", "obs"]), ("info_none", ["info"]),
    ("four_tuple", ["step", "values", "5"]), ("reset_obs_only", ["reset"]), ("reset_obs_nan", ["observation", "obs"]),
]:  # fmt: skip
    api(f"api.env_step.{mode}", names, desc=f"TRPO(factory of an env whose step/reset has {mode}).learn(64)")(
        lambda ctx, mode=mode: _mk(env=_bad_env_factory(mode), n_steps=32, seed=0).learn(64)
    )


@api("api.env_step.huge_reward", ["reward", "finite"], expect="either", timeout=120)
def _huge_reward(ctx: dict[str, Any]) -> Any:
    """TRPO on an env whose rewards are 1e38 (finite, float32 max): training must keep parameters finite."""
    agent = _mk(env=_bad_env_factory("huge_reward"), n_steps=32, seed=0)
    agent.learn(128)
    return _params_problem(agent)


def _params_problem(agent: Any) -> str | None:
    import torch

    for name, p in [*agent.actor.named_parameters(), *agent.critic.named_parameters()]:
        if not bool(torch.isfinite(p).all()):
            return f"parameter {name} is not finite"
    return None


def _obs(v: str) -> Any:
    import numpy as np

    return {
        "nan": np.array([np.nan, 0, 0, 0], np.float32), "inf": np.array([np.inf, 0, 0, 0], np.float32),
        "shape3": np.zeros(3, np.float32), "shape2x5": np.zeros((2, 5), np.float32),
        "empty_batch": np.zeros((0, 4), np.float32), "str": "abc", "none": None, "list_str": ["a", "b", "c", "d"],
        "dict": {"x": 1}, "complex": np.zeros(4, np.complex64), "object": np.array([object()] * 4),
        "scalar": 1.0, "3d": np.zeros((2, 2, 4), np.float32), "nan_batch": np.array([[0, 0, 0, 0], [np.nan] * 4]),
    }[v]  # fmt: skip


for v in ["nan", "inf", "shape3", "shape2x5", "str", "none", "list_str", "dict", "complex", "object", "scalar",
          "3d", "nan_batch"]:  # fmt: skip
    api(f"api.predict.obs[{v}]", ["observation", "obs", "shape"], desc=f"agent.predict(<{v} observation>)")(
        lambda ctx, v=v: _agent(ctx).predict(_obs(v))
    )


@api("api.predict.obs[empty_batch]", ["observation", "batch", "empty"], expect="either")
def _empty_batch(ctx: dict[str, Any]) -> Any:
    """predict on a (0, 4) batch: an empty action batch or a clean error."""
    action, _ = _agent(ctx).predict(_obs("empty_batch"))
    return None if len(action) == 0 else f"returned {action!r}"


@api("api.predict.deterministic_str", ["deterministic"])
def _det_str(ctx: dict[str, Any]) -> Any:
    """predict(obs, deterministic='no'): a non-empty string is truthy: the mode is taken silently."""
    import numpy as np

    return repr(_agent(ctx).predict(np.zeros(4, np.float32), deterministic="no"))


def _lstm_predict(ctx: dict[str, Any], state: Any = "zero", starts: Any = None, n: int = 2) -> Any:
    import numpy as np

    agent = _lstm(ctx)
    obs = np.zeros((n, 4), np.float32)
    if isinstance(state, str) and state == "zero":
        _, state = agent.predict(obs)
    return agent.predict(obs, state, episode_start=starts)


def _nan_state(ctx: dict[str, Any]) -> Any:
    import numpy as np

    _, st = _lstm(ctx).predict(np.zeros((2, 4), np.float32))
    return tuple(np.full_like(s, np.nan) for s in st)


api("api.lstm.state_nan", ["state", "NaN"])(lambda ctx: _lstm_predict(ctx, _nan_state(ctx)))
api("api.lstm.state_str", ["state"])(lambda ctx: _lstm_predict(ctx, "abc"))
api("api.lstm.state_shape", ["state", "shape"])(
    lambda ctx: _lstm_predict(ctx, (__import__("numpy").zeros((1, 3, 7)),) * 2)
)
api("api.lstm.episode_start_strings", ["episode_start"])(lambda ctx: _lstm_predict(ctx, starts=["no", "no"]))
api("api.lstm.episode_start_ints", ["episode_start"])(lambda ctx: _lstm_predict(ctx, starts=[2, 3]))
api("api.lstm.episode_start_length", ["episode_start"])(lambda ctx: _lstm_predict(ctx, starts=[True]))
api("api.lstm.episode_start_floats", ["episode_start"])(lambda ctx: _lstm_predict(ctx, starts=[0.5, 0.5]))
api("api.lstm.episode_start_nan", ["episode_start"])(
    lambda ctx: _lstm_predict(ctx, starts=__import__("numpy").array([float("nan")] * 2))
)


@api("api.params.set_nan_then_save", ["finite", "NaN", "non-finite"])
def _set_nan_then_save(ctx: dict[str, Any]) -> Any:
    """set_parameters with a NaN weight, then save: one of them must refuse; no file with NaN."""

    agent = _agent(ctx)
    params = agent.get_parameters()
    bad = {k: v.clone() for k, v in params["policy"].items()}
    key = next(k for k, v in bad.items() if v.is_floating_point())
    bad[key].view(-1)[0] = float("nan")
    try:
        agent.set_parameters({"policy": bad})
    finally:
        agent.set_parameters(params)
    agent.save("nan_model.pt")
    return "set_parameters accepted NaN weights and save wrote them"


@api("api.params.inplace_nan_then_save", ["finite", "NaN", "non-finite"])
def _inplace_nan(ctx: dict[str, Any]) -> Any:
    """A NaN written into a parameter in place, then save: save must refuse (nothing written)."""
    import torch

    agent = _mk(n_steps=32)
    with torch.no_grad():
        next(agent.actor.parameters()).view(-1)[0] = float("nan")
    agent.save("nan_model.pt")
    return "save wrote a NaN parameter"


for cid, value, names in [("empty_dict", {}, ["policy", "parameters"]), ("empty_policy", {"policy": {}}, ["parameters", "missing", "fit"]),
                          ("policy_int", {"policy": 5}, ["policy", "parameters"]), ("missing_file", "nope.pt", ["nope.pt"]),
                          ("int", 123, ["parameters", "123"]), ("wrong_shape", "SHAPE", ["fit", "shape", "size"])]:  # fmt: skip

    def _sp(ctx: dict[str, Any], value: Any = value) -> Any:
        import torch

        agent = _agent(ctx)
        if value == "SHAPE":
            value = {"policy": {k: torch.zeros(2, 2) for k in agent.get_parameters()["policy"]}}
        agent.set_parameters(value)
        return "accepted"

    api(f"api.params.set_parameters.{cid}", names, desc=f"agent.set_parameters({value!r})")(_sp)
for cid, path, names in [("empty", "", ["empty path", "save:", "file name"]), ("existing_dir", ".", ["is a directory", "save:"]),
                         ("through_file", "afile/x.pt", ["afile", "directory"])]:  # fmt: skip

    def _save(ctx: dict[str, Any], path: str = path) -> Any:
        Path("afile").write_text("x")
        return str(_agent(ctx).save(path))

    api(f"api.save.{cid}", names, io=True, desc=f"agent.save({path!r})")(_save)
api("api.save.missing_parent", ["nonexistent"], io=True, expect="either")(
    lambda ctx: None if _agent(ctx).save("nonexistent/deeper/x.pt").is_file() else "no file"
)
for cid, kw, names in [
    ("policy_kwargs_differs", {"policy_kwargs": {"net_arch": [32]}}, ["policy_kwargs", "net_arch"]),
    ("policy_kwargs_unknown", {"policy_kwargs": {"bogus": 1}}, ["bogus", "policy_kwargs"]),
    ("device_meta", {"device": "meta"}, ["device", "meta"]),
    ("custom_objects_range", {"custom_objects": {"max_kl": -1}}, ["max_kl"]),
    ("custom_objects_unknown", {"custom_objects": {"bogus": 1}}, ["bogus"]),
    ("custom_objects_nan", {"custom_objects": {"n_steps": float("nan")}}, ["n_steps"]),
    ("env_space_mismatch", {"env": "Pendulum-v1"}, ["space", "Pendulum"]),
    ("env_int", {"env": 123}, ["env"]),
    ("policy_module_mismatch", {"policy": "MlpLstmPolicy"}, ["policy", "MlpLstmPolicy", "fit"]),
]:
    api(f"api.load.{cid}", names, desc=f"TRPO.load(model.pt, **{kw!r})")(
        lambda ctx, kw=kw: __import__("natrl").TRPO.load(ctx["model"], **kw)
    )
api("api.load.ppo_checkpoint_as_trpo", ["ppo", "trpo"])(lambda ctx: __import__("natrl").TRPO.load(ctx["ppo_model"]))
api("api.load.missing", ["nope"])(lambda ctx: __import__("natrl").TRPO.load("nope.pt"))
api("api.load.policy_kwargs_same", [], expect="either",
    desc="TRPO.load(model.pt, policy_kwargs={}) (nothing differs)")(
    lambda ctx: __import__("natrl").TRPO.load(ctx["model"], policy_kwargs={}) and None)  # fmt: skip
for name, names in EVAL_NAMES.items():
    if name in ("malicious",):
        continue
    api(f"api.load_agent.{name}", names, desc=f"natrl.rl.load_agent(<{name} checkpoint>)")(
        lambda ctx, name=name: __import__("natrl.rl", fromlist=["load_agent"]).load_agent(f"{ctx['fx']}/ckpt/{name}.pt")
    )


@api("api.load_agent.malicious", ["corrupt", "not a readable", "unsafe"])
def _malicious(ctx: dict[str, Any]) -> Any:
    """A checkpoint whose pickle runs os.system on load: must be refused without running it."""
    from natrl.rl import load_agent

    try:
        load_agent(f"{ctx['fx']}/ckpt/malicious.pt")
    finally:
        if Path(ctx["marker"]).exists():
            raise AssertionError("SECURITY: loading the checkpoint ran its code (marker file created)")
    return "loaded"


for cid, kw, names in [("episodes_zero", {"episodes": 0}, ["episodes"]), ("episodes_float", {"episodes": 1.5}, ["episodes"]),
                       ("episodes_str", {"episodes": "3"}, ["episodes"]), ("seed_negative", {"seed": -1}, ["seed"]),
                       ("seed_float", {"seed": 1.5}, ["seed"]),
                       ("env_mismatch", {"env": "Pendulum-v1"}, ["space"])]:  # fmt: skip
    kw2 = {"episodes": 1, **kw}
    api(f"api.evaluate.{cid}", names, desc=f"agent.evaluate(**{kw2!r})")(lambda ctx, kw=kw2: _agent(ctx).evaluate(**kw))
api("api.set_env.mismatch", ["space"])(lambda ctx: _mk(n_steps=32).set_env("Pendulum-v1"))
api("api.set_env.int", ["env"])(lambda ctx: _mk(n_steps=32).set_env(123))
for v in [0, -1, "abc", 1.5]:
    api(f"api.make_vec_env.n_envs[{v!r}]", ["n_envs"])(
        lambda ctx, v=v: __import__("natrl").make_vec_env("CartPole-v1", n_envs=v)
    )
api("api.callbacks.checkpoint_freq_zero", ["save_freq"])(
    lambda ctx: __import__("natrl.callbacks", fromlist=["x"]).CheckpointCallback(save_freq=0, save_path="ck")
)
api("api.callbacks.checkpoint_freq_float", ["save_freq"])(
    lambda ctx: __import__("natrl.callbacks", fromlist=["x"]).CheckpointCallback(save_freq=1.5, save_path="ck")
)


@api("api.callbacks.checkpoint_path_through_file", ["afile", "directory"], io=True)
def _ck_through_file(ctx: dict[str, Any]) -> Any:
    from natrl.callbacks import CheckpointCallback

    Path("afile").write_text("x")
    _mk(n_steps=32).learn(64, callback=CheckpointCallback(save_freq=1, save_path="afile/ck"))
    return "learned"


for cid, kw, names in [("env_unknown", {"eval_env": "Nope-v0"}, ["Nope-v0"]),
                       ("freq_zero", {"eval_env": "CartPole-v1", "eval_freq": 0}, ["eval_freq"]),
                       ("episodes_zero", {"eval_env": "CartPole-v1", "n_eval_episodes": 0}, ["n_eval_episodes"]),
                       ("env_mismatch_at_learn", {"eval_env": "Pendulum-v1", "eval_freq": 1}, ["space", "eval_env"])]:  # fmt: skip

    def _ecb(ctx: dict[str, Any], kw: dict[str, Any] = kw) -> Any:
        from natrl.callbacks import EvalCallback

        cb = EvalCallback(**kw)
        _mk(n_steps=32).learn(64, callback=cb)
        return "learned"

    api(f"api.callbacks.eval.{cid}", names)(_ecb)
api("api.callbacks.reward_threshold_nan", ["reward_threshold"])(
    lambda ctx: __import__("natrl.callbacks", fromlist=["x"]).StopTrainingOnRewardThreshold(
        reward_threshold=float("nan")
    )
)
api("api.callbacks.no_improvement_negative", ["max_no_improvement_evals"])(
    lambda ctx: __import__("natrl.callbacks", fromlist=["x"]).StopTrainingOnNoModelImprovement(-1)
)


# ---- optimisation
def _quad(x: Any) -> Any:
    return ((x - 3.0) ** 2).sum()


def _min_result(res: Any, want_success: bool | None = False) -> str | None:
    import torch

    if not bool(torch.isfinite(res.x).all()):
        return f"x is not finite ({res.x})"
    if want_success is False and res.success:
        return f"success=True (status {res.status}, message {res.message!r})"
    return None


def _bad_derivative(method: str, **kw: Any) -> Callable[[dict[str, Any]], Any]:
    """A case: ``minimize(quad, zeros(4), method=method, **kw)`` with a jac or hessp that returns non-finite
    values must end with success=False, quickly."""

    def case(ctx: dict[str, Any]) -> Any:
        import torch

        from natrl.optim import minimize

        return _min_result(minimize(_quad, torch.zeros(4, dtype=torch.float64), method=method, **kw))

    return case


for method in ["bfgs", "lbfgs", "newton-cg", "trust-ncg", "newton"]:
    for name, value, shown in (("nan_jac", float("nan"), "NaN"), ("inf_jac", float("inf"), "+inf")):
        api(
            f"api.minimize.{name}[{method}]",
            expect="result",
            timeout=30,
            desc=f"minimize(quad, zeros(4), method={method!r}, jac=lambda x: {shown}) -> success=False quickly",
        )(_bad_derivative(method, jac=lambda x, v=value: x.new_full(x.shape, v)))

    def _nan_later(ctx: dict[str, Any], method: str = method) -> Any:
        import torch

        from natrl.optim import minimize

        def f(x: Any) -> Any:  # finite at x0, NaN once x moves away from 0
            return _quad(x) + torch.where(x.abs().max() > 0.5, torch.tensor(float("nan"), dtype=x.dtype), 0.0 * x.sum())

        res = minimize(f, torch.zeros(4, dtype=torch.float64), method=method)
        return _min_result(res, want_success=None)

    api(
        f"api.minimize.nan_away_from_x0[{method}]",
        expect="result",
        timeout=30,
        desc=f"minimize(f finite at x0 and NaN further out, method={method!r}): x stays finite",
    )(_nan_later)
for method in ["newton-cg", "trust-ncg", "newton"]:
    api(
        f"api.minimize.nan_hessp[{method}]",
        expect="result",
        timeout=30,
        desc=f"minimize(..., method={method!r}, hessp=lambda x, p: NaN) -> success=False quickly",
    )(_bad_derivative(method, hessp=lambda x, p: p.new_full(p.shape, float("nan"))))


def _minimize(**kw: Any) -> Any:
    import torch

    from natrl.optim import minimize

    x0 = kw.pop("x0", None)
    if x0 is None:
        x0 = torch.zeros(4, dtype=torch.float64)
    fun = kw.pop("fun", _quad)
    kw.setdefault("method", "lbfgs")
    return minimize(fun, x0, **kw)


for cid, kw, names in [
    ("tol_nan", {"tol": float("nan")}, ["tol"]), ("tol_negative", {"tol": -1}, ["tol"]), ("tol_str", {"tol": "1"}, ["tol"]),
    ("max_iter_negative", {"max_iter": -1}, ["max_iter"]), ("max_iter_float", {"max_iter": 1.5}, ["max_iter"]),
    ("method_unknown", {"method": "foo"}, ["foo", "method"]), ("method_none", {"method": None}, ["method"]),
    ("method_int", {"method": 123}, ["method"]), ("options_unknown", {"options": {"bogus": 1}}, ["bogus"]),
    ("options_c1_gt_c2", {"options": {"c1": 0.9, "c2": 0.1}}, ["c1", "c2"]),
    ("options_history_zero", {"options": {"history_size": 0}}, ["history_size"]),
    ("options_gtol_nan", {"options": {"gtol": float("nan")}}, ["gtol"]),
    ("options_not_mapping", {"options": "abc"}, ["options"]),
    ("options_line_search", {"options": {"line_search": "armijo"}}, ["line_search"]),
    ("hess_inv0_shape", {"method": "bfgs", "options": {"hess_inv0": "SHAPE"}}, ["hess_inv0"]),
    ("trust_radius_order", {"method": "trust-ncg", "options": {"initial_trust_radius": 10.0, "max_trust_radius": 1.0}},
     ["trust_radius"]),
    ("eta_out_of_range", {"method": "trust-ncg", "options": {"eta": 0.5}}, ["eta"]),
    ("x0_int", {"x0": "INT"}, ["x0"]), ("x0_list", {"x0": [0.0, 0.0]}, ["x0"]), ("x0_numpy", {"x0": "NUMPY"}, ["x0"]),
    ("x0_nan", {"x0": "NAN"}, ["x0", "finite", "fun"]), ("x0_complex", {"x0": "COMPLEX"}, ["x0"]),
    ("fun_non_scalar", {"fun": lambda x: x * 2}, ["scalar", "fun"]),
    ("fun_nan_at_x0", {"fun": lambda x: x.sum() * float("nan")}, ["finite", "fun"]),
    ("fun_returns_none", {"fun": lambda x: None}, ["fun", "None"]),
    ("fun_returns_float", {"fun": lambda x: 1.0}, ["fun", "gradient", "tensor"]),
    ("fun_no_grad", {"fun": lambda x: x.detach().sum()}, ["gradient", "fun"]),
    ("jac_wrong_shape", {"jac": lambda x: x[:2]}, ["jac", "shape"]),
    ("jac_none", {"jac": lambda x: None}, ["jac"]),
    ("jac_str", {"jac": "yes"}, ["jac"]),
    ("callback_not_callable", {"callback": 5}, ["callback"]),
]:  # fmt: skip

    def _mz(ctx: dict[str, Any], kw: dict[str, Any] = kw) -> Any:
        import numpy as np
        import torch

        kw = dict(kw)
        x0 = kw.get("x0")
        if isinstance(x0, str):
            kw["x0"] = {"INT": torch.zeros(4, dtype=torch.int64), "NUMPY": np.zeros(4),
                        "NAN": torch.full((4,), float("nan"), dtype=torch.float64),
                        "COMPLEX": torch.zeros(4, dtype=torch.complex128)}[x0]  # fmt: skip
        if kw.get("options", {}) and isinstance(kw["options"], dict) and kw["options"].get("hess_inv0") == "SHAPE":
            kw["options"] = {"hess_inv0": torch.eye(3, dtype=torch.float64)}
        res = _minimize(**kw)
        return f"returned success={res.success} x={res.x.tolist()}"

    api(f"api.minimize.{cid}", names, desc=f"minimize(quad, zeros(4), **{kw!r})")(_mz)


@api("api.minimize.x0_empty", ["x0", "empty"], expect="either")
def _x0_empty(ctx: dict[str, Any]) -> Any:
    import torch

    res = _minimize(x0=torch.zeros(0, dtype=torch.float64), fun=lambda x: x.sum())
    return None if res.x.numel() == 0 else f"x={res.x}"


def _model(n: int = 4) -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(n, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _opt(cls: str, *args: Any, **kw: Any) -> Any:
    import natrl.optim as o

    return getattr(o, cls)(*args, **kw)


for cls in ["BFGS", "LBFGS", "Newton"]:
    for v in [-1, 0, float("nan"), float("inf"), "1", True, None]:
        api(f"api.optim.{cls}.lr[{v!r}]", ["lr"], desc=f"{cls}(model.parameters(), lr={v!r})")(
            lambda ctx, cls=cls, v=v: _opt(cls, _model().parameters(), lr=v)
        )
for cid, cls, kw, names in [
    ("LBFGS.history_size_zero", "LBFGS", {"history_size": 0}, ["history_size"]),
    ("LBFGS.history_size_float", "LBFGS", {"history_size": 2.5}, ["history_size"]),
    ("LBFGS.line_search", "LBFGS", {"line_search": "armijo"}, ["line_search"]),
    ("LBFGS.max_iter_zero", "LBFGS", {"max_iter": 0}, ["max_iter"]),
    ("LBFGS.tolerance_grad_nan", "LBFGS", {"tolerance_grad": float("nan")}, ["tolerance_grad"]),
    ("LBFGS.max_ls_evals_zero", "LBFGS", {"max_ls_evals": 0}, ["max_ls_evals"]),
    ("LBFGS.max_eval_zero", "LBFGS", {"max_eval": 0}, ["max_eval"]),
    ("LBFGS.c1_gt_c2", "LBFGS", {"c1": 0.9, "c2": 0.1}, ["c1", "c2"]),
    ("BFGS.max_params_zero", "BFGS", {"max_params": 0}, ["max_params"]),
    ("BFGS.too_many_params", "BFGS", {"max_params": 5}, ["max_params", "parameters"]),
    ("Newton.damping_zero", "Newton", {"damping": 0}, ["damping"]),
    ("Newton.curvature", "Newton", {"curvature": "foo"}, ["curvature"]),
    ("Newton.cg_max_iter_zero", "Newton", {"cg_max_iter": 0}, ["cg_max_iter"]),
    ("Newton.forcing_one", "Newton", {"forcing": 1.0}, ["forcing"]),
    ("Newton.adaptive_damping_str", "Newton", {"adaptive_damping": "yes"}, ["adaptive_damping"]),
    ("Newton.line_search", "Newton", {"line_search": "wolfe"}, ["line_search"]),
]:
    api(f"api.optim.{cid}", names, desc=f"{cls}(model.parameters(), **{kw!r})")(
        lambda ctx, cls=cls, kw=kw: _opt(cls, _model().parameters(), **kw)
    )
api("api.optim.BFGS.empty_params", ["parameter"])(lambda ctx: _opt("BFGS", []))
api("api.optim.BFGS.module_not_params", ["params", "Module", "iterable"])(lambda ctx: _opt("BFGS", _model()))
api("api.optim.BFGS.int_params", ["dtype", "floating", "parameter"])(
    lambda ctx: _opt("BFGS", [__import__("torch").zeros(3, dtype=__import__("torch").int64)])
)
api("api.optim.BFGS.no_grad_params", ["requires_grad", "gradients"])(
    lambda ctx: _opt("BFGS", [__import__("torch").zeros(3)])
)


def _closure_case(ret: str) -> Callable[[dict[str, Any]], Any]:
    def run(ctx: dict[str, Any]) -> Any:
        import torch

        m = _model()
        opt = _opt("LBFGS", m.parameters())
        x, y = torch.randn(16, 4), torch.randn(16, 1)

        def closure() -> Any:
            opt.zero_grad()
            loss = ((m(x) - y) ** 2).mean()
            if ret == "nan":
                loss = loss * float("nan")
            loss.backward() if ret != "none_backward" else None
            return {"nan": loss, "none": None, "nonscalar": m(x), "str": "x", "none_backward": loss}[ret]

        if ret == "no_closure":
            opt.step()
        else:
            opt.step(closure)
        bad = [n for n, p in m.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            return f"parameters {bad} became non-finite"
        return None if ret == "nan" else "step accepted it"

    return run


api("api.optim.LBFGS.closure_nan", expect="result", desc="LBFGS.step(closure returning NaN): params stay finite")(
    _closure_case("nan")
)
for ret, names in [("none", ["closure", "None"]), ("nonscalar", ["closure", "scalar"]), ("str", ["closure"]),
                   ("no_closure", ["closure"])]:  # fmt: skip
    api(f"api.optim.LBFGS.closure_{ret}", names, desc=f"LBFGS.step(closure returning {ret})")(_closure_case(ret))


@api("api.optim.param_group_lr_nan_after_construction", ["lr"])
def _lr_after(ctx: dict[str, Any]) -> Any:
    """opt.param_groups[0]['lr'] = nan after construction (a scheduler's edit), then step."""
    import torch

    m = _model()
    opt = _opt("LBFGS", m.parameters())
    opt.param_groups[0]["lr"] = float("nan")
    x = torch.randn(8, 4)

    def closure() -> Any:
        opt.zero_grad()
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return "stepped with lr=nan: " + ("params finite" if all(bool(torch.isfinite(p).all()) for p in m.parameters())
                                      else "params NOT finite")  # fmt: skip


for cid, kw, names in [("lr_nan", {"lr": float("nan")}, ["lr"]), ("lr_negative", {"lr": -1}, ["lr"]),
                       ("momentum_one", {"momentum": 1}, ["momentum"]), ("damping_zero", {"damping": 0}, ["damping"]),
                       ("kl_clip_nan", {"kl_clip": float("nan")}, ["kl_clip"]), ("fisher", {"fisher": "foo"}, ["fisher"]),
                       ("factor_interval_zero", {"factor_interval": 0}, ["factor_interval"]),
                       ("factor_decay_one", {"factor_decay": 1.0}, ["factor_decay"]),
                       ("adaptive_damping_int", {"adaptive_damping": 1}, ["adaptive_damping"]),
                       ("preconditioner_only_str", {"preconditioner_only": "yes"}, ["preconditioner_only"]),
                       ("weight_decay_negative", {"weight_decay": -1}, ["weight_decay"]),
                       ("lr_str", {"lr": "0.1"}, ["lr"])]:  # fmt: skip
    api(f"api.optim.KFAC.{cid}", names, desc=f"KFAC(model, **{kw!r})")(lambda ctx, kw=kw: _opt("KFAC", _model(), **kw))
api("api.optim.KFAC.not_a_module", ["model"])(lambda ctx: _opt("KFAC", "x"))
api("api.optim.KFAC.no_params", ["parameters"])(lambda ctx: _opt("KFAC", __import__("torch").nn.ReLU()))


def _kfac_run(scale: float, lr: float, steps: int = 5, nan_loss: bool = False, **kw: Any) -> str | None:
    import torch

    m = _model()
    opt = _opt("KFAC", m, lr=lr, **kw)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(steps):
        opt.zero_grad()
        loss = scale * ((m(x) - y) ** 2).mean()
        if nan_loss:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
    bad = [n for n, p in m.named_parameters() if not bool(torch.isfinite(p).all())]
    return f"parameters {bad} became non-finite" if bad else None


api("api.optim.KFAC.lr_1e6_loss_1e36", expect="result", timeout=60,
    desc="KFAC(model, lr=1e6) on a 1e36-scaled MSE, 5 steps: parameters must stay finite")(
    lambda ctx: _kfac_run(1e36, 1e6))  # fmt: skip
api("api.optim.KFAC.lr_1e6_loss_1e36_no_klclip", expect="result", timeout=60,
    desc="KFAC(model, lr=1e6, kl_clip=None) on a 1e36-scaled MSE: parameters must stay finite")(
    lambda ctx: _kfac_run(1e36, 1e6, kl_clip=None))  # fmt: skip
api("api.optim.KFAC.nan_loss", expect="result", desc="KFAC step after a NaN loss: parameters stay finite")(
    lambda ctx: _kfac_run(1.0, 0.01, nan_loss=True)
)
api("api.optim.KFAC.lr_zero", expect="result", desc="KFAC(model, lr=0): accepted or refused, params finite")(
    lambda ctx: _kfac_run(1.0, 0.0)
)
for cid, kw, names in [("curvature_none", {"curvature": None}, ["curvature"]), ("max_kl_zero", {"max_kl": 0}, ["max_kl"]),
                       ("damping_negative", {"damping": -1}, ["damping"]), ("cg_tol_nan", {"cg_tol": float("nan")}, ["cg_tol"])]:  # fmt: skip
    api(f"api.optim.NaturalGradient.{cid}", names)(
        lambda ctx, kw=kw: _opt("NaturalGradient", _model().parameters(), **{"curvature": lambda th: lambda v: v, **kw})
    )


def _cg(**kw: Any) -> Any:
    import torch

    from natrl.linalg import conjugate_gradient

    b = kw.pop("b", torch.ones(4, dtype=torch.float64))
    mv = kw.pop("matvec", lambda v: 2 * v)
    return conjugate_gradient(mv, b, **kw)


for cid, kw, names in [("max_iter_zero", {"max_iter": 0}, ["max_iter"]), ("max_iter_negative", {"max_iter": -1}, ["max_iter"]),
                       ("tol_nan", {"tol": float("nan")}, ["tol"]), ("tol_negative", {"tol": -1}, ["tol"]),
                       ("matvec_wrong_shape", {"matvec": lambda v: v[:2]}, ["matvec", "shape"]),
                       ("x0_wrong_shape", {"x0": "X0"}, ["x0", "shape"]), ("b_int", {"b": "INT"}, ["b", "dtype", "float"]),
                       ("matvec_not_callable", {"matvec": 5}, ["matvec"])]:  # fmt: skip

    def _cgc(ctx: dict[str, Any], kw: dict[str, Any] = kw) -> Any:
        import torch

        kw = dict(kw)
        if kw.get("x0") == "X0":
            kw["x0"] = torch.zeros(3, dtype=torch.float64)
        if kw.get("b") == "INT":
            kw["b"] = torch.ones(4, dtype=torch.int64)
        return repr(_cg(**kw))

    api(f"api.cg.{cid}", names, desc=f"conjugate_gradient(2I, ones(4), **{kw!r})")(_cgc)


@api(
    "api.cg.nan_b",
    ["non-finite", "NaN"],
    desc="conjugate_gradient with a NaN right-hand side (documented: NonFiniteError)",
)
def _cg_nan_b(ctx: dict[str, Any]) -> Any:
    import torch

    r = _cg(b=torch.tensor([1.0, float("nan"), 0.0, 0.0], dtype=torch.float64))
    if r.converged and not bool(torch.isfinite(r.x).all()):
        return f"converged=True with x={r.x}"
    return None


@api(
    "api.cg.nan_matvec",
    ["non-finite", "NaN"],
    desc="conjugate_gradient whose matvec returns NaN (documented: NonFiniteError)",
)
def _cg_nan_mv(ctx: dict[str, Any]) -> Any:

    r = _cg(matvec=lambda v: v * float("nan"))
    return f"converged=True with x={r.x}" if r.converged else None


def _bt(**kw: Any) -> Any:
    import torch

    from natrl.linesearch import backtracking

    args = {"expected_improvement": 1.0, "max_kl": 0.01}
    args.update(kw)
    return backtracking(lambda th: (float((th**2).sum()), 0.0), torch.ones(3), -torch.ones(3), **args)


for cid, kw, names in [("max_kl_nan", {"max_kl": float("nan")}, ["max_kl"]), ("shrink_big", {"shrink": 1.5}, ["shrink"]),
                       ("max_backtracks_negative", {"max_backtracks": -1}, ["max_backtracks"]),
                       ("expected_improvement_nan", {"expected_improvement": float("nan")}, ["expected_improvement"]),
                       ("accept_ratio_negative", {"accept_ratio": -1}, ["accept_ratio"])]:  # fmt: skip
    api(f"api.linesearch.backtracking.{cid}", names)(lambda ctx, kw=kw: repr(_bt(**kw)))


def _sw(**kw: Any) -> Any:
    import torch

    from natrl.linesearch import strong_wolfe

    x = torch.zeros(3, dtype=torch.float64)

    def fg(z: Any) -> Any:
        return ((z - 1) ** 2).sum(), 2 * (z - 1)

    f0, g0 = fg(x)
    return strong_wolfe(fg, x, -g0, f0=f0, g0=g0, **kw)


for cid, kw, names in [("c1_eq_c2", {"c1": 0.5, "c2": 0.5}, ["c1", "c2"]), ("step_negative", {"step": -1.0}, ["step"]),
                       ("max_evals_zero", {"max_evals": 0}, ["max_evals"]), ("method", {"method": "foo"}, ["method"])]:  # fmt: skip
    api(f"api.linesearch.strong_wolfe.{cid}", names)(lambda ctx, kw=kw: repr(_sw(**kw)))
for cid, kw, names in [("initial_nan", {"initial": float("nan")}, ["initial"]), ("lower_gt_upper", {"lower": 0.9, "upper": 0.1}, ["lower", "upper"]),
                       ("increase_below_one", {"increase": 0.5}, ["increase"])]:  # fmt: skip
    api(f"api.damping.LevenbergMarquardt.{cid}", names)(
        lambda ctx, kw=kw: __import__("natrl.linalg", fromlist=["x"]).LevenbergMarquardt(**kw)
    )
api("api.curvature.hvp_damping_negative", ["damping"])(
    lambda ctx: __import__("natrl.curvature", fromlist=["x"]).hvp(lambda t: (t**2).sum(),
                                                                   __import__("torch").ones(3), damping=-1))  # fmt: skip
api("api.curvature.hvp_damping_nan", ["damping"])(
    lambda ctx: __import__("natrl.curvature", fromlist=["x"]).hvp(lambda t: (t**2).sum(),
                                                                   __import__("torch").ones(3), damping=float("nan")))  # fmt: skip
api("api.curvature.hvp_vector_shape", ["shape", "size", "v"])(
    lambda ctx: __import__("natrl.curvature", fromlist=["x"]).hvp(lambda t: (t**2).sum(),
                                                                   __import__("torch").ones(3))(__import__("torch").ones(5)))  # fmt: skip


# ================================================================================================ faults
def _train_cmd(run: str, steps: int, *extra: str) -> list[str]:
    return [*NATRL, "train", "trpo", "CartPole-v1", "--steps", str(steps), "--set", "n_steps=64", "--set", "n_envs=1",
            "--checkpoint-every", "128", "--eval-every", "0", "--eval-episodes", "1", "-q", "--run-dir", run, *extra]  # fmt: skip


def _resume_cmd(run: str, *extra: str) -> list[str]:
    return [*NATRL, "train", "trpo", "CartPole-v1", "--resume", "--run-dir", run, "--eval-episodes", "1", "-q", *extra]


def _sh(cmd: Sequence[str], cwd: Path, timeout: float = 120) -> tuple[int | None, str, str]:
    p = subprocess.Popen(list(cmd), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)  # fmt: skip
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err


def _ckpts(run: Path) -> list[Path]:
    d = run / "checkpoints"
    return sorted(d.glob("*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)) if d.is_dir() else []


def _progress_steps(run: Path) -> list[int]:
    import csv

    path = run / "progress.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        try:
            out.append(int(float(row["time/total_timesteps"])))
        except (KeyError, TypeError, ValueError):
            out.append(-1)
    return out


def _intact_rows(path: Path) -> list[int]:
    """The timesteps of the whole, parseable rows of a progress.csv (what a repair must keep)."""
    if not path.is_file():
        return []
    lines = path.read_bytes().decode(errors="replace").splitlines(keepends=True)
    if not lines:
        return []
    width = lines[0].count(",")
    out = []
    for line in lines[1:]:
        if not line.endswith("\n") or line.count(",") != width:
            continue
        try:
            out.append(int(float(line.split(",")[0])))
        except ValueError:
            continue
    return [s for s in out if s > 0]


def _loadable(path: Path) -> bool:
    try:
        from natrl.rl.agent import OnPolicyAgent

        OnPolicyAgent.read_checkpoint(path)
        return True
    except Exception:
        return False


def _verify_run(run: Path, total: int, kept_rows: Sequence[int] = (), *, full: bool = True) -> list[str]:
    """Problems of a finished run: model.pt, checkpoints, progress.csv rows (kept_rows must still be there).
    "LOST: ..." is data lost; "WRONG: ..." a file left inconsistent. ``full``: every update's row must be there."""
    problems = []
    model = run / "model.pt"
    if not model.is_file():
        problems.append("LOST: no model.pt")
    elif not _loadable(model):
        problems.append("LOST: model.pt does not load")
    else:
        import torch

        st = torch.load(model, map_location="cpu", weights_only=True)
        if st.get("num_timesteps") != total:
            problems.append(f"WRONG: model.pt at step {st.get('num_timesteps')}, not {total}")
    for c in _ckpts(run):
        if not _loadable(c):
            problems.append(f"LOST: {c.name} does not load")
    steps = _progress_steps(run)
    if steps != sorted(set(steps)) or any(s <= 0 for s in steps):
        problems.append(f"WRONG: progress.csv timesteps not strictly increasing / unparseable: {steps}")
    if not steps or steps[-1] != total:
        problems.append(f"WRONG: progress.csv ends at {steps[-1] if steps else None}, not {total}")
    expected = list(range(64, total + 1, 64))
    if full and steps != expected:
        problems.append(f"WRONG: progress.csv rows {steps} != {expected}")
    missing = [s for s in kept_rows if s not in steps]
    if missing:
        problems.append(f"LOST: progress.csv rows {missing} were dropped")
    return problems


def _fault_verdict(rc: int | None, err: str, problems: list[str], *, want_error: bool = False,
                   names: Sequence[str] = ()) -> tuple[str, str]:  # fmt: skip
    lines = _stderr_lines(err)
    if any(p.startswith("LOST") for p in problems) or (problems and not any(p.startswith("WRONG") for p in problems)):
        return "lost-data", "; ".join(problems)
    if problems:
        return "silent-wrong", "; ".join(problems)
    if rc is None:
        return "hang", "timed out"
    if "Traceback (most recent call last)" in err:
        return "traceback", lines[-1][:300] if lines else ""
    if want_error:
        if rc == 0:
            return "silent-wrong", "exit 0 although the operation could not succeed"
        if len(lines) != 1:
            return "unclear", f"rc={rc}; {len(lines)} lines on stderr"
        if not _names_ok(lines[0], names):
            return "unclear", f"rc={rc}; names none of {list(names)}"
        return "survived", f"rc={rc}; {lines[0][:200]}"
    if rc != 0:
        return ("unclear" if len(lines) == 1 else "traceback"), f"recovery failed rc={rc}: {' | '.join(lines)[:300]}"
    warn = [ln for ln in lines if "warning" in ln.lower()]
    return "survived", "recovered" + (f" ({warn[0][:160]})" if warn else "")


def _start_and_wait_ckpt(wd: Path, run: str, steps: int, *extra: str, n_ckpt: int = 1,
                         timeout: float = 90) -> subprocess.Popen[str]:  # fmt: skip
    p = subprocess.Popen(_train_cmd(run, steps, *extra), cwd=wd, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    t0 = time.time()
    while time.time() - t0 < timeout and p.poll() is None:
        if len(_ckpts(wd / run)) >= n_ckpt:
            break
        time.sleep(0.1)
    return p


@fault("fault.sigkill_then_resume", "SIGKILL natrl train after its first checkpoint, then --resume to the end")
def _f_kill(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    p = _start_and_wait_ckpt(wd, "run", 1024)
    time.sleep(0.3)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    last_ckpt = max((int(re.sub(r"\D", "", c.stem)) for c in _ckpts(wd / "run")), default=0)
    kept = [s for s in _progress_steps(wd / "run") if 0 < s <= last_ckpt]
    rc, _out, err = _sh(_resume_cmd("run"), wd)
    return (*_fault_verdict(rc, err, _verify_run(wd / "run", 1024, kept)), err)


@fault(
    "fault.sigkill_three_times", "SIGKILL natrl train, resume, SIGKILL the resume twice more, then resume to the end"
)
def _f_kill3(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    p = _start_and_wait_ckpt(wd, "run", 1280)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    for i in range(2):
        before = len(_ckpts(wd / "run"))
        q = subprocess.Popen(_resume_cmd("run"), cwd=wd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)  # fmt: skip
        time.sleep(4.0 + i)
        os.killpg(q.pid, signal.SIGKILL)
        q.communicate()
        del before
    rc, _out, err = _sh(_resume_cmd("run"), wd)
    return (*_fault_verdict(rc, err, _verify_run(wd / "run", 1280)), err)


for sig in (signal.SIGINT, signal.SIGTERM):

    def _f_sig(wd: Path, ctx: dict[str, Any], sig: signal.Signals = sig) -> tuple[str, str, str]:
        p = _start_and_wait_ckpt(wd, "run", 1024)
        os.killpg(p.pid, sig)
        try:
            _out, err1 = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            return "hang", f"{sig.name}: no exit within 60 s", ""
        if p.returncode != 128 + sig:
            note = f"{sig.name}: exit {p.returncode}, expected {128 + sig}"
            if "Traceback" in err1:
                return "traceback", note + "; " + _stderr_lines(err1)[-1][:200], err1
        rc, _out, err = _sh(_resume_cmd("run"), wd)
        verdict = _fault_verdict(rc, err, _verify_run(wd / "run", 1024))
        if p.returncode != 128 + sig and verdict[0] == "survived":
            return "unclear", f"{sig.name}: exit {p.returncode}, expected {128 + sig}; resume ok", err1
        return (*verdict, err1 + err)

    fault(f"fault.{sig.name.lower()}_then_resume", f"{sig.name} during natrl train (checkpoint, exit 128+n), resume")(
        _f_sig
    )


def _damage_resume(wd: Path, ctx: dict[str, Any], damage: Callable[[Path], Any], *, steps: int = 384,
                   want_error: bool = False, names: Sequence[str] = ()) -> tuple[str, str, str]:  # fmt: skip
    shutil.copytree(ctx["run"], wd / "run", copy_function=shutil.copy2)
    run = wd / "run"
    damage(run)
    old = time.time() - 3600  # the damaged files are the harness's, not natrl's: out of the non-finite scan
    for p in run.rglob("*"):
        os.utime(p, (old, old))
    files = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    kept = _intact_rows(run / "progress.csv")
    rc, _out, err = _sh(_resume_cmd("run", "--steps", str(steps)), wd)
    if want_error:  # a refused resume must leave every file of the run as it was
        problems = [f"LOST: {n} changed or removed by the refused resume" for n, b in files.items()
                    if not (run / n).is_file() or (run / n).read_bytes() != b]  # fmt: skip
        return (*_fault_verdict(rc, err, problems, want_error=True, names=names), err)
    return (*_fault_verdict(rc, err, _verify_run(run, steps, kept, full=False) if rc == 0 else []), err)


def _latest(run: Path) -> Path:
    return _ckpts(run)[-1]


FAULT_DAMAGE: dict[str, tuple[str, Callable[[Path], Any], bool, list[str]]] = {
    "ckpt_latest_garbage": ("newest checkpoint overwritten with garbage", lambda r: _latest(r).write_bytes(os.urandom(2048)), False, []),
    "ckpt_latest_truncated": ("newest checkpoint truncated to half", lambda r: _latest(r).write_bytes(_latest(r).read_bytes()[: _latest(r).stat().st_size // 2]), False, []),
    "ckpt_latest_empty": ("newest checkpoint is 0 bytes", lambda r: _latest(r).write_bytes(b""), False, []),
    "ckpt_latest_nan": ("newest checkpoint holds a NaN weight", lambda r: _nan_into(_latest(r)), False, []),
    "ckpt_all_garbage": ("every checkpoint overwritten with garbage", lambda r: [c.write_bytes(os.urandom(512)) for c in _ckpts(r)], True, ["checkpoint"]),
    "ckpt_dir_deleted": ("checkpoints/ deleted", lambda r: shutil.rmtree(r / "checkpoints"), True, ["checkpoint"]),
    "progress_cut_mid_row": ("progress.csv cut in the middle of its last row", lambda r: (r / "progress.csv").write_bytes((r / "progress.csv").read_bytes()[:-40]), False, []),
    "progress_garbage_line": ("a binary garbage line inside progress.csv", lambda r: _insert_line(r / "progress.csv", "\x00\x01\xff garbage,,,,"), False, []),
    "progress_empty": ("progress.csv emptied", lambda r: (r / "progress.csv").write_bytes(b""), False, []),
    "progress_deleted": ("progress.csv deleted", lambda r: (r / "progress.csv").unlink(), False, []),
    "progress_header_garbage": ("progress.csv header replaced by garbage", lambda r: _replace_header(r / "progress.csv", "\x00garbage;;;"), True, ["progress.csv"]),
    "progress_nan_row": ("a progress.csv row with NaN/text values", lambda r: _insert_line(r / "progress.csv", "nan,abc,,,,"), False, []),
    "config_garbage": ("config.toml overwritten with garbage", lambda r: (r / "config.toml").write_text("[[[ not toml"), True, ["config.toml"]),
    "config_deleted": ("config.toml deleted", lambda r: (r / "config.toml").unlink(), True, ["config.toml"]),
    "config_bad_value": ("config.toml with n_steps = -1", lambda r: _toml_sub(r / "config.toml", r"n_steps = \d+", "n_steps = -1"), True, ["n_steps"]),
    "config_env_code": ("config.toml naming env os:system", lambda r: _toml_sub(r / "config.toml", r'(?m)^env = "[^"]*"', 'env = "os:system"'), True, ["os:system", "CartPole", "env"]),
    "lock_stale": ("a stale .lock of a dead process", lambda r: (r / ".lock").write_text(f"999999 {__import__('socket').gethostname()}\n"), False, []),
    "lock_garbage": ("a .lock file holding garbage", lambda r: (r / ".lock").write_bytes(b"\x00\xffgarbage"), False, []),
    "lock_empty": ("an empty .lock file", lambda r: (r / ".lock").write_bytes(b""), False, []),
}  # fmt: skip


def _nan_into(path: Path) -> None:
    def edit(s: dict[str, Any]) -> None:
        k = next(k for k, v in s["actor"].items() if v.is_floating_point())
        s["actor"][k] = s["actor"][k].clone()
        s["actor"][k].view(-1)[0] = float("nan")

    _edit_checkpoint(path, path, edit)


def _insert_line(path: Path, line: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(2, line + "\n")
    path.write_text("".join(lines))


def _replace_header(path: Path, header: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = header + "\n"
    path.write_text("".join(lines))


def _toml_sub(path: Path, pattern: str, repl: str) -> None:
    text = path.read_text()
    new = re.sub(pattern, repl, text, count=1)
    if new == text:
        raise RuntimeError(f"pattern {pattern!r} not in {path}")
    path.write_text(new)


for fid, (desc, damage, want_error, names) in FAULT_DAMAGE.items():
    fault(f"fault.{fid}", f"{desc}, then natrl train --resume --steps 384")(
        lambda wd, ctx, damage=damage, want_error=want_error, names=names: _damage_resume(
            wd, ctx, damage, want_error=want_error, names=names
        )
    )


@fault("fault.concurrent_second_writer", "natrl train --resume on a run dir while another natrl train writes to it")
def _f_concurrent(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    p = _start_and_wait_ckpt(wd, "run", 1_000_000)
    if p.poll() is not None:
        return "traceback", f"the fault harness failed: the first natrl train ended early (rc={p.returncode})", ""
    rc, _out, err = _sh(_resume_cmd("run"), wd, timeout=60)
    first_alive = p.poll() is None
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    if not first_alive:
        err += "\n(note: the first writer had ended before the second finished)"
    problems = [f"{c.name} does not load" for c in _ckpts(wd / "run") if not _loadable(c)]
    return (*_fault_verdict(rc, err, problems, want_error=True, names=["lock", "running", "another", "in use"]), err)


@fault("fault.run_dir_through_file", "natrl train --run-dir afile/run where afile is a regular file")
def _f_through(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    (wd / "afile").write_text("precious\n")
    rc, _out, err = _sh(_train_cmd("afile/run", 256), wd)
    problems = [] if (wd / "afile").read_text() == "precious\n" else ["afile was modified"]
    return (
        *_fault_verdict(rc, err, problems, want_error=True, names=["afile", "not a folder", "Not a directory"]),
        err,
    )


def _mount_tmpfs(path: Path, size: str, ro: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, capture_output=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path: Path) -> None:
    """Fill the file system of ``path`` to the last byte."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


@fault("fault.disk_full_new_run", "natrl train into a 200k tmpfs (the disk fills while training)", root=True)
def _f_full_new(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    fs = wd / "fullfs"
    _mount_tmpfs(fs, "200k")
    try:
        rc, _out, err = _sh(_train_cmd(str(fs / "run"), 4096, "--checkpoint-every", "64"), wd)
        problems = [f"{c.name} is not a whole checkpoint" for c in _ckpts(fs / "run") if not _loadable(c)]
        lock_left = [p.name for p in (fs / "run").glob("*lock*")] if (fs / "run").is_dir() else []
        verdict = _fault_verdict(rc, err, problems, want_error=True, names=["space", "full"])
        if lock_left and verdict[0] == "survived":
            verdict = ("survived", verdict[1] + f" (lock file left: {lock_left})")
        return (*verdict, err)
    finally:
        _umount(fs)


@fault("fault.disk_full_on_resume", "natrl train --resume on a full disk: one line, the run's files intact", root=True)
def _f_full_resume(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    fs = wd / "fullfs"
    size = sum(p.stat().st_size for p in Path(ctx["run"]).rglob("*") if p.is_file())
    _mount_tmpfs(fs, f"{size // 1024 + 64}k")
    try:
        shutil.copytree(ctx["run"], fs / "run", copy_function=shutil.copy2)
        before = {c.name: c.read_bytes() for c in _ckpts(fs / "run")}
        rows = _progress_steps(fs / "run")
        _fill(fs)
        rc, _out, err = _sh(_resume_cmd(str(fs / "run"), "--steps", "1024"), wd)
        problems = [f"{n} lost or damaged" for n, b in before.items()
                    if not (fs / "run" / "checkpoints" / n).is_file() or not _loadable(fs / "run" / "checkpoints" / n)]  # fmt: skip
        after = _progress_steps(fs / "run")
        lost_rows = [s for s in rows if s not in after]
        if lost_rows:
            problems.append(f"progress.csv rows lost: {lost_rows}")
        if not (fs / "run" / "config.toml").is_file() or (fs / "run" / "config.toml").stat().st_size == 0:
            problems.append("config.toml lost or emptied")
        return (*_fault_verdict(rc, err, problems, want_error=True, names=["space", "full"]), err)
    finally:
        _umount(fs)


@fault("fault.disk_full_during_resume", "natrl train --resume with room for a checkpoint or two: the disk fills "
       "while the resumed run writes; one line, the run's earlier files intact", root=True)  # fmt: skip
def _f_full_during_resume(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    fs = wd / "fullfs"
    size = sum(p.stat().st_size for p in Path(ctx["run"]).rglob("*") if p.is_file())
    _mount_tmpfs(fs, f"{size // 1024 + 200}k")
    try:
        shutil.copytree(ctx["run"], fs / "run", copy_function=shutil.copy2)
        before = {c.name: c.read_bytes() for c in _ckpts(fs / "run")}
        rows = _intact_rows(fs / "run" / "progress.csv")
        rc, _out, err = _sh(_resume_cmd(str(fs / "run"), "--steps", "4096", "--keep", "100"), wd)
        problems = [f"LOST: {n} lost or damaged" for n in before
                    if not (fs / "run" / "checkpoints" / n).is_file() or not _loadable(fs / "run" / "checkpoints" / n)]  # fmt: skip
        problems += [f"LOST: {c.name} (written by the resume) does not load" for c in _ckpts(fs / "run")
                     if c.name not in before and not _loadable(c)]  # fmt: skip
        lost_rows = [r for r in rows if r not in _progress_steps(fs / "run")]
        if lost_rows:
            problems.append(f"LOST: progress.csv rows {lost_rows}")
        if not (fs / "run" / "config.toml").is_file() or (fs / "run" / "config.toml").stat().st_size == 0:
            problems.append("LOST: config.toml lost or emptied")
        if (fs / "run" / ".lock").exists():
            err += "\n(note: .lock left behind)"
        return (*_fault_verdict(rc, err, problems, want_error=True, names=["space", "full"]), err)
    finally:
        _umount(fs)


@fault("fault.read_only_new_run", "natrl train --run-dir on a read-only file system", root=True)
def _f_ro_new(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    fs = wd / "rofs"
    _mount_tmpfs(fs, "1m", ro=True)
    try:
        rc, _out, err = _sh(_train_cmd(str(fs / "run"), 256), wd)
        return (*_fault_verdict(rc, err, [], want_error=True, names=["read-only", "Read-only"]), err)
    finally:
        _umount(fs)


@fault("fault.read_only_resume", "natrl train --resume of a run on a file system remounted read-only", root=True)
def _f_ro_resume(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    fs = wd / "rofs"
    _mount_tmpfs(fs, "4m")
    try:
        shutil.copytree(ctx["run"], fs / "run", copy_function=shutil.copy2)
        before = {c.name: c.read_bytes() for c in _ckpts(fs / "run")}
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, capture_output=True)
        rc, _out, err = _sh(_resume_cmd(str(fs / "run"), "--steps", "512"), wd)
        problems = [f"{n} changed" for n, b in before.items() if (fs / "run" / "checkpoints" / n).read_bytes() != b]
        return (*_fault_verdict(rc, err, problems, want_error=True, names=["read-only", "Read-only"]), err)
    finally:
        _umount(fs)


def _cli_into_full_fs(wd: Path, args: Callable[[Path], list[str]]) -> tuple[str, str, str]:
    """Run ``natrl *args(folder)`` writing into a full 64 KiB file system: one error line naming the lack of space."""
    fs = wd / "fullfs"
    _mount_tmpfs(fs, "64k")
    try:
        _fill(fs)
        rc, _out, err = _sh([*NATRL, *args(fs)], wd)
        return (*_fault_verdict(rc, err, [], want_error=True, names=["space", "full"]), err)
    finally:
        _umount(fs)


@fault("fault.plot_disk_full", "natrl plot -o into a full file system", root=True)
def _f_plot_full(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    return _cli_into_full_fs(wd, lambda fs: ["plot", ctx["run"], "-o", str(fs / "curves.png")])


@fault("fault.eval_video_disk_full", "natrl eval --video into a full file system", root=True)
def _f_video_full(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    return _cli_into_full_fs(wd, lambda fs: ["eval", ctx["model"], "--video", str(fs / "a.gif")])


@fault("fault.api_save_disk_full", "agent.save() into a full file system: OSError, and the previous file intact",
       root=True)  # fmt: skip
def _f_api_save_full(wd: Path, ctx: dict[str, Any]) -> tuple[str, str, str]:
    fs = wd / "fullfs"
    _mount_tmpfs(fs, f"{Path(ctx['model']).stat().st_size // 1024 + 64}k")
    try:
        shutil.copy2(ctx["model"], fs / "model.pt")
        before = (fs / "model.pt").read_bytes()
        _fill(fs)
        code = ("import sys\nfrom natrl import TRPO\na = TRPO.load(sys.argv[1])\n"
                "try:\n    a.save(sys.argv[2])\nexcept OSError as e:\n    print(type(e).__name__, e, file=sys.stderr); sys.exit(3)\n")  # fmt: skip
        p = subprocess.run([sys.executable, "-c", code, ctx["model"], str(fs / "model.pt")], cwd=wd, env=_env(),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        problems = [] if (fs / "model.pt").read_bytes() == before else ["the previous model.pt was damaged"]
        leftovers = [p.name for p in fs.iterdir() if p.name not in ("model.pt", "filler")]
        if leftovers:
            problems.append(f"temporary files left: {leftovers}")
        verdict = _fault_verdict(p.returncode, p.stderr, problems, want_error=True, names=["space", "No space"])
        return (*verdict, p.stderr)
    finally:
        _umount(fs)


# ================================================================================================ runners
def _fmt_argv(argv: Sequence[str], ctx: dict[str, Any]) -> list[str]:
    out = []
    for a in argv:
        for key in ("fx", "model", "run", "ppo_model"):
            a = a.replace("{" + key + "}", str(ctx[key]))
        out.append(a)
    return out


def run_cli(case: Case, ctx: dict[str, Any], scratch: Path) -> Outcome:
    wd = scratch / "cases" / re.sub(r"[^\w.\-]+", "_", case.id)
    wd.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(wd, ctx)
    argv = _fmt_argv(case.argv, ctx)
    since = time.time()
    t0 = time.perf_counter()
    rc, out, err = _sh([*NATRL, *argv], wd, timeout=case.timeout)
    secs = time.perf_counter() - t0
    cat, note = classify_cli(case, rc, out, err)
    bad, _unreadable = scan_pt_files(wd, since)
    if bad:
        cat, note = "silent-wrong", f"wrote {len(bad)} .pt file(s) with non-finite values: {bad[:3]}; " + note
    if Path(ctx["marker"]).exists():
        cat, note = "silent-wrong", "SECURITY: a checkpoint's pickled code ran (marker file created); " + note
        Path(ctx["marker"]).unlink()
    shown = "natrl " + " ".join(_quote(a) for a in case.argv)
    output = err.strip() if err.strip() else out.strip()[-400:]
    return Outcome(case.id, "cli", cat, shown, _tail(output), note, secs, bad)


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def _tail(text: str, n: int = 1500) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def run_faults(cases: list[Case], ctx: dict[str, Any], scratch: Path, report: Callable[[Outcome], None]) -> None:
    is_root = os.geteuid() == 0
    for case in cases:
        wd = scratch / "cases" / re.sub(r"[^\w.\-]+", "_", case.id)
        wd.mkdir(parents=True, exist_ok=True)
        if case.expect == "root" and not is_root:
            report(Outcome(case.id, "fault", "skipped", case.desc, "", "needs root (mount)"))
            continue
        since = time.time()
        t0 = time.perf_counter()
        try:
            cat, note, output = case.fn(wd, ctx)  # type: ignore[misc]
        except Exception as exc:
            cat, note, output = (
                "traceback",
                f"the fault harness failed: {type(exc).__name__}: {exc}",
                traceback.format_exc(),
            )
        bad, _ = scan_pt_files(wd, since)
        if bad:
            cat, note = "lost-data", f"non-finite .pt written: {bad[:3]}; {note}"
        text = output.strip()
        shown = text if len(text) <= 1500 else text[:700] + "\n...\n" + text[-700:]
        report(Outcome(case.id, "fault", cat, case.desc, shown, note, time.perf_counter() - t0, bad))


# ---- API worker (a subprocess: a crash or abort of one case does not end the catalogue)
class _Hang(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def api_worker(ids: list[str], ctx_path: str, results: str, scratch: str) -> None:
    import torch

    torch.set_num_threads(1)
    ctx: dict[str, Any] = json.loads(Path(ctx_path).read_text())
    by_id = {c.id: c for c in CASES if c.kind == "api"}
    signal.signal(signal.SIGALRM, _alarm)
    import warnings

    warnings.simplefilter("ignore")
    with open(results, "a") as out:
        for cid in ids:
            case = by_id[cid]
            wd = Path(scratch) / "cases" / re.sub(r"[^\w.\-]+", "_", cid)
            wd.mkdir(parents=True, exist_ok=True)
            os.chdir(wd)
            out.write(json.dumps({"id": cid, "event": "start", "t": time.time()}) + "\n")
            out.flush()
            rec: dict[str, Any] = {"id": cid, "event": "end"}
            t0 = time.perf_counter()
            signal.alarm(math.ceil(case.timeout))
            try:
                value = case.fn(ctx)  # type: ignore[misc]
                signal.alarm(0)
                rec["status"] = "returned"
                if case.expect in ("result", "either"):
                    rec["problem"] = value if isinstance(value, str) else None
                else:
                    rec["value"] = _short(value)
            except _Hang:
                rec["status"] = "hang"
            except BaseException as exc:  # everything is a finding
                signal.alarm(0)
                tb = traceback.extract_tb(exc.__traceback__)
                rec.update(status="raised", exc_type=type(exc).__name__, exc_module=type(exc).__module__,
                           exc_mro=[k.__name__ for k in type(exc).__mro__], message=str(exc),
                           where=f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "")  # fmt: skip
            finally:
                signal.alarm(0)
            rec["seconds"] = time.perf_counter() - t0
            out.write(json.dumps(rec, default=str) + "\n")
            out.flush()


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:300]


def run_api(cases: list[Case], ctx: dict[str, Any], scratch: Path, report: Callable[[Outcome], None]) -> None:
    ctx_path = scratch / "ctx.json"
    ctx_path.write_text(json.dumps(ctx))
    results = scratch / "api_results.jsonl"
    pending = [c.id for c in cases]
    by_id = {c.id: c for c in cases}
    seen_lines = 0
    while pending:
        proc = subprocess.Popen([sys.executable, __file__, "--api-worker", "--ids", ",".join(pending), "--ctx",
                                 str(ctx_path), "--results", str(results), "--scratch", str(scratch)],
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        err_chunks: list[str] = []
        threading.Thread(target=lambda e=err_chunks, q=proc: e.append(q.stderr.read()), daemon=True).start()  # type: ignore[misc,union-attr]
        threading.Thread(target=lambda q=proc: q.stdout.read(), daemon=True).start()  # type: ignore[misc,union-attr]
        current: tuple[str, float] | None = None
        while True:
            lines = results.read_text().splitlines() if results.exists() else []
            for line in lines[seen_lines:]:
                rec = json.loads(line)
                if rec["event"] == "start":
                    current = (rec["id"], time.time())
                    since_case = rec["t"]
                else:
                    case = by_id[rec["id"]]
                    _report_api(case, rec, scratch, since_case, report)
                    pending.remove(rec["id"])
                    current = None
            seen_lines = len(lines)
            if proc.poll() is not None:
                break
            if current is not None and time.time() - current[1] > by_id[current[0]].timeout + 30:
                os.killpg(proc.pid, signal.SIGKILL)  # stuck in C code: the alarm could not interrupt it
                proc.wait()
                break
            time.sleep(0.05)
        # drain what the worker wrote before it ended
        lines = results.read_text().splitlines() if results.exists() else []
        for line in lines[seen_lines:]:
            rec = json.loads(line)
            if rec["event"] == "start":
                current = (rec["id"], time.time())
                since_case = rec["t"]
            else:
                _report_api(by_id[rec["id"]], rec, scratch, since_case, report)
                pending.remove(rec["id"])
                current = None
        seen_lines = len(lines)
        if current is not None and current[0] in pending:
            cid = current[0]
            time.sleep(0.2)
            stderr = "".join(err_chunks)
            rc = proc.returncode
            if rc is not None and rc < 0 and -rc != signal.SIGKILL:
                note = f"the process died with signal {-rc} ({signal.Signals(-rc).name})"
                rec = {"status": "crash", "note": note}
            elif rc == -signal.SIGKILL:
                rec = {"status": "hang"}
            else:
                rec = {"status": "crash", "note": f"the process exited with {rc}: {_stderr_lines(stderr)[-1:]}"}
            rec.update(id=cid, event="end", message=_tail(stderr, 600))
            _report_api(by_id[cid], rec, scratch, since_case, report)
            pending.remove(cid)
        elif pending and proc.returncode != 0:
            stderr = "".join(err_chunks)
            raise SystemExit(f"the API worker failed outside a case (rc={proc.returncode}): {stderr[-2000:]}")


def _report_api(
    case: Case, rec: dict[str, Any], scratch: Path, since: float, report: Callable[[Outcome], None]
) -> None:
    cat, note = classify_api(case, rec)
    wd = scratch / "cases" / re.sub(r"[^\w.\-]+", "_", case.id)
    bad, _ = scan_pt_files(wd, since) if wd.is_dir() else ([], [])
    if bad:
        cat, note = "silent-wrong", f"wrote {len(bad)} .pt file(s) with non-finite values: {bad[:3]}; " + note
    if rec.get("status") == "raised":
        output = f"{rec.get('exc_type')}: {rec.get('message', '')}  [raised at {rec.get('where', '?')}]"
    elif rec.get("status") == "returned":
        output = f"returned: {rec.get('value') or rec.get('problem') or 'OK'}"
    else:
        output = rec.get("message", rec.get("status", ""))
    report(Outcome(case.id, "api", cat, case.desc or case.id, _tail(output, 800), note, rec.get("seconds", 0.0), bad))


# ================================================================================================ main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", help="write every outcome as JSON here")
    parser.add_argument("--only", help="regex: run only the cases whose id matches")
    parser.add_argument("--jobs", type=int, default=1, help="CLI cases at once (default 1)")
    parser.add_argument("--scratch", help="scratch folder (default: a new temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("--api-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--ctx", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.api_worker:
        api_worker(args.ids.split(","), args.ctx, args.results, args.scratch)
        return 0
    cases = [c for c in CASES if not args.only or re.search(args.only, c.id)]
    ids = [c.id for c in CASES]
    dup = [k for k, n in Counter(ids).items() if n > 1]
    if dup:
        raise SystemExit(f"duplicate case ids: {dup}")
    if args.list:
        for c in cases:
            what = "natrl " + " ".join(_quote(a) for a in c.argv) if c.kind == "cli" else c.desc
            print(f"{c.kind:5} {c.expect:6} {c.id:60} {what}")
        print(f"{len(cases)} cases: " + ", ".join(f"{k} {v}" for k, v in Counter(c.kind for c in cases).items()))
        return 0
    import torch

    torch.set_num_threads(1)
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="natrl-red-"))
    scratch.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"scratch: {scratch}", flush=True)
    ctx = make_fixtures(scratch / "fx")
    print(f"fixtures ready ({time.perf_counter() - t_start:.0f}s); {len(cases)} cases", flush=True)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def report(o: Outcome) -> None:
        with lock:
            outcomes.append(o)
            mark = "" if o.category in ("clean", "survived") else "  <--"
            print(f"[{len(outcomes):3}/{len(cases)}] {o.category:12} {o.seconds:5.1f}s {o.id}{mark}", flush=True)

    cli_cases = [c for c in cases if c.kind == "cli"]
    api_cases = [c for c in cases if c.kind == "api"]
    fault_cases = [c for c in cases if c.kind == "fault"]
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            api_future = pool.submit(run_api, api_cases, ctx, scratch, report) if api_cases and args.jobs > 1 else None
            for fut in [pool.submit(lambda c=c: report(run_cli(c, ctx, scratch))) for c in cli_cases]:
                fut.result()
            if api_future is not None:
                api_future.result()
        if api_cases and args.jobs <= 1:
            run_api(api_cases, ctx, scratch, report)
        run_faults(fault_cases, ctx, scratch, report)
    finally:
        if Path(ctx.get("marker", "/nonexistent")).exists():
            print("SECURITY: a checkpoint's pickled code ran (marker file exists)", flush=True)
    elapsed = time.perf_counter() - t_start
    order = {c.id: i for i, c in enumerate(CASES)}
    outcomes.sort(key=lambda o: order[o.id])
    _print_summary(outcomes, elapsed)
    if args.out:
        data = {
            "elapsed_seconds": elapsed,
            "commit": _git_commit(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "counts": dict(Counter(o.category for o in outcomes)),
            "counts_by_kind": {
                k: dict(Counter(o.category for o in outcomes if o.kind == k)) for k in ("cli", "api", "fault")
            },
            "nonfinite_pt_files": sum(len(o.nonfinite_files) for o in outcomes),
            "cases": [dataclasses.asdict(o) for o in outcomes],
        }
        Path(args.out).write_text(json.dumps(data, indent=1))
        print(f"wrote {args.out}")
    if not args.keep and not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


def _print_summary(outcomes: list[Outcome], elapsed: float) -> None:
    kinds = ("cli", "api", "fault")
    print()
    print(f"{'category':14}" + "".join(f"{k:>8}" for k in kinds) + f"{'total':>8}")
    for cat in CATEGORIES:
        row = [sum(1 for o in outcomes if o.kind == k and o.category == cat) for k in kinds]
        if sum(row):
            print(f"{cat:14}" + "".join(f"{n:8}" for n in row) + f"{sum(row):8}")
    print(
        f"{'total':14}" + "".join(f"{sum(1 for o in outcomes if o.kind == k):8}" for k in kinds) + f"{len(outcomes):8}"
    )
    nf = sum(len(o.nonfinite_files) for o in outcomes)
    print(f".pt files written with a non-finite tensor: {nf}")
    print(f"elapsed: {elapsed:.0f}s")
    bad = [o for o in outcomes if o.category not in ("clean", "survived")]
    if bad:
        print(f"\nnot clean ({len(bad)}):")
        for o in bad:
            print(
                f"- [{o.category}] {o.id}\n    input:  {o.input}\n    output: {' | '.join(o.output.splitlines()[-3:])[:400]}\n    note:   {o.note}"
            )


if __name__ == "__main__":
    sys.exit(main())

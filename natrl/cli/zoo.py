"""rl-baselines3-zoo hyperparameter files (``hyperparams/trpo.yml``, ``hyperparams/ppo.yml``) as natrl presets.

``natrl train ALGO ENV --hyperparams FILE.yml`` runs what ``python -m rl_zoo3.train --algo ALGO --env ENV -conf
FILE.yml`` runs: the file's table for ENV (else ``atari`` for an Atari env, else ``default``, as the zoo picks it)
over stable-baselines3's (PPO) or sb3-contrib's (TRPO) defaults, never over natrl's own preset for ENV. Every key
is translated exactly or refused with one line naming it:

=====================================  ==========================================================================
zoo key                                natrl
=====================================  ==========================================================================
``n_timesteps``                        the step budget (``total_steps``)
``n_envs``                             ``n_envs``
``policy``                             ``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` and sb3-contrib's recurrent
                                       ``MlpLstmPolicy``/``CnnLstmPolicy``/``MultiInputLstmPolicy`` (the zoo's
                                       ``ppo_lstm.yml``, RecurrentPPO's file, read as natrl PPO's); a class path:
                                       refused
``policy_kwargs``                      ``net_arch`` → ``hidden_sizes``/``critic_hidden_sizes``, ``activation_fn``
                                       → ``activation``, ``ortho_init``, ``log_std_init``,
                                       ``share_features_extractor``, and with a recurrent policy
                                       ``lstm_hidden_size``, ``n_lstm_layers``, ``shared_lstm``,
                                       ``enable_critic_lstm``; others refused
``normalize``                          ``normalize_obs``/``normalize_reward`` (``obs_norm_update = "step"``, as
                                       ``VecNormalize`` updates after every step); ``clip_obs``, ``clip_reward``,
                                       ``epsilon`` only at natrl's values (VecNormalize's defaults)
``env_kwargs``                         ``gym.make`` keywords
``env_wrapper``                        one Gymnasium or natrl wrapper class without arguments → ``wrapper``
``frame_stack``, ``callback``,         refused: natrl builds no frame stack, callback or vector-env wrapper from a
``vec_env_wrapper``,                   file
``monitor_kwargs``
SB3 PPO's constructor names            natrl PPO's (the same names); ``"lin_<v>"`` schedules are natrl's too
sb3-contrib TRPO's names               :func:`natrl.rl.sb3_names.translate_sb3_names` (``target_kl`` and
                                       ``cg_damping`` × k, the action dimensions; sb3-contrib's defaults for
                                       the names the table leaves out)
=====================================  ==========================================================================

The file is data, never code. It is parsed with ``yaml.safe_load`` (the zoo's ``!!float`` tags, anchors and
``<<:`` merges are plain YAML; a ``!!python/...`` tag is refused). The zoo ``eval``\\ s its ``policy_kwargs`` and
``normalize`` strings; natrl reads them with :func:`parse_python_literal`, which walks the syntax tree and
accepts literals, lists, tuples, dicts, ``dict(key=value, ...)`` and the activation classes ``nn.ReLU``,
``nn.Tanh``, ``nn.ELU``, ``nn.GELU``, ``nn.LeakyReLU`` (also as ``th.nn.X`` and ``torch.nn.X``); anything
else (a call, a name, an attribute, an operator) is refused before anything is evaluated.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from natrl.presets import Preset
from natrl.rl.policies.build import RECURRENT_KWARGS, RECURRENT_POLICIES
from natrl.rl.sb3_names import SB3_ONLY_DEFAULTS

__all__ = ["ZOO_ALGOS", "ZooError", "parse_python_literal", "read_zoo_file", "zoo_preset", "zoo_table"]

ZOO_ALGOS = {"trpo": "sb3-contrib TRPO", "ppo": "stable-baselines3 PPO", "a2c": "stable-baselines3 A2C"}
"""The algorithms whose zoo files natrl reads, with the library whose constructor the file's names belong to."""


class ZooError(ValueError):
    """A zoo file that is not plain data, or a key natrl cannot translate exactly (one line, naming the key)."""


# The constructor arguments of stable-baselines3's PPO and A2C and sb3-contrib's TRPO (all 2.x) that a zoo table
# may hold besides the zoo's own keys. PPO's and A2C's are natrl's names; TRPO's go through natrl.rl.sb3_names.
_SB3_COMMON = (
    "n_steps", "gamma", "gae_lambda", "normalize_advantage", "target_kl", "learning_rate", "batch_size",
    "use_sde", "sde_sample_freq", "stats_window_size", "rollout_buffer_class", "rollout_buffer_kwargs",
)  # fmt: skip
_SB3_ARGS = {
    "ppo": (*_SB3_COMMON, "n_epochs", "clip_range", "clip_range_vf", "ent_coef", "vf_coef", "max_grad_norm"),
    "a2c": (
        "n_steps", "gamma", "gae_lambda", "normalize_advantage", "learning_rate", "use_sde", "sde_sample_freq",
        "stats_window_size", "rollout_buffer_class", "rollout_buffer_kwargs", "ent_coef", "vf_coef",
        "max_grad_norm", "rms_prop_eps", "use_rms_prop",
    ),
    "trpo": (
        *_SB3_COMMON, "cg_max_steps", "cg_damping", "line_search_shrinking_factor", "line_search_max_iter",
        "n_critic_updates", "sub_sampling_factor",
    ),
}  # fmt: skip
# names natrl's config shares with the SB3 class; the others (TRPO's renamed ones, and the arguments natrl takes
# only at SB3's default) go through natrl.rl.sb3_names
_SHARED = {
    "ppo": set(_SB3_ARGS["ppo"]) - set(SB3_ONLY_DEFAULTS),
    "a2c": set(_SB3_ARGS["a2c"]) - set(SB3_ONLY_DEFAULTS),
    "trpo": {"n_steps", "gamma", "gae_lambda", "normalize_advantage"},
}
_SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")  # the zoo's _preprocess_schedules
_ZOO_KEYS = ("n_timesteps", "n_envs", "policy", "policy_kwargs", "normalize", "env_kwargs", "env_wrapper")
_REFUSED = {
    "frame_stack": "natrl stacks frames only inside its Atari wrapper (natrl.rl.atari:AtariWrapper), not as a "
    "vector-env wrapper; use natrl's preset for the env",
    "vec_env_wrapper": "natrl builds no vector-env wrapper from a file",
    "callback": "natrl builds no callback from a file; pass callbacks to learn() from Python",
    "monitor_kwargs": "natrl records every episode itself; there is no Monitor to configure",
    "noise_type": "an off-policy key; natrl's agents are on-policy",
    "noise_std": "an off-policy key; natrl's agents are on-policy",
}
_POLICIES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy", *RECURRENT_POLICIES)
_ACTIVATION_CLASSES = {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "ELU": nn.ELU, "GELU": nn.GELU, "LeakyReLU": nn.LeakyReLU}
_ACTIVATION_NAMES = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.ELU: "elu", nn.GELU: "gelu"}
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# ----------------------------------------------------------------------------- reading the file


def read_zoo_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The tables of a zoo hyperparameter file, read as plain YAML data.

    Raises:
        ZooError: the file is missing, is not YAML, holds a tag that names code (``!!python/...``), or is not a
            mapping of env ids to tables.
    """
    try:
        import yaml
    except ModuleNotFoundError:
        raise ZooError("--hyperparams needs PyYAML, which is not installed: pip install 'natrl[tune]'") from None
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZooError(f"--hyperparams {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZooError(f"--hyperparams {path}: cannot read it ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        tag = " a tag such as !!python/... names code, and natrl reads data only;" if "tag" in problem else ""
        raise ZooError(f"{path}{where}: not a plain YAML data file:{tag} {problem}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in data.items()):
        raise ZooError(f"{path}: a zoo hyperparameter file maps env ids to tables (e.g. 'CartPole-v1: {{...}}')")
    return data


def zoo_table(data: Mapping[str, dict[str, Any]], env_id: str, path: str | os.PathLike[str]) -> tuple[str, dict]:
    """The table the zoo uses for ``env_id``: its own, else ``atari`` for an Atari env, else ``default``.

    Raises:
        ZooError: none of them is in the file.
    """
    if env_id in data:
        return env_id, dict(data[env_id])
    if "atari" in data and _is_atari(env_id):
        return "atari", dict(data["atari"])
    if "default" in data:
        return "default", dict(data["default"])
    raise ZooError(f"{path} has no table for {env_id} and no 'default' table")


def _is_atari(env_id: str) -> bool:
    """The zoo's test: the env's entry point is ale-py's ``AtariEnv``."""
    import gymnasium as gym

    spec = gym.registry.get(env_id)
    return spec is not None and "AtariEnv" in str(spec.entry_point)


# ----------------------------------------------------------------------------- Python literals, without eval


def parse_python_literal(text: str, *, field: str = "value") -> Any:
    """The value of a zoo ``policy_kwargs``/``normalize`` string, read from its syntax tree without evaluating it.

    Accepted: numbers, strings, True/False/None, negative numbers, lists, tuples, dicts with literal keys,
    ``dict(key=value, ...)`` and the activation classes ``nn.ReLU``, ``nn.Tanh``, ``nn.ELU``, ``nn.GELU``,
    ``nn.LeakyReLU`` (``th.nn.X`` and ``torch.nn.X`` too), which become those ``torch.nn`` classes.

    Raises:
        ZooError: anything else (names, calls other than ``dict(...)``, attributes, operators, comprehensions),
            named with its position; nothing in ``text`` is evaluated.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ZooError(f"{field} {text!r} is not a Python literal: {exc.msg}") from None
    return _literal(tree.body, field, text)


def _literal(node: ast.AST, field: str, text: str) -> Any:
    def refuse(what: str) -> ZooError:
        source = ast.get_source_segment(text.strip(), node) or type(node).__name__
        return ZooError(
            f"{field}: {what} {source!r} is refused; natrl reads literals, lists, dicts, dict(key=value) and the "
            f"activations nn.{', nn.'.join(_ACTIVATION_CLASSES)} (the file is data, never code)"
        )

    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = node.operand
        if (
            isinstance(inner, ast.Constant)
            and isinstance(inner.value, (int, float))
            and not isinstance(inner.value, bool)
        ):
            return -inner.value if isinstance(node.op, ast.USub) else inner.value
        raise refuse("the expression")
    if isinstance(node, ast.List):
        return [_literal(e, field, text) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, field, text) for e in node.elts)
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                raise refuse("the ** expansion")
            k = _literal(key, field, text)
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise refuse("the key")
            out[k] = _literal(value, field, text)
        return out
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise refuse("the call")
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise refuse("the ** expansion")
            kwargs[kw.arg] = _literal(kw.value, field, text)
        return kwargs
    if isinstance(node, ast.Attribute):
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            dotted = ".".join([cur.id, *reversed(parts)])
            for prefix in ("nn.", "th.nn.", "torch.nn."):
                name = dotted.removeprefix(prefix)
                if dotted.startswith(prefix) and name in _ACTIVATION_CLASSES:
                    return _ACTIVATION_CLASSES[name]
        raise refuse("the name")
    if isinstance(node, ast.Name):
        raise refuse("the name")
    raise refuse("the expression")


# ----------------------------------------------------------------------------- translation


def zoo_preset(path: str | os.PathLike[str], algo: str, env_id: str, config_cls: type) -> tuple[Preset, list[str]]:
    """The natrl preset a zoo file's table for ``env_id`` describes, and one note per translated name.

    Args:
        path: the zoo file (``hyperparams/trpo.yml``, ``hyperparams/ppo.yml`` or one in their format).
        algo: ``"trpo"`` (sb3-contrib TRPO's names) or ``"ppo"`` (stable-baselines3 PPO's).
        env_id: the environment id (registered already: an Atari id picks the ``atari`` table).
        config_cls: the algorithm's config class (its defaults are SB3's for what the table leaves out).

    Returns:
        (preset, notes): the preset's hyperparameters are natrl names over natrl's defaults (not natrl's preset
        for the env); notes say how each SB3 name that natrl spells differently was translated.

    Raises:
        ZooError: a key natrl cannot translate exactly, one line naming each such key.
    """
    if algo not in ZOO_ALGOS:
        readable = " and ".join(f"{a} ({n})" for a, n in ZOO_ALGOS.items())
        raise ZooError(f"--hyperparams reads rl-baselines3-zoo files for {readable}, not for {algo}")
    path = Path(path)
    name, table = zoo_table(read_zoo_file(path), env_id, path)
    problems: list[str] = []
    hyper: dict[str, Any] = {}
    sb3: dict[str, Any] = {}
    policy = "MlpPolicy"
    policy_kwargs: dict[str, Any] = {}
    env_kwargs: dict[str, Any] = {}
    wrapper: str | None = None
    total: int | None = None

    for key, value in table.items():
        try:
            if key == "n_timesteps":
                total = _whole(key, value)
            elif key == "n_envs":
                hyper["n_envs"] = _whole(key, value)
            elif key == "policy":
                policy = _policy(value)
            elif key == "policy_kwargs":
                pk = parse_python_literal(value, field="policy_kwargs") if isinstance(value, str) else value
                if not isinstance(pk, dict):
                    raise ZooError(f"policy_kwargs must be a dict, got {value!r}")
                policy_kwargs = pk
            elif key == "normalize":
                continue  # below, once gamma is known
            elif key == "env_kwargs":
                kw = parse_python_literal(value, field="env_kwargs") if isinstance(value, str) else value
                if not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw):
                    raise ZooError(f"env_kwargs must be a dict of keyword arguments, got {value!r}")
                env_kwargs = kw
            elif key == "env_wrapper":
                wrapper = _env_wrapper(value)
            elif key in _REFUSED:
                raise ZooError(f"{key}: {_REFUSED[key]}")
            elif key in _SB3_ARGS[algo]:
                value = _hyperparameter(key, value)
                if key in _SHARED[algo]:
                    hyper[key] = value
                else:
                    sb3[key] = value
            else:
                raise ZooError(
                    f"unknown key {key!r} for {ZOO_ALGOS[algo]}; natrl reads the zoo's "
                    f"{', '.join(_ZOO_KEYS)} and the constructor arguments {', '.join(_SB3_ARGS[algo])}"
                )
        except ZooError as exc:
            problems.append(str(exc))
    if "normalize" in table:
        try:
            hyper.update(_normalize(table["normalize"], table.get("gamma"), config_cls))
        except ZooError as exc:
            problems.append(str(exc))
    try:
        hyper.update(_policy_kwargs(policy_kwargs, policy))
        kept = {"share_features_extractor", *RECURRENT_KWARGS}
        policy_kwargs = {k: v for k, v in policy_kwargs.items() if k in kept}
    except ZooError as exc:
        problems.append(str(exc))
    if total is None:
        problems.append("n_timesteps is missing (the zoo requires it: the step budget)")
    notes: list[str] = []
    if not problems:
        try:
            translated, notes = _translate(algo, sb3, env_id, env_kwargs, set(hyper))
            hyper.update(translated)
        except (ValueError, TypeError) as exc:
            problems.append(" ".join(str(exc).split()))
    if problems:
        raise ZooError(f"{path} [{name}]: " + "; ".join(problems))
    fields = {f for f in inspect.signature(config_cls).parameters}
    unknown = sorted(set(hyper) - fields)
    if unknown:  # pragma: no cover - every translated name is a config field
        raise ZooError(f"{path} [{name}]: no natrl field for {', '.join(unknown)}")
    assert total is not None
    preset = Preset(
        algo, env_id, name, hyper, total, None, path, env_kwargs, wrapper, policy, policy_kwargs
    )  # fmt: skip
    return preset, notes


def _translate(
    algo: str, sb3: dict[str, Any], env_id: str, env_kwargs: dict[str, Any], natrl_given: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """SB3/sb3-contrib names through natrl's own table (k read from the env's action space)."""
    from natrl.rl.sb3_names import action_dims, translate_sb3_names

    if algo == "trpo":
        # the table is sb3-contrib's TRPO: its defaults hold for what it leaves out (translate_sb3_names fills
        # target_kl, cg_damping and line_search_max_iter once any of its names is given; sub_sampling_factor=1
        # is sb3-contrib's default and natrl's only value)
        sb3.setdefault("sub_sampling_factor", 1)
    if not sb3:
        return {}, []
    k = 1
    if algo == "trpo":
        from natrl.rl.env import env_factory

        env = env_factory(env_id, env_kwargs)()
        try:
            k = action_dims(env.action_space)
        finally:
            env.close()
    return translate_sb3_names(algo, sb3, k, natrl_given)


def _whole(key: str, value: Any) -> int:
    """A positive count from an int or an integral float (the zoo's ``!!float 1e6``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and math.isfinite(value) and float(value).is_integer() and value >= 1:
        return int(value)
    raise ZooError(f"{key} must be a positive whole number, got {value!r}{_float_hint(value)}")


def _float_hint(value: Any) -> str:
    if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
        return f" (YAML 1.1 reads {value} as a string; write !!float {value}, as the zoo does)"
    return ""


def _hyperparameter(key: str, value: Any) -> Any:
    """A constructor value as plain data: numbers, booleans, None, and ``"<name>_<v>"`` linear schedules."""
    if isinstance(value, str):
        head, sep, tail = value.partition("_")
        if key in _SCHEDULED and sep and head and "_" not in tail:
            try:
                start = float(tail)
            except ValueError:
                start = math.nan
            if math.isfinite(start):
                return f"lin_{tail}"  # the zoo reads any "<name>_<v>" as v · progress_remaining
        schedule = " or 'lin_<value>' (a linear schedule)" if key in _SCHEDULED else ""
        raise ZooError(f"{key} must be a number{schedule}, got {value!r}{_float_hint(value)}")
    if value is None or isinstance(value, (bool, int, float)) or (isinstance(value, dict) and not value):
        return value
    raise ZooError(f"{key} = {value!r}: natrl reads numbers, true/false and null here")


def _policy(value: Any) -> str:
    if not isinstance(value, str) or value not in _POLICIES:
        path = isinstance(value, str) and "." in value
        what = ": a class path, which natrl does not import from a file" if path else ""
        raise ZooError(f"policy {value!r}{what}; natrl reads {', '.join(_POLICIES)}")
    return value


def _env_wrapper(value: Any) -> str:
    """The zoo's ``env_wrapper`` (a path, or a list of one path or ``{path: kwargs}``) as natrl's ``wrapper``."""
    import gymnasium as gym

    from natrl.rl.trusted import UntrustedReferenceError, resolve_class

    entries = value if isinstance(value, list) else [value]
    if len(entries) != 1:
        raise ZooError(f"env_wrapper {value!r}: natrl applies one wrapper class; several have no translation")
    entry = entries[0]
    if isinstance(entry, dict):
        if len(entry) != 1:
            raise ZooError(f"env_wrapper {value!r}: write one wrapper")
        ((entry, kwargs),) = entry.items()
        if kwargs:
            raise ZooError(f"env_wrapper {entry} with arguments {kwargs!r}: natrl's wrapper takes none from a file")
    if not isinstance(entry, str):
        raise ZooError(f"env_wrapper {value!r} must name a wrapper class")
    if entry.startswith("stable_baselines3."):
        raise ZooError(
            f"env_wrapper {entry}: stable-baselines3's wrappers are not natrl's (natrl.rl.atari:AtariWrapper keeps "
            "whole games, without end-of-life episodes); use natrl's preset for the env"
        )
    try:
        cls = resolve_class(entry, gym.Wrapper, field="env_wrapper", hint="pass --wrapper MODULE:CLASS yourself")
    except UntrustedReferenceError as exc:
        raise ZooError(str(exc)) from None
    return f"{cls.__module__}:{cls.__qualname__}"


def _defaults(cls: type, *names: str) -> tuple[Any, ...]:
    params = inspect.signature(cls).parameters
    return tuple(params[n].default for n in names)


def _normalize(value: Any, gamma: Any, config_cls: type) -> dict[str, Any]:
    """The zoo's ``normalize`` (true/false, a dict, or a string of one) as natrl's normalisation fields."""
    from natrl.rl.normalization import ObsNormalizer, RewardScaler

    if isinstance(value, str):
        value = parse_python_literal(value, field="normalize")
    if isinstance(value, bool):
        kwargs: dict[str, Any] = {} if value else {"norm_obs": False, "norm_reward": False}
    elif isinstance(value, dict):
        kwargs = dict(value)
    else:
        raise ZooError(f"normalize must be true/false or VecNormalize's keywords, got {value!r}")
    obs_clip, obs_eps = _defaults(ObsNormalizer, "clip", "epsilon")
    rew_clip, rew_eps = _defaults(RewardScaler, "clip", "epsilon")
    natrl_values = {"clip_obs": obs_clip, "clip_reward": rew_clip, "epsilon": obs_eps}
    norm_obs, norm_reward = kwargs.pop("norm_obs", True), kwargs.pop("norm_reward", True)
    for name, flag in (("norm_obs", norm_obs), ("norm_reward", norm_reward)):
        if not isinstance(flag, bool):
            raise ZooError(f"normalize {name} must be True or False, got {flag!r}")
    for key, v in kwargs.items():
        if key == "gamma":
            default_gamma = inspect.signature(config_cls).parameters["gamma"].default
            if gamma is None and v != default_gamma and norm_reward:
                raise ZooError(
                    f"normalize gamma={v!r} with the algorithm's gamma {default_gamma}: natrl scales rewards with "
                    "the algorithm's gamma; set gamma in the table instead"
                )
        elif key in natrl_values:
            if v != natrl_values[key] or (key == "epsilon" and obs_eps != rew_eps):
                raise ZooError(f"normalize {key}={v!r}: natrl's VecNormalize equivalent uses {natrl_values[key]!r}")
        else:
            raise ZooError(f"normalize {key}={v!r} has no natrl equivalent (natrl reads norm_obs and norm_reward)")
    out: dict[str, Any] = {"normalize_obs": norm_obs, "normalize_reward": norm_reward}
    if norm_obs:
        out["obs_norm_update"] = "step"  # VecNormalize updates its statistics after every step
    return out


def _sizes(value: Any, what: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value
    ):
        raise ZooError(f"policy_kwargs net_arch{what} must be a list of layer widths, got {value!r}")
    return list(value)


def _policy_kwargs(kwargs: dict[str, Any], policy: str) -> dict[str, Any]:
    """SB3's policy keywords as natrl config fields (network widths, activation, initialisation)."""
    out: dict[str, Any] = {}
    if "net_arch" in kwargs:
        arch = kwargs["net_arch"]
        if isinstance(arch, dict):
            unknown = sorted(set(arch) - {"pi", "vf"})
            if unknown:
                raise ZooError(f"policy_kwargs net_arch has key(s) {unknown}; SB3 reads pi and vf")
            pi = _sizes(arch.get("pi", []), "['pi']")  # SB3: a missing network is a linear head
            vf = _sizes(arch.get("vf", []), "['vf']")
            if not vf and pi:
                raise ZooError(
                    f"policy_kwargs net_arch vf=[] with pi={pi}: natrl's critic_hidden_sizes=[] means the actor's "
                    "widths, so a linear critic beside a hidden actor has no translation"
                )
            out["hidden_sizes"], out["critic_hidden_sizes"] = pi, (vf if vf != pi else None)
        elif isinstance(arch, (list, tuple)) and any(isinstance(h, dict) for h in arch):
            raise ZooError(
                f"policy_kwargs net_arch {arch!r}: layers shared by actor and critic (SB3 < 1.8) have no natrl "
                "equivalent; write dict(pi=[...], vf=[...])"
            )
        else:
            out["hidden_sizes"] = _sizes(arch, "")
    elif policy == "CnnPolicy":
        out["hidden_sizes"] = []  # SB3: linear heads on NatureCNN's features
    if "activation_fn" in kwargs:
        act = kwargs["activation_fn"]
        if act not in _ACTIVATION_NAMES:
            shown = getattr(act, "__name__", repr(act))
            raise ZooError(
                f"policy_kwargs activation_fn={shown}: natrl's activations are "
                f"{', '.join(f'nn.{c.__name__}' for c in _ACTIVATION_NAMES)}"
            )
        out["activation"] = _ACTIVATION_NAMES[act]
    for key in ("ortho_init", "log_std_init"):
        if key in kwargs:
            v = kwargs[key]
            if key == "ortho_init" and not isinstance(v, bool):
                raise ZooError(f"policy_kwargs ortho_init must be True or False, got {v!r}")
            if key == "log_std_init" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ZooError(f"policy_kwargs log_std_init must be a number, got {v!r}")
            out[key] = float(v) if key == "log_std_init" else v
    if "share_features_extractor" in kwargs and not isinstance(kwargs["share_features_extractor"], bool):
        raise ZooError("policy_kwargs share_features_extractor must be True or False")
    known = {"net_arch", "activation_fn", "ortho_init", "log_std_init", "share_features_extractor"}
    if policy in RECURRENT_POLICIES:
        known |= set(RECURRENT_KWARGS)  # sb3-contrib's names, natrl's too: checked by the policy builder
    unknown = [k for k in kwargs if k not in known]
    if unknown:
        raise ZooError(
            f"policy_kwargs {', '.join(map(str, unknown))}: no exact natrl equivalent (natrl reads "
            f"{', '.join(sorted(known))})"
        )
    return out

"""stable-baselines3's and sb3-contrib's hyperparameter names, translated exactly into natrl's.

SB3's PPO and natrl's PPO share their names. sb3-contrib's TRPO names several things differently, and two of
them differ by a factor: sb3-contrib measures the KL of a Gaussian policy per action dimension (it averages
``Normal``'s KL over the batch *and* the k dimensions of a Box action space), natrl the KL of the joint policy,
so its trust region and its damping are k times sb3-contrib's:

======================================  ===========================================  ==========================
sb3-contrib TRPO                        natrl TRPO                                   note
======================================  ===========================================  ==========================
``target_kl``                           ``max_kl = k · target_kl``                   k = Box action dimensions
``cg_damping``                          ``damping = k · cg_damping``                 (1 for discrete actions)
``cg_max_steps``                        ``cg_iters``
``n_critic_updates``                    ``critic_epochs``
``batch_size``                          ``critic_batch_size``                        critic minibatches
``learning_rate``                       ``critic_lr``                                the critic's Adam
``line_search_shrinking_factor``        ``line_search_shrink``
``line_search_max_iter``                ``line_search_max_backtracks = n - 1``       natrl counts backtracks
``sub_sampling_factor``                 only 1                                       no exact translation
``use_sde``, ``sde_sample_freq``        only False / -1                              natrl has no gSDE
``stats_window_size``                   only 100                                     natrl's window
``rollout_buffer_class``/``_kwargs``    only None                                    natrl's rollout
======================================  ===========================================  ==========================

A caller who uses any of sb3-contrib's TRPO names gets sb3-contrib's defaults for the others too (``target_kl``
0.01, ``cg_damping`` 0.1, ``line_search_max_iter`` 10, translated as above), so that ``TRPO("MlpPolicy", env,
**sb3_contrib_hyperparameters)`` is sb3-contrib's TRPO. The same table is the inverse of
``natrl.bench.peers.translate`` (tests/test_sb3_names.py checks both ways,
and that one update of both libraries moves every parameter alike).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = [
    "SB3_ATTRIBUTES",
    "SB3_ONLY_DEFAULTS",
    "action_dims",
    "natrl_field",
    "natrl_values",
    "sb3_attribute_field",
    "sb3_converted",
    "sb3_names_in",
    "sb3_value",
    "translate_sb3_names",
]

# sb3-contrib TRPO's names with a one-to-one natrl name
_TRPO_RENAMED = {
    "cg_max_steps": "cg_iters",
    "n_critic_updates": "critic_epochs",
    "batch_size": "critic_batch_size",
    "learning_rate": "critic_lr",
    "line_search_shrinking_factor": "line_search_shrink",
}
_TRPO_SCALED = {"target_kl": "max_kl", "cg_damping": "damping"}  # times k
_TRPO_NAMES = {*_TRPO_RENAMED, *_TRPO_SCALED, "line_search_max_iter", "sub_sampling_factor"}

# sb3-contrib's defaults that natrl's differ from (by the factor k, or by one line-search trial): a caller who
# speaks sb3-contrib's names gets sb3-contrib's TRPO, defaults included
_SB3_CONTRIB_DEFAULTS = {"target_kl": 0.01, "cg_damping": 0.1, "line_search_max_iter": 10}

SB3_ONLY_DEFAULTS: dict[str, Any] = {
    "use_sde": False,
    "sde_sample_freq": -1,
    "stats_window_size": 100,
    "rollout_buffer_class": None,
    "rollout_buffer_kwargs": None,
    "_init_setup_model": True,
}
"""SB3 constructor arguments natrl accepts only at SB3's default (what natrl does anyway)."""

_WHY = {
    "use_sde": "natrl has no generalised state-dependent exploration (gSDE)",
    "sde_sample_freq": "natrl has no generalised state-dependent exploration (gSDE)",
    "stats_window_size": "natrl's episode statistics cover the last 100 episodes",
    "rollout_buffer_class": "natrl collects its own rollouts",
    "rollout_buffer_kwargs": "natrl collects its own rollouts",
    "_init_setup_model": "natrl always builds its networks at construction",
    "sub_sampling_factor": (
        "sb3-contrib subsamples the gradient, the Fisher and the line search, natrl's fisher_subsample only the "
        "Fisher: no exact translation (set fisher_subsample yourself)"
    ),
}


def action_dims(action_space: spaces.Space) -> int:
    """k: the dimensions over which sb3-contrib averages a Gaussian policy's KL (1 for non-Box actions)."""
    if isinstance(action_space, spaces.Box):
        return int(np.prod(action_space.shape))
    return 1


def sb3_names_in(algo: str, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``hyperparameters`` that are SB3/sb3-contrib names natrl translates (not natrl's own)."""
    names = set(SB3_ONLY_DEFAULTS)
    if algo == "trpo":
        names |= _TRPO_NAMES
    return {k: v for k, v in hyperparameters.items() if k in names}


def natrl_field(name: str, fields: set[str]) -> str | None:
    """The field of a natrl config (``fields``, its field names) that SB3's or sb3-contrib's attribute ``name``
    reads: ``name`` itself when natrl has it, else its sb3-contrib TRPO name's target (``learning_rate`` →
    ``critic_lr``, ``batch_size`` → ``critic_batch_size``, …) when natrl has that; None when neither."""
    if name in fields:
        return name
    target = _TRPO_RENAMED.get(name)
    return target if target in fields else None


SB3_ATTRIBUTES = (
    "n_epochs",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "clip_range",
    "clip_range_vf",
    "target_kl",
    "normalize_advantage",
    "cg_damping",
    "cg_max_steps",
    "n_critic_updates",
    "line_search_shrinking_factor",
    "line_search_max_iter",
)
"""SB3's PPO and A2C and sb3-contrib's TRPO model attributes that hold a hyperparameter (besides ``gamma``,
``learning_rate``, ``n_steps`` and ``batch_size``), which natrl's agents expose over their config."""


def sb3_attribute_field(algo: str, name: str, fields: set[str]) -> str | None:
    """The config field of natrl's algorithm ``algo`` (``fields``, its field names) behind SB3's model attribute
    ``name``: sb3-contrib TRPO's ``target_kl``, ``cg_damping`` and ``line_search_max_iter`` read ``max_kl``,
    ``damping`` and ``line_search_max_backtracks`` (in TRPO only); else :func:`natrl_field`."""
    if algo == "trpo" and name in _TRPO_SCALED:
        return _TRPO_SCALED[name]
    if algo == "trpo" and name == "line_search_max_iter":
        return "line_search_max_backtracks"
    return natrl_field(name, fields)


def sb3_value(algo: str, name: str, value: Any, k: int) -> Any:
    """SB3's value of the attribute ``name`` for natrl's value of its :func:`sb3_attribute_field`, ``value`` (a
    number where the two differ): the inverse of :func:`translate_sb3_names` (TRPO's ``target_kl = max_kl / k``,
    ``cg_damping = damping / k``, ``line_search_max_iter = line_search_max_backtracks + 1``); ``value`` itself
    for the names both libraries share."""
    if not sb3_converted(algo, name):
        return value
    if name in _TRPO_SCALED:
        return float(f"{float(value) / k:.12g}")
    return int(value) + 1


def sb3_converted(algo: str, name: str) -> bool:
    """SB3's attribute ``name`` and natrl's field behind it differ by a factor or an offset (sb3-contrib TRPO's
    ``target_kl``, ``cg_damping``, ``line_search_max_iter``): :func:`sb3_value` converts a number."""
    return algo == "trpo" and (name in _TRPO_SCALED or name == "line_search_max_iter")


def natrl_values(algo: str, name: str, value: Any, fields: set[str], k: int) -> dict[str, Any]:
    """``{field: natrl's value}`` for SB3's attribute ``name`` set to ``value`` (:func:`translate_sb3_names` for
    sb3-contrib TRPO's names, ``value`` itself for the shared ones); empty when natrl's ``algo`` has no field
    for it.

    Raises:
        ValueError: a value with no exact translation (``line_search_max_iter`` below 1, a non-number scaled).
    """
    field = sb3_attribute_field(algo, name, fields)
    if field is None:
        return {}
    if algo == "trpo" and name in _TRPO_NAMES:
        return translate_sb3_names(algo, {name: value}, k, contrib_defaults=False)[0]
    return {field: value}


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def translate_sb3_names(
    algo: str, given: dict[str, Any], k: int, natrl_given: set[str] | None = None, *, contrib_defaults: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """natrl's hyperparameters for SB3/sb3-contrib ones (:func:`sb3_names_in`), with one note per translation.

    Args:
        algo: natrl's algorithm name.
        given: the SB3 names and values.
        k: :func:`action_dims` of the env's action space.
        natrl_given: natrl names the caller set too (a name given both ways is refused).
        contrib_defaults: give sb3-contrib's defaults for the TRPO names not in ``given`` (a new agent); False
            translates only ``given`` (``load``'s ``custom_objects``, which replace single saved values).

    Raises:
        ValueError: a value with no exact translation, or the same setting given under both names.
    """
    out: dict[str, Any] = {}
    notes: list[str] = []
    natrl_given = natrl_given or set()
    defaulted: set[str] = set()
    if contrib_defaults and algo == "trpo" and any(name in _TRPO_NAMES for name in given):
        given = dict(given)
        for name, default in _SB3_CONTRIB_DEFAULTS.items():
            target = _TRPO_SCALED.get(name, "line_search_max_backtracks")
            if name not in given and target not in natrl_given:
                given[name] = default
                defaulted.add(name)
    for name, value in given.items():
        if name in SB3_ONLY_DEFAULTS:
            default = SB3_ONLY_DEFAULTS[name]
            if value != default and not (name == "rollout_buffer_kwargs" and not value):
                raise ValueError(f"{name}={value!r} has no natrl equivalent ({_WHY[name]}); leave it at {default!r}")
            continue
        if name == "sub_sampling_factor":
            if value != 1:
                raise ValueError(f"sub_sampling_factor={value!r}: {_WHY[name]}")
            continue
        if name in _TRPO_RENAMED:
            target, new = _TRPO_RENAMED[name], value
        elif name in _TRPO_SCALED:
            target = _TRPO_SCALED[name]
            new = float(f"{_number(name, value) * k:.12g}")
        elif name == "line_search_max_iter":
            n = value
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"line_search_max_iter must be an integer >= 1, got {value!r}")
            target, new = "line_search_max_backtracks", int(n) - 1
        else:  # pragma: no cover - sb3_names_in lists exactly the names above
            raise ValueError(f"unknown SB3 hyperparameter {name!r}")
        if target in natrl_given or target in out:
            raise ValueError(f"{name} and {target} set the same thing; give one of them")
        out[target] = new
        scale = f" (× k = {k}, the action dimensions)" if name in _TRPO_SCALED else ""
        source = ", sb3-contrib's default" if name in defaulted else ""
        notes.append(f"{name}={value!r}{source} → {target}={new!r}{scale}")
    return out, notes

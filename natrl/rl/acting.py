"""``predict``'s work: the arguments checked and converted (observations, episode starts, recurrent states),
then the actor's action for them.

Each bad argument is one line naming it and what it must be, raised before anything reaches the networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from natrl.rl.normalization import ObsNormalizer
from natrl.rl.policies import Actor

__all__ = ["act", "check_observation", "episode_start_flags", "observation_tensor", "recurrent_state"]


def _observation_arrays(obs: Any) -> list[np.ndarray]:
    """The arrays of an observation (an array, or a dict or tuple of them); a ragged one is left to the codec."""
    if isinstance(obs, dict):
        return [a for v in obs.values() for a in _observation_arrays(v)]
    if isinstance(obs, tuple):
        return [a for v in obs for a in _observation_arrays(v)]
    try:
        return [np.asarray(obs)]
    except ValueError:  # ragged: the codec names the problem
        return []


def check_observation(obs: Any) -> None:
    """Refuse an observation holding complex numbers, text or Python objects (TypeError), or a NaN or an
    infinity (ValueError)."""
    arrays = _observation_arrays(obs)
    if any(arr.dtype.kind not in "biuf" for arr in arrays):
        raise TypeError("predict: the observation must hold real numbers (got complex, text or objects)")
    if any(arr.dtype.kind == "f" and not np.isfinite(arr).all() for arr in arrays):
        raise ValueError("predict: the observation holds NaN or infinite values")


def episode_start_flags(episode_start: Any, n: int) -> np.ndarray:
    """``episode_start`` as (n,) bools; booleans or 0/1 for each of the ``n`` observations."""
    flags = np.asarray(episode_start)
    if flags.dtype != np.bool_ and not (np.issubdtype(flags.dtype, np.integer) and bool(np.isin(flags, (0, 1)).all())):
        raise ValueError(f"predict: episode_start must hold booleans (or 0/1), got {episode_start!r}")
    flags = flags.astype(bool).reshape(-1)
    if flags.shape != (n,):
        raise ValueError(f"predict: episode_start has {flags.size} entries for {n} observation(s)")
    return flags


def recurrent_state(state: Any, zero: Tensor) -> Tensor:
    """A recurrent state from ``predict``'s layout (sb3-contrib's: ``(h, c)`` or ``(h,)``, each (layers, n,
    hidden); None: zeros) to the actor's (n, k, layers, hidden), whose zero state is ``zero``."""
    if state is None:
        return zero
    parts = state if isinstance(state, (tuple, list)) else (state,)
    n, k, layers, hidden = zero.shape
    try:
        arr = np.stack([np.asarray(p, dtype=np.float32) for p in parts])
    except ValueError:
        arr = np.empty(0, np.float32)
    if arr.shape != (k, layers, n, hidden):
        kind = "(h, c)" if k == 2 else "(h,)"
        raise ValueError(
            f"predict: the state must be {kind} with arrays of shape ({layers}, {n}, {hidden}) (layers, batch, "
            f"hidden), as the previous predict call returned it, or None for new episodes; got "
            f"{[np.shape(p) for p in parts]}"
        )
    if not bool(np.isfinite(arr).all()):
        raise ValueError("predict: the recurrent state holds NaN or infinite values")
    return torch.from_numpy(arr).permute(2, 0, 1, 3).to(zero.device, zero.dtype)


def observation_tensor(actor: Actor, obs_normalizer: ObsNormalizer | None, obs: Any, device: torch.device) -> Tensor:
    """A batch of env observations in the stored form (normalised by ``obs_normalizer`` when there is one,
    else encoded by the actor's observation codec) on ``device``."""
    if obs_normalizer is not None:
        stored = obs_normalizer(np.asarray(obs, dtype=np.float64))
    else:
        stored = actor.obs_codec.encode(obs)
    return torch.as_tensor(stored, device=device)


def act(
    actor: Actor,
    obs_normalizer: ObsNormalizer | None,
    generator: torch.Generator,
    device: torch.device,
    observation: Any,
    state: Any,
    episode_start: Any,
    deterministic: bool,
) -> tuple[np.ndarray, Any]:
    """The action(s) of ``actor`` for one observation or a batch, and a recurrent policy's next state
    (``predict``'s arguments; observations are normalised by ``obs_normalizer`` when there is one).
    A sample is drawn with ``generator`` unless ``deterministic`` (the distribution's mode)."""
    codec = actor.obs_codec
    try:
        single = not codec.is_batch(observation)
    except ValueError as exc:
        raise ValueError(f"predict: {exc}") from None
    check_observation(observation)
    with torch.no_grad():
        obs_t = observation_tensor(
            actor, obs_normalizer, codec.batch_of_one(observation) if single else observation, device
        )
        if actor.recurrent:
            n = obs_t.shape[0]
            starts = torch.zeros(n, dtype=torch.bool, device=obs_t.device)
            if episode_start is not None:
                starts = torch.from_numpy(episode_start_flags(episode_start, n)).to(obs_t.device)
            dist, new_state = actor.step(obs_t, recurrent_state(state, actor.initial_state(n)), starts)
            state = tuple(new_state[:, i].transpose(0, 1).cpu().numpy() for i in range(new_state.shape[1]))
        else:
            dist = actor.distribution(obs_t)
        raw = dist.mode() if deterministic else dist.sample(generator)
    action = actor.to_env_action(raw.cpu().numpy())
    return (action[0] if single else action), state

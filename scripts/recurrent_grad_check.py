"""natrl's recurrent PPO update against sb3-contrib RecurrentPPO's ``train``, gradient by gradient, on one rollout.

Both libraries get the same weights (RecurrentPPO's, copied into natrl's actor and critic), and the same rollout:
RecurrentPPO collects it (``collect_rollouts`` into its ``RecurrentRolloutBuffer``, after ``--rollouts`` − 1
rollouts that make the LSTM states carried into it non-zero), and natrl's update reads the buffer's
observations, actions, episode starts, old log-probabilities and values, advantages, returns and recorded LSTM
states as a :class:`natrl.rl.rollout.Rollout` cut by :func:`natrl.rl.batch.batch_from_rollout`. The gradients
are taken from the libraries' own update loops, at the initial parameters:

* natrl: ``PPO._update`` on that batch, its minibatch gradient function wrapped so that every minibatch's
  gradient is recorded after its backward and then set to zero (Adam's first moments stay zero, so no
  parameter moves);
* sb3-contrib: ``RecurrentPPO.train`` on its buffer, the optimiser's ``step`` replaced by a recorder
  (``max_grad_norm`` infinite, so the recorded gradient is before clipping; no parameter moves).

Printed: (a) the full-rollout gradient (one minibatch of all n_envs × n_steps steps; the ratio is 1, so the clip
is inactive) per parameter tensor, natrl against RecurrentPPO with its minibatch cut at step 0 (the relative
error ‖g_natrl − g_sb3‖ / ‖g_sb3‖) and with cuts at random points, as ``train`` draws them; (b) what one epoch of
minibatches holds on each side (sequences, where their state comes from, how far back the gradient reaches) and
the minibatch gradients against the full-rollout gradient (cosine, averaged over ``--epochs`` epochs of
minibatches; the mean minibatch gradient against it); (c) the update's settings side by side; (d) one whole update
(all epochs, Adam from a fresh state) by each library's loop from the same weights: the full-rollout surrogate gain,
KL, value loss and, on TMaze, the probability of the cued arm at the junction; (e) the same with one minibatch of all
steps on both sides, the parameters compared (RecurrentPPO not cut: the loops' Adam, clipping and epochs; cut at a
random step: what one truncation of the recurrence changes).

    OMP_NUM_THREADS=1 python scripts/recurrent_grad_check.py                       # TMaze-v0, seed 0
    OMP_NUM_THREADS=1 python scripts/recurrent_grad_check.py --env CartPoleNoVel-v1 --pretrain 20000
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np
import torch

from natrl import PPO
from natrl.bench.peers import build_model, translate
from natrl.presets import load_preset
from natrl.rl.batch import Batch, batch_from_rollout
from natrl.rl.gae import gae
from natrl.rl.ppo import PPOConfig
from natrl.rl.rollout import Rollout


def build_pair(env_id: str, seed: int, pretrain: int = 0, sequence_length: int | None = None) -> tuple[Any, PPO]:
    """RecurrentPPO as ``natrl bench`` translates natrl's preset, and natrl's PPO with its weights.

    ``pretrain`` steps of RecurrentPPO's ``learn`` come first (0: the initial weights); ``sequence_length``
    replaces the preset's on natrl's side (RecurrentPPO has none)."""
    preset = load_preset("ppo", env_id, PPOConfig)
    hyper = dict(preset.hyperparameters)
    if sequence_length is not None:
        hyper["sequence_length"] = sequence_length
    agent = PPO(env_id, policy=preset.policy, policy_kwargs=dict(preset.policy_kwargs), seed=seed, **hyper)
    spec = translate("ppo", agent.config, preset.policy, dict(preset.policy_kwargs))
    assert spec is not None
    model, _ = build_model(spec, env_id, seed)
    if pretrain:
        model.learn(pretrain)
    copy_weights(model, agent)
    return model, agent


def module_pairs(model: Any, agent: PPO) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """natrl's modules and RecurrentPPO's that hold the same weights (as in tests/test_recurrent.py)."""
    pol, actor, critic = model.policy, agent.actor, agent.critic
    assert actor.core is not None and critic.core is not None and actor.core is not critic.core
    pairs = [("actor LSTM", actor.core.rnn, pol.lstm_actor), ("critic LSTM", critic.core.rnn, pol.lstm_critic)]
    heads = (("actor", actor.net, pol.mlp_extractor.policy_net, pol.action_net),
             ("critic", critic.net, pol.mlp_extractor.value_net, pol.value_net))  # fmt: skip
    for side, net, hidden, head in heads:
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        sb3_linear = [m for m in hidden if isinstance(m, torch.nn.Linear)] + [head]
        assert len(linear) == len(sb3_linear)
        names = [f"{side} hidden {i}" for i in range(len(linear) - 1)] + [f"{side} head"]
        pairs += list(zip(names, linear, sb3_linear, strict=True))
    return pairs


def param_pairs(model: Any, agent: PPO) -> list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
    """(name, natrl parameter, RecurrentPPO parameter) for every trained parameter of both."""
    out = []
    for name, mine, theirs in module_pairs(model, agent):
        theirs_by_name = dict(theirs.named_parameters())
        for pname, p in mine.named_parameters():
            out.append((f"{name}.{pname}", p, theirs_by_name[pname]))
    assert {id(p) for _, p, _ in out} == {id(p) for p in agent.params}
    assert {id(q) for _, _, q in out} == {id(q) for q in model.policy.parameters() if q.requires_grad}
    return out


def copy_weights(model: Any, agent: PPO) -> None:
    with torch.no_grad():
        for _, mine, theirs in module_pairs(model, agent):
            mine.load_state_dict(theirs.state_dict())


def collect(model: Any, rollouts: int) -> None:
    """RecurrentPPO's ``collect_rollouts`` into its buffer, ``rollouts`` times (the last one is kept)."""
    from stable_baselines3.common.callbacks import CallbackList

    total = (rollouts + 1) * model.n_steps * model.n_envs
    if model._last_obs is None:
        _, callback = model._setup_learn(total, None)
    else:
        callback = CallbackList([])
        callback.init_callback(model)
    for _ in range(rollouts):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


def natrl_batch(model: Any, agent: PPO) -> tuple[Batch, float]:
    """The buffer's rollout as natrl's :class:`Batch` (through ``batch_from_rollout``), and the largest difference
    between natrl's GAE on the buffer's rewards and values and the buffer's advantages (RecurrentPPO adds
    γ·V(final observation) to the reward of a truncated step, so every episode end masks the next value)."""
    buf = model.rollout_buffer
    assert not buf.generator_ready, "read the buffer before its get() reorders it"
    T, E = buf.buffer_size, buf.n_envs

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(x))

    def states(h: np.ndarray, c: np.ndarray) -> torch.Tensor:  # (T, layers, E, H) twice -> (E, T, 2, layers, H)
        return torch.stack((t(h), t(c)), 2).permute(3, 0, 2, 1, 4).contiguous()

    starts = t(buf.episode_starts).bool()
    ends = torch.cat([starts[1:], t(model._last_episode_starts).bool().unsqueeze(0)])  # done after step t
    with torch.no_grad():
        last = model.policy.predict_values(
            torch.as_tensor(model._last_obs),
            model._last_lstm_states.vf,
            torch.as_tensor(model._last_episode_starts, dtype=torch.float32),
        ).flatten()
    values = t(buf.values)
    next_values = torch.cat([values[1:], last.unsqueeze(0)])
    rewards = t(buf.rewards)
    cfg = agent.config
    adv, _ = gae(rewards, values, next_values, ends, ends, gamma=cfg.gamma, lam=cfg.gae_lambda)
    gae_err = float((adv - t(buf.advantages)).abs().max())
    ro = Rollout(
        obs=t(buf.observations).float(),
        actions=t(buf.actions.astype(agent.actor.action.raw_dtype).reshape(T, E, *agent.actor.action.raw_shape)),
        log_probs=t(buf.log_probs),
        values=values,
        next_values=next_values,
        rewards=rewards,
        terminated=ends,
        episode_end=ends,
        starts=starts,
        actor_states=states(buf.hidden_states_pi, buf.cell_states_pi),
        critic_states=states(buf.hidden_states_vf, buf.cell_states_vf),
    )
    return batch_from_rollout(ro, t(buf.advantages), t(buf.returns), cfg.sequence_steps()), gae_err


def natrl_minibatch_grads(
    agent: PPO, batch: Batch, params: list[torch.nn.Parameter], batch_size: int, n_epochs: int
) -> list[torch.Tensor]:
    """Every minibatch gradient of natrl's ``PPO._update`` on ``batch`` (flat, in ``params``' order), at the
    current parameters: each is recorded after its backward and zeroed before the clip and the Adam step."""
    before = [p.detach().clone() for p in agent.params]
    saved_config, inner = agent.config, agent._minibatch_grads
    recorded: list[torch.Tensor] = []

    def recording(mb: Any, coefs: Any) -> tuple[Any, Callable[[], None]]:
        terms, backward = inner(mb, coefs)

        def record() -> None:
            backward()
            recorded.append(torch.cat([p.grad.flatten() for p in params]))  # type: ignore[union-attr]
            for p in agent.params:
                p.grad.zero_()  # type: ignore[union-attr]

        return terms, record

    saved_adam = copy.deepcopy(agent.optimizer.state_dict())
    # a fresh Adam: with zero gradients and no moments its steps are zero
    agent.optimizer.load_state_dict({"state": {}, "param_groups": saved_adam["param_groups"]})
    agent.config = dataclasses.replace(saved_config, batch_size=batch_size, n_epochs=n_epochs)
    agent._minibatch_grads = recording
    try:
        agent._update(batch)
    finally:
        agent.config, agent._minibatch_grads = saved_config, inner
        agent.optimizer.load_state_dict(saved_adam)
    assert all(p.equal(b) for p, b in zip(agent.params, before)), "a recorded update moved natrl's parameters"
    return recorded


def sb3_minibatch_grads(
    model: Any, params: list[torch.nn.Parameter], batch_size: int, n_epochs: int, split: int | None, np_seed: int = 0
) -> tuple[list[torch.Tensor], list[Any], list[int]]:
    """Every minibatch gradient of RecurrentPPO's ``train`` (flat, in ``params``' order), before clipping, at the
    current parameters; the minibatches it drew; and the split index of every epoch (``split``: every epoch's
    minibatches cut from that step, else drawn by ``train`` from NumPy's global generator seeded ``np_seed``)."""
    before = [p.detach().clone() for p in model.policy.parameters()]
    recorded: list[torch.Tensor] = []
    samples: list[Any] = []
    opt, buf = model.policy.optimizer, model.rollout_buffer
    saved = (model.batch_size, model.n_epochs, model.max_grad_norm)

    def step(*args: Any, **kwargs: Any) -> None:
        recorded.append(torch.cat([p.grad.flatten() for p in params]))  # type: ignore[union-attr]
        opt.zero_grad()

    inner_get = buf.get

    def get(size: int | None = None) -> Iterator[Any]:
        for s in inner_get(size):
            samples.append(s)
            yield s

    model.batch_size, model.n_epochs, model.max_grad_norm = batch_size, n_epochs, math.inf
    opt.step, buf.get = step, get
    n = buf.buffer_size * buf.n_envs
    if split is None:
        replay = np.random.RandomState(np_seed)
        splits = [int(replay.randint(n)) for _ in range(n_epochs)]
        draw = mock.patch.object(np.random, "randint", np.random.RandomState(np_seed).randint)
    else:
        splits = [split] * n_epochs
        draw = mock.patch.object(np.random, "randint", lambda *a, **k: split)
    try:
        with draw:
            model.train()
    finally:
        model.batch_size, model.n_epochs, model.max_grad_norm = saved
        del opt.step, buf.get
    assert all(p.equal(b) for p, b in zip(model.policy.parameters(), before)), "train() moved the parameters"
    return recorded, samples, splits


def full_batch_gradients(env_id: str = "TMaze-v0", seed: int = 0, rollouts: int = 2, pretrain: int = 0) -> dict:
    """The full-rollout PPO gradient of both libraries on one RecurrentPPO rollout: per parameter tensor
    (natrl's, RecurrentPPO's with its minibatch cut at step 0), the GAE check, and what the comparison needs next."""
    model, agent = build_pair(env_id, seed, pretrain)
    collect(model, rollouts)
    batch, gae_err = natrl_batch(model, agent)
    pairs = param_pairs(model, agent)
    n = len(batch)
    (g_natrl,) = natrl_minibatch_grads(agent, batch, [p for _, p, _ in pairs], n, 1)
    (g_sb3,), _, _ = sb3_minibatch_grads(model, [q for _, _, q in pairs], n, 1, split=0)
    sizes = [p.numel() for _, p, _ in pairs]
    names = [name for name, _, _ in pairs]
    return {
        "tensors": dict(zip(names, zip(g_natrl.split(sizes), g_sb3.split(sizes), strict=True), strict=True)),
        "g_natrl": g_natrl,
        "g_sb3": g_sb3,
        "gae_err": gae_err,
        "model": model,
        "agent": agent,
        "batch": batch,
        "pairs": pairs,
    }


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def reach(starts: np.ndarray, decisions: np.ndarray, cut: np.ndarray) -> tuple[float, float]:
    """(fraction of steps, fraction of decision steps) whose episode began in this rollout and inside the same
    gradient sequence: no cut (a sequence boundary, where the recorded state enters without a gradient) lies
    after the episode's first step and at or before the step. starts, decisions, cut: (E, T) bool."""
    E, T = starts.shape
    ok_all = ok_dec = n_all = n_dec = 0
    for e in range(E):
        ep_start = -1  # the latest episode start at or before t in this rollout
        last_cut = 0
        for t in range(T):
            if starts[e, t]:
                ep_start = t
            if cut[e, t]:
                last_cut = t
            reached = ep_start >= 0 and last_cut <= ep_start
            n_all += 1
            ok_all += reached
            if decisions[e, t]:
                n_dec += 1
                ok_dec += reached
    return ok_all / max(n_all, 1), (ok_dec / n_dec if n_dec else float("nan"))


def sb3_cuts(T: int, E: int, batch_size: int, split: int) -> np.ndarray:
    """RecurrentPPO's sequence boundaries for one epoch, (E, T): every env's first step and every minibatch's
    first step (minibatches are ``batch_size`` consecutive steps of the env-by-env order, from ``split`` on)."""
    n = T * E
    cut = np.zeros(n, bool)
    cut[::T] = True
    cut[(split + np.arange(0, n, batch_size)) % n] = True
    return cut.reshape(E, T)


def junction_choices(batch: Batch, E: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """TMaze: the steps that choose an arm at the junction (up or down there), (E, T), and the arm the episode's cue
    names (2 up, 3 down; −1 where the episode began before this rollout, its cue unseen)."""
    obs = batch.obs.reshape(E, T, -1).numpy()
    actions = batch.actions.reshape(E, T).numpy()
    assert batch.seq is not None
    starts = batch.seq.starts.reshape(E, T).numpy()
    decisions = (obs[..., 2] == 1) & (actions >= 2)
    cued = np.full((E, T), -1)
    for e in range(E):
        arm = -1
        for t in range(T):
            if starts[e, t]:
                arm = 2 if obs[e, t, 0] == 1 else 3
            cued[e, t] = arm
    return decisions, cued


def policy_measures(agent: PPO, batch: Batch, old_logits: torch.Tensor, cued: np.ndarray, junction: np.ndarray) -> dict:
    """The full-rollout surrogate gain mean((r − 1)·Â) (Â standardised over the rollout), mean KL(π_old ‖ π), the
    value loss, and at the junction steps with a seen cue the mean probability of the cued arm, at natrl's current
    parameters."""
    with torch.no_grad():
        dist = agent.actor.distribution(*batch.actor_inputs())
        values = agent.critic(*batch.critic_inputs()).flatten()
    logits = dist.logits if hasattr(dist, "logits") else dist.dist.logits  # type: ignore[attr-defined]
    logp_old, logp = old_logits.log_softmax(-1), logits.log_softmax(-1)
    ratio = (logp.gather(1, batch.actions[:, None]) - logp_old.gather(1, batch.actions[:, None])).exp().flatten()
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    out = {
        "surrogate gain": float(((ratio - 1) * adv).mean()),
        "KL(old, new)": float((logp_old.exp() * (logp_old - logp)).sum(-1).mean()),
        "value loss": float((values - batch.returns).pow(2).mean()),
    }
    rows = np.flatnonzero(junction.flatten() & (cued.flatten() >= 0))
    if rows.size:
        arms = torch.as_tensor(cued.flatten()[rows])
        out["P(cued arm) at the junction"] = float(logp[rows].gather(1, arms[:, None]).exp().mean())
    return out


def whole_updates(model: Any, agent: PPO, batch: Batch, repeats: int, fresh_adam: dict) -> dict[str, list[dict]]:
    """One whole update (all epochs, Adam from a fresh state, clipping) by each library's own loop from the same
    weights on the same rollout, ``repeats`` times with other minibatch draws; the measures of
    :func:`policy_measures` after each (RecurrentPPO's result read through natrl's networks, its weights copied)."""
    E, T = model.rollout_buffer.n_envs, model.rollout_buffer.buffer_size
    junction, cued = junction_choices(batch, E, T)
    with torch.no_grad():
        d0 = agent.actor.distribution(*batch.actor_inputs())
    old_logits = (d0.logits if hasattr(d0, "logits") else d0.dist.logits).detach()  # type: ignore[attr-defined]
    sb3_params = {k: v.clone() for k, v in model.policy.state_dict().items()}
    sb3_adam = {"state": {}, "param_groups": [dict(g) for g in model.policy.optimizer.state_dict()["param_groups"]]}
    model._current_progress_remaining = 1.0  # the schedules at the start of a run on both sides
    out: dict[str, list[dict]] = {"before": [policy_measures(agent, batch, old_logits, cued, junction)],
                                  "natrl": [], "RecurrentPPO": []}  # fmt: skip
    for i in range(repeats):
        agent.optimizer.load_state_dict(fresh_adam)
        agent._update(batch)
        out["natrl"].append(policy_measures(agent, batch, old_logits, cued, junction))
        copy_weights(model, agent)  # back to the shared start
        model.policy.optimizer.load_state_dict(sb3_adam)
        with mock.patch.object(np.random, "randint", np.random.RandomState(i).randint):
            model.train()
        copy_weights(model, agent)
        out["RecurrentPPO"].append(policy_measures(agent, batch, old_logits, cued, junction))
        model.policy.load_state_dict(sb3_params)
        copy_weights(model, agent)
    return out


def whole_update_distance(model: Any, agent: PPO, batch: Batch, fresh_adam: dict, splits: list[int]) -> list[float]:
    """One whole update by each library's loop with one minibatch of all steps (every epoch the full rollout), from
    the same weights and a fresh Adam: ‖θ_natrl − θ_sb3‖ / ‖θ_natrl − θ_0‖ with RecurrentPPO's minibatch cut at
    each of ``splits`` (0: not cut, the same gradients as natrl's, so the loops' Adam, clipping and epochs are
    compared; elsewhere: what one truncation of the recurrence at that step changes in an update)."""
    pairs = param_pairs(model, agent)
    theta0 = torch.cat([p.detach().flatten() for _, p, _ in pairs])
    sb3_params = {k: v.clone() for k, v in model.policy.state_dict().items()}
    sb3_adam = {"state": {}, "param_groups": [dict(g) for g in model.policy.optimizer.state_dict()["param_groups"]]}
    saved_config, saved_batch_size = agent.config, model.batch_size
    model._current_progress_remaining = 1.0
    agent.optimizer.load_state_dict(fresh_adam)
    agent.config = dataclasses.replace(saved_config, batch_size=len(batch))
    try:
        agent._update(batch)
    finally:
        agent.config = saved_config
    theta_natrl = torch.cat([p.detach().flatten() for _, p, _ in pairs])
    out = []
    model.batch_size = len(batch)
    try:
        for split in splits:
            model.policy.optimizer.load_state_dict(sb3_adam)
            with mock.patch.object(np.random, "randint", lambda *a, _s=split, **k: _s):
                model.train()
            theta_sb3 = torch.cat([q.detach().flatten() for _, _, q in pairs])
            out.append(float((theta_natrl - theta_sb3).norm() / (theta_natrl - theta0).norm()))
            model.policy.load_state_dict(sb3_params)
    finally:
        model.batch_size = saved_batch_size
        copy_weights(model, agent)
    return out


def compare_rollout(model: Any, agent: PPO, epochs: int, repeats: int, fresh_adam: dict) -> dict[str, Any]:
    """(a), (b) and the whole-update measures on the rollout in RecurrentPPO's buffer."""
    batch, gae_err = natrl_batch(model, agent)
    pairs = param_pairs(model, agent)
    mine, theirs = [p for _, p, _ in pairs], [q for _, _, q in pairs]
    buf = model.rollout_buffer
    T, E = buf.buffer_size, buf.n_envs
    n, bs, L = T * E, agent.config.batch_size, agent.config.sequence_steps()
    (g_natrl,) = natrl_minibatch_grads(agent, batch, mine, n, 1)
    # the full-rollout gradient, each env's rollout one sequence: RecurrentPPO's minibatch of all steps cut at step 0
    (g_full,), _, _ = sb3_minibatch_grads(model, theirs, n, 1, split=0)
    g_rand, _, _ = sb3_minibatch_grads(model, theirs, n, 10, split=None, np_seed=1)
    sizes = [p.numel() for p in mine]
    tensors = {
        name: (rel_err(a, b), float(np.mean([rel_err(a, g.split(sizes)[i]) for g in g_rand])), float(b.norm()))
        for i, (name, a, b) in enumerate(zip([x for x, _, _ in pairs], g_natrl.split(sizes), g_full.split(sizes)))
    }
    tensors["all"] = (rel_err(g_natrl, g_full), float(np.mean([rel_err(g_natrl, g) for g in g_rand])),
                      float(g_full.norm()))  # fmt: skip

    g_n = natrl_minibatch_grads(agent, batch, mine, bs, epochs)
    g_s, samples, splits = sb3_minibatch_grads(model, theirs, bs, epochs, split=None, np_seed=2)
    lstm = torch.cat([torch.full((p.numel(),), name.startswith("actor LSTM")) for name, p, _ in pairs])

    def grad_stats(gs: list[torch.Tensor]) -> list[float]:
        c = [cos(g, g_full) for g in gs]
        mean = torch.stack(gs).mean(0)
        return [float(np.mean(c)), float(np.mean([cos(g[lstm], g_full[lstm]) for g in gs])), cos(mean, g_full),
                rel_err(mean, g_full)]  # fmt: skip

    assert batch.seq is not None
    starts = batch.seq.starts.reshape(E, T).numpy()
    junction, _ = junction_choices(batch, E, T)
    natrl_cut = np.zeros((E, T), bool)
    natrl_cut[:, ::L] = True
    check_sb3_cuts(samples, splits, starts, bs)
    seq_s = [s.lstm_states.pi[0].shape[1] for s in samples]
    n_seq = max(1, bs // L)
    structure = {
        "segments": [float((starts.sum() + len(batch.seq) - starts[:, 0].sum()) / len(batch.seq)) * n_seq,
                     float(np.mean(seq_s))],
        "mid-episode": [float((~batch.seq.starts[:, 0]).float().mean()) * n_seq,
                        float(np.mean([int((s.episode_starts.reshape(k, -1)[:, 0] == 0).sum())
                                       for s, k in zip(samples, seq_s)]))],
        "padded": [0.0, float(np.mean([1 - float(s.mask.mean()) for s in samples]))],
        "reach": [reach(starts, junction, natrl_cut),
                  tuple(np.mean([reach(starts, junction, sb3_cuts(T, E, bs, s)) for s in splits], axis=0))],
        "junctions": int(junction.sum()),
    }  # fmt: skip
    updates = whole_updates(model, agent, batch, repeats, fresh_adam)
    cuts = [0, *np.random.RandomState(3).randint(1, n, size=repeats).tolist()]
    distance = whole_update_distance(model, agent, batch, fresh_adam, cuts)
    return {"gae_err": gae_err, "tensors": tensors, "grads": [grad_stats(g_n), grad_stats(g_s)],
            "structure": structure, "updates": updates, "L": L, "distance": distance}  # fmt: skip


def check_sb3_cuts(samples: list[Any], splits: list[int], starts: np.ndarray, batch_size: int) -> None:
    """Assert that the sequences RecurrentPPO's buffer gave (their unpadded lengths, epoch by epoch) are the
    segments between :func:`sb3_cuts` and the episode starts, read in the buffer's order from each epoch's split."""
    E, T = starts.shape
    n = E * T
    per_epoch = math.ceil(n / batch_size)
    for k, split in enumerate(splits):
        bounds = (sb3_cuts(T, E, batch_size, split) | starts).flatten()
        order = np.roll(np.arange(n), -split)
        first = bounds[order]
        first[0] = True
        heads = np.flatnonzero(first)
        expected = np.diff(np.append(heads, n)).tolist()
        got = [int(x) for s in samples[k * per_epoch : (k + 1) * per_epoch]
               for x in s.mask.reshape(s.lstm_states.pi[0].shape[1], -1).sum(1)]  # fmt: skip
        assert got == expected, f"RecurrentPPO's sequences in epoch {k} are not the ones modelled"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="TMaze-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain", type=int, default=0, help="RecurrentPPO learn() steps before the rollouts")
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts compared (after one that is not)")
    parser.add_argument("--epochs", type=int, default=25, help="epochs of minibatches for (b)")
    parser.add_argument("--repeats", type=int, default=3, help="whole updates per library and rollout")
    parser.add_argument("--sequence-length", type=int, default=None, help="natrl's (default: the preset's)")
    parser.add_argument("--per-rollout", action="store_true", help="also print (d) for every rollout and draw")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, agent = build_pair(args.env, args.seed, args.pretrain, args.sequence_length)
    fresh_adam = copy.deepcopy(agent.optimizer.state_dict())
    collect(model, 1)
    results = []
    for _ in range(args.rollouts):
        collect(model, 1)
        results.append(compare_rollout(model, agent, args.epochs, args.repeats, fresh_adam))
    cfg, buf = agent.config, model.rollout_buffer
    T, E = buf.buffer_size, buf.n_envs
    bs, L = cfg.batch_size, results[0]["L"]
    print(f"{args.env}, seed {args.seed}: RecurrentPPO's rollouts 2-{args.rollouts + 1} after {args.pretrain} steps of "
          f"its learn(), weights copied into natrl PPO; {E} envs x {T} steps, batch_size {bs}, natrl sequence length "
          f"{L}, LSTM {agent.actor.core.hidden_size}")  # type: ignore[union-attr]  # fmt: skip
    print(f"natrl's GAE on the buffers' rewards and values vs their advantages: max |diff| "
          f"{max(r['gae_err'] for r in results):.1e}")  # fmt: skip

    print("\n(a) full-rollout gradient (one minibatch of all steps), relative error ||g_natrl - g_sb3|| / ||g_sb3||, "
          f"worst / mean of {args.rollouts} rollouts")  # fmt: skip
    print("| parameter | ||g_sb3|| (mean) | RecurrentPPO cut at step 0 (worst) | cut at a random step (mean) |")
    print("|---|---|---|---|")
    for name in results[0]["tensors"]:
        vals = np.array([r["tensors"][name] for r in results])
        print(f"| {name} | {vals[:, 2].mean():.2e} | {vals[:, 0].max():.1e} | {vals[:, 1].mean():.1e} |")

    def both(key: str) -> np.ndarray:
        return np.array([r["structure"][key] for r in results], dtype=float).mean(0)

    grads = np.array([r["grads"] for r in results]).mean(0)
    reach_mean = both("reach")
    print(f"\n(b) one epoch of minibatches of {bs} steps ({args.epochs} epochs per rollout, means over the rollouts)")
    print("| | natrl | RecurrentPPO |")
    print("|---|---|---|")
    n_seq = max(1, bs // L)
    print(f"| a minibatch | {n_seq} env sequence(s) of {L} steps, resets inside | {bs} consecutive steps of the "
          "env-by-env order from a random split, cut at env changes and episode starts, padded |")  # fmt: skip
    for label, key, fmt in (("segments (between episode starts / cuts) per minibatch", "segments", "{:.1f}"),
                            ("... starting mid-episode from the recorded state", "mid-episode", "{:.2f}"),
                            ("padded steps", "padded", "{:.0%}")):  # fmt: skip
        v = both(key)
        print(f"| {label} | {fmt.format(v[0])} | {fmt.format(v[1])} |")
    print(f"| steps whose gradient reaches their episode's first step | {reach_mean[0][0]:.0%} | "
          f"{reach_mean[1][0]:.0%} |")  # fmt: skip
    n_junction = sum(r["structure"]["junctions"] for r in results)
    if n_junction:
        dec = np.array([r["structure"]["reach"] for r in results if r["structure"]["junctions"]])[:, :, 1].mean(0)
        print(
            f"| junction choices whose gradient reaches the cue ({n_junction} choices) | {dec[0]:.0%} | {dec[1]:.0%} |"
        )
    for i, label in enumerate(("cos(minibatch gradient, full-rollout gradient), mean",
                               "... actor LSTM block only, mean",
                               "cos(mean minibatch gradient, full-rollout gradient)",
                               "||mean minibatch gradient - full|| / ||full||")):  # fmt: skip
        print(f"| {label} | {grads[0, i]:.3f} | {grads[1, i]:.3f} |")

    print(
        f"\n(d) one whole update ({cfg.n_epochs} epochs, Adam from a fresh state) by each library's loop from the "
        f"same weights, on the full rollout; mean over {args.rollouts} rollouts x {args.repeats} minibatch draws"
    )
    keys = list(results[0]["updates"]["before"][0])
    for r in results[1:]:
        keys = [k for k in keys if k in r["updates"]["before"][0]]
    print("| measure | before | natrl | RecurrentPPO |")
    print("|---|---|---|---|")
    for k in keys:
        cols = [np.mean([m[k] for r in results for m in r["updates"][side]])
                for side in ("before", "natrl", "RecurrentPPO")]  # fmt: skip
        sd = [np.std([m[k] for r in results for m in r["updates"][side]]) for side in ("natrl", "RecurrentPPO")]
        print(f"| {k} | {cols[0]:.4g} | {cols[1]:.4g} ± {sd[0]:.2g} | {cols[2]:.4g} ± {sd[1]:.2g} |")

    if args.per_rollout:
        for i, r in enumerate(results):
            for k in r["updates"]["before"][0]:
                draws = {
                    side: " ".join(f"{m[k]:.4g}" for m in r["updates"][side]) for side in ("natrl", "RecurrentPPO")
                }
                print(f"rollout {i + 2}, {k}: before {r['updates']['before'][0][k]:.4g}; natrl {draws['natrl']}; "
                      f"RecurrentPPO {draws['RecurrentPPO']}")  # fmt: skip
    dist = np.array([r["distance"] for r in results])
    print(f"\n(e) one whole update ({cfg.n_epochs} epochs) with one minibatch of all steps on both sides, from "
          "the same weights: ||theta_natrl - theta_sb3|| / ||theta_natrl - theta_0||; RecurrentPPO's minibatch "
          f"not cut (worst of {args.rollouts} rollouts): {dist[:, 0].max():.1e}; cut at a random step (mean, "
          f"min-max of {dist[:, 1:].size}): {dist[:, 1:].mean():.1e}, "
          f"{dist[:, 1:].min():.1e} to {dist[:, 1:].max():.1e}")  # fmt: skip

    print("\n(c) the update's settings")
    print("| setting | natrl | RecurrentPPO |")
    print("|---|---|---|")
    rows = [
        ("advantage normalisation", f"{cfg.normalize_advantage}, per minibatch (its rows)",
         f"{model.normalize_advantage}, per minibatch (its unpadded steps)"),
        ("clip range", f"{cfg.clip_range}", f"{model.clip_range(1.0)} at the start"),
        ("value clipping", f"{cfg.clip_range_vf}", f"{model.clip_range_vf}"),
        ("value loss", f"{cfg.vf_coef} x mean (V - R)^2", f"{model.vf_coef} x mean (V - R)^2 over unpadded steps"),
        ("entropy coefficient", f"{cfg.ent_coef}", f"{model.ent_coef}"),
        ("gradient-norm clip", f"{cfg.max_grad_norm}, all parameters", f"{model.max_grad_norm}, all parameters"),
        ("Adam eps", f"{agent.optimizer.param_groups[0]['eps']}", f"{model.policy.optimizer.defaults['eps']}"),
        ("learning rate at the start", f"{agent.scheduled('learning_rate')}", f"{model.lr_schedule(1.0)}"),
        ("target_kl", f"{cfg.target_kl}", f"{model.target_kl}"),
        ("epochs x minibatches", f"{cfg.n_epochs} x {math.ceil(E * T / L / n_seq)}",
         f"{model.n_epochs} x {math.ceil(E * T / bs)}"),
    ]  # fmt: skip
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

"""Recurrent policies: the LSTM/GRU core against torch's modules, the exact Fisher through time against a
dense reference computed with torch's own LSTM, rollouts cut into sequences, predict with state, bad input."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from natrl import ACKTR, NPG, PPO, TRPO
from natrl.curvature import fisher_vp, to_dense
from natrl.params import flatten
from natrl.rl.batch import Batch, Sequences
from natrl.rl.natural import PolicyObjective
from natrl.rl.policies import PolicyError, build_policy
from natrl.rl.policies.recurrent import RecurrentCore
from natrl.rl.pomdp import MaskVelocity


def _torch_rnn(core: RecurrentCore, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's own nn.LSTM / nn.GRU forward from a natrl state (B, k, layers, H)."""
    if core.kind == "lstm":
        y, (h, c) = core.rnn(x, (state[:, 0].transpose(0, 1).contiguous(), state[:, 1].transpose(0, 1).contiguous()))
        return y, torch.stack((h.transpose(0, 1), c.transpose(0, 1)), 1)
    y, h = core.rnn(x, state[:, 0].transpose(0, 1).contiguous())
    return y, h.transpose(0, 1).unsqueeze(1)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_core_equals_torch_module_and_resets_split_sequences(kind: str) -> None:
    torch.manual_seed(0)
    core = RecurrentCore(3, 5, num_layers=2, kind=kind)
    x = torch.randn(4, 9, 3)
    state = torch.randn(4, *core.state_shape)
    no_starts = torch.zeros(4, 9, dtype=torch.bool)
    y, final = core(x, no_starts, state)
    y_ref, final_ref = _torch_rnn(core, x, state)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-12)
    # an episode start at step 4 of sequence 1: its steps 4..8 are a new sequence from the zero state
    starts = no_starts.clone()
    starts[1, 4] = True
    y2, _ = core(x, starts, state)
    head, _ = _torch_rnn(core, x[1:2, :4], state[1:2])
    tail, _ = _torch_rnn(core, x[1:2, 4:], torch.zeros_like(state[1:2]))
    torch.testing.assert_close(y2[1:2], torch.cat([head, tail], 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(y2[[0, 2, 3]], y[[0, 2, 3]], rtol=0, atol=1e-12)
    # states before every step: index t is the state entering step t, the last the final state
    _, states = core(x, starts, state, return_states=True)
    assert states.shape == (4, 10, *core.state_shape)
    torch.testing.assert_close(states[:, 0], state, rtol=0, atol=0)
    _, mid = core(x[:, :4], starts[:, :4], state)
    torch.testing.assert_close(states[:, 4], mid, rtol=0, atol=1e-12)


def _reference_outputs(actor: nn.Module, params: dict[str, torch.Tensor], obs, starts, state) -> tuple:
    """The actor's outputs per step computed with torch's nn.LSTM on the segments between episode starts."""
    core = actor.core
    outs = []
    for s in range(obs.shape[0]):
        h = state[s : s + 1]
        cuts = [0, *[t for t in range(1, obs.shape[1]) if starts[s, t]], obs.shape[1]]
        pieces = []
        for a, b in itertools.pairwise(cuts):
            h0 = torch.zeros_like(h) if starts[s, a] else h
            rnn_params = {k[len("core.rnn.") :]: v for k, v in params.items() if k.startswith("core.rnn.")}
            x = obs[s : s + 1, a:b]
            if core.kind == "lstm":
                hc = (h0[:, 0].transpose(0, 1).contiguous(), h0[:, 1].transpose(0, 1).contiguous())
                y, _ = functional_call(core.rnn, rnn_params, (x, hc))
            else:
                y, _ = functional_call(core.rnn, rnn_params, (x, h0[:, 0].transpose(0, 1).contiguous()))
            pieces.append(y)
        outs.append(torch.cat(pieces, 1))
    y = torch.cat(outs)
    net_params = {k[len("net.") :]: v for k, v in params.items() if k.startswith("net.")}
    z = functional_call(actor.net, net_params, (y,))
    if actor.free_log_std:
        return z.flatten(0, 1), params["log_std"].expand(z.shape[0] * z.shape[1], -1)
    return (z.flatten(0, 1),)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("env_id", "kind"), [("CartPole-v1", "lstm"), ("Pendulum-v1", "lstm"), ("CartPole-v1", "gru")])
def test_exact_fisher_through_time_equals_dense_kl_hessian(env_id: str, kind: str) -> None:
    """F v of a tiny recurrent policy over sequences with episode starts inside them equals the dense Hessian of
    the mean KL at θ_old, computed through torch's nn.LSTM/GRU run segment by segment (< 1e-6)."""
    torch.manual_seed(1)
    env = gym.make(env_id)
    policy = "MlpLstmPolicy" if kind == "lstm" else "MlpGruPolicy"
    actor, _ = build_policy(
        policy,
        dict(lstm_hidden_size=3, net_arch=[4]),
        env.observation_space,
        env.action_space,
        log_std_init=-0.3,
    )
    S, L = 3, 5
    obs = torch.randn(S * L, env.observation_space.shape[0])
    starts = torch.zeros(S, L, dtype=torch.bool)
    starts[0, 2] = starts[1, 0] = starts[2, 3] = True  # episode boundaries inside and at the head of sequences
    actor_state = torch.randn(S, *actor.core.state_shape) * 0.5
    with torch.no_grad():
        dist = actor.distribution(obs.unflatten(0, (S, L)), starts, actor_state)
        actions = dist.sample()
    seq = Sequences(L, starts, actor_state, torch.zeros(S, 1))
    n = S * L
    batch = Batch(obs, actions, dist.log_prob(actions), torch.zeros(n), torch.randn(n), torch.zeros(n), seq=seq)
    objective = PolicyObjective(actor, batch)
    theta0 = objective.theta()
    fvp = fisher_vp(objective.model_fn, theta0, objective.inputs, objective.output_fisher())
    dense = to_dense(fvp, theta0.numel(), dtype=theta0.dtype, device=theta0.device)

    names = [k for k, _ in actor.named_parameters()]
    shapes = [p.shape for p in actor.parameters()]

    def mean_kl(theta: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, [t.view(s) for t, s in zip(theta.split([s.numel() for s in shapes]), shapes)]))
        new = actor.dist_cls(*_reference_outputs(actor, params, obs.unflatten(0, (S, L)), starts, actor_state))
        return objective.old_dist.kl(new).mean()

    reference = torch.autograd.functional.hessian(mean_kl, theta0.clone())
    assert torch.allclose(dense, dense.T, atol=1e-12)
    err = (dense - reference).abs().max() / reference.abs().max()
    assert err < 1e-6, f"relative error {err:.2e}"
    # the recurrent weights' block is not zero: the Fisher goes through time
    rnn_rows = [i for i, (k, p) in enumerate(actor.named_parameters()) if k.startswith("core.")]
    assert rnn_rows and float(dense[: shapes[0].numel(), : shapes[0].numel()].abs().max()) > 1e-6
    assert flatten(actor.parameters()).equal(theta0)


def _agent(cls=PPO, **kw):
    base = dict(
        policy="MlpLstmPolicy",
        policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8]),
        n_envs=3,
        n_steps=40,
        sequence_length=8,
        seed=0,
    )
    return cls("CartPole-v1", **{**base, **kw})


def test_batch_sequences_reproduce_rollout_log_probs_values_and_step_by_step_sampling() -> None:
    agent = _agent()
    agent._make_batch()  # a second rollout starts from carried states: the interesting case
    batch, _ = agent._make_batch()
    seq = batch.seq
    assert seq is not None and len(seq) == 3 * 40 // 8 and seq.length == 8
    with torch.no_grad():
        lp = agent.actor.distribution(*batch.actor_inputs()).log_prob(batch.actions)
        v = agent.critic(*batch.critic_inputs()).flatten()
    # each sequence recomputed from its recorded state gives the rollout's values (one pass per env)
    torch.testing.assert_close(lp, batch.log_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(v, batch.values, rtol=0, atol=1e-5)
    # env 0's rows, replayed one step at a time with actor.step from the state entering the rollout
    rows = slice(0, 40)
    starts = seq.starts[:5].flatten()
    state = seq.actor_state[0:1]
    replay = []
    with torch.no_grad():
        for t in range(40):
            dist, state = agent.actor.step(batch.obs[rows][t : t + 1], state, starts[t : t + 1])
            replay.append(dist.log_prob(batch.actions[rows][t : t + 1]))
    torch.testing.assert_close(torch.cat(replay), batch.log_probs[rows], rtol=0, atol=1e-5)
    # episode starts sit right after the episode ends of the rollout
    assert bool(seq.starts.any())


@pytest.mark.parametrize("cls", [TRPO, NPG, PPO])
def test_recurrent_update_changes_policy_and_keeps_parameters_finite(cls) -> None:
    agent = _agent(cls)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(240)
    after = list(agent.policy.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in after)
    core = [n for n, p in agent.actor.named_parameters() if n.startswith("core.")]
    assert core and any(not a.equal(b) for a, b in zip(after, before))
    assert agent.num_updates == 2


def test_predict_carries_state_like_the_sequence_forward() -> None:
    agent = _agent()
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, 2, 4)).astype(np.float32)  # 6 steps of 2 envs
    state = None
    for t in range(6):
        _, state = agent.predict(obs[t], state, episode_start=np.array([t == 0, t == 3]))
    assert isinstance(state, tuple) and len(state) == 2 and state[0].shape == (1, 2, 8)
    starts = torch.zeros(2, 6, dtype=torch.bool)
    starts[0, 0] = starts[1, 3] = True
    with torch.no_grad():
        _, final = agent.actor.core_of(
            agent.actor.sequence_features(torch.from_numpy(obs).transpose(0, 1)), starts, agent.actor.initial_state(2)
        )
    np.testing.assert_allclose(state[0], final[:, 0].transpose(0, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(state[1], final[:, 1].transpose(0, 1).numpy(), atol=1e-6)
    # one observation: a state of batch 1; None is the zero state of a new episode
    action, s1 = agent.predict(obs[0, 0], deterministic=True)
    action0, s0 = agent.predict(obs[0, 0], tuple(np.zeros_like(x[:, :1]) for x in state), deterministic=True)
    assert action == action0 and np.array_equal(s1[0], s0[0])
    with pytest.raises(ValueError, match=r"the state must be \(h, c\)"):
        agent.predict(obs[0], (state[0],))
    with pytest.raises(ValueError, match="episode_start has 3 entries"):
        agent.predict(obs[0], state, episode_start=[True, False, True])


def test_recurrent_agent_saves_loads_and_evaluates(tmp_path) -> None:
    agent = _agent(TRPO, policy="MlpGruPolicy")
    agent.learn(120)
    path = agent.save(tmp_path / "model.pt")
    loaded = TRPO.load(path)
    assert loaded.policy_name == "MlpGruPolicy" and loaded.actor.core.kind == "gru"
    obs = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    a1, s1 = agent.predict(obs, deterministic=True)
    a2, s2 = loaded.predict(obs, deterministic=True)
    assert np.array_equal(a1, a2) and np.array_equal(s1[0], s2[0])
    assert agent.evaluate(2).mean == loaded.evaluate(2).mean


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="critic_optimizer='kfac' takes a critic without memory"):
        ACKTR("CartPole-v1", policy="MlpLstmPolicy", critic_optimizer="kfac")
    with pytest.raises(PolicyError, match="lstm_\\* keys need a recurrent policy"):
        PPO("CartPole-v1", policy_kwargs=dict(lstm_hidden_size=32))
    with pytest.raises(PolicyError, match="enable_critic_lstm=False is not supported"):
        PPO("CartPole-v1", policy="MlpLstmPolicy", policy_kwargs=dict(enable_critic_lstm=False))
    with pytest.raises(PolicyError, match="shared_lstm=True needs the features extractor shared"):
        PPO("CartPole-v1", policy="MlpLstmPolicy", policy_kwargs=dict(shared_lstm=True, share_features_extractor=False))
    with pytest.raises(PolicyError, match="lstm_hidden_size must be a positive integer"):
        PPO("CartPole-v1", policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=0))
    with pytest.raises(ValueError, match=r"sequence_length=7.*divides n_steps=64"):
        PPO("CartPole-v1", policy="MlpLstmPolicy", n_steps=64, sequence_length=7)
    with pytest.raises(PolicyError, match="'CnnLstmPolicy' needs image observations"):
        PPO("CartPole-v1", policy="CnnLstmPolicy")


def test_mask_velocity_hides_exactly_the_velocities() -> None:
    full, masked = gym.make("CartPole-v1"), gym.make("CartPoleNoVel-v1")
    o1, _ = full.reset(seed=3)
    o2, _ = masked.reset(seed=3)
    for _ in range(5):
        assert np.array_equal(o2[[0, 2]], o1[[0, 2]]) and not o2[[1, 3]].any()
        o1, *_ = full.step(1)
        o2, *_ = masked.step(1)
    assert masked.observation_space == full.observation_space and masked.spec.max_episode_steps == 500
    p, _ = gym.make("PendulumNoVel-v1").reset(seed=0)
    assert p[2] == 0 and p[0] != 0
    with pytest.raises(ValueError, match="MaskVelocity knows the velocities of"):
        MaskVelocity(gym.make("Acrobot-v1"))


@pytest.mark.parametrize("cls", [TRPO, PPO])
def test_shared_lstm_is_one_core_trained_by_the_policy_step_in_trpo(cls) -> None:
    agent = _agent(cls, policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8], shared_lstm=True))
    assert agent.actor.core is agent.critic.core
    names = [n for n, _ in agent.policy.named_parameters()]
    assert sum(n.startswith("actor.core.") for n in names) == 4 and not any(n.startswith("critic.core.") for n in names)
    if cls is TRPO:  # the critic's regression moves its own head only; the shared core moves with the trust region
        own = {id(p) for p in agent.critic_optimizer.param_groups[0]["params"]}
        assert not any(id(p) in own for p in agent.actor.core.parameters())
    agent.learn(240)
    batch, _ = agent._make_batch()
    torch.testing.assert_close(batch.seq.critic_state, batch.seq.actor_state, rtol=0, atol=1e-5)


def test_cnn_lstm_policy_on_image_observations() -> None:
    from toy_envs import ImageObservations

    agent = PPO(
        ImageObservations,
        policy="CnnLstmPolicy",
        policy_kwargs=dict(lstm_hidden_size=16, net_arch=[16]),
        n_envs=2,
        n_steps=16,
        sequence_length=8,
        batch_size=16,
        n_epochs=1,
    )
    assert agent.actor.features is agent.critic.features and agent.actor.core is not agent.critic.core
    agent.learn(64)
    batch, _ = agent._make_batch()
    assert batch.obs.dtype == torch.uint8 and batch.seq.actor_state.shape == (4, 2, 1, 16)
    with torch.no_grad():
        lp = agent.actor.distribution(*batch.actor_inputs()).log_prob(batch.actions)
    torch.testing.assert_close(lp, batch.log_probs, rtol=0, atol=1e-5)


def test_tmaze_rewards_the_cued_arm_only_at_the_junction() -> None:
    env = gym.make("TMaze-v0")
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        up = bool(obs[0])
        assert obs[0] + obs[1] == 1 and obs[2] == 0
        obs, r, term, trunc, _ = env.step(2)  # up/down do nothing outside the junction
        assert (r, term) == (-0.01, False) and obs[0] + obs[1] == 1
        for _ in range(10):
            obs, r, term, trunc, _ = env.step(0)
        assert obs[2] == 1 and not term
        _, r, term, _, _ = env.step(2 if up else 3)
        assert term and r == pytest.approx(0.99)
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        env.step(0)
    _, r, term, _, _ = env.step(3 if obs[0] else 2)
    assert term and r == pytest.approx(-1.01)
    env.reset(seed=0)
    for _ in range(40):
        _, _, term, trunc, _ = env.step(1)
    assert trunc and not term


def test_log_probs_values_and_entropy_equal_sb3_contrib_recurrent_policy() -> None:
    """natrl's recurrent actor and critic, given sb3-contrib RecurrentPPO's weights, compute the same log-probs,
    values and entropies on sequences with episode starts inside them (sb3-contrib's evaluate_actions)."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    torch.manual_seed(0)
    env = gym.make("CartPole-v1")
    model = sb3_contrib.RecurrentPPO(
        "MlpLstmPolicy",
        env,
        policy_kwargs=dict(lstm_hidden_size=8, net_arch=dict(pi=[16], vf=[16]), ortho_init=True),
        device="cpu",
        seed=0,
    )
    pol = model.policy
    agent = PPO("CartPole-v1", policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=8, net_arch=[16]))
    actor, critic = agent.actor, agent.critic
    with torch.no_grad():
        actor.core.rnn.load_state_dict(pol.lstm_actor.state_dict())
        critic.core.rnn.load_state_dict(pol.lstm_critic.state_dict())
        actor.net[0].load_state_dict(pol.mlp_extractor.policy_net[0].state_dict())
        actor.net[2].load_state_dict(pol.action_net.state_dict())
        critic.net[0].load_state_dict(pol.mlp_extractor.value_net[0].state_dict())
        critic.net[2].load_state_dict(pol.value_net.state_dict())
    S, L = 3, 7
    obs = torch.randn(S, L, 4)
    starts = torch.zeros(S, L, dtype=torch.bool)
    starts[0, 0] = starts[1, 4] = starts[2, 2] = True
    actions = torch.randint(0, 2, (S, L))
    state_pi = torch.randn(S, 2, 1, 8) * 0.5
    state_vf = torch.randn(S, 2, 1, 8) * 0.5

    def sb3_state(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return state[:, 0].transpose(0, 1).contiguous(), state[:, 1].transpose(0, 1).contiguous()

    with torch.no_grad():
        values, log_prob, entropy = pol.evaluate_actions(
            obs.flatten(0, 1),
            actions.flatten(),
            RNNStates(sb3_state(state_pi), sb3_state(state_vf)),
            starts.flatten().float(),
        )
        dist = actor.distribution(obs, starts, state_pi)
        v = critic(obs, starts, state_vf).flatten()
    torch.testing.assert_close(dist.log_prob(actions.flatten()), log_prob, rtol=0, atol=1e-5)
    torch.testing.assert_close(dist.entropy(), entropy, rtol=0, atol=1e-5)
    torch.testing.assert_close(v, values.flatten(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_forget_bias_is_added_to_torchs_initialisation_of_every_forget_gate(layers: int) -> None:
    """policy_kwargs lstm_forget_bias=b: with the same seed, every LSTM layer's forget-gate bias (the second
    quarter of bias_hh, torch's gate order i, f, g, o) is b above the one without it; every other parameter of
    actor and critic is equal bit for bit, and the gate it feeds is sigmoid(b + torch's bias) at zero input."""
    kwargs = dict(lstm_hidden_size=8, n_lstm_layers=layers, net_arch=[16])
    plain = PPO("CartPole-v1", policy="MlpLstmPolicy", policy_kwargs=kwargs, seed=4)
    biased = PPO("CartPole-v1", policy="MlpLstmPolicy", policy_kwargs={**kwargs, "lstm_forget_bias": 1.5}, seed=4)
    for net in ("actor", "critic"):
        a, b = getattr(plain, net).state_dict(), getattr(biased, net).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            expected = a[key].clone()
            if key.split(".")[-1].startswith("bias_hh_l"):
                expected[8:16] += 1.5
            assert torch.equal(b[key], expected), key
    rnn = biased.actor.core.rnn
    with torch.no_grad():
        gates = rnn.bias_ih_l0 + rnn.bias_hh_l0  # zero input and zero state: the pre-activations are the biases
        base = plain.actor.core.rnn.bias_ih_l0 + plain.actor.core.rnn.bias_hh_l0
    torch.testing.assert_close(torch.sigmoid(gates[8:16]), torch.sigmoid(base[8:16] + 1.5))


@pytest.mark.parametrize(
    ("policy", "value", "match"),
    [
        ("MlpGruPolicy", 1.0, "GRU has no forget gate"),
        ("MlpLstmPolicy", float("inf"), "finite number"),
        ("MlpLstmPolicy", True, "finite number"),
    ],
)
def test_lstm_forget_bias_refuses_a_gru_and_a_non_finite_value(policy: str, value: object, match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        PPO("CartPole-v1", policy=policy, policy_kwargs=dict(lstm_forget_bias=value))

"""The policy seam: policy_kwargs, the user's own modules, every space, save/load, clear errors at
construction, observation storage, and the fast paths against the generic path they replace."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
import toy_envs as T
from torch import nn

from natrl import A2C, ACKTR, NPG, PPO, TRPO
from natrl.params import flatten
from natrl.rl import CheckpointError, PolicyError
from natrl.rl.accel import fast_paths, numpy_sampler
from natrl.rl.policies import CombinedExtractor, FlattenExtractor, NatureCNN
from natrl.rl.rollout import torch_sampler

SMALL = {"n_envs": 2, "n_steps": 32, "critic_epochs": 1}
ALGOS = [TRPO, NPG, PPO, ACKTR, A2C]


def _small(cls):
    if cls is A2C:  # one joint step per rollout: no critic_* settings, no minibatches
        return {"n_envs": 2, "n_steps": 32}
    if cls is PPO:  # PPO's critic is trained in its joint loss: no critic_* settings
        return {"n_envs": 2, "n_steps": 32, "batch_size": 32}
    return dict(SMALL)


# --------------------------------------------------------------------------- policy_kwargs


def test_policy_kwargs_net_arch_activation_and_separate_extractors() -> None:
    agent = PPO(
        "CartPole-v1",
        policy_kwargs={
            "net_arch": {"pi": [32], "vf": [16, 8]},
            "activation_fn": nn.SiLU,
            "share_features_extractor": False,
            "log_std_init": -1.0,
            "ortho_init": False,
        },
        **_small(PPO),
    )
    linears = [m for m in agent.actor.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 32), (32, 2)]
    linears = [m for m in agent.critic.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 16), (16, 8), (8, 1)]
    assert isinstance(agent.actor.net[1], nn.SiLU)
    assert agent.actor.features is not agent.critic.features
    assert agent.fast.ppo_grads is None and agent.fast.sampler is None  # SiLU: the generic path
    pend = TRPO("Pendulum-v1", policy_kwargs={"log_std_init": -1.0, "net_arch": [8]}, **SMALL)
    assert torch.equal(pend.actor.log_std.detach(), torch.full((1,), -1.0))


class _Features(nn.Module):
    def __init__(self, observation_space, features_dim: int = 16) -> None:
        super().__init__()
        self.linear = nn.Linear(int(np.prod(observation_space.shape)), features_dim)

    def forward(self, x):
        return torch.relu(self.linear(x.flatten(1)))


def test_features_extractor_class_is_shared_by_default_and_trained_once(tmp_path) -> None:
    kwargs = {"features_extractor_class": _Features, "features_extractor_kwargs": {"features_dim": 12}}
    agent = PPO("CartPole-v1", policy_kwargs=kwargs, **_small(PPO))
    assert agent.actor.features is agent.critic.features
    assert agent.actor.net[0].in_features == 12
    ids = [id(p) for p in agent.params]
    assert len(ids) == len(set(ids))  # the shared extractor's parameters are optimised once
    before = agent.actor.features.linear.weight.detach().clone()
    agent.learn(64)
    assert not torch.equal(before, agent.actor.features.linear.weight)
    # the class is the user's: loading needs it again, and says so
    path = agent.save(tmp_path / "m.pt")
    with pytest.raises(PolicyError, match="features_extractor_class"):
        PPO.load(path)
    loaded = PPO.load(path, policy_kwargs={"features_extractor_class": _Features})
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])


def test_builtin_policy_with_torch_activation_reloads_from_the_checkpoint_alone(tmp_path) -> None:
    agent = TRPO("Pendulum-v1", policy_kwargs={"activation_fn": nn.SiLU, "net_arch": [16, 16]}, **SMALL)
    agent.learn(64)
    loaded = TRPO.load(agent.save(tmp_path / "m.pt"))
    assert isinstance(loaded.actor.net[1], nn.SiLU)
    obs = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])


# --------------------------------------------------------------------------- the user's own modules


@pytest.mark.parametrize("cls", ALGOS)
def test_shared_trunk_module_updates_and_reloads_with_equal_actions(cls, tmp_path) -> None:
    torch.manual_seed(0)
    module = T.LayerNormSiLUActorCritic(4, 2)
    agent = cls("CartPole-v1", seed=0, policy=module, **_small(cls))
    assert not agent.fast.active  # a user's network takes the generic path
    assert agent.actor.net.module is module and agent.critic.net.module is module
    before = flatten(module.parameters()).detach().clone()
    agent.learn(128)
    after = flatten(module.parameters()).detach()
    assert not torch.equal(before, after) and bool(torch.isfinite(after).all())
    path = agent.save(tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="pass them again"):
        cls.load(path)
    loaded = cls.load(path, policy=T.LayerNormSiLUActorCritic(4, 2))
    obs = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    if cls in (PPO, A2C):
        assert len({id(p) for p in agent.params}) == len(list(module.parameters()))


def test_smoke_separate_actor_and_critic_modules() -> None:
    actor = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1))
    critic = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1))
    agent = NPG("Pendulum-v1", policy=(actor, critic), **SMALL)
    assert "log_std" in [n for n, _ in agent.actor.named_parameters()]  # natrl adds the free log-std
    agent.learn(64)


# --------------------------------------------------------------------------- bad input, at construction


def test_bad_policies_are_one_clear_line_at_construction() -> None:
    with pytest.raises(ValueError, match=r"output has shape \(2, 3\).*Discrete\(2\) needs \(batch, 2\): 2 logits"):
        TRPO("CartPole-v1", policy=(nn.Linear(4, 3), nn.Linear(4, 1)))
    with pytest.raises(ValueError, match=r"critic network's output has shape \(2, 2\)"):
        TRPO("CartPole-v1", policy=(nn.Linear(4, 2), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"actor network failed on a sample observation"):
        PPO("CartPole-v1", policy=(nn.Linear(5, 2), nn.Linear(4, 1)))
    with pytest.raises(TypeError, match=r"the actor network must be a torch\.nn\.Module, got function"):
        PPO("CartPole-v1", policy=(lambda x: x, nn.Linear(4, 1)))
    with pytest.raises(TypeError, match="policy must be a built-in name"):
        PPO("CartPole-v1", policy=42)
    with pytest.raises(PolicyError, match="unknown policy 'MlpPolicyy'"):
        PPO("CartPole-v1", policy="MlpPolicyy")
    with pytest.raises(PolicyError, match=r"unknown policy_kwargs key 'net_archh'; valid keys: net_arch"):
        PPO("CartPole-v1", policy_kwargs={"net_archh": [64]})
    with pytest.raises(PolicyError, match=r"'optimizer_kwargs'.*build their own optimisers.*drop these keys\)$"):
        PPO("CartPole-v1", policy_kwargs={"optimizer_kwargs": {"eps": 1e-5}})  # an SB3/rl-zoo key
    with pytest.raises(PolicyError, match="net_arch must be a list of positive integers"):
        PPO("CartPole-v1", policy_kwargs={"net_arch": [64, -1]})
    with pytest.raises(PolicyError, match=r"activation_fn must be an nn\.Module class"):
        PPO("CartPole-v1", policy_kwargs={"activation_fn": torch.tanh})
    with pytest.raises(PolicyError, match="policy_kwargs apply to the built-in policies"):
        PPO("CartPole-v1", policy=T.LayerNormSiLUActorCritic(4, 2), policy_kwargs={"net_arch": [8]})
    with pytest.raises(PolicyError, match="'CnnPolicy' needs image observations"):
        PPO("CartPole-v1", policy="CnnPolicy")
    with pytest.raises(ValueError, match="normalize_obs=True needs a float Box observation space"):
        PPO(T.DiscreteObservations, normalize_obs=True)


# --------------------------------------------------------------------------- every space


SPACE_ENVS = [
    T.MultiDiscreteActions,
    T.MultiBinaryActions,
    T.Box2DActions,
    T.DictObservations,
    T.DiscreteObservations,
    T.MatrixObservations,
]


@pytest.mark.parametrize("cls", ALGOS)
@pytest.mark.parametrize("env", SPACE_ENVS, ids=lambda e: e.__name__)
def test_smoke_every_space_every_algorithm(cls, env, tmp_path) -> None:
    """Smoke test: one short learn, predict on one and on a batch of observations, save and reload."""
    agent = cls(env, seed=0, **_small(cls))
    agent.learn(64)
    probe = env()
    single, _ = probe.reset(seed=0)
    action = agent.predict(single, deterministic=True)[0]
    assert agent.action_space.contains(np.asarray(action, dtype=agent.action_space.dtype)), action
    batch = [probe.reset(seed=i)[0] for i in range(3)]
    stacked = {k: np.stack([b[k] for b in batch]) for k in batch[0]} if isinstance(batch[0], dict) else np.stack(batch)
    assert len(agent.predict(stacked, deterministic=True)[0]) == 3
    loaded = cls.load(agent.save(tmp_path / "m.pt"), env=env)
    np.testing.assert_array_equal(
        loaded.predict(stacked, deterministic=True)[0], agent.predict(stacked, deterministic=True)[0]
    )
    assert bool(torch.isfinite(flatten(agent.actor.parameters())).all())


@pytest.mark.slow
@pytest.mark.parametrize("cls", [TRPO, PPO])
@pytest.mark.parametrize("env", SPACE_ENVS, ids=lambda e: e.__name__)
def test_each_space_learns_its_task(cls, env) -> None:
    """A threshold halfway from a random policy's return to the optimum, within 20k steps."""
    kwargs = {"n_envs": 4, "n_steps": 64, "gamma": 0.9, **({"batch_size": 64} if cls is PPO else {})}
    agent = cls(env, seed=0, **kwargs).learn(20_000)
    score = agent.evaluate(episodes=20).mean
    threshold = 0.5 * (T.RANDOM[env] + T.OPTIMAL[env])
    assert score >= threshold, f"{cls.__name__} on {env.__name__}: {score:.2f} < {threshold:.2f}"


# --------------------------------------------------------------------------- storage


def test_uint8_images_stay_uint8_in_the_rollout_and_go_through_a_cnn() -> None:
    agent = PPO(T.ImageObservations, n_envs=2, n_steps=16, batch_size=16)
    assert isinstance(agent.actor.features, NatureCNN) and agent.actor.features is agent.critic.features
    batch, _ = agent._make_batch()
    assert batch.obs.dtype == torch.uint8 and tuple(batch.obs.shape) == (32, 36, 36, 1)
    # scaled by 1/255 inside the network, per batch
    x = agent.actor.obs_codec.preprocess(batch.obs)
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0


def test_discrete_and_dict_observations_are_stored_compactly() -> None:
    agent = TRPO(T.DiscreteObservations, **SMALL)
    batch, _ = agent._make_batch()
    assert batch.obs.dtype == torch.int64 and batch.obs.shape == (64,)
    assert isinstance(agent.actor.features, FlattenExtractor)
    onehot = agent.actor.obs_codec.preprocess(batch.obs)
    assert torch.equal(onehot.argmax(-1), batch.obs) and onehot.shape == (64, 5)
    agent = TRPO(T.DictObservations, **SMALL)
    batch, _ = agent._make_batch()
    assert batch.obs.shape == (64, 3)  # goal index + 2 floats
    fed = agent.actor.obs_codec.preprocess(batch.obs)
    assert set(fed) == {"goal", "shift"} and fed["goal"].shape == (64, 4) and fed["shift"].shape == (64, 2)
    assert isinstance(agent.actor.features, CombinedExtractor)


# --------------------------------------------------------------------------- fast paths vs generic


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_numpy_sampler_draws_from_the_actors_distribution(env_id: str, state_dependent_std: bool) -> None:
    agent = TRPO(env_id, state_dependent_std=state_dependent_std, **SMALL)
    if agent.actor.discrete and state_dependent_std:
        pytest.skip("no std for categorical policies")
    rng = np.random.default_rng(5)
    sample = numpy_sampler(agent.actor, copy.deepcopy(rng))
    assert sample is not None
    obs = np.random.default_rng(0).normal(size=(6, agent.observation_space.shape[0])).astype(np.float32)
    got = sample(obs.copy())
    dist = agent.actor.distribution(torch.from_numpy(obs))
    if agent.actor.discrete:
        expected = (dist.logits.detach().numpy() + rng.gumbel(size=(6, 2))).argmax(-1)
        np.testing.assert_array_equal(got, expected)
    else:
        noise = rng.standard_normal((6, 1), dtype=np.float32)
        expected = dist.mean.detach().numpy() + dist.std.detach().numpy() * noise
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_torch_sampler_is_the_distributions_sample() -> None:
    agent = PPO("Pendulum-v1", **_small(PPO))
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    got = torch_sampler(agent.actor, g1)(obs)
    with torch.no_grad():
        ref = agent.actor.distribution(torch.from_numpy(obs)).sample(g2).numpy()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("cls", [TRPO, NPG, ACKTR])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_fast_update_equals_the_generic_update_on_the_same_batch(cls, env_id: str) -> None:
    """The hand-written critic backward (and everything else chosen at setup) against autograd."""
    batch, _ = cls(env_id, seed=0, **SMALL)._make_batch()

    def update(fast: bool) -> torch.Tensor:
        agent = cls(env_id, seed=0, fast_paths=fast, **{**SMALL, "critic_epochs": 3})
        assert (agent.fast.critic_grads is not None) == fast
        agent._update(copy.deepcopy(batch))
        return flatten([*agent.actor.parameters(), *agent.critic.parameters()]).detach()

    fast, ref = update(True), update(False)
    assert float((fast - ref).abs().max() / ref.abs().max()) < 1e-5


def test_fast_paths_apply_only_to_natrls_mlps_on_flat_observations() -> None:
    assert TRPO("CartPole-v1", **SMALL).fast.active == ("sampler", "critic_grads", "ppo_grads")
    assert PPO("CartPole-v1", fast_paths=False, **_small(PPO)).fast.active == ()
    assert TRPO(T.MatrixObservations, **SMALL).fast.active == ()  # (2, 3) observations
    assert TRPO(T.MultiDiscreteActions, **SMALL).fast.active == ("critic_grads",)  # no closed form for the head
    gelu = TRPO("CartPole-v1", activation="gelu", **SMALL)
    assert gelu.fast.active == ("sampler",)  # the NumPy sampler runs GELU; the backward does not
    assert fast_paths(gelu.actor, gelu.critic, gelu.rng, enabled=False).active == ()


@pytest.mark.parametrize("device", ["sampler", "critic_grads", "ppo_grads"])
def test_each_device_flag_turns_off_that_device_alone(device: str) -> None:
    agent = PPO("CartPole-v1", **_small(PPO))
    all_on = fast_paths(agent.actor, agent.critic, agent.rng)
    one_off = fast_paths(agent.actor, agent.critic, agent.rng, **{device: False})
    assert all_on.active == ("sampler", "critic_grads", "ppo_grads")
    assert one_off.active == tuple(n for n in all_on.active if n != device)


def test_reset_observation_is_checked_for_nan() -> None:
    class NaNReset(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return np.array([np.nan, 0.0], np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 0.0, False, False, {}

    from natrl.rl import NonFiniteError

    agent = TRPO(NaNReset, **SMALL)
    with pytest.raises(NonFiniteError, match="non-finite observation at step 0"):
        agent.learn(64)


CUSTOM_CASES = [("trpo", {"damping": 0.01}), ("npg", {}), ("ppo", {}), ("acktr", {})]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("algo", "overrides"), CUSTOM_CASES, ids=[a for a, _ in CUSTOM_CASES])
def test_shared_layernorm_silu_module_learns_cartpole(algo: str, overrides: dict) -> None:
    """A user's LayerNorm + SiLU network with a shared trunk reaches 475 on CartPole-v1 within 100k steps
    (the CartPole preset; TRPO with damping 0.01, since LayerNorm's scale invariance leaves the Fisher
    singular in some directions and the preset's 0.001 lets the step grow along them)."""
    from natrl.presets import load_preset
    from natrl.rl import AGENTS

    cls = AGENTS[algo]
    preset = load_preset(algo, "CartPole-v1", cls.config_cls)
    torch.manual_seed(0)
    agent = cls("CartPole-v1", seed=0, policy=T.LayerNormSiLUActorCritic(4, 2),
                **{**preset.hyperparameters, **overrides})  # fmt: skip
    evaluations: list[float] = []

    def evaluate(a, stats) -> None:
        if a.num_timesteps // 10_000 > len(evaluations):
            evaluations.append(a.evaluate(episodes=10).mean)

    agent.learn(100_000, callback=evaluate)
    assert max(evaluations) >= 475.0, f"{algo}: {evaluations}"


def test_small_images_get_the_minatar_cnn_and_a_nature_cnn_too_small_is_one_line() -> None:
    from natrl.rl.policies import MinAtarCNN, NatureCNN

    class Tiny(T.ImageObservations):
        observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)

    assert isinstance(PPO(Tiny).actor.features, MinAtarCNN)
    with pytest.raises(ValueError, match=r"NatureCNN needs images of at least 36×36 pixels, got .*\(8, 8, 3\)"):
        PPO(Tiny, policy_kwargs={"features_extractor_class": NatureCNN})


@pytest.mark.slow
@pytest.mark.parametrize("cls", [PPO, TRPO, ACKTR])
def test_the_cnn_policy_learns_the_image_task(cls) -> None:
    """36×36 uint8 frames, bright on the left or the right: NatureCNN policies reach 7 of 8 (random: 4)."""
    kwargs = {"n_envs": 4, "n_steps": 64, "gamma": 0.9, **({"batch_size": 64} if cls is PPO else {})}
    agent = cls(T.ImageObservations, seed=0, **kwargs)
    assert isinstance(agent.actor.features, NatureCNN)
    agent.learn(8_000)
    score = agent.evaluate(episodes=20).mean
    assert score >= 7.0, f"{cls.__name__}: {score}"


def test_a_shared_cnn_runs_once_for_actor_and_critic_with_the_same_result() -> None:
    from natrl.rl.policies.modules import distribution_and_value, shares_trained_features

    agent = PPO(T.ImageObservations, n_envs=2, n_steps=16, batch_size=16)
    assert shares_trained_features(agent.actor, agent.critic)
    batch, _ = agent._make_batch()
    calls = []
    handle = agent.actor.features.register_forward_hook(lambda m, i, o: calls.append(1))
    dist, values = distribution_and_value(agent.actor, agent.critic, batch.obs)
    assert len(calls) == 1
    handle.remove()
    torch.testing.assert_close(dist.params[0], agent.actor.distribution(batch.obs).params[0])
    torch.testing.assert_close(values, agent.critic(batch.obs))
    # the rollout's stored log-probabilities and values are those of the separate forwards
    torch.testing.assert_close(batch.log_probs, agent.actor.distribution(batch.obs).log_prob(batch.actions))
    torch.testing.assert_close(batch.values, agent.critic(batch.obs).detach())

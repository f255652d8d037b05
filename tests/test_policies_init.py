"""ortho_init on the features extractors, against stable-baselines3's ``ActorCriticPolicy``: with ``ortho_init`` SB3
makes every Linear and Conv2d of the features extractor (the actor's and the critic's when not shared) orthogonal with
gain √2 and zero biases; natrl does the same to its CNNs and to a user's extractor class."""

from __future__ import annotations

import copy
import math
from functools import partial

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy
from torch import nn

from natrl.rl.policies import CombinedExtractor, MinAtarCNN, NatureCNN, build_policy
from natrl.rl.policies.extractors import orthogonal_init_

ATARI = spaces.Box(0, 255, (4, 84, 84), np.uint8)  # AtariWrapper's frames, channels first; no ale-py needed
SMALL = spaces.Box(0, 255, (4, 10, 10), np.uint8)  # MinAtar Breakout's frames under MinAtarImage
GAIN = math.sqrt(2.0)


def layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def assert_orthogonal(module: nn.Module, gain: float = GAIN) -> None:
    """Every Linear/Conv2d weight W, as (out, in·kh·kw), has W Wᵀ = gain² I (out ≤ in) or Wᵀ W = gain² I; biases 0."""
    found = layers(module)
    assert found, f"{type(module).__name__} has no Linear or Conv2d layer"
    for m in found:
        w = m.weight.detach().reshape(m.weight.shape[0], -1).double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, gain**2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-4, rtol=0)
        assert m.bias is None or not m.bias.detach().any()


def singular_values(module: nn.Module) -> list[torch.Tensor]:
    return [torch.linalg.svdvals(m.weight.detach().reshape(m.weight.shape[0], -1).double()) for m in layers(module)]


def test_orthogonal_init_draws_what_sb3s_init_weights_draws_from_the_same_seed() -> None:
    """The same module, the same torch seed: natrl's init and SB3's ``init_weights`` applied to the whole module
    (its ortho_init on a features extractor) give equal weights, layer for layer."""
    parts = spaces.Dict({"frame": ATARI, "vec": spaces.Box(-1, 1, (3,), np.float32)})
    for module in (NatureCNN(ATARI), MinAtarCNN(SMALL), CombinedExtractor(parts)):
        ours, theirs = module, copy.deepcopy(module)
        torch.manual_seed(5)
        orthogonal_init_(ours)
        torch.manual_seed(5)
        theirs.apply(partial(ActorCriticPolicy.init_weights, gain=GAIN))
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(value, theirs.state_dict()[key], rtol=0, atol=0)
        assert_orthogonal(ours)


def sb3_policy(cls: type, space: spaces.Space, **kwargs) -> ActorCriticPolicy:
    return cls(space, spaces.Discrete(4), lambda _: 3e-4, **kwargs)


@pytest.mark.parametrize("space", [ATARI, SMALL], ids=["atari-naturecnn", "minatar-cnn"])
@pytest.mark.parametrize("shared", [True, False])
def test_cnn_policy_extractors_are_orthogonal_as_sb3s(space: spaces.Box, shared: bool) -> None:
    """CnnPolicy with ortho_init: natrl's extractor (each of actor's and critic's when not shared) is orthogonal
    with gain √2 and zero biases, as SB3's CnnPolicy's is from the same seed; with ortho_init=False torch's
    default (Kaiming-uniform) stays, whose singular values spread."""
    kwargs: dict = {"share_features_extractor": shared}
    sb3_kwargs: dict = {"share_features_extractor": shared}
    if space is SMALL:  # SB3's NatureCNN cannot take 10×10 frames: natrl bench gives SB3 natrl's MinAtarCNN
        sb3_kwargs["features_extractor_class"] = MinAtarCNN
    torch.manual_seed(0)
    actor, critic = build_policy("CnnPolicy", kwargs, space, spaces.Discrete(4))
    torch.manual_seed(0)
    sb3 = sb3_policy(ActorCriticCnnPolicy, space, **sb3_kwargs)
    assert (actor.features is critic.features) == shared
    ours = (actor.features,) if shared else (actor.features, critic.features)
    theirs = (sb3.features_extractor,) if shared else (sb3.pi_features_extractor, sb3.vf_features_extractor)
    for a, b in zip(ours, theirs, strict=True):
        assert_orthogonal(a)
        assert_orthogonal(b)
        sa, sb = singular_values(a), singular_values(b)
        assert [s.shape for s in sa] == [s.shape for s in sb]  # the same layers
        for x, y in zip(sa, sb, strict=True):  # every singular value √2 in both
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
            torch.testing.assert_close(x, torch.full_like(x, GAIN), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    plain, _ = build_policy("CnnPolicy", {**kwargs, "ortho_init": False}, space, spaces.Discrete(4))
    assert all(float(s.max() / s.min()) > 1.5 for s in singular_values(plain.features))


def test_users_extractor_class_and_dict_images_are_initialised_as_sb3_does() -> None:
    """A features_extractor_class of the user's is initialised orthogonally as SB3 initialises it (every Linear and
    Conv2d); other layers keep theirs; a Dict space's image part (CombinedExtractor's CNN) likewise."""

    class Mine(nn.Module):
        def __init__(self, observation_space: spaces.Space, width: int = 16) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 32), nn.LayerNorm(32), nn.Linear(32, width))
            self.features_dim = width

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    space = spaces.Box(-1, 1, (4,), np.float32)
    pk = {"features_extractor_class": Mine, "features_extractor_kwargs": {"width": 16}}
    actor, _ = build_policy("MlpPolicy", pk, space, spaces.Discrete(2))
    sb3 = sb3_policy(ActorCriticPolicy, space, **pk)
    for features in (actor.features, sb3.features_extractor):
        assert_orthogonal(features)
        norm = next(m for m in features.modules() if isinstance(m, nn.LayerNorm))
        assert norm.weight.eq(1).all() and norm.bias.eq(0).all()
    raw, _ = build_policy("MlpPolicy", {**pk, "ortho_init": False}, space, spaces.Discrete(2))
    assert any(m.bias.detach().any() for m in layers(raw.features))  # torch's default: nonzero biases

    parts = spaces.Dict({"frame": ATARI, "vec": spaces.Box(-1, 1, (3,), np.float32)})
    actor, critic = build_policy("MultiInputPolicy", None, parts, spaces.Discrete(4))
    sb3 = sb3_policy(MultiInputActorCriticPolicy, parts)
    assert actor.features is critic.features and isinstance(actor.features, CombinedExtractor)
    assert_orthogonal(actor.features)
    assert_orthogonal(sb3.features_extractor)


def test_the_default_extractor_of_an_actor_and_critic_built_directly_follows_ortho_init() -> None:
    """Actor/Critic built without ``features``: ortho_init covers their default extractor too; a module passed as
    ``features`` is left as given."""
    from natrl.rl.policies import Actor, Critic

    actor = Actor(SMALL, spaces.Discrete(4), ())
    critic = Critic(SMALL, ())
    assert_orthogonal(actor.features)
    assert_orthogonal(critic.features)
    given = MinAtarCNN(SMALL)
    before = copy.deepcopy(given.state_dict())
    Actor(SMALL, spaces.Discrete(4), (), features=given)
    for key, value in given.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_minatar_ppo_and_its_sb3_peer_start_from_orthogonal_extractors() -> None:
    """natrl bench's translation of PPO on MinAtar/Breakout-v1 (MinAtarImage, CnnPolicy; SB3 gets natrl's
    MinAtarCNN as features_extractor_class): both extractors orthogonal with gain √2, zero biases, the same
    singular values; the peer's notes no longer list the extractor's initialisation as not matched."""
    pytest.importorskip("minatar")
    from natrl.bench.jobs import plan_jobs
    from natrl.bench.peers import PeerSpec, build_model
    from natrl.rl import AGENTS
    from natrl.rl.config import build_config
    from natrl.rl.minatar import MinAtarImage

    env_id = "MinAtar/Breakout-v1"
    job, peer = plan_jobs(["ppo"], [env_id], [0], against="sb3", steps=1000)
    assert peer.peer is not None and not any("initialisation" in n for n in peer.peer["notes"])
    cls = AGENTS["ppo"]
    config = build_config(cls.config_cls, job.hyperparameters)
    assert config.ortho_init
    agent = cls(env_id, seed=0, config=config, wrapper_class=MinAtarImage, policy=job.policy)
    model, _ = build_model(PeerSpec.from_dict(peer.peer), env_id, seed=0, wrapper_class=MinAtarImage)
    assert isinstance(agent.actor.features, MinAtarCNN) and isinstance(model.policy.features_extractor, MinAtarCNN)
    assert agent.actor.features is agent.critic.features and model.policy.share_features_extractor
    for features in (agent.actor.features, model.policy.features_extractor):
        assert_orthogonal(features)
    ours, theirs = singular_values(agent.actor.features), singular_values(model.policy.features_extractor)
    for x, y in zip(ours, theirs, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    agent.close()
    model.get_env().close()


@pytest.mark.parametrize("gain", [math.nan, math.inf, -math.inf, -1.0, -1e-300, "2", True, None])
def test_orthogonal_init_refuses_a_gain_that_is_not_finite_and_non_negative(gain: object) -> None:
    """One ValueError line naming the gain, raised before any weight changes."""
    layer = nn.Linear(4, 3)
    before = copy.deepcopy(layer.state_dict())
    with pytest.raises(ValueError, match=r"^orthogonal_init_: gain must be a finite number >= 0, got ") as raised:
        orthogonal_init_(layer, gain=gain)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value) and repr(gain) in str(raised.value)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())


@pytest.mark.parametrize("gain", [0.0, 0, 0.5, np.float32(2.0), 3])
def test_orthogonal_init_takes_any_finite_non_negative_gain(gain: float) -> None:
    """Every singular value of the weight is the gain (numpy's SVD, not torch's init, as the reference)."""
    layer = orthogonal_init_(nn.Linear(5, 3), gain=gain)
    np.testing.assert_allclose(np.linalg.svd(layer.weight.detach().double().numpy(), compute_uv=False), float(gain),
                               atol=1e-6)  # fmt: skip
    assert not layer.bias.detach().any()

"""MinAtar as image observations: the wrapper, the small-image CNN, and the presets of the agents on the five games.
Skipped where MinAtar is missing (``pip install 'natrl[minatar]'``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("minatar")

from periodic_eval import learn_with_evaluations

from natrl import A2C, ACKTR, PPO, TRPO
from natrl.cli import main
from natrl.presets import load_preset
from natrl.rl.env import env_factory
from natrl.rl.minatar import MinAtarImage
from natrl.rl.policies import MinAtarCNN, NatureCNN, default_extractor


def test_minatar_image_is_the_boolean_grid_channels_first_in_0_255() -> None:
    raw = env_factory("MinAtar/Seaquest-v1")()
    wrapped = MinAtarImage(env_factory("MinAtar/Seaquest-v1")())
    assert wrapped.observation_space == gym.spaces.Box(0, 255, (10, 10, 10), np.uint8)  # 10 channels, 10×10
    a, _ = raw.reset(seed=3)
    b, _ = wrapped.reset(seed=3)
    for _ in range(20):  # the same seed and actions: the same grids
        np.testing.assert_array_equal(b, np.moveaxis(a, -1, 0).astype(np.uint8) * 255)
        action = int(raw.action_space.sample())
        a, *_ = raw.step(action)
        b, *_ = wrapped.step(action)
    with pytest.raises(ValueError, match="boolean"):
        MinAtarImage(gym.make("CartPole-v1"))


def test_small_images_get_the_minatar_network() -> None:
    small = gym.spaces.Box(0, 255, (4, 10, 10), np.uint8)
    net = default_extractor(small)
    assert isinstance(net, MinAtarCNN) and isinstance(default_extractor(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)),
                                                      NatureCNN)  # fmt: skip
    # Young & Tian's network: 16 3×3 filters, stride 1, then 128 ReLU units: 4·16·9 + 16 + 16·8·8·128 + 128
    assert sum(p.numel() for p in net.parameters()) == 4 * 16 * 9 + 16 + 16 * 64 * 128 + 128
    x = torch.randint(0, 2, (5, 4, 10, 10)).float()
    last = MinAtarCNN(gym.spaces.Box(0, 255, (10, 10, 4), np.uint8))  # channels last, the same weights
    last.load_state_dict(net.state_dict())
    torch.testing.assert_close(last(x.permute(0, 2, 3, 1)), net(x))


@pytest.mark.parametrize("cls", [PPO, TRPO, ACKTR, A2C])
def test_smoke_agents_train_on_minatar_with_the_preset(cls, tmp_path) -> None:
    """Smoke test: the preset builds MinAtarCNN over uint8 frames, trains a little, saves and loads."""
    preset = load_preset(cls.algo, "MinAtar/Breakout-v1", cls.config_cls)
    assert preset.wrapper == "natrl.rl.minatar:MinAtarImage" and preset.policy == "CnnPolicy"
    hp = {**preset.hyperparameters, "n_envs": 2, "n_steps": 32}
    if cls is PPO:
        hp["batch_size"] = 32
    agent = cls("MinAtar/Breakout-v1", wrapper_class=MinAtarImage, policy=preset.policy, **hp)
    assert isinstance(agent.actor.features, MinAtarCNN)
    agent.learn(128)
    loaded = cls.load(agent.save(tmp_path / "m.pt"))
    assert loaded.wrapper_class is MinAtarImage
    obs = np.zeros((4, 10, 10), np.uint8)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    agent.close()
    loaded.close()


GAMES = {"Breakout": (4, 3), "Asterix": (4, 5), "Freeway": (7, 3), "Seaquest": (10, 6), "SpaceInvaders": (6, 4)}
"""MinAtar's five games (v1: the minimal action sets) → (channels, actions)."""


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("cls", [PPO, A2C, ACKTR, TRPO])
def test_smoke_every_agent_runs_every_minatar_preset(cls, game: str) -> None:
    """Smoke test: each game's own preset, unchanged (MinAtarImage, CnnPolicy over MinAtarCNN with the game's
    channels), builds its agent, and its updates over a few hundred steps change the policy."""
    env_id = f"MinAtar/{game}-v1"
    preset = load_preset(cls.algo, env_id, cls.config_cls)
    assert preset.table == env_id and preset.wrapper == "natrl.rl.minatar:MinAtarImage"
    assert preset.policy == "CnnPolicy" and preset.hyperparameters["hidden_sizes"] == []
    channels, actions = GAMES[game]
    agent = cls(env_id, seed=0, env_kwargs=preset.env_kwargs, wrapper_class=MinAtarImage, policy=preset.policy,
                **preset.hyperparameters)  # fmt: skip
    assert isinstance(agent.actor.features, MinAtarCNN) and agent.actor.features.cnn[0].in_channels == channels
    assert agent.actor.net[-1].out_features == actions
    before = [p.detach().clone() for p in agent.actor.parameters()]
    rollout = agent.config.n_envs * agent.config.n_steps
    agent.learn(max(rollout, 256))
    assert agent.num_timesteps >= 256
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters()))
    agent.close()


def test_presets_end_seaquests_episode_that_never_dives() -> None:
    """MinAtar's Seaquest never ends for a policy that stays at the surface (kenjyoung/MinAtar#19); the presets'
    time limit truncates it at 5,000 frames, where an evaluation would otherwise never return."""
    for cls in (PPO, A2C, ACKTR, TRPO):
        assert load_preset(cls.algo, "MinAtar/Seaquest-v1", cls.config_cls).env_kwargs == {"max_episode_steps": 5000}
    for kwargs, limit in (({}, 6000), ({"max_episode_steps": 5000}, None)):
        env = env_factory("MinAtar/Seaquest-v1", kwargs, MinAtarImage)()
        env.reset(seed=0)
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated) and steps != limit:
            _, _, terminated, truncated, _ = env.step(0)  # no-op at the surface
            steps += 1
        assert (steps, terminated, truncated) == ((6000, False, False) if limit else (5000, False, True))
        env.close()


def test_smoke_natrl_train_picks_a2cs_minatar_preset(tmp_path, monkeypatch) -> None:
    """Smoke test: ``natrl train a2c MinAtar/Asterix-v1`` runs on the preset's table (wrapper, CnnPolicy and the
    zoo's Atari values) without a flag naming them."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    monkeypatch.chdir(tmp_path)
    args = ["train", "a2c", "MinAtar/Asterix-v1", "--steps", "256", "--eval-every", "0", "--eval-episodes", "1",
            "--run-dir", "run", "-q"]  # fmt: skip
    assert main(args) == 0
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    run, hp = config["run"], config["hyperparameters"]
    assert run["preset_table"] == "MinAtar/Asterix-v1" and run["wrapper"] == "natrl.rl.minatar:MinAtarImage"
    assert run["policy"] == "CnnPolicy" and config["env_kwargs"] == {"max_episode_steps": 5000}
    assert (hp["n_envs"], hp["n_steps"], hp["ent_coef"], hp["vf_coef"]) == (16, 5, 0.01, 0.25)
    assert (hp["learning_rate"], hp["rms_prop_eps"], hp["use_rms_prop"]) == (7e-4, 1e-5, True)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("cls", [PPO, TRPO, ACKTR])
def test_cnn_policy_learns_minatar_breakout(cls) -> None:
    """The preset (MinAtarCNN, fixed seed) ends its budget at the preset's threshold (the final evaluation, as
    ``natrl train`` prints it); a random policy scores about 0.2 a game (measured: 0.2 over 5 games)."""
    preset = load_preset(cls.algo, "MinAtar/Breakout-v1", cls.config_cls)
    assert preset.expected_return == 4.0 and preset.total_steps <= 300_000
    agent = cls("MinAtar/Breakout-v1", seed=0, wrapper_class=MinAtarImage, policy=preset.policy,
                **preset.hyperparameters)  # fmt: skip
    evaluations = learn_with_evaluations(agent, preset.total_steps)
    final = evaluations[-1][1]
    assert final >= preset.expected_return, f"{cls.algo}: final evaluation {final:.1f}; all: {evaluations}"

"""What natrl refuses of stable-baselines3's world, in one line each, where SB3 refuses it or natrl cannot do it:
an SB3 model file given to ``load``/``natrl eval`` (named as such, found as SB3 finds it, never unpickled), a
nested Dict/Tuple observation space (at construction, as SB3), and a step count beyond any int64 on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_lines import one_error_line
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation

from natrl import PPO
from natrl.cli.parser import build_parser
from natrl.rl import CheckpointError, load_agent
from natrl.rl.persistence import is_sb3_model_file

SB3_FILE = r"sb3_ppo\.zip is a stable-baselines3 model file, which natrl cannot load: load it with stable-baselines3"


@pytest.fixture(scope="module")
def sb3_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO model stable-baselines3 saved (``save("…/sb3_ppo")`` writes ``sb3_ppo.zip``)."""
    sb3 = pytest.importorskip("stable_baselines3")
    folder = tmp_path_factory.mktemp("sb3")
    sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64).save(folder / "sb3_ppo")
    return folder / "sb3_ppo.zip"


def test_an_sb3_model_file_is_named_as_such_and_never_unpickled(
    sb3_model_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``PPO.load``, ``load_agent``, ``set_parameters`` and ``natrl eval`` on SB3's file, with or without its
    ``.zip`` (SB3's ``load`` adds it as natrl's adds ``.pt``), say what the file is and what to do; only the zip's
    directory is read (torch.load is never called on it)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load was called on a stable-baselines3 file")

    assert is_sb3_model_file(sb3_model_file)
    stem = sb3_model_file.with_suffix("")
    agent = PPO("CartPole-v1", n_steps=64)
    monkeypatch.setattr(torch, "load", refuse)
    for path in (sb3_model_file, stem, str(stem)):
        for load in (PPO.load, load_agent, agent.set_parameters):
            with pytest.raises(CheckpointError, match=SB3_FILE) as info:
                load(path)
            assert "\n" not in str(info.value)
    line = one_error_line(capsys, ["eval", str(stem)], prefix="natrl")
    assert line.startswith("natrl: error: ") and "sb3_ppo.zip is a stable-baselines3 model file" in line


def test_natrls_own_files_are_not_taken_for_sb3s_and_load_by_their_stem(tmp_path: Path) -> None:
    """natrl's checkpoints are torch zip files too, never taken for SB3's; one saved as ``m.zip`` loads as
    ``load("m")`` (SB3's convention), ``m.pt`` first when both exist; a missing file names both names tried."""
    model = PPO("CartPole-v1", n_steps=64, seed=1)
    zipped = model.save(tmp_path / "m.zip")
    assert zipped == tmp_path / "m.zip" and not is_sb3_model_file(zipped)
    assert PPO.load(tmp_path / "m").seed == 1
    PPO("CartPole-v1", n_steps=64, seed=2).save(tmp_path / "m")  # m.pt
    assert PPO.load(tmp_path / "m").seed == 2
    assert not is_sb3_model_file(tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"^no checkpoint at .*nope \(nor nope\.pt\)$"):
        PPO.load(tmp_path / "nope")


class _Env(gym.Env):
    def __init__(self, observation_space: spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        return self.observation_space.sample(), 0.0, False, False, {}


_BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)
_NESTED = {
    "x": spaces.Dict({"x": spaces.Dict({"y": _BOX}), "z": spaces.MultiDiscrete([2, 3])}),
    "1": spaces.Tuple((_BOX, spaces.Tuple((spaces.Discrete(3),)))),
}


@pytest.mark.parametrize("key", list(_NESTED))
def test_a_nested_observation_space_is_refused_at_construction_as_stable_baselines3s(key: str) -> None:
    """SB3 refuses a Dict/Tuple inside a Dict/Tuple when it builds the policy; natrl too, in one line naming the
    entry and the fix, for both built-in policies; flattened (FlattenObservation) the same env trains."""
    space = _NESTED[key]
    sb3 = pytest.importorskip("stable_baselines3")
    with pytest.raises(NotImplementedError, match="Nested observation spaces are not supported"):
        sb3.PPO("MultiInputPolicy", _Env(space))
    inner, entry = ("Dict", "'x'") if key == "x" else ("Tuple", "1")
    kind = type(space).__name__
    message = rf"^the {kind} observation space's entry {entry} is itself a {inner}: .*FlattenObservation"
    for policy in ("MultiInputPolicy", "MlpPolicy"):
        with pytest.raises(ValueError, match=message) as info:
            PPO(policy, lambda: _Env(space), n_steps=32, batch_size=32)
        assert "\n" not in str(info.value)
    flat = PPO("MultiInputPolicy", lambda: _Env(space), n_steps=32, batch_size=32, wrapper_class=FlattenObservation)
    flat.learn(32)
    assert isinstance(flat.observation_space, spaces.Box)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "trpo", "CartPole-v1", "--steps", "1e99"],
        ["train", "trpo", "CartPole-v1", "--steps", "1e16"],
        ["train", "trpo", "CartPole-v1", "--eval-every", "1e99"],
        ["train", "trpo", "CartPole-v1", "--checkpoint-every", "2e15"],
        ["tune", "ppo", "CartPole-v1", "--steps", "1e99"],
    ],
)
def test_the_cli_refuses_step_counts_beyond_1e15(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(capsys, argv, prefix="natrl")
    assert f"a step count must be at most 1e15, got '{argv[-1]}'" in line


def test_the_cli_takes_step_counts_up_to_1e15() -> None:
    args = build_parser().parse_args(["train", "trpo", "CartPole-v1", "--steps", "1e15", "--eval-every", "0"])
    assert args.steps == 10**15 and args.eval_every == 0

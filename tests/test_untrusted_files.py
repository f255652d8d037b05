"""Files are data, never code: a planted checkpoint, run directory or config.toml runs nothing through any load path.

Each test plants a file that would run ``touch MARKER`` (or import a module) if natrl called what the file names,
loads it through the API or the command line, and checks that nothing ran: the marker is absent, the module is
not imported, and the refusal is one line naming the field and how to pass the env yourself.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from natrl import PPO, TRPO
from natrl.cli import main
from natrl.rl import CheckpointError, load_agent
from natrl.rl.persistence import NonFiniteStateError
from natrl.rl.policies import PolicyError
from natrl.rl.trusted import UntrustedReferenceError, resolve_class, spec_env_factory


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict]:
    agent = TRPO(gym.make("CartPole-v1", max_episode_steps=40), seed=0, n_steps=64)
    path = agent.save(tmp_path / "good.pt")
    agent.close()
    return path, torch.load(path, weights_only=True)


def _plant(tmp_path: Path, state: dict, name: str, **changes) -> Path:
    path = tmp_path / f"{name}.pt"
    torch.save({**state, **changes}, path)
    return path


def _spec(state: dict, **changes) -> str:
    spec = json.loads(state["env"][len("spec:") :])
    spec.update(changes)
    return "spec:" + json.dumps(spec)


def _forged(state: dict, marker: Path) -> dict[str, dict]:
    command = {"command": f"touch {marker}"}
    wrapper = {"name": "X", "entry_point": "os:system", "kwargs": command}
    return {
        "entry_point": {"env": _spec(state, entry_point="os:system", kwargs=command)},
        "wrapper_in_spec": {"env": _spec(state, additional_wrappers=[wrapper])},
        "unregistered_id": {"env": _spec(state, id="Evil-v0", entry_point="os:system", kwargs=command)},
        "wrapper_class": {"env": "CartPole-v1", "wrapper_class": "class:gymnasium.envs.registration.make"},
        "wrapper_module": {"env": "CartPole-v1", "wrapper_class": "class:os.system"},
        "policy_kwargs": {"env": "CartPole-v1", "policy_kwargs": {"activation_fn": "class:os.system"}},
    }


def test_forged_checkpoints_run_nothing_through_the_api(tmp_path, saved) -> None:
    _, state = saved
    marker = tmp_path / "PWNED"
    for name, changes in _forged(state, marker).items():
        path = _plant(tmp_path, state, name, **changes)
        for load in (TRPO.load, load_agent):
            with pytest.raises((CheckpointError, PolicyError)) as info:
                load(path)
            message = str(info.value)
            assert "\n" not in message, message
            assert "natrl does not load" in message or "not registered" in message or "registered for it" in message
        assert not marker.exists(), name


def test_a_module_prefix_in_a_stored_id_is_not_imported(tmp_path, saved) -> None:
    _, state = saved
    sys.modules.pop("antigravity", None)
    path = _plant(tmp_path, state, "module_id", env="antigravity:CartPole-v1", env_id="antigravity:CartPole-v1")
    agent = TRPO.load(path)  # the id is registered as it is: loaded without the module
    assert "antigravity" not in sys.modules
    assert agent.env_id == "CartPole-v1"
    agent.close()
    path = _plant(tmp_path, state, "module_unregistered", env="antigravity:Nope-v0", env_id="antigravity:Nope-v0")
    with pytest.raises(CheckpointError, match=r"not registered in this process.*antigravity.*env=") as info:
        TRPO.load(path)
    assert "\n" not in str(info.value)
    assert "antigravity" not in sys.modules
    # the caller's own env is the way through
    agent = TRPO.load(path, env="CartPole-v1")
    assert agent.env_id == "CartPole-v1"
    agent.close()


def test_a_genuine_spec_is_rebuilt_with_its_data(saved) -> None:
    path, _ = saved
    agent = TRPO.load(path)
    result = agent.evaluate(2)
    assert result.lengths == [40, 40] or max(result.lengths) <= 40  # the stored time limit holds
    agent.close()


def test_forged_checkpoints_run_nothing_through_the_command_line(tmp_path, saved, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, state = saved
    marker = tmp_path / "PWNED"
    for name, changes in _forged(state, marker).items():
        path = _plant(tmp_path, state, name, **changes)
        run = tmp_path / f"run_{name}"
        (run / "checkpoints").mkdir(parents=True)
        path.rename(run / "checkpoints" / "step_64.pt")
        for target in (run / "checkpoints" / "step_64.pt", run):
            assert main(["eval", str(target), "--episodes", "1"]) == 2, name
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "error:" in err, (name, err)
        assert not marker.exists(), name


def test_resume_skips_a_planted_checkpoint_and_never_imports_what_config_names(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    common = ["--set", "n_steps=64", "--eval-every", "0", "--run-dir", str(run), "--quiet", "--checkpoint-every", "64"]
    assert main(["train", "trpo", "CartPole-v1", "--steps", "128", *common]) == 0, capsys.readouterr().err
    capsys.readouterr()
    marker = tmp_path / "PWNED"
    state = torch.load(run / "checkpoints" / "step_128.pt", weights_only=True)
    evil = {**state, "num_timesteps": 192, "env": "spec:" + json.dumps({
        "id": "CartPole-v1", "entry_point": "os:system", "reward_threshold": None, "nondeterministic": False,
        "max_episode_steps": None, "order_enforce": True, "disable_env_checker": True,
        "kwargs": {"command": f"touch {marker}"}, "additional_wrappers": [], "vector_entry_point": None,
    })}  # fmt: skip
    torch.save(evil, run / "checkpoints" / "step_192.pt")  # the newest: resume would start from it
    nan = {**state, "num_timesteps": 256}
    nan["actor"] = {k: v * math.nan for k, v in state["actor"].items()}
    torch.save(nan, run / "checkpoints" / "step_256.pt")
    config = run / "config.toml"
    text = config.read_text()
    config.write_text(text.replace("gym_packages = []", 'gym_packages = ["antigravity"]'))
    sys.modules.pop("antigravity", None)
    assert main(["train", "trpo", "CartPole-v1", "--steps", "256", "--run-dir", str(run), "--quiet", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "skipping checkpoint" in err and "step_256.pt" in err and "non-finite" in err
    assert "step_192.pt" in err and "entry point" in err
    assert not marker.exists() and "antigravity" not in sys.modules
    for path in (run / "checkpoints").glob("step_*.pt"):  # nothing non-finite was written by the resumed run
        if path.name not in ("step_256.pt",):
            loaded = torch.load(path, weights_only=True)
            assert all(torch.isfinite(v).all() for v in loaded["actor"].values()), path


def test_a_wrapper_named_by_config_toml_must_be_a_known_wrapper_class(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    common = ["--set", "n_steps=64", "--eval-every", "0", "--run-dir", str(run), "--quiet", "--checkpoint-every", "64"]
    assert main(["train", "ppo", "CartPole-v1", "--steps", "64", "--set", "batch_size=64", *common]) == 0
    capsys.readouterr()
    config = run / "config.toml"
    config.write_text(config.read_text().replace("[run]", '[run]\nwrapper = "os:system"', 1))
    assert main(["train", "ppo", "CartPole-v1", "--steps", "128", "--run-dir", str(run), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not load from a file" in err and "--wrapper os:system" in err, err


@pytest.mark.parametrize(
    "path",
    ["builtins:int", "gymnasium.envs.registration:make", "os:system", "gymnasium.wrappers.TimeLimit.__init__"],
)
def test_resolve_class_refuses_anything_but_allowed_classes(path: str) -> None:
    with pytest.raises(UntrustedReferenceError):
        resolve_class(path, gym.Wrapper, field="f", hint="h")


def test_resolve_class_accepts_gymnasium_and_natrl_wrappers() -> None:
    assert resolve_class("gymnasium.wrappers:ClipAction", gym.Wrapper, field="f", hint="h") is gym.wrappers.ClipAction
    assert resolve_class("torch.nn.modules.activation.Tanh", torch.nn.Module, field="f", hint="h") is torch.nn.Tanh
    with pytest.raises(UntrustedReferenceError):  # a class, but not of the kind the field needs
        resolve_class("torch.nn.modules.activation.Tanh", gym.Wrapper, field="f", hint="h")


def test_a_spec_factory_is_checked_at_once() -> None:
    spec = gym.spec("CartPole-v1").to_json()
    make = spec_env_factory(spec, field="f", hint="h")
    env = make()
    assert env.spec.id == "CartPole-v1"
    env.close()
    bad = json.loads(spec)
    bad["max_episode_steps"] = -1
    with pytest.raises(UntrustedReferenceError, match="max_episode_steps"):
        spec_env_factory(json.dumps(bad), field="f", hint="h")


def test_non_finite_weights_are_neither_set_saved_nor_loaded(tmp_path) -> None:
    agent = PPO("CartPole-v1", seed=0, n_steps=64, batch_size=64)
    params = agent.get_parameters()
    params["policy"] = {k: v * math.inf if v.is_floating_point() else v for k, v in params["policy"].items()}
    with pytest.raises(NonFiniteStateError, match="set_parameters"):
        agent.set_parameters(params)
    with torch.no_grad():
        next(agent.actor.parameters()).fill_(math.nan)
    with pytest.raises(NonFiniteStateError, match="not finite"):
        agent.save(tmp_path / "nan.pt")
    assert not (tmp_path / "nan.pt").exists()
    agent.close()


def test_a_checkpoint_without_its_entries_is_one_clear_error(tmp_path, saved) -> None:
    _, state = saved
    for key in ("config", "num_timesteps", "actor"):
        damaged = {k: v for k, v in state.items() if k != key}
        path = tmp_path / f"no_{key}.pt"
        torch.save(damaged, path)
        with pytest.raises(CheckpointError, match=f"has no '{key}' entry"):
            TRPO.load(path)
    torch.save({**state, "seed": "0"}, tmp_path / "str_seed.pt")
    with pytest.raises(CheckpointError, match="'seed'"):
        TRPO.load(tmp_path / "str_seed.pt")


def test_load_refuses_policy_kwargs_it_would_ignore(saved) -> None:
    path, _ = saved
    with pytest.raises(PolicyError, match="net_arch"):
        TRPO.load(path, policy_kwargs={"net_arch": [8]})


def test_predict_refuses_non_finite_input_and_bad_flags() -> None:
    agent = PPO("CartPole-v1", seed=0, n_steps=64, batch_size=64)
    with pytest.raises(ValueError, match="NaN or infinite"):
        agent.predict([math.nan, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        agent.predict([[math.inf, 0.0, 0.0, 0.0]])
    agent.close()
    rec = PPO("CartPole-v1", policy="MlpLstmPolicy", seed=0, n_steps=64, batch_size=64)
    obs = [[0.0] * 4, [0.0] * 4]
    with pytest.raises(ValueError, match="episode_start"):
        rec.predict(obs, episode_start=["no", "no"])
    _, state = rec.predict(obs, episode_start=[True, False])
    with pytest.raises(ValueError, match="recurrent state"):
        rec.predict(obs, tuple(s * math.nan for s in state))
    rec.close()


@pytest.mark.parametrize("seed", [1.7, -1, "0", True])
def test_a_seed_that_is_not_a_non_negative_integer_is_refused(seed) -> None:
    with pytest.raises(TypeError, match="seed"):
        PPO("CartPole-v1", seed=seed)


def test_env_kwargs_and_wrappers_that_do_not_fit_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="max_episode_steps"):
        PPO("CartPole-v1", env_kwargs={"max_episode_steps": -1})
    with pytest.raises(ValueError, match=r"env_kwargs.*bogus"):
        PPO("CartPole-v1", env_kwargs={"bogus": 1})
    with pytest.raises(ValueError, match="wrapper_class ClipAction"):
        PPO("CartPole-v1", wrapper_class=gym.wrappers.ClipAction)
    with pytest.raises(ValueError, match="wrapper_class TimeLimit"):
        PPO("CartPole-v1", wrapper_class=gym.wrappers.TimeLimit)


def test_the_command_line_refuses_non_wrappers_meta_devices_and_negative_seeds(tmp_path, capsys) -> None:
    cases = [
        (["train", "ppo", "CartPole-v1", "--wrapper", "builtins:int"], "not a gymnasium.Wrapper class"),
        (["train", "ppo", "CartPole-v1", "--device", "meta"], "--device meta"),
        (["eval", str(tmp_path), "--seed", "-1"], "a seed lies in [0, 2**63)"),
    ]
    for argv, message in cases:
        try:
            code = main([*argv, "--run-dir", str(tmp_path / "r")] if argv[0] == "train" else argv)
        except SystemExit as exc:  # argparse refuses a bad value of a typed flag itself
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)


def test_an_env_whose_step_returns_none_for_terminated_is_refused_at_construction() -> None:
    class NoneTerminated(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, None, False, {}

    with pytest.raises(TypeError, match="terminated=None"):
        PPO(lambda: NoneTerminated())


def test_a_bool_env_keyword_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="sutton_barto_reward must be true or false"):
        PPO("CartPole-v1", env_kwargs={"sutton_barto_reward": "maybe"})
    with pytest.raises(ValueError, match="disable_env_checker must be true or false"):
        PPO("CartPole-v1", env_kwargs={"disable_env_checker": 5})
    PPO("CartPole-v1", env_kwargs={"sutton_barto_reward": True}, n_steps=64, batch_size=64).close()

"""Environments as users give them: ids with make-kwargs and wrappers, module:Env-v0 ids, ready vector envs,
env instances; from Python and from the command line."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from natrl import PPO, TRPO
from natrl.cli import main
from natrl.rl.vector_autoreset import SameStepAutoreset, same_step_vector_env


def test_env_kwargs_and_wrapper_reach_every_copy_and_the_checkpoint(tmp_path) -> None:
    agent = TRPO(
        "CartPole-v1",
        env_kwargs={"max_episode_steps": 40},
        wrapper_class=gym.wrappers.TimeLimit,
        wrapper_kwargs={"max_episode_steps": 25},
        n_envs=2,
        n_steps=64,
    )
    agent.learn(256)
    assert max(agent.collector.episode_lengths) <= 25
    assert max(agent.evaluate(3).lengths) <= 25
    loaded = TRPO.load(agent.save(tmp_path / "m.pt"))  # gymnasium's wrapper is rebuilt from its name
    assert loaded.wrapper_class is gym.wrappers.TimeLimit and loaded.env_kwargs == {"max_episode_steps": 40}
    assert max(loaded.evaluate(3).lengths) <= 25
    with pytest.raises(ValueError, match="env_kwargs apply to environment ids"):
        TRPO(lambda: gym.make("CartPole-v1"), env_kwargs={"max_episode_steps": 40})


def test_module_colon_id_imports_the_registering_module() -> None:
    sys.modules.pop("registered_env", None)
    agent = PPO("registered_env:NatrlCorridor-v0", env_kwargs={"length": 3}, n_envs=2, n_steps=32, batch_size=32)
    agent.learn(64)
    assert agent.env_id == "registered_env:NatrlCorridor-v0"
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        PPO("no_such_module:Env-v0")


def test_ale_ids_without_ale_py_name_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if ale-py were not installed
    monkeypatch.delitem(gym.registry, "ALE/Pong-v5", raising=False)  # and had never registered its games
    with pytest.raises(ValueError, match=r"needs ale-py: pip install 'natrl\[atari\]'"):
        PPO("ALE/Pong-v5")


def test_minatar_ids_without_minatar_name_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "minatar.gym", None)  # as if MinAtar were not installed
    monkeypatch.delitem(gym.registry, "MinAtar/Breakout-v1", raising=False)
    with pytest.raises(ValueError, match=r"needs MinAtar: pip install 'natrl\[minatar\]'"):
        PPO("MinAtar/Breakout-v1")


def test_a_ready_vector_env_is_trained_on_as_given() -> None:
    venv = gym.make_vec("CartPole-v1", 3, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})  # fmt: skip
    agent = TRPO(venv, n_steps=32)
    assert agent.config.n_envs == 3 and agent.get_vector_env() is venv and agent.env_id == "CartPole-v1"
    agent.learn(192)
    assert agent.num_timesteps == 192 and len(agent.evaluate(2).returns) == 2
    agent.close()
    venv.step(venv.action_space.sample())  # still the caller's, still open
    venv.close()
    next_step = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")  # Gymnasium's default autoreset
    agent = TRPO(next_step, n_steps=32).learn(64)
    assert agent.env_id == "CartPole-v1" and isinstance(agent.get_vector_env(), SameStepAutoreset)
    agent.close()
    next_step.step(next_step.action_space.sample())  # still the caller's, still open
    next_step.close()


def test_an_env_instance_keeps_its_make_kwargs(tmp_path) -> None:
    agent = TRPO(gym.make("CartPole-v1", max_episode_steps=30), n_envs=1, n_steps=64)
    agent.learn(128)
    assert max(agent.collector.episode_lengths) <= 30
    loaded = TRPO.load(agent.save(tmp_path / "m.pt"))
    assert loaded.env_id == "CartPole-v1" and max(loaded.evaluate(3).lengths) <= 30


def test_cli_env_kwargs_gym_packages_wrapper_and_eval_env(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("registered_env", None)
    run = tmp_path / "run"
    env_args = ["--gym-packages", "registered_env", "--env-kwargs", "length=4",
                "--wrapper", "gymnasium.wrappers:RecordEpisodeStatistics"]  # fmt: skip
    common = ["--set", "n_steps=64", "--set", "batch_size=64", "--eval-every", "0", "--run-dir", str(run), "--quiet"]
    assert main(["train", "ppo", "NatrlCorridor-v0", *env_args, "--steps", "512", *common]) == 0, capsys.readouterr()
    text = (run / "config.toml").read_text()
    assert "[env_kwargs]\nlength = 4" in text and 'wrapper = "gymnasium.wrappers:RecordEpisodeStatistics"' in text
    sys.modules.pop("registered_env", None)  # a fresh process: the run directory's config.toml names the package
    gym.registry.pop("NatrlCorridor-v0", None)
    resume = ["train", "ppo", "NatrlCorridor-v0", "--steps", "1024", "--run-dir", str(run), "--quiet", "--resume"]
    assert main(resume) == 2  # natrl does not import what a file names: the caller passes it again
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --gym-packages registered_env again" in err, err
    assert "registered_env" not in sys.modules
    assert main([*resume, "--gym-packages", "registered_env"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(run / "model.pt"), "--episodes", "2", "--env", "registered_env:NatrlCorridor-v0"]) == 0
    assert "return" in capsys.readouterr().out
    assert main(["train", "ppo", "CartPole-v1", "--gym-packages", "nope_pkg", "--run-dir", str(tmp_path / "x")]) == 2
    assert "--gym-packages nope_pkg: cannot import it" in capsys.readouterr().err
    assert (
        main(["train", "ppo", "CartPole-v1", "--wrapper", "gymnasium.wrappers", "--run-dir", str(tmp_path / "y")]) == 2
    )
    assert "--wrapper expects MODULE:CLASS" in capsys.readouterr().err


# --------------------------------------------------------------------------- EnvSource and the backend registry


def test_env_source_reads_an_id_an_instance_a_factory_and_a_vector_env() -> None:
    from natrl.rl.env import SPEC_PREFIX, EnvSource

    reference = gym.make("CartPole-v1")
    by_id = EnvSource("CartPole-v1")
    assert (by_id.env_id, by_id.stored, by_id.given, by_id.num_envs) == ("CartPole-v1", "CartPole-v1", None, None)
    assert (by_id.observation_space, by_id.action_space) == (reference.observation_space, reference.action_space)
    instance = EnvSource(gym.make("CartPole-v1", max_episode_steps=50))
    assert instance.stored is not None and instance.stored.startswith(SPEC_PREFIX)
    assert instance.factory is not None and instance.factory().spec.max_episode_steps == 50
    factory = EnvSource(lambda: gym.make("CartPole-v1"))
    assert factory.stored is None and factory.env_id == "<lambda>"
    venv = gym.make_vec(
        "CartPole-v1", 3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}
    )
    given = EnvSource(venv)
    assert given.num_envs == 3 and given.vector_env(3) is venv and not given.owns(venv)
    assert given.env_id == "CartPole-v1" and given.stored == "CartPole-v1"
    built = by_id.vector_env(2)
    assert built.num_envs == 2 and by_id.owns(built)
    built.close()
    venv.close()


def test_the_backend_registry_names_every_vec_env_value_and_refuses_others() -> None:
    from dataclasses import replace

    from natrl.rl.config import OnPolicyConfig, build_config
    from natrl.rl.env import BACKENDS, EnvSource

    for backend in BACKENDS:
        build_config(OnPolicyConfig, {"vec_env": backend})  # every registered backend is a valid vec_env
    with pytest.raises(ValueError, match="vec_env"):
        build_config(OnPolicyConfig, {"vec_env": "threads"})
    recipe = replace(EnvSource("CartPole-v1").builder(), backend="threads")
    with pytest.raises(ValueError, match="must be one of 'sync', 'async', 'ale', 'envpool', 'mujoco', got 'threads'"):
        recipe(2)


def test_the_builder_survives_pickling_and_builds_the_envs_make_vector_env_builds() -> None:
    import numpy as np

    from natrl.rl.env import EnvSource, env_factory, make_vector_env

    cloudpickle = pytest.importorskip("cloudpickle")  # Ray's serialiser
    builder = cloudpickle.loads(cloudpickle.dumps(EnvSource("Pendulum-v1").builder()))  # what a Ray worker receives
    ours, reference = builder(2), make_vector_env(env_factory("Pendulum-v1"), 2)
    obs, _ = ours.reset(seed=5)
    expected, _ = reference.reset(seed=5)
    np.testing.assert_array_equal(obs, expected)
    actions = np.full((2, 1), 0.5, np.float32)
    np.testing.assert_array_equal(ours.step(actions)[0], reference.step(actions)[0])
    ours.close()
    reference.close()


class _Unregistered(gym.Env):
    """A user's env with no registered id: 7 steps an episode, reward 1 each."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.t, self.closed = 0, False

    def reset(self, *, seed=None, options=None):  # type: ignore[no-untyped-def]
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample() * 0, {}

    def step(self, action):  # type: ignore[no-untyped-def]
        self.t += 1
        return self.observation_space.sample() * 0, 1.0, self.t >= 7, False, {}

    def close(self) -> None:
        self.closed = True


def test_evaluate_on_an_env_instance_uses_it_as_given_and_leaves_it_open() -> None:
    agent = PPO(_Unregistered(), seed=0, n_steps=16, batch_size=16)
    with pytest.raises(ValueError, match=r"^evaluate: the agent trains on envs without a registered spec"):
        agent.evaluate(1)
    env = _Unregistered()
    result = agent.evaluate(3, env=env)
    assert result.returns == [7.0, 7.0, 7.0] and env.t == 7 and not env.closed  # SB3's evaluate_policy: same env
    registered = gym.make("CartPole-v1")
    cartpole = PPO("CartPole-v1", seed=0, n_steps=16, batch_size=16)
    assert cartpole.evaluate(2, env=registered) == cartpole.evaluate(2)  # the same episodes as on a fresh copy


def test_a_hand_built_vector_env_is_evaluated_on_a_copy_of_its_sub_envs() -> None:
    fns = [lambda: gym.make("CartPole-v1", max_episode_steps=60)] * 2
    agent = PPO(gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP), seed=0, n_steps=16)
    reference = PPO("CartPole-v1", seed=0, n_steps=16, env_kwargs={"max_episode_steps": 60})
    reference.actor.load_state_dict(agent.actor.state_dict())
    result = agent.evaluate(2)
    assert max(result.lengths) <= 60 and result == reference.evaluate(2)


def test_wrapper_class_is_refused_where_natrl_builds_no_env_to_wrap() -> None:
    same_step = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")], autoreset_mode=AutoresetMode.SAME_STEP)
    for env in (_Unregistered(), same_step):
        with pytest.raises(ValueError, match=r"^wrapper_class wraps the envs natrl builds .* or pass a factory$"):
            PPO(env, wrapper_class=gym.wrappers.TimeLimit, wrapper_kwargs={"max_episode_steps": 3})
    agent = PPO(lambda: _Unregistered(), wrapper_class=gym.wrappers.TimeLimit, wrapper_kwargs={"max_episode_steps": 3},
                n_steps=16, batch_size=16)  # fmt: skip
    agent.learn(16)
    assert {e["l"] for e in agent.ep_info_buffer} == {3}  # the factory's envs are wrapped


def _step_both(next_step: gym.vector.VectorEnv, same_step: gym.vector.VectorEnv, steps: int) -> int:
    """Step both vector envs with the same random actions; every output must be equal. Returns the episode ends."""
    adapted = same_step_vector_env(next_step)
    assert isinstance(adapted, SameStepAutoreset) and adapted.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs_a, _ = adapted.reset(seed=7)
    obs_b, _ = same_step.reset(seed=7)
    np.testing.assert_array_equal(obs_a, obs_b)
    rng, ends = np.random.default_rng(0), 0
    for _ in range(steps):
        actions = rng.integers(0, 2, size=same_step.num_envs)
        a, b = adapted.step(actions), same_step.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        ended = np.logical_or(b[2], b[3])
        assert ("final_obs" in a[4]) == ("final_obs" in b[4]) == bool(ended.any())
        if ended.any():
            np.testing.assert_array_equal(a[4]["_final_obs"], b[4]["_final_obs"])
            for i in np.flatnonzero(ended):
                np.testing.assert_array_equal(a[4]["final_obs"][i], b[4]["final_obs"][i])
            assert (
                a[4]["final_info"]["episode"]["r"][ended].tolist() == b[4]["final_info"]["episode"]["r"][ended].tolist()
            )
            ends += int(ended.sum())
    adapted.close()
    same_step.close()
    return ends


@pytest.mark.parametrize("vector_cls", [gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv])
def test_a_next_step_vector_env_is_stepped_as_the_same_env_in_same_step_mode(vector_cls: type) -> None:
    def fns() -> list:
        make = lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1", max_episode_steps=15))  # noqa: E731
        return [make] * 3

    ends = _step_both(vector_cls(fns()), vector_cls(fns(), autoreset_mode=AutoresetMode.SAME_STEP), 120)
    assert ends > 20  # terminations and truncations at 15 steps, in every env


def test_gymnasiums_default_vector_env_trains_as_its_same_step_build() -> None:
    def trained(**vector_kwargs: object) -> list:
        venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync", **vector_kwargs)
        agent = PPO(venv, seed=0, n_steps=64, batch_size=32, n_epochs=2).learn(512)
        assert agent.collector.episodes > 10
        return [p.detach().clone() for p in agent.actor.parameters()]

    ours = trained()  # NEXT_STEP: gym.make_vec's default
    for p, q in zip(ours, trained(vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_vector_env_natrl_cannot_adapt_to_same_step_is_refused_with_the_fix() -> None:
    wrapped = gym.wrappers.vector.RecordEpisodeStatistics(gym.make_vec("CartPole-v1", 2, vectorization_mode="sync"))
    line = r"^the vector env \(RecordEpisodeStatistics\) autoresets in .*NEXT_STEP mode; .* builds its own vector envs$"
    with pytest.raises(ValueError, match=line):
        PPO(wrapped)
    made = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": "Disabled"})
    with pytest.raises(
        ValueError, match=r"with gym\.make_vec's default autoreset mode \(NEXT_STEP, which natrl adapts\)"
    ):
        PPO(made)
    disabled = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")], autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match=r"build it as SyncVectorEnv\(env_fns, autoreset_mode=.*SAME_STEP\)$"):
        PPO(disabled)


def test_an_envs_own_vector_implementation_is_refused_with_a_fix_that_works() -> None:
    own = gym.make_vec("CartPole-v1", 2)  # CartPole's CartPoleVectorEnv: NEXT_STEP, no partial reset
    line = r"^the vector env \(CartPoleVectorEnv\) autoresets in .* gym\.make_vec\(id, n, vectorization_mode='sync'\)"
    with pytest.raises(ValueError, match=line):
        PPO(own)
    PPO(gym.make_vec("CartPole-v1", 2, vectorization_mode="sync"), n_steps=16, batch_size=32).learn(32).close()


def test_an_adapted_vector_env_keeps_its_attribute_api_and_resumes_exactly() -> None:
    import io

    def params_after_resume(mode: AutoresetMode) -> list:
        venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync", max_episode_steps=9,
                            vector_kwargs={"autoreset_mode": mode})  # fmt: skip
        agent = PPO(venv, n_steps=32, batch_size=32, n_epochs=1, seed=0).learn(64)
        checkpoint = io.BytesIO()
        agent.save(checkpoint)
        assert agent.get_env().get_attr("spec")[0].max_episode_steps == 9  # the SB3 view reaches the sub-envs
        assert agent.get_env().env_is_wrapped(gym.wrappers.TimeLimit) == [True, True]
        assert agent.get_vector_env().get_attr("spec")[0].id == "CartPole-v1"
        agent.learn(64, reset_num_timesteps=False)
        checkpoint.seek(0)
        resumed = PPO.load(checkpoint).learn(64, reset_num_timesteps=False)  # natrl rebuilds the envs from the spec
        for p, q in zip(agent.actor.parameters(), resumed.actor.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)  # the saved episodes continue where they stood
        return [p.detach().clone() for p in resumed.actor.parameters()]

    same_step = params_after_resume(AutoresetMode.SAME_STEP)
    for p, q in zip(params_after_resume(AutoresetMode.NEXT_STEP), same_step, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)

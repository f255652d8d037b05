"""Rollouts on Ray workers: reproducible for a fixed seed and worker count, the observation statistics merged
exactly, a killed worker replaced without losing an update, bad combinations refused at construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from natrl import PPO, TRPO
from natrl.rl.normalization import RunningMeanStd

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    from natrl.cluster import connect

    ray.shutdown()
    connect(None, num_cpus=2)  # natrl's own local instance: loopback only
    yield
    ray.shutdown()


def test_merged_moments_equal_the_moments_of_the_union() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3)) * (i + 1) + i for i, n in enumerate((5, 17, 9))]
    merged, whole = RunningMeanStd((3,)), RunningMeanStd((3,))
    for p in parts:
        merged.merge(*RunningMeanStd.moments(p))
    whole.update(np.concatenate(parts))
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.var, whole.var, rtol=1e-12)
    assert merged.count == whole.count


def _agent(cls=TRPO, **kw):
    return cls("Pendulum-v1", seed=3, n_envs=2, n_steps=64, workers=2, normalize_obs=True, **kw)


@pytest.mark.usefixtures("local_ray")
def test_same_seed_and_workers_give_identical_parameters() -> None:
    finals = []
    for _ in range(2):
        agent = _agent()
        agent.learn(3 * 2 * 2 * 64)
        assert agent.num_updates == 3 and agent.num_timesteps == 768
        finals.append([p.detach().clone() for p in agent.policy.parameters()])
        stats = agent.obs_normalizer.rms.count
        agent.close()
    assert all(torch.equal(a, b) for a, b in zip(*finals))
    assert stats == pytest.approx(1e-4 + 768)  # every worker's observations merged, once


@pytest.mark.usefixtures("local_ray")
def test_a_killed_worker_is_replaced_and_no_update_is_lost() -> None:
    agent = _agent(PPO, n_epochs=1)
    # the replacement's start is bounded (45 s by default); on a loaded 2-core machine Ray has taken longer
    agent.collector.schedule_timeout = 300.0
    killed = []

    def kill_after_first_update(a, stats) -> bool:
        if a.num_updates == 1:
            ray.kill(a.collector.workers[1])
            killed.append(a.num_timesteps)
        return True

    agent.learn(4 * 256, callback=kill_after_first_update)
    coll = agent.collector
    assert killed == [256] and coll.restarts == [0, 1] and len(coll.events) == 1
    assert agent.num_updates == 4 and agent.num_timesteps == 1024
    assert all(bool(torch.isfinite(p).all()) for p in agent.policy.parameters())
    agent.close()


@pytest.mark.usefixtures("local_ray")
def test_recurrent_policy_on_workers_carries_its_state() -> None:
    agent = PPO("CartPoleNoVel-v1", policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8]),
                n_envs=2, n_steps=16, sequence_length=8, batch_size=32, n_epochs=1, workers=2)  # fmt: skip
    agent.learn(128)
    batch, _ = agent._make_batch()
    assert len(batch.seq) == 2 * 2 * 2
    with torch.no_grad():
        lp = agent.actor.distribution(*batch.actor_inputs()).log_prob(batch.actions)
    torch.testing.assert_close(lp, batch.log_probs, rtol=0, atol=1e-5)
    agent.close()


@pytest.mark.usefixtures("local_ray")
def test_rewards_are_scaled_in_the_learner_as_one_process_would() -> None:
    """The workers return raw rewards; the learner's scaler, over all 4 envs, follows the merged rollout step
    by step: the scaled rollout equals a RewardScaler(4) applied to the raw rollout of a twin run."""
    from natrl.rl.normalization import RewardScaler

    rollouts = []
    for normalize in (True, False):  # one agent at a time: the local Ray has one CPU per worker
        agent = _agent(normalize_reward=normalize)
        rollouts.append(agent.collector.collect(agent.actor, agent.critic, 64))
        if normalize:
            assert agent.reward_scaler.ret.shape == (4,)
        agent.close()
    scaled, raw = rollouts
    reference = RewardScaler(4, agent.config.gamma)
    expected = np.stack([reference(r, e) for r, e in zip(raw.rewards.double().numpy(), raw.episode_end.numpy())])
    np.testing.assert_allclose(scaled.rewards.numpy(), expected, rtol=1e-6)
    assert not np.allclose(scaled.rewards.numpy(), raw.rewards.numpy())  # Pendulum's rewards are scaled down


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_a_worker_builds_the_agents_env_backend(backend: str) -> None:
    """With vec_env="envpool" or "ale", a one-worker rollout equals the in-process rollout of the same seed
    bit for bit, and differs from gymnasium's envs (whose initial states or Atari starts differ): the worker
    steps the backend's C++ envs, not a gymnasium stand-in."""
    if backend == "envpool":
        pytest.importorskip("envpool")
        cls, env, kw = TRPO, "Hopper-v5", {}
    else:
        pytest.importorskip("ale_py")
        from natrl.rl.atari import AtariWrapper

        cls, env = PPO, "ALE/Breakout-v5"
        kw = {"env_kwargs": {"frameskip": 1}, "wrapper_class": AtariWrapper, "policy": "CnnPolicy"}
    rollouts = {}
    for name, vec_env, workers in (("in-process", backend, 0), ("worker", backend, 1), ("gymnasium", "sync", 0)):
        agent = cls(env, seed=3, n_envs=2, n_steps=16, workers=workers, vec_env=vec_env, **kw)
        rollouts[name] = agent.collector.collect(agent.actor, agent.critic, 16, agent.sampler)
        agent.close()
    for field in ("obs", "actions", "rewards", "log_probs", "episode_end"):
        assert torch.equal(getattr(rollouts["worker"], field), getattr(rollouts["in-process"], field)), field
    assert not torch.equal(rollouts["worker"].obs, rollouts["gymnasium"].obs)


def test_bad_combinations_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"obs_norm_update.*use 'rollout'"):
        TRPO("Pendulum-v1", workers=2, normalize_obs=True, obs_norm_update="step")
    with pytest.raises(ValueError, match="workers=-1"):
        TRPO("Pendulum-v1", workers=-1)


@pytest.mark.slow
def test_workers_spread_over_the_nodes_of_a_cluster() -> None:
    """A simulated three-node cluster (ray.cluster_utils, one CPU per node): the agent connects to it by address,
    its two workers run on other nodes than each other, and training proceeds as on one machine."""
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        agent = TRPO("Pendulum-v1", seed=0, n_envs=1, n_steps=64, workers=2, ray_address=cluster.address)
        agent.learn(4 * 128)
        nodes = ray.get([w.node_id.remote() for w in agent.collector.workers])
        assert len(set(nodes)) == 2 and agent.num_updates == 4
        agent.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.usefixtures("local_ray")
def test_command_line_trains_and_resumes_with_workers(tmp_path) -> None:
    from natrl.cli import main
    from natrl.runs import RunSpec

    run = tmp_path / "run"
    base = ["train", "trpo", "Pendulum-v1", "--run-dir", str(run), "-q"]
    assert main([*base, "--workers", "2", "--n-envs", "1", "--set", "n_steps=64", "--steps", "256"]) == 0
    spec = RunSpec.read(run)
    assert spec.hyperparameters["workers"] == 2 and "workers=2" in spec.overrides
    assert main([*base, "--resume", "--steps", "512"]) == 0  # the checkpoint's workers start again
    progress = (run / "progress.csv").read_text().splitlines()
    assert len(progress) == 1 + 512 // 128  # one row per update, none lost or repeated


@pytest.mark.usefixtures("local_ray")
def test_a_run_with_workers_resumes_bit_for_bit(tmp_path) -> None:
    """The workers' envs, episodes and sampler streams are in the checkpoint: loading it and training on gives the
    parameters of the run that was never stopped."""
    from natrl.runs.rng import get_rng_state, set_rng_state

    agent = TRPO("Pendulum-v1", seed=0, n_steps=64, n_envs=2, workers=2)
    agent.learn(512)
    path = agent.save(tmp_path / "mid.pt")
    rng = get_rng_state()
    agent.learn(512, reset_num_timesteps=False)
    reference = [p.detach().clone() for p in agent.policy.parameters()]
    agent.close()
    resumed = TRPO.load(path)
    set_rng_state(rng)
    resumed.learn(512, reset_num_timesteps=False)
    assert all(torch.equal(a, b) for a, b in zip(reference, resumed.policy.parameters()))
    resumed.close()


@pytest.mark.usefixtures("local_ray")
def test_acktr_trains_with_workers() -> None:
    """The workers get a copy of the actor that carries K-FAC's hooks; the copy's hooks collect nothing."""
    from natrl import ACKTR

    agent = ACKTR("CartPole-v1", seed=0, n_steps=32, n_envs=2, workers=2)
    agent.learn(256)
    assert agent.num_updates == 2 and all(torch.isfinite(p).all() for p in agent.policy.parameters())
    agent.close()

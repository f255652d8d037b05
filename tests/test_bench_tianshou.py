"""Tests of the tianshou peer of ``natrl bench``: the translation, the built agent and a tiny real sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from natrl.bench import BenchError, main
from natrl.bench.jobs import parse_peers, plan_jobs
from natrl.bench.report import markdown_table
from natrl.bench.results import read_results
from natrl.bench.tianshou_peer import NPG_TRUST_REGION_SIZE, TianshouSpec, build_tianshou, translate_tianshou
from natrl.bench.worker import evaluate_policy
from natrl.rl import AGENTS, PPOConfig
from natrl.rl.config import build_config
from natrl.rl.env import env_factory

pytest.importorskip("tianshou")


def test_peers_parse_and_order_jobs() -> None:
    assert parse_peers("sb3,tianshou") == ("sb3", "tianshou") and parse_peers(None) == ()
    with pytest.raises(BenchError, match="unknown peer 'rllib'"):
        parse_peers("sb3,rllib")
    jobs = plan_jobs(["trpo", "npg", "acktr"], ["Pendulum-v1"], [0], against="sb3,tianshou", steps=1000)
    # sb3 has no NPG, neither library an ACKTR: each natrl job is followed by the peers it has
    assert [(j.library, j.algo) for j in jobs] == [
        ("natrl", "trpo"), ("sb3", "trpo"), ("tianshou", "trpo"),
        ("natrl", "npg"), ("tianshou", "npg"),
        ("natrl", "acktr"),
    ]  # fmt: skip


def test_trpo_preset_translates_to_tianshou_kwargs() -> None:
    # agents/trpo.toml [Hopper-v5]: 2 envs × 1024 steps, critic 20 epochs of 128, lr 1e-3, cg 25, max_kl 0.03 and
    # damping 0.3 (rl-zoo3's 0.01 and 0.1 per action dimension), observations and rewards normalised
    (_, peer) = plan_jobs(["trpo"], ["Hopper-v5"], [0], against="tianshou", steps=1000)
    spec = TianshouSpec.from_dict(peer.peer)
    kw = spec.algo_kwargs
    assert spec.algo == "TRPO" and spec.n_envs == 2 and spec.collect_steps == 2048
    assert spec.batch_size is None and spec.repeat == 1  # one natural step per update, on the whole rollout
    # tianshou's KL is the joint policy's, as natrl's: max_kl passes one to one
    assert kw["max_kl"] == 0.03 and kw["backtrack_coeff"] == 0.8 and kw["max_backtracks"] == 10
    assert kw["optim_critic_iters"] == 20 and kw["return_scaling"] and spec.obs_norm
    assert spec.lr == 1e-3 and spec.adam_eps == 1e-8 and spec.hidden_sizes == [64, 64]
    text = "\n".join(spec.notes)
    assert "320 Adam steps" in text and "20 full-batch steps" in text  # 20 epochs × 16 minibatches
    assert "NOT MATCHED: cg_iters=25" in text and "NOT MATCHED: damping=0.3" in text  # tianshou fixes 0.1
    json.dumps(peer.peer)


def test_npg_ppo_and_unmatched_translations() -> None:
    npg = translate_tianshou("npg", build_config(AGENTS["npg"].config_cls, {}))
    assert npg is not None and npg.algo_kwargs["trust_region_size"] == NPG_TRUST_REGION_SIZE
    assert any("NOT MATCHED: natrl's NPG step is normalised" in n for n in npg.notes)
    ppo = translate_tianshou("ppo", PPOConfig(learning_rate="lin_3e-4", n_epochs=5, batch_size=32, clip_range=0.1))
    assert ppo is not None and ppo.lr == {"linear": 3e-4} and ppo.repeat == 5 and ppo.batch_size == 32
    assert ppo.algo_kwargs["eps_clip"] == 0.1 and ppo.adam_eps == 1e-5
    assert translate_tianshou("acktr", build_config(AGENTS["acktr"].config_cls, {})) is None
    assert translate_tianshou("ppo", PPOConfig(), policy="MlpLstmPolicy") is None


@pytest.mark.parametrize(("algo", "env_id"), [("trpo", "Pendulum-v1"), ("ppo", "CartPole-v1")])
def test_tianshou_agent_has_natrls_networks(algo: str, env_id: str) -> None:
    cls = AGENTS[algo]
    (job, peer) = plan_jobs([algo], [env_id], [0], against="tianshou", steps=1000)
    agent = cls(env_id, seed=0, config=build_config(cls.config_cls, job.hyperparameters))
    run = build_tianshou(TianshouSpec.from_dict(peer.peer), env_id, seed=0, total_steps=1000)
    try:
        natrl_shapes = sorted(tuple(p.squeeze().shape) for p in [*agent.actor.parameters(), *agent.critic.parameters()])
        ts = run.algorithm
        ts_shapes = sorted(tuple(p.squeeze().shape) for p in [*ts.policy.actor.parameters(), *ts.critic.parameters()])
        assert natrl_shapes == ts_shapes
        if env_id == "Pendulum-v1":  # the log-std starts at the preset's log_std_init
            assert torch.allclose(ts.policy.actor.sigma_param, torch.tensor(agent.config.log_std_init))
    finally:
        agent.close()
        run.close()


def test_tianshou_evaluation_is_deterministic_and_uses_frozen_statistics() -> None:
    (_, peer) = plan_jobs(["trpo"], ["Pendulum-v1"], [0], against="tianshou", steps=1000)
    spec = TianshouSpec.from_dict({**peer.peer, "obs_norm": True})
    run = build_tianshou(spec, "Pendulum-v1", seed=0, total_steps=2048)
    try:
        steps = run.learn()
        assert steps == 2048
        rms = run.train_envs.get_obs_rms()
        mean_before = rms.mean.copy()
        make = env_factory("Pendulum-v1", None, None)
        first = evaluate_policy(run.predict, make, episodes=2, seed=5)
        assert evaluate_policy(run.predict, make, episodes=2, seed=5) == first  # the mode, not a sample
        np.testing.assert_array_equal(rms.mean, mean_before)  # evaluating does not move the statistics
        action, state = run.predict(np.zeros(3, np.float32))
        assert np.shape(action) == (1,) and state is None
    finally:
        run.close()


def test_sweep_against_tianshou(tmp_path: Path) -> None:
    out = tmp_path / "ts"
    argv = ["--algos", "trpo", "--envs", "CartPole-v1", "--seeds", "0", "--steps", "2048", "--eval-every", "1024",
            "--eval-episodes", "2", "--against", "tianshou", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    meta, runs = read_results(out)
    assert [(r["library"], r["status"]) for r in runs] == [("natrl", "ok"), ("tianshou", "ok")]
    assert runs[1]["implementation"].startswith("tianshou TRPO") and runs[1]["steps"] == 2048
    assert [p["steps"] for p in runs[1]["curve"]] == [1024, 2048]  # the preset's rollouts: 2 envs x 512 steps
    assert meta["versions"]["tianshou"]
    table = markdown_table(runs, meta)
    assert "| tianshou TRPO" in table and "tianshou 2." in table
    assert "## Matching notes (natrl preset → peer)" in table

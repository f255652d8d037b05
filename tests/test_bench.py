"""Tests of ``natrl bench``: the SB3 translation, the shared evaluation, the report and tiny real sweeps."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from natrl.bench import BenchError, main
from natrl.bench.jobs import plan_jobs
from natrl.bench.peers import MINATAR_CNN, PeerSpec, build_model, translate
from natrl.bench.report import markdown_table
from natrl.bench.results import CSV_FIELDS
from natrl.bench.worker import EVAL_SEED_OFFSET, Evaluator, evaluate_policy
from natrl.rl import AGENTS, PPOConfig, TRPOConfig
from natrl.rl.config import build_config
from natrl.rl.normalization import ObsNormalizer, RewardScaler

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")


# --------------------------------------------------------------------------- planning
def test_jobs_are_interleaved_env_seed_algo_library() -> None:
    jobs = plan_jobs(["trpo", "npg", "ppo"], ["CartPole-v1", "Pendulum-v1"], [0, 1], against="sb3", steps=5000)
    names = [j.name for j in jobs]
    assert names[:6] == [
        "natrl trpo CartPole-v1 s0",
        "sb3 trpo CartPole-v1 s0",
        "natrl npg CartPole-v1 s0",  # NPG has no SB3 peer
        "natrl ppo CartPole-v1 s0",
        "sb3 ppo CartPole-v1 s0",
        "natrl trpo CartPole-v1 s1",
    ]
    assert len(jobs) == 2 * 2 * 5
    assert [j.index for j in jobs] == list(range(len(jobs)))
    assert all(j.total_steps == 5000 and j.eval_every == 500 for j in jobs)
    # the peer runs the same preset: same hyperparameters, threshold and budget as its natrl job
    natrl_job, peer_job = jobs[0], jobs[1]
    assert peer_job.hyperparameters == natrl_job.hyperparameters
    assert peer_job.expected_return == natrl_job.expected_return == 475.0
    assert peer_job.peer is not None and natrl_job.peer is None


def test_device_is_planned_checked_and_kept_off_ray(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    jobs = plan_jobs(["trpo"], ["CartPole-v1"], [0], against="sb3,tianshou", steps=1000)
    assert [j.device for j in jobs] == ["cpu"] * 3
    with pytest.raises(BenchError, match="'tpu' is not a torch device"):
        plan_jobs(["trpo"], ["CartPole-v1"], [0], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="torch sees no CUDA device"):
            plan_jobs(["trpo"], ["CartPole-v1"], [0], device="cuda")
    # Ray tasks reserve no GPU, so a GPU sweep runs its jobs one at a time
    assert main(["--algos", "trpo", "--envs", "CartPole-v1", "--device", "cuda", "--ray", "--dry-run"]) == 2
    assert "Ray tasks reserve no GPU" in capsys.readouterr().err


def test_plan_uses_preset_budget_and_rejects_bad_requests() -> None:
    (job,) = plan_jobs(["trpo"], ["CartPole-v1"], [3], eval_every=0)
    assert job.total_steps == 100_000 and job.eval_every == 0 and job.preset == "trpo.toml[CartPole-v1]"
    with pytest.raises(BenchError, match="unknown algorithm acktr2"):
        plan_jobs(["acktr2"], ["CartPole-v1"], [0])
    with pytest.raises(BenchError, match="unknown peer"):
        plan_jobs(["trpo"], ["CartPole-v1"], [0], against="rllib")


# --------------------------------------------------------------------------- translation
def test_trpo_preset_translates_to_sb3_contrib_kwargs() -> None:
    # agents/trpo.toml [CartPole-v1]: n_envs=2, n_steps=512, max_kl="lin_0.01", critic_batch_size=512,
    # damping=0.001, gae_lambda=0.98, critic_lr=1e-3, critic_epochs=20 over the TRPOConfig defaults
    (_, peer) = plan_jobs(["trpo"], ["CartPole-v1"], [0], against="sb3", steps=1000)
    spec = PeerSpec.from_dict(peer.peer)
    kw = spec.kwargs
    assert spec.algo_class == "sb3_contrib.TRPO" and spec.n_envs == 2 and spec.vec_normalize is None
    assert kw["n_steps"] == 512 and kw["batch_size"] == 512 and kw["cg_damping"] == 0.001
    assert kw["gae_lambda"] == 0.98 and kw["learning_rate"] == 1e-3 and kw["n_critic_updates"] == 20
    # the linear trust region stays a schedule (build_model applies it at every update, see the next test)
    assert kw["target_kl"] == {"linear": 0.01} and any("max_kl='lin_0.01'" in n for n in spec.notes)
    assert kw["cg_max_steps"] == 15 and kw["line_search_shrinking_factor"] == 0.8
    # natrl: full step + 10 backtracks = 11 trials; sb3-contrib counts trials
    assert kw["line_search_max_iter"] == 11 and kw["sub_sampling_factor"] == 1
    assert kw["policy_kwargs"]["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
    assert kw["policy_kwargs"]["activation_fn"] == "Tanh"
    json.dumps(peer.peer)  # auditable: the spec goes into results.json as it is


def test_linear_max_kl_is_sb3_contrib_target_kl_at_every_update() -> None:
    """max_kl "lin_0.01" on CartPole-v1 (2 envs × 512 steps, 3 updates in 3072 steps): sb3-contrib's TRPO
    gets natrl's trust region at each update, 0.01 × progress remaining after the rollout, and per
    dimension (÷ k) on a k-dimensional Gaussian."""
    import sb3_contrib

    (job, peer) = plan_jobs(["trpo"], ["CartPole-v1"], [0], against="sb3", steps=3072)
    cls = AGENTS["trpo"]
    agent = cls("CartPole-v1", seed=0, config=build_config(cls.config_cls, job.hyperparameters))
    natrl_kl: list[float] = []
    agent.learn(3072, callback=lambda a, stats: natrl_kl.append(a.scheduled("max_kl")) is None)
    agent.close()
    model, _ = build_model(PeerSpec.from_dict(peer.peer), "CartPole-v1", seed=0)
    assert isinstance(model, sb3_contrib.TRPO)
    sb3_kl: list[float] = []
    train = model.train

    def recording_train() -> None:
        train()
        sb3_kl.append(model.target_kl)

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(3072)
    model.get_env().close()
    assert natrl_kl == pytest.approx([0.01 * 2 / 3, 0.01 / 3, 0.0])
    assert sb3_kl == pytest.approx(natrl_kl, abs=1e-12)
    spec = translate("trpo", TRPOConfig(max_kl="lin_0.06"), action_dims=6)
    assert spec is not None and spec.kwargs["target_kl"] == {"linear": pytest.approx(0.01)}


def _sb3_and_natrl_trpo_steps(cfg: TRPOConfig, spec: PeerSpec, env_id: str) -> tuple[Any, Any]:
    """One policy step of sb3-contrib's TRPO and of natrl's, from the same weights on the same rollout."""
    from trpo_first_step import policy_steps

    from natrl.rl import TRPO

    model, _ = build_model(spec, env_id, seed=0)
    agent = TRPO(env_id, seed=0, config=cfg)
    ours, theirs, _ = policy_steps(model, agent, cfg.n_steps)
    agent.close()
    model.get_env().close()
    return ours, theirs


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # sb3-contrib logs a mean over no line-search values
def test_translated_sb3_contrib_trpo_takes_natrls_step_on_a_six_dimensional_gaussian() -> None:
    # sb3-contrib averages the Gaussian KL over the action dimensions: target_kl and cg_damping are
    # natrl's divided by k = 6, and then one update of both libraries moves every parameter alike
    pytest.importorskip("mujoco")
    import torch

    cfg = TRPOConfig(n_envs=2, n_steps=128, cg_iters=10, max_kl=0.06, damping=0.6)
    spec = translate("trpo", cfg, action_dims=6)
    assert spec is not None and spec.kwargs["target_kl"] == pytest.approx(0.01)
    assert spec.kwargs["cg_damping"] == pytest.approx(0.1)
    ours, theirs = _sb3_and_natrl_trpo_steps(cfg, spec, "HalfCheetah-v5")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    # the one-to-one translation (target_kl = max_kl) is a different algorithm: a visibly different step
    naive = translate("trpo", cfg, action_dims=1)
    assert naive is not None
    ours_n, theirs_n = _sb3_and_natrl_trpo_steps(cfg, naive, "HalfCheetah-v5")
    assert float((ours_n - theirs_n).abs().max()) > 1e-2


def test_ppo_translation_keeps_vf_coef_and_anneals_linearly() -> None:
    cfg = PPOConfig(vf_coef=0.8, anneal_lr=True, learning_rate=1e-3, clip_range_vf=0.3, target_kl=0.02)
    spec = translate("ppo", cfg)
    assert spec is not None
    assert spec.kwargs["vf_coef"] == pytest.approx(0.8)  # both minimise vf_coef · MSE
    assert spec.kwargs["learning_rate"] == {"linear": 1e-3}
    model, _ = build_model(spec, "CartPole-v1", seed=0)
    assert model.vf_coef == pytest.approx(0.8)
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.25) == pytest.approx(2.5e-4)
    assert model.clip_range(0.5) == pytest.approx(0.2) and model.clip_range_vf(0.5) == pytest.approx(0.3)
    assert model.target_kl == 0.02
    assert translate("npg", build_config(AGENTS["npg"].config_cls, {})) is None


def test_recurrent_ppo_gets_the_presets_lstm_size() -> None:
    """The preset's policy_kwargs size sb3-contrib's LSTM; without them, RecurrentPPO's own defaults."""
    import inspect

    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    defaults = inspect.signature(RecurrentActorCriticPolicy.__init__).parameters
    config = build_config(PPOConfig, {"sequence_length": 16})
    spec = translate("ppo", config, "MlpLstmPolicy", {"lstm_hidden_size": 64, "n_lstm_layers": 2})
    assert spec is not None and spec.algo_class == "sb3_contrib.RecurrentPPO"
    assert (spec.kwargs["policy_kwargs"]["lstm_hidden_size"], spec.kwargs["policy_kwargs"]["n_lstm_layers"]) == (64, 2)
    spec = translate("ppo", config, "MlpLstmPolicy")
    assert spec is not None
    kwargs = spec.kwargs["policy_kwargs"]
    assert kwargs["lstm_hidden_size"] == defaults["lstm_hidden_size"].default
    assert kwargs["n_lstm_layers"] == defaults["n_lstm_layers"].default
    # natrl's forget-gate bias has no RecurrentPPO counterpart: said in a note, nothing passed on
    spec = translate("ppo", config, "MlpLstmPolicy", {"lstm_hidden_size": 32, "lstm_forget_bias": 1.0})
    assert spec is not None and set(spec.kwargs["policy_kwargs"]) <= set(defaults) | {"activation_fn", "net_arch"}
    assert any(n.startswith("APPROXIMATE: natrl adds lstm_forget_bias=1") for n in spec.notes)


def test_unmatched_options_are_reported() -> None:
    spec = translate("trpo", TRPOConfig(adaptive_damping=True, fisher_subsample=0.25, action_bound="squash"))
    assert spec is not None and spec.kwargs["sub_sampling_factor"] == 4
    text = "\n".join(spec.notes)
    assert "NOT MATCHED: adaptive_damping" in text and "NOT MATCHED: action_bound" in text
    assert "APPROXIMATE: fisher_subsample" in text


@pytest.mark.parametrize("algo", ["trpo", "ppo"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_sb3_model_has_natrls_networks_and_optimizer(algo: str, env_id: str) -> None:
    (job, peer) = plan_jobs([algo], [env_id], [0], against="sb3", steps=1000)
    cls = AGENTS[algo]
    agent = cls(env_id, seed=0, config=build_config(cls.config_cls, job.hyperparameters))
    model, _ = build_model(PeerSpec.from_dict(peer.peer), env_id, seed=0)
    natrl_shapes = sorted(tuple(p.shape) for p in [*agent.actor.parameters(), *agent.critic.parameters()])
    sb3_shapes = sorted(tuple(p.shape) for p in model.policy.parameters())
    assert natrl_shapes == sb3_shapes
    natrl_opt = agent.critic_optimizer if algo == "trpo" else agent.optimizer
    assert model.policy.optimizer.param_groups[0]["eps"] == natrl_opt.param_groups[0]["eps"]
    assert model.n_steps == agent.config.n_steps and model.n_envs == agent.config.n_envs
    assert model.gamma == agent.config.gamma and model.gae_lambda == agent.config.gae_lambda
    agent.close()
    model.get_env().close()


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_minatar_peer_gets_natrls_minatar_network(algo: str) -> None:
    """SB3's CnnPolicy default (NatureCNN) cannot take MinAtar's 10×10 frames: the spec names natrl's MinAtarCNN,
    and SB3's policy is then natrl's network, layer by layer, and with natrl's weights computes natrl's outputs."""
    pytest.importorskip("minatar")
    import torch

    from natrl.rl.env import env_factory
    from natrl.rl.minatar import MinAtarImage
    from natrl.rl.policies import MinAtarCNN

    env_id = "MinAtar/Seaquest-v1"  # 10 channels, 6 actions
    job, peer = plan_jobs([algo], [env_id], [0], against="sb3", steps=1000)
    assert peer.peer is not None and peer.peer["kwargs"]["policy_kwargs"]["features_extractor_class"] == MINATAR_CNN
    assert not any("initialisation" in n for n in peer.peer["notes"])  # ortho_init covers both extractors
    cls = AGENTS[algo]
    agent = cls(env_id, seed=0, config=build_config(cls.config_cls, job.hyperparameters), wrapper_class=MinAtarImage,
                policy=job.policy)  # fmt: skip
    model, _ = build_model(PeerSpec.from_dict(peer.peer), env_id, seed=0, wrapper_class=MinAtarImage)
    policy = model.policy
    assert isinstance(policy.features_extractor, MinAtarCNN) and policy.share_features_extractor
    natrl_params = {id(p): p for p in [*agent.actor.parameters(), *agent.critic.parameters()]}.values()
    shapes = sorted(tuple(p.shape) for p in natrl_params)
    assert shapes == sorted(tuple(p.shape) for p in policy.parameters())
    # Young & Tian's network by hand: conv 10→16 3×3, Linear 16·8·8→128, then the heads: 6 logits and the value
    count = 10 * 16 * 9 + 16 + 16 * 64 * 128 + 128 + 128 * 6 + 6 + 128 + 1
    assert sum(p.numel() for p in natrl_params) == sum(p.numel() for p in policy.parameters()) == count
    with torch.no_grad():  # natrl's weights in SB3's network: the same scaling of the frames, the same outputs
        policy.features_extractor.load_state_dict(agent.actor.features.state_dict())
        policy.action_net.load_state_dict(agent.actor.net[-1].state_dict())
        policy.value_net.load_state_dict(agent.critic.net[-1].state_dict())
        env = env_factory(env_id, None, MinAtarImage)()
        obs = torch.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(4)]))
        env.close()
        torch.testing.assert_close(policy.get_distribution(obs).distribution.probs, agent.actor.distribution(obs).probs)
        torch.testing.assert_close(policy.predict_values(obs).flatten(), agent.critic(obs))
    agent.close()
    model.get_env().close()


def test_translated_vecnormalize_scales_rewards_like_natrl() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    cfg = TRPOConfig(normalize_obs=True, normalize_reward=True, n_envs=2, gamma=0.97)
    spec = translate("trpo", cfg)
    assert spec is not None and spec.vec_normalize is not None
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), **spec.vec_normalize)
    scaler = RewardScaler(2, cfg.gamma)
    obs_norm = ObsNormalizer(venv.observation_space.shape)
    venv.reset()
    obs_norm.rms.update(venv.get_original_obs())
    rng = np.random.default_rng(0)
    for _ in range(450):  # Pendulum episodes end at 200 steps: the running return is reset twice
        _, reward, dones, _ = venv.step(rng.uniform(-2, 2, size=(2, 1)).astype(np.float32))
        np.testing.assert_allclose(reward, scaler(venv.get_original_reward(), dones), rtol=1e-6)
        obs_norm.rms.update(venv.get_original_obs())
    raw = rng.normal(size=(5, 3)) * 3
    np.testing.assert_allclose(venv.normalize_obs(raw), obs_norm(raw), rtol=1e-5)
    venv.close()


# --------------------------------------------------------------------------- evaluation
def test_shared_evaluation_loop_reproduces_agent_evaluate() -> None:
    agent = AGENTS["trpo"]("CartPole-v1", seed=4, n_envs=1, n_steps=64)
    returns = evaluate_policy(
        lambda obs, state: agent.predict(obs, state, deterministic=True), lambda: gym.make("CartPole-v1"), 3, 10_004
    )
    assert returns == agent.evaluate(3, deterministic=True, seed=EVAL_SEED_OFFSET + 4).returns
    agent.close()


class _SlowEnv(gym.Env):
    """Episodes of 3 steps, reward 1 per step; each step sleeps so evaluations take time."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        time.sleep(0.01)
        self.t += 1
        return np.zeros(1, np.float32), 1.0 + float(action), self.t >= 3, False, {}


def test_evaluator_schedule_threshold_and_paused_clock() -> None:
    action = {"a": 0}
    ev = Evaluator(
        lambda obs, state: (action["a"], state),
        _SlowEnv,
        episodes=2,
        seed=0,
        every=300,
        total_steps=1000,
        threshold=5.0,
    )
    ev.start()
    evaluated = []
    for steps in range(256, 1025, 256):  # rollouts of 256 steps, as the learn loops report them
        if steps >= 768:
            action["a"] = 1  # returns jump from 3 to 6
        if ev.due(steps):
            evaluated.append(ev.evaluate(steps).steps)
    ev.finish(1024)
    # the first rollout boundary past each multiple of 300, never the budget itself (the final one does)
    assert evaluated == [512, 768]
    assert [p.steps for p in ev.points] == [512, 768, 1024]
    assert [p.mean for p in ev.points] == [3.0, 6.0, 6.0]
    assert ev.reached is not None and ev.reached.steps == 768
    # three evaluations of 2 × 3 sleeping steps: ≥ 0.18 s of evaluation, none of it counted as training
    assert ev.eval_seconds >= 0.18
    assert ev.final_train_seconds < 0.1


# --------------------------------------------------------------------------- report
def _row(library: str, seed: int, sps: float, ttt: float | None, final: float) -> dict[str, Any]:
    return {
        "index": seed * 2 + (library == "sb3"),
        "library": library,
        "algo": "trpo",
        "env": "CartPole-v1",
        "seed": seed,
        "status": "ok",
        "steps": 1000,
        "train_seconds": 1000 / sps,
        "steps_per_second": sps,
        "final_eval_mean": final,
        "final_eval_std": 0.0,
        "threshold": 475.0,
        "threshold_steps": None if ttt is None else 500,
        "threshold_seconds": ttt,
        "implementation": "natrl 0.1.0" if library == "natrl" else "sb3-contrib TRPO 2.9.2",
    }


def _cells(table: str, start: str) -> dict[str, str]:
    """The cells of the table row starting with ``start``, by column name."""
    lines = table.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| env |")).strip("|").split("|")]
    line = next(line for line in lines if line.startswith(start))
    return dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))


def test_table_reports_mean_std_over_seeds_and_paired_ratios() -> None:
    rows = [
        _row("natrl", 0, 1000.0, 10.0, 500.0),
        _row("sb3", 0, 500.0, 20.0, 480.0),
        _row("natrl", 1, 2000.0, None, 400.0),
        _row("sb3", 1, 1000.0, 30.0, 490.0),
        {
            "index": 9,
            "library": "natrl",
            "algo": "trpo",
            "env": "Nope-v0",
            "seed": 0,
            "status": "failed",
            "error": "ValueError: unknown environment id 'Nope-v0'",
        },
    ]
    table = markdown_table(rows, {"command": "natrl bench --against sb3", "versions": {}})

    def cells_of(start: str) -> dict[str, str]:
        return _cells(table, start)

    cells = cells_of("| CartPole-v1 (≥ 475) | trpo | natrl")
    assert cells["runs"] == "2"
    assert cells["final mean ± std"] == "450.0 ± 70.7"  # sample std of (500, 400)
    # IQM of 2 runs: both kept; the bootstrap draws (400, 400), (400, 500), (500, 400), (500, 500): the 2.5% and
    # 97.5% quantiles of {400: 1/4, 450: 1/2, 500: 1/4} are 400 and 500. Without a curve, last 3 = final.
    assert cells["final IQM [95% CI]"] == cells["last-3 IQM [95% CI]"] == "450.0 [400.0, 500.0]"
    assert list(cells)[4:7] == ["final IQM [95% CI]", "last-3 IQM [95% CI]", "P(natrl > peer), final"]
    assert cells["steps/s"] == "1,500 ± 707"
    assert cells["reached"] == "1/2"
    assert cells["steps/s ratio"] == "" and cells["time-to-threshold ratio"] == ""  # the ratios sit on the peer's row
    peer = cells_of("| CartPole-v1 (≥ 475) | trpo | sb3-contrib TRPO")
    assert peer["final IQM [95% CI]"] == "485.0 [480.0, 490.0]"
    assert peer["P(natrl > peer), final"].startswith("0.50 [")  # 500 beats 480 and 490, 400 neither: 2/4
    assert peer["steps/s ratio"] == "2.00"  # natrl / peer: (1000 + 2000) / (500 + 1000)
    assert peer["time-to-threshold ratio"] == "0.50 (1 seed)"  # only seed 0: both reached the threshold
    assert "| Nope-v0 | trpo | natrl | 0 (+1 failed) |" in table
    assert "natrl trpo Nope-v0 seed 0: ValueError: unknown environment id 'Nope-v0'" in table


def test_report_merges_sweeps_into_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from natrl.bench.results import write_results

    for name, rows in (
        ("a", [_row("natrl", 0, 1000.0, 10.0, 500.0), _row("sb3", 0, 500.0, 20.0, 480.0)]),
        ("b", [{**_row("natrl", 0, 800.0, None, 900.0), "env": "Hopper-v5", "threshold": 2500.0}]),
    ):
        (tmp_path / name).mkdir()
        write_results(tmp_path / name, rows, {"command": f"natrl bench {name}", "eval_episodes": 10, "complete": True})
    out = tmp_path / "merged"
    assert main(["--report", str(tmp_path / "a"), str(tmp_path / "b" / "results.json"), "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert [(r["index"], r["env"], r["library"]) for r in data["runs"]] == [
        (0, "CartPole-v1", "natrl"),
        (1, "CartPole-v1", "sb3"),
        (2, "Hopper-v5", "natrl"),
    ]
    table = (out / "table.md").read_text()
    assert "Command: `natrl bench a`" in table and "Command: `natrl bench b`" in table
    hopper = _cells(table, "| Hopper-v5 (≥ 2500) | trpo | natrl")
    assert (hopper["runs"], hopper["sweep"], hopper["steps"]) == ("1", "s2", "1,000")
    assert hopper["final mean ± std"] == "900.0"
    assert hopper["final IQM [95% CI]"] == "900.0 (1 run)"
    assert "Code (s1): natrl commit not recorded" in table
    assert table in capsys.readouterr().out


def test_report_lets_a_rerun_replace_the_earlier_run_of_the_same_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disturbed job re-run in a later sweep replaces its first run (same library, algo, env, seed,
    budget, hyperparameters) in place; a run with other hyperparameters is a different experiment."""
    from natrl.bench.results import write_results

    first = [_row("natrl", 0, 1000.0, 10.0, 500.0), _row("sb3", 0, 500.0, 20.0, 480.0), _row("natrl", 1, 900.0, 9.0, 1)]
    rerun = [
        _row("natrl", 0, 1500.0, 8.0, 490.0),
        {**_row("natrl", 1, 700.0, 9.0, 2), "hyperparameters": {"a": 1}},
        {**_row("sb3", 0, 2000.0, 5.0, 470.0), "device": "cuda"},  # rows without a device ran on the CPU
    ]
    for name, rows in (("a", first), ("b", rerun)):
        (tmp_path / name).mkdir()
        write_results(tmp_path / name, rows, {"command": f"natrl bench {name}", "eval_episodes": 10, "complete": True})
    out = tmp_path / "merged"
    assert main(["--report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    got = [(r["index"], r["library"], r["seed"], r["steps_per_second"]) for r in data["runs"]]
    assert got == [
        (0, "natrl", 0, 1500.0),
        (1, "sb3", 0, 500.0),
        (2, "natrl", 1, 900.0),
        (3, "sb3", 0, 2000.0),  # another device: another experiment, kept beside the CPU run
        (4, "natrl", 1, 700.0),
    ]
    assert data["metadata"]["replaced"] == [
        "natrl trpo CartPole-v1 seed 0: the later run (1,500 steps/s) replaces the earlier (1,000 steps/s)"
    ]
    table = (out / "table.md").read_text()
    assert "Replaced: natrl trpo CartPole-v1 seed 0" in table
    assert "replaces the earlier" in capsys.readouterr().out


# --------------------------------------------------------------------------- real sweeps
def _check_results(out: Path, expected: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    data = json.loads((out / "results.json").read_text())
    meta, runs = data["metadata"], data["runs"]
    assert meta["complete"] is True and meta["versions"]["torch"] and meta["cpu_count"] >= 1
    assert meta["command"].startswith("python -m natrl.bench")
    assert [(r["library"], r["algo"], r["env"]) for r in runs] == expected
    # provenance: the sweep's commit (read once, in the driver), dirty flag and command on every row,
    # the versions the worker imported and the date it started
    assert meta["commit"] is None or re.fullmatch("[0-9a-f]{40}", meta["commit"])
    assert isinstance(meta["dirty"], bool) or meta["commit"] is None
    for r in runs:
        assert (r["sweep"], r["commit"], r["dirty"], r["command"]) == (
            meta["sweep"],
            meta["commit"],
            meta["dirty"],
            meta["command"],
        )
        assert datetime.fromisoformat(r["date"]).tzinfo is not None
        assert {"natrl", "torch", "gymnasium", "numpy"} <= set(r["versions"]) and r["versions"]["torch"]
        assert ("sb3-contrib" in r["versions"]) == (r["library"] == "sb3")
    for r in runs:
        if r["status"] != "ok":
            continue
        assert r["steps"] >= r["budget"] and r["error"] is None and r["torch_threads"] == 1
        assert r["train_seconds"] > 0 and r["wall_seconds"] > r["train_seconds"] + r["eval_seconds"]
        assert r["steps_per_second"] == pytest.approx(r["steps"] / r["train_seconds"])
        curve = r["curve"]
        assert curve[-1]["steps"] == r["steps"] and curve[-1]["mean"] == r["final_eval_mean"]
        assert [p["steps"] for p in curve] == sorted(p["steps"] for p in curve) and len(curve) >= 2
        reached = [p for p in curve if p["mean"] >= r["threshold"]]
        assert r["threshold_steps"] == (reached[0]["steps"] if reached else None)
        assert math.isfinite(r["final_eval_mean"]) and r["hyperparameters"]["n_steps"] >= 1
    with (out / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert tuple(csv_rows[0]) == CSV_FIELDS and len(csv_rows) == len(runs)
    assert "| env | algo | library |" in (out / "table.md").read_text()
    return runs


def test_sequential_sweep_against_sb3_with_a_failing_job(tmp_path: Path) -> None:
    out = tmp_path / "seq"
    argv = [
        "--algos",
        "trpo",
        "--envs",
        "CartPole-v1,Nope-v0",
        "--seeds",
        "0",
        "--steps",
        "2048",  # the preset's rollouts are 2 × 512 steps: evaluations at 1024 and 2048
        "--eval-every",
        "1024",
        "--eval-episodes",
        "2",
        "--against",
        "sb3",
        "--out",
        str(out),
        "-q",
    ]
    assert main(argv) == 1  # some job failed
    runs = _check_results(
        out,
        [
            ("natrl", "trpo", "CartPole-v1"),
            ("sb3", "trpo", "CartPole-v1"),
            ("natrl", "trpo", "Nope-v0"),
            ("sb3", "trpo", "Nope-v0"),
        ],
    )
    assert [r["status"] for r in runs] == ["ok", "ok", "failed", "failed"]
    assert "Nope-v0" in runs[2]["error"] and "Nope" in runs[3]["error"]
    assert runs[1]["implementation"].startswith("sb3-contrib TRPO") and runs[1]["peer"]["kwargs"]["n_steps"] == 512
    assert (out / "curves_CartPole-v1.png").stat().st_size > 1000
    assert main(argv) == 2  # refuses to overwrite the results


def test_ray_sweep_local(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    argv = [
        "--algos",
        "trpo,ppo",
        "--envs",
        "CartPole-v1,Nope-v0",
        "--seeds",
        "1",
        "--steps",
        "2048",
        "--eval-episodes",
        "2",
        "--ray",
        "--ray-cpus",
        "2",
        "--out",
        str(out),
        "-q",
    ]
    assert main(argv) == 1
    runs = _check_results(
        out,
        [
            ("natrl", "trpo", "CartPole-v1"),
            ("natrl", "ppo", "CartPole-v1"),
            ("natrl", "trpo", "Nope-v0"),
            ("natrl", "ppo", "Nope-v0"),
        ],
    )
    assert [r["status"] for r in runs] == ["ok", "ok", "failed", "failed"]
    meta = json.loads((out / "results.json").read_text())["metadata"]
    assert meta["ray"]["cluster_cpus"] == 2 and meta["execution"].startswith("Ray (local)")


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["--algos", "trpo", "--envs", "CartPole-v1", "--seeds", "0", "--ray", "--dry-run"]) == 2
    assert "--ray needs Ray, which is not installed: pip install 'natrl[ray]'" in capsys.readouterr().err


def test_cli_registers_bench(capsys: pytest.CaptureFixture[str]) -> None:
    cli = pytest.importorskip("natrl.cli")
    code = cli.main(
        ["bench", "--algos", "trpo,npg", "--envs", "Pendulum-v1", "--seeds", "0-1", "--against", "sb3", "--dry-run"]
    )
    assert code == 0
    names = re.findall(r"(?:natrl|sb3) \w+ Pendulum-v1 s\d", capsys.readouterr().out)
    assert names == [
        "natrl trpo Pendulum-v1 s0",
        "sb3 trpo Pendulum-v1 s0",
        "natrl npg Pendulum-v1 s0",
        "natrl trpo Pendulum-v1 s1",
        "sb3 trpo Pendulum-v1 s1",
        "natrl npg Pendulum-v1 s1",
    ]


def test_a_dry_run_says_what_the_real_run_would_find_out(capsys: pytest.CaptureFixture[str]) -> None:
    # an unknown id (its jobs would fail one by one), a peer list without the algorithm, a negative seed
    assert main(["--algos", "trpo,acktr", "--envs", "Nope-v0,CartPole-v1", "--seeds", "0", "--against", "sb3",
                 "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "warning: 'Nope-v0' is not a registered environment id; its jobs will fail",
        "note: --against sb3 has no peer for acktr; its natrl jobs run alone",
    ]
    with pytest.raises(SystemExit):
        main(["--algos", "trpo", "--envs", "CartPole-v1", "--seeds", "-1", "--dry-run"])
    assert "a seed lies in [0, 2**63)" in capsys.readouterr().err


def test_set_overrides_every_natrl_job_and_names_bad_keys() -> None:
    from natrl.bench.jobs import BenchError as _BenchError
    from natrl.bench.jobs import plan_jobs as _plan

    jobs = _plan(["trpo", "ppo"], ["CartPole-v1"], [0], overrides=["fast_paths=false", "gamma=0.9"])
    assert [j.hyperparameters["fast_paths"] for j in jobs] == [False, False]
    assert [j.hyperparameters["gamma"] for j in jobs] == [0.9, 0.9]
    with pytest.raises(_BenchError, match="did you mean fast_paths"):
        _plan(["trpo"], ["CartPole-v1"], [0], overrides=["fast_path=false"])

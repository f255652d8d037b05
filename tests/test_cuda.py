"""The same code on a CUDA device: agents, checkpoints across devices, solvers and K-FAC.

Skipped where torch sees no GPU (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
Each test compares the CUDA result with the CPU result computed the same way, so a device
mix-up (a CPU tensor meeting a CUDA one, a generator on the wrong device, a checkpoint
that only loads where it was written) fails here.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch
from torch import nn

from natrl import ACKTR, NPG, PPO, TRPO
from natrl.optim import KFAC, minimize
from natrl.params import flatten
from natrl.rl import load_agent
from natrl.rl.batch import Batch, Sequences
from natrl.rl.natural import PolicyObjective

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SMALL = {"n_envs": 2, "n_steps": 64, "critic_epochs": 2}
AGENTS = [
    (TRPO, {}),
    (TRPO, {"curvature": "kfac"}),
    (NPG, {}),
    (PPO, {"n_epochs": 2, "batch_size": 32}),
    (ACKTR, {}),
]


def _on(module: nn.Module, device_type: str) -> bool:
    return all(p.device.type == device_type for p in module.parameters())


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize(("cls", "extra"), AGENTS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_agent_learns_on_cuda_and_checkpoint_moves_between_devices(cls, extra, env_id, tmp_path) -> None:
    kwargs = {**SMALL, **extra}
    if cls is PPO:
        kwargs.pop("critic_epochs")
    agent = cls(env_id, seed=0, device="cuda", normalize_obs=True, **kwargs)
    before = flatten(agent.actor.parameters()).detach().clone()
    agent.learn(3 * 2 * 64)
    after = flatten(agent.actor.parameters()).detach()
    assert _on(agent.actor, "cuda") and _on(agent.critic, "cuda")
    assert torch.isfinite(after).all() and not torch.equal(before, after)

    path = agent.save(tmp_path / "m.pt")
    on_cpu = load_agent(str(path), device="cpu")
    on_gpu = cls.load(path, device="cuda")
    assert _on(on_cpu.actor, "cpu") and _on(on_gpu.actor, "cuda")
    torch.testing.assert_close(flatten(on_cpu.actor.parameters()), after.cpu(), rtol=0, atol=0)
    obs = np.random.default_rng(0).normal(size=(32, *agent.observation_space.shape)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], on_gpu.predict(obs, deterministic=True)[0])
    a_cpu, a_gpu = on_cpu.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0]
    if env_id == "CartPole-v1":  # argmax of nearly equal logits may flip only on exact ties
        assert (a_cpu == a_gpu).mean() >= 0.95
    else:
        np.testing.assert_allclose(a_cpu, a_gpu, rtol=1e-4, atol=1e-5)


def _to(batch: Batch, device: str) -> Batch:
    """The batch (and its sequences, for a recurrent policy) on another device."""
    moved = {f.name: getattr(batch, f.name) for f in fields(Batch) if f.name != "seq"}
    moved = {k: v.to(device) for k, v in moved.items()}
    seq = batch.seq
    if seq is not None:
        seq = Sequences(seq.length, seq.starts.to(device), seq.actor_state.to(device), seq.critic_state.to(device))
    return Batch(**moved, seq=seq)


@pytest.mark.parametrize(("cls", "policy"), [(TRPO, "MlpPolicy"), (NPG, "MlpPolicy"), (TRPO, "MlpLstmPolicy")])
def test_one_policy_step_on_the_same_batch_agrees_with_the_cpu(cls, policy) -> None:
    """The same rollout (made on the CPU) updates the same start on both devices alike (float32).

    Rollouts themselves differ across devices by design: the CPU samples actions with NumPy,
    CUDA with a torch generator on the GPU (and K-FAC's sampled targets differ likewise, so
    ACKTR is compared through the learning test above only).
    """
    kw = dict(policy=policy, policy_kwargs=dict(lstm_hidden_size=16)) if policy != "MlpPolicy" else {}
    agents = [cls("Pendulum-v1", seed=1, device=d, **SMALL, **kw) for d in ("cpu", "cuda")]
    start = [flatten(a.actor.parameters()).detach().cpu() for a in agents]
    torch.testing.assert_close(start[0], start[1], rtol=0, atol=0)
    batch, _ = agents[0]._make_batch()
    agents[0]._prepare(batch)
    gpu_batch = _to(batch, "cuda")
    stats = [a._policy_step(PolicyObjective(a.actor, b)) for a, b in zip(agents, (batch, gpu_batch))]
    end = [flatten(a.actor.parameters()).detach().cpu() for a in agents]
    step = [e - s for e, s in zip(end, start)]
    assert step[0].norm() > 0
    rel = float((step[1] - step[0]).norm() / step[0].norm())
    assert rel < 1e-3, f"the CUDA step differs from the CPU step by {rel:.2e} (relative)"
    assert stats[1]["kl"] == pytest.approx(stats[0]["kl"], rel=1e-3)


@pytest.mark.parametrize("method", ["newton", "newton-cg", "trust-ncg", "bfgs", "lbfgs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_minimize_on_cuda_finds_the_cpu_minimiser(method: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 20, generator=gen, dtype=torch.float64)
    y = (x @ torch.randn(20, generator=gen, dtype=torch.float64) > 0).to(torch.float64)

    def make(device: str):  # logistic regression with a small ridge term
        xd, yd = x.to(device, dtype), y.to(device, dtype)

        def fun(w: torch.Tensor) -> torch.Tensor:
            z = xd @ w
            return torch.nn.functional.binary_cross_entropy_with_logits(z, yd) + 1e-2 * (w * w).sum()

        return fun

    results = {d: minimize(make(d), torch.zeros(20, device=d, dtype=dtype), method=method) for d in ("cpu", "cuda")}
    assert results["cuda"].x.device.type == "cuda" and results["cuda"].x.dtype == dtype
    assert results["cuda"].success, results["cuda"].message
    tol = 1e-3 if dtype == torch.float32 else 1e-6
    torch.testing.assert_close(results["cuda"].x.cpu(), results["cpu"].x, rtol=tol, atol=tol)


def test_kfac_optimizer_on_cuda_follows_the_cpu_run() -> None:
    def run(device: str) -> tuple[list[float], nn.Module]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)).to(device)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(256, 8, generator=gen).to(device)
        y = torch.randint(0, 3, (256,), generator=gen).to(device)
        opt = KFAC(model, lr=0.1, damping=1e-2, inverse_interval=1, kl_clip=None)
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses, model

    cpu_losses, _ = run("cpu")
    gpu_losses, model = run("cuda")
    assert _on(model, "cuda")
    assert gpu_losses[-1] < 0.8 * gpu_losses[0]
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=2e-3)


@pytest.mark.parametrize("cls", [TRPO, PPO, ACKTR])
@pytest.mark.parametrize("env_name", ["MultiDiscreteActions", "MultiBinaryActions", "Box2DActions",
                                      "DictObservations", "DiscreteObservations", "ImageObservations"])  # fmt: skip
def test_smoke_every_space_and_a_cnn_train_on_cuda(cls, env_name, tmp_path) -> None:
    import toy_envs

    env = getattr(toy_envs, env_name)
    kwargs = {"n_envs": 2, "n_steps": 32, **({"batch_size": 32} if cls is PPO else {"critic_epochs": 1})}
    agent = cls(env, seed=0, device="cuda", **kwargs)
    agent.learn(128)
    assert _on(agent.actor, "cuda") and torch.isfinite(flatten(agent.actor.parameters())).all()
    batch, _ = agent._make_batch()
    assert batch.obs.device.type == "cuda"
    if env_name == "ImageObservations":
        assert batch.obs.dtype == torch.uint8
    loaded = cls.load(agent.save(tmp_path / "m.pt"), env=env, device="cpu")
    assert _on(loaded.actor, "cpu")


def test_smoke_users_shared_trunk_module_on_cuda() -> None:
    import toy_envs

    agent = TRPO("CartPole-v1", seed=0, device="cuda", policy=toy_envs.LayerNormSiLUActorCritic(4, 2), **SMALL)
    agent.learn(256)
    assert _on(agent.actor, "cuda") and torch.isfinite(flatten(agent.actor.parameters())).all()


@pytest.mark.parametrize("cls", [TRPO, PPO])
def test_smoke_recurrent_policy_trains_and_predicts_on_cuda(cls) -> None:
    agent = cls("CartPoleNoVel-v1", policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=16), device="cuda",
                n_envs=2, n_steps=32, sequence_length=8)  # fmt: skip
    agent.learn(256)
    assert _on(agent.actor, "cuda") and agent.actor.core is not None
    obs = np.zeros((2, 4), np.float32)
    _, state = agent.predict(obs)
    assert state[0].shape == (1, 2, 16)


def test_smoke_bench_jobs_train_natrl_and_sb3_on_cuda() -> None:
    pytest.importorskip("sb3_contrib")
    from natrl.bench.jobs import plan_jobs
    from natrl.bench.worker import run_job

    jobs = plan_jobs(["trpo"], ["CartPole-v1"], [0], against="sb3", steps=2048, eval_every=0, device="cuda")
    rows = [run_job(job) for job in jobs]
    assert [(r["library"], r["status"], r["device"]) for r in rows] == [("natrl", "ok", "cuda"), ("sb3", "ok", "cuda")]

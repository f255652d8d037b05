"""Data-parallel K-FAC: gloo ranks spawned on this CPU.

Every rank trains a copy of the same float64 model on its slice of each batch; the replicas must
stay bit-identical, and equal (to rounding) to one process training on the whole batch, for
DDP-wrapped models and for plain torch.distributed with ``allreduce_grads=True``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from natrl.optim import KFAC
from natrl.optim import kfac_distributed as kfd

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend")

BATCH = 16  # whole batch; each of P ranks takes BATCH / P rows
STEPS = 8

# name -> (model, KFAC options, DDP?, closure for adaptive damping?)
CONFIGS: dict[str, dict[str, Any]] = {
    "ddp_round_robin": {"model": "mlp", "ddp": True, "kfac": {"assignment": "round_robin"}},
    "ddp_compute_all": {"model": "mlp", "ddp": True, "kfac": {"assignment": "compute_all"}},
    "ddp_conv_small_buckets": {"model": "cnn", "ddp": True, "kfac": {"bucket_cap_mb": 1e-4}},
    "plain_allreduce_grads": {"model": "mlp", "ddp": False, "kfac": {"allreduce_grads": True}},
    "ddp_adaptive_damping": {
        "model": "mlp",
        "ddp": True,
        "closure": True,
        "kfac": {"adaptive_damping": True, "damping_interval": 2},
    },
    # Embedding, GroupNorm, grouped conv, LayerNorm and Linear blocks; EKFAC's diagonal is all-reduced too
    "ddp_every_block_ekfac": {"model": "mix", "ddp": True, "kfac": {"method": "ekfac"}},
    # KAISA's knob: "1/P" is one gradient worker per block (each decomposition on one rank)
    "ddp_workers_1_over_p": {"model": "mlp", "ddp": True, "kfac": {"grad_worker_fraction": "1/P"}},
    "ddp_workers_half_every_block": {"model": "mix", "ddp": True, "kfac": {"grad_worker_fraction": 0.5}},
    "plain_workers_1_over_p_inverse": {
        "model": "cnn",
        "ddp": False,
        "kfac": {"grad_worker_fraction": "1/P", "method": "inverse", "allreduce_grads": True},
    },
}
COMMON = {"lr": 0.2, "momentum": 0.9, "damping": 1e-2, "kl_clip": 1e-2, "inverse_interval": 3}


class _Mix(nn.Module):
    """Token ids cut from the image feed an embedding, the image a grouped conv stack (every
    factor of full rank or with a one-dimensional null space: EKFAC's diagonal in a degenerate
    eigenspace depends on the basis eigh picks there, which rounding changes)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 2)
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Tanh(), nn.Conv2d(4, 4, 3, groups=2),
                                  nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x[:, 0, 0, :2].abs() * 2).long().clamp(max=4)
        h = torch.cat([self.emb(idx).flatten(1), self.conv(x)], 1)
        return self.head(self.norm(h))


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mix":
        return _Mix().double()
    if kind == "mlp":
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()


def _data(kind: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    shape = (BATCH, 6) if kind == "mlp" else (BATCH, 1, 6, 6)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (BATCH,), generator=g)


def _train(name: str, rank: int, world: int) -> tuple[torch.Tensor, dict[str, Any], KFAC]:
    """Train config ``name`` on rows [rank·B/P, (rank+1)·B/P) of each batch; world 1: the whole batch."""
    cfg = CONFIGS[name]
    model = _model(cfg["model"])
    net: nn.Module = model
    if world > 1 and cfg["ddp"]:
        net = nn.parallel.DistributedDataParallel(model)
    options = dict(cfg["kfac"])
    if options.get("grad_worker_fraction") == "1/P":
        options["grad_worker_fraction"] = 1.0 / world
    opt = KFAC(net, **COMMON, **options, process_group="default" if world > 1 else None)
    n = BATCH // world
    for step in range(STEPS):
        x, y = _data(cfg["model"], step)
        x, y = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            return loss

        if cfg.get("closure"):
            opt.step(closure)
        else:
            closure()
            opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    factors = {k.removeprefix("module."): v for k, v in opt.factors().items()}
    return flat, factors, opt


def _worker(rank: int, world: int, names: list[str], init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results: dict[str, Any] = {}
        for name in names:
            flat, factors, opt = _train(name, rank, world)
            assert opt.stats is not None
            results[name] = {"params": flat, "factors": factors, "damping": opt.damping,
                             "comm": opt.stats.comm_seconds, "decomposition_bytes": opt.decomposition_bytes(),
                             "preconditioned": opt.stats.preconditioned_layers}  # fmt: skip
        # a rank without statistics for a factor contributes nothing to its mean
        mine = torch.full((3, 3), float(rank + 1), dtype=torch.float64) if rank == 0 else None
        (shared,) = kfd.all_reduce_factors([mine], [3], [torch.float64], torch.device("cpu"), dist.group.WORLD,
                                           bucket_bytes=1024)  # fmt: skip
        results["presence"] = shared
        # a decomposition that failed on its owner arrives as None everywhere; a fallback keeps its status
        jobs = [kfd.FactorJob(("l", "a"), 2, torch.float64), kfd.FactorJob(("l", "g"), 3, torch.float64)]
        vecs = torch.arange(9, dtype=torch.float64).reshape(3, 3)
        local = {0: None} if rank == 0 else {1: (torch.ones(3, dtype=torch.float64), vecs, kfd.FALLBACK)}
        if rank > 1:
            local = {}
        results["broadcast"] = kfd.broadcast_decompositions(jobs, [0, 1], local, rank, dist.group.WORLD,
                                                            torch.device("cpu"))  # fmt: skip
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # every rank is done communicating before any tears gloo down (a rank destroying its group while a peer's
        # last collective is still in flight can abort with "terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(world: int, names: list[str], tmp_path: Path, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Run configs ``names`` on ``world`` spawned gloo ranks (killed if not done in ``timeout_s``)."""
    args = (world, names, str(tmp_path / "rendezvous"), str(tmp_path))
    ctx = mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"{world} gloo ranks did not finish in {timeout_s:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _spawn(2, list(CONFIGS), tmp_path_factory.mktemp("ddp2"))


@pytest.fixture(scope="module")
def one_process() -> dict[str, Any]:
    return {name: _train(name, 0, 1) for name in CONFIGS}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_replicas_stay_bit_identical(two_ranks: list[dict[str, Any]], name: str) -> None:
    r0, r1 = (r[name] for r in two_ranks)
    assert torch.equal(r0["params"], r1["params"])
    for layer, pair0 in r0["factors"].items():
        for f0, f1 in zip(pair0, r1["factors"][layer], strict=True):
            assert (f0 is None and f1 is None) or torch.equal(f0, f1)
    assert r0["damping"] == r1["damping"]
    assert r0["comm"] > 0.0


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_on_half_batches_equal_one_process_on_the_whole_batch(
    two_ranks: list[dict[str, Any]], one_process: dict[str, Any], name: str
) -> None:
    flat, factors, opt = one_process[name]
    dist_run = two_ranks[0][name]
    torch.testing.assert_close(dist_run["params"], flat, rtol=1e-5, atol=1e-8)
    for layer, pair in factors.items():
        for f2, f in zip(dist_run["factors"][layer], pair, strict=True):
            assert (f is None) == (f2 is None)
            if f is not None:
                torch.testing.assert_close(f2, f, rtol=1e-5, atol=1e-10)
    assert dist_run["damping"] == pytest.approx(opt.damping, rel=1e-9)
    if name == "ddp_adaptive_damping":
        assert opt.damping != COMMON["damping"]  # λ did adapt, and alike on both sides


def test_a_rank_without_statistics_contributes_nothing(two_ranks: list[dict[str, Any]]) -> None:
    for r in two_ranks:
        torch.testing.assert_close(r["presence"], torch.ones(3, 3, dtype=torch.float64), rtol=0, atol=0)


def test_a_failed_decomposition_is_none_on_every_rank(two_ranks: list[dict[str, Any]]) -> None:
    for r in two_ranks:
        failed, fallback = r["broadcast"]
        assert failed is None
        assert fallback is not None and fallback[2] == kfd.FALLBACK
        assert torch.equal(fallback[1], torch.arange(9, dtype=torch.float64).reshape(3, 3))


FOUR_RANKS = ["ddp_round_robin", "plain_allreduce_grads", "ddp_workers_1_over_p", "ddp_workers_half_every_block",
              "plain_workers_1_over_p_inverse"]  # fmt: skip


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _spawn(4, FOUR_RANKS, tmp_path_factory.mktemp("ddp4"))


@pytest.mark.parametrize("name", FOUR_RANKS)
def test_four_ranks_equal_one_process(four_ranks: list[dict[str, Any]], one_process: dict[str, Any], name: str) -> None:
    for r in four_ranks[1:]:
        assert torch.equal(r[name]["params"], four_ranks[0][name]["params"])
        assert r[name]["preconditioned"] == four_ranks[0][name]["preconditioned"]
    torch.testing.assert_close(four_ranks[0][name]["params"], one_process[name][0], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    ("world", "name", "holders"),
    [
        (2, "ddp_round_robin", 2),
        (2, "ddp_workers_1_over_p", 1),
        (2, "ddp_workers_half_every_block", 1),
        (4, "ddp_round_robin", 4),
        (4, "ddp_workers_1_over_p", 1),
        (4, "ddp_workers_half_every_block", 2),
        (4, "plain_workers_1_over_p_inverse", 1),
    ],
)
def test_each_decomposition_is_held_by_its_gradient_workers_only(
    two_ranks: list[dict[str, Any]],
    four_ranks: list[dict[str, Any]],
    one_process: dict[str, Any],
    world: int,
    name: str,
    holders: int,
) -> None:
    """Summed over the ranks, the stored decompositions are those of one process times k = round(f·P)."""
    runs = two_ranks if world == 2 else four_ranks
    per_rank = [r[name]["decomposition_bytes"] for r in runs]
    whole = one_process[name][2].decomposition_bytes()
    assert whole > 0
    assert sum(per_rank) == holders * whole
    if holders < world:
        assert max(per_rank) < whole


def test_worker_groups_are_balanced_by_cost_and_deterministic() -> None:
    costs = [10, 400, 90, 400, 30]
    # largest first to the lighter group: 400 → 0, 400 → 1, 90 → 0 (a tie), 30 → 1, 10 → 1 (430 < 490)
    assert kfd.assign_worker_groups(costs, 2) == [1, 0, 0, 1, 1]
    assert kfd.assign_worker_groups(costs, 1) == [0] * 5
    assert [kfd.worker_count(f, 4) for f in (0.01, 0.25, 0.5, 0.6, 1.0)] == [1, 1, 2, 2, 4]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"grad_worker_fraction": 0.0}, "grad_worker_fraction"),
        ({"grad_worker_fraction": 1.5}, "grad_worker_fraction"),
        ({"grad_worker_fraction": 0.5, "assignment": "compute_all"}, "assignment='round_robin'"),
        ({"grad_worker_fraction": 0.5, "method": "ekfac"}, "method 'eigen' or 'inverse'"),
    ],
)
def test_grad_worker_fraction_outside_its_range_is_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KFAC(_model("mlp"), process_group=None, **options)


def test_round_robin_assignment_is_balanced_and_deterministic() -> None:
    jobs = [kfd.FactorJob((f"l{i}", k), d, torch.float32) for i, (k, d) in enumerate(
        [("a", 65), ("g", 128), ("a", 129), ("g", 128), ("a", 129), ("g", 10)])]  # fmt: skip
    owners = kfd.assign_round_robin(jobs, 2)
    assert owners == kfd.assign_round_robin(jobs, 2)
    # largest first: 129 (l2) → 0, 129 (l4) → 1, 128 (l1) → 0, 128 (l3) → 1, 65 → 0, 10 → 1
    assert owners == [0, 0, 0, 1, 1, 1]
    assert kfd.assign_round_robin(jobs, 1) == [0] * 6


def test_without_a_process_group_nothing_is_communicated() -> None:
    assert kfd.resolve_group("default") == (None, 0, 1)
    assert kfd.resolve_group(None) == (None, 0, 1)
    with pytest.raises(ValueError, match="process_group"):
        kfd.resolve_group("world")
    with pytest.raises(RuntimeError, match="not initialised"):
        kfd.resolve_group(object())

"""Data-parallel K-FAC on ``torch.distributed``: bucketed factor all-reduce, decomposition
assignment and broadcast.

Each rank computes K-FAC factors from its own share of the batch; their mean over the ranks is
the factor of the whole batch when every rank holds the same number of examples (A is a mean
over rows; natrl's ``per_example`` G is a mean of per-example outer products, see
:func:`natrl.optim.kfac.linear_factors`). So

    A = (1/P) Σ_p A_p,   G = (1/P) Σ_p G_p

over the P ranks, each one ``all_reduce`` of a flat buffer per bucket: only the upper triangle
of each symmetric factor is sent, several factors share one buffer up to ``bucket_bytes``, and
one presence weight per factor lets a rank that saw no data for a layer contribute nothing
(the mean is then over the ranks that did).

The eigendecompositions (O(d³) each, the expensive part) are dealt out to ranks instead of
being repeated everywhere: ``"round_robin"`` sorts the factors (A and G of every layer
separately) by size, largest first, and gives the i-th to rank i mod P; each rank decomposes
its share and broadcasts eigenvalues, eigenvectors and a status word in one buffer per rank.
``"compute_all"`` has every rank decompose every factor (no broadcast; the same result because
the all-reduced factors are identical on every rank). This is the communication-optimal end of
KAISA (Pauloski et al. 2021, "KAISA: an adaptive second-order optimizer framework for deep
neural networks", SC'21, §3: every rank then holds every decomposition and preconditions every
layer itself) with the decomposition work split across ranks.

KAISA's knob (§3.2, ``grad_worker_fraction`` f ∈ (0, 1]) moves from there to the memory-optimal
end: each layer gets k = max(1, round(f·P)) *gradient workers*. The P ranks form P/k worker
groups of k consecutive ranks (:class:`WorkerGroups`); every Kronecker or embedding block is
given to one worker group (:func:`assign_worker_groups`, balanced by the bytes of its
decompositions), whose members alone decompose its factors (dealt out round robin inside the
group and broadcast within it) and keep the decompositions. They all precondition the block's
gradient, and each sends the result to the ranks that do not hold the block: rank j·k + c of
worker group j broadcasts over *column* c = {c, c + k, c + 2k, …}, which holds exactly one
rank of every worker group (:func:`broadcast_from_workers`). f = 1/P (k = 1) stores each
decomposition on one rank and broadcasts preconditioned gradients; f = 1 is ``"round_robin"``
above (every rank a worker of every block, nothing but decompositions broadcast).

Nothing here is called without a process group of more than one rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "ASSIGNMENTS",
    "FactorJob",
    "WorkerGroups",
    "all_reduce_factors",
    "all_reduce_mean",
    "assign_round_robin",
    "assign_worker_groups",
    "broadcast_decompositions",
    "broadcast_from_workers",
    "resolve_group",
    "worker_count",
]

ASSIGNMENTS = ("round_robin", "compute_all")

# status words sent with each broadcast decomposition
OK, FALLBACK, FAILED = 0.0, 1.0, 2.0


def resolve_group(process_group: Any) -> tuple[Any, int, int]:
    """``(group, rank, world size)`` for K-FAC's ``process_group`` argument.

    ``"default"`` is the default group when ``torch.distributed`` is initialised, else none;
    ``None`` is none; anything else is taken as a process group. A group of one rank is none.

    Returns:
        ``(group or None, rank in the group, world size)``; ``(None, 0, 1)`` for no communication.

    Raises:
        RuntimeError: a group is given but ``torch.distributed`` is not initialised.
    """
    if process_group is None:
        return None, 0, 1
    if isinstance(process_group, str):
        if process_group != "default":
            raise ValueError(f"KFAC: process_group must be 'default', None or a process group, got {process_group!r}")
        if not (dist.is_available() and dist.is_initialized()):
            return None, 0, 1
        group = dist.group.WORLD
    else:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("KFAC: a process_group was given but torch.distributed is not initialised")
        group = process_group
    world = dist.get_world_size(group)
    if world <= 1:
        return None, 0, 1
    return group, dist.get_rank(group), world


def _elements(nbytes: int, dtype: torch.dtype) -> int:
    return max(1, nbytes // torch.empty((), dtype=dtype).element_size())


def _buckets(sizes: Sequence[int], cap: int) -> list[list[int]]:
    """Consecutive index runs whose sizes sum to ≤ ``cap`` (an item larger than ``cap`` alone)."""
    out: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for i, s in enumerate(sizes):
        if cur and total + s > cap:
            out.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += s
    if cur:
        out.append(cur)
    return out


def all_reduce_mean(tensors: Sequence[Tensor], group: Any, *, bucket_bytes: int) -> None:
    """Replace each tensor in place by its mean over the group's ranks, one ``all_reduce`` per bucket.

    Tensors are packed in order into flat buffers of one dtype and device holding at most
    ``bucket_bytes`` (a larger tensor travels alone). Every rank must pass tensors of the same
    shapes, dtypes and order.
    """
    world = dist.get_world_size(group)
    by_kind: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        by_kind.setdefault((t.dtype, t.device), []).append(t)
    for (dt, _), ts in by_kind.items():
        for idx in _buckets([t.numel() for t in ts], _elements(bucket_bytes, dt)):
            chunk = [ts[i] for i in idx]
            buf = torch.cat([t.reshape(-1) for t in chunk])
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
            buf.div_(world)
            for t, piece in zip(chunk, buf.split([t.numel() for t in chunk]), strict=True):
                t.copy_(piece.view_as(t))


def all_reduce_factors(
    factors: Sequence[Tensor | None],
    dims: Sequence[int],
    dtypes: Sequence[torch.dtype],
    device: torch.device,
    group: Any,
    *,
    bucket_bytes: int,
) -> list[Tensor | None]:
    """The mean over ranks of symmetric factors, sending upper triangles in buckets.

    Args:
        factors: this rank's factor for each slot (shape (dims[i], dims[i])) or None when this
            rank has no statistics for it.
        dims: each slot's dimension (the same on every rank: it fixes the buffer layout).
        dtypes: each slot's dtype (likewise).
        device: where the buffers live.
        group: the process group.
        bucket_bytes: most bytes per all-reduce buffer.

    Returns:
        For each slot the symmetric mean over the ranks that had a factor, or None when none had.
    """
    out: list[Tensor | None] = [None] * len(factors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, dt in enumerate(dtypes):
        by_dtype.setdefault(dt, []).append(i)
    for dt, slots in by_dtype.items():
        sizes = [dims[i] * (dims[i] + 1) // 2 + 1 for i in slots]  # + the presence weight
        for idx in _buckets(sizes, _elements(bucket_bytes, dt)):
            buf = torch.zeros(sum(sizes[j] for j in idx), dtype=dt, device=device)
            pieces = buf.split([sizes[j] for j in idx])
            for j, piece in zip(idx, pieces, strict=True):
                f = factors[slots[j]]
                if f is not None:
                    upper, _ = _triu(dims[slots[j]], device)
                    torch.index_select(f.to(dt).reshape(-1), 0, upper, out=piece[:-1])
                    piece[-1] = 1.0
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
            weights = torch.stack([piece[-1] for piece in pieces]).tolist()  # one sync for the bucket
            for j, piece, weight in zip(idx, pieces, weights, strict=True):
                if weight == 0.0:
                    continue
                d = dims[slots[j]]
                upper, lower = _triu(d, device)
                vals = piece[:-1].div_(weight)
                m = torch.empty(d * d, dtype=dt, device=device)
                m.index_copy_(0, upper, vals).index_copy_(0, lower, vals)
                out[slots[j]] = m.view(d, d)
    return out


_TRIU: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}


def _triu(d: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flat indices of the upper triangle of a d × d matrix, row-major, and of its transpose."""
    key = (d, device)
    if key not in _TRIU:
        r, c = torch.triu_indices(d, d, device=device)
        _TRIU[key] = (r * d + c, c * d + r)
    return _TRIU[key]


class FactorJob(NamedTuple):
    """One eigendecomposition to compute: a factor, its dimension and dtype."""

    key: tuple[str, str]  # (layer name, "a" | "g")
    dim: int
    dtype: torch.dtype


def assign_round_robin(jobs: Sequence[FactorJob], world: int) -> list[int]:
    """The rank that decomposes each job: largest first, the i-th to rank i mod ``world``.

    Deterministic in the jobs' order and sizes, so every rank computes the same assignment.
    """
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].dim)  # stable: ties keep layer order
    owner = [0] * len(jobs)
    for k, i in enumerate(order):
        owner[i] = k % world
    return owner


def broadcast_decompositions(
    jobs: Sequence[FactorJob],
    owners: Sequence[int],
    local: dict[int, tuple[Tensor, Tensor, float] | None],
    rank: int,
    group: Any,
    device: torch.device,
) -> list[tuple[Tensor, Tensor, float] | None]:
    """Share the decompositions each rank computed: one broadcast per (owner, dtype).

    Args:
        jobs: every job (the same list on every rank).
        owners: the rank of each job (:func:`assign_round_robin`).
        local: for the jobs this rank owns, ``(values, vectors, status)`` with status
            ``FALLBACK`` when jitter or float64 was needed, or None when the decomposition failed.
        rank: this rank (in the group).
        group: the process group.
        device: where the buffers live.

    Returns:
        For every job ``(values, vectors, status)``, or None when its owner's decomposition failed.
    """
    out: list[tuple[Tensor, Tensor, float] | None] = [None] * len(jobs)
    kinds: dict[tuple[int, torch.dtype], list[int]] = {}
    for i, job in enumerate(jobs):
        kinds.setdefault((owners[i], job.dtype), []).append(i)
    for (owner, dt), idx in sorted(kinds.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        sizes = [1 + jobs[i].dim + jobs[i].dim ** 2 for i in idx]
        if owner == rank:
            parts = []
            for i, s in zip(idx, sizes, strict=True):
                res = local[i]
                if res is None:
                    part = torch.zeros(s, dtype=dt, device=device)
                    part[0] = FAILED
                else:
                    vals, vecs, status = res
                    part = torch.cat([torch.full((1,), status, dtype=dt, device=device),
                                      vals.to(dt).reshape(-1), vecs.to(dt).reshape(-1)])  # fmt: skip
                parts.append(part)
            buf = torch.cat(parts)
        else:
            buf = torch.empty(sum(sizes), dtype=dt, device=device)
        src = dist.get_global_rank(group, owner) if group is not dist.group.WORLD else owner
        dist.broadcast(buf, src=src, group=group)
        for i, piece in zip(idx, buf.split(sizes), strict=True):
            d = jobs[i].dim
            status = float(piece[0])
            if status == FAILED:
                continue
            out[i] = (piece[1 : 1 + d].clone(), piece[1 + d :].reshape(d, d).clone(), status)
    return out


def worker_count(fraction: float, world: int) -> int:
    """k = max(1, round(f·P)): the gradient workers of each layer (Python's round: halves to even)."""
    return max(1, round(fraction * world))


def assign_worker_groups(costs: Sequence[int], groups: int) -> list[int]:
    """The worker group of each block: largest cost first, each to the group with the least cost so far
    (the lowest index on ties), so every rank computes the same assignment."""
    order = sorted(range(len(costs)), key=lambda i: -costs[i])  # stable: ties keep block order
    load = [0] * groups
    out = [0] * len(costs)
    for i in order:
        j = min(range(groups), key=lambda g: (load[g], g))
        out[i] = j
        load[j] += costs[i]
    return out


class WorkerGroups:
    """The process groups of ``grad_worker_fraction``, created once on every rank.

    With k workers per block, the P ranks (of ``parent``) form P/k worker groups
    {j·k, …, j·k + k − 1} and k columns {c, c + k, …, c + (P/k − 1)·k}. ``torch.distributed.new_group``
    is collective over the default group: every process of the job must build this at the same time.

    Attributes:
        workers: k.
        index: this rank's worker group j.
        column: this rank's column c (its rank inside its worker group).
        worker_group: the process group of this rank's worker group (None when k = 1).
        column_group: the process group of this rank's column (None when k = P).
    """

    def __init__(self, parent: Any, rank: int, world: int, workers: int) -> None:
        if world % workers:
            raise ValueError(f"{workers} gradient workers per layer do not divide {world} ranks")
        self.workers = workers
        self.groups = world // workers
        self.index, self.column = divmod(rank, workers)
        self._parent = parent
        self.worker_group: Any = None
        self.column_group: Any = None
        if workers > 1:
            for j in range(self.groups):
                g = dist.new_group([self.global_rank(j * workers + c) for c in range(workers)])
                if j == self.index:
                    self.worker_group = g
        if self.groups > 1:
            for c in range(workers):
                g = dist.new_group([self.global_rank(j * workers + c) for j in range(self.groups)])
                if c == self.column:
                    self.column_group = g

    def global_rank(self, rank: int) -> int:
        """The global rank of rank ``rank`` of the parent group."""
        return rank if self._parent is dist.group.WORLD else dist.get_global_rank(self._parent, rank)


def broadcast_from_workers(
    sizes: Sequence[int],
    dtypes: Sequence[torch.dtype],
    owners: Sequence[int],
    local: Mapping[int, Tensor],
    layout: WorkerGroups,
    device: torch.device,
) -> list[Tensor | None]:
    """Send each block's preconditioned gradient from its workers to the other ranks, over the columns.

    In column c, rank j·k + c sends the blocks of worker group j: one broadcast per (worker group, dtype),
    each block a presence word (1: preconditioned, 0: left to its plain gradient) and its values.

    Args:
        sizes: the number of elements of each block's gradient (the same on every rank).
        dtypes: each block's gradient dtype (likewise).
        owners: each block's worker group (:func:`assign_worker_groups`).
        local: the flat preconditioned gradient of each block of this rank's worker group that it
            preconditioned (a block left out keeps its plain gradient everywhere).
        layout: the groups.
        device: where the buffers live.

    Returns:
        For every block its flat preconditioned gradient (this rank's own for its worker group's
        blocks), or None where its workers left it to its plain gradient.
    """
    out: list[Tensor | None] = [local.get(i) if owners[i] == layout.index else None for i in range(len(sizes))]
    if layout.column_group is None:
        return out
    kinds: dict[tuple[int, torch.dtype], list[int]] = {}
    for i, dt in enumerate(dtypes):
        kinds.setdefault((owners[i], dt), []).append(i)
    for (owner, dt), idx in sorted(kinds.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        lens = [1 + sizes[i] for i in idx]
        if owner == layout.index:
            buf = torch.zeros(sum(lens), dtype=dt, device=device)
            for i, piece in zip(idx, buf.split(lens), strict=True):
                t = local.get(i)
                if t is not None:
                    piece[0] = 1.0
                    piece[1:] = t.reshape(-1)
        else:
            buf = torch.empty(sum(lens), dtype=dt, device=device)
        src = layout.global_rank(owner * layout.workers + layout.column)
        dist.broadcast(buf, src=src, group=layout.column_group)
        if owner == layout.index:
            continue
        flags = buf[torch.tensor([0, *lens[:-1]], device=device).cumsum(0)].tolist()  # one sync for the buffer
        for i, piece, flag in zip(idx, buf.split(lens), flags, strict=True):
            out[i] = piece[1:] if flag == 1.0 else None
    return out

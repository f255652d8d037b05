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

Nothing here is called without a process group of more than one rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "ASSIGNMENTS",
    "FactorJob",
    "all_reduce_factors",
    "all_reduce_mean",
    "assign_round_robin",
    "broadcast_decompositions",
    "resolve_group",
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

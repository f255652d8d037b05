"""Curvature operators of a whole data set, and their export as a scipy ``LinearOperator``.

* :func:`over_batches`: the operator of a data set given as an iterable of batches (a
  ``torch.utils.data.DataLoader``, a list of tuples), from any per-batch operator of
  :mod:`natrl.curvature` (Hessian, GGN, Fisher, empirical Fisher, KL-Hessian, or your own).
* :func:`as_linear_operator`: any matvec as a ``scipy.sparse.linalg.LinearOperator`` on
  NumPy vectors, for ``eigsh``, ``cg``, ``lsqr``, ``expm_multiply``...

Weighting. Every operator of :mod:`natrl.curvature` is a *mean* over the samples of its
batch: M_b = (1/n_b) Σ_{i ∈ b} Mᵢ. The data-set operator is the mean over all N = Σ n_b
samples, M = (1/N) Σᵢ Mᵢ = Σ_b (n_b / N) M_b, so each batch is weighted by its size; an
unequal last batch is counted exactly. A Hessian is the same: the Hessian of the mean loss
over the data set, when each batch's ``loss_fn`` is the mean over its batch.

The loader is iterated once per matvec, so it must yield the same batches in the same order
each time (``shuffle=False``, or a sampler with a fixed generator that is reset); the batch
sizes are checked on every pass, and ``check_deterministic=True`` also compares a fingerprint
of every batch's tensors on two passes when the operator is built (as curvlinops does).

Reference: Dangel, Tatzel & Hennig (2024), curvlinops (linear operators over data loaders);
Martens (2020), JMLR 21, §5 (curvature matrices as means over the data).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from natrl.curvature.operators import Matvec

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator

__all__ = ["as_linear_operator", "over_batches"]

MakeOperator = Callable[[Tensor, Any], Matvec]
"""``make_operator(θ (P,), batch) -> matvec`` of the mean over that batch."""


def _first_tensor(batch: Any) -> Tensor | None:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (tuple, list)):
        for item in batch:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _leading_size(batch: Any) -> int:
    t = _first_tensor(batch)
    if t is None or t.dim() == 0:
        raise ValueError(
            "over_batches: cannot read a batch size (no batch-first tensor in the batch); pass batch_size_fn"
        )
    return int(t.shape[0])


def _to_device(batch: Any, device: torch.device) -> Any:
    """The batch with every tensor moved to ``device`` (tuples, lists and dicts kept)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_to_device(t, device) for t in batch)
    if isinstance(batch, list):
        return [_to_device(t, device) for t in batch]
    return batch


def _fingerprint(batch: Any) -> tuple[float, ...]:
    """Sum and sum of squares of every tensor of the batch, in float64 (a cheap identity check)."""
    out: list[float] = []
    stack = [batch]
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            d = item.detach().double()
            out += [float(d.sum()), float((d * d).sum())]
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
    return tuple(out)


def over_batches(
    make_operator: MakeOperator,
    params: Tensor,
    loader: Iterable[Any],
    *,
    damping: float = 0.0,
    batch_size_fn: Callable[[Any], int] | None = None,
    cache: bool = False,
    check_deterministic: bool = False,
) -> Matvec:
    """The curvature operator of a whole data set: M v = Σ_b (n_b / N) M_b v + λ v.

    ``make_operator(θ, batch)`` builds the operator of one batch, a *mean* over its n_b
    samples (any operator of :mod:`natrl.curvature`); weighting each batch by n_b / N,
    N = Σ_b n_b, gives the mean over all samples exactly, unequal last batch included (module
    docstring). Before ``make_operator`` sees a batch, its tensors (alone, or in a tuple,
    list or dict) are moved to the device of ``params``.

    By default each matvec iterates the loader and rebuilds each batch's operator (memory:
    one batch's graph); ``cache=True`` keeps every batch's operator from the first pass (one
    pass over the data, then only the products; memory: every batch's graph, and the loader
    is not read again).

    Args:
        make_operator: ``make_operator(θ (P,), batch) -> matvec``, e.g.
            ``lambda th, b: ggn_vp(f, th, b[0], b[1], loss="cross_entropy")`` or
            ``lambda th, b: hvp(lambda t: cross_entropy(f(t, b[0]), b[1]), th)``.
        params: θ, shape (P,); the operator is taken at a copy of it.
        loader: an iterable of batches that yields the same batches on every pass, e.g. a
            ``DataLoader`` without shuffling.
        damping: λ ≥ 0, added once to the data-set operator (a per-batch damping λ_b is
            also fine: the weights sum to one, so it adds λ_b).
        batch_size_fn: n_b of a batch; default: the leading dimension of its first tensor.
        cache: keep the per-batch operators (see above).
        check_deterministic: at construction, read the loader twice and refuse it if a
            batch's fingerprint (sum and sum of squares of its tensors) differs.

    Returns:
        The matvec ``v (P,) -> (M + λI) v (P,)``.

    Raises:
        ValueError: on bad params or damping, an empty loader, a batch without a readable
            size, a non-deterministic loader (here), and at a matvec: on a bad vector, or a
            pass whose batch sizes differ from the first one's.
    """
    where = "over_batches"
    if not callable(make_operator):
        raise ValueError(f"{where}: make_operator must be callable, got {type(make_operator).__name__}")
    if not isinstance(params, Tensor) or params.dim() != 1 or not params.is_floating_point():
        got = tuple(params.shape) if isinstance(params, Tensor) else type(params).__name__
        raise ValueError(f"{where}: params must be a floating flat vector (P,), got {got}")
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or not math.isfinite(damping) or damping < 0:
        raise ValueError(f"{where}: damping must be finite and >= 0, got {damping!r}")
    if isinstance(loader, (Tensor, Mapping)) or not isinstance(loader, Iterable):
        raise ValueError(
            f"{where}: loader must be an iterable of batches (e.g. a DataLoader), got {type(loader).__name__}"
        )
    size_of = _leading_size if batch_size_fn is None else batch_size_fn
    theta = params.detach().clone()
    device, dtype, p = theta.device, theta.dtype, theta.shape[0]
    lam = float(damping)

    sizes: list[int] = []
    prints: list[tuple[float, ...]] = []
    cached: list[Matvec] = []
    for batch in loader:
        n_b = int(size_of(batch))
        if n_b < 1:
            raise ValueError(f"{where}: batch {len(sizes)} has {n_b} samples; every batch needs at least one")
        sizes.append(n_b)
        if check_deterministic:
            prints.append(_fingerprint(batch))
        if cache:
            cached.append(make_operator(theta, _to_device(batch, device)))
    if not sizes:
        raise ValueError(f"{where}: the loader yielded no batch")
    if check_deterministic:
        again = [(int(size_of(b)), _fingerprint(b)) for b in loader]
        if again != list(zip(sizes, prints, strict=True)):
            raise ValueError(f"{where}: the loader yields different batches on a second pass (shuffling?)")
    total = sum(sizes)
    weights = [n_b / total for n_b in sizes]

    def batch_operators() -> Iterable[tuple[float, Matvec]]:
        if cache:
            yield from zip(weights, cached, strict=True)
            return
        seen = 0
        for batch in loader:
            if seen == len(sizes):
                raise ValueError(
                    f"{where}: the loader yielded more batches on this pass than {len(sizes)} on the first"
                )
            n_b = int(size_of(batch))
            if n_b != sizes[seen]:
                raise ValueError(
                    f"{where}: the loader's batch {seen} has {n_b} samples now, {sizes[seen]} on the first pass"
                )
            yield weights[seen], make_operator(theta, _to_device(batch, device))
            seen += 1
        if seen != len(sizes):
            raise ValueError(f"{where}: the loader yielded {seen} batches on this pass, {len(sizes)} on the first")

    def matvec(v: Tensor) -> Tensor:
        if not isinstance(v, Tensor) or v.shape != (p,) or v.dtype != dtype or v.device != device:
            got = (tuple(v.shape), v.dtype, str(v.device)) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{where}: expected a vector of shape ({p},), {dtype} on {device}, got {got}")
        out = v * lam if lam else torch.zeros_like(v)
        for w, op in batch_operators():
            out.add_(op(v), alpha=w)
        return out

    return matvec


def as_linear_operator(
    matvec: Matvec, size: int, *, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> LinearOperator:
    """A symmetric matvec on tensors as a ``scipy.sparse.linalg.LinearOperator`` on NumPy arrays.

    ``matvec`` and ``rmatvec`` (the operator is symmetric, as every operator of
    :mod:`natrl.curvature`) convert a NumPy vector to a tensor of ``dtype`` on ``device``,
    apply ``matvec`` and return a NumPy vector; ``matmat`` does so column by column. The
    LinearOperator's dtype is ``dtype``'s NumPy equivalent. Needs scipy (``pip install
    natrl[bench]``).

    Args:
        matvec: ``v (size,) -> M v (size,)`` on tensors.
        size: the dimension n of M.
        dtype: the dtype the operator takes (that of its params).
        device: the device it takes them on.

    Returns:
        A ``LinearOperator`` of shape (n, n).

    Raises:
        ValueError: if scipy is missing, on a bad size or dtype, and (at a product) if a
            vector has the wrong length or ``matvec`` returns the wrong shape.
    """
    where = "as_linear_operator"
    try:
        from scipy.sparse.linalg import LinearOperator
    except ImportError:
        raise ValueError(
            f"{where}: needs scipy, which natrl's [bench] extra installs: pip install 'natrl[bench]'"
        ) from None
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{where}: size must be a positive int, got {size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{where}: dtype must be a floating torch.dtype, got {dtype!r}")
    n, dev = int(size), torch.device(device)
    try:
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        raise ValueError(f"{where}: {dtype} has no NumPy equivalent; use float32 or float64") from None

    def apply(x: Any) -> Any:
        v = torch.as_tensor(x, device=dev).reshape(-1).to(dtype)
        if v.shape[0] != n:
            raise ValueError(f"{where}: expected a vector of length {n}, got shape {tuple(v.shape)}")
        out = matvec(v)
        if not isinstance(out, Tensor) or out.shape != (n,):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{where}: matvec must return shape ({n},), got {got}")
        return out.detach().cpu().numpy()

    return LinearOperator((n, n), matvec=apply, rmatvec=apply, dtype=np_dtype)

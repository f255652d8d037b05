"""Curvature matrix-vector products on a flat parameter vector θ ∈ R^P.

Every operator here is built once at a point θ (and a batch) and returns a
*matvec* ``v -> M v`` on flat vectors of shape (P,), the form conjugate gradient
and Newton-CG consume. M is never formed, except by :func:`to_dense` for tests
on tiny models.

The operators (N samples, Jᵢ = ∂fᵢ/∂θ the Jacobian of the outputs of sample i):

* :func:`fisher_vp`: F = (1/N) Σᵢ Jᵢᵀ Mᵢ Jᵢ, Mᵢ the analytic Fisher of the output
  distribution at fᵢ(θ) (Martens 2020, §9.2).
* :func:`fisher_quadratic`: the number vᵀ F v alone, from one forward-mode jvp.
* :func:`kl_hvp`: ∇²_θ (1/N) Σᵢ KL(π_old,ᵢ ‖ π_θ,ᵢ) at θ = θ_old, by double backprop
  (Schulman et al. 2015, Appendix C.1). Equal to F there.
* :func:`hvp`: ∇²L(θ) of a scalar loss (Pearlmutter 1994).
* :func:`ggn_vp`: G = (1/N) Σᵢ Jᵢᵀ Hᵢ Jᵢ, Hᵢ = ∂²ℓᵢ/∂fᵢ² (Schraudolph 2002).
* :func:`empirical_fisher_vp`: (1/N) Σᵢ gᵢ gᵢᵀ, gᵢ = ∇_θ ℓᵢ(θ) (Kunstner et al. 2019).

How :func:`fisher_vp` (the hot path of TRPO) is computed. The network is
linearised once, when the operator is built: one forward pass keeps its
autograd graph, and one backward pass with ``create_graph=True`` and a dummy
cotangent u records the linear map u -> Jᵀu. Each matvec then reuses both
graphs and does no forward pass at all:

1. J v  = ∂(vᵀ Jᵀu)/∂u: a reverse pass through the recorded backward (the
   "double-vjp trick"; Jᵀu is linear in u, so this pass costs about one jvp
   and forms no second-order derivative of the network: nothing is ever
   differentiated twice with respect to θ);
2. w    = Mᵢ (J v)ᵢ per sample, analytic (``dist.fisher_vp_outputs``);
3. Jᵀ w: one backward pass through the retained forward graph (the vjp).

Measured alternatives (tanh MLP policies (64,64)-(256,256), batch 2048-8192,
1 CPU thread, ``scripts/bench_fvp.py``): ``torch.func.linearize`` for step 1
costs about the same per matvec (±20%) but its one-off ``make_fx`` trace takes
120-370 ms, 4-40 gradients, more than the ~11 matvecs of a TRPO update can win
back; a fresh ``torch.func.jvp`` per matvec repeats the forward pass (1.9-2.7x
slower per matvec); the same double-vjp trick through ``torch.func.vjp`` is no
faster and adds transform overhead on small batches. With exact products the
matvec needs two matmuls per hidden weight in each of the jvp and the vjp, four
in all, where a gradient needs three (forward, and two in backward): on wide
layers, where matmuls dominate, a matvec costs ≈1.1-1.3 gradients.

If the recorded backward cannot be differentiated again (an op marked
``once_differentiable``, found by walking the graph, or one without a double
backward, found at the first matvec), step 1 falls back, for good, to a fresh
``torch.func.jvp`` per matvec.

Shared conventions:

* ``params`` is a 1-D floating tensor (P,); the operator is taken at a copy of
  it, so later in-place updates of ``params`` do not change the operator.
* ``inputs`` (and ``targets``) are a tensor or a tuple/list of tensors with the
  batch in dimension 0, on the device of ``params``; an empty batch is refused.
* ``damping=λ`` returns M v + λ v.
* ``subsample`` (an int count k, or a float fraction f ∈ (0, 1] giving
  k = max(1, ⌊f N⌋)) picks k distinct rows once, at construction, with
  ``torch.randperm(N, generator=generator)`` (the first k, sorted; the global
  generator when ``generator`` is None); the operator then equals the operator
  of that sub-batch.
* Each call of a matvec checks v: 1-D of length P, the dtype and device of
  ``params``, finite; otherwise it raises ValueError naming the mismatch.

References:
    Martens (2020), "New insights and perspectives on the natural gradient
    method", JMLR 21. Schraudolph (2002), "Fast curvature matrix-vector products
    for second-order gradient descent", Neural Computation 14. Pearlmutter
    (1994), "Fast exact multiplication by the Hessian", Neural Computation 6.
    Kunstner, Balles & Hennig (2019), "Limitations of the empirical Fisher
    approximation for natural gradient descent", NeurIPS.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor
from torch.autograd.function import BackwardCFunction
from torch.func import grad as func_grad
from torch.func import jvp as func_jvp
from torch.func import vmap

if TYPE_CHECKING:
    from torch.autograd.graph import Node

    from natrl.distributions import Distribution

__all__ = [
    "Matvec",
    "OutputFisher",
    "empirical_fisher_vp",
    "fisher_quadratic",
    "fisher_vp",
    "ggn_vp",
    "hvp",
    "kl_hvp",
    "to_dense",
]

Matvec = Callable[[Tensor], Tensor]
"""A symmetric linear operator on flat vectors: ``v (P,) -> M v (P,)``."""

Inputs = Tensor | Sequence[Tensor]
"""A batch: a tensor or a tuple/list of tensors, batch in dimension 0."""

Outputs = Tensor | Sequence[Tensor]
"""What a model function returns: one tensor or a tuple of tensors, batch-first."""

ModelFn = Callable[[Tensor, Any], Outputs]
"""``model_fn(θ (P,), inputs) -> outputs`` (each output of shape (N, ...))."""


class OutputFisher(Protocol):
    """Anything that multiplies per-sample output tangents by the output Fisher Mᵢ."""

    def fisher_vp_outputs(self, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]: ...


# --------------------------------------------------------------------------- checks


def _check_params(params: Tensor, where: str) -> None:
    if not isinstance(params, Tensor):
        raise ValueError(f"{where}: params must be a torch.Tensor, got {type(params).__name__}")
    if params.dim() != 1 or params.numel() == 0:
        raise ValueError(f"{where}: params must be a non-empty flat vector (P,), got shape {tuple(params.shape)}")
    if not params.is_floating_point():
        raise ValueError(f"{where}: params must be floating point, got dtype {params.dtype}")
    if not bool(torch.isfinite(params).all()):
        raise ValueError(f"{where}: non-finite params (NaN or inf entries)")


def _check_damping(damping: float, where: str) -> float:
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real):
        raise ValueError(f"{where}: damping must be a real number, got {damping!r}")
    value = float(damping)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{where}: damping must be finite and >= 0, got {value}")
    return value


def _leaves(batch: Inputs, name: str, where: str) -> list[Tensor]:
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, (tuple, list)) and batch and all(isinstance(t, Tensor) for t in batch):
        return list(batch)
    raise ValueError(
        f"{where}: {name} must be a tensor or a non-empty tuple/list of tensors, got {type(batch).__name__}"
    )


def _batch_size(batch: Inputs, params: Tensor, name: str, where: str) -> int:
    """Common leading dimension N of the batch's tensors (validated, N ≥ 1)."""
    leaves = _leaves(batch, name, where)
    sizes = set()
    for t in leaves:
        if t.dim() == 0:
            raise ValueError(f"{where}: {name} must be batch-first, got a 0-dimensional tensor")
        if t.device != params.device:
            raise ValueError(f"{where}: device mismatch: {name} on {t.device}, params on {params.device}")
        sizes.add(t.shape[0])
    if len(sizes) != 1:
        raise ValueError(f"{where}: {name} tensors disagree on the batch size: {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError(f"{where}: empty batch ({name} has 0 rows)")
    return n


def _sample_rows(
    n: int,
    subsample: float | None,
    generator: torch.Generator | None,
    device: torch.device,
    where: str,
) -> Tensor | None:
    """Sorted indices of the sub-batch, or None for the whole batch."""
    if subsample is None:
        return None
    if isinstance(subsample, bool) or not isinstance(subsample, numbers.Real):
        raise ValueError(f"{where}: subsample must be an int, a float or None, got {subsample!r}")
    if isinstance(subsample, numbers.Integral):
        k = int(subsample)
        if not 1 <= k <= n:
            raise ValueError(f"{where}: subsample count must be in [1, {n}], got {k}")
    else:
        frac = float(subsample)
        if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
            raise ValueError(f"{where}: subsample fraction must be in (0, 1], got {frac}")
        k = max(1, int(frac * n))
    if k == n:
        return None
    gen_device = generator.device if generator is not None else torch.device("cpu")
    rows = torch.randperm(n, generator=generator, device=gen_device)[:k]
    return rows.sort().values.to(device)


def _map_leaves(batch: Sequence[Tensor], f: Callable[[Tensor], Tensor]) -> Sequence[Tensor]:
    """``f`` of each tensor of a tuple/list batch: a list for a list, else a tuple."""
    out = [f(t) for t in batch]
    return out if isinstance(batch, list) else tuple(out)


def _take(batch: Inputs, rows: Tensor | None) -> Inputs:
    if rows is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.index_select(0, rows)
    return _map_leaves(batch, lambda t: t.index_select(0, rows))


def _as_outputs(out: object, n: int, where: str) -> tuple[Tensor, ...]:
    if isinstance(out, Tensor):
        outs: tuple[Tensor, ...] = (out,)
    elif isinstance(out, (tuple, list)) and out and all(isinstance(t, Tensor) for t in out):
        outs = tuple(out)
    else:
        raise ValueError(f"{where}: model_fn must return a tensor or a tuple of tensors, got {type(out).__name__}")
    for i, o in enumerate(outs):
        if o.dim() == 0 or o.shape[0] != n:
            raise ValueError(
                f"{where}: model_fn output {i} must be batch-first with {n} rows, got shape {tuple(o.shape)}"
            )
        if not o.is_floating_point():
            raise ValueError(f"{where}: model_fn output {i} must be floating point, got {o.dtype}")
    return outs


def _check_vector(v: Tensor, size: int, dtype: torch.dtype, device: torch.device, where: str) -> None:
    if not isinstance(v, Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor vector, got {type(v).__name__}")
    if v.dim() != 1 or v.shape[0] != size:
        raise ValueError(f"{where}: shape mismatch: expected a flat vector of shape ({size},), got {tuple(v.shape)}")
    if v.dtype != dtype:
        raise ValueError(f"{where}: dtype mismatch: vector is {v.dtype}, params are {dtype}")
    if v.device != device:
        raise ValueError(f"{where}: device mismatch: vector on {v.device}, params on {device}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{where}: non-finite vector (NaN or inf entries)")


def _operator(core: Matvec, params: Tensor, damping: float, where: str) -> Matvec:
    """Wrap ``core`` with the input checks and the damping term λ v."""
    size, dtype, device = params.shape[0], params.dtype, params.device

    def matvec(v: Tensor) -> Tensor:
        _check_vector(v, size, dtype, device, where)
        out = core(v)
        return out.add(v, alpha=damping) if damping else out

    return matvec


# ----------------------------------------------------------- Jᵀ M J, shared core


_ERROR_NODES = frozenset({"Error", "NotImplemented", "DelayedError"})


def _twice_differentiable(t: Tensor | None) -> bool:
    """False if the graph of ``t`` holds a node that refuses to be differentiated again.

    A backward marked ``once_differentiable`` (or without a double-backward formula)
    records an error node whose inputs are fresh leaves: a later ``autograd.grad`` with
    respect to other tensors silently skips it instead of raising, so it must be found.
    """
    if t is None:
        return True
    return not any(node.name().rsplit("::", 1)[-1] in _ERROR_NODES for node in _graph_nodes(t))


def _has_custom_function(t: Tensor) -> bool:
    """True if the graph of ``t`` holds the backward of a custom ``torch.autograd.Function``.

    Such a backward may be ``once_differentiable``; when the gradient flowing into it does not
    require grad, double backprop then drops its part of the Hessian without an error node, so
    :func:`_twice_differentiable` cannot see it.
    """
    return any(isinstance(node, BackwardCFunction) for node in _graph_nodes(t))


def _graph_nodes(t: Tensor) -> Iterator[Node]:
    """Every node of the autograd graph of ``t``, once each (none when ``t`` has no graph)."""
    seen: set[object] = set()
    stack: list[Node | None] = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(next_node for next_node, _ in node.next_functions)


OutputVp = Callable[[tuple[Tensor, ...], tuple[Tensor, ...]], tuple[Tensor, ...]]


def _pullback_vp(
    fn: Callable[[Tensor], object],
    theta0: Tensor,
    n: int,
    output_vp: OutputVp,
    where: str,
    check_outputs: Callable[[tuple[Tensor, ...]], None] | None = None,
) -> Matvec:
    """v -> (1/N) Jᵀ Mₒ(J v), J = ∂fn/∂θ at theta0, Mₒ per sample via ``output_vp``.

    Builds the forward graph and the graph of u -> Jᵀu once (see the module
    docstring); each call is one reverse pass through each.
    """
    theta = theta0.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outs = _as_outputs(fn(theta), n, where)
        if check_outputs is not None:
            check_outputs(outs)
        live = [i for i, o in enumerate(outs) if o.requires_grad]
        live_outs = [outs[i] for i in live]
        cots = [torch.zeros_like(o, requires_grad=True) for o in live_outs]
        jt_u: Tensor | None = None
        double_vjp = True
        if live:
            try:
                (jt_u,) = torch.autograd.grad(live_outs, theta, cots, create_graph=True, allow_unused=True)
            except RuntimeError:  # a backward that cannot record its own graph
                double_vjp = False
                (jt_u,) = torch.autograd.grad(live_outs, theta, cots, retain_graph=True, allow_unused=True)
    point = tuple(o.detach() for o in outs)
    zeros = [torch.zeros_like(o) for o in point]
    inv_n = 1.0 / n
    if jt_u is None:  # the outputs do not depend on θ: J = 0

        def zero(v: Tensor) -> Tensor:
            return torch.zeros_like(v)

        return zero
    double_vjp = double_vjp and jt_u.requires_grad and _twice_differentiable(jt_u)
    state: dict[str, bool] = {"double_vjp": double_vjp, "tested": False}
    theta_const = theta0.detach().clone()

    def jvp_fresh(v: Tensor) -> list[Tensor]:
        def outputs(th: Tensor) -> tuple[Tensor, ...]:
            return _as_outputs(fn(th), n, where)

        tangents = func_jvp(outputs, (theta_const,), (v,))[1]  # (outputs, tangents) without has_aux
        return [tangents[i] for i in live]

    def jvp_double_vjp(v: Tensor) -> list[Tensor]:
        return list(torch.autograd.grad(jt_u, cots, v, retain_graph=True, allow_unused=True, materialize_grads=True))

    def matvec(v: Tensor) -> Tensor:
        if state["double_vjp"]:
            if state["tested"]:
                jv = jvp_double_vjp(v)
            else:
                try:
                    jv = jvp_double_vjp(v)
                except torch.cuda.OutOfMemoryError:
                    raise
                except RuntimeError:  # no double backward for some op: use forward mode
                    state["double_vjp"] = False
                    jv = jvp_fresh(v)
                state["tested"] = True
        else:
            jv = jvp_fresh(v)
        tangents = list(zeros)
        for i, t in zip(live, jv, strict=True):
            tangents[i] = t
        mjv = output_vp(point, tuple(tangents))
        if not isinstance(mjv, (tuple, list)) or len(mjv) != len(point):
            raise ValueError(f"{where}: the output Fisher product must return a tuple of {len(point)} tensors")
        with torch.enable_grad():
            (out,) = torch.autograd.grad(
                live_outs,
                theta,
                [mjv[i] for i in live],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return out * inv_n

    return matvec


# ------------------------------------------------------------------ public operators


def fisher_vp(
    model_fn: ModelFn,
    params: Tensor,
    inputs: Inputs,
    dist: type[Distribution] | OutputFisher,
    *,
    damping: float = 0.0,
    subsample: float | None = None,
    generator: torch.Generator | None = None,
) -> Matvec:
    """Exact Fisher-vector product of a model whose outputs parameterise a distribution.

    F v = (1/N) Σᵢ Jᵢᵀ Mᵢ Jᵢ v + λ v, with Jᵢ = ∂fᵢ/∂θ (outputs of sample i, e.g. logits or
    (mean, log_std)) and Mᵢ the Fisher of the distribution in its output parameters at
    fᵢ(params), e.g. diag(p) − ppᵀ (Categorical) or diag(1/σ², 2) (DiagGaussian). F is
    also the Hessian of the mean KL(π_params ‖ π_θ) at θ = params (see :func:`kl_hvp`).

    The network is linearised once, here; each matvec is one jvp (double-vjp trick) and
    one vjp through the retained graphs, no forward pass (module docstring).

    Args:
        model_fn: ``model_fn(θ, inputs)`` -> tensor or tuple of tensors of shape (N, ...),
            the distribution's output parameters (a state-independent log-std broadcast to
            (N, D) inside ``model_fn``).
        params: θ, shape (P,).
        inputs: the batch (N, ...), a tensor or a tuple/list of tensors.
        dist: a class of :mod:`natrl.distributions`, or any object with
            ``fisher_vp_outputs(outputs, tangents) -> tuple`` (per sample, no reduction).
        damping: λ ≥ 0.
        subsample: rows used (int count or float fraction), drawn once here.
        generator: random generator for ``subsample``.

    Returns:
        The matvec ``v (P,) -> (F + λI) v (P,)``.

    Raises:
        ValueError: on bad params, inputs, outputs, damping or subsample (here), and on a
            vector of the wrong shape, dtype or device or a non-finite one (at each call).

    Reference: Martens (2020), JMLR 21, §9.2; Schraudolph (2002), Neural Computation 14.
    """
    where = "fisher_vp"
    _check_params(params, where)
    lam = _check_damping(damping, where)
    output_vp = getattr(dist, "fisher_vp_outputs", None)
    if not callable(output_vp):
        raise ValueError(f"{where}: dist must provide fisher_vp_outputs(outputs, tangents)")
    n = _batch_size(inputs, params, "inputs", where)
    rows = _sample_rows(n, subsample, generator, params.device, where)
    x = _take(inputs, rows)
    n_used = n if rows is None else rows.shape[0]
    core = _pullback_vp(lambda th: model_fn(th, x), params, n_used, output_vp, where)
    return _operator(core, params, lam, where)


def fisher_quadratic(
    model_fn: ModelFn,
    params: Tensor,
    inputs: Inputs,
    dist: type[Distribution] | OutputFisher,
    v: Tensor,
) -> Tensor:
    """The Fisher quadratic form vᵀ F v = (1/N) Σᵢ (Jᵢ v)ᵀ Mᵢ (Jᵢ v), F as in :func:`fisher_vp`.

    One forward-mode jvp gives every Jᵢ v; the output Fisher Mᵢ is applied per sample and the
    inner products summed. No backward pass is taken, so one number costs about a forward pass
    and a half, where ``v @ fisher_vp(...)(v)`` costs a forward pass, the linearisation and a
    matvec. Its use: the length of a step in the Fisher metric, e.g. the second-order KL
    ½ vᵀ F v of a step v (ACKTR's KL clip).

    Args:
        model_fn: ``model_fn(θ, inputs)`` -> the distribution's output parameters, as for :func:`fisher_vp`.
        params: θ, shape (P,).
        inputs: the batch (N, ...), a tensor or a tuple/list of tensors.
        dist: a class of :mod:`natrl.distributions`, or any object with ``fisher_vp_outputs``.
        v: the vector, shape (P,), the dtype and device of ``params``.

    Returns:
        vᵀ F v, a 0-dimensional tensor (≥ 0 up to rounding).

    Raises:
        ValueError: on bad params, inputs, outputs or vector.
    """
    where = "fisher_quadratic"
    _check_params(params, where)
    output_vp = getattr(dist, "fisher_vp_outputs", None)
    if not callable(output_vp):
        raise ValueError(f"{where}: dist must provide fisher_vp_outputs(outputs, tangents)")
    n = _batch_size(inputs, params, "inputs", where)
    _check_vector(v, params.shape[0], params.dtype, params.device, where)

    def outputs(th: Tensor) -> tuple[Tensor, ...]:
        return _as_outputs(model_fn(th, inputs), n, where)

    with torch.no_grad():
        res = func_jvp(outputs, (params.detach(),), (v,))
        point, tangents = res[0], res[1]  # (outputs, tangents) without has_aux
        mjv = output_vp(point, tangents)
        if not isinstance(mjv, (tuple, list)) or len(mjv) != len(point):
            raise ValueError(f"{where}: the output Fisher product must return a tuple of {len(point)} tensors")
        total = sum((t * m).sum() for t, m in zip(tangents, mjv, strict=True))
    return torch.as_tensor(total, dtype=params.dtype, device=params.device) / n


def kl_hvp(
    model_fn: ModelFn,
    params: Tensor,
    inputs: Inputs,
    dist: type[Distribution],
    *,
    damping: float = 0.0,
    subsample: float | None = None,
    generator: torch.Generator | None = None,
) -> Matvec:
    """Hessian-vector product of the mean KL divergence to the old policy, by double backprop.

    H v = ∇_θ [ (∇_θ (1/N) Σᵢ KL(π_old,ᵢ ‖ π_θ,ᵢ))ᵀ v ] + λ v at θ = params, with
    π_old,ᵢ = dist(*fᵢ(params)) detached. This is the product TRPO implementations use;
    at θ = params it equals the Fisher of :func:`fisher_vp` but costs a second-order pass.
    The graph of ∇KL is built once, here; each matvec is one backward through it.

    Args:
        model_fn: ``model_fn(θ, inputs)`` -> the distribution's output parameters (N, ...).
        params: θ_old, shape (P,).
        inputs: the batch (N, ...).
        dist: a distribution class, ``dist(*outputs)`` with ``.kl(other) -> (N,)``.
        damping: λ ≥ 0.
        subsample: rows used (int count or float fraction), drawn once here.
        generator: random generator for ``subsample``.

    Returns:
        The matvec ``v (P,) -> (H + λI) v (P,)``.

    Raises:
        ValueError: as :func:`fisher_vp`, and if ``dist`` cannot build a distribution with
            ``kl``.

    Reference: Schulman et al. (2015), "Trust Region Policy Optimization", ICML, App. C.1.
    """
    where = "kl_hvp"
    _check_params(params, where)
    lam = _check_damping(damping, where)
    if not callable(dist) or not callable(getattr(dist, "kl", None)):
        raise ValueError(f"{where}: dist must be a distribution class with a kl method")
    n = _batch_size(inputs, params, "inputs", where)
    rows = _sample_rows(n, subsample, generator, params.device, where)
    x = _take(inputs, rows)
    n_used = n if rows is None else rows.shape[0]
    theta = params.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outs = _as_outputs(model_fn(theta, x), n_used, where)
        old = dist(*(o.detach() for o in outs))
        kl = old.kl(dist(*outs))
        if not isinstance(kl, Tensor) or kl.shape[:1] != (n_used,):
            raise ValueError(f"{where}: dist.kl must return a tensor of shape ({n_used},)")
        (g,) = torch.autograd.grad(kl.mean(), theta, create_graph=True, allow_unused=True)
    if not _twice_differentiable(g):
        raise ValueError(f"{where}: model_fn has an op that cannot be differentiated twice")

    def core(v: Tensor) -> Tensor:
        if g is None or not g.requires_grad:  # KL constant or linear in θ
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(g, theta, v, retain_graph=True, allow_unused=True, materialize_grads=True)
        return hv

    return _operator(core, params, lam, where)


HvpMode = Literal["auto", "forward-over-reverse", "reverse-over-reverse"]


def hvp(
    loss_fn: Callable[[Tensor], Tensor],
    params: Tensor,
    *,
    damping: float = 0.0,
    mode: HvpMode = "auto",
) -> Matvec:
    """Hessian-vector product of a scalar loss: v -> ∇²L(θ) v + λ v at θ = params.

    Two ways to compute it (Dagréou et al., 2024):

    * ``"reverse-over-reverse"``: the graph of ∇L is built once, here, with
      ``create_graph=True``, and H v = ∇(∇Lᵀ v) is one backward pass through it per matvec
      (memory: that graph, kept as long as the operator lives).
    * ``"forward-over-reverse"``: H v = ∂/∂ε ∇L(θ + ε v) at ε = 0, a jvp of
      ``torch.func.grad(loss_fn)``: a fresh forward and backward per matvec, nothing stored.
      If forward-mode AD is unsupported by an op of ``loss_fn``, the first matvec catches the
      error and the operator switches, for good, to reverse-over-reverse.
    * ``"auto"`` (default): reverse-over-reverse, which is 1.8-5.5x faster per product on the
      CPU models of ``scripts/bench_hvp.py`` (MLPs and a CNN, docs/guide/curvature.md) and
      faster from the first product on. The graph is built here; if ∇L has no graph to
      differentiate (an op that cannot be differentiated twice, or L linear in θ), if L
      holds a custom ``torch.autograd.Function`` (whose backward may be
      ``once_differentiable``, which double backprop can skip silently), or if the first
      product fails, it is forward-over-reverse from then on (with that mode's fallback).

    Args:
        loss_fn: ``loss_fn(θ (P,)) -> scalar tensor``.
        params: θ, shape (P,).
        damping: λ ≥ 0.
        mode: ``"auto"`` (default), ``"reverse-over-reverse"`` or ``"forward-over-reverse"``.

    Returns:
        The matvec ``v (P,) -> (∇²L + λI) v (P,)``.

    Raises:
        ValueError: on bad params, damping or mode, if ``loss_fn`` does not return a real
            scalar tensor (here, or at the first matvec in forward-over-reverse mode), if
            ``"reverse-over-reverse"`` is asked for a loss that cannot be differentiated
            twice, and on bad vectors (at each call).

    Reference: Pearlmutter (1994), "Fast exact multiplication by the Hessian", Neural
    Computation 6(1); Dagréou et al. (2024), "How to compute Hessian-vector products?".
    """
    where = "hvp"
    _check_params(params, where)
    lam = _check_damping(damping, where)
    if mode not in ("auto", "forward-over-reverse", "reverse-over-reverse"):
        raise ValueError(
            f"{where}: mode must be 'auto', 'forward-over-reverse' or 'reverse-over-reverse', got {mode!r}"
        )
    theta0 = params.detach().clone()
    state: dict[str, Any] = {"mode": mode, "tested": False, "graph": None}

    def scalar_loss(theta: Tensor) -> Tensor:
        loss = loss_fn(theta)
        if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
            got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"{where}: loss_fn must return a real scalar tensor, got {got}")
        return loss.reshape(())

    def build_reverse() -> tuple[Tensor, Tensor | None] | None:
        """The leaf θ and the graph of ∇L(θ); None if ∇L cannot be differentiated again."""
        theta = theta0.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = scalar_loss(theta)
            if mode == "auto" and _has_custom_function(loss):
                return None
            try:
                (g,) = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
            except RuntimeError:  # a backward that cannot record its own graph
                return None
        return (theta, g) if _twice_differentiable(g) else None

    def reverse_product(graph: tuple[Tensor, Tensor | None], v: Tensor) -> Tensor:
        theta, g = graph
        if g is None or not g.requires_grad:  # loss constant or linear in θ
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(g, theta, v, retain_graph=True, allow_unused=True, materialize_grads=True)
        return hv

    def reverse(v: Tensor) -> Tensor:
        if state["graph"] is None:
            state["graph"] = build_reverse()
            if state["graph"] is None:
                raise ValueError(f"{where}: loss_fn has an op that cannot be differentiated twice")
        return reverse_product(state["graph"], v)

    grad_fn = func_grad(scalar_loss)

    def forward(v: Tensor) -> Tensor:
        return func_jvp(grad_fn, (theta0,), (v,))[1]

    if mode != "forward-over-reverse":  # build (and validate loss_fn) now
        state["graph"] = build_reverse()
        if state["graph"] is None and mode == "reverse-over-reverse":
            raise ValueError(f"{where}: loss_fn has an op that cannot be differentiated twice")
        good = state["graph"] is not None and state["graph"][1] is not None and state["graph"][1].requires_grad
        # without a graph of ∇L (L linear in θ, or an op that cannot be differentiated twice)
        # auto is forward-over-reverse, which falls back to reverse-over-reverse if it must
        state["mode"] = "reverse-over-reverse" if good or mode == "reverse-over-reverse" else "forward-over-reverse"
        if state["mode"] == "forward-over-reverse":
            state["graph"] = None

    def core(v: Tensor) -> Tensor:
        if state["mode"] == "reverse-over-reverse":
            if state["tested"] or mode != "auto":
                return reverse(v)
            try:
                out = reverse(v)
            except torch.cuda.OutOfMemoryError:
                raise
            except RuntimeError:  # an op without a double-backward formula
                state["mode"], state["graph"] = "forward-over-reverse", None
                out = forward(v)
            state["tested"] = True
            return out
        if state["tested"]:
            return forward(v)
        try:
            out = forward(v)
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, NotImplementedError):  # forward-mode AD unsupported
            state["mode"] = "reverse-over-reverse"
            return reverse(v)
        state["tested"] = True
        return out

    return _operator(core, params, lam, where)


GgnLoss = Literal["mse", "cross_entropy"]


def _mse_output_hessian(outputs: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tangents  # ℓ = ½‖f − y‖²: ∂²ℓ/∂f² = I


def ggn_vp(
    model_fn: ModelFn,
    params: Tensor,
    inputs: Inputs,
    targets: Tensor,
    *,
    loss: GgnLoss = "mse",
    damping: float = 0.0,
    subsample: float | None = None,
    generator: torch.Generator | None = None,
) -> Matvec:
    """Generalised Gauss-Newton product G v = (1/N) Σᵢ Jᵢᵀ Hᵢ Jᵢ v + λ v.

    The loss is L(θ) = (1/N) Σᵢ ℓ(fᵢ(θ), yᵢ) and Hᵢ = ∂²ℓ/∂f² at fᵢ(params):

    * ``"mse"``: ℓ = ½ ‖fᵢ − yᵢ‖², summed over all output dimensions, so Hᵢ = I and
      G = (1/N) Σ JᵢᵀJᵢ; for a model linear in θ, G equals the Hessian of L exactly.
      Outputs and targets have the same shape (N, ...).
    * ``"cross_entropy"``: ℓ = −log softmax(fᵢ)[yᵢ] over logits fᵢ of shape (N, K), so
      Hᵢ = diag(pᵢ) − pᵢpᵢᵀ with pᵢ = softmax(fᵢ); targets are class indices (N,) or
      probability rows (N, K) (Hᵢ does not depend on them).

    Computed like :func:`fisher_vp` (linearised once; one jvp and one vjp per matvec).

    Args:
        model_fn: ``model_fn(θ, inputs)`` -> one tensor (N, ...).
        params: θ, shape (P,).
        inputs: the batch (N, ...).
        targets: the targets (N, ...), used to check shapes.
        loss: ``"mse"`` or ``"cross_entropy"``.
        damping: λ ≥ 0.
        subsample: rows used (int count or float fraction), drawn once here.
        generator: random generator for ``subsample``.

    Returns:
        The matvec ``v (P,) -> (G + λI) v (P,)``.

    Raises:
        ValueError: as :func:`fisher_vp`, for an unknown loss, and for targets whose shape
            does not fit the outputs.

    Reference: Schraudolph (2002), Neural Computation 14(7); Martens (2020), JMLR 21, §8.
    """
    where = "ggn_vp"
    _check_params(params, where)
    lam = _check_damping(damping, where)
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"{where}: loss must be 'mse' or 'cross_entropy', got {loss!r}")
    if not isinstance(targets, Tensor):
        raise ValueError(f"{where}: targets must be a tensor, got {type(targets).__name__}")
    n = _batch_size(inputs, params, "inputs", where)
    n_t = _batch_size(targets, params, "targets", where)
    if n_t != n:
        raise ValueError(f"{where}: inputs have {n} rows but targets have {n_t}")
    rows = _sample_rows(n, subsample, generator, params.device, where)
    x = _take(inputs, rows)
    y = targets if rows is None else targets.index_select(0, rows)
    n_used = n if rows is None else rows.shape[0]

    def check_outputs(outs: tuple[Tensor, ...]) -> None:
        if len(outs) != 1:
            raise ValueError(f"{where}: model_fn must return one tensor, got {len(outs)}")
        f = outs[0]
        if loss == "mse":
            if f.shape != y.shape:
                raise ValueError(
                    f"{where}: mse needs targets of the output shape {tuple(f.shape)}, got {tuple(y.shape)}"
                )
        elif f.dim() != 2:
            raise ValueError(f"{where}: cross_entropy needs logits (N, K), got {tuple(f.shape)}")
        elif y.shape not in ((n_used,), f.shape):
            raise ValueError(
                f"{where}: cross_entropy needs class indices ({n_used},) or probabilities "
                f"{tuple(f.shape)}, got targets of shape {tuple(y.shape)}"
            )

    if loss == "mse":
        output_vp: OutputVp = _mse_output_hessian
    else:
        cache: dict[str, Tensor] = {}

        def output_vp(outputs: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            if "p" not in cache:
                cache["p"] = torch.softmax(outputs[0], dim=-1)
            p = cache["p"]
            pv = p * tangents[0]
            return (pv - p * pv.sum(-1, keepdim=True),)

    core = _pullback_vp(lambda th: model_fn(th, x), params, n_used, output_vp, where, check_outputs)
    return _operator(core, params, lam, where)


def empirical_fisher_vp(
    per_sample_loss_fn: Callable[..., Tensor],
    params: Tensor,
    inputs: Inputs,
    targets: Tensor | None = None,
    *,
    damping: float = 0.0,
    subsample: float | None = None,
    generator: torch.Generator | None = None,
) -> Matvec:
    """Empirical Fisher product F̃ v = (1/N) Σᵢ gᵢ (gᵢᵀ v) + λ v, gᵢ = ∇_θ ℓᵢ(θ) at params.

    The per-sample gradients are computed once, here, with
    ``torch.func.vmap(torch.func.grad(per_sample_loss_fn))`` and stored as G (N, P)
    (memory N·P); each matvec is F̃ v = Gᵀ(G v) / N. Unlike the Fisher, F̃ depends on the
    observed targets and is not a curvature matrix in general (Kunstner et al., 2019).

    Args:
        per_sample_loss_fn: ``fn(θ, x) -> scalar`` (or ``fn(θ, x, y)`` when ``targets`` is
            given) for ONE sample, without a batch dimension; vmapped over the batch.
        params: θ, shape (P,).
        inputs: the batch (N, ...).
        targets: optional targets (N, ...).
        damping: λ ≥ 0.
        subsample: rows used (int count or float fraction), drawn once here.
        generator: random generator for ``subsample``.

    Returns:
        The matvec ``v (P,) -> (F̃ + λI) v (P,)``.

    Raises:
        ValueError: as :func:`fisher_vp`, and if the per-sample loss is not a real scalar.

    Reference: Kunstner, Balles & Hennig (2019), "Limitations of the empirical Fisher
    approximation for natural gradient descent", NeurIPS.
    """
    where = "empirical_fisher_vp"
    _check_params(params, where)
    lam = _check_damping(damping, where)
    n = _batch_size(inputs, params, "inputs", where)
    if targets is not None:
        n_t = _batch_size(targets, params, "targets", where)
        if n_t != n:
            raise ValueError(f"{where}: inputs have {n} rows but targets have {n_t}")
    rows = _sample_rows(n, subsample, generator, params.device, where)
    x = _take(inputs, rows)
    y = None if targets is None else _take(targets, rows)
    n_used = n if rows is None else rows.shape[0]
    theta = params.detach().clone()
    args: tuple[Any, ...] = (x,) if y is None else (x, y)

    def first(a: Inputs) -> Inputs:
        return a[0] if isinstance(a, Tensor) else _map_leaves(a, lambda t: t[0])

    with torch.no_grad():  # check the per-sample loss on one sample
        probe = per_sample_loss_fn(theta, *(first(a) for a in args))
    if not isinstance(probe, Tensor) or probe.numel() != 1 or not probe.is_floating_point():
        got = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
        raise ValueError(f"{where}: per_sample_loss_fn must return a real scalar for one sample, got {got}")
    grad_fn = func_grad(lambda th, *a: per_sample_loss_fn(th, *a).reshape(()))
    in_dims = (None,) + (0,) * len(args)
    grads = vmap(grad_fn, in_dims=in_dims)(theta, *args)  # (N, P)
    scale = 1.0 / n_used

    def core(v: Tensor) -> Tensor:
        return grads.t().mv(grads.mv(v)).mul_(scale)

    return _operator(core, params, lam, where)


def to_dense(matvec: Matvec, n: int, *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """Materialise a linear operator column by column: M[:, i] = M eᵢ.

    Costs n matvecs; meant for tests and tiny models (kfac-jax's ``to_dense_matrix``).

    Args:
        matvec: ``v (n,) -> M v (n,)``.
        n: the dimension.
        dtype: dtype of the unit vectors (that of the operator's params).
        device: device of the unit vectors.

    Returns:
        M, shape (n, n).

    Raises:
        ValueError: if ``n`` is not a positive int or a column has the wrong shape.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"to_dense: n must be a positive int, got {n!r}")
    n = int(n)
    eye = torch.eye(n, dtype=dtype, device=device)
    cols = []
    for i in range(n):
        col = matvec(eye[i])
        if not isinstance(col, Tensor) or col.shape != (n,):
            got = tuple(col.shape) if isinstance(col, Tensor) else type(col).__name__
            raise ValueError(f"to_dense: column {i} has shape {got}, expected ({n},)")
        cols.append(col)
    return torch.stack(cols, dim=1)

"""A user objective ``fun(x)`` seen by the solvers as ``fg(θ) -> (f, ∇f)`` on a flat vector.

The solvers of :mod:`natrl.optim` work on flat vectors θ ∈ Rⁿ; users write ``fun`` for a
tensor of any shape. :class:`Objective` reshapes, evaluates, differentiates (autograd unless
``fun`` returns ``(loss, grad)`` or a ``jac`` is given), checks what comes back, and counts
evaluations (``nfev``, ``njev``, ``nhev``) for :class:`~natrl.optim.result.OptimizeResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from natrl.curvature import hvp

__all__ = ["Objective"]

Matvec = Callable[[Tensor], Tensor]


class Objective:
    """Evaluation, differentiation and bookkeeping for ``fun``.

    Args:
        fun: ``fun(x) -> loss`` or ``fun(x) -> (loss, grad)``, ``x`` of ``x0``'s shape; ``loss``
            a scalar tensor (or float when ``grad`` is returned).
        x0: the starting point; fixes the shape, dtype and device of every ``x`` given to ``fun``.
        jac: optional ``jac(x) -> grad``; ``True`` means ``fun`` returns ``(loss, grad)``.
        hessp: optional ``hessp(x, p) -> H(x) p``; by default Hessian-vector products come
            from autograd (double backward through ``fun``).
        where: name used in error messages.

    Raises:
        TypeError: if ``x0`` is not a floating-point tensor.
    """

    def __init__(
        self,
        fun: Callable[[Tensor], Any],
        x0: Tensor,
        *,
        jac: Callable[[Tensor], Tensor] | bool | None = None,
        hessp: Callable[[Tensor, Tensor], Tensor] | None = None,
        where: str = "minimize",
    ) -> None:
        if not isinstance(x0, Tensor):
            raise TypeError(f"{where}: x0 must be a torch.Tensor, got {type(x0).__name__}")
        if not x0.dtype.is_floating_point:
            raise TypeError(
                f"{where}: x0 must be a floating-point tensor, got dtype {x0.dtype}; use x0.double() or x0.float()"
            )
        if not callable(fun):
            raise TypeError(f"{where}: fun must be callable, got {type(fun).__name__}")
        if jac is not None and not isinstance(jac, bool) and not callable(jac):
            raise TypeError(f"{where}: jac must be None, True or a callable")
        if hessp is not None and not callable(hessp):
            raise TypeError(f"{where}: hessp must be None or a callable")
        self.fun = fun
        self.jac = jac
        self.hessp_fn = hessp
        self.shape = x0.shape
        self.numel = x0.numel()
        self._flat_shape = torch.Size((self.numel,))
        self.dtype = x0.dtype
        self.device = x0.device
        self.where = where
        self.nfev = 0
        self.njev = 0
        self.nhev = 0
        self._checked_first = False
        # Whether fun returns (loss, grad): then x is passed without requires_grad.
        self._returns_grad = jac is True
        self._hvp_checked = False
        # one reusable no-grad context for the (loss, grad) evaluations (entered once at a time)
        self._no_grad = torch.no_grad()

    # -- evaluation ----------------------------------------------------------------------------

    def _call(self, x: Tensor) -> Any:
        try:
            return self.fun(x)
        except RuntimeError as err:
            if not self._checked_first and "device" in str(err).lower():
                raise ValueError(
                    f"{self.where}: fun failed on x0 (device {self.device}): {err}. Move x0 to "
                    "the device of the tensors that fun uses."
                ) from err
            raise

    def _scalar(self, value: Any) -> Tensor:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return torch.tensor(float(value), dtype=self.dtype, device=self.device)
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{self.where}: fun must return a scalar tensor or a (loss, grad) pair, got {type(value).__name__}"
            )
        if value.numel() != 1:
            raise ValueError(
                f"{self.where}: fun must return a scalar loss, got a tensor of shape "
                f"{tuple(value.shape)} (reduce it, e.g. with .sum() or .mean())"
            )
        if value.device != self.device:
            raise ValueError(
                f"{self.where}: fun returned a value on {value.device} but x0 is on "
                f"{self.device}; put x0 on the device fun computes on"
            )
        return value if value.dim() == 0 else value.reshape(())

    def _check_first(self, f: Tensor) -> None:
        if self._checked_first:
            return
        fv = float(f.detach())
        if not math.isfinite(fv):
            raise ValueError(f"{self.where}: fun returned a non-finite value ({fv}) at x0")
        self._checked_first = True

    def _grad_checked(self, g: Any) -> Tensor:
        if not isinstance(g, Tensor):
            raise TypeError(f"{self.where}: the gradient must be a tensor, got {type(g).__name__}")
        if g.numel() != self.numel:
            raise ValueError(
                f"{self.where}: the gradient has shape {tuple(g.shape)}, expected {tuple(self.shape)} (the shape of x0)"
            )
        if g.device != self.device:
            raise ValueError(f"{self.where}: the gradient is on {g.device} but x0 is on {self.device}")
        if g.requires_grad:
            g = g.detach()
        if g.dim() != 1:
            g = g.reshape(-1)
        return g if g.dtype == self.dtype else g.to(self.dtype)

    def fg(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(θ), ∇f(θ))``: a detached 0-d tensor and a flat vector of shape (n,)."""
        x = theta.detach() if theta.requires_grad else theta
        if x.shape != self.shape:
            x = x.reshape(self.shape)
        if callable(self.jac) and not isinstance(self.jac, bool):
            with torch.no_grad():
                out = self._call(x)
            f = self._scalar(out[0] if isinstance(out, tuple) else out)
            self._check_first(f)
            g = self._grad_checked(self.jac(x))
        else:
            if self._returns_grad:
                with self._no_grad:
                    out = self._call(x)
            else:
                xg = x.clone().requires_grad_(True)
                try:
                    with torch.enable_grad():
                        out = self._call(xg)
                    x = xg
                except RuntimeError as err:
                    # e.g. x.numpy() in a (loss, grad) objective: retry without autograd.
                    if self._checked_first or "requires grad" not in str(err):
                        raise
                    with torch.no_grad():
                        out = self._call(x)
                    if not isinstance(out, tuple):
                        raise ValueError(
                            f"{self.where}: fun cannot be differentiated by autograd ({err}); "
                            "return (loss, grad) or pass jac"
                        ) from err
            if isinstance(out, tuple):
                self._returns_grad = True
                f, g = self._pair(out)
            else:
                if self.jac is True:
                    raise ValueError(f"{self.where}: jac=True but fun returned the loss alone")
                f = self._scalar(out)
                self._check_first(f)
                g = self._autograd_grad(f, x)
        self.nfev += 1
        self.njev += 1
        return (f.detach() if f.requires_grad else f), g

    def _pair(self, out: tuple[Any, ...]) -> tuple[Tensor, Tensor]:
        """The checked ``(f, ∇f)`` of a ``(loss, grad)`` returned by ``fun``."""
        if len(out) != 2:
            raise ValueError(
                f"{self.where}: fun returned a tuple of {len(out)} items; return the loss alone or a (loss, grad) pair"
            )
        f = self._scalar(out[0])
        self._check_first(f)
        return f, self._grad_checked(out[1])

    def fg_numpy(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`fg` on a flat NumPy array θ (a CPU objective): ``(f, ∇f)`` as a float and a flat array.

        θ reaches ``fun`` as a tensor sharing its memory, and ∇f is returned as a view of the
        gradient tensor. Once ``fun`` is known to return ``(loss, grad)`` (a check made at the
        first evaluation), a 0-d loss tensor and a flat CPU gradient tensor of x0's dtype are
        taken as they are; anything else goes through :meth:`fg`'s checks.
        """
        x = torch.from_numpy(theta)
        if not (self._returns_grad and self._checked_first and not callable(self.jac)):
            f, g = self.fg(x)
            return f.item(), g.numpy()
        if len(self.shape) != 1:
            x = x.reshape(self.shape)
        with self._no_grad:
            out = self.fun(x)
        if type(out) is tuple and len(out) == 2:
            f, g = out
            if (
                type(g) is Tensor
                and type(f) is Tensor
                and g.shape == self._flat_shape
                and g.dtype == self.dtype
                and g.is_cpu
                and f.is_cpu
                and f.dim() == 0
                and not g.requires_grad
            ):
                self.nfev += 1
                self.njev += 1
                return f.item(), g.numpy()
        if type(out) is not tuple:
            return self._numpy(*self.fg(x))
        f, g = self._pair(out)
        self.nfev += 1
        self.njev += 1
        return self._numpy(f, g)

    @staticmethod
    def _numpy(f: Tensor, g: Tensor) -> tuple[float, np.ndarray]:
        return f.item(), g.numpy()

    def _autograd_grad(self, f: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
        if not f.requires_grad:
            raise ValueError(
                f"{self.where}: fun's value does not depend on x through autograd (it has no "
                "grad_fn); compute it with torch operations on x, return (loss, grad), or pass jac"
            )
        (g,) = torch.autograd.grad(f, x, allow_unused=True, create_graph=create_graph)
        if g is None:
            raise ValueError(
                f"{self.where}: fun's value has no gradient with respect to x (x is unused); "
                "return (loss, grad) or pass jac"
            )
        return g.reshape(-1) if create_graph else g.detach().reshape(-1)

    # -- second order --------------------------------------------------------------------------

    def _grad_graph(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(x, ∇f(x)) with ∇f recorded with ``create_graph=True`` for double backward."""
        x = theta.detach().reshape(self.shape).clone().requires_grad_(True)
        with torch.enable_grad():
            out = self._call(x)
            f = self._scalar(out[0] if isinstance(out, tuple) else out)
            if not f.requires_grad:
                raise ValueError(
                    f"{self.where}: Hessian-vector products need hessp, or a fun whose loss is "
                    "differentiable twice by autograd (its loss has no grad_fn)"
                )
            g = self._autograd_grad(f, x, create_graph=True)
        return x, g

    def hvp(self, theta: Tensor) -> Matvec:
        """The Hessian-vector product ``v ↦ ∇²f(θ) v`` (flat vectors), counted in ``nhev``.

        With ``hessp`` it calls ``hessp(x, v)``; otherwise :func:`natrl.curvature.hvp` in
        reverse-over-reverse mode: ∇f(θ) is recorded with ``create_graph=True`` once and each
        product is one backward pass through it (cheaper than forward-over-reverse when CG
        asks for many products at the same θ).
        """
        if self.hessp_fn is not None:
            hessp = self.hessp_fn
            x0 = theta.detach().reshape(self.shape)

            def user_mv(v: Tensor) -> Tensor:
                self.nhev += 1
                return self._grad_checked(hessp(x0, v.reshape(self.shape)))

            return user_mv

        def loss_fn(t: Tensor) -> Tensor:
            out = self._call(t.reshape(self.shape))
            return self._scalar(out[0] if isinstance(out, tuple) else out)

        if not self._hvp_checked:  # clear errors for funs that autograd cannot differentiate
            self._grad_graph(theta)
            self._hvp_checked = True
        op = hvp(loss_fn, theta.detach().reshape(-1), mode="reverse-over-reverse")

        def mv(v: Tensor) -> Tensor:
            self.nhev += 1
            return op(v.reshape(-1)).detach()

        return mv

    def hessian(self, theta: Tensor) -> Tensor:
        """The dense Hessian ∇²f(θ), shape (n, n), symmetrised; counts one ``nhev``.

        Without ``hessp`` all n columns come from one batched double backward
        (``is_grads_batched``), falling back to n products when ``fun`` does not support it.
        """
        n = theta.numel()
        eye = torch.eye(n, dtype=self.dtype, device=self.device)
        h: Tensor | None = None
        if self.hessp_fn is None:
            x, g = self._grad_graph(theta)
            if not g.requires_grad:
                h = torch.zeros(n, n, dtype=self.dtype, device=self.device)
            else:
                try:
                    (hb,) = torch.autograd.grad(g, x, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
                    h = torch.zeros_like(eye) if hb is None else hb.detach().reshape(n, n)
                except RuntimeError:
                    h = None
        if h is None:
            mv = self.hvp(theta)
            before = self.nhev
            h = torch.stack([mv(eye[i]) for i in range(n)], dim=1)
            self.nhev = before
        self.nhev += 1
        return 0.5 * (h + h.T)

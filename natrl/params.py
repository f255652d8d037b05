"""Flat-parameter views of modules and parameter lists.

Curvature operators, conjugate gradient and line searches in natrl work on one
flat vector θ ∈ R^P. This module converts between a list of parameter tensors
and that vector, writes a vector back into the tensors, and adapts a module to
a pure function ``f(θ, *inputs)`` with :func:`torch.func.functional_call`.

Example:
    >>> net = torch.nn.Linear(3, 2)
    >>> spec = ParamSpec.of(net.parameters())
    >>> theta = flatten(net.parameters())          # shape (8,)
    >>> f = functional(net)                        # f(theta, x) == net(x)
    >>> write_back(net.parameters(), theta * 0.5)  # in place, no autograd
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "ParamSpec",
    "flatten",
    "flatten_grads",
    "functional",
    "named_functional",
    "unflatten",
    "write_back",
]


@dataclass(frozen=True)
class ParamSpec:
    """Shapes of a parameter list, enough to cut a flat vector back into tensors.

    Attributes:
        shapes: the shape of each tensor, in order.
        numels: the number of elements of each tensor.
    """

    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]

    @classmethod
    def of(cls, params: Iterable[Tensor]) -> ParamSpec:
        ps = list(params)
        return cls(tuple(p.shape for p in ps), tuple(p.numel() for p in ps))

    @property
    def size(self) -> int:
        """Total number of scalars P."""
        return sum(self.numels)


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector (differentiable; a copy).

    Args:
        tensors: parameter tensors (any shapes, same dtype and device).

    Returns:
        A tensor of shape (P,), P the total number of elements.
    """
    ts = list(tensors)
    if not ts:
        raise ValueError("flatten: got an empty parameter list")
    return torch.cat([t.reshape(-1) for t in ts])


def flatten_grads(params: Iterable[Tensor]) -> Tensor:
    """Flat vector of ``p.grad`` (zeros where a parameter has no gradient)."""
    ps = list(params)
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])


def unflatten(flat: Tensor, spec: ParamSpec) -> list[Tensor]:
    """Cut a flat vector into views with the shapes of ``spec``.

    Raises:
        ValueError: if ``flat`` is not one-dimensional of length ``spec.size``.
    """
    if flat.dim() != 1 or flat.numel() != spec.size:
        raise ValueError(f"unflatten: expected a flat vector of {spec.size} elements, got shape {tuple(flat.shape)}")
    return [chunk.view(shape) for chunk, shape in zip(flat.split(list(spec.numels)), spec.shapes)]


@torch.no_grad()
def write_back(params: Iterable[Tensor], flat: Tensor) -> None:
    """Copy a flat vector into the parameter tensors, in place (no autograd).

    The copy is exact: ``flatten(params)`` afterwards equals ``flat`` bit for bit
    (given the same dtype).
    """
    ps = list(params)
    spec = ParamSpec.of(ps)
    for p, chunk in zip(ps, unflatten(flat.detach().to(ps[0].device), spec)):
        p.copy_(chunk)


def named_functional(module: nn.Module, names: Sequence[str] | None = None) -> tuple[Callable[..., Any], list[str]]:
    """A pure function ``f(θ, *args, **kwargs)`` of the module's (chosen) parameters.

    Parameters not in ``names`` and all buffers keep their current values: ``f`` reads the buffers and leaves
    them as they were (a train-mode BatchNorm normalises with the batch's statistics, as the module's forward
    does, without updating the module's running statistics), so calling ``f`` (or a curvature product built on
    it) changes nothing in the module.

    Args:
        module: the module.
        names: the parameter names that make up θ, in order; all trainable ones by default.

    Returns:
        ``(f, names)``; ``f`` returns what the module's forward returns (typed ``Any``, as
        ``nn.Module.__call__`` is).
    """
    all_params = dict(module.named_parameters())
    chosen = names is not None
    if names is None:
        names = [n for n, p in all_params.items() if p.requires_grad]
    unknown = [n for n in names if n not in all_params]
    if unknown:
        raise KeyError(f"named_functional: module has no parameters {unknown}")
    spec = ParamSpec.of(all_params[n] for n in names)
    names = list(names)
    has_buffers = any(True for _ in module.named_buffers())

    def f(theta: Tensor, *args: object, **kwargs: object) -> Any:
        if theta.dim() != 1 or theta.numel() != spec.size:
            raise ValueError(
                f"functional: θ must be a flat vector of the {len(names)} parameters it was made for "
                f"({spec.size} elements{'' if chosen else ', the trainable ones'}), got shape {tuple(theta.shape)}; "
                + (
                    "flatten those parameters, in that order"
                    if chosen
                    else "flatten the same ones: flatten(p for p in module.parameters() if p.requires_grad)"
                )
            )
        tensors = dict(zip(names, unflatten(theta, spec)))
        if has_buffers:  # copies: a train-mode BatchNorm would update the module's running statistics in place
            tensors.update((n, b.clone()) for n, b in module.named_buffers())
        return functional_call(module, tensors, args, kwargs, strict=False)

    return f, names


def functional(module: nn.Module, names: Sequence[str] | None = None) -> Callable[..., Any]:
    """Like :func:`named_functional` but returns only the function."""
    return named_functional(module, names)[0]

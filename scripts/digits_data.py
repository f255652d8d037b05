"""Shared by the experiment scripts: scikit-learn's digits, split and standardised (no download)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor


class Split(NamedTuple):
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def digits(dtype: torch.dtype = torch.float64) -> Split:
    """70/30 stratified split (seed 0), pixels standardised with the training statistics."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1.0
    return Split(
        torch.tensor((x_tr - mu) / sd, dtype=dtype), torch.tensor(y_tr),
        torch.tensor((x_te - mu) / sd, dtype=dtype), torch.tensor(y_te),
    )  # fmt: skip


def train_epochs(
    net: torch.nn.Module, opt: torch.optim.Optimizer, data: Split, *, epochs: int, batch: int, seed: int
) -> None:
    """Minibatch cross-entropy training: ``epochs`` shuffled passes (torch generator seeded ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    n = data.y_train.numel()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()

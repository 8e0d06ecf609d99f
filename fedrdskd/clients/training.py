"""Plain local training and evaluation loops (no Flower), used by the ClientApp."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedrdskd.data import ImageDataset, batches


def proximal_term(model: nn.Module, global_params: list[torch.Tensor]) -> torch.Tensor:
    """FedProx's ``0.5 * ||w - w_global||^2`` over the trainable parameters."""
    squares = [(param - anchor).pow(2).sum()
               for param, anchor in zip(model.parameters(), global_params, strict=True)]
    return 0.5 * torch.stack(squares).sum()


def train(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    proximal_mu: float = 0.0,
    device: torch.device = torch.device("cpu"),
    generator: torch.Generator | None = None,
) -> float:
    """Train ``model`` in place with SGD; return the mean training loss.

    Parameters
    ----------
    model : nn.Module
        The model to train (its current weights are the round's global model).
    dataset : ImageDataset
        The client's local training split.
    epochs, batch_size, lr, momentum, weight_decay
        Local SGD settings.
    proximal_mu : float (default: 0.0)
        FedProx's proximal coefficient; 0 disables the term.
    device : torch.device (default: cpu)
        Where to train.
    generator : torch.Generator | None (default: None)
        Seeds the shuffling.

    Returns
    -------
    float
        Mean cross-entropy (without the proximal term) over all local batches.
    """
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    total, count = 0.0, 0
    for _ in range(epochs):
        for images, labels in batches(dataset, batch_size, shuffle=True,
                                      generator=generator):
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(model(images), labels)
            objective = loss
            if anchor is not None:
                objective = loss + proximal_mu * proximal_term(model, anchor)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    batch_size: int = 1000,
    device: torch.device = torch.device("cpu"),
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction in [0, 1]) of ``model`` on ``dataset``."""
    model.to(device).eval()
    loss_sum, correct, count = 0.0, 0, 0
    for images, labels in batches(dataset, batch_size, shuffle=False, generator=None):
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
        count += len(labels)
    if count == 0:
        return float("nan"), float("nan")
    return loss_sum / count, correct / count

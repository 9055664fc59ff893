"""Gradient reversal and the domain-classification loss of DANN (Ganin et al. 2016)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass."""
    return _GradientReversal.apply(x, scale)


class GradientReversal(nn.Module):
    """Module form of ``grad_reverse``; ``scale`` may be changed during training (see ``dann_schedule``)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.scale)


def dann_schedule(progress: float, gamma: float = 10.0) -> float:
    """Ganin's ramp 2 / (1 + exp(-γ p)) - 1 from 0 (start) towards 1 (end) of training."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


class DomainAdversarialLoss(_Loss):
    """Binary cross-entropy of domain logits: source samples labelled 0, target samples 1."""

    def forward(self, source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([source_logits.flatten(), target_logits.flatten()])
        domains = torch.cat([torch.zeros(source_logits.numel()), torch.ones(target_logits.numel())]).to(logits)
        return F.binary_cross_entropy_with_logits(logits, domains, reduction=self.reduction)

"""Loss for the foreground / distance / border heads of an instance-segmentation network."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn
from torch.nn import functional as F


class ForegroundDistanceBorderLoss(nn.Module):
    """Dice + BCE on the foreground channel, and BCE with soft targets on the distance and border maps.

    ``logits`` and ``target`` are (B, 3, *spatial): channel 0 foreground, 1 normalised distance,
    2 border (targets as made by ``custom.transforms.InstanceTargetsd``).
    """

    def __init__(self, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.weights = weights
        self.dice = DiceLoss(sigmoid=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape or logits.shape[1] != 3:
            raise ValueError(f"expected logits and target of shape (B, 3, ...), got {tuple(logits.shape)} and {tuple(target.shape)}.")
        w_fg, w_dist, w_border = self.weights
        foreground = self.dice(logits[:, :1], target[:, :1]) + F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0])
        distance = F.binary_cross_entropy_with_logits(logits[:, 1], target[:, 1])
        border = F.binary_cross_entropy_with_logits(logits[:, 2], target[:, 2])
        return w_fg * foreground + w_dist * distance + w_border * border

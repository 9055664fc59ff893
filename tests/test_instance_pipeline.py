"""Instance segmentation path: targets transform, loss, and watershed post-processing from network maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom.losses import ForegroundDistanceBorderLoss
from custom.metrics import instance_metrics
from custom.networks import UNet
from custom.transforms import InstanceTargetsd, InstancesFromMapsd

from .conftest import touching_disks


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def test_targets_have_three_channels_and_watershed_recovers_both_objects():
    labels = touching_disks()
    target = InstanceTargetsd("label")({"label": torch.as_tensor(labels[None])})["label"]
    assert target.shape == (3, 48, 64) and target.dtype == torch.float32
    torch.testing.assert_close(target[0], torch.as_tensor((labels > 0).astype(np.float32)))
    instances = InstancesFromMapsd("pred")({"pred": _logit(target)})["pred"]
    assert instances.shape == (1, 48, 64)
    assert instance_metrics(instances[0].numpy(), labels)["ap70"] == 1.0
    with pytest.raises(ValueError, match="3 channels"):
        InstancesFromMapsd("pred")({"pred": torch.zeros(2, 8, 8)})


def test_loss_prefers_the_targets_and_trains_a_small_unet():
    labels = touching_disks()
    target = InstanceTargetsd("label")({"label": torch.as_tensor(labels[None])})["label"][None]
    loss = ForegroundDistanceBorderLoss()
    assert loss(_logit(target), target) < loss(torch.zeros_like(target), target)
    torch.manual_seed(0)
    network = UNet(2, out_channels=3, channels=(8, 16, 32))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    image = torch.as_tensor(labels[None, None] > 0, dtype=torch.float32) + 0.1 * torch.randn(1, 1, 48, 64)
    first = None
    for _ in range(40):
        optimizer.zero_grad()
        value = loss(network(image), target)
        value.backward()
        optimizer.step()
        first = first if first is not None else value.item()
    assert value.item() < 0.7 * first
    with pytest.raises(ValueError, match=r"\(B, 3"):
        loss(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))

"""Running a trained network over one normalised (Z, Y, X) region with MONAI's sliding window.

The speed-ups over calling ``SliceInferer``/``sliding_window_inference`` on a whole volume change
only *how* windows are computed, never which windows or how they are blended: a 2D model gets all
sections of a region as one batch (so ``sw_batch_size`` windows from several sections share one
forward pass), weights and windows use the channels-last memory layout, autograd is off
(``torch.inference_mode``) and, on GPU, autocast runs the network in half precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer


class OnnxRuntimeWindows(torch.nn.Module):
    """Run fixed-size windows through ONNX Runtime (CPU): the network is exported once for
    (``batch``, C, *roi) windows; a smaller last batch is zero-padded to that size and cropped back."""

    def __init__(self, network: torch.nn.Module, window_shape: Sequence[int], threads: int | None = None) -> None:
        super().__init__()
        import tempfile

        import onnxruntime

        self.window_shape = tuple(int(v) for v in window_shape)
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/network.onnx"
            torch.onnx.export(network.eval(), (torch.zeros(self.window_shape),), path, input_names=["image"], output_names=["logits"])
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if tuple(x.shape[1:]) != self.window_shape[1:] or n > self.window_shape[0]:
            raise ValueError(f"ONNX Runtime windows are exported as {self.window_shape}, got {tuple(x.shape)}.")
        batch = x.float().cpu().numpy()
        if n < self.window_shape[0]:
            batch = np.concatenate([batch, np.zeros((self.window_shape[0] - n, *batch.shape[1:]), np.float32)])
        return torch.from_numpy(self.session.run(None, {"image": batch})[0][:n])


def check_rot90_roi(roi: Sequence[int], rot90: bool) -> None:
    """Refuse rot90 test-time augmentation for a window whose two in-plane sizes differ."""
    if rot90 and roi[-1] != roi[-2]:
        raise ValueError(f"rot90 test-time augmentation needs a square in-plane roi, got {tuple(roi)}.")


class WindowNetwork(torch.nn.Module):
    """Wrap a segmentation network for window-wise inference: memory layout and test-time flips.

    ``flip_axes`` lists spatial axes (0 = first spatial axis of a window, -1 = last) to flip; with
    ``rot90`` the window is also rotated by 90°, 180° and 270° in its last two (in-plane) axes,
    which must be equal in size. The logits of the plain window, every single-axis flip and every
    rotation are averaged. Both act inside each window, so the window grid and blending stay those
    of the plain run.
    """

    def __init__(
        self, network: torch.nn.Module, spatial_dims: int, channels_last: bool = True, flip_axes: Sequence[int] = (), rot90: bool = False
    ) -> None:
        super().__init__()
        self.network = network
        self.memory_format = None
        if channels_last:
            self.memory_format = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
            self.network.to(memory_format=self.memory_format)
        self.flip_dims = [(int(a) if int(a) < 0 else 2 + int(a),) for a in flip_axes]
        self.rotations = (1, 2, 3) if rot90 else ()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        out = self.network(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._forward(x)
        for dims in self.flip_dims:
            out = out + torch.flip(self._forward(torch.flip(x, dims)), dims)
        if self.rotations and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rot90 test-time augmentation needs square in-plane windows, got {tuple(x.shape[-2:])}.")
        for k in self.rotations:
            out = out + torch.rot90(self._forward(torch.rot90(x, k, (-2, -1))), -k, (-2, -1))
        return out / (1 + len(self.flip_dims) + len(self.rotations))


class VolumePredictor:
    """Foreground probability of a normalised (Z, Y, X) float32 region.

    Args:
        network: the segmentation network (2 output channels: background, foreground), in eval mode.
        spatial_dims: 2 (per-section model) or 3.
        roi_size: (Y, X) for a 2D model, (Z, Y, X) for a 3D model.
        overlap, sw_batch_size, mode: as MONAI's ``SlidingWindowInferer`` (Gaussian blending by default).
        device: where the network runs; AMP (float16 autocast) only applies on CUDA.
        channels_last: channels-last weights and windows (faster convolutions on CPU and GPU).
        tta_flip_axes: spatial window axes to flip for test-time augmentation (e.g. (0, 1) in-plane for 2D).
        tta_rot90: also average the in-plane 90°/180°/270° rotations of each (square) window.
        backend: ``torch``, or ``onnxruntime`` (CPU only; the network is exported to ONNX once for
            (sw_batch_size, 1, *roi_size) windows, ~1.7x faster than channels-last PyTorch on CPU).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        spatial_dims: int,
        roi_size: Sequence[int],
        overlap: float = 0.25,
        sw_batch_size: int = 8,
        mode: str = "gaussian",
        device: str | torch.device = "cpu",
        amp: bool = False,
        channels_last: bool = True,
        tta_flip_axes: Sequence[int] = (),
        tta_rot90: bool = False,
        backend: str = "torch",
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        roi = tuple(int(r) for r in roi_size)
        if len(roi) != spatial_dims:
            raise ValueError(f"a {spatial_dims}D model needs a roi_size of {spatial_dims} values, got {roi}.")
        check_rot90_roi(roi, tta_rot90)
        self.spatial_dims = spatial_dims
        self.roi_size = roi
        self.overlap = overlap
        self.device = torch.device(device)
        self.amp = amp and self.device.type == "cuda"
        if backend == "onnxruntime":
            if self.device.type != "cpu":
                raise ValueError("the onnxruntime backend runs on CPU; use backend='torch' on GPU.")
            network, channels_last = OnnxRuntimeWindows(network, (sw_batch_size, 1, *roi)), False
        elif backend != "torch":
            raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}.")
        self.network = WindowNetwork(network.to(self.device).eval(), spatial_dims, channels_last, tta_flip_axes, tta_rot90)
        self.inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode)

    @property
    def volume_roi(self) -> tuple[int, int, int]:
        """The window as a (Z, Y, X) extent: a 2D model sees one section at a time."""
        return (1, *self.roi_size) if self.spatial_dims == 2 else self.roi_size  # type: ignore[return-value]

    def logits(self, region: torch.Tensor) -> torch.Tensor:
        """Blended logits (N, C, ...) of a (Z, Y, X) region: N = Z sections for 2D, N = 1 for 3D."""
        x = region[:, None] if self.spatial_dims == 2 else region[None, None]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            return self.inferer(x.to(self.device), self.network).float()

    def __call__(self, region: np.ndarray) -> np.ndarray:
        """Foreground probability (softmax of the blended logits, channel 1) as float32 (Z, Y, X)."""
        logits = self.logits(torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32)))
        prob = torch.softmax(logits, dim=1)[:, 1]
        return (prob if self.spatial_dims == 2 else prob[0]).cpu().numpy()


def resample_in_plane(sections: np.ndarray, zoom: Sequence[float], nearest: bool = False) -> np.ndarray:
    """(Z, Y, X) sections resampled in-plane by ``zoom`` (output pixels per input pixel, (Y, X)) the way
    the network sees an image at its pixel size: bilinear with antialiasing (float32); ``nearest`` for labels."""
    size = tuple(max(1, round(n * z)) for n, z in zip(sections.shape[-2:], zoom))
    x = torch.from_numpy(np.ascontiguousarray(sections))[:, None]
    if nearest:
        return torch.nn.functional.interpolate(x, size=size, mode="nearest")[:, 0].numpy()
    return torch.nn.functional.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0].numpy()


class ResampledPredictor:
    """A ``VolumePredictor`` run at the model's pixel size on a region of another pixel size.

    Each region is resampled in-plane by ``zoom`` (model pixels per input pixel, (Y, X): input pixel
    size / model pixel size; bilinear with antialiasing), predicted, and its probability resampled
    back (bilinear) onto the region's own grid, so the output keeps the input's grid and spacing.
    ``volume_roi`` is the model's window in input pixels, so blockwise halos cover whole windows.
    """

    def __init__(self, predictor: VolumePredictor, zoom: Sequence[float]) -> None:
        self.predictor = predictor
        self.zoom = tuple(float(z) for z in zoom)
        if len(self.zoom) != 2 or not all(math.isfinite(z) and z > 0 for z in self.zoom):
            raise ValueError(f"zoom must be two positive factors (Y, X), got {tuple(zoom)}.")
        self.overlap = predictor.overlap

    @property
    def volume_roi(self) -> tuple[int, int, int]:
        z, y, x = self.predictor.volume_roi
        return z, math.ceil(y / self.zoom[0]), math.ceil(x / self.zoom[1])

    def __call__(self, region: np.ndarray) -> np.ndarray:
        """Foreground probability (float32, the region's (Z, Y, X) shape) predicted at the model's pixel size."""
        shape = region.shape[-2:]
        prob = torch.from_numpy(self.predictor(resample_in_plane(np.asarray(region, dtype=np.float32), self.zoom)))[:, None]
        return torch.nn.functional.interpolate(prob, size=shape, mode="bilinear", align_corners=False)[:, 0].numpy()

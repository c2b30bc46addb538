"""Crop warp, paste and colour match on a torch device: the GPU twin of geometry.py.

On CUDA the restore pipeline uploads, per frame, only the frame rectangle the crop covers
(`geometry.paste_roi`), cuts the crop out of it with `grid_sample`, runs the model, warps the
result back into the same rectangle under the feathered mask and downloads that rectangle:
the face stays on the device from crop to paste, and the rest of the frame never moves.

The sampling matches OpenCV's (`cv2.warpAffine`: INTER_LINEAR cutting the crop and warping
the mask, INTER_CUBIC pasting the crop, `geometry.PASTE_INTERPOLATION`): pixel centres at
integer coordinates (align_corners=True), edge pixels replicated when cutting a crop, zeros
outside the crop when pasting. Crops stay float (0-255) between the stages instead of being rounded
to uint8 as the numpy path does, so the two paths differ by rounding only (measured in
tests/test_geometry_torch.py). With a model that returns its input the paste is exact in
residual mode, as in geometry.paste.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from threpair.config import PasteConfig


def _grid(affine: np.ndarray, out_h: int, out_w: int, src_h: int, src_w: int, device) -> Tensor:
    """grid_sample grid (1, out_h, out_w, 2) that reads a (src_h, src_w) image at affine(x, y)
    for every output pixel (x, y); `affine` (2x3) maps output to source pixel coordinates."""
    a = torch.as_tensor(affine, dtype=torch.float32, device=device)
    ys, xs = torch.meshgrid(
        torch.arange(out_h, device=device, dtype=torch.float32),
        torch.arange(out_w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    sx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    sy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    gx, gy = sx * (2 / max(src_w - 1, 1)) - 1, sy * (2 / max(src_h - 1, 1)) - 1
    return torch.stack([gx, gy], dim=-1)[None]


def _sample(src: Tensor, grid: Tensor, padding: str, mode: str = "bilinear") -> Tensor:
    """Sample `src` (C, H, W) on `grid` (pixel centres at integer coordinates)."""
    return F.grid_sample(src[None], grid, mode=mode, padding_mode=padding,
                         align_corners=True)[0]  # fmt: skip


def _shifted_inverse(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Crop -> rectangle pixel affine, for a rectangle whose top-left is frame (x0, y0)."""
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    inv[:, 2] -= (x0, y0)
    return inv


def _shifted_forward(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Rectangle pixel -> crop affine (the crop matrix with the rectangle's offset)."""
    fwd = matrix.astype(np.float64).copy()
    fwd[:, 2] += fwd[:, 0] * x0 + fwd[:, 1] * y0
    return fwd


def to_planar(rect: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (H, W, 3) numpy rectangle -> float32 (3, H, W) 0-255 tensor on `device`."""
    t = torch.from_numpy(np.ascontiguousarray(rect)).to(device, non_blocking=True)
    return t.permute(2, 0, 1).float()


def to_interleaved(t: Tensor) -> np.ndarray:
    """float (3, H, W) 0-255 tensor -> uint8 (H, W, 3) numpy (rounded half to even, clipped)."""
    return t.round().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def warp_crop(rect: Tensor, matrix: np.ndarray, x0: int, y0: int, size: int) -> Tensor:
    """Cut the (3, size, size) float crop out of `rect`, the frame rectangle at (x0, y0).

    `rect` must cover the crop square (`geometry.paste_roi`); beyond the frame's edges the
    edge pixels are replicated, as geometry.warp_crop does.
    """
    h, w = rect.shape[-2:]
    grid = _grid(_shifted_inverse(matrix, x0, y0), size, size, h, w, rect.device)
    return _sample(rect, grid, "border")


def match_color(out: Tensor, ref: Tensor, mask: Tensor) -> Tensor:
    """Per-channel mean/std of `out` (3, S, S) under `mask` (S, S) matched to `ref`'s."""
    w = mask[None]
    total = w.sum().clamp_min(1e-6)
    mo = (out * w).sum((1, 2), keepdim=True) / total
    mr = (ref * w).sum((1, 2), keepdim=True) / total
    so = (((out - mo) ** 2 * w).sum((1, 2), keepdim=True) / total).sqrt() + 1e-6
    sr = (((ref - mr) ** 2 * w).sum((1, 2), keepdim=True) / total).sqrt() + 1e-6
    return ((out - mo) * (sr / so) + mr).clamp(0, 255)


def paste(
    rect: Tensor,
    out_crop: Tensor,
    in_crop: Tensor,
    matrix: np.ndarray,
    x0: int,
    y0: int,
    mask: Tensor,
    cfg: PasteConfig,
    strength: float = 1.0,
) -> Tensor:
    """Warp `out_crop` back into `rect` (the frame rectangle at x0, y0) under `mask`.

    Float tensors on one device: rect (3, H, W), crops (3, S, S), mask (S, S). Returns the
    new rectangle; pixels where the warped mask is 0 keep their values exactly.
    """
    if strength <= 0:
        return rect
    if cfg.color_match:
        out_crop = match_color(out_crop, in_crop, mask)
    h, w = rect.shape[-2:]
    size = mask.shape[-1]
    grid = _grid(_shifted_forward(matrix, x0, y0), h, w, size, size, rect.device)  # one grid
    m = _sample(mask[None], grid, "zeros") * strength
    if cfg.mode == "residual":
        blended = rect + m * _sample(out_crop - in_crop, grid, "zeros", "bicubic")
    else:
        blended = rect * (1 - m) + _sample(out_crop, grid, "border", "bicubic") * m
    return torch.where(m > 0, blended, rect)

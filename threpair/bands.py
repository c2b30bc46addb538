"""The band split shared by the network engine: an exact low-pass projection on a coarse grid.

    low = low_pass(x, grid)            # (B, C, H, W) -> same shape; content on a grid x grid
    area_down(low, grid) == area_down(x, grid)      # up to float rounding

"The low band" of a crop is what an area resize to `grid` x `grid` cells keeps (the measure
the reference engine and the tests use: `area_down`). The generator's mouth shape lives
there. `low_pass` is the oblique projection onto smooth (bilinearly interpolated) images
that keeps exactly that content: L = U (A U)^-1 A per axis, with A the area resize down and
U the bilinear resize up. So `area_down(L(x)) == area_down(x)` and `L(L(x)) == L(x)`, and
for any image d, `high_pass(d) = d - L(d)` has no content on the grid. The band-split
network's output, `low_pass(x) + high_pass(decoder)`, therefore keeps the input's low band
by construction, whatever the decoder does.

The grid is tied to the generator's resolution (`generators.low_grid`): half of it over the
crop, the cut the reference engine uses. Each axis costs one (S x S) matrix product per
channel (cached per size, grid, device and dtype).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from threpair.errors import InputError


def area_down(x: Tensor, grid: int) -> Tensor:
    """(B, C, H, W) -> (B, C, grid, grid): mean over each cell (area resize)."""
    return F.interpolate(x, size=(grid, grid), mode="area")


@functools.lru_cache(maxsize=32)
def _projection(size: int, grid: int, device: str, dtype: torch.dtype) -> Tensor:
    """The (size x size) matrix Q = U (A U)^-1 A of one axis, computed in float64.

    Built outside inference mode even when called inside it: the cached matrix is shared, and
    an inference tensor cannot enter training (a network run by `restore` before a training
    run in the same process would otherwise break the training's backward pass)."""
    with torch.inference_mode(False):
        eye = torch.eye(size, dtype=torch.float64)
        # A: (grid, size), row i = the area weights of cell i; U: (size, grid) bilinear weights
        a = F.interpolate(eye[None], size=grid, mode="area")[0].T.contiguous()
        u = F.interpolate(torch.eye(grid, dtype=torch.float64)[None], size=size, mode="linear",
                          align_corners=False)[0].T.contiguous()  # fmt: skip
        q = u @ torch.linalg.solve(a @ u, a)
        return q.to(device=device, dtype=dtype)


def grid_for(size: int, band_grid: int, resolution: int) -> int:
    """The low-band grid of an input `size` px wide, for a model whose whole crop of
    `resolution` px has `band_grid` cells (patches get the same cells per pixel)."""
    return max(2, min(size, round(size * band_grid / resolution)))


def low_pass(x: Tensor, grid: int) -> Tensor:
    """The exact low band of (B, C, H, W) images, H = W: same shape and dtype (computed in
    fp32 at least; see the module docstring)."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise InputError(f"low_pass needs square (B, C, S, S) images, got {tuple(x.shape)}")
    size = int(x.shape[-1])
    if not 1 <= grid <= size:
        raise InputError(f"low-band grid {grid} must be between 1 and the image size {size}")
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    q = _projection(size, int(grid), str(x.device), dtype)
    # outside autocast: under fp16/bf16 autocast the products would run in half precision
    # and the low band would move by ~1e-3 (a third of a level)
    with torch.autocast(x.device.type, enabled=False):
        y = torch.matmul(q, torch.matmul(x.to(dtype), q.T))  # rows then columns
    return y.to(x.dtype)


def high_pass(x: Tensor, grid: int) -> Tensor:
    """x - low_pass(x): nothing left on the grid."""
    return x - low_pass(x, grid)

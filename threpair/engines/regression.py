"""Local linear regression: the person's own deconvolution, fitted in closed form.

A generator's upscaling attenuates the band below its resolution (down to a quarter of it
and less); that loss is close to linear, so a linear map from a degraded patch to the
missing detail, fitted on the identity's bank (keys -> real - keys), gives much of it back
without any training loop. Crops are aligned, so the map depends on the position: one ridge
regression per cell of a coarse grid over the crop, and every pixel blends the predictions
of its four nearest cells with bilinear (tent) weights, so no cell edge shows.

    reg = fit_local(keys, values, rect=(y0, y1, x0, x1))   # float (N, C, S, S), 0-255
    high = reg.predict(q)                                  # (C, S, S) -> (3, S, S)

Keys (and queries) have C = 3 (RGB) or 1 (luma, what the reference engine passes) channels;
values and predictions are RGB.

It complements the reference attention (engines/attention.py): attention copies real
texture from the best-matching references (sharp, but averaged over a few matches and
changing with them), the regression is the smooth, stable least-squares estimate of the
attenuated band (5 held-out anchor frames degraded by `threpair degrade` at 96 px, 448-px
crops, face PSNR: attention alone +1.9 dB, regression alone +1.7, blended +2.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class LocalRegression:
    """Per-cell ridge regressions from (2 radius + 1)^2 patches (C channels) to the RGB high
    band.

    weights (ny, nx, F, 3), means (ny, nx, F), bias (ny, nx, 3) for the cells of the grid
    rows ny0..ny0+ny and columns nx0..nx0+nx of an n x n grid over S x S crops.
    """

    weights: torch.Tensor
    means: torch.Tensor
    bias: torch.Tensor
    n: int
    origin: tuple[int, int]
    size: int
    radius: int
    # (y0, y1, x0, x1) pixels: where `predict` predicts (the fit's rect); 0 elsewhere
    rect: tuple[int, int, int, int] | None = None
    # per device: the cells' windows, kernels, offsets and tent weights (see `_cells`)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def predict(self, q: torch.Tensor) -> torch.Tensor:
        """The regressed high band (3, S, S) of one float crop (C, S, S); 0 outside `rect`.

        Outside the generator's box the crop is the real frame, sharp already, but the cells
        there were fitted on pixels inside and outside it alike and would sharpen it again:
        over whole crops that cost 0.18 / 0.26 dB (12 crops each of anchor_de_20s / obama_20s
        degraded at 96 px), the face and mouth unchanged, and half the crop to predict."""
        s, r = self.size, self.radius
        qp = torch.nn.functional.pad(q[None].float(), (r,) * 4, mode="replicate")
        out = torch.zeros(3, s, s, dtype=torch.float32, device=q.device)
        for (y0, y1, x0, x1), kernel, offset, weight in self._blocks(q.device):
            win = qp[:, :, y0 : y1 + 2 * r, x0 : x1 + 2 * r]
            pred = torch.nn.functional.conv2d(win, kernel, offset)[0]
            out[:, y0:y1, x0:x1] = (pred.view(len(weight), 3, y1 - y0, x1 - x0) * weight).sum(0)
        return out

    def _blocks(self, dev: torch.device) -> list:
        """The pixel blocks that share their (up to) four nearest fitted cells, each with
        those cells' kernels stacked (one convolution per block), offsets and tent weights
        (m, 1, h, w). Built once per device: they do not depend on the crop."""
        cache = self._cache
        if dev not in cache:
            s, n, k = self.size, self.n, 2 * self.radius + 1
            cy0, cx0 = self.origin
            ny, nx = self.weights.shape[:2]
            c = self.weights.shape[2] // (k * k)  # input channels: 3 (RGB) or 1 (luma)
            kernels = self.weights.permute(0, 1, 3, 2).reshape(ny, nx, 3, c, k, k).to(dev)
            offsets = (self.bias - torch.einsum("yxf,yxfc->yxc", self.means, self.weights)).to(dev)
            rows, cols = _parent_runs(s, n, cy0, ny, dev), _parent_runs(s, n, cx0, nx, dev)
            ry0, ry1, rx0, rx1 = self.rect or (0, s, 0, s)
            blocks = []
            for (y0, y1), ys in rows:
                for (x0, x1), xs in cols:
                    a, b, c0, c1 = max(y0, ry0), min(y1, ry1), max(x0, rx0), min(x1, rx1)
                    if a >= b or c0 >= c1:
                        continue
                    cells = [(i, wy, j, wx) for i, wy in ys for j, wx in xs]
                    tents = torch.stack([wy[:, None] * wx[None, :] for _, wy, _, wx in cells])
                    blocks.append(
                        (
                            (a, b, c0, c1),
                            torch.cat([kernels[i, j] for i, _, j, _ in cells]),
                            torch.cat([offsets[i, j] for i, _, j, _ in cells]),
                            tents[:, None, a - y0 : b - y0, c0 - x0 : c1 - x0],
                        )
                    )
            cache[dev] = blocks
        return cache[dev]


def _parent_runs(size: int, n: int, first: int, count: int, dev: torch.device) -> list:
    """Along one axis of an n-cell grid over `size` pixels: runs of pixels (start, stop) that
    share their two nearest cell centres, each with [(fitted cell index, tent weights of the
    run's pixels)] for the fitted cells first..first+count-1 among those two."""
    cell = size / n
    p = torch.arange(size, dtype=torch.float32)
    u = ((p + 0.5) / cell - 0.5).clamp(0, n - 1)
    lo = u.floor().long().clamp(max=n - 1)
    frac = u - lo
    runs = []
    for c in range(max(0, first - 1), min(n, first + count)):
        idx = torch.nonzero(lo == c).flatten()
        if len(idx) == 0:
            continue
        a, b = int(idx[0]), int(idx[-1]) + 1
        parents = [(c, 1 - frac[a:b]), (c + 1, frac[a:b])]
        fitted = [
            (i - first, w.to(dev)) for i, w in parents if first <= i < first + count and w.max() > 0
        ]
        if fitted:
            runs.append(((a, b), fitted))
    return runs


def _support(i: int, n: int, cell: float, size: int, dev: torch.device):
    """Pixels whose tent weight for cell i of n is positive, and those weights (the cell
    centres are (i + 0.5) * cell; positions are clamped to the first/last centre, so the
    weights of all cells sum to 1 everywhere)."""
    lo = max(0, int(np.floor((i - 0.5) * cell)))
    hi = min(size, int(np.ceil((i + 1.5) * cell)))
    p = torch.arange(lo, hi, device=dev, dtype=torch.float32)
    u = ((p + 0.5) / cell - 0.5).clamp(0, n - 1)
    w = (1 - (u - i).abs()).clamp_min(0)
    keep = w > 0
    return p[keep].long(), w[keep]


def fit_local(
    keys: torch.Tensor,
    values: torch.Tensor,
    rect: tuple[int, int, int, int] | None = None,
    cell: int = 64,
    radius: int = 3,
    samples: int = 128,
    ridge: float = 1.0,
    seed: int = 0,
) -> LocalRegression:
    """Fit the per-cell regressions on float (N, C, S, S) keys and (N, 3, S, S) values
    (real - key).

    rect (y0, y1, x0, x1) in pixels: only the cells whose support touches it are fitted and
    only its pixels (rounded outwards) are predicted (the generator's box; elsewhere there is
    nothing to restore). `samples` random positions per cell and crop; `ridge` in squared
    levels per sample."""
    s = keys.shape[-1]
    n = max(2, int(round(s / cell)))
    size = s / n
    y0, y1, x0, x1 = rect or (0, s, 0, s)
    first = lambda a: max(0, int(np.floor(a / size - 1.5)) + 1)  # noqa: E731
    last = lambda b: min(n, int(np.ceil(b / size + 0.5)))  # noqa: E731
    cy0, cy1, cx0, cx1 = first(y0), last(y1), first(x0), last(x1)
    kp = torch.nn.functional.pad(keys.float(), (radius,) * 4, mode="replicate")
    rng = np.random.default_rng(seed)
    dev = keys.device
    f = keys.shape[1] * (2 * radius + 1) ** 2
    ny, nx = cy1 - cy0, cx1 - cx0
    weights = torch.zeros(ny, nx, f, 3, device=dev)
    means = torch.zeros(ny, nx, f, device=dev)
    bias = torch.zeros(ny, nx, 3, device=dev)
    for i in range(ny):
        ys, _ = _support(cy0 + i, n, size, s, dev)
        for j in range(nx):
            xs, _ = _support(cx0 + j, n, size, s, dev)
            m = min(samples, len(ys) * len(xs))
            pick = torch.from_numpy(rng.choice(len(ys) * len(xs), m, replace=False)).to(dev)
            py, px = ys[pick // len(xs)], xs[pick % len(xs)]
            x = _gather(kp, py, px, radius).reshape(-1, f)  # (N * m, F)
            y = values[:, :, py, px].permute(0, 2, 1).reshape(-1, 3).float()
            mu, b = x.mean(0), y.mean(0)
            xc = x - mu
            a = xc.t() @ xc + ridge * len(xc) * torch.eye(f, device=dev)
            weights[i, j] = torch.linalg.solve(a, xc.t() @ (y - b))
            means[i, j], bias[i, j] = mu, b
    bounds = (int(np.floor(y0)), int(np.ceil(y1)), int(np.floor(x0)), int(np.ceil(x1)))
    rect_px = tuple(int(np.clip(v, 0, s)) for v in bounds)
    return LocalRegression(weights, means, bias, n, (cy0, cx0), s, radius, rect_px)


def _gather(kp: torch.Tensor, py: torch.Tensor, px: torch.Tensor, r: int) -> torch.Tensor:
    """Patches of padded crops (N, C, S + 2r, S + 2r) at pixels (py, px): (N, P, C * k * k)
    in the order `_patch_rows` uses (channel, dy, dx)."""
    k = 2 * r + 1
    off = torch.arange(k, device=kp.device)
    iy = (py[:, None] + off[None, :])[:, :, None].expand(-1, k, k)  # (P, k, k)
    ix = (px[:, None] + off[None, :])[:, None, :].expand(-1, k, k)
    g = kp[:, :, iy, ix]  # (N, C, P, k, k)
    return g.permute(0, 2, 1, 3, 4).reshape(kp.shape[0], len(py), -1)

"""The reference engine: the person's real crops as references, no training loop.

    engine = ReferenceEngine(identity.bank, identity.crop, gen_res=96)
    repaired = engine(crops)     # uint8 RGB (B, S, S, 3) -> same; any S (multiple of 32)

Keys are the bank crops degraded the way the generator degrades (its face box rendered at
`gen_res`), values their high band (real - degraded). Two estimates of the generated crop's
missing band, blended per pixel by how well the attention matched (`MATCH_SCALE`):
- attention (engines/attention.py): each generated crop attends to the keys block-locally
  and copies the matched references' real texture;
- regression (engines/regression.py): per-position ridge regressions from degraded patches
  to the high band, fitted in seconds on the bank: the person's own deconvolution, smooth
  and stable from frame to frame.
The output is the generated crop plus the high-pass of the blend, so its low band, the
generator's mouth shape, is kept by construction: content on a grid of a quarter of the
generator's resolution is never changed (`kept_grid`), detail above it is restored.

Per-frame confidence: the share of face-box grid cells whose best patch distance exceeds
`tau`, the 90th percentile of the same distance when each bank crop is matched against the
others (leave-one-out); `outside_baseline` is that share on the identity's held-out crops.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from threpair.config import CropConfig
from threpair.engines.attention import AttentionConfig, _tiles, attend, features, pad_values
from threpair.engines.regression import LocalRegression, fit_local
from threpair.errors import InputError
from threpair.generators import crop_box, simulate
from threpair.inference import FrameStats

GRID = 32  # crop sizes must be multiples of this (factor x tile of the default attention)
# How the attended and the regressed high band are blended, per pixel, by how well the
# attention matched there: alpha = exp(-(best / (MATCH_SCALE * tau))^2) from the grid cell's
# best patch distance (tau: the bank's own leave-one-out 90th percentile), smoothed over
# `ALPHA_SIGMA` grid cells; high = alpha * attention + (1 - alpha) * (FALLBACK[0] *
# attention + FALLBACK[1] * regression). Well-matched faces take the references' real
# texture, poorly matched ones (motion, poses the bank lacks) the regression's stable
# deconvolution. 12 crops each of degraded anchor_de_20s / obama_20s / hill_8s (face / mouth
# PSNR gain, crop level): attention alone +4.33/+3.98, +3.10/+2.97, +0.41/+0.79; fixed
# 0.5 / 0.8 +3.48/+3.31, +2.84/+2.91, +1.71/+2.07; this +4.28/+4.02, +3.22/+3.14, +1.42/+2.15.
MATCH_SCALE = 2.0
ALPHA_SIGMA = 2.0
FALLBACK = (0.3, 1.0)


def kept_grid(gen_res: int, margin: float) -> int:
    """Side of the grid whose content the engine never changes: a quarter of the
    generator's own resolution over the crop (its face box rendered at gen_res, the crop
    `margin` boxes wide), 24 cells over a 96-px generator's face box. The mouth's shape
    lives below that; above it the generator's upscaling attenuated detail that the engine
    restores (5 held-out anchor frames degraded at 96 px, 448-px crops, face PSNR gain with
    both bands cut at half the generator grid +1.9 dB, at a quarter +2.7, at a sixth +2.8;
    the attention alone cut at two thirds of it +1.3)."""
    return max(4, int(round(gen_res * margin / 4)))


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) -> (N, size, size, 3): area when shrinking, cubic when growing."""
    if crops.shape[1] == size:
        return crops
    interp = cv2.INTER_AREA if size < crops.shape[1] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops])


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, H, W), edges replicated."""
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    w = torch.exp(-(t**2) / (2 * sigma**2))
    w = w / w.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), w.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), w.view(1, 1, -1, 1))


class ReferenceEngine:
    """Multi-reference attention over an identity's bank (see the module docstring)."""

    name = "references"

    def __init__(
        self,
        bank: np.ndarray,
        crop: CropConfig,
        gen_res: int,
        cfg: AttentionConfig | None = None,
        device: str | torch.device = "cpu",
        keep_bonus: float = 0.1,
        holdout: np.ndarray | None = None,
    ) -> None:
        if bank.ndim != 4 or bank.shape[-1] != 3 or len(bank) == 0 or bank.dtype != np.uint8:
            raise InputError(f"the reference bank must be uint8 (N, S, S, 3), got {bank.shape}")
        self.bank = bank
        self.crop = crop
        self.gen_res = int(gen_res)
        self.cfg = cfg or AttentionConfig()
        self.device = torch.device(device)
        self.keep_bonus = keep_bonus
        self.holdout = holdout
        self.resolution: int | None = None  # any multiple of GRID; `prepare` sets the size
        self.last_stats: list[FrameStats] = []
        self.frame_stats: list[FrameStats] = []
        self.outside_baseline = 0.0
        # fixed (attention, regression) weights instead of the per-pixel blend (benchmarks)
        self.blend: tuple[float, float] | None = None
        self._size = 0
        self._prev: torch.Tensor | None = None
        self._reg: LocalRegression | None = None

    # ---- per crop size

    def prepare(self, size: int) -> None:
        """Resize the bank to `size`, build keys / values / tiles and the confidence scale."""
        if size == self._size:
            return
        if size % GRID or size < 2 * GRID:
            raise InputError(f"reference engine crops must be a multiple of {GRID} px, got {size}")
        crop = replace(self.crop, size=size)
        real = resize_crops(self.bank, size)
        keys = np.stack([simulate(r, self.gen_res, crop) for r in real])
        t = lambda a: torch.from_numpy(a).to(self.device).permute(0, 3, 1, 2).float()  # noqa: E731
        k, r = t(keys), t(real)
        c = self.cfg
        self._keys_low = features(k, c)
        self._key_tiles = _tiles(self._keys_low, c.tile, c.window + c.patch)
        self._pad = c.factor * c.window
        self._rows = pad_values(r - k, self._pad)
        self._size = size
        self._box_cells = self._box_mask(size)
        self._rect = self._tile_rect(size)
        self.kept_grid = kept_grid(self.gen_res, crop.margin)
        x0, y0, x1, y1 = (v * size for v in crop_box(crop))
        self._reg = fit_local(k, r - k, rect=(y0, y1, x0, x1))
        self.tau = self._loo_tau(k)
        if self.holdout is not None and len(self.holdout):
            hold = resize_crops(self.holdout, size)
            q = t(np.stack([simulate(h, self.gen_res, crop) for h in hold]))
            outs = [
                self._outside(attend(x, *self._bank(), self.cfg, rect=self._rect).best) for x in q
            ]
            self.outside_baseline = float(np.mean(outs))
        self._prev = None

    def _bank(self) -> tuple:
        return self._keys_low, self._key_tiles, self._rows, self._pad

    def _box_mask(self, size: int) -> torch.Tensor:
        n = size // self.cfg.factor
        x0, y0, x1, y1 = (int(round(v * n)) for v in crop_box(replace(self.crop, size=size)))
        m = torch.zeros(n, n, dtype=torch.bool, device=self.device)
        m[max(0, y0) : y1, max(0, x0) : x1] = True
        return m

    def _tile_rect(self, size: int) -> tuple[int, int, int, int]:
        """The grid tiles (ty0, ty1, tx0, tx1) that cover the generator's box: outside it
        the generated crop is the real frame, so there is nothing to attend to (and keys
        equal their references there, so the high band would be 0 anyway)."""
        t = self.cfg.tile
        n = size // self.cfg.factor
        x0, y0, x1, y1 = (v * n for v in crop_box(replace(self.crop, size=size)))
        clip = lambda v: int(min(max(v, 0), n // t))  # noqa: E731
        return clip(y0 // t), clip(-(-y1 // t)), clip(x0 // t), clip(-(-x1 // t))

    def _loo_tau(self, keys: torch.Tensor, n: int = 8) -> float:
        """90th percentile of the best patch distance in the face box when bank crops are
        matched against the rest of the bank (what a well-matched frame looks like)."""
        if len(keys) < 2:
            return float("inf")
        idx = np.unique(np.linspace(0, len(keys) - 1, min(n, len(keys))).round().astype(int))
        best = [
            attend(keys[i], *self._bank(), self.cfg, exclude=int(i), rect=self._rect).best[
                self._box_cells
            ]
            for i in idx
        ]
        return float(torch.quantile(torch.cat(best).float(), 0.9))

    def _outside(self, best: torch.Tensor) -> float:
        return float((best[self._box_cells] > self.tau).float().mean())

    # ---- the FaceModel protocol

    def reset(self) -> None:
        """A new sequence: forget the previous frame's references."""
        self._prev = None

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB crops (B, S, S, 3) -> repaired uint8 crops, same shape."""
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
            raise InputError(f"crops must be uint8 (B, S, S, 3), got {crops.shape}")
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        y = self.run_tensor(x.permute(0, 3, 1, 2).float())
        return y.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, 3, S, S) crops in 0-255 on `device` -> repaired crops, same form."""
        self.prepare(int(x.shape[-1]))
        outs, stats = [], []
        for q in x.float():
            r = attend(q, *self._bank(), self.cfg, self._prev, self.keep_bonus, rect=self._rect)
            kept = 0.0 if self._prev is None else float((r.chosen == self._prev).float().mean())
            self._prev = r.chosen
            assert self._reg is not None
            high = self._blend(r.high, self._reg.predict(q), r.best)
            outs.append(q + self._high_pass(high))
            tau = self.tau
            best = r.best[self._box_cells]
            stats.append(
                FrameStats(
                    outside=float((best > tau).float().mean()),
                    margin=float(((tau - best) / tau).mean()) if np.isfinite(tau) else 1.0,
                    kept=kept,
                )
            )
        self.last_stats = stats
        self.frame_stats += stats
        return torch.stack(outs).clamp_(0, 255)

    def _blend(self, att: torch.Tensor, reg: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """Per-pixel blend of the attended and regressed high band (see MATCH_SCALE)."""
        if self.blend is not None:
            return self.blend[0] * att + self.blend[1] * reg
        scale = MATCH_SCALE * self.tau if np.isfinite(self.tau) else float("inf")
        alpha = torch.exp(-((best.float() / scale) ** 2)).nan_to_num_(0.0)  # inf: 0
        alpha = _gaussian(alpha[None, None], ALPHA_SIGMA)
        alpha = F.interpolate(alpha, size=att.shape[-2:], mode="bilinear", align_corners=False)
        a = alpha[0]
        wa, wr = FALLBACK
        return (a + (1 - a) * wa) * att + (1 - a) * wr * reg

    def _high_pass(self, h: torch.Tensor, rounds: int = 8) -> torch.Tensor:
        """h minus its content on the `kept_grid`, so the output's low band (the generated
        mouth shape) is the generated crop's own. Area-down then bilinear-up is not a
        projection; repeating the subtraction drives that band of h to ~0 (8 rounds: under
        2 levels)."""
        s, grid = h.shape[-1], self.kept_grid
        for _ in range(rounds):
            low = F.interpolate(h[None], size=(grid, grid), mode="area")
            h = h - F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)[0]
        return h

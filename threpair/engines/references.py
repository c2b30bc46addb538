"""The reference engine: the person's real crops as references, no training loop.

    engine = ReferenceEngine(identity.bank, identity.crop, gen_res=96)
    repaired = engine(crops)     # uint8 RGB (B, S, S, 3) -> same; any S (multiple of 32)

Keys are the bank crops degraded the way the generator degrades (its face box rendered at
`gen_res`), values their high band (real - degraded). Two estimates of the generated crop's
missing band, blended per pixel by how well the attention matched (`MATCH_SCALE`, calibrated
per identity on its held-out crops: `calibrate`):
- attention (engines/attention.py): each generated crop attends to the keys block-locally
  and copies the matched references' real texture (optionally after clearing queries and
  keys of the generator's upscaling facets, whose phase differs between them: `prefilter`);
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
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from threpair.config import CropConfig
from threpair.engines import region_masks
from threpair.engines.attention import (
    AttentionConfig,
    AttentionResult,
    KeyBank,
    attend,
    in_chunks,
    luma,
)
from threpair.engines.regression import LocalRegression, fit_local
from threpair.errors import InputError
from threpair.generators import crop_box, simulate
from threpair.inference import FrameStats
from threpair.metrics import psnr

GRID = 32  # crop sizes must be multiples of this
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
# How far the attention is trusted depends on the person's footage, so `prepare` picks the
# scale per identity among these, by the face + mouth PSNR gain on the identity's held-out
# crops degraded like the keys (`calibrate`; MATCH_SCALE without held-out crops). 12 crops
# of each clip's degraded last 25% (crop level, box / mouth gain; identity of the first 75%):
# anchor_de_20s 2: +4.89 / +4.27, 3: +5.10 / +4.35, 4: +5.16 / +4.34; obama_20s +3.83 /
# +3.22, +4.08 / +3.48, +4.15 / +3.56; hill_8s +1.69 / +2.37, +1.46 / +2.29, +1.28 / +2.16.
# The identities' own held-out crops rank them the same way on each clip.
MATCH_SCALES = (1.5, 2.0, 3.0, 4.0)
CALIBRATION_CROPS = 8
# The facet prefilter (`ReferenceEngine(prefilter=sigma)`, in generator pixels; off by
# default): inside the generator's box, queries and keys are first smoothed by a Gaussian.
# The generator's upscaling leaves facets on its own pixel grid (bilinear ramps every crop /
# gen_res px), whose phase and angle in a restore crop differ from those of the simulated
# keys (the real generator renders in frame space, the keys in crop space), so the copied
# high band (real - key) carries the keys' facets onto a query whose facets sit elsewhere;
# with both smoothed, the output drops the query's facets and takes the references' texture.
# On crops it pays: 25 anchor_de_20s crops (448 px) degraded by `threpair degrade` at 96 px,
# face / mouth gain over the generator's box: off +4.25 / +3.98, 0.2 +4.56 / +4.25, 0.35
# +4.70 / +4.34, 0.5 +4.56 / +4.14, 0.7 +3.99 / +3.39. On whole restored frames (face
# ellipse, after the paste and the encode; the held-out 25% of each clip) it does not:
# 0.35 vs off, face / mouth PSNR: anchor_de_20s +0.13 / +0.09, obama_20s -0.12 / -0.20,
# hill_8s -0.19 / -0.08; 0.2: obama -0.01 / -0.03, hill -0.05 / -0.02. Hence off. The
# regression always sees the unfiltered crop: each of its cells is fitted over every facet
# phase in it.
# What the engine measures on the identity's own crops at a crop size (tau, the blend's
# calibration, the confidence baseline: 32 attends, half a restore's plan: on 2 cores, the
# first 8 s of anchor_de_20s / hill_8s degraded at 96 px, 3.6 -> 1.7 s / 4.7 -> 2.4 s) is
# kept in the identity (`Identity.reference_state`, filled by train-identity's validation)
# under `ReferenceEngine.state_key`, so a restore at that size reads it instead.
# Bump STATE_VERSION whenever the matching, the blend or the calibration changes what they
# compute: identities then measure again instead of reading stale figures.
STATE_VERSION = 1
# `ReferenceEngine(scales=RESCALED)` searches the bank at its own scale and rescaled by 1.02
# and 0.98 about the crop centre (the crop's framing follows the detected face box, whose
# size wavers by a few per cent). On crops it pays: held-out crops degraded at 96 px (16
# each, face / mouth PSNR gain; identity of each clip's first 75%; 64 references preselected
# per frame): anchor_de_20s +6.07 / +4.76 -> +6.46 / +4.83 (+-3% +6.28 / +4.75, +-4% +6.24 /
# +4.94, +-7% +6.10 / +4.72, +-2% and +-4% +6.48 / +4.89), obama_20s +5.09 / +4.27 -> +5.48
# / +4.75, hill_8s +2.74 / +2.01 -> +3.05 / +2.07; the knob table (12 crops of anchor's
# degraded video) +0.21 / +0.25 on the box, +0.19 / +0.30 on the face ellipse / mouth. On
# whole restored frames (the quality benchmark, face / mouth PSNR) much less: anchor +0.09 /
# +0.08, obama +0.17 / 0.00, hill -0.02 / -0.11, kim_source_7s +0.16 / +0.06, for three
# times the keys and values (memory, and 2-4 s more plan a video) and a preselection over
# 192 references a frame. Hence off (BANK_SCALES); mirrored references gave nothing at all
# (anchor +6.07 / +4.78 on the held-out crops).
BANK_SCALES = (1.0,)
RESCALED = (1.0, 1.02, 0.98)


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


def rescale_crops(crops: np.ndarray, factor: float) -> np.ndarray:
    """uint8 (N, S, S, 3) crops scaled by `factor` about their centre (bicubic, edges
    replicated), same size: the face a little larger (> 1) or smaller (< 1) in the frame."""
    if factor == 1.0:
        return crops
    s = crops.shape[1]
    m = cv2.getRotationMatrix2D((s / 2 - 0.5, s / 2 - 0.5), 0.0, factor)
    return np.stack([cv2.warpAffine(c, m, (s, s), flags=cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_REPLICATE) for c in crops])  # fmt: skip


def blur_matrix(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(S, S) matrix B such that B @ x @ B.T is x blurred by a Gaussian of `sigma` px, edges
    replicated (a matmul is faster on a CPU than a small separable convolution)."""
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    w = torch.exp(-(t**2) / (2 * sigma**2))
    idx = (torch.arange(size)[:, None] + torch.arange(-r, r + 1)[None]).clamp(0, size - 1)
    b = torch.zeros(size, size).scatter_add_(1, idx, (w / w.sum()).expand(size, -1))
    return b.to(device)


def low_band_projector(size: int, grid: int, device: torch.device) -> tuple:
    """(down, up): the band a `grid` x `grid` area-downscale keeps, as an exact projection,
    low(h) = up @ (down @ h @ down.T) @ up.T: down (g, S) is the area downscale, up (S, g)
    the bilinear upscale times (down @ bilinear)^-1, so that down @ low(h) @ down.T equals
    down @ h @ down.T exactly (h - low(h) has no content on the grid at all)."""
    eye = torch.eye(size, dtype=torch.float64)
    down = F.interpolate(eye[None], size=grid, mode="area")[0].t()  # (g, S)
    bil = F.interpolate(torch.eye(grid, dtype=torch.float64)[None], size=size, mode="linear",
                        align_corners=False)[0].t()  # (S, g)  # fmt: skip
    up = bil @ torch.linalg.inv(down @ bil)
    return down.float().to(device), up.float().to(device)


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
        prefilter: float = 0.0,
        state: dict[str, dict] | None = None,
        scales: tuple[float, ...] = BANK_SCALES,
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
        self.prefilter_px = prefilter  # Gaussian sigma in generator pixels (0: off)
        self.scales = tuple(scales)  # the bank searched at these scales (BANK_SCALES)
        self.resolution: int | None = None  # any multiple of GRID; `prepare` sets the size
        self.last_stats: list[FrameStats] = []
        self.frame_stats: list[FrameStats] = []
        self._baselines: dict[int, float] = {}  # per crop size, see `outside_baseline`
        # fixed (attention, regression) weights instead of the per-pixel blend (benchmarks)
        self.blend: tuple[float, float] | None = None
        self.match_scale = MATCH_SCALE  # per identity and size: `calibrate`
        self.calibration: dict[float, float] = {}
        self._holdout_at: tuple = (0, None, None)  # (size, real, degraded): _degraded_holdout
        self._size = 0
        self._prev: torch.Tensor | None = None
        self._reg: LocalRegression | None = None
        self._keys: KeyBank | None = None
        # measured figures per `state_key`, shared with the identity (see STATE_VERSION)
        self.state = {} if state is None else state
        self.state_reused = False  # whether `prepare` read them instead of measuring

    # ---- per crop size

    def state_key(self, size: int) -> str:
        """The key of what this engine measures at crop `size` (see STATE_VERSION): every
        setting that changes tau, the calibration or the confidence baseline."""
        c = self.cfg
        return (
            f"v{STATE_VERSION} {size}px gen{self.gen_res} grid{c.factor} window{c.window} "
            f"patch{c.patch} refs{c.refs} top{c.top_k} temp{c.temperature:g} "
            f"{'rgb' if c.color else 'luma'} prefilter{self.prefilter_px:g} "
            f"scales{','.join(f'{f:g}' for f in self.scales)}"
        )

    def _record_state(self, **figures: Any) -> None:
        self.state.setdefault(self.state_key(self._size), {}).update(figures)

    def _reuse_state(self, size: int) -> bool:
        """Take tau, the calibration and the confidence baseline at `size` from `state`
        when it holds them (all but the baseline are needed); True if it did."""
        known = self.state.get(self.state_key(size))
        if not known or "tau" not in known or "calibration" not in known:
            return False
        self.tau = float("inf") if known["tau"] is None else float(known["tau"])
        self.calibration = {
            float(k): float("-inf") if v is None else float(v)
            for k, v in known["calibration"].items()
        }
        self.match_scale = (
            max(self.calibration, key=self.calibration.__getitem__)
            if self.calibration
            else MATCH_SCALE
        )
        if known.get("outside_baseline") is not None:
            self._baselines[size] = float(known["outside_baseline"])
        return True

    def prepare(self, size: int) -> None:
        """Resize the bank to `size`, build keys / values and the confidence scale."""
        if size == self._size:
            return
        if size % GRID or size < 2 * GRID:
            raise InputError(f"reference engine crops must be a multiple of {GRID} px, got {size}")
        crop = replace(self.crop, size=size)
        real = resize_crops(self.bank, size)
        real = np.concatenate([rescale_crops(real, f) for f in self.scales])
        keys = np.stack([simulate(r, self.gen_res, crop) for r in real])
        # (N, 3, S, S) views of the uint8 crops; the values (real - key) as int16: whole
        # numbers, half the memory of float32, never a float32 copy of the whole bank
        t = lambda a: torch.from_numpy(a).to(self.device).permute(0, 3, 1, 2)  # noqa: E731
        raw = t(keys)
        values = t(real).to(torch.int16) - raw.to(torch.int16)
        x0, y0, x1, y1 = (v * size for v in crop_box(crop))
        sigma = self.prefilter_px * (x1 - x0) / self.gen_res
        self._prefilter = blur_matrix(size, sigma, self.device) if sigma > 0 else None
        self._prefilter_mask = self._soft_box(size, (x0, y0, x1, y1))
        if self._prefilter is None:
            k = raw
            bank = self._keys = KeyBank.build(raw, values, self.cfg)
            # the regression reads the same values off the canvas (a view: one copy in memory)
            values = bank.canvas[:, bank.pad : bank.pad + size, bank.pad : bank.pad + size]
            values = values.permute(0, 3, 1, 2)
        else:  # smoothed keys: float values (the real crops minus the smoothed keys)
            k = self.prefilter(raw.float())
            self._keys = KeyBank.build(k, t(real).float() - k, self.cfg)
        self._size = size
        self._box_cells = self._box_mask(size)
        self._rect = self._cell_rect(size)
        self.kept_grid = kept_grid(self.gen_res, crop.margin)
        self._down, self._up = low_band_projector(size, self.kept_grid, self.device)
        # the regression sees the generated crop as it is: each cell's linear map is fitted
        # over every facet phase in it, so it inverts the facets without being tied to one.
        # Its input is luma: RGB output from luma patches matches RGB patches within 0.01 dB
        # (12 crops each of anchor_de_20s / obama_20s / hill_8s degraded at 96 px, box /
        # mouth gain: RGB +5.10 / +4.35, +4.15 / +3.56, +1.82 / +2.37; luma +5.10 / +4.34,
        # +4.15 / +3.56, +1.82 / +2.36) at a third of the arithmetic
        self._reg = fit_local(in_chunks(luma, raw), values, rect=(y0, y1, x0, x1))
        self._prev = None
        self.state_reused = self._reuse_state(size)
        if not self.state_reused:
            self.tau = self._loo_tau(k)
            self.calibrate()
            self._record_state(
                tau=self.tau if np.isfinite(self.tau) else None,
                calibration={str(scale): g for scale, g in self.calibration.items()},
            )

    def calibrate(self, n: int = CALIBRATION_CROPS) -> dict[float, float]:
        """Set `match_scale` to the one of MATCH_SCALES with the highest mean face + mouth
        PSNR gain on up to `n` of the identity's held-out crops (evenly spaced) degraded like
        the keys, at the prepared size; returns {scale: that gain} (empty, and MATCH_SCALE
        kept, without held-out crops or a finite tau). Attention and regression run once per
        crop; only the blend is redone per scale."""
        self.match_scale, self.calibration = MATCH_SCALE, {}
        if self.holdout is None or not len(self.holdout) or not np.isfinite(self.tau):
            return self.calibration
        pick = np.unique(np.linspace(0, len(self.holdout) - 1, min(n, len(self.holdout))).round())
        real, degraded = (a[pick.astype(int)] for a in self._degraded_holdout())
        masks = region_masks(self._size, replace(self.crop, size=self._size))
        parts = []
        for q in torch.from_numpy(degraded).to(self.device).permute(0, 3, 1, 2).float():
            r, att, reg = self._estimates(q)
            parts.append((q, att, reg, r.best))

        def gain(out: np.ndarray) -> float:
            return float(np.mean([
                psnr(o, t, mask=m) - psnr(d, t, mask=m)
                for m in masks for o, d, t in zip(out, degraded, real)
            ]))  # fmt: skip

        for scale in MATCH_SCALES:
            self.match_scale = scale
            outs = [q + self._high_pass(self._blend(a, g, b)) for q, a, g, b in parts]
            out = torch.stack(outs).clamp(0, 255).round().to(torch.uint8)
            self.calibration[scale] = gain(out.permute(0, 2, 3, 1).cpu().numpy())
        self.match_scale = max(self.calibration, key=self.calibration.__getitem__)
        return self.calibration

    @property
    def outside_baseline(self) -> float:
        """The mean `outside` share of the identity's held-out crops degraded like the keys,
        at the prepared size (0 before `prepare` or without held-out crops): what a frame
        the engine knows well looks like. Taken from the validation run when there was one
        at this size (`baseline_from`), else computed here once."""
        if self._size == 0 or self.holdout is None or not len(self.holdout):
            return 0.0
        if self._size not in self._baselines:
            t = torch.from_numpy(self._degraded_holdout()[1])
            q = self.prefilter(t.to(self.device).permute(0, 3, 1, 2).float())
            best = [attend(x, self._key_bank(), self.cfg, self._rect).best for x in q]
            self._baselines[self._size] = float(np.mean([self._outside(b) for b in best]))
            self._record_state(outside_baseline=self._baselines[self._size])
        return self._baselines[self._size]

    def _degraded_holdout(self) -> tuple[np.ndarray, np.ndarray]:
        """(real, degraded) uint8: the identity's held-out crops at the prepared size, and
        degraded like the keys; made once per size (the calibration and the confidence
        baseline both read them)."""
        if self._holdout_at[0] != self._size:
            crop = replace(self.crop, size=self._size)
            real = resize_crops(self.holdout, self._size)
            degraded = np.stack([simulate(h, self.gen_res, crop) for h in real])
            self._holdout_at = (self._size, real, degraded)
        return self._holdout_at[1], self._holdout_at[2]

    def _estimates(
        self, q: torch.Tensor, prev: torch.Tensor | None = None
    ) -> tuple[AttentionResult, torch.Tensor, torch.Tensor]:
        """(attention result, attended high band, regressed high band) of one float crop
        (3, S, S); `prev`: the previous frame's references (kept with `keep_bonus`)."""
        smooth = q if self._prefilter is None else self.prefilter(q[None])[0]
        r = attend(smooth, self._key_bank(), self.cfg, self._rect, prev, self.keep_bonus)
        assert self._reg is not None
        # with the prefilter on, the attended band replaces the facets it removed (minus
        # q - smooth); the regressed band is the correction of the crop as it is
        att = r.high if smooth is q else r.high - (q - smooth)
        return r, att, self._reg.predict(luma(q))

    def baseline_from(self, stats: list[FrameStats]) -> None:
        """Adopt the baseline from this engine's own run on every held-out crop degraded by
        `simulate` at its prepared size (what engines.validate runs): the same number
        `outside_baseline` would compute, without attending the crops a second time."""
        self._baselines[self._size] = float(np.mean([s.outside for s in stats]))
        self._record_state(outside_baseline=self._baselines[self._size])

    def _soft_box(self, size: int, box: tuple[float, float, float, float]) -> torch.Tensor:
        """(1, 1, S, S) weight of the prefilter: 1 inside the generator's box, 0 from 4 px
        outside it (a Gaussian edge of one px; outside the box the crop is the real frame)."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        m = torch.zeros(1, 1, size, size, device=self.device)
        m[..., max(0, y0) : y1, max(0, x0) : x1] = 1.0
        return _gaussian(m, 1.0)

    def prefilter(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) crops with the generator box smoothed (the facet prefilter, see
        the comment above `ReferenceEngine`; unchanged when it is off)."""
        b = self._prefilter
        if b is None:
            return x
        return x + self._prefilter_mask * (b @ x @ b.t() - x)

    def _key_bank(self) -> KeyBank:
        assert self._keys is not None, "prepare() builds the keys"
        return self._keys

    def _box_in_cells(self, size: int) -> tuple[int, tuple[float, ...]]:
        """(n, (x0, y0, x1, y1)): the matching grid's side and the generator's box on it."""
        n = size // self.cfg.factor
        return n, tuple(v * n for v in crop_box(replace(self.crop, size=size)))

    def _box_mask(self, size: int) -> torch.Tensor:
        """(n, n) bool: the grid cells inside the generator's box (the confidence's cells)."""
        n, box = self._box_in_cells(size)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        m = torch.zeros(n, n, dtype=torch.bool, device=self.device)
        m[max(0, y0) : y1, max(0, x0) : x1] = True
        return m

    def _cell_rect(self, size: int) -> tuple[int, int, int, int]:
        """The grid cells (y0, y1, x0, x1) that cover the generator's box plus a cell: outside
        it the generated crop is the real frame, so there is nothing to attend to (and keys
        equal their references there, so the high band would be 0 anyway)."""
        n, (x0, y0, x1, y1) = self._box_in_cells(size)
        lo = lambda v: int(min(max(v // 1 - 1, 0), n))  # noqa: E731
        hi = lambda v: int(min(max(-(-v // 1) + 1, 0), n))  # noqa: E731
        return lo(y0), hi(y1), lo(x0), hi(x1)

    def _loo_tau(self, keys: torch.Tensor, n: int = 8) -> float:
        """90th percentile of the best patch distance in the face box when bank crops are
        matched against the rest of the bank (what a well-matched frame looks like)."""
        n_src = len(self.bank)  # keys hold the bank at each of `scales`, in that order
        if n_src < 2:
            return float("inf")
        idx = np.unique(np.linspace(0, n_src - 1, min(n, n_src)).round().astype(int))
        copies = lambda i: tuple(int(i) + k * n_src for k in range(len(self.scales)))  # noqa: E731
        best = [
            attend(keys[i].float(), self._key_bank(), self.cfg, self._rect, exclude=copies(i)).best[
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
    def run_tensor(self, x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """float (B, 3, S, S) crops in 0-255 on `device` -> repaired crops, same form
        (clamped to 0-255 unless `clamp` is False)."""
        self.prepare(int(x.shape[-1]))
        outs, stats = [], []
        for q in x.float():
            r, att, reg = self._estimates(q, self._prev)
            kept = 0.0 if self._prev is None else float((r.chosen == self._prev).float().mean())
            self._prev = r.chosen
            outs.append(q + self._high_pass(self._blend(att, reg, r.best)))
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
        out = torch.stack(outs)
        return out.clamp_(0, 255) if clamp else out

    def _blend(self, att: torch.Tensor, reg: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """Per-pixel blend of the attended and regressed high band (see MATCH_SCALE;
        `match_scale` as calibrated)."""
        if self.blend is not None:
            return self.blend[0] * att + self.blend[1] * reg
        scale = self.match_scale * self.tau if np.isfinite(self.tau) else float("inf")
        alpha = torch.exp(-((best.float() / scale) ** 2)).nan_to_num_(0.0)  # inf: 0
        alpha = _gaussian(alpha[None, None], ALPHA_SIGMA)
        alpha = F.interpolate(alpha, size=att.shape[-2:], mode="bilinear", align_corners=False)
        a = alpha[0]
        wa, wr = FALLBACK
        return (a + (1 - a) * wa) * att + (1 - a) * wr * reg

    def _high_pass(self, h: torch.Tensor) -> torch.Tensor:
        """h minus its content on the `kept_grid` (an exact projection, `low_band_projector`),
        so the output's low band (the generated mouth shape) is the generated crop's own."""
        d, u = self._down, self._up
        return h - u @ (d @ h @ d.t()) @ u.t()

"""Image and video quality metrics on face and mouth regions: pure numpy functions.

Conventions used by every function here:

- Frames are RGB (never BGR), shape (H, W, 3) or single-channel (H, W).
- uint8 frames are in [0, 255]; float frames are assumed to be in [0, 1] unless a
  ``data_range`` is passed. Other integer dtypes use their dtype's maximum as range.
- A ``mask`` is an (H, W) array: bool (region) or float weights >= 0 (a feathered region).
  Metrics are weighted means under it; a mask that selects nothing raises ``ValueError``.
- Misuse (mismatched shapes, empty regions, too few frames) raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import ArrayLike
from skimage.metrics import structural_similarity

__all__ = [
    "RegionMasks",
    "SlidingResult",
    "TemporalError",
    "crop_jitter",
    "face_and_mouth_masks",
    "luma",
    "psnr",
    "sharpness",
    "sharpness_ratio",
    "sliding_evaluation",
    "sliding_overlap",
    "ssim",
    "temporal_error",
    "temporal_error_noref",
]

# ITU-R BT.601 luma weights, applied to R, G, B in that order.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


# --------------------------------------------------------------------------- helpers


def _default_range(arr: np.ndarray) -> float:
    if arr.dtype == np.uint8:
        return 255.0
    if np.issubdtype(arr.dtype, np.integer):
        return float(np.iinfo(arr.dtype).max)
    if np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_:
        return 1.0
    raise ValueError(f"unsupported image dtype {arr.dtype}; pass uint8 or float arrays")


def _check_image(arr: np.ndarray, name: str) -> None:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{name} must be (H, W) or (H, W, C) with C in 1/3/4, got {arr.shape}")


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    _check_image(a_arr, "first image")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"images differ in shape: {a_arr.shape} vs {b_arr.shape}")
    return a_arr, b_arr


def _weights(mask: ArrayLike | None, hw: tuple[int, int]) -> np.ndarray | None:
    """(H, W) float64 weights, or None for the whole frame."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != hw:
        raise ValueError(f"mask must have shape (H, W) = {hw}, got {m.shape}")
    w = m.astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("mask weights must be finite and >= 0")
    if w.sum() <= 0:
        raise ValueError("mask selects no pixels: the region is empty (face outside the frame?)")
    return w


def _weighted_mean(values: np.ndarray, w: np.ndarray | None) -> float:
    """Mean of (H, W) or (H, W, C) values under (H, W) weights (all channels equally)."""
    if w is None:
        return float(values.mean(dtype=np.float64))
    if values.ndim == 3:
        return float((values * w[:, :, None]).sum() / (w.sum() * values.shape[2]))
    return float((values * w).sum() / w.sum())


def luma(img: ArrayLike, data_range: float | None = None) -> np.ndarray:
    """BT.601 luma of an RGB image, scaled to [0, 255].

    Args:
        img: (H, W, 3) RGB or (H, W) grey, uint8 in [0, 255] or float in [0, data_range].
        data_range: value range of ``img``; default 255 for uint8, 1.0 for float.

    Returns:
        (H, W) float64 in [0, 255], so uint8 and float versions of one image agree.
    """
    arr = np.asarray(img)
    _check_image(arr, "image")
    rng = _default_range(arr) if data_range is None else float(data_range)
    x = arr.astype(np.float64) * (255.0 / rng)
    if x.ndim == 2:
        return x
    if x.shape[2] == 1:
        return x[:, :, 0]
    return x[:, :, :3] @ _LUMA_WEIGHTS


# --------------------------------------------------------------------------- PSNR / SSIM


def psnr(
    a: ArrayLike, b: ArrayLike, mask: ArrayLike | None = None, data_range: float | None = None
) -> float:
    """Peak signal-to-noise ratio in dB between two images, optionally inside a region.

    Args:
        a, b: same-shape (H, W, 3) RGB or (H, W) images, uint8 [0, 255] or float [0, 1].
            All channels count equally (no luma conversion).
        mask: optional (H, W) bool region or float weights; MSE is the weighted mean.
        data_range: peak value; default 255 for uint8, 1.0 for float.

    Returns:
        10 * log10(data_range**2 / MSE); ``inf`` when the images are identical in the region.
    """
    a_arr, b_arr = _pair(a, b)
    rng = _default_range(a_arr) if data_range is None else float(data_range)
    diff = a_arr.astype(np.float64) - b_arr.astype(np.float64)
    mse = _weighted_mean(diff * diff, _weights(mask, a_arr.shape[:2]))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(rng * rng / mse))


def ssim(
    a: ArrayLike,
    b: ArrayLike,
    mask: ArrayLike | None = None,
    data_range: float | None = None,
    on_luma: bool = True,
) -> float:
    """Structural similarity (Wang et al. 2004 settings), optionally averaged inside a region.

    Computed with ``skimage.metrics.structural_similarity`` (Gaussian window, sigma 1.5,
    population covariance, full map), then the SSIM map is averaged under the mask. Window
    statistics near the mask border use pixels just outside it, as usual for region SSIM.

    Args:
        a, b: same-shape (H, W, 3) RGB or (H, W) images, uint8 [0, 255] or float [0, 1];
            both sides at least 11 pixels.
        mask: optional (H, W) bool region or float weights.
        data_range: value range; default 255 for uint8, 1.0 for float.
        on_luma: True (default): SSIM of the BT.601 luma; False: per RGB channel, averaged.

    Returns:
        Mean SSIM in [-1, 1]; 1.0 for identical images.
    """
    a_arr, b_arr = _pair(a, b)
    h, w = a_arr.shape[:2]
    if min(h, w) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {w}x{h}")
    weights = _weights(mask, (h, w))
    rng = _default_range(a_arr) if data_range is None else float(data_range)
    kwargs = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    if on_luma or a_arr.ndim == 2:
        ya, yb = luma(a_arr, rng), luma(b_arr, rng)
        _, smap = structural_similarity(ya, yb, data_range=255.0, full=True, **kwargs)
    else:
        fa, fb = a_arr.astype(np.float64), b_arr.astype(np.float64)
        _, smap = structural_similarity(fa, fb, data_range=rng, channel_axis=2, full=True, **kwargs)
    return _weighted_mean(np.asarray(smap, dtype=np.float64), weights)


# --------------------------------------------------------------------------- temporal error


class TemporalError:
    """Streaming temporal (flicker) error: feed frames one at a time, read ``value``.

    With a reference (``update(restored, reference)``) each transition t-1 -> t scores
    mean |(R_t - R_{t-1}) - (G_t - G_{t-1})|: how much the restored video changes
    differently from the reference, i.e. flicker added on top of the real motion. Without
    one (``update(restored)``) it scores mean |R_t - R_{t-1}|, a reference-free *proxy*
    that also counts real motion (head and mouth movement): compare it only between
    versions of the same clip, never across clips.

    Values are in the frames' own units (0-255 for uint8, 0-1 for float), averaged over
    the region's pixels and all channels. The mask given with frame t is the region for
    the transition t-1 -> t. Every transition counts equally in ``value``.
    """

    def __init__(self) -> None:
        self._prev_r: np.ndarray | None = None
        self._prev_g: np.ndarray | None = None
        self._with_reference: bool | None = None
        self._values: list[float] = []

    def update(
        self,
        restored: ArrayLike,
        reference: ArrayLike | None = None,
        mask: ArrayLike | None = None,
    ) -> None:
        """Add frame t. ``restored``/``reference``: same-shape (H, W[, C]) frames, RGB.

        ``mask``: optional (H, W) bool/float region of frame t. Use the reference for every
        frame or for none; mixing raises ``ValueError``.
        """
        with_ref = reference is not None
        if self._with_reference is None:
            self._with_reference = with_ref
        elif self._with_reference != with_ref:
            raise ValueError(
                "TemporalError got frames with and without a reference: use one mode per stream"
            )
        r = np.asarray(restored)
        _check_image(r, "restored frame")
        r = r.astype(np.float32)
        g = None
        if reference is not None:
            g_arr = np.asarray(reference)
            if g_arr.shape != r.shape:
                raise ValueError(f"restored {r.shape} and reference {g_arr.shape} differ in shape")
            g = g_arr.astype(np.float32)
        if self._prev_r is not None:
            if self._prev_r.shape != r.shape:
                raise ValueError(
                    f"frame shape changed from {self._prev_r.shape} to {r.shape}; "
                    "call skip() between unrelated frames"
                )
            dr = r - self._prev_r
            if g is not None and self._prev_g is not None:
                dr -= g - self._prev_g
            np.abs(dr, out=dr)
            self._values.append(_weighted_mean(dr, _weights(mask, r.shape[:2])))
        self._prev_r, self._prev_g = r, g

    def skip(self) -> None:
        """Break the chain (frame without a face, scene cut): no transition to the next frame."""
        self._prev_r = None
        self._prev_g = None

    @property
    def count(self) -> int:
        """Number of transitions scored so far."""
        return len(self._values)

    @property
    def values(self) -> np.ndarray:
        """Per-transition errors, shape (count,), float64."""
        return np.asarray(self._values, dtype=np.float64)

    @property
    def value(self) -> float:
        """Mean error over all transitions; NaN while fewer than two frames were chained."""
        return float(np.mean(self._values)) if self._values else float("nan")


def _mask_at(mask: ArrayLike | Sequence[ArrayLike | None] | None, t: int) -> ArrayLike | None:
    """The region for frame t: one (H, W) array for all frames, or one per frame."""
    if mask is None:
        return None
    if isinstance(mask, np.ndarray):
        return mask[t] if mask.ndim == 3 else mask
    if isinstance(mask, Sequence):
        if t >= len(mask):
            raise ValueError(f"got {len(mask)} masks for more frames than that")
        return mask[t]
    return mask


def _run_temporal(
    restored_frames: Iterable[ArrayLike],
    reference_frames: Iterable[ArrayLike] | None,
    mask: ArrayLike | Sequence[ArrayLike | None] | None,
) -> float:
    acc = TemporalError()
    refs = iter(reference_frames) if reference_frames is not None else None
    n = 0
    for t, r in enumerate(restored_frames):
        g = None
        if refs is not None:
            g = next(refs, None)
            if g is None:
                raise ValueError(f"reference has fewer frames than restored ({t})")
        acc.update(r, g, _mask_at(mask, t))
        n += 1
    if refs is not None and next(refs, None) is not None:
        raise ValueError(f"reference has more frames than restored ({n})")
    if acc.count == 0:
        raise ValueError(f"temporal error needs at least 2 frames, got {n}")
    return acc.value


def temporal_error(
    restored_frames: Iterable[ArrayLike],
    reference_frames: Iterable[ArrayLike],
    mask: ArrayLike | Sequence[ArrayLike | None] | None = None,
) -> float:
    """Flicker against a reference: mean over t of mean |(R_t - R_{t-1}) - (G_t - G_{t-1})|.

    Args:
        restored_frames, reference_frames: equally long sequences (or (T, H, W[, C]) arrays)
            of same-shape RGB frames, uint8 or float.
        mask: None (whole frame), one (H, W) region for all frames, or one per frame
            ((T, H, W) array or a list of (H, W) arrays / None); the mask of frame t
            scores the transition t-1 -> t. A single mask must be a numpy array.

    Returns:
        Mean absolute temporal-difference error in the frames' units (0-255 for uint8);
        0.0 when the restored video changes exactly like the reference. See
        ``TemporalError`` for the streaming form.
    """
    return _run_temporal(restored_frames, reference_frames, mask)


def temporal_error_noref(
    frames: Iterable[ArrayLike], mask: ArrayLike | Sequence[ArrayLike | None] | None = None
) -> float:
    """Reference-free flicker proxy: mean over t of mean |R_t - R_{t-1}| in the region.

    This is the mean absolute frame difference with no motion compensation, so real head
    and mouth motion count too: only compare values between versions of the same clip
    (e.g. raw vs repaired, smoothed vs unsmoothed tracking). Same arguments and units as
    ``temporal_error``.
    """
    return _run_temporal(frames, None, mask)


# --------------------------------------------------------------------------- sharpness


def sharpness(
    img: ArrayLike, mask: ArrayLike | None = None, data_range: float | None = None
) -> float:
    """High-frequency energy: variance of the 3x3 Laplacian of the luma inside the region.

    Args:
        img: (H, W, 3) RGB or (H, W) image, uint8 [0, 255] or float [0, 1].
        mask: optional (H, W) bool region or float weights. The Laplacian is taken on the
            whole image first, so the region's border does not add fake edges.
        data_range: value range of ``img``; default 255 for uint8, 1.0 for float.

    Returns:
        Weighted variance of the Laplacian of luma scaled to [0, 255] (so uint8 and float
        versions of one image agree); >= 0, larger is sharper. Depends on resolution: only
        compare images of the same size and content.
    """
    y = luma(img, data_range)
    w = _weights(mask, y.shape)
    lap = cv2.Laplacian(y, cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT_101)
    mean = _weighted_mean(lap, w)
    return max(_weighted_mean((lap - mean) ** 2, w), 0.0)


def sharpness_ratio(
    restored: ArrayLike, reference: ArrayLike, mask: ArrayLike | None = None
) -> float:
    """sharpness(restored) / sharpness(reference) in the same region.

    Below 1: the restored region is blurrier than the reference; above 1: sharper (or
    noisier). Returns 1.0 when both are flat, ``inf`` when only the reference is flat.
    """
    _pair(restored, reference)
    s_r, s_g = sharpness(restored, mask), sharpness(reference, mask)
    if s_g == 0.0:
        return 1.0 if s_r == 0.0 else float("inf")
    return s_r / s_g


# --------------------------------------------------------------------------- regions


class RegionMasks(NamedTuple):
    """Boolean (H, W) masks: ``face`` (the face box) and ``mouth`` (the mouth region)."""

    face: np.ndarray
    mouth: np.ndarray


def _box_mask(hw: tuple[int, int], x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Pixels whose centre lies inside [x0, x1) x [y0, y1), clipped to the image."""
    h, w = hw
    m = np.zeros((h, w), dtype=bool)
    c0 = int(np.clip(np.ceil(x0 - 0.5), 0, w))
    c1 = int(np.clip(np.ceil(x1 - 0.5), 0, w))
    r0 = int(np.clip(np.ceil(y0 - 0.5), 0, h))
    r1 = int(np.clip(np.ceil(y1 - 0.5), 0, h))
    m[r0:r1, c0:c1] = True
    return m


def face_and_mouth_masks(
    shape: Sequence[int], box_xyxy: ArrayLike, landmarks5: ArrayLike | None = None
) -> RegionMasks:
    """Face and mouth region masks for one frame.

    Args:
        shape: the frame's shape, (H, W) or (H, W, C).
        box_xyxy: face box (x0, y0, x1, y1) in pixels, x right, y down; may extend past the
            frame (it is clipped).
        landmarks5: optional (5, 2) xy points in RetinaFace order: right eye, left eye, nose,
            right mouth corner, left mouth corner (the person's right/left). When given and
            finite, the mouth region is an axis-aligned box around the two mouth corners:
            1.6 corner distances wide, from 0.45 above to 0.65 below the corner line (an open
            mouth extends downwards). Otherwise it is the lower-middle part of the face box:
            x in [0.2, 0.8] and y in [0.6, 0.92] of the box.

    Returns:
        ``RegionMasks(face, mouth)``: two (H, W) bool arrays (possibly empty when the box is
        outside the frame).
    """
    if len(shape) < 2:
        raise ValueError(f"shape must be (H, W) or (H, W, C), got {tuple(shape)}")
    hw = (int(shape[0]), int(shape[1]))
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"box_xyxy must be 4 finite numbers (x0, y0, x1, y1), got {box_xyxy}")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box_xyxy must have x1 > x0 and y1 > y0, got {box.tolist()}")
    face = _box_mask(hw, x0, y0, x1, y1)

    corners = None
    if landmarks5 is not None:
        lm = np.asarray(landmarks5, dtype=np.float64)
        if lm.shape != (5, 2):
            raise ValueError(f"landmarks5 must have shape (5, 2), got {lm.shape}")
        if np.all(np.isfinite(lm[3:5])) and np.linalg.norm(lm[3] - lm[4]) > 0:
            corners = lm[3:5]
    if corners is not None:
        cx, cy = corners.mean(axis=0)
        d = float(np.linalg.norm(corners[0] - corners[1]))
        mouth = _box_mask(hw, cx - 0.8 * d, cy - 0.45 * d, cx + 0.8 * d, cy + 0.65 * d)
    else:
        bw, bh = x1 - x0, y1 - y0
        mouth = _box_mask(hw, x0 + 0.2 * bw, y0 + 0.6 * bh, x0 + 0.8 * bw, y0 + 0.92 * bh)
    return RegionMasks(face, mouth)


# --------------------------------------------------------------------------- sliding evaluation


@dataclass(frozen=True)
class SlidingResult:
    """Best window of a sliding evaluation.

    Restored frames ``start .. start + window - 1`` were compared with reference frames
    ``start + offset .. start + offset + window - 1``; ``value`` is the mean metric there.
    ``per_offset`` holds the best window value for each offset in ``offsets``.
    """

    offset: int
    start: int
    value: float
    window: int
    offsets: np.ndarray
    per_offset: np.ndarray


def _window_means(vals: np.ndarray, window: int) -> np.ndarray:
    """Means of every run of ``window`` values; +-inf (e.g. PSNR of identical frames) kept,
    NaN where a run holds a NaN or both +inf and -inf."""

    def runs(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(x)])
        return c[window:] - c[:-window]

    finite = np.isfinite(vals)
    means = runs(np.where(finite, vals, 0.0)) / window
    n_pos, n_neg = runs(vals == np.inf), runs(vals == -np.inf)
    n_nan = runs(np.isnan(vals))
    means = np.where(n_pos > 0, np.inf, means)
    means = np.where(n_neg > 0, -np.inf, means)
    return np.where((n_nan > 0) | ((n_pos > 0) & (n_neg > 0)), np.nan, means)


def sliding_overlap(offset: int, restored_len: int, reference_len: int) -> tuple[int, int]:
    """Restored frame range [i0, i1) that has a partner when restored i <-> reference i+offset."""
    i0 = max(0, -offset)
    i1 = min(restored_len, reference_len - offset)
    return i0, max(i0, i1)


def sliding_evaluation(
    per_frame_metric_fn: Callable[[int], ArrayLike] | ArrayLike,
    restored_len: int,
    reference_len: int,
    window: int,
    higher_is_better: bool = True,
) -> SlidingResult:
    """The paper's sliding evaluation for a restored and a reference video of different length.

    For every alignment ``offset`` (restored frame i <-> reference frame i + offset) that
    leaves at least ``window`` aligned pairs, the per-frame metric is averaged over every
    run of ``window`` consecutive aligned pairs; the best run over all offsets is returned.
    With ``window = min(restored_len, reference_len)`` this is "slide the shorter video
    along the longer one and keep the best alignment".

    Args:
        per_frame_metric_fn: either a function ``offset -> values`` returning the per-frame
            metric (1-D, float) for the aligned pairs of restored frames i0 .. i1-1 (see
            ``sliding_overlap``), or a (restored_len, reference_len) array whose [i, j] is
            the metric of restored frame i against reference frame j.
        restored_len, reference_len: numbers of frames.
        window: number of aligned frames averaged per window, 1 <= window <= both lengths.
        higher_is_better: True for PSNR/SSIM, False for errors (temporal error, LPIPS).

    Returns:
        ``SlidingResult`` with the best offset, window start (restored index) and mean
        value; ties go to the smallest |offset|, then the earliest start.
    """
    if restored_len < 1 or reference_len < 1:
        raise ValueError(f"both videos need frames, got {restored_len} and {reference_len}")
    if not 1 <= window <= min(restored_len, reference_len):
        raise ValueError(
            f"window must be in [1, {min(restored_len, reference_len)}] (the shorter video), "
            f"got {window}"
        )
    if callable(per_frame_metric_fn):
        fn = per_frame_metric_fn
    else:
        table = np.asarray(per_frame_metric_fn, dtype=np.float64)
        if table.shape != (restored_len, reference_len):
            raise ValueError(
                f"metric table must have shape (restored_len, reference_len) = "
                f"{(restored_len, reference_len)}, got {table.shape}"
            )

        def fn(offset: int) -> np.ndarray:
            i0, i1 = sliding_overlap(offset, restored_len, reference_len)
            idx = np.arange(i0, i1)
            return table[idx, idx + offset]

    offsets = np.arange(window - restored_len, reference_len - window + 1)
    # Visit offsets by increasing |offset| so ties resolve to the least shifted alignment.
    order = sorted(range(len(offsets)), key=lambda k: (abs(int(offsets[k])), int(offsets[k])))
    per_offset = np.full(len(offsets), np.nan)
    sign = 1.0 if higher_is_better else -1.0
    best: tuple[float, int, int] | None = None  # (value, offset, start)
    for k in order:
        off = int(offsets[k])
        i0, i1 = sliding_overlap(off, restored_len, reference_len)
        vals = np.asarray(fn(off), dtype=np.float64).reshape(-1)
        if vals.shape[0] != i1 - i0:
            raise ValueError(
                f"metric function returned {vals.shape[0]} values for offset {off}; "
                f"expected {i1 - i0} (restored frames {i0}..{i1 - 1})"
            )
        means = _window_means(vals, window)
        valid = ~np.isnan(means)
        if not valid.any():
            continue
        j = int(np.argmax(np.where(valid, sign * means, -np.inf)))
        per_offset[k] = means[j]
        if best is None or sign * means[j] > sign * best[0]:
            best = (float(means[j]), off, i0 + j)
    if best is None:
        raise ValueError("the metric is NaN for every window; check the per-frame values")
    value, off, start = best
    return SlidingResult(off, start, value, window, offsets, per_offset)


# --------------------------------------------------------------------------- tracking jitter


def crop_jitter(centers: ArrayLike, order: int = 1) -> float:
    """Mean frame-to-frame displacement of crop centres in pixels (tracking jitter).

    Args:
        centers: (N, 2) float xy crop centres per frame; rows with NaN (no face) are skipped:
            only runs of consecutive valid frames contribute, nothing is bridged across gaps.
        order: 1 (default): mean |c_t - c_{t-1}|, the brief's displacement, which also counts
            smooth head motion; 2: mean |c_t - 2 c_{t-1} + c_{t-2}|, which ignores constant
            velocity and so isolates shake.

    Returns:
        Mean Euclidean displacement in pixels; NaN when no run is long enough.
    """
    c = np.asarray(centers, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"centers must have shape (N, 2), got {c.shape}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    valid = np.all(np.isfinite(c), axis=1)
    d = np.diff(c, n=order, axis=0)
    ok = valid[order:].copy()
    for lag in range(1, order + 1):
        ok &= valid[order - lag : len(valid) - lag]
    if not ok.any():
        return float("nan")
    return float(np.linalg.norm(d[ok], axis=1).mean())

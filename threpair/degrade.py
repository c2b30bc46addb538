"""Degradations that imitate lip-sync generators (Wav2Lip and kin). Pure numpy/OpenCV functions.

All images are uint8 RGB arrays (H, W, 3); every function returns a new array of the same shape
and dtype and never modifies its input.

What a Wav2Lip-like generator does to a face: it squashes the face box to gen_res x gen_res
(96 x 96 for Wav2Lip), re-renders it there (detail lost; slight blur, colour and position
errors), upscales it back to the box size and pastes it as a hard rectangle, which leaves a seam
at the box border. `lower_half=True` pastes back only the lower half of the box (generators
that re-render only the mouth region). The training crops are at the model resolution S, so the
stand-in for "Wav2Lip inside a 256-px model" is gen_res = S * 96 / 256.
"""

from __future__ import annotations

import cv2
import numpy as np

from threpair.errors import InputError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, exclusive end


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected a uint8 RGB image (H, W, 3), got {img.dtype} {img.shape}")


def _render_lowres(
    patch: np.ndarray,
    gen_res: int,
    rng: np.random.Generator | None,
    blur_sigma: float,
    noise_std: float,
    jpeg_quality: int | None,
    color_shift: tuple[float, float, float],
    shift: tuple[float, float],
) -> np.ndarray:
    """Render `patch` the way a generator at gen_res x gen_res would, back at the patch size."""
    h, w = patch.shape[:2]
    # INTER_AREA: a generator re-renders the face, it does not alias like point sampling
    low = cv2.resize(patch, (gen_res, gen_res), interpolation=cv2.INTER_AREA).astype(np.float32)
    if shift != (0.0, 0.0):  # sub-pixel misplacement, in low-res pixels
        m = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]], dtype=np.float32)
        low = cv2.warpAffine(
            low, m, (gen_res, gen_res), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
    if blur_sigma > 0:
        low = cv2.GaussianBlur(low, (0, 0), blur_sigma)
    if any(color_shift):
        low = low + np.asarray(color_shift, dtype=np.float32)
    if noise_std > 0:
        if rng is None:
            rng = np.random.default_rng(0)
        low = low + rng.normal(0.0, noise_std, low.shape).astype(np.float32)
    low_u8 = np.clip(np.rint(low), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", low_u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
            raise RuntimeError("cv2.imencode failed")
        low_u8 = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    # cv2.resize's default (bilinear) is what Wav2Lip uses to paste its output back
    return cv2.resize(low_u8, (w, h), interpolation=cv2.INTER_LINEAR)


def _degrade_box(img: np.ndarray, box: Box, gen_res: int, lower_half: bool, **render) -> np.ndarray:
    _check_image(img)
    if gen_res < 1:
        raise InputError(f"gen_res must be >= 1, got {gen_res}")
    H, W = img.shape[:2]
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(W, box[2]), min(H, box[3])
    out = img.copy()
    if x1 - x0 < 2 or y1 - y0 < 2:  # box outside the image or degenerate: nothing to render
        return out
    rendered = _render_lowres(np.ascontiguousarray(img[y0:y1, x0:x1]), gen_res, **render)
    top = (y1 - y0) // 2 if lower_half else 0
    out[y0 + top : y1, x0:x1] = rendered[top:]  # hard rectangular paste: the seam
    return out


def lipsync_like(
    img: np.ndarray,
    gen_res: int,
    rng: np.random.Generator | None = None,
    *,
    box: tuple[float, float, float, float] | None = None,
    lower_half: bool = False,
    blur_sigma: float = 0.0,
    noise_std: float = 0.0,
    jpeg_quality: int | None = None,
    color_shift: tuple[float, float, float] = (0.0, 0.0, 0.0),
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Degrade a face crop (H, W, 3) uint8 RGB as a lip-sync generator at gen_res would.

    box: the generator's face box as fractions of the crop (x0, y0, x1, y1); None = whole crop.
    blur_sigma, shift (dx, dy): in pixels of the gen_res render. noise_std, color_shift
    (per-channel RGB offsets): in uint8 levels. jpeg_quality: 1-100, None = no JPEG.
    rng is used only for noise (a fixed default when None, so the call stays deterministic).
    """
    _check_image(img)
    H, W = img.shape[:2]
    if box is None:
        px: Box = (0, 0, W, H)
    else:
        px = (round(box[0] * W), round(box[1] * H), round(box[2] * W), round(box[3] * H))
    return _degrade_box(
        img,
        px,
        gen_res,
        lower_half,
        rng=rng,
        blur_sigma=blur_sigma,
        noise_std=noise_std,
        jpeg_quality=jpeg_quality,
        color_shift=color_shift,
        shift=shift,
    )


def simulate_generator(crop: np.ndarray, gen_res: int, lower_half: bool = False) -> np.ndarray:
    """Deterministic degradation for validation and benchmarks: the whole crop (or its lower
    half) rendered at gen_res x gen_res and upscaled back; no noise, blur, JPEG or shifts."""
    return lipsync_like(crop, gen_res, lower_half=lower_half)


def simulate_wav2lip_box(
    frame: np.ndarray,
    box_xyxy: tuple[int, int, int, int],
    gen_res: int = 96,
    lower_half: bool = False,
) -> np.ndarray:
    """Apply the generator stand-in to a pixel box (x0, y0, x1, y1) of a full frame (H, W, 3)
    uint8 RGB: the box is squashed to gen_res x gen_res, upscaled and pasted back with a hard
    edge, as Wav2Lip does. The box is clipped to the frame; a box outside it changes nothing."""
    box = tuple(int(round(v)) for v in box_xyxy)
    if len(box) != 4:
        raise InputError(f"box_xyxy must have 4 values, got {box_xyxy}")
    return _degrade_box(
        frame,
        box,
        gen_res,
        lower_half,
        rng=None,
        blur_sigma=0.0,
        noise_std=0.0,
        jpeg_quality=None,
        color_shift=(0.0, 0.0, 0.0),
        shift=(0.0, 0.0),
    )


def random_degradation(
    crop: np.ndarray,
    rng: np.random.Generator,
    gen_res_range: tuple[int, int],
    *,
    p_clean: float = 0.05,
    p_lower_half: float = 0.3,
    p_box: float = 0.5,
    max_blur: float = 0.8,
    max_noise: float = 3.0,
    p_jpeg: float = 0.5,
    jpeg_range: tuple[int, int] = (50, 95),
    max_color: float = 6.0,
    max_shift: float = 0.5,
    box: tuple[float, float, float, float] | None = None,
    box_jitter: float = 0.03,
) -> np.ndarray:
    """Random generator-like degradation for degradation-aware training; deterministic given rng.

    gen_res is drawn uniformly from gen_res_range (inclusive). With probability p_clean the crop
    is returned unchanged (so clean input stays clean); p_box: a random face box inside the
    crop, else the whole crop; then random blur, noise, JPEG, colour shift and sub-pixel shift.
    `box` (fractions x0, y0, x1, y1, e.g. generators.crop_box): the generator's face box is
    known, so it is always rendered, each side moved by up to `box_jitter` of the crop
    (detectors differ) and p_box is unused: the real degradation at the real scale.
    Every random draw is made whatever the branch, so one crop's draws never change the next's.
    """
    lo, hi = int(gen_res_range[0]), int(gen_res_range[1])
    if not 1 <= lo <= hi:
        raise InputError(f"gen_res_range must satisfy 1 <= lo <= hi, got {gen_res_range}")
    u = rng.random(6)
    gen_res = int(rng.integers(lo, hi + 1))
    box_frac = (
        rng.uniform(0.0, 0.15),
        rng.uniform(0.0, 0.2),
        rng.uniform(0.85, 1.0),
        rng.uniform(0.85, 1.0),
    )
    blur = float(rng.uniform(0.0, max_blur))
    noise = float(rng.uniform(0.0, max_noise))
    quality = int(rng.integers(jpeg_range[0], jpeg_range[1] + 1))
    c = rng.uniform(-max_color, max_color, 3)
    s = rng.uniform(-max_shift, max_shift, 2)
    color = (float(c[0]), float(c[1]), float(c[2]))
    shift = (float(s[0]), float(s[1]))
    noise_rng = np.random.default_rng(rng.integers(2**63))
    if u[0] < p_clean:
        return crop.copy()
    if box is not None:
        # reuse the box draws as jitter in [-1, 1] per side (same number of draws)
        mid = (0.075, 0.1, 0.925, 0.925)
        half = (0.075, 0.1, 0.075, 0.075)
        box_frac = tuple(
            float(b + box_jitter * (r - m) / h) for b, r, m, h in zip(box, box_frac, mid, half)
        )  # type: ignore[assignment]
    return lipsync_like(
        crop,
        gen_res,
        noise_rng,
        box=box_frac if (box is not None or u[1] < p_box) else None,
        lower_half=bool(u[2] < p_lower_half),
        blur_sigma=blur if u[3] < 0.5 else 0.0,
        noise_std=noise if u[4] < 0.5 else 0.0,
        jpeg_quality=quality if u[5] < p_jpeg else None,
        color_shift=color,
        shift=shift,
    )

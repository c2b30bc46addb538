"""Tests for threpair.metrics: known values, masks, streaming, sliding evaluation, jitter."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from threpair.metrics import (
    TemporalError,
    crop_jitter,
    face_and_mouth_masks,
    psnr,
    sharpness,
    sharpness_ratio,
    sliding_evaluation,
    sliding_overlap,
    ssim,
    temporal_error,
    temporal_error_noref,
)


def _noise(seed: int, shape=(48, 64, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _textured(seed: int = 0, shape=(64, 64, 3)) -> np.ndarray:
    """Smooth-ish texture (blurred noise) so that SSIM and sharpness behave like on images."""
    return cv2.GaussianBlur(_noise(seed, shape), (0, 0), 1.0)


# --------------------------------------------------------------------------- PSNR / SSIM


def test_identical_images() -> None:
    a = _textured()
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    assert ssim(a, a, on_luma=False) == pytest.approx(1.0, abs=1e-9)


def test_psnr_constant_offset_matches_formula() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255**2 / 10**2))
    f = np.full((16, 16, 3), 0.5)
    assert psnr(f, f + 0.1) == pytest.approx(20.0)  # float: range 1, MSE 0.01
    assert psnr(a, a + 10, data_range=510) == pytest.approx(10 * math.log10(510**2 / 100))


def test_psnr_mask_restricts_region() -> None:
    a = _noise(0)
    b = a.copy()
    b[:, 32:] = 255 - b[:, 32:]  # only the right half differs
    left = np.zeros(a.shape[:2], bool)
    left[:, :32] = True
    assert psnr(a, b, left) == math.inf
    assert psnr(a, b, ~left) < psnr(a, b) < math.inf
    # Float weights: a uniform weight is the same as no mask.
    assert psnr(a, b, np.full(a.shape[:2], 0.3)) == pytest.approx(psnr(a, b))
    # Known MSE: offset 10 on half the pixels, weights 1 vs 0.
    c = np.full((8, 8), 50, np.uint8)
    d = c.copy()
    d[:, 4:] += 10
    w = np.zeros((8, 8))
    w[:, 2:6] = 1.0  # half of the weighted pixels differ -> MSE 50
    assert psnr(c, d, w) == pytest.approx(10 * math.log10(255**2 / 50))


def test_ssim_mask_restricts_region() -> None:
    a = _textured(1, (64, 96, 3))
    b = a.copy()
    b[:, 48:] = _noise(2, (64, 48, 3))
    left = np.zeros(a.shape[:2], bool)
    left[:, :36] = True  # 12 px away from the damaged half: beyond the SSIM window
    right = np.zeros_like(left)
    right[:, 60:] = True
    assert ssim(a, b, left) == pytest.approx(1.0, abs=1e-9)
    assert ssim(a, b, right) < 0.5
    assert ssim(a, b, right) < ssim(a, b) < 1.0


def test_bad_inputs_raise() -> None:
    a = _noise(0)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:10])
    with pytest.raises(ValueError, match="no pixels"):
        psnr(a, a, np.zeros(a.shape[:2], bool))
    with pytest.raises(ValueError, match="mask"):
        psnr(a, a, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="11x11"):
        ssim(a[:8, :8], a[:8, :8])


# --------------------------------------------------------------------------- temporal error


def _moving_reference(n: int = 6) -> np.ndarray:
    return np.stack([np.roll(_textured(0, (32, 32, 3)), 2 * t, axis=1) for t in range(n)])


def test_temporal_error_zero_for_identical_and_known_flicker() -> None:
    ref = _moving_reference().astype(np.float64)
    assert temporal_error(ref, ref) == 0.0
    # Alternating +-c flicker on top of the real motion: |dR - dG| = 2c everywhere.
    c = 3.0
    flicker = ref + c * np.array([(-1) ** t for t in range(len(ref))])[:, None, None, None]
    assert temporal_error(flicker, ref) == pytest.approx(2 * c)
    # A constant offset is not flicker.
    assert temporal_error(ref + 7.0, ref) == pytest.approx(0.0)


def test_temporal_error_mask_and_per_frame_masks() -> None:
    ref = np.zeros((4, 16, 16))
    res = ref.copy()
    res[1::2, :, 8:] = 1.0  # flicker in the right half only
    left = np.zeros((16, 16), bool)
    left[:, :8] = True
    assert temporal_error(res, ref, left) == 0.0
    assert temporal_error(res, ref, ~left) == pytest.approx(1.0)
    assert temporal_error(res, ref) == pytest.approx(0.5)
    per_frame = np.stack([left, ~left, ~left, left])  # transitions 1, 2 in the right half
    assert temporal_error(res, ref, per_frame) == pytest.approx(2 / 3)
    assert temporal_error(res, ref, [None, ~left, ~left, left]) == pytest.approx(2 / 3)


def test_temporal_error_streaming_matches_batch_and_skip() -> None:
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    res = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    acc = TemporalError()
    assert math.isnan(acc.value) and acc.count == 0
    for r, g in zip(res, ref, strict=True):
        acc.update(r, g)
    assert acc.count == 4
    assert acc.value == pytest.approx(temporal_error(res, ref))
    assert acc.value == pytest.approx(acc.values.mean())
    # skip() breaks the chain: frames 0-1 and 2-3 are scored, not 1-2.
    acc2 = TemporalError()
    for t in range(4):
        if t == 2:
            acc2.skip()
        acc2.update(res[t], ref[t])
    assert acc2.count == 2
    with pytest.raises(ValueError, match="one mode"):
        acc2.update(res[0])


def test_temporal_error_needs_two_equal_length_sequences() -> None:
    f = np.zeros((3, 8, 8))
    with pytest.raises(ValueError, match="at least 2"):
        temporal_error(f[:1], f[:1])
    with pytest.raises(ValueError, match="fewer"):
        temporal_error(f, f[:2])
    with pytest.raises(ValueError, match="more"):
        temporal_error(f[:2], f)


def test_temporal_error_noref() -> None:
    frames = np.stack([np.full((8, 8, 3), 10 + 4 * t, np.uint8) for t in range(5)])
    assert temporal_error_noref(frames) == pytest.approx(4.0)
    assert temporal_error_noref(np.repeat(frames[:1], 3, axis=0)) == 0.0
    acc = TemporalError()
    for f in frames:
        acc.update(f)
    assert acc.value == pytest.approx(4.0)


# --------------------------------------------------------------------------- sharpness


def test_sharpness() -> None:
    img = _textured(4, (64, 64, 3))
    blurred = cv2.GaussianBlur(img, (0, 0), 2.0)
    assert sharpness(blurred) < sharpness(img)
    assert sharpness(img) == pytest.approx(sharpness(img.astype(np.float64) / 255.0))
    assert sharpness_ratio(blurred, img) < 0.5
    assert sharpness_ratio(img, img) == pytest.approx(1.0)
    flat = np.full((32, 32, 3), 90, np.uint8)
    assert sharpness(flat) == 0.0
    assert sharpness_ratio(flat, flat) == 1.0
    # The mask restricts: a flat left half scores 0 even though the right half is textured.
    half = flat.copy()
    half[:, 16:] = _noise(5, (32, 16, 3))
    left = np.zeros((32, 32), bool)
    left[:, :12] = True
    assert sharpness(half, left) == 0.0
    assert sharpness(half, ~left) > 0.0


# --------------------------------------------------------------------------- regions


def test_face_and_mouth_masks_from_landmarks() -> None:
    box = (177, 56, 272, 176)
    lm = np.array([[204, 100], [247, 103], [223, 129], [202, 138], [244, 140]], float)
    face, mouth = face_and_mouth_masks((512, 512, 3), box, lm)
    assert face.dtype == bool and face.shape == (512, 512)
    assert face.sum() == 95 * 120
    assert face[56, 177] and face[175, 271] and not face[176, 271] and not face[55, 177]
    assert mouth[139, 223] and mouth[138, 202] and mouth[140, 244]  # centre and both corners
    assert not mouth[100, 204]  # not the eye
    assert mouth[:, 223].sum() < 60
    # Without landmarks: the lower-middle part of the box.
    _, mouth_box = face_and_mouth_masks((512, 512), box)
    ys, xs = np.nonzero(mouth_box)
    assert 56 + 0.5 * 120 < ys.min() and ys.max() < 176
    assert 177 < xs.min() and xs.max() < 272
    assert mouth_box[139, 223]
    # NaN landmarks fall back to the box.
    nan_lm = np.full((5, 2), np.nan)
    assert np.array_equal(face_and_mouth_masks((512, 512), box, nan_lm).mouth, mouth_box)


def test_face_masks_clip_to_frame() -> None:
    face, mouth = face_and_mouth_masks((100, 80), (-20, 50, 40, 150))
    assert face.shape == (100, 80)
    assert face.sum() == 40 * 50
    assert not face_and_mouth_masks((100, 80), (200, 200, 300, 300)).face.any()
    with pytest.raises(ValueError, match="x1 > x0"):
        face_and_mouth_masks((100, 80), (10, 10, 5, 20))


# --------------------------------------------------------------------------- sliding evaluation


def test_sliding_evaluation_finds_known_offset_from_table() -> None:
    rng = np.random.default_rng(0)
    n_res, n_ref, true_off = 12, 20, 5
    table = rng.uniform(20, 25, (n_res, n_ref))
    for i in range(n_res):
        table[i, i + true_off] = 40.0
    r = sliding_evaluation(table, n_res, n_ref, window=n_res)
    assert (r.offset, r.start, r.value) == (true_off, 0, pytest.approx(40.0))
    assert len(r.offsets) == n_ref - n_res + 1 and np.all(np.isfinite(r.per_offset))
    # Lower-is-better metrics: the same table negated as an error.
    r2 = sliding_evaluation(-table, n_res, n_ref, window=4, higher_is_better=False)
    assert r2.offset == true_off and r2.value == pytest.approx(-40.0)


def test_sliding_evaluation_with_function_and_window_start() -> None:
    n_res, n_ref = 10, 8
    calls: list[int] = []

    def per_frame(offset: int) -> np.ndarray:
        calls.append(offset)
        i0, i1 = sliding_overlap(offset, n_res, n_ref)
        vals = np.zeros(i1 - i0)
        if offset == -2:  # restored i <-> reference i - 2 is right, but only for i in 5..7
            vals[np.arange(i0, i1) >= 5] = 1.0
        return vals

    r = sliding_evaluation(per_frame, n_res, n_ref, window=3)
    assert (r.offset, r.start, r.value) == (-2, 5, pytest.approx(1.0))
    assert sorted(calls) == list(range(3 - n_res, n_ref - 3 + 1))
    assert sliding_overlap(-2, n_res, n_ref) == (2, 10)
    assert sliding_overlap(3, n_res, n_ref) == (0, 5)


def test_sliding_evaluation_handles_inf_and_checks_args() -> None:
    table = np.full((4, 6), 30.0)
    table[np.arange(4), np.arange(4) + 1] = np.inf  # PSNR of identical frames
    assert sliding_evaluation(table, 4, 6, 4).offset == 1
    ties = sliding_evaluation(np.ones((4, 6)), 4, 6, 2)
    assert (ties.offset, ties.start) == (0, 0)
    with pytest.raises(ValueError, match="window"):
        sliding_evaluation(table, 4, 6, 5)
    with pytest.raises(ValueError, match="shape"):
        sliding_evaluation(table, 5, 6, 2)
    with pytest.raises(ValueError, match="expected"):
        sliding_evaluation(lambda off: np.zeros(1), 4, 6, 2)


# --------------------------------------------------------------------------- jitter


def test_crop_jitter_known_sequence() -> None:
    c = np.array([[0, 0], [3, 4], [3, 4], [np.nan, np.nan], [10, 10], [10, 12]], float)
    # Valid consecutive pairs: 5, 0, 2 (the gap is not bridged).
    assert crop_jitter(c) == pytest.approx(7 / 3)
    line = np.stack([np.arange(6.0), 2 * np.arange(6.0)], axis=1)
    assert crop_jitter(line) == pytest.approx(math.sqrt(5))
    assert crop_jitter(line, order=2) == pytest.approx(0.0)  # constant velocity: no shake
    assert math.isnan(crop_jitter(np.full((4, 2), np.nan)))
    assert math.isnan(crop_jitter(np.zeros((1, 2))))
    with pytest.raises(ValueError, match="N, 2"):
        crop_jitter(np.zeros((4, 3)))

"""Degradations: shape/dtype kept, deterministic for a seed, PSNR drop in a sane range."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from threpair.degrade import (
    lipsync_like,
    random_degradation,
    simulate_generator,
    simulate_wav2lip_box,
)
from threpair.errors import InputError


def textured_image(size: int, seed: int = 0) -> np.ndarray:
    """Smooth colour blobs plus fine texture: enough high frequencies for blur to cost PSNR."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    base = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    fine = rng.integers(-25, 26, (size, size, 3), dtype=np.int16)
    return np.clip(base + fine, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def test_simulate_generator_keeps_shape_dtype_and_input() -> None:
    img = textured_image(64)
    before = img.copy()
    out = simulate_generator(img, 24)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(img, before)  # input untouched
    np.testing.assert_array_equal(out, simulate_generator(img, 24))  # deterministic


def test_psnr_drop_is_sane_and_monotonic_in_gen_res() -> None:
    img = textured_image(128)
    p = [psnr(simulate_generator(img, r), img) for r in (24, 48, 96)]
    assert 15 < p[0] < p[1] < p[2] < 40, p  # coarser generator, lower PSNR; never absurd
    assert psnr(simulate_generator(img, 128), img) > 45  # rendering at full size ~ identity


def test_lower_half_only_touches_the_lower_half() -> None:
    img = textured_image(64)
    out = simulate_generator(img, 16, lower_half=True)
    np.testing.assert_array_equal(out[:32], img[:32])
    assert psnr(out[32:], img[32:]) < 30


def test_lipsync_like_options_and_seam() -> None:
    img = textured_image(64)
    box = (0.25, 0.25, 0.75, 0.75)
    out = lipsync_like(
        img, 16, np.random.default_rng(0), box=box, blur_sigma=0.7, noise_std=3.0,
        jpeg_quality=60, color_shift=(8.0, -4.0, 2.0), shift=(0.5, -0.5),
    )  # fmt: skip
    assert out.shape == img.shape and out.dtype == np.uint8
    inside = np.zeros((64, 64), dtype=bool)
    inside[16:48, 16:48] = True
    np.testing.assert_array_equal(out[~inside], img[~inside])  # hard rectangle: nothing outside
    assert np.abs(out[inside].astype(int) - img[inside].astype(int)).mean() > 3
    again = lipsync_like(
        img, 16, np.random.default_rng(0), box=box, blur_sigma=0.7, noise_std=3.0,
        jpeg_quality=60, color_shift=(8.0, -4.0, 2.0), shift=(0.5, -0.5),
    )  # fmt: skip
    np.testing.assert_array_equal(out, again)


def test_random_degradation_is_deterministic_per_seed() -> None:
    img = textured_image(64)
    outs = [random_degradation(img, np.random.default_rng(s), (18, 30)) for s in (1, 1, 2)]
    for o in outs:
        assert o.shape == img.shape and o.dtype == np.uint8
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])
    # on average it degrades: mean PSNR well below identity, but not destroyed
    ps = [psnr(random_degradation(img, np.random.default_rng(s), (18, 30)), img) for s in range(20)]
    assert 15 < float(np.mean(ps)) < 40


def test_simulate_wav2lip_box_in_frame() -> None:
    frame = textured_image(128)[:96]  # 96 x 128 frame
    out = simulate_wav2lip_box(frame, (40, 20, 100, 90), gen_res=24)
    assert out.shape == frame.shape and out.dtype == np.uint8
    mask = np.zeros(frame.shape[:2], dtype=bool)
    mask[20:90, 40:100] = True
    np.testing.assert_array_equal(out[~mask], frame[~mask])
    assert psnr(out[mask], frame[mask]) < 30
    # clipped to the frame; a box fully outside changes nothing
    clipped = simulate_wav2lip_box(frame, (100, -10, 200, 50), gen_res=24)
    assert clipped.shape == frame.shape
    np.testing.assert_array_equal(simulate_wav2lip_box(frame, (300, 300, 400, 400)), frame)


def test_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError):
        simulate_generator(np.zeros((8, 8, 3), dtype=np.float32), 4)
    with pytest.raises(InputError):
        simulate_generator(np.zeros((8, 8), dtype=np.uint8), 4)
    with pytest.raises(InputError):
        random_degradation(textured_image(32), np.random.default_rng(0), (10, 5))

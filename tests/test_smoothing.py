"""Temporal smoothing of the model's correction: less model flicker, motion not delayed."""

from __future__ import annotations

import numpy as np
import pytest

from threpair.metrics import temporal_error
from threpair.restore import Passthrough
from threpair.smoothing import SmoothedCorrection
from threpair.synthetic import talking_head_frames


class ShimmeringModel:
    """A face model whose repair shimmers: a fixed correction plus fresh noise every frame."""

    resolution = None

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        noise = self.rng.normal(0, 6, crops.shape)
        return np.clip(crops.astype(np.float32) + 10 + noise, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def moving() -> np.ndarray:
    """Crops of a moving, talking face (real motion between frames)."""
    return np.stack([f[60:188, 256:384] for f in talking_head_frames(24)])


def run(model, crops: np.ndarray, batch: int) -> np.ndarray:
    model.reset()
    return np.concatenate([model(crops[i : i + batch]) for i in range(0, len(crops), batch)])


def test_smoothing_reduces_model_flicker(moving):
    target = np.clip(moving.astype(np.float32) + 10, 0, 255)  # what a steady repair gives
    plain = run(SmoothedCorrection(ShimmeringModel(), 0.0), moving, 8)
    smooth = run(SmoothedCorrection(ShimmeringModel(), 0.6), moving, 8)
    assert temporal_error(list(smooth), list(target)) < 0.7 * temporal_error(
        list(plain), list(target)
    )


def test_motion_is_not_delayed(moving):
    out = run(SmoothedCorrection(Passthrough(), 0.8), moving, 5)
    assert np.array_equal(out, moving)  # no correction: the input motion comes through exactly


def test_batch_size_does_not_change_smoothing(moving):
    a = run(SmoothedCorrection(ShimmeringModel(1), 0.5), moving, 1)
    b = run(SmoothedCorrection(ShimmeringModel(1), 0.5), moving, 7)
    assert np.array_equal(a, b)


def test_weight_must_be_below_one():
    with pytest.raises(ValueError, match="0, 1"):
        SmoothedCorrection(Passthrough(), 1.0)


def test_cli_default_is_each_engines_own():
    """restore without --temporal-smooth smooths the SOVQAE (0.5) and not the reference
    engine (0: measured worse with it); an explicit value applies to either."""
    import inspect

    from threpair import cli
    from threpair.engines import EngineRequest
    from threpair.smoothing import DEFAULT_WEIGHT, default_weight

    assert inspect.signature(cli.restore).parameters["temporal_smooth"].default is None
    assert EngineRequest.__dataclass_fields__["temporal_smooth"].default is None
    assert default_weight("sovqae") == DEFAULT_WEIGHT == 0.5
    assert default_weight("references") == 0.0

"""Temporal smoothing of a face model's correction: less flicker without lagging the motion.

    model = SmoothedCorrection(IdentityModel.load(path), weight=0.5)

A model's frame-to-frame inconsistency (a code switching at a latent position, texture that
shimmers) shows as flicker. The pipeline's crops are aligned by the tracked face, so the
same crop pixel sees the same part of the face in consecutive frames; that lets the
*correction* (model output - input crop) be averaged over time with an exponential moving
average. The output is the current input crop plus the smoothed correction: head and mouth
motion come from the current frame itself and are never delayed; only the repair is.
`reset()` starts a new sequence (the pipeline calls it when the face reappears).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DEFAULT_WEIGHT = 0.5  # the SOVQAE's default: halves the flicker the model adds (bench/quality)
# The reference engine's default: its regressed band is steady from frame to frame, and on
# held-out anchor_de_20s frames degraded at 96 px smoothing made it worse on every figure
# (`--temporal-smooth 0.5` vs 0: face PSNR 35.63 vs 35.95 dB, mouth 34.76 vs 35.31,
# temporal error 2.081 vs 2.048; degraded input 34.02 / 32.52 / 2.084).
REFERENCES_WEIGHT = 0.0


def default_weight(engine: str) -> float:
    """Temporal smoothing an engine gets when the user does not say (`--temporal-smooth`)."""
    return REFERENCES_WEIGHT if engine == "references" else DEFAULT_WEIGHT


class SmoothedCorrection:
    """Wraps a FaceModel; `weight` in [0, 1) is the previous frame's share of the correction."""

    def __init__(self, model: Any, weight: float) -> None:
        if not 0 <= weight < 1:
            raise ValueError(f"temporal smoothing weight must be in [0, 1), got {weight}")
        self.model = model
        self.weight = weight
        self._prev: Any = None

    def __getattr__(self, name: str) -> Any:  # resolution, device, crop, last_stats, ...
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    def reset(self) -> None:
        self._prev = None
        reset = getattr(self.model, "reset", None)
        if reset is not None:
            reset()

    def _smooth(self, delta: Any) -> Any:
        """Exponential moving average over the batch's frames, carried across batches."""
        for i in range(len(delta)):
            if self._prev is not None:
                delta[i] = self.weight * self._prev + (1 - self.weight) * delta[i]
            self._prev = delta[i]
        return delta

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32)
        delta = self._smooth(self.model(crops).astype(np.float32) - x)
        return np.clip(x + delta, 0, 255).round().astype(np.uint8)

    @torch.inference_mode()
    def run_tensor(self, crops: torch.Tensor) -> torch.Tensor:
        delta = self._smooth(self.model.run_tensor(crops) - crops)
        return (crops + delta).clamp(0, 255)

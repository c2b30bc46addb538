"""The device (grid_sample) crop/paste path agrees with the OpenCV path up to rounding.

On CUDA the restore pipeline cuts and pastes crops with geometry_torch; the same code runs on
the CPU here, so these tests check its geometry against geometry.py on real pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threpair import geometry as g
from threpair import geometry_torch as gt
from threpair.config import CropConfig, PasteConfig, PipelineConfig
from threpair.restore import Passthrough, process_batch, uses_torch_warp
from threpair.synthetic import talking_head_boxes, talking_head_frames

CPU = torch.device("cpu")
SIZE = 96


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return next(iter(talking_head_frames(1)))


def planar(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float()


# A rotated crop inside the frame, and one that leaves it at the top-left corner.
GEOMETRIES = [(320.0, 180.0, 200.0, 0.2), (30.0, 40.0, 220.0, -0.3)]


@pytest.mark.parametrize("params", GEOMETRIES)
def test_warp_crop_matches_opencv(frame, params):
    m = g.crop_matrix(np.array(params), SIZE)
    x0, y0, x1, y1 = g.paste_roi(m, SIZE, frame.shape[1], frame.shape[0])
    ours = gt.warp_crop(gt.to_planar(frame[y0:y1, x0:x1], CPU), m, x0, y0, SIZE)
    ref = g.warp_crop(frame, m, SIZE).astype(np.float64)
    diff = np.abs(ours.permute(1, 2, 0).numpy() - ref)
    assert diff.max() <= 0.51  # OpenCV rounds its crop to uint8; ours stays float


@pytest.mark.parametrize("params", GEOMETRIES)
@pytest.mark.parametrize("mode", ["residual", "replace"])
@pytest.mark.parametrize("color_match", [False, True])
def test_paste_matches_opencv(frame, params, mode, color_match):
    m = g.crop_matrix(np.array(params), SIZE)
    x0, y0, x1, y1 = g.paste_roi(m, SIZE, frame.shape[1], frame.shape[0])
    crop = g.warp_crop(frame, m, SIZE)
    rng = np.random.default_rng(0)
    out = np.clip(crop + rng.normal(0, 20, crop.shape), 0, 255).astype(np.uint8)
    mask = g.region_mask(SIZE, "face", CropConfig(size=SIZE), 0.08)
    cfg = PasteConfig(mode=mode, color_match=color_match)  # type: ignore[arg-type]
    ref = g.paste(frame, out, crop, m, mask, cfg, 0.8).astype(int)
    rect = gt.to_planar(frame[y0:y1, x0:x1], CPU)
    new = gt.paste(rect, planar(out), planar(crop), m, x0, y0, torch.tensor(mask), cfg, 0.8)
    ours = frame.copy()
    ours[y0:y1, x0:x1] = gt.to_interleaved(new)
    diff = np.abs(ours.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02  # rounding of a few pixels
    outside = g.frame_mask(m, mask, frame.shape[1], frame.shape[0]) == 0
    assert np.array_equal(ours[outside], frame[outside])
    assert (ours != frame).any()


def test_passthrough_is_exact_on_the_device_path(frame):
    frames = list(talking_head_frames(6))
    boxes = talking_head_boxes(6)
    cfg = PipelineConfig(crop=CropConfig(size=SIZE), warp="torch")
    assert uses_torch_warp(Passthrough(), cfg)
    geo = [
        np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 1.5 * (b[2] - b[0]), 0.1]) for b in boxes
    ]
    out, records = process_batch(frames, geo, Passthrough(), cfg, SIZE)
    assert all(r["face"] and r["strength"] == 1.0 for r in records)
    assert all(np.array_equal(a, b) for a, b in zip(out, frames))


def test_auto_uses_opencv_off_cuda():
    assert not uses_torch_warp(Passthrough(), PipelineConfig())

    class NumpyOnly:
        resolution = None

        def __call__(self, crops):
            return crops

    with pytest.raises(ValueError, match="run_tensor"):
        uses_torch_warp(NumpyOnly(), PipelineConfig(warp="torch"))

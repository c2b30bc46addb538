"""Tests for threpair.synthetic: determinism, geometry, motion, mouth, and a real detector."""

from __future__ import annotations

import numpy as np
import pytest

from threpair.metrics import face_and_mouth_masks
from threpair.synthetic import (
    talking_head_boxes,
    talking_head_clip,
    talking_head_frames,
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area - inter))


@pytest.mark.parametrize("size", [(640, 360), (256, 256), (96, 160)])
def test_shape_dtype_and_boxes_inside(size: tuple[int, int]) -> None:
    w, h = size
    clip = list(talking_head_clip(3, size))
    for f in clip:
        assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
        assert f.image.flags.c_contiguous
        assert f.boxes.shape == (1, 4) and f.landmarks.shape == (1, 5, 2)
        x0, y0, x1, y1 = f.boxes[0]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert 0.3 < (y1 - y0) / min(w, h) < 0.46
        assert 0.0 <= f.mouth_open <= 1.0


def test_deterministic_for_a_seed() -> None:
    a = list(talking_head_frames(4, (128, 96), seed=7))
    b = list(talking_head_frames(4, (128, 96), seed=7))
    c = list(talking_head_frames(4, (128, 96), seed=8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[3], c[3])
    assert len(list(talking_head_frames(0))) == 0


def test_boxes_function_matches_clip() -> None:
    clip = list(talking_head_clip(5, (200, 150), seed=3))
    boxes = talking_head_boxes(5, (200, 150), seed=3)
    assert boxes.shape == (5, 4) and boxes.dtype == np.float32
    np.testing.assert_allclose(boxes, np.stack([f.boxes[0] for f in clip]), atol=1e-4)
    two = list(talking_head_clip(3, (320, 240), seed=3, two_faces=True))
    np.testing.assert_allclose(
        talking_head_boxes(3, (320, 240), seed=3, two_faces=True),
        np.stack([f.boxes for f in two]),
        atol=1e-4,
    )


def test_head_moves_over_time() -> None:
    boxes = talking_head_boxes(50, (640, 360))
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    heights = boxes[:, 3] - boxes[:, 1]
    assert np.ptp(centres[:, 0]) > 3 and np.ptp(heights) > 1  # translation and scale
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 3.0  # smooth: a few pixels per frame at most
    still = talking_head_boxes(10, (640, 360), motion=False)
    assert np.ptp(still, axis=0).max() == 0


def test_mouth_moves_alone_when_head_is_still() -> None:
    size = (320, 240)
    clip = list(talking_head_clip(25, size, motion=False, mouth=True))
    box, lm = clip[0].boxes[0], clip[0].landmarks[0]
    face, mouth = face_and_mouth_masks(clip[0].image.shape, box, lm)
    upper = face.copy()
    upper[int(lm[3:, 1].min()) - 2 :] = False  # the face above the mouth corners
    changed = 0
    for prev, cur in zip(clip, clip[1:], strict=False):
        diff = np.abs(cur.image.astype(int) - prev.image.astype(int)).max(axis=2)
        assert diff[~face].max() == 0 and diff[upper].max() == 0  # only the mouth/jaw moves
        if abs(cur.mouth_open - prev.mouth_open) > 0.05:
            assert diff[mouth].mean() > 0.5
            changed += 1
    assert changed >= 12  # speech: the mouth changes in most frames
    frozen = list(talking_head_frames(3, size, motion=False, mouth=False))
    assert np.array_equal(frozen[0], frozen[2])


def test_two_faces_layout() -> None:
    frames = list(talking_head_clip(3, (640, 360), two_faces=True))
    assert frames[0].boxes.shape == (2, 4) and frames[0].landmarks.shape == (2, 5, 2)
    main, second = frames[0].boxes
    assert _iou(main, second) == 0.0
    assert (second[3] - second[1]) < 0.6 * (main[3] - main[1])
    assert second[0] > main[2] and second[1] < 0.2 * 360  # top-right corner
    assert next(talking_head_frames(1, (256, 256), two_faces=True)).shape == (256, 256, 3)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        talking_head_clip(-1)
    with pytest.raises(ValueError, match="size"):
        talking_head_clip(1, (32, 32))
    with pytest.raises(ValueError, match="fps"):
        talking_head_boxes(1, fps=0)


def _detect(image: np.ndarray) -> list:
    retinaface = pytest.importorskip("retinaface")
    return retinaface.detect_faces(image, score_threshold=0.5)


def _as_xyxy(face) -> np.ndarray:
    return np.array([face.x, face.y, face.x + face.width, face.y + face.height], float)


@pytest.mark.parametrize("size", [(640, 360), (256, 256)])
def test_detector_finds_the_face(size: tuple[int, int]) -> None:
    for i, f in enumerate(talking_head_clip(40, size, seed=1)):
        if i % 8:
            continue
        faces = _detect(f.image)
        assert len(faces) == 1, f"frame {i}: {len(faces)} faces"
        assert faces[0].score > 0.9
        assert _iou(_as_xyxy(faces[0]), f.boxes[0]) > 0.5
        lm = np.array([[p.x, p.y] for p in faces[0].landmarks], float)
        # Same landmark order as the ground truth, within 10% of the face height.
        assert np.abs(lm - f.landmarks[0]).max() < 0.1 * (f.boxes[0, 3] - f.boxes[0, 1])


@pytest.mark.parametrize("size", [(640, 360), (256, 256)])
def test_detector_finds_both_faces(size: tuple[int, int]) -> None:
    for i, f in enumerate(talking_head_clip(30, size, seed=2, two_faces=True)):
        if i % 10:
            continue
        faces = _detect(f.image)
        assert len(faces) == 2, f"frame {i}: {len(faces)} faces"
        for gt in f.boxes:
            best = max(faces, key=lambda q: _iou(_as_xyxy(q), gt))
            assert best.score > 0.9 and _iou(_as_xyxy(best), gt) > 0.5

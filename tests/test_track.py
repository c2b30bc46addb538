"""Tracking and smoothing: pure functions on detections."""

from __future__ import annotations

import numpy as np

from threpair.config import CropConfig, TrackConfig
from threpair.detect import Detection, steady
from threpair.metrics import crop_jitter
from threpair.track import (
    crop_params,
    fill_gaps,
    link_tracks,
    select_identity,
    smooth_params,
)


def det(x: float, y: float, s: float) -> Detection:
    return Detection(np.array([x, y, x + s, y + s], float), 0.99)


def test_big_face_is_chosen_and_never_swapped():
    frames = [[det(100 + i, 100, 200), det(500, 50, 60)] for i in range(30)]
    # The small face is seen alone for a while (the big one is occluded): not joined.
    frames += [[det(500, 50, 60)] for _ in range(5)]
    target = select_identity(link_tracks(frames, TrackConfig()))
    assert sorted(target.dets) == list(range(30))
    assert all(d.box[2] - d.box[0] == 200 for d in target.dets.values())


def test_same_face_after_long_gap_is_joined():
    frames = [[det(100, 100, 200)] for _ in range(20)] + [[] for _ in range(40)]
    frames += [[det(300, 120, 190)] for _ in range(20)]
    target = select_identity(link_tracks(frames, TrackConfig(max_gap=5)))
    assert len(target.dets) == 40


def test_fill_gaps_bridges_short_gaps_only():
    p = np.full((20, 4), np.nan)
    p[0], p[4], p[15] = [0, 0, 10, 0], [4, 8, 10, 0], [0, 0, 10, 0]
    out = fill_gaps(p, max_gap=3)
    assert np.allclose(out[1:4, 0], [1, 2, 3]) and np.allclose(out[2, 1], 4)
    assert np.isnan(out[5:15, 0]).all() and np.isnan(out[16:, 0]).all()


def test_smoothing_reduces_jitter_and_keeps_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200)
    truth = np.stack([200 + 30 * np.sin(t / 30), 150 + t * 0.2, 100 + 0 * t, 0 * t], 1)
    noisy = truth + np.concatenate([rng.normal(0, 1.5, (200, 2)), np.zeros((200, 2))], 1)
    noisy[90:95] = np.nan  # a gap: the smoother must not bridge it
    smooth = smooth_params(noisy, 4)
    assert np.isnan(smooth[90:95, 0]).all()
    assert crop_jitter(smooth[:, :2]) < 0.5 * crop_jitter(noisy[:, :2])
    ok = ~np.isnan(smooth[:, 0])
    assert np.abs(smooth[ok, :2] - truth[ok, :2]).mean() < 1.0


def test_crop_params_follow_config():
    d = Detection(np.array([100, 100, 200, 240.0]), 0.9, np.array([[120, 150], [180, 150.0]]))
    from threpair.track import Track

    p = crop_params(Track({2: d}), 4, CropConfig(margin=1.5, shift_y=0.1))
    assert np.isnan(p[0, 0]) and np.allclose(p[2], [150, 170 + 14, 210, 0])


def test_steady_faces_moved_little_and_the_same_ones():
    a, b = det(100, 100, 200), det(400, 100, 100)
    assert steady([a, b], [det(106, 100, 200), det(403, 98, 100)], 0.04)  # 3% of each side
    assert not steady([a, b], [det(110, 100, 200), b], 0.04)  # 5%
    assert not steady([a], [a, b], 0.04) and not steady([a, b], [b], 0.04)  # came, went
    assert steady([], [], 0.04)  # no face before or after: nothing to detect between

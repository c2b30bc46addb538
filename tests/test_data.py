"""Training crops are framed exactly like restore crops, cached, and split by time."""

from __future__ import annotations

import numpy as np
import pytest

from threpair.batch import find_videos
from threpair.config import CropConfig, PipelineConfig
from threpair.data import extract_crops
from threpair.errors import InputError
from threpair.geometry import crop_matrix, warp_crop
from threpair.restore import analyze_faces
from threpair.video import probe, read_frames


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THREPAIR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_crops_match_restore_framing_and_are_cached(cache, clip):
    cfg = PipelineConfig(crop=CropConfig(size=64))
    cs = extract_crops(clip, cfg)
    assert cs.crops.shape == (40, 64, 64, 3) and cs.crops.dtype == np.uint8
    info = probe(clip)
    analysis = analyze_faces(info, cfg)
    frames = list(read_frames(info))
    for i in (0, 17, 39):
        expected = warp_crop(frames[i], crop_matrix(analysis.geometry[i], 64), 64)
        assert np.array_equal(cs.crops[i], expected)
    assert len(list(cache.rglob("*.crops.npy"))) == 1
    again = extract_crops(clip, cfg)
    assert isinstance(again.crops, np.memmap) and np.array_equal(again.crops, cs.crops)
    train, val = cs.split(0.25)
    assert len(train) == 30 and len(val) == 10
    assert np.array_equal(val[0], cs.crops[30])


def test_find_videos_for_training(tmp_path, clip):
    assert find_videos([clip]) == [clip]
    with pytest.raises(InputError, match="no such file"):
        find_videos([tmp_path / "nope.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos"):
        find_videos([tmp_path / "empty"])
    assert find_videos([clip.parent]) == sorted(clip.parent.glob("*.mp4"))
    assert find_videos([clip, clip.parent]) == [clip]  # each video once

"""The restore pipeline end to end with the passthrough model, on clips the tests make."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_clip
from threpair.config import DetectConfig, EncodeConfig, PasteConfig, PipelineConfig
from threpair.geometry import crop_matrix, frame_mask, paste, region_mask, warp_crop
from threpair.metrics import psnr
from threpair.restore import analyze_faces, restore_video
from threpair.synthetic import talking_head_boxes
from threpair.video import VideoWriter, probe, read_frames, stream_packet_hashes


def reencode(src, dst, encode: EncodeConfig):
    info = probe(src)
    with VideoWriter(dst, info.width, info.height, info.fps, info.path, encode) as w:
        for f in read_frames(info):
            w.write(f)
    return dst


def face_masks(analysis, cfg, size, w, h):
    m = region_mask(size, cfg.paste.region, cfg.crop, cfg.paste.feather)
    return [
        None if np.isnan(g[0]) else frame_mask(crop_matrix(g, size), m, w, h)
        for g in analysis.geometry
    ]


def test_passthrough_keeps_frames_audio_and_pixels(tmp_path, clip):
    # the plumbing: no seam blend; one encoder thread, so two encodes of the same frames are
    # identical (x264's frame threads are not reproducible, see EncodeConfig)
    cfg = PipelineConfig(paste=PasteConfig(seam="off"), encode=EncodeConfig(threads=1))
    out = tmp_path / "out.mp4"
    summary = restore_video(clip, out, cfg=cfg)
    assert summary.frames == 40 and summary.frames_with_face == 40 and not summary.warnings
    a, b = probe(clip), probe(out)
    assert (b.width, b.height, b.fps, b.frame_count) == (a.width, a.height, a.fps, a.frame_count)
    assert abs(b.duration - a.duration) <= 1 / float(a.fps)
    assert stream_packet_hashes(out) == stream_packet_hashes(clip)
    ref = reencode(clip, tmp_path / "ref.mp4", cfg.encode)
    values = [psnr(x, y) for x, y in zip(read_frames(b), read_frames(probe(ref)))]
    assert min(values) == np.inf  # residual paste of an identity model is exact
    cfg = PipelineConfig(paste=PasteConfig(mode="replace", seam="off"))
    replaced = restore_video(clip, tmp_path / "replaced.mp4", cfg=cfg).output
    values = [psnr(x, y) for x, y in zip(read_frames(probe(replaced)), read_frames(probe(ref)))]
    assert min(values) > 35  # replace resamples the face through the crop: a small loss


def test_only_masked_pixels_change(tmp_path, clip):
    """Losslessly encoded, the output equals the re-encode wherever the mask is zero."""
    lossless = EncodeConfig(crf=0, preset="ultrafast")
    # the fixed mask computed below is the one pasted through; no seam blend at a box border
    paste_cfg = PasteConfig(mode="replace", seam="off", mask="fixed")
    cfg = PipelineConfig(encode=lossless, paste=paste_cfg)
    out = restore_video(clip, tmp_path / "out.mp4", cfg=cfg).output
    ref = reencode(clip, tmp_path / "ref.mp4", lossless)
    info = probe(clip)
    analysis = analyze_faces(info, cfg)
    masks = face_masks(analysis, cfg, cfg.crop.size, info.width, info.height)
    changed_outside = 0
    for m, x, y in zip(masks, read_frames(probe(out)), read_frames(probe(ref))):
        # chroma is shared by 2x2 pixels in yuv420p: grow the mask by 2 px
        grown = np.zeros_like(m, bool)
        ys, xs = np.nonzero(m > 0)
        grown[max(0, ys.min() - 2) : ys.max() + 3, max(0, xs.min() - 2) : xs.max() + 3] = True
        diff = np.any(x != y, axis=2)
        changed_outside += int((diff & ~grown).sum())
    assert changed_outside == 0


def test_paste_changes_only_masked_pixels():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (200, 300, 3), np.uint8)
    cfg = PipelineConfig()
    g = np.array([150.0, 100.0, 120.0, 0.1])
    mat = crop_matrix(g, 64)
    crop = warp_crop(frame, mat, 64)
    mask = region_mask(64, "face", cfg.crop, cfg.paste.feather)
    out = paste(frame, 255 - crop, crop, mat, mask, cfg.paste)
    fm = frame_mask(mat, mask, 300, 200)
    assert np.array_equal(out[fm == 0], frame[fm == 0])
    assert (out[fm > 0.99] != frame[fm > 0.99]).any()
    # Residual mode with an identity model is an exact no-op.
    res = paste(frame, crop, crop, mat, mask, PasteConfig(mode="residual"))
    assert np.array_equal(res, frame)


def test_region_masks_are_nested_and_soft():
    cfg = PipelineConfig()
    face, lower, mouth = (region_mask(128, r, cfg.crop, 0.08) for r in ("face", "lower", "mouth"))
    assert face.sum() > lower.sum() > mouth.sum() > 0
    assert face.max() == pytest.approx(1.0, abs=1e-3) and face[0].max() == 0
    assert 0 < ((face > 0.05) & (face < 0.95)).mean() < 0.5


def test_no_face_passes_through_with_warning(tmp_path):
    src = make_clip(tmp_path / "blank.mp4", 20, kind="blank")
    summary = restore_video(src, tmp_path / "out.mp4")
    assert summary.frames == 20 and summary.frames_with_face == 0
    assert any("no face" in w for w in summary.warnings)


def test_two_faces_tracks_the_main_one(tmp_path):
    src = make_clip(tmp_path / "two.mp4", 40, (480, 270), kind="two_faces")
    info = probe(src)
    analysis = analyze_faces(info, PipelineConfig())
    boxes = talking_head_boxes(40, (480, 270), 25.0, 0, two_faces=True)[:, 0]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert analysis.has_face.all()
    assert np.abs(analysis.geometry[:, 0] - centres[:, 0]).max() < 15


def detect_cfg(**kw) -> PipelineConfig:
    return PipelineConfig(detect=DetectConfig(**kw))


def test_detection_every_k_frames_is_interpolated(tmp_path, clip):
    info = probe(clip)
    dense = analyze_faces(info, detect_cfg(every=1))
    # without the steadiness check (any motion counts as steady): frames 0, 3, ..., 39
    sparse = analyze_faces(info, detect_cfg(every=3, steady=float("inf")))
    assert sparse.detect_runs == 14 and sparse.has_face.all()
    assert np.abs(sparse.geometry[:, :2] - dense.geometry[:, :2]).max() < 6
    # every 2nd frame, the frames between detected too where the face moved more
    steady = analyze_faces(info, detect_cfg(every=2))
    assert 20 <= steady.detect_runs < 40 and steady.has_face.all()
    assert np.abs(steady.geometry[:, :2] - dense.geometry[:, :2]).max() < 3


def test_sparse_detection_detects_where_faces_come_and_go(tmp_path):
    """Face, no face, face (15 frames each, odd lengths): every 3rd frame detected, and where
    the faces changed between two detections the frames between are detected as well, so
    the face's frames are exactly the dense detector's (also the last frames, after the last
    3rd one)."""
    parts = [make_clip(tmp_path / f"{k}.mp4", 15, audio=False, kind=k) for k in ("talking", "blank")]  # fmt: skip
    joined = tmp_path / "joined.mp4"
    with VideoWriter(joined, 320, 240, probe(parts[0]).fps) as w:
        for p in (parts[0], parts[1], parts[0]):
            for f in read_frames(probe(p)):
                w.write(f)
    dense = analyze_faces(probe(joined), detect_cfg(every=1))
    sparse = analyze_faces(probe(joined), detect_cfg(every=3))
    assert dense.has_face[:15].all() and not dense.has_face[15:30].any()
    assert dense.has_face[30:].all()
    assert np.array_equal(sparse.has_face, dense.has_face)
    assert sparse.detect_runs < 45


def test_face_lost_mid_video_passes_those_frames(tmp_path):
    """Frames where the face is gone for longer than the gap bound are left untouched."""
    src = make_clip(tmp_path / "a.mp4", 30, audio=False)
    blank = make_clip(tmp_path / "b.mp4", 30, audio=False, kind="blank")
    joined = tmp_path / "joined.mp4"
    info_a, info_b = probe(src), probe(blank)
    with VideoWriter(joined, 320, 240, info_a.fps) as w:
        for f in read_frames(info_a):
            w.write(f)
        for f in read_frames(info_b):
            w.write(f)
        for f in read_frames(info_a):
            w.write(f)
    analysis = analyze_faces(probe(joined), PipelineConfig())
    assert analysis.has_face[:30].all() and analysis.has_face[60:].all()
    assert not analysis.has_face[30:60].any()


def test_synthetic_boxes_are_found(clip):
    info = probe(clip)
    analysis = analyze_faces(info, detect_cfg(every=1))
    truth = talking_head_boxes(40, (320, 240), 25.0, 0)
    centres = (truth[:, :2] + truth[:, 2:]) / 2
    assert analysis.detection_rate == 1.0
    assert np.abs(analysis.raw[:, 0] - centres[:, 0]).max() < 8

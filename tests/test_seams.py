"""Generator box seams (find, measure, blend) and the landmark-driven paste masks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import real_clip
from threpair import seams
from threpair.config import DetectConfig, EncodeConfig, PasteConfig, PipelineConfig
from threpair.evaluate import degrade_video
from threpair.geometry import landmark_mask
from threpair.restore import Passthrough, analyze_faces, restore_video
from threpair.video import VideoWriter, probe, read_frames

BOX = np.array([100.0, 60.0, 260.0, 240.0])  # x0, y0, x1, y1


def seamed_frame(step: float = 12.0, noise: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame, and the same with the box inside brighter by `step` and blurred:
    what a generator's paste does."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:360].astype(np.float32)
    base = 90 + 0.2 * xx + 0.1 * yy + rng.normal(0, noise, (300, 360))
    real = np.clip(np.repeat(base[..., None], 3, 2), 0, 255).astype(np.uint8)
    fake = real.astype(np.float32)
    x0, y0, x1, y1 = BOX.astype(int)
    inside = fake[y0:y1, x0:x1]
    inside = (inside.reshape(-1, 4, inside.shape[1], 3).mean(1).repeat(4, 0)) + step
    fake[y0:y1, x0:x1] = inside
    return real, np.clip(fake, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("method, outside", [("gradient", 0), ("both", 30)])
def test_blend_removes_the_step_and_keeps_the_rest(method, outside):
    real, fake = seamed_frame()
    before = seams.edge_strength(fake, BOX)["mean"]
    floor = seams.edge_strength(real, BOX)["mean"]
    out = seams.blend_seam(fake, BOX, seams.EDGES, band=30, method=method)
    after = seams.edge_strength(out, BOX)["mean"]
    assert before > 10 and floor < 2
    assert after < 0.25 * before  # the box edge no longer stands out
    # nothing changes farther than the band inside, or outside the box but for the ramp
    changed = np.any(out != fake, axis=2)
    x0, y0, x1, y1 = BOX.astype(int)
    keep = np.ones_like(changed)
    o = outside + 1
    keep[y0 - o : y1 + o, x0 - o : x1 + o] = False
    keep[y0 + 31 : y1 - 31, x0 + 31 : x1 - 31] = True
    assert not changed[keep].any()
    assert changed.any()


def test_ramp_makes_the_sharpness_change_gradual():
    """A blurry (generated) inside next to a sharp outside: the detail jump at the border
    shrinks towards what the seam-free frame has there."""
    real, fake = seamed_frame(step=0, noise=8)
    before = seams.edge_strength(fake, BOX, figure="detail")["mean"]
    floor = seams.edge_strength(real, BOX, figure="detail")["mean"]
    out = seams.blend_seam(fake, BOX, seams.EDGES, band=30, method="ramp", sigma=0.8)
    after = seams.edge_strength(out, BOX, figure="detail")["mean"]
    assert before > floor + 0.5
    assert after - floor < 0.5 * (before - floor)
    x0, y0, x1, y1 = BOX.astype(int)
    assert np.array_equal(out[y0:y1, x0:x1], fake[y0:y1, x0:x1])  # the inside is left alone


@pytest.mark.parametrize("off", [(0, 0, 0, 0), (2, 0, 0, 0), (-1, 2, 2, -2), (2, -2, -2, 2)])
def test_refine_box_finds_the_line_in_the_frame(off):
    """The box placed by the track up to 2 px off on any edge: refine_box moves each edge to
    the line where this frame's detail drops (the generator's paste), exactly."""
    _, fake = seamed_frame(step=0, noise=8)
    got = seams.refine_box(fake, BOX + np.array(off, float), seams.EDGES)
    np.testing.assert_array_equal(got, BOX)
    assert np.array_equal(seams.refine_box(fake, BOX, ()), BOX)  # no edges: left as given


def test_feather_only_softens_the_line():
    real, fake = seamed_frame()
    out = seams.blend_seam(fake, BOX, ("bottom",), band=30, method="feather")
    assert np.array_equal(out[:200], fake[:200])  # only the bottom edge was asked for
    assert (
        seams.edge_strength(out, BOX, ("bottom",))["bottom"]
        < seams.edge_strength(fake, BOX, ("bottom",))["bottom"]
    )


def test_big_real_contours_are_not_smeared():
    """A step far beyond a generator's colour mismatch (a hairline on the box edge) is left
    to the narrow feather only: the inside does not take the outside's brightness."""
    _, fake = seamed_frame(step=80)
    out = seams.blend_seam(fake, BOX, ("top",), band=30, method="gradient")
    assert np.array_equal(out, fake)


def test_frame_boxes_follow_the_face():
    box = seams.SeamBox(True, (-0.5, -0.5, 0.5, 0.6), ("top",))
    cfg = PipelineConfig()
    geo = np.array([[100.0, 100.0, 150.0, 0.0], [130.0, 90.0, 300.0, 0.0], [np.nan] * 4])
    b = box.frame_boxes(geo, cfg.crop)
    bs = geo[:2, 2] / cfg.crop.margin
    assert np.allclose(b[:2, 2] - b[:2, 0], bs)  # one face box wide
    assert np.allclose((b[:2, 0] + b[:2, 2]) / 2, geo[:2, 0])
    assert np.isnan(b[2]).all()


FACE = np.array([[100, 110], [156, 110], [128, 140], [106, 170], [150, 170]], np.float64)


def test_landmark_masks_are_nested_and_follow_the_face():
    face, lower, mouth = (landmark_mask(256, r, FACE, 0.08) for r in ("face", "lower", "mouth"))
    assert face.sum() > lower.sum() > mouth.sum() > 0
    assert face.max() == pytest.approx(1.0, abs=1e-3) and face[0].max() == 0
    assert (lower <= face + 1e-6).all()
    # the mouth region is centred on the mouth corners' midpoint (a bit below)
    ys, xs = np.nonzero(mouth > 0.5)
    assert abs(xs.mean() - 128) < 2 and 168 < ys.mean() < 180
    # moved face -> moved mask; the eyes are outside the lower-face mask
    moved = landmark_mask(256, "mouth", FACE + [30, -20], 0.08)
    ys2, xs2 = np.nonzero(moved > 0.5)
    assert xs2.mean() - xs.mean() == pytest.approx(30, abs=1) and ys2.mean() - ys.mean() == (
        pytest.approx(-20, abs=1)
    )
    assert lower[110, 100] < 0.05 and lower[170, 128] > 0.95


def test_landmark_mask_rolls_with_the_head():
    c = FACE.mean(0)
    a = np.radians(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    tilted = (FACE - c) @ rot.T + c
    m = landmark_mask(256, "face", tilted, 0.08) > 0.5
    ys, xs = np.nonzero(m)
    cov = np.cov(np.stack([xs, ys]))
    w, v = np.linalg.eigh(cov)
    long_axis = v[:, 1]  # the face's long axis, tilted by the roll
    angle = np.degrees(np.arctan2(abs(long_axis[0]), abs(long_axis[1])))
    assert angle == pytest.approx(20, abs=4)


def test_landmark_mask_covers_the_generator_box():
    box = np.array([[30, 40], [226, 40], [226, 245], [30, 245]], np.float64)
    plain = landmark_mask(256, "face", FACE, 0.08)
    covered = landmark_mask(256, "face", FACE, 0.08, box)
    assert plain[215, 70] < 0.05 and covered[215, 70] > 0.95  # box corner below the face
    assert covered[60, 128] > 0.95 and covered[100, 50] > 0.95  # full a feather inside it
    assert 0.4 < covered[245, 128] < 0.6 and 0.4 < covered[100, 30] < 0.6  # half on the border
    assert covered[100, 2] < 0.01  # gone 1.4 feathers outside it
    assert (covered >= plain - 1e-6).all()
    mouth = landmark_mask(256, "mouth", FACE, 0.08, box)
    assert np.array_equal(mouth, landmark_mask(256, "mouth", FACE, 0.08))


def first_frames(src, dst, n):
    info = probe(src)
    with VideoWriter(dst, info.width, info.height, info.fps, None, EncodeConfig(crf=12)) as w:
        for i, f in enumerate(read_frames(info)):
            if i >= n:
                break
            w.write(f)
    return dst


@pytest.mark.realdata
@pytest.mark.slow
def test_degraded_box_is_found_and_blended(tmp_path):
    """anchor_de_20s with the project's own generator stand-in: the box is found where
    degrade pasted it, the summary says so, and restore with --model passthrough lowers the
    step along the known box while leaving pixels away from it untouched (seam="auto": the
    library's default is off, the CLI's is auto with an identity)."""
    real = first_frames(real_clip("anchor_de_20s"), tmp_path / "real.mp4", 40)
    fake = tmp_path / "fake.mp4"
    cfg = PipelineConfig(encode=EncodeConfig(crf=0, preset="ultrafast"))
    degrade_video(real, fake, cfg=cfg)
    on_cfg = PipelineConfig(encode=cfg.encode, paste=PasteConfig(seam="auto"))
    on = restore_video(fake, tmp_path / "on.mp4", Passthrough(), on_cfg)
    assert on.seam["found"] and {"top", "bottom"} <= set(on.seam["edges"])
    known = (-0.5, -0.5, 0.5, 0.58)  # evaluate.generator_box in face-box units
    for k, e in enumerate(seams.EDGES):
        if e in on.seam["edges"]:
            assert on.seam["box"][k] == pytest.approx(known[k], abs=0.03), e
    off_cfg = PipelineConfig(encode=cfg.encode, paste=PasteConfig(seam="off"))
    off = restore_video(fake, tmp_path / "off.mp4", Passthrough(), off_cfg)
    assert off.seam == {}
    # where degrade pasted it: its track detects every frame
    every_frame = PipelineConfig(detect=DetectConfig(every=1))
    boxes = seams.SeamBox(True, known).frame_boxes(
        analyze_faces(probe(real), every_frame).geometry, cfg.crop
    )
    edges = tuple(on.seam["edges"])
    before, after, floor = [], [], []
    frames = zip(
        read_frames(probe(off.output)), read_frames(probe(on.output)), read_frames(probe(real))
    )
    for i, (a, b, r) in enumerate(frames):
        # degrade's seam is a sharpness seam (a 96-px render, right colours): the detail jump
        before.append(seams.edge_strength(a, boxes[i], edges, figure="detail")["mean"])
        after.append(seams.edge_strength(b, boxes[i], edges, figure="detail")["mean"])
        floor.append(seams.edge_strength(r, boxes[i], edges, figure="detail")["mean"])
        x0, y0, x1, y1 = boxes[i].astype(int)
        far = np.ones(a.shape[:2], bool)
        far[max(0, y0 - 40) : y1 + 40, max(0, x0 - 40) : x1 + 40] = False
        assert np.array_equal(a[far], b[far])
    seam_before = np.mean(before) - np.mean(floor)
    seam_after = np.mean(after) - np.mean(floor)
    assert seam_before > 0.2  # the seam is there to be removed
    assert seam_after < 0.5 * seam_before, (np.mean(floor), np.mean(before), np.mean(after))

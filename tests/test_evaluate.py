"""`degrade` and `eval` on whole videos: known values, paired data, unequal lengths."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_clip
from threpair.config import EncodeConfig
from threpair.evaluate import degrade_video, evaluate_videos
from threpair.video import VideoWriter, probe, read_frames, stream_packet_hashes

LOSSLESS = EncodeConfig(codec="ffv1", pix_fmt="bgr0")  # truly lossless RGB


def rewrite(src, dst, fn, encode=LOSSLESS, frames=None):
    info = probe(src)
    audio = info.path if info.has_audio else None
    with VideoWriter(dst, info.width, info.height, info.fps, audio, encode) as w:
        for i, f in enumerate(read_frames(info)):
            if frames is None or i in frames:
                w.write(fn(f))
    return dst


def test_identical_videos(tmp_path, clip):
    s = evaluate_videos(clip, clip).summary
    assert s["psnr_face"] == np.inf and s["psnr_mouth"] == np.inf
    assert s["ssim_face"] == pytest.approx(1.0) and s["temporal_error"] == 0
    assert s["sharpness_mouth"] == pytest.approx(1.0) and s["frames_scored"] == 40


def test_known_offset_gives_expected_psnr(tmp_path, clip):
    """Lossless copies: +4 grey levels everywhere -> PSNR = 20 log10(255 / 4) in every region,
    and a constant offset is no flicker at all."""
    ref = rewrite(clip, tmp_path / "ref.mkv", lambda f: np.clip(f, 10, 240))
    brighter = rewrite(ref, tmp_path / "b.mkv", lambda f: f + 4)
    s = evaluate_videos(brighter, ref).summary
    expected = 20 * np.log10(255 / 4)
    assert s["psnr_face"] == pytest.approx(expected, abs=1e-6)
    assert s["psnr_mouth"] == pytest.approx(expected, abs=1e-6)
    assert s["temporal_error"] == pytest.approx(0.0, abs=1e-9)


def test_degrade_keeps_frames_fps_audio_and_lowers_psnr(tmp_path, clip):
    fake = tmp_path / "fake.mp4"
    result = degrade_video(clip, fake, gen_res=24)
    a, b = probe(clip), probe(fake)
    assert (b.frame_count, b.fps, b.width, b.height) == (a.frame_count, a.fps, a.width, a.height)
    assert stream_packet_hashes(fake) == stream_packet_hashes(clip)
    assert result["frames_with_face"] == 40
    s = evaluate_videos(fake, clip).summary
    assert 15 < s["psnr_face"] < 35 and s["sharpness_mouth"] < 0.8
    lower = degrade_video(clip, tmp_path / "lower.mp4", gen_res=24, lower_half=True)
    assert lower["lower_half"]
    s_lower = evaluate_videos(tmp_path / "lower.mp4", clip).summary
    assert s_lower["psnr_face"] > s["psnr_face"]  # only half the box was degraded


def test_unequal_lengths_use_sliding_evaluation(tmp_path):
    ref = make_clip(tmp_path / "ref.mp4", 30, audio=False)
    # the "generated" video starts 6 frames into the reference and is 20 frames long
    part = rewrite(ref, tmp_path / "part.mkv", lambda f: f, frames=set(range(6, 26)))
    result = evaluate_videos(part, ref)
    assert "sliding" in result.alignment and result.offset == 6
    assert result.summary["frames"] == 20 and result.summary["psnr_face"] > 40

"""Video I/O: probing without ffprobe, exact frame rates, streaming read, atomic write."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ffmpeg, make_clip
from threpair.errors import InputError, VideoError
from threpair.video import (
    VideoWriter,
    frame_rate_from_timestamps,
    parse_framemd5,
    parse_header,
    probe,
    read_frames,
    stream_packet_hashes,
)

HEADER = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 3548 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, progressive), 1920x1080 [SAR 1:1 DAR 16:9], 29.97 fps
      Side data:
        displaymatrix: rotation of -90.00 degrees
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp
  Stream #0:2[0x3](eng): Audio: ac3, 48000 Hz, 5.1(side), fltp
"""


def test_parse_header():
    h = parse_header(HEADER)
    assert h["codec"] == "h264" and h["pix_fmt"] == "yuv420p"
    assert (h["coded_width"], h["coded_height"]) == (1920, 1080)
    assert h["rotation"] == 90
    assert h["duration"] == pytest.approx(62.5)
    assert h["audio_streams"] == 2


def test_ntsc_rate_is_exact():
    text = "#tb 0: 1/30000\n" + "".join(
        f"0, {i * 1001}, {i * 1001}, 1001, 10, ab\n" for i in range(9)
    )
    tb, pts, durs = parse_framemd5(text)
    assert tb == Fraction(1, 30000) and len(pts) == 9
    fps, vfr = frame_rate_from_timestamps(tb, pts, durs)
    assert fps == Fraction(30000, 1001) and not vfr


def test_rounded_timestamps_are_not_vfr():
    # 24000/1001 in a 1/1000 time base: durations alternate 41/42 ticks.
    pts = [round(i * 1001 / 24) for i in range(50)]
    fps, vfr = frame_rate_from_timestamps(Fraction(1, 1000), pts, [42] * 50)
    assert not vfr and abs(float(fps) - 24000 / 1001) < 0.6


def test_probe_and_read_synthetic(clip):
    info = probe(clip)
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 240, 25, 40)
    assert info.has_audio and not info.vfr and info.duration == pytest.approx(1.6, abs=0.05)
    frames = list(read_frames(info))
    assert len(frames) == 40
    assert frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8
    small = next(iter(read_frames(info, (160, 120))))
    assert small.shape == (120, 160, 3)


def test_ntsc_odd_size_no_audio_roundtrip(tmp_path):
    src = make_clip(tmp_path / "ntsc.mp4", 30, (161, 121), Fraction(30000, 1001), audio=False)
    info = probe(src)
    assert info.fps == Fraction(30000, 1001)
    # yuv420p needs even sizes: one replicated column and row are added (README says so).
    assert (info.width, info.height) == (162, 122)
    assert not info.has_audio and info.frame_count == 30


def test_rotation_is_applied(tmp_path, clip):
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(clip), "-c", "copy", str(rotated))
    info = probe(rotated)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (240, 320)
    frame = next(iter(read_frames(info)))
    assert frame.shape == (320, 240, 3)


def test_vfr_keeps_duration(tmp_path, clip):
    vfr = tmp_path / "vfr.mp4"
    # Drop every third frame but keep the timestamps: gaps make the rate variable.
    ffmpeg(
        "-i",
        str(clip),
        "-vf",
        "select='mod(n\\,3)'",
        "-fps_mode",
        "passthrough",
        "-c:a",
        "copy",
        str(vfr),
    )
    info = probe(vfr)
    assert info.vfr
    frames = list(read_frames(info))
    assert abs(len(frames) / float(info.fps) - info.duration) < 2 / float(info.fps)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="directory"):
        probe(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    with pytest.raises(VideoError, match="not a readable video"):
        probe(text)


def test_audio_only_and_truncated(tmp_path, clip):
    audio = tmp_path / "audio.m4a"
    ffmpeg("-i", str(clip), "-vn", "-c:a", "copy", str(audio))
    with pytest.raises(VideoError, match="no video stream"):
        probe(audio)
    trunc = tmp_path / "trunc.mp4"
    data = Path(clip).read_bytes()
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError):
        probe(trunc)


def test_image_is_refused(tmp_path, clip):
    png = tmp_path / "still.png"
    ffmpeg("-i", str(clip), "-frames:v", "1", str(png))
    with pytest.raises(VideoError, match="still image"):
        probe(png)


def test_writer_is_atomic(tmp_path, clip):
    info = probe(clip)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError), VideoWriter(out, info.width, info.height, info.fps) as w:
        for i, frame in enumerate(read_frames(info)):
            w.write(frame)
            if i == 5:
                raise RuntimeError("simulated crash")
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_writer_copies_audio_bit_exact(tmp_path, clip):
    info = probe(clip)
    out = tmp_path / "copy.mp4"
    with VideoWriter(out, info.width, info.height, info.fps, info.path) as w:
        for frame in read_frames(info):
            w.write(frame)
    assert stream_packet_hashes(out) == stream_packet_hashes(clip)
    assert probe(out).frame_count == 40


def test_several_audio_streams_are_all_copied(tmp_path, clip):
    two = tmp_path / "two_audio.mp4"
    ffmpeg("-i", str(clip), "-map", "0:v", "-map", "0:a", "-map", "0:a", "-c", "copy", str(two))
    info = probe(two)
    assert info.audio_streams == 2
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info.width, info.height, info.fps, info.path) as w:
        for frame in read_frames(info):
            w.write(frame)
    assert probe(out).audio_streams == 2
    assert stream_packet_hashes(out, "a:1") == stream_packet_hashes(two, "a:1")


def test_webm_output_is_vp9_opus(tmp_path, clip):
    info = probe(clip)
    out = tmp_path / "out.webm"
    with VideoWriter(out, info.width, info.height, info.fps, info.path) as w:
        for frame in read_frames(info):
            w.write(frame)
    got = probe(out)
    assert got.codec == "vp9" and got.has_audio and got.frame_count == 40

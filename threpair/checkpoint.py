"""One identity = one .safetensors file: weights plus JSON metadata in the safetensors header.

Header keys (all strings, as safetensors requires): "format" (a tag that tells our files from
other safetensors files), "format_version", "threpair_version", "model_config" (JSON),
"metadata" (JSON: whatever the caller passed: crop settings, source video hash, training
stats) and "sha256" (digest of all tensor bytes, so silent corruption is caught on load).
No pickle anywhere: loading a file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from threpair import __version__
from threpair.errors import CheckpointError, InputError
from threpair.model import SOVQAE, ModelConfig

FORMAT_VERSION = 1
FORMAT_TAG = "threpair-sovqae"


def _jsonable(obj: Any) -> Any:
    """Copy of obj with non-finite floats as None (JSON has no NaN) and tuples/Paths converted."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save(path: str | Path, model: torch.nn.Module, model_cfg: ModelConfig, metadata: dict) -> Path:
    """Write model weights + metadata to `path` atomically (temp file, then os.replace).

    metadata must be JSON-serialisable (non-finite floats are stored as null). Returns the path.
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        meta_json = json.dumps(_jsonable(metadata), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"checkpoint metadata is not JSON-serialisable: {e}") from e
    header = {
        "format": FORMAT_TAG,
        "format_version": str(FORMAT_VERSION),
        "threpair_version": __version__,
        "model_config": json.dumps(model_cfg.to_dict()),
        "metadata": meta_json,
        "sha256": _digest(tensors),
    }
    return write_atomic(path, tensors, header)


def write_atomic(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> Path:
    """A safetensors file written to a hidden temp name next to `path`, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:200]}.threpair-tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=header)
        os.chmod(tmp, 0o644)  # safetensors creates 0600; a model file is not a secret
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def open_header(path: Path) -> dict[str, str]:
    """The header of a safetensors file; CheckpointError (saying what to do) when the file is
    missing or unreadable."""
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no identity there: check the path, or build one with "
            "`threpair train-identity VIDEO`"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): copy it again or "
            "rebuild it with `threpair train-identity`"
        ) from e


def _read_header(path: Path) -> dict[str, str]:
    header = open_header(path)
    if header.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{path}: a safetensors file but not a threpair checkpoint (no '{FORMAT_TAG}' tag): "
            "pass a model written by `threpair train-identity`"
        )
    version = header.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this threpair ({__version__}) reads "
            f"version {FORMAT_VERSION}: use the threpair version that wrote it "
            f"({header.get('threpair_version', 'unknown')}) or retrain"
        )
    return header


def _parse_header(path: Path, header: dict[str, str]) -> tuple[ModelConfig, dict]:
    try:
        cfg = ModelConfig.from_dict(json.loads(header["model_config"]))
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, ValueError, TypeError, InputError) as e:
        raise CheckpointError(
            f"{path}: bad model config in the checkpoint header ({e}): retrain"
        ) from e
    return cfg, metadata


def read_metadata(path: str | Path) -> dict:
    """Header of a checkpoint without loading its weights (for `threpair inspect`).

    Returns {"format_version", "threpair_version", "model_config" (dict), "metadata" (dict),
    "num_parameters", "file_bytes"}. Raises CheckpointError like `load`.
    """
    path = Path(path)
    header = _read_header(path)
    cfg, metadata = _parse_header(path, header)
    with safe_open(str(path), framework="pt") as f:
        n = 0
        for k in f.keys():
            shape = f.get_slice(k).get_shape()
            n += math.prod(shape) if k != "quantizer.unused_steps" else 0
    return {
        "format_version": int(header["format_version"]),
        "threpair_version": header.get("threpair_version", "unknown"),
        "model_config": cfg.to_dict(),
        "metadata": metadata,
        "num_parameters": n,
        "file_bytes": path.stat().st_size,
    }


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[SOVQAE, ModelConfig, dict]:
    """Load a checkpoint: (model in eval mode on `device`, its ModelConfig, the caller metadata).

    Strict: a missing file, a non-safetensors or corrupt file, a foreign safetensors file, another
    format version, missing/unexpected tensors or wrong shapes all raise CheckpointError.
    """
    path = Path(path)
    header = _read_header(path)
    cfg, metadata = _parse_header(path, header)
    model = SOVQAE(cfg)
    expected = model.state_dict()
    tensors = read_tensors(path, "the weights")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match its model config (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}{'...' if len(missing) + len(unexpected) > 6 else ''}): retrain"
        )
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: tensor {k} has shape {tuple(tensors[k].shape)}, the config needs "
                f"{tuple(v.shape)}: the file is inconsistent, retrain"
            )
    if header.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path}: weights fail their checksum (corrupt file): copy it again")
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), cfg, metadata


def read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on the CPU; a corrupt file is a one-line
    CheckpointError naming `what` could not be read."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: could not read {what} (corrupt?): copy it again") from e

"""Checkpoints: bit-exact round trip, metadata, and strict refusal of bad files."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from threpair import __version__, checkpoint
from threpair.errors import CheckpointError, InputError
from threpair.model import PRESETS, SOVQAE

CFG = PRESETS["tiny"]


def saved(tmp_path: Path, name: str = "alice.safetensors") -> tuple[Path, SOVQAE]:
    torch.manual_seed(0)
    model = SOVQAE(CFG)
    with torch.no_grad():  # make the buffer non-trivial too
        assert model.quantizer is not None
        model.quantizer.unused_steps.random_(0, 50)
    meta = {"crop": {"size": 32, "scale": 1.8}, "video_sha256": "ab" * 32, "loss": math.nan}
    return checkpoint.save(tmp_path / name, model, CFG, meta), model


def test_roundtrip_is_bit_exact(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    loaded, cfg, meta = checkpoint.load(path)
    assert cfg == CFG and not loaded.training
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[0], loaded(x)[0])
    assert meta == {"crop": {"size": 32, "scale": 1.8}, "video_sha256": "ab" * 32, "loss": None}
    assert [p.name for p in tmp_path.iterdir()] == ["alice.safetensors"]  # no temp files left


def test_read_metadata_without_weights(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    info = checkpoint.read_metadata(path)
    assert info["format_version"] == checkpoint.FORMAT_VERSION
    assert info["threpair_version"] == __version__
    assert info["model_config"] == CFG.to_dict()
    assert info["metadata"]["crop"]["size"] == 32
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert info["file_bytes"] == path.stat().st_size


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    other = SOVQAE(dataclasses.replace(CFG, codebook_size=32))
    checkpoint.save(path, other, other.cfg, {})
    assert checkpoint.load(path)[1].codebook_size == 32


def test_unserialisable_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="JSON"):
        checkpoint.save(tmp_path / "x.safetensors", SOVQAE(CFG), CFG, {"f": object()})
    assert not list(tmp_path.iterdir())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        checkpoint.load(tmp_path / "nope.safetensors")


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a model" * 10)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for p in (trunc, garbage, empty):
        with pytest.raises(CheckpointError, match=p.name):
            checkpoint.load(p)
        with pytest.raises(CheckpointError):
            checkpoint.read_metadata(p)


def test_flipped_weight_byte_fails_checksum(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data, header intact
    path.write_bytes(bytes(data))
    checkpoint.read_metadata(path)  # the header is still fine
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load(path)


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(p), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a threpair checkpoint"):
        checkpoint.load(p)


def _rewrite(src: Path, dst: Path, header_update: dict, tensor_update: dict | None = None) -> None:
    with safe_open(str(src), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header.update(header_update)
    tensors.update(tensor_update or {})
    save_file(tensors, str(dst), metadata=header)


def test_wrong_format_version(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    p = tmp_path / "v2.safetensors"
    _rewrite(path, p, {"format_version": "2"})
    with pytest.raises(CheckpointError, match="format version 2"):
        checkpoint.load(p)


def test_missing_key_and_shape_mismatch(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    missing = tmp_path / "missing.safetensors"
    partial = {k: v for k, v in tensors.items() if k != "decoder.conv_out.bias"}
    save_file(partial, str(missing), metadata=header)
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(missing)
    wrong = tmp_path / "shape.safetensors"
    _rewrite(path, wrong, {}, {"quantizer.codebook": torch.zeros(10, CFG.code_dim)})
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint.load(wrong)
    bad_cfg = tmp_path / "cfg.safetensors"
    _rewrite(path, bad_cfg, {"model_config": json.dumps({"resolution": 33})})
    with pytest.raises(CheckpointError, match="config"):
        checkpoint.load(bad_cfg)

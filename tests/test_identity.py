"""The identity file (threpair/identity.py) and the never-worse engine choice as a user relies
on them: the bank covers every pose the footage shows, the file round-trips, bad or old files
are refused in one line that says what to do, and an untrained network is never used silently."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import make_clip
from threpair import checkpoint
from threpair.config import CropConfig, EncodeConfig
from threpair.engines import EngineRequest
from threpair.errors import CheckpointError
from threpair.identity import FORMAT_TAG, Identity, build_identity, farthest_points, read_header
from threpair.metrics import psnr
from threpair.model import SOVQAE, get_preset
from threpair.synthetic import talking_head_boxes, talking_head_frames
from threpair.video import VideoWriter, probe, read_frames


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "threpair", *args], capture_output=True, text=True, timeout=600
    )


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The CLI's contract for user errors: non-zero exit, one line on stderr, no traceback."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


# ---------------------------------------------------------------- bank selection


def test_farthest_points_picks_every_cluster():
    """30 rows around 0 and 3 rows around 10: two picks take one of each (a random or
    frequency-weighted pick of two misses the small cluster 83% of the time)."""
    rng = np.random.default_rng(0)
    big = rng.normal(0, 0.1, (30, 5))
    small = rng.normal(10, 0.1, (3, 5))
    desc = np.concatenate([big[:12], small, big[12:]])  # the small cluster at rows 12-14
    in_small = lambda idx: (idx >= 12) & (idx < 15)  # noqa: E731
    two = farthest_points(desc, 2)
    assert len(two) == 2 and in_small(two).sum() == 1
    four = farthest_points(desc, 4)
    assert np.all(np.diff(four) > 0) and in_small(four).sum() >= 1 and (~in_small(four)).sum() >= 1
    # the first pick is the row nearest the mean: in the big cluster
    one = farthest_points(desc, 1)
    assert len(one) == 1 and not in_small(one).any()
    np.testing.assert_array_equal(farthest_points(desc, 50), np.arange(len(desc)))


def test_bank_covers_both_head_poses(tmp_path):
    """Frames 0-27 show the face one way, frames 28-39 mirrored (another head pose; the
    last 10%, frames 36-39, are held out). A 2-crop bank holds one of each although the
    mirrored pose is only 8 of the 36 candidate frames. Measured picks: frames 25 and 32."""
    frames = list(talking_head_frames(40, (320, 240), 25.0, seed=0))
    frames = frames[:28] + [np.ascontiguousarray(f[:, ::-1]) for f in frames[28:]]
    path = tmp_path / "two_poses.mp4"
    with VideoWriter(path, 320, 240, Fraction(25), None, EncodeConfig(crf=12)) as w:
        for f in frames:
            w.write(f)
    ident = build_identity([path], bank_size=2, resolution=128)
    picks = ident.bank_frames
    assert len(picks) == 2 and len(ident.bank) == 2, picks
    assert (picks < 28).sum() == 1 and ((picks >= 28) & (picks < 36)).sum() == 1, picks
    assert len(ident.holdout) == 4  # frames 36-39, none of them in the bank


# ---------------------------------------------------------------- the file


def small_identity(size: int = 64, bank_size: int | None = None, n: int = 3) -> Identity:
    rng = np.random.default_rng(0)
    s = bank_size or size
    return Identity(
        crop=CropConfig(size=size),
        bank=rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
        bank_frames=np.arange(n, dtype=np.int64) * 7,
        holdout=rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8),
        info={"bank": {"size": n, "resolution": s}, "gains": {"references": {"96": {"gain": 1.5}}}},
    )


def test_identity_round_trip(tmp_path):
    ident = small_identity()
    path = ident.save(tmp_path / "alice.safetensors")
    assert read_header(path)["format"] == FORMAT_TAG
    back = Identity.load(path)
    np.testing.assert_array_equal(back.bank, ident.bank)
    np.testing.assert_array_equal(back.bank_frames, ident.bank_frames)
    np.testing.assert_array_equal(back.holdout, ident.holdout)
    assert back.crop == ident.crop and back.info == ident.info and back.network is None
    assert back.engines() == ["references"]
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic save leaves no temp file


def test_bank_from_another_framing_is_refused(tmp_path):
    """A file whose framing says 128 px but whose bank holds 64-px crops."""
    ident = small_identity(size=128, bank_size=64)
    path = ident.save(tmp_path / "mixed.safetensors")
    with pytest.raises(CheckpointError, match=r"(?s)mixed\.safetensors.*128 px.*train-identity"):
        Identity.load(path)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_identity_file(tmp_path, damage):
    path = small_identity().save(tmp_path / "corrupt.safetensors")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one byte of tensor data (the end of the file): the checksum catches it
        data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt") as e:
        Identity.load(path)
    assert "corrupt.safetensors" in str(e.value)


def test_restore_refuses_a_corrupt_identity_in_one_line(tmp_path, clip):
    path = small_identity().save(tmp_path / "corrupt.safetensors")
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    out = tmp_path / "out.mp4"
    line = one_line_error(run("restore", str(clip), str(out), "-m", str(path)))
    assert "corrupt.safetensors" in line and "corrupt" in line.replace("corrupt.safetensors", "")
    assert not out.exists()


def test_error_line_names_a_file_with_brackets(tmp_path, clip):
    path = small_identity().save(tmp_path / "take[v2].safetensors")
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    line = one_line_error(run("restore", str(clip), str(tmp_path / "o.mp4"), "-m", str(path)))
    assert "take[v2].safetensors" in line


def tiny_network_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    return checkpoint.save(path, SOVQAE(cfg), cfg, {"crop": {"size": 32, "margin": 1.5}})


def test_old_network_only_checkpoint_is_refused(tmp_path, clip):
    old = tiny_network_checkpoint(tmp_path / "old.safetensors")
    with pytest.raises(CheckpointError, match="train-identity"):
        Identity.load(old)
    line = one_line_error(run("restore", str(clip), str(tmp_path / "out.mp4"), "-m", str(old)))
    assert "train-identity" in line and "old.safetensors" in line
    # inspect still shows it, with the note
    r = run("inspect", str(old), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"].startswith("network-only")


def test_identity_with_a_network_from_before_the_band_split_loads_as_full(tmp_path, untrained):
    """An identity written before the band split: its network config has no "output",
    "band_grid" or "attn_window"; it was a full re-generation network with global attention
    and loads as one, with the same weights."""
    from dataclasses import replace

    from safetensors import safe_open
    from safetensors.torch import save_file

    ident, _ = untrained
    cfg = replace(get_preset("tiny"), output="full", attn_window=0)
    old = Identity(ident.crop, ident.bank, ident.bank_frames, ident.holdout, dict(ident.info),
                   SOVQAE(cfg).eval(), cfg, {})  # fmt: skip
    path = old.save(tmp_path / "old.safetensors")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    body = json.loads(header["identity"])
    for key in ("output", "band_grid", "attn_window"):
        del body["network"]["config"][key]
    save_file(tensors, str(path), metadata={**header, "identity": json.dumps(body)})
    loaded = Identity.load(path)
    assert replace(loaded.network_config, band_grid=cfg.band_grid) == cfg  # unused in full
    for k, v in old.network.state_dict().items():
        assert torch.equal(v, loaded.network.state_dict()[k]), k


# ---------------------------------------------------------------- never worse


@pytest.fixture(scope="module")
def untrained(clip, tmp_path_factory):
    """The synthetic clip's identity (bank at 128 px) with a freshly initialised tiny SOVQAE:
    a network that has learnt nothing."""
    ident = build_identity([clip], bank_size=16, resolution=128)
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    ident.network, ident.network_config, ident.network_meta = SOVQAE(cfg).eval(), cfg, {}
    path = ident.save(tmp_path_factory.mktemp("identity") / "untrained.safetensors")
    return ident, path


def test_untrained_network_is_not_chosen(untrained):
    """Its validated gain on the held-out crops at a 96-px generator is negative (measured
    -27.9 dB: it outputs mush), so auto does not use it and says so; the references engine
    (measured +2.1 dB) is used. Asked for explicitly, it is used, with a note."""
    ident, path = untrained
    request = EngineRequest(Identity.load(path))
    assert request.identity.engines() == ["references", "sovqae"]
    name, notes, gains = request.choose(96)
    print({k: round(v["gain"], 2) for k, v in gains.items()})
    assert gains["sovqae"]["gain"] <= 0
    assert name != "sovqae"
    assert any("sovqae" in n and "not used" in n for n in notes), notes
    if gains.get("references", {}).get("gain", 0) > 0:
        assert name == "references"
    forced = EngineRequest(request.identity, engine="sovqae")
    name, notes, _ = forced.choose(96)
    assert name == "sovqae" and any("--engine asked for it" in n for n in notes), notes


def face_psnr(video: Path, real: Path, boxes: np.ndarray) -> float:
    """Mean PSNR over the ground-truth face boxes of the synthetic clip."""
    values = []
    for f, r, b in zip(read_frames(probe(video)), read_frames(probe(real)), boxes):
        x0, y0, x1, y1 = np.round(b).astype(int)
        mask = np.zeros(f.shape[:2], bool)
        mask[max(0, y0) : y1, max(0, x0) : x1] = True
        values.append(psnr(f, r, mask=mask))
    return float(np.mean(values))


@pytest.mark.slow
def test_auto_restore_is_no_worse_than_its_input(tmp_path, untrained):
    """A fake made with `threpair degrade --gen-res 48` from another take of the person,
    restored with --engine auto with the untrained-network identity: the engine record says
    what was used (not the untrained network), and face PSNR against the real frames is no
    worse than the fake's. Measured: 28.59 dB -> 28.60 dB (auto estimated a 64-px generator,
    references validated +3.2 dB there, sovqae -23.2 dB; every frame was pasted at reduced
    strength, about 0.7, by the confidence blend). Asserted: restored >= fake - 0.05 dB (the
    tolerance covers re-encoding only)."""
    _, ident_path = untrained
    real = make_clip(tmp_path / "real.mp4", n_frames=12, seed=3)
    fake = tmp_path / "fake.mp4"
    r = run("degrade", str(real), str(fake), "--gen-res", "48", "--quiet")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "restored.mp4"
    r = run("restore", str(fake), str(out), "-m", str(ident_path), "--engine", "auto", "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)["engine"]
    assert {"engine", "generator_res", "crop_size", "gains", "notes"} <= set(record)
    assert record["engine"] != "sovqae"
    assert any("sovqae" in n and "not used" in n for n in record["notes"]), record["notes"]
    assert "sovqae" in r.stderr  # the user sees the note as a warning
    boxes = talking_head_boxes(12, (320, 240), 25.0, seed=3)
    before, after = face_psnr(fake, real, boxes), face_psnr(out, real, boxes)
    print(f"face PSNR fake {before:.2f} dB, restored {after:.2f} dB, engine {record}")
    assert after >= before - 0.05

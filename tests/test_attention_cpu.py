"""The reference attention (engines/attention.py) on the CPU: its fused kernels
(engines/attention_cpu.py) for the matching, against patch distances summed out by brute
force in float64, and for the gather; both against the tensor versions that CUDA runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from threpair.engines.attention import (
    AttentionConfig,
    _gather_tensors,
    _match_tensors,
    gather_high,
    match,
    value_canvas,
)
from threpair.engines.attention_cpu import match_bands


def _fields(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images in 0-255: neighbouring cells alike, as on faces."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size // 4, size // 4, generator=g) * 255
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _brute_force(q_low, keys_padded, chosen, cfg, rect) -> np.ndarray:
    """(R, span^2, H, W) float64 squared patch distances of every chosen reference at every
    offset, written straight from the definition."""
    w, p = cfg.window, cfg.patch
    h = w + p
    y0, y1, x0, x1 = rect
    qp = F.pad(q_low[None], (p,) * 4, mode="replicate")[0].double().numpy()
    keys = keys_padded[chosen].double().numpy()
    span = 2 * w + 1
    out = np.zeros((len(chosen), span * span, y1 - y0, x1 - x0))
    for o in range(span * span):
        oy, ox = o // span - w, o % span - w
        for u in range(-p, p + 1):
            for v in range(-p, p + 1):
                k = keys[:, :, y0 + oy + u + h : y1 + oy + u + h, x0 + ox + v + h : x1 + ox + v + h]
                qv = qp[:, y0 + u + p : y1 + u + p, x0 + v + p : x1 + v + p]
                out[:, o] += ((k - qv[None]) ** 2).sum(1)
    return out


@pytest.mark.parametrize(
    "channels, window, patch, top_k",
    [(1, 1, 3, 4), (3, 2, 2, 6), (1, 0, 1, 1)],
)
def test_match_returns_the_nearest_references_at_their_best_offsets(channels, window, patch, top_k):
    """On the CPU (the kernel) and through the tensor version: per cell, the k smallest of
    the references' best distances over the window, nearest first, and the reference and
    offset reported for each are ones at which the patch distance is that value (ties may
    pick either). A rectangle away from the grid's edges and a shuffled subset of the bank."""
    size, n = 40, 9
    cfg = AttentionConfig(window=window, patch=patch, top_k=top_k, color=channels == 3)
    keys = _fields(n, channels, size, seed=1)
    q_low = _fields(1, channels, size, seed=2)[0] * 0.1 + keys[3] * 0.9  # near reference 3
    keys_padded = F.pad(keys, (window + patch,) * 4, mode="replicate")
    chosen = torch.tensor([7, 3, 0, 5, 8, 1, 6])
    rect = (3, 31, 5, 38)  # 28 x 33 cells
    truth = _brute_force(q_low, keys_padded, chosen, cfg, rect)  # (R, O, H, W)
    cells = (2 * patch + 1) ** 2 * channels
    per_ref = np.sqrt(truth.min(1) / cells)  # RMS distance at each reference's best offset
    expected = np.sort(per_ref, axis=0)[:top_k]
    span = 2 * window + 1
    y, x = np.meshgrid(np.arange(28), np.arange(33), indexing="ij")
    pos = {int(r): i for i, r in enumerate(chosen)}

    dist, ref, dy, dx = match(q_low, keys_padded, chosen, cfg, rect)
    np.testing.assert_allclose(dist.numpy(), expected, rtol=1e-4, atol=1e-3)
    for j in range(top_k):  # what each pick is, measured independently
        r = np.vectorize(pos.get)(ref[j].numpy())
        o = (dy[j].numpy() + window) * span + dx[j].numpy() + window
        at_pick = np.sqrt(truth[r, o, y, x] / cells)
        np.testing.assert_allclose(at_pick, expected[j], rtol=1e-4, atol=1e-3)
    assert (ref[0].numpy() == 3).mean() > 0.9  # the query was made from reference 3

    # the tensor version (CUDA's) on the same input: the same distances and picks
    qp = F.pad(q_low[None], (patch,) * 4, mode="replicate")[0]
    q = qp[:, rect[0] : rect[1] + 2 * patch, rect[2] : rect[3] + 2 * patch]
    d_t, sel_t, off_t = _match_tensors(q, keys_padded, chosen, rect[::2], window, patch, top_k)
    d_k, sel_k, off_k = match_bands(q, keys_padded, chosen, rect[::2], window, patch, top_k)
    torch.testing.assert_close(d_t, d_k, rtol=1e-4, atol=1e-2)
    assert (sel_t == sel_k).float().mean() > 0.99 and (off_t == off_k).float().mean() > 0.99


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_gather_kernel_equals_the_tensor_version(factor):
    """The CPU kernel's blend (per output pixel) and the tensor version's (blocks folded)
    agree on random matches, weights and values, over a rectangle inside the crop and one
    down its whole height; int16 and float32 canvases."""
    g = torch.Generator().manual_seed(factor)
    n, size, window, k = 5, 48, 2, 3
    pad = factor * window + factor // 2
    for dtype in (torch.int16, torch.float32):
        values = (torch.rand(n, 3, size, size, generator=g) * 510 - 255).round()
        canvas = value_canvas(values, pad).to(dtype)
        for origin, cells in (((2 * factor, factor), (7, 9)), ((0, factor), (size // factor, 5))):
            hc, wc = cells
            w = torch.softmax(torch.randn(k, hc, wc, generator=g), 0)
            ref = torch.randint(0, n, (k, hc, wc), generator=g)
            dy, dx = torch.randint(-window, window + 1, (2, k, hc, wc), generator=g)
            shape = (min(hc * factor, size - origin[0]), min(wc * factor, size - origin[1]))
            want = _gather_tensors(canvas, pad, w, ref, dy, dx, factor, origin, shape)
            got = gather_high(canvas, size, pad, w, ref, dy, dx, factor, origin)
            assert got.shape == want.shape == (3, *shape)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


def test_without_numba_the_tensor_versions_give_the_same_output(monkeypatch):
    """Where numba cannot be imported, `match` and `gather_high` fall back to the tensor
    versions on the CPU too, with the same results."""
    import threpair.engines.attention as attention

    cfg = AttentionConfig()
    keys = _fields(6, 1, 32, seed=3)
    q_low = keys[2] * 0.9 + _fields(1, 1, 32, seed=4)[0] * 0.1
    keys_padded = F.pad(keys, (cfg.window + cfg.patch,) * 4, mode="replicate")
    chosen, rect = torch.arange(6), (4, 28, 3, 30)
    values = (torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 100).round()
    pad = cfg.factor * cfg.window + cfg.factor // 2
    canvas = value_canvas(values, pad).to(torch.int16)

    def run():
        dist, ref, dy, dx = match(q_low, keys_padded, chosen, cfg, rect)
        w = torch.softmax(-dist / cfg.temperature, 0)
        high = gather_high(canvas, 64, pad, w, ref, dy, dx, cfg.factor, (8, 6))
        return dist, ref, high

    with_numba = run()
    monkeypatch.setattr(attention, "_cpu_kernels", lambda: None)
    ran = []
    for name in ("_match_tensors", "_gather_tensors"):
        fn = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _fn=fn, _n=name: ran.append(_n) or _fn(*a))
    without = run()
    assert ran == ["_match_tensors", "_gather_tensors"]  # the tensor versions did the work
    torch.testing.assert_close(without[0], with_numba[0], rtol=1e-4, atol=1e-3)
    assert (without[1] == with_numba[1]).float().mean() > 0.99
    torch.testing.assert_close(without[2], with_numba[2], rtol=1e-4, atol=0.05)

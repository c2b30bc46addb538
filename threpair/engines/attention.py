"""Block-local multi-reference patch attention: the arithmetic of the reference engine.

Pure torch functions on float tensors in 0-255 (RGB, channels first), no state, so they run
the same on the CPU and on CUDA and can be tested on their own.

    q       (3, S, S)     the generated crop (query)
    keys    (N, 3, S, S)  the bank's real crops degraded the way the generator degrades
    values  (N, 3, S, S)  the bank's high band: real - degraded

Matching runs on a grid `factor` times coarser than the crop (queries and keys hold only
the generator's low band, which survives that), on patches of (2 * patch + 1)^2 grid cells,
searched within +-`window` cells around the same position (crops are aligned by the
tracker, so the same part of the face is near the same place) in every reference of the
bank (or the `refs` nearest to the crop). Each reference's best offset per grid cell is
kept; the `top_k` nearest references per cell get softmax weights (temperature in uint8
units of patch RMS distance); the output high band is gathered at full resolution from the
matched positions, each pixel blending the matches of its four nearest grid cells
(bilinear), so there are no block edges.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionConfig:
    """Knobs of the reference attention.

    factor: matching grid = crop / factor (1, 2 or 4). window: search radius in grid cells.
    patch: patch radius in grid cells. refs: references preselected per crop (by distance
    over the generator's box at zero offset; all of them when the bank holds no more).
    top_k: references kept per grid cell. temperature: softmax temperature
    on the patch RMS distance (uint8 units). color: match on RGB instead of luma.

    Defaults, measured on 25 crops of anchor_de_20s's last 25% degraded by `threpair
    degrade` at 96 px (448-px crops, 64-crop bank; crop level, face / mouth PSNR gain over
    the generator's box, then over the face ellipse that the frame-level scores use; the
    knob table in `bench/results/quality_knobs.md`): session 6's (factor 4, patch 2, top 6)
    +4.26 / +3.93, ellipse +3.26 / +3.77; factor 2 (2-px cells, +-2 px search; each
    2 x 2-px block takes its own references, where 4-px cells blend theirs over 8 px)
    +4.59 / +4.33, ellipse +3.65 / +4.16; with patch 3 (14 px) +4.67 / +4.32, ellipse
    +3.82 / +4.23. Top 4 instead of 6 at factor 2: within 0.02 dB, a third less gathering.
    Window 2 at factor 2 (+-4 px, the 4-px grid's reach), on whole restored frames of the
    held-out 25% (face / mouth PSNR vs window 1): anchor_de_20s +0.13 / +0.15, obama_20s
    +0.19 / +0.15, hill_8s +0.18 / +0.05, temporal error lower on all three; about 1.3x the
    matching time with the CPU kernel. Temperature 2 or 4.5: within 0.03. Searching every
    reference of the bank pays (at factor 4, 16: -0.4 dB, 32: -0.17);
    luma matches about as well as RGB at a third of the matching cost.
    """

    factor: int = 2
    window: int = 2
    patch: int = 3
    refs: int = 64
    top_k: int = 4
    temperature: float = 3.0
    color: bool = False

    @classmethod
    def for_grid(cls, px: int = 2, **kw) -> AttentionConfig:
        """The defaults for a matching grid of `px` pixels per cell (2 or 4; see above: the
        4-px grid with session 6's window, patch and top-k: faster, 0.2-0.4 dB softer), with
        `kw` overriding any field."""
        if px not in GRID_SETTINGS:
            raise ValueError(f"matching grid {px} px: use one of {sorted(GRID_SETTINGS)}")
        return cls(**{**GRID_SETTINGS[px], **kw})


# per matching grid (px per cell), the fields that differ from AttentionConfig's defaults
GRID_SETTINGS: dict[int, dict] = {2: {}, 4: {"factor": 4, "window": 1, "patch": 2, "top_k": 6}}


@dataclass
class AttentionResult:
    """The attended high band (3, S, S) and per-grid-cell best patch RMS distance (L, L)."""

    high: torch.Tensor
    best: torch.Tensor
    chosen: torch.Tensor  # (refs,) reference indices preselected for the crop


@functools.cache
def _cpu_kernels() -> ModuleType | None:
    """engines/attention_cpu.py (numba kernels of `match` and `gather_high` for the CPU), or
    None where numba is not installed (a GPU machine may lack it): then the tensor versions
    run, same results, slower."""
    try:
        from threpair.engines import attention_cpu
    except ImportError:
        return None
    return attention_cpu


def lowres(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Area downscale of (..., 3, S, S) by an integer factor."""
    if factor == 1:
        return x
    shape = x.shape
    y = F.avg_pool2d(x.reshape(-1, *shape[-3:]), factor)
    return y.reshape(*shape[:-2], *y.shape[-2:])


def luma(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, S, S) RGB -> (..., 1, S, S) luma (BT.601)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * w[:, None, None]).sum(-3, keepdim=True)


def in_chunks(fn, x: torch.Tensor, n: int = 16) -> torch.Tensor:
    """fn applied to float copies of `n` crops of x (N, ...) at a time, concatenated: a
    bank of uint8 crops is never held in float32 all at once."""
    return torch.cat([fn(x[i : i + n].float()) for i in range(0, len(x), n)])


def features(x: torch.Tensor, cfg: AttentionConfig) -> torch.Tensor:
    """Matching features of (..., 3, S, S) crops: RGB or luma (1 channel) on the coarse grid."""
    low = lowres(x, cfg.factor)
    return low if cfg.color else luma(low)


def preselect(
    q_low: torch.Tensor,
    keys_low: torch.Tensor,
    refs: int,
    rect: tuple[int, int, int, int],
    prev: torch.Tensor | None = None,
    keep_bonus: float = 0.0,
    exclude: tuple[int, ...] = (),
) -> torch.Tensor:
    """(R,) indices of the `refs` references nearest to the query over the grid cells of
    `rect` (y0, y1, x0, x1), at zero offset; all of them (but `exclude`) when the bank holds
    no more.

    `prev` (R,) from the previous frame: those references' distances are scaled by
    (1 - keep_bonus), so the set changes only when another reference is clearly nearer.
    `exclude`: references never chosen (leave-one-out statistics of the bank: a crop and
    its rescaled copies).
    """
    n_keys = keys_low.shape[0]
    if refs >= n_keys - len(exclude):  # every reference: nothing to choose
        keep = [i for i in range(n_keys) if i not in exclude][:refs]
        return torch.tensor(keep, device=q_low.device)
    y0, y1, x0, x1 = rect
    d = (keys_low[..., y0:y1, x0:x1] - q_low[None, :, y0:y1, x0:x1]).square().mean((1, 2, 3))
    if exclude:
        d[list(exclude)] = float("inf")
    if prev is not None and keep_bonus > 0:
        d = d.scatter(0, prev, d[prev] * (1 - keep_bonus))
    return d.topk(min(refs, n_keys), largest=False).indices


def _window_sum(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Sums of 2r + 1 consecutive entries along `dim`, valid part only, by doubling: partial
    sums of 1, 2, 4, ... entries combined (3 adds for r = 2 instead of 4)."""
    k, n = 2 * r + 1, x.shape[dim] - 2 * r
    parts, width, out, start = {1: x}, 1, None, 0
    while 2 * width <= k:
        a = parts[width]
        parts[2 * width] = a.narrow(dim, 0, a.shape[dim] - width) + a.narrow(
            dim, width, a.shape[dim] - width
        )
        width *= 2
    for w in sorted(parts, reverse=True):  # k as a sum of powers of two, largest first
        if k - start >= w:
            piece = parts[w].narrow(dim, start, n)
            out = piece if out is None else out + piece
            start += w
    assert out is not None
    return out


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum over (2r + 1)^2 windows of the last two dims, valid part only (shifted adds:
    much faster than avg_pool2d on many small maps)."""
    return _window_sum(_window_sum(x, r, x.dim() - 2), r, x.dim() - 1)


def match(
    q_low: torch.Tensor,
    keys_padded: torch.Tensor,
    chosen: torch.Tensor,
    cfg: AttentionConfig,
    rect: tuple[int, int, int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The `top_k` nearest references per grid cell of `rect` (y0, y1, x0, x1), each at its
    own best offset within +-window cells.

    keys_padded: (N, C, L + 2h, L + 2h) key features with edges replicated over h = window +
    patch cells (`KeyBank`); chosen: (R,) from `preselect`. Returns (dist, ref, dy, dx), each
    (k, H, W) over the rectangle: patch RMS distances (nearest first), reference index and
    offset in cells. A reference counts once per cell, at its best offset: neighbouring
    offsets of one reference are near copies of each other, and blending copies shifted by
    a cell blurs what they hold.
    """
    qp = F.pad(q_low[None], (cfg.patch,) * 4, mode="replicate")[0]
    w, p = cfg.window, cfg.patch
    y0, y1, x0, x1 = rect
    q = qp[:, y0 : y1 + 2 * p, x0 : x1 + 2 * p]
    span = 2 * w + 1
    kernels = _cpu_kernels() if q.device.type == "cpu" else None
    if kernels is not None:  # one fused kernel, in cache-sized bands
        dist, sel, off = kernels.match_bands(q, keys_padded, chosen, (y0, x0), w, p, cfg.top_k)
    else:
        dist, sel, off = _match_tensors(q, keys_padded, chosen, (y0, x0), w, p, cfg.top_k)
    scale = 1.0 / (q.shape[0] * (2 * p + 1) ** 2)
    dist = dist.mul_(scale).clamp_min_(0).sqrt_()
    return dist, chosen[sel], off // span - w, off % span - w


def _match_tensors(
    q: torch.Tensor,
    keys_padded: torch.Tensor,
    chosen: torch.Tensor,
    origin: tuple[int, int],
    window: int,
    patch: int,
    top_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`attention_cpu.match_bands` as tensor operations (for CUDA): q (C, H + 2 patch, W + 2
    patch) against keys_padded from `origin` on; (squared patch distances, positions in
    `chosen`, offset numbers), each (k, H, W)."""
    keys = keys_padded if len(chosen) == len(keys_padded) else keys_padded[chosen]
    span, (y0, x0) = 2 * window + 1, origin
    h, wd = q.shape[-2:]
    best = idx = None
    for o in range(span * span):  # one offset at a time over every reference: a running min
        dy, dx = divmod(o, span)
        d = (keys[..., y0 + dy : y0 + dy + h, x0 + dx : x0 + dx + wd] - q).square_()
        d = _box(d[:, 0] if d.shape[1] == 1 else d.sum(1), patch)  # (R, H, W)
        if best is None or idx is None:
            best, idx = d, torch.zeros(d.shape, dtype=torch.uint8, device=d.device)
        else:
            idx.masked_fill_(d < best, o)
            best = torch.minimum(best, d)
    assert best is not None and idx is not None
    dist, sel = best.topk(min(top_k, best.shape[0]), dim=0, largest=False)  # (k, H, W)
    return dist, sel, idx.gather(0, sel).long()


def tent(factor: int) -> tuple[int, torch.Tensor]:
    """(K, weights (K,)): the K pixels that grid cell i's bilinear weight reaches, from
    pixel factor * i - factor // 2 on, and its weight on each (1 at the cell's centre, 0 a
    cell away)."""
    k = 2 * factor - factor % 2
    j = torch.arange(k, dtype=torch.float32)
    return k, 1 - (j - factor // 2 - (factor - 1) / 2).abs() / factor


def value_canvas(values: torch.Tensor, pad: int) -> torch.Tensor:
    """(N, 3, S, S) high band -> (N, S + 2 pad, S + 2 pad, 3), zero-padded so that every
    block `gather_high` reads stays inside its reference (written in place: one canvas,
    no padded copy on the way)."""
    n, c, h, w = values.shape
    canvas = values.new_zeros(n, h + 2 * pad, w + 2 * pad, c)
    canvas[:, pad : pad + h, pad : pad + w] = values.permute(0, 2, 3, 1)
    return canvas


def gather_high(
    canvas: torch.Tensor,
    size: int,
    pad: int,
    weights: torch.Tensor,
    ref: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    factor: int,
    origin: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Blend the matched values at full resolution: (3, H, W) for the pixels of the grid
    cells given, whose first cell starts at pixel `origin` (y, x) of the S x S crop.

    canvas: `value_canvas(values, pad)` with pad >= factor * window + factor // 2. weights,
    ref, dy, dx: (k, Hc, Wc) per grid cell. Each pixel takes the matches of its nearest grid
    cells, bilinearly weighted (the tent), each at the pixel's own position shifted by
    factor * (dy, dx). At the edges of the cell rectangle the weights are renormalised, so
    the edge cells reach its border.
    """
    _, hc, wc = weights.shape
    shape = (min(hc * factor, size - origin[0]), min(wc * factor, size - origin[1]))
    kernels = _cpu_kernels() if weights.device.type == "cpu" else None
    if kernels is not None:  # per output pixel, in one fused kernel
        t = tent(factor)[1]
        return kernels.gather_rows(canvas, weights, ref, dy, dx, factor, pad, origin, shape, t)
    return _gather_tensors(canvas, pad, weights, ref, dy, dx, factor, origin, shape)


def _gather_tensors(
    canvas: torch.Tensor,
    pad: int,
    weights: torch.Tensor,
    ref: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    factor: int,
    origin: tuple[int, int],
    shape: tuple[int, int],
) -> torch.Tensor:
    """`gather_high` as tensor operations (for CUDA): per grid cell and match, the block of
    pixels its tent reaches is read at once (a strided view, one index per block), the
    matches are summed with their softmax weights, and the blocks overlap-added (`F.fold`)
    with the tent, then divided by the tents summed."""
    k, hc, wc = weights.shape
    f, dev = factor, weights.device
    _, sp, _, c = canvas.shape
    side, t = tent(f)
    ys = origin[0] - f // 2 + f * torch.arange(hc, device=dev)
    xs = origin[1] - f // 2 + f * torch.arange(wc, device=dev)
    top = ((ref * sp + ys[:, None] + f * dy + pad) * sp + xs[None, :] + f * dx + pad) * c
    flat = canvas.view(-1)
    blocks = flat.as_strided(
        (flat.numel() - ((side - 1) * (sp + 1) + 1) * c + 1, side, side, c), (1, sp * c, c, 1)
    )[top]  # (k, Hc, Wc, side, side, c)
    acc = blocks[0].to(weights.dtype) * weights[0, ..., None, None, None]
    for j in range(1, k):  # a loop of in-place multiply-adds beats einsum's copies
        acc.addcmul_(blocks[j].to(weights.dtype), weights[j, ..., None, None, None])
    t2 = (t[:, None] * t[None, :]).to(dev)
    cols = (acc * t2[:, :, None]).permute(4, 2, 3, 0, 1).reshape(1, c * side * side, hc * wc)
    full = ((hc - 1) * f + side, (wc - 1) * f + side)
    out = F.fold(cols, full, side, stride=f)
    norm = F.fold(t2.reshape(1, -1, 1).expand(1, -1, hc * wc), full, side, stride=f)
    o = f // 2
    return (out / norm)[0, :, o : o + shape[0], o : o + shape[1]]


@dataclass(frozen=True)
class KeyBank:
    """What `attend` searches, built once per crop size by `KeyBank.build` from keys and
    values (N, 3, S, S): the keys' matching features (N, C, L, L), the same with edges
    replicated over window + patch cells, and the values as a canvas (`value_canvas`)."""

    low: torch.Tensor
    padded: torch.Tensor
    canvas: torch.Tensor
    pad: int

    @classmethod
    def build(cls, keys: torch.Tensor, values: torch.Tensor, cfg: AttentionConfig) -> KeyBank:
        """keys (N, 3, S, S) in 0-255, any dtype (uint8 crops are made float a few at a
        time); values (N, 3, S, S) int16 (real - key of uint8 crops) or float."""
        low = in_chunks(lambda x: features(x, cfg), keys)
        padded = F.pad(low, (cfg.window + cfg.patch,) * 4, mode="replicate")
        pad = cfg.factor * cfg.window + cfg.factor // 2
        canvas = value_canvas(values, pad)
        # whole numbers (real - key of uint8 crops) are exact in int16, which halves the
        # memory the gather reads from
        whole = canvas.is_floating_point() and torch.equal(canvas, canvas.round())
        if whole and float(canvas.abs().max()) < 2**15:
            canvas = canvas.to(torch.int16)
        return cls(low, padded, canvas, pad)


def attend(
    q: torch.Tensor,
    bank: KeyBank,
    cfg: AttentionConfig,
    rect: tuple[int, int, int, int] | None = None,
    prev_chosen: torch.Tensor | None = None,
    keep_bonus: float = 0.0,
    exclude: tuple[int, ...] = (),
) -> AttentionResult:
    """The attended high band for one query crop (see the module docstring).

    `rect` (y0, y1, x0, x1): only the grid cells in this rectangle are attended (where the
    generator changed pixels; None: all); the high band is 0 elsewhere and `best` is +inf
    there.
    """
    q_low = features(q, cfg)
    n = q_low.shape[-1]
    rect = rect or (0, n, 0, n)
    refs = min(cfg.refs, len(bank.low) - len(exclude))
    chosen = preselect(q_low, bank.low, refs, rect, prev_chosen, keep_bonus, exclude)
    dist, ref, dy, dx = match(q_low, bank.padded, chosen, cfg, rect)
    weights = torch.softmax(-dist / cfg.temperature, dim=0)
    y0, y1, x0, x1 = rect
    origin = (y0 * cfg.factor, x0 * cfg.factor)
    part = gather_high(bank.canvas, q.shape[-1], bank.pad, weights, ref, dy, dx, cfg.factor, origin)
    high = torch.zeros_like(q)
    high[:, origin[0] : origin[0] + part.shape[1], origin[1] : origin[1] + part.shape[2]] = part
    best = torch.full(q_low.shape[-2:], float("inf"), device=q.device, dtype=dist.dtype)
    best[y0:y1, x0:x1] = dist[0]
    return AttentionResult(high=high, best=best, chosen=chosen)

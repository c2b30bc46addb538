"""The reference attention's two hot loops as fused CPU kernels (numba): the matching and the
gather.

Matching.
`attention.match` written as tensor operations is bound by memory on a CPU: for every
offset it writes and reads back maps of (references x grid cells) several times (the
squared differences, the window sums, the running minimum), about 250 ms per 448-px crop
on 2 cores. Here the same arithmetic runs in bands of grid rows that stay in the core's
cache: per band, reference and offset, the squared differences, their window sums over the
patch (columns, then rows) and the running minimum over the offsets, then the reference's
best distance enters the band's top-k; nothing of size (references x cells) is written.
Same results as the tensor version (float32 sums in another order: distances agree to
float rounding), several times faster; the tensor version stays for CUDA.

Gather. Per output pixel, the matches of the (at most 2 x 2) grid cells whose bilinear tent
reaches it, read straight from the value canvas: no blocks, no fold.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import torch

BAND = 16  # grid rows per band: a band's buffers stay in a core's L2 cache
# numba's fallback thread pool (`workqueue`, where no OpenMP or TBB is found) aborts when two
# threads run parallel code at once (a batch with several workers): one kernel at a time
_ONE_AT_A_TIME = threading.Lock()


def _use_torch_threads() -> None:
    """Run the kernels on as many threads as torch uses (`--threads`), where numba has them."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


@numba.njit(fastmath=True, cache=True, nogil=True, inline="always")
def _window_sums(col, p2, p4, n_cell, row):  # pragma: no cover
    """row[j] = col[j] + ... + col[j + n_cell - 1], by doubling: sums of pairs, then of
    quads, then a quad, pair or single per remaining stretch (7 cells: 3 adds per position,
    not 6). p2, p4: scratch of len(col)."""
    cols, wd = row.shape[0], col.shape[0]
    for jj in range(wd - 1):
        p2[jj] = col[jj] + col[jj + 1]
    if n_cell >= 4:  # quads only where a window holds one
        for jj in range(wd - 3):
            p4[jj] = p2[jj] + p2[jj + 2]
    off, rem = 0, n_cell
    for jj in range(cols):
        row[jj] = 0.0
    while rem >= 4:
        for jj in range(cols):
            row[jj] += p4[jj + off]
        off += 4
        rem -= 4
    if rem >= 2:
        for jj in range(cols):
            row[jj] += p2[jj + off]
        off += 2
        rem -= 2
    if rem == 1:
        for jj in range(cols):
            row[jj] += col[jj + off]


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _match_bands(q, keys, chosen, y0, x0, window, patch, top_k, dist, ref, off):  # pragma: no cover
    """q (C, H + 2p, W + 2p): the query over the rectangle with a patch margin. keys (N, C,
    L + 2h, L + 2h): the padded key features; the rectangle starts at (y0, x0) of them.
    Writes dist (k, H, W) squared patch distances (nearest first), ref (k, H, W) positions
    in `chosen`, off (k, H, W) offset numbers (dy * span + dx)."""
    n_ch, h, wd = q.shape
    n_cell = 2 * patch + 1
    span = 2 * window + 1
    rows, cols = h - 2 * patch, wd - 2 * patch
    n_band = (rows + BAND - 1) // BAND
    for b in numba.prange(n_band):
        i0 = b * BAND
        hb = min(BAND, rows - i0)
        sq = np.empty((hb + 2 * patch, wd), np.float32)
        col = np.empty(wd, np.float32)
        p2 = np.zeros(wd, np.float32)
        p4 = np.zeros(wd, np.float32)
        row = np.empty(cols, np.float32)
        best = np.empty((hb, cols), np.float32)
        best_o = np.empty((hb, cols), np.int32)
        td = np.full((top_k, hb, cols), np.inf, np.float32)
        tr = np.zeros((top_k, hb, cols), np.int32)
        to = np.zeros((top_k, hb, cols), np.int32)
        for r in range(chosen.shape[0]):
            kr = chosen[r]
            for o in range(span * span):
                dy = o // span
                dx = o - dy * span
                for ii in range(hb + 2 * patch):  # squared differences, channels summed
                    out = sq[ii]
                    for c in range(n_ch):
                        krow = keys[kr, c, y0 + i0 + ii + dy, x0 + dx : x0 + dx + wd]
                        qrow = q[c, i0 + ii]
                        if c == 0:
                            for jj in range(wd):
                                t = krow[jj] - qrow[jj]
                                out[jj] = t * t
                        else:
                            for jj in range(wd):
                                t = krow[jj] - qrow[jj]
                                out[jj] += t * t
                for jj in range(wd):  # window sums down the columns, running over the band
                    col[jj] = sq[0, jj]
                for u in range(1, n_cell - 1):
                    for jj in range(wd):
                        col[jj] += sq[u, jj]
                for ii in range(hb):
                    s_in = sq[ii + n_cell - 1]
                    if ii > 0:
                        s_out = sq[ii - 1]
                        for jj in range(wd):
                            col[jj] += s_in[jj] - s_out[jj]
                    else:
                        for jj in range(wd):
                            col[jj] += s_in[jj]
                    _window_sums(col, p2, p4, n_cell, row)  # then along the rows
                    b_row = best[ii]
                    o_row = best_o[ii]
                    if o == 0:
                        for jj in range(cols):
                            b_row[jj] = row[jj]
                            o_row[jj] = 0
                    else:  # the running minimum over the offsets
                        for jj in range(cols):
                            nearer = row[jj] < b_row[jj]
                            b_row[jj] = row[jj] if nearer else b_row[jj]
                            o_row[jj] = o if nearer else o_row[jj]
            for ii in range(hb):  # this reference's best offset joins the top-k per cell
                for jj in range(cols):
                    s = best[ii, jj]
                    if s < td[top_k - 1, ii, jj]:
                        m = top_k - 1
                        while m > 0 and td[m - 1, ii, jj] > s:
                            td[m, ii, jj] = td[m - 1, ii, jj]
                            tr[m, ii, jj] = tr[m - 1, ii, jj]
                            to[m, ii, jj] = to[m - 1, ii, jj]
                            m -= 1
                        td[m, ii, jj] = s
                        tr[m, ii, jj] = r
                        to[m, ii, jj] = best_o[ii, jj]
        dist[:, i0 : i0 + hb] = td
        ref[:, i0 : i0 + hb] = tr
        off[:, i0 : i0 + hb] = to


def match_bands(
    q_region: torch.Tensor,
    keys_padded: torch.Tensor,
    chosen: torch.Tensor,
    origin: tuple[int, int],
    window: int,
    patch: int,
    top_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(squared patch distances, positions in `chosen`, offset numbers), each (k, H, W), for
    the query region q_region (C, H + 2 patch, W + 2 patch) against keys_padded (N, C, ...)
    from `origin` (y0, x0) on: the CPU twin of the loops in `attention.match`."""
    q = np.ascontiguousarray(q_region.detach().float().numpy())
    keys = keys_padded.detach().float().numpy()
    if not keys.flags.c_contiguous:
        keys = np.ascontiguousarray(keys)
    sel = chosen.detach().numpy().astype(np.int64)
    k = min(top_k, len(sel))
    rows, cols = q.shape[1] - 2 * patch, q.shape[2] - 2 * patch
    dist = np.empty((k, rows, cols), np.float32)
    ref = np.empty((k, rows, cols), np.int32)
    off = np.empty((k, rows, cols), np.int32)
    with _ONE_AT_A_TIME:
        _use_torch_threads()
        _match_bands(q, keys, sel, origin[0], origin[1], window, patch, k, dist, ref, off)
    return torch.from_numpy(dist), torch.from_numpy(ref).long(), torch.from_numpy(off).long()


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _gather_rows(canvas, weights, ref, dy, dx, factor, pad, y0, x0, tent, out):  # pragma: no cover
    """out (C, h, w) for the crop pixels from (y0, x0) on: per pixel, over the grid cells whose
    tent reaches it (cell i's block starts at pixel y0 - factor // 2 + factor * i and is
    len(tent) pixels wide), sum tent weight x softmax weight x canvas value at the pixel
    shifted by factor x (dy, dx) of the match, then divide by the tent weights summed."""
    k, hc, wc = weights.shape
    n_ch, h, w = out.shape
    side = tent.shape[0]
    start = factor // 2
    for yy in numba.prange(h):
        acc = np.zeros((w, n_ch), np.float32)
        norm = np.zeros(w, np.float32)
        ly = yy + start  # the pixel in the cells' own coordinates (cell i from factor * i)
        i_lo = max(0, (ly - side + factor) // factor)
        i_hi = min(hc - 1, ly // factor)
        for i in range(i_lo, i_hi + 1):
            ty = tent[ly - factor * i]
            for xx in range(w):
                lx = xx + start
                j_lo = max(0, (lx - side + factor) // factor)
                j_hi = min(wc - 1, lx // factor)
                for j in range(j_lo, j_hi + 1):
                    t = ty * tent[lx - factor * j]
                    norm[xx] += t
                    for m in range(k):
                        wt = t * weights[m, i, j]
                        r = ref[m, i, j]
                        cy = y0 + yy + factor * dy[m, i, j] + pad
                        cx = x0 + xx + factor * dx[m, i, j] + pad
                        for c in range(n_ch):
                            acc[xx, c] += wt * canvas[r, cy, cx, c]
        for c in range(n_ch):
            for xx in range(w):
                out[c, yy, xx] = acc[xx, c] / norm[xx]


def gather_rows(
    canvas: torch.Tensor,
    weights: torch.Tensor,
    ref: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    factor: int,
    pad: int,
    origin: tuple[int, int],
    shape: tuple[int, int],
    tent: torch.Tensor,
) -> torch.Tensor:
    """(C, h, w) = `shape` blended high band from crop pixel `origin` on: the CPU twin of
    `attention.gather_high` (same arguments; canvas in float32 or int16)."""
    c = canvas.shape[-1]
    out = np.empty((c, *shape), np.float32)
    with _ONE_AT_A_TIME:
        _use_torch_threads()
        _gather_rows(
            canvas.numpy(), weights.float().numpy(), ref.numpy(), dy.numpy(), dx.numpy(),
            factor, pad, origin[0], origin[1], tent.float().numpy(), out,
        )  # fmt: skip
    return torch.from_numpy(out)

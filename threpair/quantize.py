"""Vector quantization for SOVQAE: 1-NN lookup, VQ loss, min-distance codebook regularizer.

Latent scale (why `delta` is a plain number): by default (`normalize=True`) both the encoder
output and the codebook entries are L2-normalised along the channel axis before any distance is
taken, so every latent vector and every code lies on the unit sphere of R^D. All distances here
(`delta`, `delta_min`, `eps`, the hysteresis `margin`, `QuantizeResult.distances`) are therefore
Euclidean chord distances on that sphere: 0 = identical, sqrt(2) ~ 1.41 = orthogonal, 2 =
opposite. This fixes the scale the paper leaves unstated and makes the robustness numbers
comparable across models and presets. (With `normalize=False` the scale is whatever the encoder
produces, and `delta` is absolute in those units.)

The theory this module serves: with delta_min the smallest distance between two codes, a latent
that stays within delta_min/2 of its clean code still snaps to that code, so the repair is exact.
`QuantizeResult.distances` gives, per position, the distance to the code used, so a caller can
compare it with `delta_min / 2` (a per-position and, aggregated, per-frame confidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizeResult:
    """Output of `VectorQuantizer.forward` / `SOVQAE.quantize`.

    Shapes: B = batch, D = code dim, h x w = latent grid.

    z_q:       (B, D, h, w), dtype of the input: the chosen codes, with straight-through gradient
               to `z` (forward value = code, backward = identity).
    z:         (B, D, h, w): the latent that was quantized (after L2 normalisation if enabled).
    indices:   (B, h, w) int64 code index per position; None for a plain autoencoder (use_vq=False).
    vq_loss:   () fp32: ||sg[z] - e||^2 + beta * ||z - sg[e]||^2 (means over elements).
    reg_loss:  () fp32: mean_i max(0, delta - min_{j != i} ||e_i - e_j||); not yet weighted.
    distances: (B, h, w) fp32: ||z - e_used|| per position (compare with delta_min / 2).
    gap:       (B, h, w) fp32: distance to the 2nd-nearest code minus distance to the nearest.
               Small gap = the position can flip between two codes (flicker risk).
    kept:      (B, h, w) bool: hysteresis kept the previous frame's code instead of the nearest.
    delta_min: () fp32: smallest distance between two codebook entries (detached).
    """

    z_q: Tensor
    z: Tensor
    indices: Tensor | None
    vq_loss: Tensor
    reg_loss: Tensor
    distances: Tensor | None
    gap: Tensor | None
    kept: Tensor | None
    delta_min: Tensor


def _pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """(N, D), (K, D) -> (N, K) squared Euclidean distances, in fp32 whatever autocast says.

    The matmul form is fast and fine for choosing the nearest code; exact distances of chosen
    pairs are recomputed by difference where precision matters (regularizer, reported distances).
    """
    a = a.float()
    b = b.float()
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.t())
    return d2.clamp_min_(0.0)


def _nearest_other(codebook: Tensor) -> Tensor:
    """(K, D) -> (K,) index of each entry's nearest *other* entry (no gradient)."""
    with torch.no_grad():
        d2 = _pairwise_sq_dists(codebook, codebook)
        d2.fill_diagonal_(float("inf"))
        return d2.argmin(1)


def codebook_min_distances(codebook: Tensor) -> Tensor:
    """(K, D) codebook -> (K,) fp32 distance of each entry to its nearest other entry.

    Differentiable with respect to both entries of each pair (computed as a difference, not via
    the matmul expansion, so close pairs keep full precision). Pass the *effective* codebook,
    i.e. `VectorQuantizer.embeddings()` (normalised when the quantizer normalises).
    """
    if codebook.shape[0] < 2:
        raise ValueError("a codebook needs at least 2 entries to have a minimal distance")
    with torch.autocast(device_type=codebook.device.type, enabled=False):
        e = codebook.float()
        nn_idx = _nearest_other(e)
        diff = e - e[nn_idx]
        # the epsilon keeps the gradient finite when two entries coincide (e.g. after a restart)
        return torch.sqrt((diff * diff).sum(1) + 1e-12)


def delta_min(codebook: Tensor) -> float:
    """Smallest distance between two entries of a (K, D) codebook, as a Python float."""
    return float(codebook_min_distances(codebook.detach()).min())


def min_distance_regularizer(codebook: Tensor, delta: float) -> Tensor:
    """The space-optimizing regularizer L_reg = mean_i max(0, delta - min_{j != i} ||e_i - e_j||).

    Only entries closer than `delta` to their nearest neighbour get a gradient, which pushes
    that pair apart. (The paper's ablation: regularizing the *average* pairwise distance instead
    collapses the codebook.)
    """
    return F.relu(delta - codebook_min_distances(codebook)).mean()


def codebook_usage(indices: Tensor, codebook_size: int) -> dict[str, float]:
    """Usage statistics of code indices (any shape): codes used, fraction used, perplexity.

    Perplexity = exp(entropy of the code histogram): codebook_size when all codes are used
    equally often, 1 when a single code is used.
    """
    counts = torch.bincount(indices.flatten().long(), minlength=codebook_size).double()
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {
        "codes_used": float(used),
        "usage_fraction": used / codebook_size,
        "perplexity": float(entropy.exp()),
    }


class VectorQuantizer(nn.Module):
    """Codebook of `codebook_size` x `code_dim` with 1-NN lookup and straight-through gradients.

    Training keeps the codebook alive with a dead-code restart: `update_usage` (called by the
    training loop after each optimizer step) counts assignments and re-seeds entries unused for
    `dead_after` steps from the current encoder outputs. Everything else is in `forward`.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        beta: float = 0.25,
        delta: float = 0.5,
        normalize: bool = True,
        dead_after: int = 100,
    ) -> None:
        super().__init__()
        if codebook_size < 2 or code_dim < 1:
            raise ValueError("codebook_size must be >= 2 and code_dim >= 1")
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.beta = beta
        self.delta = delta
        self.normalize = normalize
        self.dead_after = dead_after
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        if not normalize:
            # taming's init: small, so early latents are not far from every code
            nn.init.uniform_(self.codebook, -1.0 / codebook_size, 1.0 / codebook_size)
        # steps since each code was last chosen in training (a buffer, so resume is exact)
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))

    def embeddings(self) -> Tensor:
        """(K, D) effective codebook: rows L2-normalised when `normalize`, else the parameter."""
        if self.normalize:
            return F.normalize(self.codebook.float(), dim=1)
        return self.codebook

    def forward(
        self, z: Tensor, prev_indices: Tensor | None = None, margin: float = 0.0
    ) -> QuantizeResult:
        """Quantize z (B, D, h, w) to its nearest codes.

        Hysteresis (inference, against flicker): with `prev_indices`, a position keeps its
        previous code unless the nearest code is nearer than the previous one by more than
        `margin`, an *absolute* distance in latent units (see module docstring; a fraction of
        delta_min is a natural choice). margin=0 is plain 1-NN (up to exact ties).
        `prev_indices` is either (B, h, w): the previous code for each batch element
        independently, or (h, w) / (1, h, w) with B > 1: the code of the frame *before* batch
        element 0, and the batch is consecutive frames in time order, handled as a chain (each
        element uses the codes chosen for the element before it). For the next batch of a video
        pass `result.indices[-1]`.
        """
        if z.dim() != 4 or z.shape[1] != self.code_dim:
            raise ValueError(
                f"expected z of shape (B, {self.code_dim}, h, w), got {tuple(z.shape)}"
            )
        b, d, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            flat = zf.permute(0, 2, 3, 1).reshape(-1, d)
            codes = self.embeddings().float()
            d2 = _pairwise_sq_dists(flat.detach(), codes.detach())
            top2_d2, top2_idx = d2.topk(2, dim=1, largest=False)
            nearest = top2_idx[:, 0]
            gap = top2_d2[:, 1].sqrt() - top2_d2[:, 0].sqrt()
            if prev_indices is None:
                chosen = nearest
                kept = torch.zeros_like(nearest, dtype=torch.bool)
            else:
                chosen, kept = self._hysteresis(d2, nearest, prev_indices, margin, b, h * w)

            e = codes[chosen]  # (N, D), differentiable w.r.t. the codebook
            codebook_loss = F.mse_loss(e, flat.detach())
            commitment_loss = F.mse_loss(flat, e.detach())
            vq_loss = codebook_loss + self.beta * commitment_loss
            min_d = codebook_min_distances(codes)
            reg_loss = F.relu(self.delta - min_d).mean()
            with torch.no_grad():
                diff = flat - e
                distances = torch.sqrt((diff * diff).sum(1))

        e_map = e.view(b, h, w, d).permute(0, 3, 1, 2)
        # straight-through: forward uses the code, backward passes the gradient to z unchanged
        z_q = (zf + (e_map - zf).detach()).to(z.dtype)
        return QuantizeResult(
            z_q=z_q,
            z=z,
            indices=chosen.view(b, h, w),
            vq_loss=vq_loss,
            reg_loss=reg_loss,
            distances=distances.view(b, h, w),
            gap=gap.view(b, h, w),
            kept=kept.view(b, h, w),
            delta_min=min_d.detach().min(),
        )

    @staticmethod
    def _hysteresis(
        d2: Tensor, nearest: Tensor, prev: Tensor, margin: float, b: int, hw: int
    ) -> tuple[Tensor, Tensor]:
        if margin < 0:
            raise ValueError("margin must be >= 0")
        prev = prev.to(device=d2.device, dtype=torch.long)
        dist_all = d2.view(b, hw, -1)
        near = nearest.view(b, hw)

        def keep_or_switch(
            dists: Tensor, nearest_b: Tensor, prev_b: Tensor
        ) -> tuple[Tensor, Tensor]:
            d_prev = dists.gather(1, prev_b[:, None]).squeeze(1).sqrt()
            d_near = dists.gather(1, nearest_b[:, None]).squeeze(1).sqrt()
            switch = (d_prev - d_near) > margin
            return torch.where(switch, nearest_b, prev_b), ~switch & (nearest_b != prev_b)

        if prev.numel() == b * hw:  # one previous code map per batch element
            chosen, kept = keep_or_switch(d2, nearest, prev.reshape(-1))
            return chosen, kept
        if prev.numel() == hw:  # a chain of consecutive frames
            p = prev.reshape(hw)
            chosen_list, kept_list = [], []
            for i in range(b):
                c, k = keep_or_switch(dist_all[i], near[i], p)
                chosen_list.append(c)
                kept_list.append(k)
                p = c
            return torch.cat(chosen_list), torch.cat(kept_list)
        raise ValueError(
            f"prev_indices must have shape (B, h, w) or (h, w) matching the latent grid, "
            f"got {tuple(prev.shape)} for B={b}, h*w={hw}"
        )

    @torch.no_grad()
    def update_usage(
        self, indices: Tensor, z: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Count this step's assignments and restart dead codes; returns the restarted indices.

        A code unused (across all ranks) for `dead_after` consecutive steps is re-seeded from
        the current latents `z` (B, D, h, w), sampled with probability proportional to their
        squared distance to their code (k-means++ style: badly represented latents first).
        Deterministic given `generator` (or the global torch RNG). Under torch.distributed the
        counts are all-reduced and the new entries broadcast from rank 0, so every rank ends
        with the same codebook. Call it on every rank, after the optimizer step.
        """
        counts = torch.bincount(indices.flatten(), minlength=self.codebook_size)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
        self.unused_steps += 1
        self.unused_steps[counts > 0] = 0
        if self.dead_after <= 0:
            return indices.new_zeros(0)
        dead = (self.unused_steps >= self.dead_after).nonzero().flatten()
        if dead.numel() == 0:  # same on every rank, so no rank waits in the broadcast below
            return dead
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        if self.normalize:
            flat = F.normalize(flat, dim=1)
        d2 = _pairwise_sq_dists(flat, self.embeddings().detach()).min(1).values
        weights = d2 + 1e-6  # never all-zero
        pick = torch.multinomial(weights, dead.numel(), replacement=True, generator=generator)
        new = flat[pick]
        # tiny jitter so two restarts from the same latent do not coincide
        noise = torch.randn(new.shape, generator=generator, device=new.device, dtype=new.dtype)
        new = new + 1e-3 * noise
        if distributed:
            dist.broadcast(new, src=0)
        self.codebook.data[dead] = new.to(self.codebook.dtype)
        self.unused_steps[dead] = 0
        return dead

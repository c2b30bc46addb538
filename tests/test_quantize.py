"""VectorQuantizer: exact 1-NN, straight-through, losses, regularizer, hysteresis, restarts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from threpair.quantize import (
    VectorQuantizer,
    codebook_min_distances,
    codebook_usage,
    delta_min,
    min_distance_regularizer,
)


def brute_nearest(z: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, h, w), (K, D) -> nearest distances and indices by explicit differences (fp64)."""
    flat = z.double().permute(0, 2, 3, 1).reshape(-1, 1, z.shape[1])
    d = (flat - codes.double()[None]).norm(dim=2)
    return d.min(1).values, d.argmin(1)


@pytest.mark.parametrize("normalize", [True, False])
def test_nearest_neighbour_matches_brute_force(normalize: bool) -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, normalize=normalize)
    if not normalize:
        vq.codebook.data.normal_()
    z = torch.randn(3, 8, 5, 6)
    if normalize:
        z = F.normalize(z, dim=1)
    q = vq(z)
    assert q.indices is not None and q.distances is not None
    assert q.indices.shape == (3, 5, 6) and q.indices.dtype == torch.int64
    assert q.z_q.shape == z.shape and q.z_q.dtype == z.dtype
    dmin, idx = brute_nearest(z, vq.embeddings().detach())
    # same code, or (on a near-tie) one exactly as near
    chosen = (
        z.double().permute(0, 2, 3, 1).reshape(-1, 8)
        - vq.embeddings().double()[q.indices.flatten()]
    )
    torch.testing.assert_close(chosen.norm(dim=1), dmin, atol=1e-5, rtol=0)
    assert (q.indices.flatten() == idx).float().mean() > 0.99
    torch.testing.assert_close(q.distances.flatten().double(), dmin, atol=1e-5, rtol=0)
    # z_q holds the chosen codes
    codes = vq.embeddings()[q.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(q.z_q, codes)


def test_distances_are_fp32_under_autocast() -> None:
    torch.manual_seed(1)
    vq = VectorQuantizer(128, 16)
    z = F.normalize(torch.randn(2, 16, 4, 4), dim=1)
    ref = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = vq(z.bfloat16())
    assert q.distances is not None and q.distances.dtype == torch.float32
    assert q.vq_loss.dtype == torch.float32 and q.z_q.dtype == torch.bfloat16
    # bf16 input loses precision, but the lookup itself ran in fp32
    _, idx = brute_nearest(z.bfloat16().float(), vq.embeddings().detach())
    assert q.indices is not None and ref.indices is not None
    assert (q.indices.flatten() == idx).float().mean() > 0.98


def test_straight_through_gradient_and_vq_loss() -> None:
    torch.manual_seed(2)
    vq = VectorQuantizer(16, 4, beta=0.25, normalize=False)
    vq.codebook.data.normal_()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q = vq(z)
    up = torch.randn_like(z)
    (q.z_q * up).sum().backward()
    torch.testing.assert_close(z.grad, up)  # identity gradient through the snap
    e = vq.embeddings()[q.indices].permute(0, 3, 1, 2)
    expected = F.mse_loss(e, z) * 1.25  # (1 + beta) * ||z - e||^2 in value
    torch.testing.assert_close(q.vq_loss, expected.detach())


def test_codebook_min_distances_and_delta_min() -> None:
    torch.manual_seed(3)
    codes = torch.randn(20, 5)
    d = torch.cdist(codes.double(), codes.double())
    d.fill_diagonal_(float("inf"))
    torch.testing.assert_close(
        codebook_min_distances(codes).double(), d.min(1).values, atol=1e-5, rtol=0
    )
    assert delta_min(codes) == pytest.approx(float(d.min()), abs=1e-5)


def test_regularizer_pushes_the_closest_pair_apart() -> None:
    torch.manual_seed(4)
    codes = torch.eye(6) * 3.0  # well separated (distance 4.24)
    codes[1] = codes[0] + torch.tensor([0.05, 0.02, 0, 0, 0, 0])  # one pair far too close
    codes.requires_grad_(True)
    loss = min_distance_regularizer(codes, delta=1.0)
    loss.backward()
    assert codes.grad is not None
    far = [2, 3, 4, 5]
    assert codes.grad[far].abs().max() == 0  # entries already beyond delta are left alone
    before = float((codes[0] - codes[1]).detach().norm())
    with torch.no_grad():
        stepped = codes - 0.1 * codes.grad
    after = float((stepped[0] - stepped[1]).norm())
    assert after > before + 0.05
    # the mean over K: only entries 0 and 1 contribute
    assert float(loss.detach()) == pytest.approx(2 * (1.0 - before) / 6, rel=1e-4)


def test_regularizer_gradient_reaches_the_parameter_through_normalisation() -> None:
    torch.manual_seed(5)
    vq = VectorQuantizer(8, 4, delta=1.0)
    with torch.no_grad():
        vq.codebook[1] = vq.codebook[0] + 0.01

    def pair() -> float:
        e = vq.embeddings().detach()
        return float((e[0] - e[1]).norm())

    before = pair()
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        q = vq(F.normalize(torch.randn(1, 4, 2, 2), dim=1))
        q.reg_loss.backward()
        opt.step()
    assert pair() > before + 0.05
    assert delta_min(vq.embeddings()) > before


def test_hysteresis_margin_zero_is_plain_nn_and_large_margin_keeps_codes() -> None:
    torch.manual_seed(6)
    vq = VectorQuantizer(32, 8)
    z = F.normalize(torch.randn(4, 8, 3, 3), dim=1)
    plain = vq(z)
    prev = torch.randint(0, 32, (4, 3, 3))
    same = vq(z, prev_indices=prev, margin=0.0)
    assert torch.equal(same.indices, plain.indices)
    kept = vq(z, prev_indices=prev, margin=10.0)  # chord distances are <= 2
    assert kept.indices is not None and kept.kept is not None
    assert torch.equal(kept.indices, prev)
    assert torch.equal(kept.kept, prev != plain.indices)
    assert kept.distances is not None and plain.distances is not None
    assert (kept.distances >= plain.distances - 1e-6).all()


def test_hysteresis_rule_and_chain_mode() -> None:
    torch.manual_seed(7)
    vq = VectorQuantizer(32, 8)
    z = F.normalize(torch.randn(5, 8, 2, 2), dim=1)
    plain = vq(z)
    prev = torch.randint(0, 32, (5, 2, 2))
    margin = 0.2
    q = vq(z, prev_indices=prev, margin=margin)
    codes = vq.embeddings().detach()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    d_prev = (flat - codes[prev.flatten()]).norm(dim=1)
    d_near = plain.distances.flatten()
    expect = torch.where(d_prev - d_near > margin, plain.indices.flatten(), prev.flatten())
    assert torch.equal(q.indices.flatten(), expect)
    # chain: a (h, w) map = the frame before element 0; the batch is consecutive frames
    first = torch.randint(0, 32, (2, 2))
    chain = vq(z, prev_indices=first, margin=10.0)
    assert torch.equal(chain.indices, first.expand(5, 2, 2))
    chain0 = vq(z, prev_indices=first, margin=0.0)
    assert torch.equal(chain0.indices, plain.indices)
    step_by_step, p = [], first
    for i in range(5):
        r = vq(z[i : i + 1], prev_indices=p[None], margin=margin)
        step_by_step.append(r.indices)
        p = r.indices[0]
    assert torch.equal(vq(z, prev_indices=first, margin=margin).indices, torch.cat(step_by_step))
    with pytest.raises(ValueError):
        vq(z, prev_indices=torch.zeros(3, 3, dtype=torch.long))


def test_dead_code_restart_is_deterministic_and_reseeds_from_latents() -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.manual_seed(8)
        vq = VectorQuantizer(16, 4, dead_after=2)
        z = F.normalize(torch.randn(2, 4, 3, 3), dim=1)
        dead = torch.empty(0)
        for step in range(2):
            q = vq(z)
            gen = torch.Generator().manual_seed(100 + step)
            dead = vq.update_usage(q.indices, q.z, generator=gen)
        return dead, vq.codebook.detach().clone(), z

    dead_a, cb_a, z = run()
    dead_b, cb_b, _ = run()
    assert torch.equal(dead_a, dead_b) and torch.equal(cb_a, cb_b)
    assert dead_a.numel() > 0  # 18 positions cannot use all 16 random codes
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    # every restarted code is one of the latents (plus 1e-3 jitter)
    d = torch.cdist(F.normalize(cb_a[dead_a], dim=1), flat).min(1).values
    assert d.max() < 0.02


def test_codebook_usage() -> None:
    stats = codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert stats["codes_used"] == 2 and stats["usage_fraction"] == 0.5
    assert stats["perplexity"] == pytest.approx(2.0)

"""Global descriptors pooled from a convolutional feature map X (B, C, H, W).

Each returns (B, C) float32, not yet L2-normalized (the method normalizes, and
optionally PCA-whitens, afterwards).
"""

from __future__ import annotations

import math

import torch

EPS = 1e-6


def mac(x: torch.Tensor) -> torch.Tensor:
    """MAC: the maximum of each channel (Tolias et al., ICLR 2016, Eq. 1)."""
    return x.amax(dim=(2, 3))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """SPoC: the average of each channel (Babenko and Lempitsky, ICCV 2015, sum pooling;
    the paper's optional centering prior is not applied)."""
    return x.mean(dim=(2, 3))


def gem(x: torch.Tensor, p: float = 3.0) -> torch.Tensor:
    """GeM: (mean of x^p)^(1/p) per channel (Radenović et al., TPAMI 2019, Eq. 2);
    p = 1 is SPoC, p -> infinity is MAC. Activations are clamped at 1e-6 first, and
    computed as m (mean((x/m)^p))^(1/p) with m the channel maximum, so a large p cannot
    overflow."""
    x = x.clamp(min=EPS)
    m = x.amax(dim=(2, 3), keepdim=True)
    return (x / m).pow(p).mean(dim=(2, 3)).pow(1.0 / p) * m[:, :, 0, 0]


def rmac_regions(height: int, width: int, levels: int = 3,
                 overlap: float = 0.4) -> list[tuple[int, int, int, int]]:
    """R-MAC's square regions (Tolias et al., ICLR 2016, Sec. 3): at level l = 1..L,
    squares of side 2 min(H, W) / (l + 1) on a uniform grid whose consecutive regions
    overlap by about `overlap`; the larger side gets the extra regions that make the
    overlap closest to it. Returns (y, x, h, w) boxes on the feature map."""
    side = min(height, width)
    longer = max(height, width)
    # extra regions along the longer side (0..6) whose overlap is closest to `overlap`
    best, extra = math.inf, 0
    if longer > side:
        for steps in range(1, 7):
            b = (longer - side) / steps
            err = abs((side * side - side * b) / (side * side) - overlap)
            if err < best:
                best, extra = err, steps
    regions = []
    for level in range(1, levels + 1):
        size = max(1, int(2 * side / (level + 1)))
        n_h = level + (extra if height > width else 0)
        n_w = level + (extra if width > height else 0)

        def starts(n: int, length: int, size: int = size) -> list[int]:
            if n <= 1:
                return [max(0, (length - size) // 2)]
            step = (length - size) / (n - 1)
            return sorted({int(round(i * step)) for i in range(n)})

        for y in starts(n_h, height):
            for x in starts(n_w, width):
                regions.append((y, x, min(size, height - y), min(size, width - x)))
    return regions


def rmac(x: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """R-MAC (Tolias et al., ICLR 2016): the MAC of every region of `rmac_regions`,
    each L2-normalized, summed (the per-region PCA-whitening of the paper is not applied:
    the method's optional whitening acts on the final vector)."""
    _, _, h, w = x.shape
    total = torch.zeros(x.shape[:2], dtype=torch.float32, device=x.device)
    for y0, x0, rh, rw in rmac_regions(h, w, levels):
        r = x[:, :, y0:y0 + rh, x0:x0 + rw].amax(dim=(2, 3)).float()
        total += r / (r.norm(dim=1, keepdim=True) + EPS)
    return total


def crow(x: torch.Tensor, a: float = 2.0, b: float = 2.0) -> torch.Tensor:
    """CroW (Kalantidis et al., ECCV-W 2016): spatial weights S from the channel-summed
    map, S = (S' / ||S'||_a)^(1/b) (Eq. 2, a = b = 2), and channel weights from sparsity,
    Ω_k = log((ε + Σ_i Q_i) / (ε + Q_k)) with Q_k the share of non-zero activations of channel
    k (Eq. 3); the descriptor is Ω ⊙ Σ_{ij} S_ij X_ij."""
    x = x.float().clamp(min=0)
    s = x.sum(dim=1, keepdim=True)  # (B, 1, H, W)
    norm = s.pow(a).sum(dim=(2, 3), keepdim=True).pow(1.0 / a)
    s = (s / (norm + EPS)).pow(1.0 / b)
    agg = (x * s).sum(dim=(2, 3))  # (B, C)
    q = (x > 0).float().mean(dim=(2, 3))  # (B, C)
    omega = torch.log((EPS + q.sum(dim=1, keepdim=True)) / (EPS + q))
    return agg * omega


POOLINGS = ("fc7", "mac", "spoc", "gem", "rmac", "crow")

"""Partitioners: split one dataset's indices across sites.

Each returns a list of index arrays, one per site, that together cover every
sample exactly once. IID uses flwr-datasets' semantics (shuffle, near-equal
chunks); Dirichlet label skew follows Hsu et al. 2019 (per class, site shares
drawn from Dir(alpha); small alpha = strong skew); quantity skew draws site
sizes from Dir(alpha) with labels left IID.
"""

from __future__ import annotations

import numpy as np


def iid(num_samples: int, num_sites: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle and cut into ``num_sites`` near-equal parts."""
    _check(num_samples, num_sites)
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_sites)]


def dirichlet_label_skew(
    labels: np.ndarray, num_sites: int, alpha: float, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """Per class, split its samples across sites with proportions ~ Dir(alpha).

    Redraws (up to 100 times) until every site has ``min_size`` samples, as is
    common practice, so that no site ends up empty.
    """
    labels = np.asarray(labels).reshape(-1)
    _check(len(labels), num_sites)
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, found {alpha}")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_sites)]
        for cls in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for site, chunk in enumerate(np.split(members, cuts)):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"could not give every one of {num_sites} sites {min_size} samples with "
        f"alpha={alpha}; raise alpha or use fewer sites"
    )


def quantity_skew(
    num_samples: int, num_sites: int, alpha: float, seed: int = 0
) -> list[np.ndarray]:
    """Site sizes ~ Dir(alpha) (at least one sample each); labels stay IID."""
    _check(num_samples, num_sites)
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, found {alpha}")
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(num_sites, alpha))
    sizes = np.maximum(1, np.floor(shares * (num_samples - num_sites)).astype(int) + 1)
    sizes[np.argmax(sizes)] += num_samples - sizes.sum()
    order = rng.permutation(num_samples)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def partition(
    kind: str,
    labels: np.ndarray,
    num_sites: int,
    alpha: float = 0.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Dispatch by name: ``iid``, ``dirichlet`` or ``quantity``."""
    if kind == "iid":
        return iid(len(labels), num_sites, seed)
    if kind == "dirichlet":
        return dirichlet_label_skew(labels, num_sites, alpha, seed)
    if kind == "quantity":
        return quantity_skew(len(labels), num_sites, alpha, seed)
    raise ValueError(f"unknown partitioner {kind!r}; use iid, dirichlet or quantity")


def _check(num_samples: int, num_sites: int) -> None:
    if num_sites < 1:
        raise ValueError(f"need at least one site, found {num_sites}")
    if num_samples < num_sites:
        raise ValueError(f"{num_samples} samples cannot cover {num_sites} sites")

"""Spectral relevance analysis (SpRAy; Lapuschkin et al., "Unmasking Clever Hans predictors and assessing
what machines really learn", Nature Communications 2019): cluster a class's downsampled maps to find the
few *strategies* a model uses for it, one of which may be a shortcut.

Steps: the maps (N, G, G), each summing to 1, are rows of X; a symmetric k-nearest-neighbour graph
``A_ij = 1`` when j is among i's k nearest (Euclidean) or i among j's; the normalised Laplacian
``L = I - D^-1/2 A D^-1/2``; the number of clusters c is where its ascending eigenvalues jump most
(``argmax_c lambda_{c+1} - lambda_c``, the eigengap, c <= ``max_clusters``); k-means on the first c
eigenvectors (rows scaled to unit length). Large classes are clustered on a seeded sample of
``sample_size`` maps and the rest join the cluster whose mean map is nearest, so the work is bounded.

Example:
    >>> labels = spectral_clusters(grids)          # doctest: +SKIP
    >>> labels.bincount()
"""

from __future__ import annotations

import math

import torch

MAX_CLUSTERS = 8
SAMPLE_SIZE = 2000


def spectral_clusters(
    maps: torch.Tensor,
    max_clusters: int = MAX_CLUSTERS,
    neighbours: int | None = None,
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
) -> torch.Tensor:
    """Cluster labels (N,) 0..c-1 for N maps (N, ...), c chosen by the eigengap; clusters are numbered
    from the largest. Fewer than 4 maps are one cluster."""
    points = maps.flatten(1).double()
    count = points.shape[0]
    if count < 4:
        return torch.zeros(count, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.arange(count)
    if count > sample_size:
        sample = torch.randperm(count, generator=generator)[:sample_size].sort().values
    labels_sample = _cluster_sample(points[sample], max_clusters, neighbours, generator)
    labels = labels_sample
    if count > sample_size:
        centres = torch.stack([points[sample][labels_sample == c].mean(0) for c in range(int(labels_sample.max()) + 1)])
        labels = torch.cdist(points, centres).argmin(dim=1)
        labels[sample] = labels_sample
    return _by_size(labels)


def _cluster_sample(
    points: torch.Tensor, max_clusters: int, neighbours: int | None, generator: torch.Generator
) -> torch.Tensor:
    count = points.shape[0]
    k = neighbours or min(count - 1, max(3, round(math.log2(count) * 2)))
    distances = torch.cdist(points, points)
    distances.fill_diagonal_(float("inf"))
    nearest = distances.topk(k, largest=False).indices
    adjacency = torch.zeros(count, count, dtype=points.dtype)
    adjacency.scatter_(1, nearest, 1.0)
    adjacency = torch.maximum(adjacency, adjacency.T)
    inverse_root = adjacency.sum(dim=1).rsqrt()
    laplacian = torch.eye(count, dtype=points.dtype) - inverse_root[:, None] * adjacency * inverse_root[None, :]
    values, vectors = torch.linalg.eigh(laplacian)
    most = min(max_clusters, count - 1)
    gaps = values[1 : most + 1] - values[:most]
    clusters = int(gaps.argmax()) + 1
    if clusters == 1:
        return torch.zeros(count, dtype=torch.long)
    embedding = vectors[:, :clusters]
    embedding = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return kmeans(embedding, clusters, generator)


def kmeans(points: torch.Tensor, clusters: int, generator: torch.Generator, restarts: int = 8, steps: int = 100) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; the best of ``restarts`` runs by within-cluster sum of squares."""
    best_labels, best_cost = None, float("inf")
    for _ in range(restarts):
        centres = _plus_plus(points, clusters, generator)
        labels = torch.zeros(points.shape[0], dtype=torch.long)
        for _ in range(steps):
            labels_now = torch.cdist(points, centres).argmin(dim=1)
            if _ > 0 and torch.equal(labels_now, labels):
                break
            labels = labels_now
            for c in range(clusters):
                members = points[labels == c]
                if len(members):
                    centres[c] = members.mean(0)
        cost = float((points - centres[labels]).square().sum())
        if cost < best_cost:
            best_labels, best_cost = labels, cost
    assert best_labels is not None
    return best_labels


def _plus_plus(points: torch.Tensor, clusters: int, generator: torch.Generator) -> torch.Tensor:
    first = int(torch.randint(points.shape[0], (1,), generator=generator))
    centres = [points[first]]
    for _ in range(1, clusters):
        nearest = torch.cdist(points, torch.stack(centres)).min(dim=1).values.square()
        total = float(nearest.sum())
        if total <= 0:
            choice = int(torch.randint(points.shape[0], (1,), generator=generator))
        else:
            choice = int(torch.multinomial(nearest / total, 1, generator=generator))
        centres.append(points[choice])
    return torch.stack(centres).clone()


def _by_size(labels: torch.Tensor) -> torch.Tensor:
    """Renumber clusters from the largest (ties by first member), dropping empty numbers."""
    present = labels.unique()
    sizes = torch.stack([(labels == c).sum() for c in present])
    firsts = torch.stack([(labels == c).nonzero()[0, 0] for c in present])
    order = sorted(range(len(present)), key=lambda i: (-int(sizes[i]), int(firsts[i])))
    mapping = torch.empty(int(labels.max()) + 1, dtype=torch.long)
    for new, old in enumerate(order):
        mapping[present[old]] = new
    return mapping[labels]

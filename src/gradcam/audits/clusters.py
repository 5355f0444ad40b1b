"""Spectral relevance analysis (SpRAy; Lapuschkin et al., "Unmasking Clever Hans predictors and assessing
what machines really learn", Nature Communications 2019): cluster a class's downsampled maps to find the
few *strategies* a model uses for it, one of which may be a shortcut.

Steps: the maps (N, G, G), each summing to 1, are rows of X; the self-tuning affinity (Zelnik-Manor and
Perona 2004) ``A_ij = exp(-d_ij^2 / (s_i s_j))``, ``s_i`` the distance from map i to its 7th nearest; the
normalised Laplacian ``L = I - D^-1/2 A D^-1/2``; the number of clusters c is where its ascending
eigenvalues jump most (``argmax_c lambda_{c+1} - lambda_c``, the eigengap, c <= ``max_clusters``), or 1
where the maps form one well-connected group or no jump stands out (:func:`number_of_clusters`); k-means
on the first c eigenvectors (rows scaled to unit length). Large classes are clustered on a seeded sample of
``sample_size`` maps and the rest join the cluster whose mean map is nearest, so the work is bounded.

Example:
    >>> labels = spectral_clusters(grids)          # doctest: +SKIP
    >>> labels.bincount()
"""

from __future__ import annotations

import torch

MAX_CLUSTERS = 8
SAMPLE_SIZE = 2000
LOCAL_SCALE_NEIGHBOUR = 7  # self-tuning affinity: each map's scale is its distance to its 7th nearest
CONNECTED = 0.1  # lambda_2 at or above this: one well-connected group, one cluster
GAP_CONTRAST = 2.0


def spectral_clusters(
    maps: torch.Tensor,
    max_clusters: int = MAX_CLUSTERS,
    neighbours: int | None = None,
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
) -> torch.Tensor:
    """Cluster labels (N,) 0..c-1 for N maps (N, ...), c chosen by the eigengap; clusters are numbered
    from the largest. Fewer than 4 maps are one cluster."""
    points = maps.flatten(1).float()
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
    values, vectors = _spectrum(points, neighbours or LOCAL_SCALE_NEIGHBOUR)
    clusters = number_of_clusters(values, max_clusters)
    if clusters == 1:
        return torch.zeros(count, dtype=torch.long)
    embedding = vectors[:, :clusters]
    embedding = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return kmeans(embedding, clusters, generator)


def _spectrum(points: torch.Tensor, neighbour: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the normalised Laplacian of the self-tuning affinity,
    built in place in one N x N matrix (2,000 maps: 16 MB in float32)."""
    count = points.shape[0]
    matrix = torch.cdist(points, points)
    scale = matrix.kthvalue(min(neighbour, count - 1) + 1, dim=1).values.clamp_min(1e-12)  # the 1st is itself
    matrix.square_().div_(scale[:, None]).div_(scale[None, :]).neg_().exp_()  # the affinity
    matrix.fill_diagonal_(0)
    inverse_root = matrix.sum(dim=1).clamp_min(1e-12).rsqrt()
    matrix.mul_(inverse_root[:, None]).mul_(inverse_root[None, :]).neg_()
    matrix.diagonal().add_(1)  # the Laplacian I - D^-1/2 A D^-1/2
    return torch.linalg.eigh(matrix)


def number_of_clusters(values: torch.Tensor, max_clusters: int = MAX_CLUSTERS) -> int:
    """The eigengap's choice from the Laplacian's ascending eigenvalues, or 1 where the graph is one
    well-connected piece (``lambda_2 >= CONNECTED``) or no gap stands out (the largest of the first
    ``max_clusters`` gaps under ``GAP_CONTRAST`` times their median)."""
    most = min(max_clusters, len(values) - 1)
    if most < 2 or float(values[1]) >= CONNECTED:
        return 1
    gaps = values[1 : most + 1] - values[:most]
    if float(gaps.max()) < GAP_CONTRAST * float(gaps.median()):
        return 1
    return int(gaps.argmax()) + 1


def kmeans(
    points: torch.Tensor, clusters: int, generator: torch.Generator, restarts: int = 8, steps: int = 100
) -> torch.Tensor:
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

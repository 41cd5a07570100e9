"""Community detection over caption embeddings (Algorithm 1, line 5).

Semantics of ``sentence_transformers.util.community_detection`` **v2.2.0**, the version the
reference pins (REFERENCE.md W§7 item 7):

* ``C = cos(E, E)``; item ``i`` seeds a community when its ``min_size``-th largest similarity
  (itself included) is ``>= threshold``;
* the community of seed ``i`` is ``{j : C[i, j] >= threshold}``;
* communities are sorted by size, largest first (ties keep seed order: Python's sort is stable);
* a community is accepted only if **none** of its members is already taken, otherwise it is dropped
  whole (newer sentence-transformers trim the taken members instead — not done here).

The representative phrase of a community is the member nearest (by dot product) to the
L2-normalised mean of the members' normalised embeddings (REFERENCE.md W§7 item 8).
"""
from __future__ import annotations

import torch

from wwbl.defaults import CLUSTER_THRESHOLD, MIN_CLUSTER_SIZE


def _normalise(embeddings: torch.Tensor) -> torch.Tensor:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be N×D, got shape {tuple(embeddings.shape)}")
    return torch.nn.functional.normalize(embeddings.float(), dim=-1)


def community_detection(embeddings: torch.Tensor, threshold: float = CLUSTER_THRESHOLD,
                        min_community_size: int = MIN_CLUSTER_SIZE) -> list[list[int]]:
    """Communities (lists of row indices, ascending) of ``embeddings`` (``N×D``), largest first."""
    if min_community_size < 1:
        raise ValueError("min_community_size must be at least 1")
    count = embeddings.shape[0]
    if count < min_community_size:
        return []
    unit = _normalise(embeddings)
    similarity = unit @ unit.T
    kth_best = similarity.topk(min_community_size, dim=1).values[:, -1]
    members = similarity[kth_best >= threshold] >= threshold  # one row per seed, in seed order
    order = torch.sort(members.sum(dim=1), descending=True, stable=True).indices
    taken = torch.zeros(count, dtype=torch.bool, device=members.device)
    accepted: list[list[int]] = []
    for row in members[order]:  # sequential by nature: acceptance depends on earlier choices
        if not (row & taken).any():
            taken |= row
            accepted.append(row.nonzero().flatten().tolist())
    return accepted


def representatives(embeddings: torch.Tensor, communities: list[list[int]]) -> list[int]:
    """Per community, the index of the member nearest to the normalised mean of its members."""
    if not communities:
        return []
    unit = _normalise(embeddings)
    membership = torch.zeros(len(communities), unit.shape[0], device=unit.device)
    for k, community in enumerate(communities):
        membership[k, community] = 1.0
    means = torch.nn.functional.normalize(membership @ unit, dim=-1)
    scores = (means @ unit.T).masked_fill(membership == 0, float("-inf"))
    return scores.argmax(dim=1).tolist()

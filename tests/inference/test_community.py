"""Community detection with sentence-transformers 2.2.0 semantics, on hand-placed unit vectors.

Vectors lie on a circle, so cos = cos(angle difference); cos >= 0.85 iff the difference is <= 31.79°.
"""
import math

import pytest
import torch

from wwbl.inference.community import community_detection, representatives


def on_circle(*degrees):
    radians = torch.tensor([math.radians(d) for d in degrees])
    return torch.stack([radians.cos(), radians.sin()], dim=1) * 3.0  # not unit length on purpose


# a=0°, b=10°, p=30°, q=55°, r=58°, s=62°, t=66°. Neighbourhoods (>= 0.85):
#   a {a,b,p}  b {a,b,p}  p {a,b,p,q,r}  q {p,q,r,s,t}  r {p,q,r,s,t}  s {q,r,s,t}  t {q,r,s,t}
# Sorted by size (stable): p, q, r (5), s, t (4), a, b (3). p is accepted; every other community
# overlaps it and is dropped whole. (Newer sentence-transformers would trim s's community to {s, t}
# and keep it.)
ANGLES = (0, 10, 30, 55, 58, 62, 66)


def test_overlapping_communities_are_dropped_whole():
    assert community_detection(on_circle(*ANGLES), 0.85, 2) == [[0, 1, 2, 3, 4]]


def test_ties_in_size_keep_seed_order():
    # Same points, q listed first: q's community {p,q,r,s,t} now wins the tie and a, b stay alone.
    order = (55, 0, 10, 30, 58, 62, 66)   # indices: q=0, a=1, b=2, p=3, r=4, s=5, t=6
    assert community_detection(on_circle(*order), 0.85, 2) == [[0, 3, 4, 5, 6]]


def test_disjoint_clusters_and_minimum_size():
    emb = on_circle(0, 5, 10, 120, 125, 240)
    assert community_detection(emb, 0.85, 2) == [[0, 1, 2], [3, 4]]
    assert community_detection(emb, 0.85, 3) == [[0, 1, 2]]
    assert community_detection(emb, 0.85, 1) == [[0, 1, 2], [3, 4], [5]]


def test_too_few_items_or_none_similar():
    assert community_detection(on_circle(0), 0.85, 2) == []
    assert community_detection(on_circle(0, 90, 180), 0.85, 2) == []


def test_representative_is_the_member_nearest_the_mean():
    # Cluster {0°, 10°, 30°, 55°, 58°}: mean direction atan2(2.341, 3.954) ≈ 30.6° -> the 30° member.
    emb = on_circle(*ANGLES)
    assert representatives(emb, [[0, 1, 2, 3, 4]]) == [2]
    assert representatives(on_circle(-10, 0, 10, 100), [[0, 1, 2], [3]]) == [1, 3]
    assert representatives(emb, []) == []


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        community_detection(torch.zeros(3), 0.85, 2)

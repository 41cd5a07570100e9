"""Naive reference computations shared by several extractor test modules."""
from __future__ import annotations

import itertools
import math

import torch


def patch_tokens(vit, images, stride, padding):
    return vit.tokens_in(images, stride, padding), vit.grid_of(images, stride, padding)


def brute_force_box(heatmap: torch.Tensor, lam: float, strict: bool = False):
    """Every inclusive box by explicit loops and slicing."""
    height, width = heatmap.shape
    total = float(heatmap.sum())
    best, best_box = -math.inf, None
    for y1, y2, x1, x2 in itertools.product(range(height), range(height), range(width), range(width)):
        if (y1 >= y2 or x1 >= x2) if strict else (y1 > y2 or x1 > x2):
            continue
        value = float(heatmap[y1 : y2 + 1, x1 : x2 + 1].sum()) / total - lam * (y2 - y1 + 1) * (x2 - x1 + 1) / (
            height * width
        )
        if value > best:
            best, best_box = value, (x1, y1, x2, y2)
    return best_box, best


def naive_region_embedding(vit, tokens, region_cells, start_block=0):
    """One region at a time: the full sequence [class, patches, region] through every block with a
    boolean mask (True = blocked): ordinary tokens never see the region token, which sees its cells
    and itself only."""
    length = tokens.shape[1]
    blocked = torch.zeros(length + 1, length + 1, dtype=torch.bool)
    blocked[:length, length] = True
    blocked[length, :length] = True
    for cell in region_cells:
        blocked[length, 1 + cell] = False
    x = vit.run_blocks(tokens, 0, start_block) if start_block else tokens
    sequence = torch.cat([x, x[:, :1]], dim=1)
    for i in range(start_block, vit.num_layers):
        sequence, _ = vit.block_forward(i, sequence, blocked)
    return vit.project(sequence[:, -1])

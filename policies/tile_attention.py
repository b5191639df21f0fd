"""Tile-sparse attention for packed episodes on CPU (and any device without FlexAttention).

A packed MEM1 episode has a block mask: each turn's tokens see the prompt, the previous
turn's copy and observation, and themselves. SDPA with the dense (L, L) mask computes every
query-key pair and discards the masked ones, so its cost grows with the square of the packed
length and eats the gain of packing (experiments/bench/learner). FlexAttention skips masked
tiles, but on CPU torch runs it forward only (no backward), so it cannot train there. This does the same with plain SDPA calls: the
queries are cut into tiles, each tile attends only to the key tiles its mask touches
(gathered), with the matching slice of the mask. Same numbers as dense SDPA (tested), work
proportional to the unmasked tiles.

Hand-written because no kept library offers block-sparse attention for an arbitrary boolean
mask on CPU without compilation. It is a transformers attention function (registered as
"mem1_tiles"), so the model code is untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

NAME = "mem1_tiles"
TILE = 64  # query/key tile: small enough to follow turn boundaries, large enough for SDPA


@dataclass(frozen=True)
class QueryTile:
    start: int
    stop: int
    keys: torch.Tensor  # (K,) key positions this tile attends to (whole key tiles)
    mask: torch.Tensor  # (1, 1, stop - start, K) bool, True = attend


def tile_plan(mask: torch.Tensor, tile: int | None = None) -> list[list[QueryTile]]:
    """Per row of a (B, 1, L, L) bool mask: the query tiles and the key tiles each one needs.
    Computed once per forward pass and shared by every layer."""
    tile = tile or TILE
    bsz, _, length, _ = mask.shape
    n = -(-length // tile)
    padded = F.pad(mask[:, 0], (0, n * tile - length, 0, n * tile - length))
    touched = padded.view(bsz, n, tile, n, tile).any(dim=(2, 4))  # (B, n, n): query tile sees key tile
    positions = torch.arange(n * tile, device=mask.device).view(n, tile)
    plans = []
    for b in range(bsz):
        row = []
        for q in range(n):
            start, stop = q * tile, min((q + 1) * tile, length)
            keys = positions[touched[b, q]].flatten()
            keys = keys[keys < length]
            row.append(QueryTile(start, stop, keys, mask[b : b + 1, :, start:stop].index_select(-1, keys)))
        plans.append(row)
    return plans


def tile_sparse_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, tile_plan=None, **kwargs):
    """transformers attention function: query (B, H, L, D), key/value (B, Hkv, L, D) ->
    (B, L, H, D). Needs `tile_plan` (from `tile_plan(mask)`), passed through the model call."""
    if tile_plan is None:
        raise ValueError(f"attention {NAME!r} needs tile_plan=tile_plan(mask) in the model call")
    gqa = query.shape[1] != key.shape[1]
    rows = []
    for b, tiles in enumerate(tile_plan):
        outs = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, t.start : t.stop],
                key[b : b + 1].index_select(2, t.keys),
                value[b : b + 1].index_select(2, t.keys),
                attn_mask=t.mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa,
            )
            for t in tiles
        ]
        rows.append(torch.cat(outs, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, tile_sparse_attention)

PACKED = "mem1_packed"


def packed_attention(module, query, key, value, attention_mask, tile_plan=None, **kwargs):
    """The packed replay's attention, chosen by what the call carries: a tile plan gives
    tile-sparse SDPA, a FlexAttention BlockMask transformers' flex_attention, anything else
    transformers' sdpa. Because the choice travels with the call, a model that keeps this
    implementation (`keep_packed_attention`) takes the same kernel again when gradient
    checkpointing recomputes a layer inside backward(), long after a switch made for the
    forward call alone would have ended (sdpa would then get a BlockMask and fail)."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if tile_plan is not None:
        return tile_sparse_attention(module, query, key, value, attention_mask, tile_plan=tile_plan, **kwargs)
    name = "flex_attention" if isinstance(attention_mask, BlockMask) else "sdpa"
    return ALL_ATTENTION_FUNCTIONS[name](module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PACKED, packed_attention)


def keep_packed_attention(model) -> None:
    """Run `model` with `packed_attention` from now on (the learner's models, which train
    with gradient checkpointing); a call without a tile plan or a BlockMask is plain sdpa."""
    model.config._attn_implementation = PACKED


@contextlib.contextmanager
def use_attention(model, name: str):
    """Switch a loaded model's attention implementation for the duration of a call."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous

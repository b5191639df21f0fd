"""The packer: episodes -> one token sequence each, with a block attention mask and per-token
position ids, so that one forward pass reproduces exactly what the model saw at every turn.

How it departs from the MEM1 reference (docs/method.md): the reference lays turns out at running
positions and hides the previous turn's think tokens; here every generated token attends to
exactly the tokens, at exactly the positions, it attended to when it was sampled, under any
memory policy. The test is `tests/policies/test_packer.py`: packed log-probs equal per-turn
replay within 1e-4 in fp32.

Layout. The sequence is a list of *blocks*; a block is one segment (or a slice of one) laid
out at consecutive positions after a *chain* of earlier blocks that it sees whole. A token
sees every token of its chain and the earlier tokens of its own block. For turn t with
context refs c1..cm, the packer walks the refs and reuses a block already laid out for the
same ref after the same chain; otherwise it appends a context-only copy. Then the generated
segment is appended after the chain. For MEM1 this gives
    prompt | G1 | O1 | G2 | G2' O2 | G3 | G3' O3 | G4 ...
(docs/packing.md): the prompt once, each observation once, each generated segment at most twice.
Full context never copies anything. Only the original generated blocks carry loss.

Groups (`pack_group`). The G episodes of a GRPO group start from the same prompt (same token
ids), and on CPU the prompt is most of an episode's packed tokens. `pack_group` packs each
episode as above and lays them out in ONE row, the shared prompt once:
    prompt | ep0 blocks | ep1 blocks | ... | ep(G-1) blocks
Each episode's blocks keep their chains, with the prompt block renamed to the one shared
block, so every token of episode i sees the shared prompt plus its own chain and never a
token of another episode. Why it is exact: a token's output depends only on the ids and
positions of the tokens it attends to (and the order among them, which positions fix); the
shared prompt has the same ids at the same positions 0..P-1 in every episode and sees only
itself (causally), so its hidden states are the ones each episode computed for its own copy,
and every later token attends to exactly the same (id, position) set as in `pack_episode`.
Prompts that differ only after a common prefix (SFT traces whose tasks share an instruction
but not the question; `share="prefix"`) split the prompt block in two: the shared prefix
block, and per episode a remainder block that sees the prefix whole; every block that saw
the prompt sees both. Positions stay those of sampling time, so nothing moves. The result
(`PackedGroup`) adds `episode_ids` (the episode of each loss token) to the per-episode
columns; `turn_ids` stay turn indices within each episode.

Dims: L = packed length of one episode, K = number of blocks, B = episodes in a batch (rows;
with `pack_group` a row is a group of G episodes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from . import columns as C
from .records import PROMPT, Episode, Segment, SegmentRef


@dataclass(frozen=True)
class PackedEpisode:
    """One episode laid out for a single forward pass (numpy, so it ships through Ray)."""

    input_ids: np.ndarray  # (L,) int64
    position_ids: np.ndarray  # (L,) int64: positions as seen at sampling time
    block_ids: np.ndarray  # (L,) int32: which block each token belongs to
    chains: np.ndarray  # (K, K) bool: chains[b, c] = block b sees block c whole
    loss_mask: np.ndarray  # (L,) bool: generated tokens of the original turns
    logit_index: np.ndarray  # (L,) int64: index whose logits predict this token (-1 off the loss)
    old_logp: np.ndarray  # (L,) float32: sampling log-probs on the loss tokens, 0 elsewhere
    turn_ids: np.ndarray  # (L,) int32: turn of each loss token, -1 elsewhere

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


def pack_episode(episode: Episode) -> PackedEpisode:
    """Lay out `episode` as described in the module docstring."""
    segments = episode.segments
    ids: list[int] = []
    positions: list[int] = []
    block_of_token: list[int] = []
    blocks: list[tuple[int, int, tuple[int, ...]]] = []  # (start in packed seq, length, chain)
    placed: dict[tuple[tuple[int, int, int], tuple[int, ...]], int] = {}  # (ref key, chain) -> block
    loss_mask: list[bool] = []
    logit_index: list[int] = []
    old_logp: list[float] = []
    turn_ids: list[int] = []

    def place(key: tuple[int, int, int], chain: tuple[int, ...], position: int) -> int:
        seg, start, stop = key
        block = len(blocks)
        blocks.append((len(ids), stop - start, chain))
        ids.extend(segments[seg].token_ids[start:stop])
        positions.extend(range(position, position + stop - start))
        block_of_token.extend([block] * (stop - start))
        loss_mask.extend([False] * (stop - start))
        logit_index.extend([-1] * (stop - start))
        old_logp.extend([0.0] * (stop - start))
        turn_ids.extend([-1] * (stop - start))
        placed[(key, chain)] = block
        return block

    for t, turn in enumerate(episode.turns):
        chain: tuple[int, ...] = ()
        position = 0
        for ref in turn.context:
            start, stop = ref.bounds(segments)
            if stop == start:
                continue
            key = (ref.segment, start, stop)
            block = placed.get((key, chain))
            if block is None:
                block = place(key, chain, position)
            chain += (block,)
            position += stop - start
        if not chain:
            raise ValueError(f"episode {episode.task_id!r}, turn {t}: empty context (the prompt must come first)")
        gen = segments[turn.generated]
        if len(turn.logp) != len(gen):
            raise ValueError(
                f"episode {episode.task_id!r}, turn {t}: {len(turn.logp)} log-probs for {len(gen)} generated tokens"
            )
        last_context_token = blocks[chain[-1]][0] + blocks[chain[-1]][1] - 1
        first = len(ids)
        place((turn.generated, 0, len(gen)), chain, position)
        for i in range(len(gen)):
            loss_mask[first + i] = True
            logit_index[first + i] = last_context_token if i == 0 else first + i - 1
            old_logp[first + i] = turn.logp[i]
            turn_ids[first + i] = t

    k = len(blocks)
    chains = np.zeros((k, k), dtype=bool)
    for b, (_, _, chain) in enumerate(blocks):
        chains[b, list(chain)] = True
    return PackedEpisode(
        input_ids=np.asarray(ids, dtype=np.int64),
        position_ids=np.asarray(positions, dtype=np.int64),
        block_ids=np.asarray(block_of_token, dtype=np.int32),
        chains=chains,
        loss_mask=np.asarray(loss_mask, dtype=bool),
        logit_index=np.asarray(logit_index, dtype=np.int64),
        old_logp=np.asarray(old_logp, dtype=np.float32),
        turn_ids=np.asarray(turn_ids, dtype=np.int32),
    )


def per_turn_replay(episode: Episode) -> list[PackedEpisode]:
    """The reference path: each turn's context as its own sample (plain causal attention,
    positions from 0). Slower (the prompt is repeated every turn) but obviously right; the
    learner can use it as a fallback."""
    out = []
    for t, turn in enumerate(episode.turns):
        context = Segment(PROMPT, tuple(episode.context_ids(turn.context)))
        single = Episode(
            task_id=episode.task_id,
            segments=(context, episode.segments[turn.generated]),
            turns=(replace(turn, context=(SegmentRef(0),), generated=1, observation=None),),
        )
        p = pack_episode(single)
        out.append(replace(p, turn_ids=np.where(p.turn_ids >= 0, t, -1).astype(np.int32)))
    return out


@dataclass(frozen=True)
class PackedGroup(PackedEpisode):
    """A GRPO group's episodes in one row, the shared prompt prefix laid out once (see
    "Groups" in the module docstring). Every PackedEpisode column keeps its meaning per
    token (`turn_ids`: the turn within the token's own episode); `episode_ids` says which
    episode a loss token belongs to."""

    episode_ids: np.ndarray  # (L,) int32: index in the group of each loss token's episode, -1 elsewhere
    shared_tokens: int = 0  # length of the shared block at the start of the row
    num_episodes: int = 0


GROUP_SHARING = ("prompt", "prefix")


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if diff.size else n


def pack_group(episodes: Sequence[Episode], *, share: str = "prompt") -> PackedGroup:
    """Lay out the episodes of one group in one row, sharing their prompt (module
    docstring, "Groups"). Each episode's tokens sit, in group order, after the shared block,
    with the ids, positions, chains, loss mask, sampling log-probs and turn ids that
    `pack_episode` gives it; `episode_ids` is the episode index on its loss tokens.

    share="prompt": every episode's prompt (segments[0].token_ids) must equal the first
        one's, otherwise ValueError names the first that differs. The whole prompt is shared.
    share="prefix": the prompts may differ; their longest common prefix is shared, and
        each episode keeps the rest of its prompt as its own block (SFT traces whose tasks
        share an instruction). ValueError if they share no token.
    Only the start of the first turn's context is shared: with the usual policies (the
    prompt first, whole) that is the prompt or the prefix.
    """
    if share not in GROUP_SHARING:
        raise ValueError(f"share={share!r}: allowed {GROUP_SHARING}")
    if not episodes:
        raise ValueError("pack_group: no episodes")
    for i, ep in enumerate(episodes):
        if not ep.turns:
            raise ValueError(f"pack_group: episode {i} ({ep.task_id!r}) has no turns, nothing to pack")
    first = np.asarray(episodes[0].segments[0].token_ids, dtype=np.int64)
    for i, ep in enumerate(episodes[1:], start=1):
        prompt = np.asarray(ep.segments[0].token_ids, dtype=np.int64)
        common = _common_prefix(first, prompt)
        if share == "prompt" and (common < len(first) or common < len(prompt)):
            raise ValueError(
                f"pack_group: episode {i} ({ep.task_id!r}) has a different prompt from episode 0 "
                f"({episodes[0].task_id!r}): {len(prompt)} vs {len(first)} tokens, first difference at token {common}; "
                f"a group must share its prompt (share='prefix' shares only a common prefix)"
            )
        if share == "prefix" and common == 0:
            raise ValueError(
                f"pack_group: episode {i} ({ep.task_id!r}) shares no prompt prefix with episode 0 "
                f"({episodes[0].task_id!r}): their prompts differ at the first token"
            )
    packed = [pack_episode(ep) for ep in episodes]
    # The shared block: the common start of every episode's first block (laid out at
    # positions 0.. with an empty chain, so the same ids there compute the same states).
    first_block = [int(np.sum(p.block_ids == 0)) for p in packed]
    shared = first_block[0]
    for p, n0 in zip(packed, first_block):
        shared = min(shared, n0, _common_prefix(packed[0].input_ids[:shared], p.input_ids[:n0]))
    if shared == 0:
        bad = next(i for i, (p, n0) in enumerate(zip(packed, first_block))
                   if _common_prefix(packed[0].input_ids[: first_block[0]], p.input_ids[:n0]) == 0)
        raise ValueError(f"pack_group: episode {bad} ({episodes[bad].task_id!r}): its first turn's context does not "
                         "start with the tokens episode 0's does, nothing to share")

    head = packed[0]
    parts: dict[str, list[np.ndarray]] = {
        "input_ids": [head.input_ids[:shared]],
        "position_ids": [head.position_ids[:shared]],
        "block_ids": [np.zeros(shared, dtype=np.int32)],
        "loss_mask": [np.zeros(shared, dtype=bool)],
        "logit_index": [np.full(shared, -1, dtype=np.int64)],
        "old_logp": [np.zeros(shared, dtype=np.float32)],
        "turn_ids": [np.full(shared, -1, dtype=np.int32)],
        "episode_ids": [np.full(shared, -1, dtype=np.int32)],
    }
    edges: list[tuple[np.ndarray, np.ndarray]] = []  # (blocks, blocks they see whole) in the row's numbering
    num_blocks = 1  # block 0: the shared block
    offset = shared  # where the current episode's own tokens start in the row
    for i, (p, n0) in enumerate(zip(packed, first_block)):
        k = p.chains.shape[0]
        new = np.empty(k, dtype=np.int64)  # the episode's block b -> the row's block new[b]
        if n0 > shared:  # the rest of the first block: its own block, which sees the shared one
            new[0] = num_blocks
            num_blocks += 1
            edges.append((new[:1], np.zeros(1, dtype=np.int64)))
        else:
            new[0] = 0
        new[1:] = np.arange(num_blocks, num_blocks + k - 1)
        num_blocks += k - 1
        b, c = np.nonzero(p.chains)
        edges.append((new[b], new[c]))
        sees_first = b[c == 0]  # blocks that saw the whole first block see the shared one too
        edges.append((new[sees_first], np.zeros(len(sees_first), dtype=np.int64)))

        tail = slice(shared, None)
        li = p.logit_index[tail]
        parts["input_ids"].append(p.input_ids[tail])
        parts["position_ids"].append(p.position_ids[tail])
        parts["block_ids"].append(new[p.block_ids[tail]].astype(np.int32))
        parts["loss_mask"].append(p.loss_mask[tail])
        parts["logit_index"].append(np.where(li < shared, li, li - shared + offset).astype(np.int64))  # -1 stays
        parts["old_logp"].append(p.old_logp[tail])
        parts["turn_ids"].append(p.turn_ids[tail])
        parts["episode_ids"].append(np.where(p.loss_mask[tail], i, -1).astype(np.int32))
        offset += p.num_tokens - shared

    chains = np.zeros((num_blocks, num_blocks), dtype=bool)
    for b, c in edges:
        chains[b, c] = True
    return PackedGroup(
        **{name: np.concatenate(arrays) for name, arrays in parts.items()},
        chains=chains,
        shared_tokens=shared,
        num_episodes=len(packed),
    )


def episode_token_values(packed: PackedEpisode, values: Sequence[float]) -> np.ndarray:
    """(L,) float32: values[i] on the loss tokens of episode i, 0 elsewhere, e.g. GRPO's
    per-episode advantages for the ADVANTAGES column. A plain PackedEpisode is episode 0."""
    values = np.asarray(values, dtype=np.float32)
    n = packed.num_episodes if isinstance(packed, PackedGroup) else 1
    if values.shape != (n,):
        raise ValueError(f"values of shape {values.shape} for a row of {n} episode(s): one value per episode")
    ids = _episode_ids(packed)
    return np.where(ids >= 0, values[np.maximum(ids, 0)], 0.0).astype(np.float32)


def group_token_rewards(packed: PackedEpisode, turn_rewards: Sequence[Sequence[float]]) -> np.ndarray:
    """(L,) `token_rewards` of a packed group: turn_rewards[i][t], episode i's turn t reward,
    on the last generated token of that turn of that episode."""
    ids = _episode_ids(packed)
    out = np.zeros(packed.num_tokens, dtype=np.float32)
    for i, rewards in enumerate(turn_rewards):
        for t, r in enumerate(rewards):
            idx = np.nonzero((ids == i) & (packed.turn_ids == t))[0]
            if idx.size:
                out[idx[-1]] += r
    return out


def _episode_ids(packed: PackedEpisode) -> np.ndarray:
    if isinstance(packed, PackedGroup):
        return packed.episode_ids
    return np.where(packed.loss_mask, 0, -1).astype(np.int32)


@dataclass
class PackedBatch:
    """Packed episodes padded to one length, as torch tensors on one device."""

    input_ids: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L)
    block_ids: torch.Tensor  # (B, L) int32, -1 on padding
    chains: torch.Tensor  # (B, K, K) bool
    loss_mask: torch.Tensor  # (B, L) bool
    logit_index: torch.Tensor  # (B, L) int64, 0 off the loss
    old_logp: torch.Tensor  # (B, L) float32
    turn_ids: torch.Tensor  # (B, L) int32

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(**{k: v.to(device) for k, v in self.__dict__.items()})

    @classmethod
    def from_columns(cls, cols) -> PackedBatch:
        """From a mapping of column tensors (an RLlib train batch), trimmed to the longest
        real row so micro-batches do not carry the whole batch's padding."""
        length = int(cols[C.NUM_TOKENS].max()) if C.NUM_TOKENS in cols else cols[C.INPUT_IDS].shape[1]
        return cls(
            input_ids=cols[C.INPUT_IDS][:, :length],
            position_ids=cols[C.POSITION_IDS][:, :length],
            block_ids=cols[C.BLOCK_IDS][:, :length],
            chains=cols[C.CHAINS].bool(),
            loss_mask=cols[C.LOSS_MASK][:, :length].bool(),
            logit_index=cols[C.LOGIT_INDEX][:, :length],
            old_logp=cols[C.SAMPLE_LOGP][:, :length],
            turn_ids=cols[C.TURN_IDS][:, :length],
        )


def pad_columns(packed: Sequence[PackedEpisode], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Packed episodes as padded numpy columns (policies/columns.py names): token columns
    (B, L), chains (B, K, K), `num_tokens` (B,). Padding tokens form no block (-1), see only
    themselves (`dense_mask`) and carry no loss. When any row is a `PackedGroup`, the
    columns also hold `episode_ids` (B, L) (-1 off the loss; a plain episode's row is 0)."""
    b = len(packed)
    length = max(p.num_tokens for p in packed)
    k = max(p.chains.shape[0] for p in packed)

    def pad(name: str, fill, dtype) -> np.ndarray:
        out = np.full((b, length), fill, dtype=dtype)
        for i, p in enumerate(packed):
            out[i, : p.num_tokens] = getattr(p, name)
        return out

    chains = np.zeros((b, k, k), dtype=bool)
    for i, p in enumerate(packed):
        n = p.chains.shape[0]
        chains[i, :n, :n] = p.chains
    cols = {
        C.INPUT_IDS: pad("input_ids", pad_id, np.int64),
        C.POSITION_IDS: pad("position_ids", 0, np.int64),
        C.BLOCK_IDS: pad("block_ids", -1, np.int32),
        C.CHAINS: chains,
        C.LOSS_MASK: pad("loss_mask", False, bool),
        C.LOGIT_INDEX: np.maximum(pad("logit_index", 0, np.int64), 0),
        C.SAMPLE_LOGP: pad("old_logp", 0.0, np.float32),
        C.TURN_IDS: pad("turn_ids", -1, np.int32),
        C.NUM_TOKENS: np.asarray([p.num_tokens for p in packed], dtype=np.int64),
    }
    if any(isinstance(p, PackedGroup) for p in packed):  # rows from `pack_group`: each loss token's episode
        episode_ids = np.full((b, length), -1, dtype=np.int32)
        for i, p in enumerate(packed):
            episode_ids[i, : p.num_tokens] = _episode_ids(p)  # a plain episode's loss tokens are episode 0
        cols[C.EPISODE_IDS] = episode_ids
    return cols


def token_rewards(packed: PackedEpisode, turn_rewards: Sequence[float]) -> np.ndarray:
    """(L,) each turn's reward placed on that turn's last generated token."""
    out = np.zeros(packed.num_tokens, dtype=np.float32)
    for t, r in enumerate(turn_rewards):
        idx = np.nonzero(packed.turn_ids == t)[0]
        if idx.size:
            out[idx[-1]] += r
    return out


def collate(packed: Sequence[PackedEpisode], pad_id: int = 0, device: str | torch.device = "cpu") -> PackedBatch:
    """Padded torch batch of packed episodes (see `pad_columns`)."""
    return PackedBatch.from_columns({k: torch.from_numpy(v) for k, v in pad_columns(packed, pad_id).items()}).to(device)


def dense_mask(block_ids: torch.Tensor, chains: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool mask for SDPA (True = attend). Quadratic in L: the CPU path and short
    episodes only; long episodes on GPU use `flex_block_mask`."""
    bsz, length = block_ids.shape
    q = block_ids.long().clamp(min=0)
    # sees_block[b, i, c] = token i's block sees block c whole
    sees_block = torch.gather(chains, 1, q.unsqueeze(-1).expand(-1, -1, chains.shape[-1]))  # (B, L, K)
    kv = block_ids.long().clamp(min=0).unsqueeze(1).expand(-1, length, -1)  # (B, L, L)
    mask = torch.gather(sees_block, 2, kv)  # (B, L, L): query i sees key j's block whole
    idx = torch.arange(length, device=block_ids.device)
    same_block_causal = (block_ids.unsqueeze(2) == block_ids.unsqueeze(1)) & (idx[None, :, None] >= idx[None, None, :])
    mask = (mask | same_block_causal) & (block_ids.unsqueeze(1) >= 0)
    pad = block_ids < 0  # a padding token sees itself only, so no softmax row is empty
    mask = mask | (pad.unsqueeze(2) & (idx[None, :, None] == idx[None, None, :]))
    return mask.unsqueeze(1)


def flex_block_mask(block_ids: torch.Tensor, chains: torch.Tensor):
    """The same mask as `dense_mask`, as a FlexAttention BlockMask for transformers'
    "flex_attention" implementation (`forward_packed(attention="flex")`). It is built once per
    batch (`create_block_mask` evaluates `mask_mod` as a transient (B, L, L) bool tensor);
    the attention kernel then skips every tile the mask hides (all tiles above the diagonal,
    and between turns), and its compiled form never materialises the L x L scores."""
    from torch.nn.attention.flex_attention import create_block_mask

    bsz, length = block_ids.shape
    blocks = block_ids.long()

    def mask_mod(b, h, q_idx, kv_idx):
        qb, kb = blocks[b, q_idx], blocks[b, kv_idx]
        real = (qb >= 0) & (kb >= 0)
        sees = chains[b, qb.clamp(min=0), kb.clamp(min=0)] & real
        # a padding token (block -1) sees itself only, as in `dense_mask`
        return sees | ((qb == kb) & (kv_idx <= q_idx) & real) | ((qb < 0) & (q_idx == kv_idx))

    return create_block_mask(mask_mod, B=bsz, H=None, Q_LEN=length, KV_LEN=length, device=block_ids.device)


ATTENTIONS = ("sdpa", "tiles", "flex")  # dense mask; tile-sparse SDPA (CPU); FlexAttention block mask (GPU)


def forward_packed(
    model,
    batch: PackedBatch,
    *,
    attention: str = "sdpa",
    temperature: float = 1.0,
    entropy: bool = False,
    value_head=None,
) -> dict[str, torch.Tensor]:
    """One packed forward pass. Returns (B, L) tensors, valid on `batch.loss_mask`:
    "logp" of each token, "entropy" of the distribution it was drawn from (if asked), and
    "values" from `value_head` on the hidden state that predicted it (if given).

    Logits are computed only at the N predicting positions ((N, V), not (B, L, V)); memory
    is bounded by micro-batching in the learner.

    The model runs under `tile_attention.packed_attention` for this call, whatever it was
    loaded with: "sdpa" is transformers' sdpa with the dense mask, "tiles" the tile-sparse
    kernel, "flex" transformers' "flex_attention" with `flex_block_mask` as the mask: a
    4-D mask reaches the attention layers as is (transformers builds no causal mask of its
    own), and transformers compiles `flex_attention` once per process. On CPU, torch's
    FlexAttention runs forward only (no backward), so there a pass that would need
    gradients is refused with ValueError; use "tiles" to train on CPU."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r}: allowed {ATTENTIONS}")
    from .tile_attention import PACKED, tile_plan, use_attention

    backbone = getattr(model, model.base_model_prefix)  # the decoder without the LM head
    if attention == "flex":
        if batch.input_ids.device.type == "cpu" and torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                "attention='flex' (training.attention) cannot train on CPU: torch's FlexAttention has no CPU "
                "backward; use 'tiles' (the CPU default of 'auto') or 'sdpa', or run under torch.no_grad()"
            )
        mask, extra = flex_block_mask(batch.block_ids, batch.chains), {}
    else:
        mask = dense_mask(batch.block_ids, batch.chains)
        # "tiles": the dense mask, computed tile-sparse (policies/tile_attention.py)
        extra = {"tile_plan": tile_plan(mask)} if attention == "tiles" else {}
    # packed_attention picks the kernel from the mask and the tile plan, for this call (and for
    # good in the learner's models, so that gradient checkpointing's recompute agrees)
    with use_attention(model, PACKED):
        hidden = backbone(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=mask, **extra).last_hidden_state  # (B, L, H)
    rows, cols = batch.loss_mask.nonzero(as_tuple=True)  # (N,)
    h = hidden[rows, batch.logit_index[rows, cols]]  # (N, H)
    logp_all = torch.log_softmax(model.get_output_embeddings()(h).float() / temperature, dim=-1)  # (N, V)
    out = {"logp": _scatter(logp_all.gather(-1, batch.input_ids[rows, cols, None])[:, 0], batch.loss_mask, rows, cols)}
    if entropy:
        out["entropy"] = _scatter(-(logp_all.exp() * logp_all).sum(-1), batch.loss_mask, rows, cols)
    if value_head is not None:
        out["values"] = _scatter(value_head(h.float())[:, 0], batch.loss_mask, rows, cols)
    return out


def token_logp(model, batch: PackedBatch, *, temperature: float = 1.0, attention: str = "sdpa") -> torch.Tensor:
    """(B, L) log-prob of every loss token from one packed forward pass."""
    return forward_packed(model, batch, attention=attention, temperature=temperature)["logp"]


def _scatter(values: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(N,) values at the mask's positions -> (B, L), zeros elsewhere (keeps the graph)."""
    return values.new_zeros(mask.shape).index_put((rows, cols), values)

"""Where a generation ends: the stop-string cut on token boundaries and the EOS rule, shared by
both sampler backends so that they return exactly the same ids for the same raw generation.

The rule (token ids are the source of truth, docs/architecture.md):
- EOS: the first EOS id ends the output and is kept as its last token (finish_reason "eos").
- Stop strings: the output ends right after the first token whose addition makes the decoded
  output contain a stop string (finish_reason "stop"). That token is kept whole even when it
  carries characters past the stop string; everything after it is dropped. The ids are never
  decoded and re-encoded: BPE would merge differently across the cut and change the ids and
  their log-probs.
- Otherwise the generation ran into max_new_tokens (finish_reason "length").

Decoding skips special tokens and keeps spaces as they are, like vLLM's detokenizer, so the
engine's own early stop and this cut agree on where a stop string ends.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from .base import Completion, FinishReason


def decode(tokenizer, token_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def cut_at_stop(
    token_ids: Sequence[int], logp: Sequence[float], tokenizer, stops: Iterable[str]
) -> tuple[tuple[int, ...], tuple[float, ...], bool]:
    """Cut `token_ids` (and `logp`) right after the token that completes the first stop string.

    Returns (ids, logp, stopped). Finds the shortest prefix whose decode contains a stop by
    bisection: containment only grows with the prefix, because the decode of a prefix is a
    prefix of the decode (up to an unfinished UTF-8 character at the end, shown as U+FFFD,
    which no stop string contains). O(log n) decodes instead of n.
    """
    ids, lps = tuple(token_ids), tuple(logp)
    stops = tuple(stops)
    if not stops or not ids:
        return ids, lps, False

    def contains_stop(n: int) -> bool:
        text = decode(tokenizer, ids[:n])
        return any(s in text for s in stops)

    if not contains_stop(len(ids)):
        return ids, lps, False
    lo, hi = 1, len(ids)  # invariant: the answer is in [lo, hi] and prefix hi contains a stop
    while lo < hi:
        mid = (lo + hi) // 2
        if contains_stop(mid):
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo], lps[:lo], True


def finish_completion(
    token_ids: Sequence[int],
    logp: Sequence[float],
    tokenizer,
    stops: Iterable[str],
    eos_token_ids: frozenset[int],
) -> Completion:
    """Apply the EOS rule, then the stop-string cut, to one raw generation (see module
    docstring). Anything a backend appended after the real end (padding) is dropped here."""
    ids, lps = tuple(int(t) for t in token_ids), tuple(float(x) for x in logp)
    reason: FinishReason = "length"
    for i, t in enumerate(ids):
        if t in eos_token_ids:
            ids, lps, reason = ids[: i + 1], lps[: i + 1], "eos"
            break
    ids, lps, stopped = cut_at_stop(ids, lps, tokenizer, stops)
    if stopped:
        reason = "stop"
    return Completion(token_ids=ids, logp=lps, text=decode(tokenizer, ids), finish_reason=reason)


def stop_window(stops: Iterable[str]) -> int:
    """How many trailing tokens can hold a stop string that the newest token completed: at most
    one token per UTF-8 byte, plus one for a token whose leading space a decoder strips."""
    return max((len(s.encode("utf-8")) for s in stops), default=0) + 2


def default_eos_token_ids(tokenizer, generation_config=None) -> frozenset[int]:
    """The ids that end a generation: the tokenizer's EOS plus the model's generation-config EOS
    ids (chat models often list the end-of-turn token there)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(t) for t in eos)
    if not ids:
        raise ValueError("the tokenizer has no eos_token_id and the model's generation config names none; "
                         "pass eos_token_ids=... to the sampler")
    return frozenset(ids)

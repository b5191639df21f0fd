"""The batched rollout loop: envs + memory policy + sampler -> finished `Episode`s.

One loop serves evaluation and the RLlib EnvRunner. Per turn it asks each live episode's
memory policy for its context, samples all live episodes in one batched call, lets each env
parse the text and answer, and records segments (policies/records.py). Episodes of
different memory policies and objective counts share the same sampler calls.

    episodes = rollout(requests, sampler, chat, params)

Nothing the model writes can stop the loop: envs answer malformed text with a corrective
observation, an env that raises anyway ends only its own episode (recorded as an error),
and an episode whose next context would not fit the model ends as truncated.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from envs import TextEnv, Task
from policies.chat import ChatFormat
from policies.memory import MemoryPolicy
from policies.records import GENERATED, OBSERVATION, Episode, Segment, Turn, memory_metrics
from policies.samplers import Sampler, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode to play: a task, its own env instance, a memory policy and a seed (and,
    on a shared engine, the adapter that plays it)."""

    task: Task
    env: TextEnv
    memory: MemoryPolicy
    seed: int = 0
    tags: Mapping[str, Any] = field(default_factory=dict)  # copied into Episode.info (policy, N, group)
    adapter: str | None = None  # the LoRA adapter that serves it (an agent of a shared engine); None: the sampler's weights


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from (iteration, task, sample, turn, ...): same parts, same seed,
    on every machine (never Python's salted hash())."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass
class RolloutStats:
    turns: int = 0
    sampler_calls: int = 0
    generated_tokens: int = 0
    sample_s: float = 0.0
    env_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.sample_s if self.sample_s else 0.0


def rollout(
    requests: Sequence[EpisodeRequest],
    sampler: Sampler,
    chat: ChatFormat,
    params: SamplingParams,
    *,
    max_model_len: int = 8192,
    kv_bytes_per_token: int | None = None,
    on_episode_end: Callable[[Episode], None] | None = None,
    stats: RolloutStats | None = None,
) -> list[Episode]:
    """Play every request to the end; returns episodes in request order."""
    stats = stats if stats is not None else RolloutStats()
    episodes: list[Episode] = []
    for r in requests:
        prompt, info = r.env.reset(seed=r.seed, options={"task": r.task})
        demonstration = info.pop("demonstration", ())
        episodes.append(Episode.start(r.task.id, chat.prompt_ids(prompt, demonstration), prompt, **dict(r.tags), **info))
    stops = tuple(dict.fromkeys(s for r in requests for s in r.env.stop_strings))
    params = replace(params, stop=stops) if stops and not params.stop else params

    def finish(i: int, **info: Any) -> None:
        episodes[i] = episodes[i].finish(**info, **memory_metrics(episodes[i], kv_bytes_per_token), **search_counts(episodes[i]))
        if on_episode_end is not None:
            on_episode_end(episodes[i])

    live = list(range(len(requests)))
    turn = 0
    while live:
        _run_before_turn_hooks(requests, episodes, live, turn, sampler=sampler, chat=chat, params=params,
                               max_model_len=max_model_len, stats=stats)
        contexts, prompts, ready = {}, [], []
        for i in live:
            ctx = requests[i].memory.context(episodes[i])
            ids = episodes[i].context_ids(ctx)
            if len(ids) + params.max_new_tokens > max_model_len:
                finish(i, truncated=True, end_reason="context_overflow", context_tokens=len(ids))
                continue
            contexts[i] = ctx
            prompts.append(ids)
            ready.append(i)
        if not ready:
            break
        seeds = [derive_seed(requests[i].seed, requests[i].task.id, turn) for i in ready]
        t0 = time.perf_counter()
        completions = sampler.generate(prompts, params, seeds=seeds, **_adapters([requests[i].adapter for i in ready]))
        stats.sample_s += time.perf_counter() - t0
        stats.sampler_calls += 1
        t0 = time.perf_counter()
        still_live = []
        for i, c in zip(ready, completions):
            stats.generated_tokens += len(c.token_ids)
            final = _step(episodes, i, requests[i], contexts[i], c, chat)
            if final is None:
                still_live.append(i)
            else:
                finish(i, **final)
        stats.env_s += time.perf_counter() - t0
        live = still_live
        turn += 1
        stats.turns += 1
    return episodes


def _step(episodes: list[Episode], i: int, request: EpisodeRequest, context, completion, chat: ChatFormat) -> dict | None:
    """Record one turn of episode i; returns None while it goes on, else its final info."""
    ep, g = episodes[i].add_segment(Segment(GENERATED, tuple(completion.token_ids), completion.text))
    try:
        obs, reward, terminated, truncated, info = request.env.step(completion.text)
    except Exception as e:  # an env bug ends this episode only, and is recorded
        log.exception("env.step failed in episode %s", ep.task_id)
        obs, reward, terminated, truncated, info = "", 0.0, False, True, {"action": "error", "valid": False, "end_reason": f"env_error: {e!r}"}
    span = info.get("state_span")
    token_span = (chat.char_to_token(completion.token_ids, span[0]), chat.char_to_token(completion.token_ids, span[1])) if span else None
    turn_info = {k: v for k, v in info.items() if k != "state_span"}
    done = terminated or truncated
    obs_index = None
    if not done:
        ep, obs_index = ep.add_segment(Segment(OBSERVATION, chat.observation_ids(obs, completion.token_ids), obs))
    ep = ep.add_turn(
        Turn(
            context=tuple(context),
            generated=g,
            logp=tuple(completion.logp),
            finish_reason=completion.finish_reason,
            reward=float(reward),
            observation=obs_index,
            state_span=token_span,
            info=turn_info,
        )
    )
    episodes[i] = ep
    if not done:
        return None
    end_reason = info.get("end_reason") or ("answer" if terminated else "budget")
    scores = {k: v for k, v in info.items() if k in _FINAL_KEYS}
    return {**scores, "terminated": terminated, "truncated": truncated, "end_reason": end_reason, "total_reward": ep.total_reward}


def search_counts(episode: Episode) -> dict[str, int]:
    """Search calls and failed searches (the env's turn info "search_error") of an episode:
    a failed search is an observation, not an exception, so only this count shows a dead
    retriever. Counted from the turns, so an episode that ended without a score has them too."""
    return {
        "search_calls": sum(t.info.get("action") == "search" for t in episode.turns),
        "search_errors": sum("search_error" in t.info for t in episode.turns),
    }


_FINAL_KEYS = ("em", "f1", "em_sum", "em_mean", "f1_sum", "f1_mean", "answer", "turns", "searches", "invalid_turns", "reward", "success")


def _run_before_turn_hooks(requests: Sequence[EpisodeRequest], episodes: list[Episode], live: list[int], turn: int, *,
                           sampler: Sampler, chat: ChatFormat, params: SamplingParams, max_model_len: int, stats: RolloutStats) -> None:
    """Policies that write their own memory (a summary, notes) get all their live episodes in
    one call (per adapter, on a shared engine), with the sampler (timed and counted like the
    actions' calls) and a BM25 note search."""

    def generate(prompts, call_params, seeds, adapter=None):
        t0 = time.perf_counter()
        completions = sampler.generate(prompts, call_params, seeds=seeds, **_adapters([adapter] * len(prompts)))
        stats.sample_s += time.perf_counter() - t0
        stats.sampler_calls += 1
        stats.generated_tokens += sum(len(c.token_ids) for c in completions)
        return completions

    groups: dict[tuple[int, str | None], list[int]] = {}
    for i in live:
        groups.setdefault((id(requests[i].memory), requests[i].adapter), []).append(i)
    for (_, adapter), members in groups.items():
        policy = requests[members[0]].memory
        if type(policy).before_turn is MemoryPolicy.before_turn:
            continue
        seeds = [derive_seed(requests[i].seed, requests[i].task.id, turn, "memory") for i in members]
        updated = policy.before_turn([episodes[i] for i in members], generate=functools.partial(generate, adapter=adapter), chat=chat,
                                     params=params, seeds=seeds,
                                     max_model_len=max_model_len, search_notes=search_notes)
        for i, ep in zip(members, updated):
            episodes[i] = ep


def _adapters(names: list[str | None]) -> dict[str, list[str | None]]:
    """The `adapters=` of a sampler call, one name per prompt: only when the requests name
    adapters (samplers of one set of weights take no such argument)."""
    return {"adapters": names} if any(a is not None for a in names) else {}


def search_notes(notes: Sequence[str], query: str, k: int) -> list[int]:
    """Indices of the (at most) k notes that best match `query` under BM25, best first: the
    project's own BM25 index over one episode's notes (a few dozen short texts, so building
    it per call costs well under a millisecond per note)."""
    from envs.retrieval import BM25Index, Document

    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):  # notes of stopwords only: zero average length
        try:
            index = BM25Index.build([Document(id=str(j), contents=text) for j, text in enumerate(notes)])
        except ValueError:  # not one indexable word in any note (an untrained model's): nothing matches
            return []
        return [int(hit.document.id) for hit in index.search([query], topk=k)[0]]


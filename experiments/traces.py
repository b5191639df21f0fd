"""Demonstration traces for supervised fine-tuning: played by a scripted expert, or read from
a JSONL file of chat turns (e.g. written by a larger teacher model on a GPU).

    episodes = expert_traces(config, domain, tasks)          # the expert plays `tasks` under the memory policy
    write_traces(episodes, "traces.jsonl")                   # one episode per line, as chat turns
    episodes = read_traces("traces.jsonl", chat, memory)     # back to episodes, under any memory policy

The file format, one JSON object per line:

    {"task_id": "world-train-n2-0",
     "messages": [{"role": "user", "content": "<the task prompt>"},
                  {"role": "assistant", "content": "<think>...</think><search>...</search>"},
                  {"role": "user", "content": "<information>...</information>"},
                  ...,
                  {"role": "assistant", "content": "<think>...</think><answer>...</answer>"}],
     "info": {"em_mean": 1.0}}                                # optional

The first message is the task prompt, then assistant turns and observations alternate, and
the last message is the final assistant turn. A trace read from a file becomes the episode
the memory policy would have built: each turn's context is the policy's choice over the
turns before it, so a full-context teacher's traces fine-tune a `mem1` agent under mem1's
masks. Expert traces written and read back give the same token ids (the expert's text is
tokenized once, in both directions, by the same chat format).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from policies.chat import ChatFormat
from policies.memory import MemoryPolicy, WrittenMemory
from policies.records import GENERATED, OBSERVATION, Episode, Segment, Turn
from policies.samplers import ScriptedSampler

from .config import ConfigError
from .rollout import EpisodeRequest, rollout


class TraceFormatError(ConfigError):
    """A malformed trace file; the message names the file, the line and the field."""


def expert_for(domain) -> Any:
    """The scripted expert of a domain (QA over the generated world, WebShop); a clear
    error for domains that have none."""
    expert = domain.expert()
    if expert is None:
        raise ConfigError(f"env.kind={domain.config.env.kind!r} (data.source={domain.config.data.source!r}) has no scripted expert; set sft.traces to a JSONL file of chat turns instead")
    return expert


def expert_traces(domain, tasks: dict[int, list], chat: ChatFormat, memory: MemoryPolicy, params, *, max_model_len: int, seed: int = 0, on_episode_end=None) -> list[Episode]:
    """The domain's expert plays every task once under `memory`, through the real env and
    rollout loop (one batched call per turn)."""
    if isinstance(memory, WrittenMemory):
        raise ConfigError(f"memory policy {memory.spec!r} has the model write its memory in calls of its own, which the scripted "
                          "expert does not play; fine-tune under mem1 (or load traces with sft.traces) and train this policy with RL")
    sampler = ScriptedSampler(expert_for(domain).act, chat.tokenizer)
    requests = [
        EpisodeRequest(task=t, env=domain.make_env(n), memory=memory, seed=seed, tags={"n": n, "policy": memory.spec})
        for n, ts in sorted(tasks.items()) for t in ts
    ]  # fmt: skip
    return rollout(requests, sampler, chat, params, max_model_len=max_model_len, on_episode_end=on_episode_end)


def write_traces(episodes: Iterable[Episode], path: str | Path) -> Path:
    """Episodes as chat-turn lines (the format of the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for ep in episodes:
            messages = [{"role": "user", "content": ep.segments[0].text}]
            for turn in ep.turns:
                messages.append({"role": "assistant", "content": ep.segments[turn.generated].text})
                if turn.observation is not None:
                    messages.append({"role": "user", "content": ep.segments[turn.observation].text})
            info = {k: v for k, v in ep.info.items() if isinstance(v, (int, float, str, bool))}
            f.write(json.dumps({"task_id": ep.task_id, "messages": messages, "info": info}) + "\n")
    return path


def read_traces(path: str | Path, chat: ChatFormat, memory: MemoryPolicy) -> list[Episode]:
    """Every line of a trace file as an episode under `memory`; a malformed line raises
    `TraceFormatError` naming the line and the field."""
    path = Path(path)
    if not path.exists():
        raise TraceFormatError(f"trace file {path} does not exist")
    episodes = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceFormatError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            episodes.append(episode_from_messages(_messages(record, where), chat, memory, task_id=str(record.get("task_id", f"line-{number}")), info=record.get("info") or {}))
    if not episodes:
        raise TraceFormatError(f"{path}: no traces (the file is empty)")
    return episodes


def _messages(record: Any, where: str) -> list[str]:
    """The contents of a record's messages, checked: user first, then assistant and user
    alternating, an assistant last."""
    if not isinstance(record, dict):
        raise TraceFormatError(f"{where}: each line must be a JSON object, got {type(record).__name__}")
    messages = record.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise TraceFormatError(f"{where}: field 'messages' must be a list of at least 2 chat turns (the task prompt, then an assistant turn)")
    if "info" in record and not isinstance(record["info"], dict):
        raise TraceFormatError(f"{where}: field 'info' must be an object")
    out = []
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if not isinstance(m, dict):
            raise TraceFormatError(f"{where}: field 'messages[{i}]' must be an object with 'role' and 'content'")
        if m.get("role") != expected:
            raise TraceFormatError(f"{where}: field 'messages[{i}].role' is {m.get('role')!r}, expected {expected!r} (the prompt first, then assistant and user turns alternate)")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise TraceFormatError(f"{where}: field 'messages[{i}].content' must be a non-empty string")
        out.append(m["content"])
    if len(out) % 2:
        raise TraceFormatError(f"{where}: field 'messages' ends with a user turn; the last message must be the assistant's final turn")
    return out


_STATE = re.compile(r"<think>.*?</think>", re.DOTALL)


def episode_from_messages(messages: Sequence[str], chat: ChatFormat, memory: MemoryPolicy, *, task_id: str, info: dict | None = None) -> Episode:
    """[prompt, turn 1, observation 1, ..., final turn] as the episode `memory` would have
    played: contexts chosen turn by turn, each text tokenized once."""
    prompt, rest = messages[0], list(messages[1:])
    ep = Episode.start(task_id, chat.prompt_ids(prompt), prompt, **(info or {}))
    for t in range(0, len(rest), 2):
        text, observation = rest[t], rest[t + 1] if t + 1 < len(rest) else None
        context = memory.context(ep)
        ids = chat.encode(text)
        ep, g = ep.add_segment(Segment(GENERATED, ids, text))
        obs_index = None
        if observation is not None:
            ep, obs_index = ep.add_segment(Segment(OBSERVATION, chat.observation_ids(observation, ids), observation))
        state = _STATE.search(text)  # the state span lets budget=... policies cap it, as in rollouts
        span = (chat.char_to_token(ids, state.start()), chat.char_to_token(ids, state.end())) if state else None
        ep = ep.add_turn(Turn(context=context, generated=g, logp=(0.0,) * len(ids), finish_reason="stop", observation=obs_index, state_span=span))
    return ep.finish()

"""Demonstration traces: the QA expert's episodes (real env, retriever, rollout loop) replay
exactly in the packer like sampled ones; a trace file round-trips to the same token ids
and can be replayed under another memory policy; a malformed file gets an error naming
its line and field."""

import json

import pytest
import torch

from experiments.components import sampling_params
from experiments.config import TrainConfig, validate
from experiments.domains import make_domain
from experiments.traces import TraceFormatError, expert_traces, read_traces, write_traces
from policies.chat import ChatFormat
from policies.memory import make_memory_policy
from policies.models import load_model
from policies.packer import collate, pack_episode, token_logp
from tests.policies.test_packer import replay_logp


@pytest.fixture(scope="module")
def config():
    return validate({
        "data": {"world_size": "small"}, "retriever": {"mode": "local"},
        "env": {"few_shot": False, "max_turns_cap": 10}, "sampler": {"max_new_tokens": 200},
    }, TrainConfig)


@pytest.fixture(scope="module")
def traces(config, tokenizer):
    chat = ChatFormat(tokenizer)
    out = {}
    with make_domain(config) as domain:
        tasks = {2: domain.tasks("train")[2][:3]}
        for policy in ("mem1", "full_context"):
            out[policy] = expert_traces(domain, tasks, chat, make_memory_policy(policy), sampling_params(config.sampler), max_model_len=8192)
    return out


@pytest.mark.parametrize("policy", ["mem1", "full_context"])
def test_expert_traces_replay_exactly(traces, tiny_model_dir, policy):
    model = load_model(tiny_model_dir)
    episodes = traces[policy]
    assert all(ep.info["em_mean"] == 1.0 for ep in episodes)
    batch = collate([pack_episode(e) for e in episodes])
    for attention in ("sdpa", "tiles"):
        with torch.no_grad():
            packed = token_logp(model, batch, attention=attention)
        for i, ep in enumerate(episodes):
            expected = torch.cat(replay_logp(model, ep))
            assert torch.max(torch.abs(packed[i][batch.loss_mask[i]] - expected)).item() <= 1e-4


def test_trace_file_round_trip_and_replay_under_another_policy(traces, tokenizer, tmp_path):
    chat = ChatFormat(tokenizer)
    path = write_traces(traces["mem1"], tmp_path / "traces.jsonl")
    back = read_traces(path, chat, make_memory_policy("mem1"))
    for a, b in zip(traces["mem1"], back):
        assert [s.token_ids for s in a.segments] == [s.token_ids for s in b.segments]
        assert [t.context for t in a.turns] == [t.context for t in b.turns]
        assert [t.state_span for t in a.turns] == [t.state_span for t in b.turns]
    # the same file under full_context: every turn sees all earlier ones
    full = read_traces(path, chat, make_memory_policy("full_context"))
    for a, b in zip(traces["full_context"], full):
        assert [a.context_ids(t.context) for t in a.turns] == [b.context_ids(t.context) for t in b.turns]


GOOD = {"task_id": "t", "messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "<think>x</think><answer>a</answer>"}]}


@pytest.mark.parametrize("bad, field", [
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "must be a JSON object"),
    (json.dumps({"messages": "hi"}), "field 'messages'"),
    (json.dumps({"messages": [GOOD["messages"][0], {"role": "user", "content": "x"}]}), "field 'messages[1].role'"),
    (json.dumps({"messages": [GOOD["messages"][0], {"role": "assistant", "content": " "}]}), "field 'messages[1].content'"),
    (json.dumps({"messages": GOOD["messages"] + [{"role": "user", "content": "obs"}]}), "ends with a user turn"),
    (json.dumps({**GOOD, "info": [1]}), "field 'info'"),
    (json.dumps({"messages": [GOOD["messages"][0], "text"]}), "field 'messages[1]'"),
])
def test_malformed_trace_file_names_line_and_field(tokenizer, tmp_path, bad, field):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + bad + "\n")
    with pytest.raises(TraceFormatError) as e:
        read_traces(path, ChatFormat(tokenizer), make_memory_policy("mem1"))
    assert f"{path}:2:" in str(e.value) and field in str(e.value)


def test_missing_or_empty_trace_file(tokenizer, tmp_path):
    with pytest.raises(TraceFormatError, match="does not exist"):
        read_traces(tmp_path / "none.jsonl", ChatFormat(tokenizer), make_memory_policy("mem1"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TraceFormatError, match="no traces"):
        read_traces(tmp_path / "empty.jsonl", ChatFormat(tokenizer), make_memory_policy("mem1"))

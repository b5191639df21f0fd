"""`mem1 eval` on the web-QA domain, end to end with real parts: `experiments.evaluate` on
experiments/configs/eval_webqa.yaml with overrides for a run of seconds (env.url null, so the
domain starts the local search server on 127.0.0.1 over the small generated world and stops
it at the end), the transformers sampler, two memory policies, MLflow on SQLite under
tmp_path. The point: the web env needs no special case anywhere.

A random-init model never writes a valid action, so it would never search. The model here
is the tiny model's architecture with weights set by hand to a bigram chain: every layer's
output projection is zero (the residual stream is the token embedding), and the head maps
each token of SEARCH_PIECES to the next, and any other token (the end of every chat prompt)
to the first. So greedy decoding writes SEARCH_PIECES at every turn, whatever the context.
A bigram needs every piece to be a distinct token, hence the odd spelling ("searc" "h").
"""

import logging
import os
from pathlib import Path
from unittest import mock

import pytest
import requests
import torch
from mlflow import MlflowClient

from experiments.config import EvalConfig, load_config
from experiments.evaluate import evaluate

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "eval_webqa.yaml"

SEARCH_PIECES = ["<", "search", '>"', "river", '"', "</", "searc", "h", ">"]  # <search>"river"</search>
SEARCH_TEXT = "".join(SEARCH_PIECES)


@pytest.fixture(scope="module")
def searching_model_dir(tokenizer, tmp_path_factory):
    from policies.models import build_tiny_model

    chain = tokenizer.convert_tokens_to_ids(SEARCH_PIECES)
    assert len(set(chain)) == len(chain) and tokenizer.decode(chain) == SEARCH_TEXT
    model = build_tiny_model(tokenizer, seed=0, tie_word_embeddings=False)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight  # (V, D)
        embed.zero_()
        embed[:, 0] = 1.0  # every token outside the chain: direction 0
        head.zero_()
        head[chain[0], 0] = 1.0  # ... which starts the chain
        for i, token in enumerate(chain, start=1):
            embed[token] = 0.0
            embed[token, i] = 1.0  # chain token i: direction i
            head[chain[i] if i < len(chain) else tokenizer.eos_token_id, i] = 1.0  # ... which writes the next one
    path = tmp_path_factory.mktemp("searching-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.slow
def test_eval_on_webqa_searches_the_local_server_and_logs_to_mlflow(searching_model_dir, tmp_path, caplog):
    out = tmp_path / "runs"
    config = load_config(CONFIG, EvalConfig, [
        f"model.name={searching_model_dir}",
        "sampler.backend=transformers",
        "sampler.max_new_tokens=16",
        "policies=[mem1, full_context]",
        "data.world_size=small",
        "data.n_values=[1]",
        "data.tasks_per_n=2",
        "env.max_turns=2",
        "env.require_state=false",  # the bigram writes no <think> (see the module docstring)
        f"output_dir={out}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment=webqa-it",
    ])
    assert config.env.kind == "webqa" and config.env.url is None
    with mock.patch.dict(os.environ, {"MEM1_HOME": str(tmp_path / "home")}), caplog.at_level(logging.INFO, "experiments.domains.webqa"):
        result = evaluate(config, quiet=True)
    [server_url] = [r.args[-1] for r in caplog.records if r.msg.startswith("local search server")]

    assert len(result.episodes) == 4  # 2 policies x 2 tasks
    for ep in result.episodes:
        assert ep.info["end_reason"] == "budget" and len(ep.turns) == 2
        for turn in ep.turns:
            assert turn.info["action"] == "search" and "search_error" not in turn.info
            assert turn.info["doc_ids"], "the local server found nothing for 'river'"
            assert all(u.startswith(f"{server_url}/page/") for u in turn.info["doc_ids"])  # its result pages
    assert not (out / "webqa-cache").exists()  # the local server's cache is a temporary folder
    with pytest.raises(requests.ConnectionError):  # the server was stopped at the end
        requests.get(f"{server_url}/healthz", timeout=5)

    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.mlflow_run_id)
    assert parent.data.params["env.kind"] == "webqa" and parent.data.params["env.url"] == ""  # None: the local server
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    children = {r.data.params["memory_policy"]: r for r in found}
    assert set(children) == {"mem1", "full_context"}
    for run in children.values():
        metrics = run.data.metrics
        assert metrics["rollout/searches"] == 2.0 and metrics["rollout/valid_action_rate"] == 1.0
        assert metrics["memory/peak_tokens"] > 0 and "eval/em" in metrics

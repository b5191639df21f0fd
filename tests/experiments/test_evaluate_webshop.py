"""`mem1 eval` on WebShop, end to end on CPU: the CLI with a webshop config, the tiny
random-init model behind the transformers sampler, the generated catalog, and a real MLflow
store (SQLite in tmp_path). Per memory policy, the success rate, mean reward and peak tokens
must reach MLflow with the values the episodes hold.

A random model never follows the protocol (every episode runs out of turns with reward 0),
so a second evaluation plays scripted shopping turns through the same `evaluate` call: one
goal bought right, one with a wrong option, so the logged success rate and mean reward are
numbers that aggregation could get wrong.
"""

import json
import re
from pathlib import Path

import mlflow
import pytest
import yaml

from envs.webshop import WebShopEngine, generate_catalog, score_purchase
from experiments.cli import main
from experiments.config import EvalConfig, validate
from experiments.evaluate import evaluate
from policies.samplers import Completion, Sampler, SamplingParams

CATALOG = {"kind": "webshop", "catalog_seed": 0, "num_products": 40, "num_goals": 2}


def webshop_config(tmp_path: Path, model_dir: str, **env) -> dict:
    return {
        "name": "ws", "output_dir": str(tmp_path / "runs"), "policies": ["mem1", "full_context"],
        "model": {"name": model_dir},
        "sampler": {"backend": "transformers", "temperature": 0.0, "max_new_tokens": 8},
        "env": {**CATALOG, "max_turns": 3, "few_shot": False, **env},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "ws-eval"},
    }  # fmt: skip


def child_runs(tmp_path: Path, experiment: str = "ws-eval") -> tuple[mlflow.MlflowClient, dict[str, str]]:
    """The MLflow client and {memory policy: child run id} of the single evaluation logged."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.params["env.kind"] == "webshop"
    children = {r.data.tags["memory_policy"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert sorted(children) == ["full_context", "mem1"]
    return client, {k: r.info.run_id for k, r in children.items()}


def logged(client: mlflow.MlflowClient, run_id: str, metric: str) -> float:
    history = client.get_metric_history(run_id, metric)
    assert [m.step for m in history] == [1], f"{metric}: one value at N = 1"
    return history[0].value


def test_mem1_eval_cli_logs_webshop_outcomes_per_policy(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "eval_webshop.yaml"
    path.write_text(yaml.safe_dump(webshop_config(tmp_path, tiny_model_dir)))
    assert main(["eval", str(path), "-o", "env.max_turns=3"]) == 0

    table = capsys.readouterr().out
    assert re.search(r"^policy\s+n\s+success\s+reward\s", table, re.M), table  # the columns WebShop reports
    assert re.search(r"^mem1\s+1\s+0\.000\s+0\.000\s", table, re.M), table
    (run_dir,) = (tmp_path / "runs").glob("ws-*")
    episodes = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 4  # 2 goals x 2 policies
    for ep in episodes:
        assert ep["info"]["end_reason"] == "budget" and len(ep["turns"]) == 3
        assert ep["info"]["reward"] == 0.0 and ep["info"]["success"] == 0.0
        assert "Current available actions:" in ep["turns"][0]["observation"]  # the env answered the garbage turn

    client, runs = child_runs(tmp_path)
    peaks = {}
    for policy, run_id in runs.items():
        mine = [e["info"] for e in episodes if e["info"]["policy"] == policy]
        assert logged(client, run_id, "eval/success") == 0.0
        assert logged(client, run_id, "eval/reward") == 0.0
        peaks[policy] = logged(client, run_id, "memory/peak_tokens")
        assert peaks[policy] == pytest.approx(sum(i["peak_tokens"] for i in mine) / len(mine))
        assert logged(client, run_id, "memory/max_peak_tokens") == max(i["peak_tokens"] for i in mine)
    assert peaks["full_context"] > peaks["mem1"]  # turn 3 of full_context also holds turn 1


class ShopperSampler(Sampler):
    """Plays WebShop from the page text it is given: search the instruction, open the goal's
    product (paging on if needed), choose its options, buy. For goals in `wrong_option` it
    picks a non-goal value of the first option group instead."""

    def __init__(self, tokenizer, catalog, wrong_option: set[str]):
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset({tokenizer.eos_token_id})
        self.goals = {g.instruction: g for g in catalog.goals}
        self.catalog = catalog
        self.wrong_option = wrong_option

    def _action(self, page: str) -> str:
        instruction = re.search(r"Instruction: \[SEP\] (.*?) \[SEP\]", page).group(1)
        goal = self.goals[instruction]
        actions = page.rsplit("Current available actions: ", 1)[1]
        if "search[<keywords>]" in actions:
            return f"search[{instruction}]"
        if f"click[{goal.asin.lower()}]" in actions:
            return f"click[{goal.asin.lower()}]"
        if "click[buy now]" not in actions:
            return "click[next >]"
        product = self.catalog.product(goal.asin)
        selected = re.search(r"Selected options: (.*?) \[SEP\]", page)
        done = selected.group(1) if selected else ""
        for i, (group, values) in enumerate(product.options.items()):
            if f"{group}: " not in done:
                wanted = next(v for v in goal.goal_options if v in values)
                if i == 0 and goal.id in self.wrong_option:
                    wanted = next(v for v in values if v not in goal.goal_options)
                return f"click[{wanted}]"
        return "click[buy now]"

    def generate(self, prompts, params=SamplingParams(), seeds=None) -> list[Completion]:
        out = []
        for ids in prompts:
            page = self.tokenizer.decode(ids).rsplit("<state>", 1)[1]
            text = f"<think>Shopping; the page shows what to do next.</think><answer>{self._action(page)}</answer>"
            tokens = tuple(self.tokenizer.encode(text, add_special_tokens=False))
            out.append(Completion(tokens, (0.0,) * len(tokens), text, "stop"))
        return out

    def load_weights(self, weights) -> None:
        raise NotImplementedError("a scripted sampler has no weights")


def test_evaluate_logs_success_rate_and_mean_reward(tmp_path, tiny_model_dir, tokenizer):
    config = validate(webshop_config(tmp_path, tiny_model_dir, max_turns=8), EvalConfig)
    catalog = generate_catalog(0, CATALOG["num_products"])
    goals = list(catalog.split("test")[:2])
    sampler = ShopperSampler(tokenizer, catalog, wrong_option={goals[1].id})
    result = evaluate(config, sampler=sampler, quiet=True)

    # what the second goal's purchase is worth, by reward.py
    product = catalog.product(goals[1].asin)
    chosen = {}
    for i, (group, values) in enumerate(product.options.items()):
        chosen[group] = next(v for v in values if v not in goals[1].goal_options) if i == 0 else next(v for v in goals[1].goal_options if v in values)
    partial = score_purchase(product, goals[1], product.price, chosen).reward
    assert 0.0 < partial < 1.0

    for ep in result.episodes:
        assert ep.info["end_reason"] == "answer" and ep.info["reward"] == (1.0 if ep.task_id == goals[0].id else partial)
    client, runs = child_runs(tmp_path)
    for policy, run_id in runs.items():
        assert logged(client, run_id, "eval/success") == 0.5
        assert logged(client, run_id, "eval/reward") == pytest.approx((1.0 + partial) / 2)
        row = next(r for r in result.rows if r["policy"] == policy)
        assert logged(client, run_id, "memory/peak_tokens") == pytest.approx(row["memory/peak_tokens"])
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert {r["policy"]: r["eval/success"] for r in summary["rows"]} == {"mem1": 0.5, "full_context": 0.5}

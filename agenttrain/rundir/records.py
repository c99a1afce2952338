"""The files of a run directory as typed, versioned records: one model per file, used to write and to read.

run.json carries `format_version`, the version of every file in the run. Reading a run written in an
older format applies the named upgrade steps in `UPGRADES`, one per version bump, in memory; a run of a
newer format than this code knows is refused with a clear error. Every model allows fields it does not
declare, so a field added by newer code survives a round-trip through older code.

Format history:
- 1: before run.json had `format_version` (agenttrain up to the commit that added this module).
- 2: run.json has `format_version`; `config_hash` hashes the per-task config (a task owns its config
  fields), so a format-1 hash no longer matches its own config and is dropped when read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agenttrain.errors import UserError

FORMAT_VERSION = 2
FIRST_FORMAT = 1  # a run.json without `format_version` was written in format 1

Data = dict[str, Any]
UsageByRole = dict[str, dict[str, Any]]
USAGE_HELP = ("per role (agent, optimizer): requests (sent), cache_hits, prompt_tokens, completion_tokens (reasoning "
              "included), total_tokens, cost_usd (US dollars at the known prices), and, where the endpoint reports "
              "them, reasoning_tokens, cached_prompt_tokens, reasoning_cost_usd (absent in older runs: read as 0)")


class Record(BaseModel):
    """One file (or one JSONL line) of a run directory."""

    model_config = ConfigDict(extra="allow")
    file: ClassVar[str]  # where it lives in the run directory, for docs/run-directory.md
    title: ClassVar[str]  # what to call it in an error
    about: ClassVar[str]

    @classmethod
    def read(cls: type[R], data: Any, version: int, where: Path | str) -> R:
        """Upgrade `data` written in format `version` to the current format, then validate it."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object, found {type(data).__name__}")
        for step in steps_after(version):
            upgrade = step.changes.get(cls.__name__)
            data = upgrade(dict(data)) if upgrade else data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            raise UserError(f"{where}: not a valid {cls.title} ({problems})") from None

    def to_json(self) -> Data:
        return self.model_dump(mode="json")


R = TypeVar("R", bound=Record)


class RunInfo(Record):
    title = "run.json"
    file = "run.json"
    about = "What the run is and how it ended; rewritten atomically as the run goes."

    format_version: int = Field(FORMAT_VERSION, description="the format of every file in this run directory")
    status: str = Field(description="running, finished, early_stopped, budget_exhausted, interrupted or failed "
                                    "(`agenttrain runs` shows a running run whose process is gone as killed)")
    name: str = Field(description="the experiment's `name`")
    config_hash: str | None = Field(None, description="hash of the config keys results depend on; resume and eval "
                                                      "refuse a config.yaml whose hash differs (null: not known)")
    seed: int = Field(description="`task.seed`, which decides the data split and batches")
    started: str = Field(description="ISO 8601 time, UTC")
    python: str | None = Field(None, description="Python version that started the run")
    packages: dict[str, str | None] = Field(default_factory=dict, description="versions of the packages that "
                                                                              "decide results (null: not installed)")
    git_revision: str | None = Field(None, description="git HEAD of the working directory, if it was a repository")
    sandbox: dict[str, Any] | None = Field(None, description="what the code sandbox enforces (limits, network, "
                                                             "isolation), as measured when training started")
    task_requires_network: bool | None = Field(None, description="whether the task's tools need the network")
    usage: UsageByRole | None = Field(None, description=f"spent so far, {USAGE_HELP}")
    epochs_done: int | None = Field(None, description="epochs saved so far (epoch 0 counts)")
    tracking: dict[str, Any] | None = Field(None, description="where the run is also logged: {mlflow: "
                                                              "{tracking_uri, experiment_id, run_id}} (null: nowhere)")
    finished: str | None = Field(None, description="ISO 8601 time the run stopped, UTC")
    reason: str | None = Field(None, description="why the run stopped, and what to do next")
    config_signature: str | None = Field(None, description="HMAC-SHA256 of config.yaml with the key of the user who "
                                         "made the run (~/.config/agenttrain/run-signing.key): `eval` and `--resume` "
                                         "send that user's API key to the endpoints of a config.yaml it matches "
                                         "without asking (null: not signed)")


class Action(BaseModel):
    """One optimizer action of an epoch."""

    model_config = ConfigDict(extra="allow")
    action: str = Field(description="add_function, revise_function, remove_function or terminate")
    name: str | None = Field(None, description="the function it touches")
    status: str = Field("applied", description="applied, rejected or terminate")
    error: str | None = Field(None, description="why the last attempt was rejected")
    attempts: int = Field(1, description="tries the optimizer needed")
    reason: str | None = Field(None, description="the optimizer's own explanation, if it gave one")
    tasks: list[str] | None = Field(None, description="optimizer.method tool_creation: the training tasks the "
                                                      "function was written for")

    def to_json(self) -> Data:
        """As journaled and saved: `tasks` only where a method sets it."""
        return self.model_dump(mode="json", exclude={"tasks"} if self.tasks is None else set())


class FunctionEffect(BaseModel):
    """What one function of a set did on the tasks where the agent called it, against the set it came from."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="the function")
    calls: int = Field(description="calls the agent made to it")
    failed_calls: int = Field(0, description="calls that raised or were refused")
    tasks: list[str] = Field(default_factory=list, description="the tasks where it was called")
    right: int = Field(0, description="of those tasks, how many ended right")
    fixed: list[str] = Field(default_factory=list, description="of those tasks, the ones the parent set got wrong "
                                                               "and this set got right")
    broken: list[str] = Field(default_factory=list, description="the ones the parent set got right and this set "
                                                                "got wrong")


class Comparison(BaseModel):
    """Two function sets on the same tasks, paired by task."""

    model_config = ConfigDict(extra="allow")
    against: str = Field(description="what this set was compared with: the incumbent, or epoch N")
    split: str = Field(description="the tasks compared on: train, minibatch or val")
    paired: int = Field(description="tasks scored with both sets")
    fixed: int = Field(description="wrong before, right now")
    broken: int = Field(description="right before, wrong now")
    p_value: float = Field(description="exact McNemar test, two-sided: the chance of so uneven a split if the "
                                       "sets were equally good")


class Candidate(BaseModel):
    """How a search candidate came about and how it fared (optimizer.method search)."""

    model_config = ConfigDict(extra="allow")
    operation: str = Field(description="mutation (an optimizer step from one parent), merge (two parents' "
                                       "functions united) or library (the pool's best-recorded functions)")
    parents: list[int] = Field(description="the epochs whose sets it came from")
    minibatch: list[str] = Field(default_factory=list, description="the training tasks of its gate")
    parent_correct: int = Field(0, description="minibatch tasks the parent got right")
    correct: int = Field(0, description="minibatch tasks the candidate got right")
    passed_gate: bool = Field(False, description="whether it beat its parent on the minibatch and so ran on the "
                                                 "validation split")
    on_front: bool = Field(False, description="whether no earlier set was as good on every validation task and "
                                              "better on one when it was recorded")
    note: str | None = Field(None, description="why it stopped where it did, when it stopped early")


EpochStatus = Literal["baseline", "accepted", "rolled_back", "unchanged"]


class EpochMetrics(Record):
    title = "epoch metrics file"
    file = "epoch-N/metrics.json"
    about = "One epoch's outcome; the folder appears complete or not at all."

    epoch: int = Field(description="N of epoch-N; 0 is the baseline without learned functions")
    status: EpochStatus = Field(description="baseline, accepted, rolled_back (candidate was worse), or unchanged "
                                            "(the optimizer changed nothing)")
    accepted: bool = Field(description="whether this epoch's functions became the kept set")
    train_accuracy: float = Field(description="accuracy of this epoch's functions on the training tasks it ran")
    train_correct: int = Field(description="training tasks answered correctly")
    train_n: int = Field(description="training tasks run")
    train_accuracy_strict: float | None = Field(None, description="strict accuracy, for scorers that have one")
    train_errors: int = Field(0, description="rollouts that ended in an error")
    incumbent_accuracy: float = Field(description="score of the kept set after this epoch: training accuracy, or "
                                                  "validation accuracy for a method that selects by it (search)")
    val_accuracy: float | None = Field(None, description="accuracy of this epoch's functions on the validation split "
                                                         "(null: not run on it)")
    val_correct: int | None = Field(None, description="validation tasks answered correctly")
    val_n: int | None = Field(None, description="validation tasks run")
    rollouts: int | None = Field(None, description="rollouts this epoch ran, every phase (null in older runs)")
    candidate: Candidate | None = Field(None, description="search: how this candidate came about (null otherwise)")
    function_count: int = Field(description="functions in this epoch's set")
    actions: list[Action] = Field(default_factory=list, description="the optimizer's actions")
    prompt_cuts: list[str] = Field(default_factory=list, description="what the optimizer's prompt left out to fit "
                                                                     "the model's context (empty: nothing)")
    comparison: Comparison | None = Field(None, description="this epoch's set against the set it was judged "
                                                            "against, task by task (null: none, as for the baseline)")
    attribution: list[FunctionEffect] = Field(default_factory=list, description="per function of this epoch's set: "
                                              "where it was called and how those tasks went against the parent")
    stale: int = Field(description="epochs in a row without an improvement (early stop counts these)")
    best_epoch: int = Field(description="best epoch so far")
    best_accuracy: float = Field(description="score of the best epoch so far (validation accuracy for a method "
                                             "that selects by it, else training accuracy)")
    best_reason: str | None = Field(None, description="why the best epoch is the best (best.json is rebuilt from "
                                    "it when a process died before writing best.json)")
    usage: UsageByRole = Field(default_factory=dict, description=f"spent in this epoch, {USAGE_HELP}")
    duration_s: float = Field(description="wall time of the epoch in seconds")

    @property
    def applied_actions(self) -> int:
        """Actions applied (rejected ones and TERMINATE are not)."""
        return sum(1 for a in self.actions if a.status == "applied")


class FunctionCallRecord(BaseModel):
    """One call of a learned function in a rollout."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="the function the agent called (possibly one that does not exist)")
    ok: bool = Field(description="whether the call returned without an error")
    error: str | None = Field(None, description="the error's type or message")
    arguments: dict[str, Any] | None = Field(None, description="the arguments it was called with (null: unreadable "
                                                               "ones, or a run from before they were kept)")
    result: str | None = Field(None, description="the text the agent saw back: output, returned value and error, "
                                                 "capped at sandbox.max_output_chars (null: a run from before)")


class Rollout(BaseModel):
    """One conversation of the agent on one task, as the agent leaves it: what scoring reads."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(description="the task's id")
    prediction: str | None = Field(description="the text the answer was extracted from")
    messages: list[dict[str, Any]] = Field(default_factory=list, description="the whole conversation, "
                                                                             "OpenAI chat format")
    stop_reason: str = Field(description="answered, terminate, max_turns, context_length, llm_error (the endpoint "
                                         "failed; retried), request_refused (the endpoint refused what the "
                                         "conversation or the functions hold) or internal_error")
    turns: int = Field(0, description="model replies in the conversation")
    function_calls: list[FunctionCallRecord] = Field(default_factory=list, description="learned functions called")
    code_runs: int = Field(0, description="code blocks the agent ran")
    code_errors: int = Field(0, description="code blocks that raised")
    error: str | None = Field(None, description="why the rollout could not finish")

    @property
    def failed_calls(self) -> int:
        return sum(not call.ok for call in self.function_calls)

    @property
    def endpoint_failed(self) -> bool:
        """Cut short by the endpoint: not an answer, so it must never count as a wrong one."""
        return self.stop_reason == "llm_error"


class RolloutRecord(Record, Rollout):
    title = "rollout record"
    file = "epoch-N/rollouts.jsonl, evals/STEM.rollouts.jsonl (one line each)"
    about = "One conversation of the agent on one task, scored: the agent's `Rollout` and the scorer's verdict."

    question: str = Field(description="the task as the agent saw it")
    gold: str = Field(description="the reference answer")
    extracted: str | None = Field(description="the answer the scorer extracted")
    correct: bool = Field(description="the scorer's verdict")
    strict: bool | None = Field(None, description="the strict verdict, for scorers that have one")
    score_note: str | None = Field(None, description="why the scorer decided as it did, when it says")


@dataclass(frozen=True)
class Summary:
    """Accuracy of a list of scored rollouts."""

    correct: int
    n: int
    errors: int  # rollouts that ended in an error
    accuracy_strict: float | None  # for scorers that have a strict verdict

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @classmethod
    def of(cls, correct: Sequence[bool], strict: Sequence[bool | None], errors: int = 0) -> Summary:
        """Strict accuracy only where every verdict has a strict one."""
        n = len(correct)
        has_strict = n > 0 and all(s is not None for s in strict)
        return cls(sum(correct), n, errors, sum(bool(s) for s in strict) / n if has_strict else None)

    def fields(self) -> dict[str, float | int | None]:
        """As EpochMetrics and EvalResult name them (without their `train_` prefix)."""
        return {"accuracy": self.accuracy, "correct": self.correct, "n": self.n,
                "accuracy_strict": self.accuracy_strict, "errors": self.errors}


def summarise(records: Sequence[RolloutRecord]) -> Summary:
    return Summary.of([r.correct for r in records], [r.strict for r in records], sum(1 for r in records if r.error))


class Best(Record):
    title = "best.json"
    file = "best.json"
    about = ("The best epoch, for readers such as jq, written after its snapshot. agenttrain itself (`eval --epoch "
             "best`, `export`, `show`) reads the best epoch from the last snapshot's metrics, which cannot lag behind.")

    epoch: int = Field(description="the best epoch")
    train_accuracy: float = Field(description="its score: training accuracy, or validation accuracy when "
                                              "`selected_by` says so")
    selected_by: str = Field("train", description="the split the best epoch was chosen on: train or val")
    reason: str = Field(description="why it is the best")


class EvalResult(Record):
    title = "eval result"
    file = "evals/STEM.json (STEM: [transfer-NAME-]SPLIT-epoch-N)"
    about = "One `agenttrain eval`; its rollouts are in evals/STEM.rollouts.jsonl."

    run: str = Field(description="the run directory when it was evaluated")
    epoch: int = Field(description="the evaluated epoch")
    split: str = Field(description="test, train or val")
    task: str | None = Field(None, description="the task evaluated on (another one for a transfer evaluation)")
    accuracy: float = Field(description="fraction answered correctly")
    correct: int = Field(description="tasks answered correctly")
    n: int = Field(description="tasks evaluated")
    accuracy_strict: float | None = Field(None, description="strict accuracy, for scorers that have one")
    errors: int = Field(0, description="rollouts that ended in an error")
    ci95: list[float] | None = Field(None, description="95% confidence interval of the accuracy, by `ci_method`")
    ci_method: str | None = Field(None, description="how `ci95` was computed: wilson (Wilson score interval); "
                                                    "null: an older result's percentile bootstrap over tasks")
    functions_hash: str | None = Field(None, description="hash of the evaluated function set; `eval --epoch all` "
                                                         "reuses a result whose set it has (null: older result, "
                                                         "never reused)")
    reused_from: int | None = Field(None, description="the epoch whose evaluation of the same function set this "
                                                      "result repeats, at no cost (null: this one ran)")
    usage: UsageByRole = Field(default_factory=dict, description=f"spent by the evaluation, {USAGE_HELP} "
                                                                  "(empty when reused)")


RECORDS: tuple[type[Record], ...] = (RunInfo, EpochMetrics, RolloutRecord, Best, EvalResult)


# -- upgrades ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upgrade:
    """The step from format `to - 1` to format `to`: a function per record model whose files changed."""

    to: int
    name: str
    changes: Mapping[str, Callable[[Data], Data]] = field(default_factory=dict)


def _v1_run_info(data: Data) -> Data:
    return {**data, "format_version": 2, "config_hash": None}


UPGRADES: tuple[Upgrade, ...] = (
    Upgrade(2, "format_version in run.json; per-task config makes format-1 config hashes meaningless",
            {"RunInfo": _v1_run_info}),
)


def check_version(version: Any, where: Path | str) -> int:
    if not isinstance(version, int) or version < FIRST_FORMAT:
        raise UserError(f"{where}: format_version {version!r} is not a run format version")
    if version > FORMAT_VERSION:
        raise UserError(f"{where}: this run is in format {version}, newer than this agenttrain reads "
                        f"(format {FORMAT_VERSION}); upgrade agenttrain (pip install -U agenttrain) to open it")
    return version


def steps_after(version: int) -> list[Upgrade]:
    return [step for step in UPGRADES if step.to > version]


def run_format(run_json: Any, where: Path | str) -> int:
    """The format a run was written in, from its run.json as stored."""
    if not isinstance(run_json, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(run_json).__name__}")
    return check_version(run_json.get("format_version", FIRST_FORMAT), where)


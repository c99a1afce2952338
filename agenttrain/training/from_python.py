"""Training from Python objects, as in a notebook: examples in memory and a scorer that is a plain function.

    result = agenttrain.train(task=[{"question": "What is 6 times 7?", "answer": "42"}, ...],
                              agent="gpt-4o-mini", optimizer="gpt-4o", scorer=lambda answer, gold: ...)

The examples become an `inline` task (tasks/inline.py), so the run folder holds its data and config.yaml is the
whole experiment: `show`, `diff`, `report`, `export` and `view` work on it as on any run. A scorer function runs in
this process (scorers/in_process.py says why), so a run trained with one is evaluated from Python, in a process
where it is registered; a scorer name (`numeric`, `exact`, `math`, a plugin's) works from the command line too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agenttrain.config import experiment_from
from agenttrain.errors import UserError
from agenttrain.scorers.in_process import UserScorer, register_scorer
from agenttrain.training.launch import TrainOutcome, check_experiment, train_experiment

if TYPE_CHECKING:
    from agenttrain.training.trainer import Reporter

Examples = Sequence[Mapping[str, Any] | tuple[Any, Any]]  # {"question", "answer", ...} or (question, answer)
Role = str | Mapping[str, Any] | None  # a model name, or the role's config keys
SOURCE = "agenttrain.train()"


def rows(examples: Examples, what: str) -> list[dict[str, Any]]:
    """The examples as the inline task's rows: mappings kept (other keys reach the scorer), pairs named."""
    if isinstance(examples, (str, bytes, Mapping)):
        raise UserError(f"{SOURCE}: {what} must be a list of examples, e.g. [{{'question': ..., 'answer': ...}}]")
    found = []
    for number, example in enumerate(examples, start=1):
        if isinstance(example, Mapping):
            found.append(dict(example))
        elif isinstance(example, tuple) and len(example) == 2:
            found.append({"question": example[0], "answer": example[1]})
        else:
            raise UserError(f"{SOURCE}: {what}[{number - 1}] is a {type(example).__name__}; give a mapping with "
                            "'question' and 'answer', or a (question, answer) pair")
    return found


def _section(value: Role, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    return {key: value} if isinstance(value, str) else dict(value)


def experiment_data(task: Examples, test: Examples | None, agent: Role, optimizer: Role, scorer: UserScorer | str,
                    llm: Role, name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config these arguments stand for, as YAML would give it (`settings`: any other sections)."""
    scorer_name = scorer if isinstance(scorer, str) else register_scorer(scorer)
    inline = {"name": "inline", "train": rows(task, "task"), "scorer": scorer_name,
              **({"test": rows(test, "test")} if test is not None else {})}
    data: dict[str, Any] = {"name": name, **(settings or {}), "task": {**dict((settings or {}).get("task", {})),
                                                                       **inline}}
    for key, value, field in (("agent", agent, "model"), ("optimizer", optimizer, "model"), ("llm", llm, "base_url")):
        data[key] = {**dict(data.get(key, {})), **_section(value, field)}
    return data


def train_examples(
    task: Examples, test: Examples | None = None, *, agent: Role = None, optimizer: Role = None,
    scorer: UserScorer | str = "exact", llm: Role = None, name: str = "notebook",
    settings: Mapping[str, Any] | None = None, use_cache: bool = True, reporter: Reporter | None = None,
    offline: bool = False,
) -> TrainOutcome:
    """Train on `task` (held out for test: `test`, else 20% of `task`), scored by `scorer`; see the module."""
    experiment = experiment_from(experiment_data(task, test, agent, optimizer, scorer, llm, name, settings), SOURCE)
    if not isinstance(scorer, str) and experiment.executor.kind != "local":
        raise UserError(f"{SOURCE}: a scorer given as a function runs in this process, which Ray workers cannot "
                        "call; use executor.kind: local, or a registered scorer (docs/adding-a-task.md)")
    check_experiment(experiment, SOURCE, offline)
    return train_experiment(experiment, use_cache, reporter)

"""Search inside a run's transcripts: the rollouts of its epochs and evaluations whose question, conversation
(messages, tool calls and their arguments), answer or gold hold the words, each with the passage around its first
hit. The words are matched as one phrase, ignoring case."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agenttrain.readback.history import load_evaluations
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import RolloutRecord
from agenttrain.viewer.site import Rollouts, epoch_rollouts, evaluation_named
from agenttrain.viewer.transcript import content_text
from agenttrain.viewer.urls import eval_name

AROUND_CHARS = 70  # shown on each side of the first hit


@dataclass(frozen=True)
class Hit:
    rollouts: Rollouts  # the epoch or evaluation the rollout belongs to
    task: str
    correct: bool
    count: int  # hits in this rollout
    before: str
    match: str
    after: str


def searched_text(record: RolloutRecord) -> str:
    """Everything of a rollout a reader may look for, one part a line."""
    parts = [record.question]
    for message in record.messages:
        parts.append(content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            parts.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    parts += [record.prediction or "", record.extracted or "", record.gold]
    return "\n".join(parts)


def _hit(rollouts: Rollouts, record: RolloutRecord, phrase: str) -> Hit | None:
    text = searched_text(record)
    lowered = text.lower()
    start = lowered.find(phrase)
    if start < 0:
        return None
    end = start + len(phrase)

    def flat(piece: str) -> str:
        return " ".join(piece.split())

    before, after = text[max(start - AROUND_CHARS, 0) : start], text[end : end + AROUND_CHARS]
    return Hit(rollouts, record.id, record.correct, lowered.count(phrase),
               ("…" if start > AROUND_CHARS else "") + flat(before), text[start:end],
               flat(after) + ("…" if end + AROUND_CHARS < len(text) else ""))


def rollout_sets(run: RunDir) -> Iterator[Rollouts]:
    """The epochs' rollouts, in order, then every evaluation's."""
    for epoch in run.epochs():
        yield epoch_rollouts(run, epoch)
    for evaluation in load_evaluations(run):
        yield evaluation_named(run, eval_name(evaluation))[1]


def search(run: RunDir, words: str) -> list[Hit]:
    phrase = " ".join(words.split()).lower()
    if not phrase:
        return []
    hits = []
    for rollouts in rollout_sets(run):
        index = rollouts.index
        for row in index.rows:
            if (hit := _hit(rollouts, index.record(row), phrase)) is not None:
                hits.append(hit)
    return hits

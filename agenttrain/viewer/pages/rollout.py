"""One rollout as a conversation, and two rollouts of the same task side by side (an outcome that flipped)."""

from __future__ import annotations

from collections.abc import Mapping

from agenttrain.names import STRICT_MEANING
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import RolloutRecord
from agenttrain.viewer.highlight import code
from agenttrain.viewer.html import Markup, el, joined, layout, link, page_slice, pager, render, verdict
from agenttrain.viewer.rollout_index import RolloutSummary
from agenttrain.viewer.site import NotFound, Rollouts, Site, epoch_rollouts, evaluation_named, snapshot
from agenttrain.viewer.transcript import Segment, Turn, conversation
from agenttrain.viewer.urls import compare_path, diff_url, run_url

MESSAGES_PER_PAGE = 100
OUTPUT_LABELS = ("sandbox output", "observation")
FOLD_CHARS, SHOWN_CHARS = 6_000, 2_000  # a message longer than FOLD_CHARS shows about SHOWN_CHARS, the rest folded


def _folded(tag: str, text: str, css: str) -> Markup:
    """Long text shows its start; the rest waits in a closed <details>, which the browser does not lay out."""
    if len(text) <= FOLD_CHARS:
        return el(tag, text, class_=css)
    cut = text.rfind("\n", 0, SHOWN_CHARS) + 1 or SHOWN_CHARS
    return render([el(tag, text[:cut], class_=css),
                   el("details", el("summary", f"{len(text) - cut:,} more characters"), el(tag, text[cut:], class_=css),
                      class_="more")])


def _segment(segment: Segment, keep_as_written: bool) -> Markup:
    if segment.kind == "reasoning":
        return el("details", el("summary", "reasoning"), _folded("div", segment.text, "text"), class_="reasoning")
    if keep_as_written:
        return _folded("pre", segment.text, "output")
    return code(segment.text, segment.language) if segment.kind == "code" else _folded("div", segment.text, "text")


def _turn(turn: Turn) -> Markup:
    keep_as_written = turn.role == "tool" or turn.label in OUTPUT_LABELS
    parts = [_segment(s, keep_as_written) for s in turn.segments]
    parts += [el("div", el("span", "calls ", class_="muted"), el("code", c.name),
                     el("span", f" ({c.id})", class_="muted") if c.id else None, code(c.arguments, c.language),
                     class_="call") for c in turn.tool_calls]
    head = el("div", turn.label, el("span", f" #{turn.number}", class_="muted"), class_="who")
    if turn.role == "system":
        return el("details", el("summary", head), parts, class_="msg system", id=f"m{turn.number}")
    return el("div", head, parts, class_=f"msg {turn.role} {turn.label.replace(' ', '-')}", id=f"m{turn.number}")


def _calls(record: RolloutRecord) -> Markup:
    if not record.function_calls:
        return el("span", "none")
    return el("ul", [el("li", el("code", c.name), " ",
                        el("span", "ok", class_="ok") if c.ok else el("span", "failed", class_="bad"),
                        f": {c.error}" if c.error else "") for c in record.function_calls], class_="calls")


def _facts(record: RolloutRecord) -> Markup:
    facts = [
        ("result", verdict(record.correct)),
        ("answer", el("code", str(record.extracted)), el("span", " (extracted)", class_="muted")),
        ("gold", el("code", record.gold)),
        ("strict", *((verdict(record.strict), el("span", f" ({STRICT_MEANING.removeprefix('strict: ')})",
                                                  class_="muted")) if record.strict is not None else ("–",))),
        ("scorer's note", record.score_note or "–"),
        ("stop reason", record.stop_reason or "–"),
        ("turns", record.turns),
        ("function calls", _calls(record)),
        ("code runs", f"{record.code_runs} ({record.code_errors} failed)"),
        ("error", el("span", record.error, class_="error") if record.error else "–"),
    ]
    return el("dl", [[el("dt", k), el("dd", *v)] for k, *v in facts], class_="facts answer")


def _find(rollouts: Rollouts, task: str) -> RolloutSummary:
    row = rollouts.index.find(task)
    if row is None:
        raise NotFound(f"{rollouts.title} has no rollout of task {task!r}")
    return row


def transcript(record: RolloutRecord, page: int, path: str, query: Mapping[str, str]) -> Markup:
    """The answer against the gold, then the conversation, a page of messages at a time."""
    turns = conversation(record.messages)
    visible, page, pages = page_slice(turns, page, MESSAGES_PER_PAGE)
    shown = [_turn(t) for t in visible] or el("p", "This rollout recorded no messages.", class_="muted")
    return render([_facts(record), el("h2", f"Conversation ({len(turns)} messages)"),
                   pager(path, query, page, pages), el("div", shown, class_="conversation"),
                   pager(path, query, page, pages)])


def _neighbours(rollouts: Rollouts, row: RolloutSummary) -> Markup:
    rows = rollouts.index.rows
    before = rows[row.line - 1] if row.line else None
    after = rows[row.line + 1] if row.line + 1 < len(rows) else None
    others = [link(s.task_url(row.id), s.title) for s in rollouts.siblings if s.index.find(row.id) is not None]
    steps = [link(rollouts.task_url(before.id), f"← {before.id}") if before else None,
             link(rollouts.task_url(after.id), f"{after.id} →") if after else None]
    return el("p", joined([s for s in steps if s], " · "),
              [" · this task in ", joined(others, ", ")] if others else None, class_="around")


def _rollout_page(run: RunDir, rollouts: Rollouts, task: str, query: Mapping[str, str], page: int) -> Markup:
    row = _find(rollouts, task)
    record = rollouts.index.record(row)
    return layout(
        f"{task} · {rollouts.title}",
        [("/", "runs"), (run_url(run), run.path.name), (rollouts.url, rollouts.title), (None, task)],
        _neighbours(rollouts, row),
        el("section", el("h2", "Task"), el("div", record.question, class_="text question")),
        transcript(record, page, rollouts.task_url(task), query),
    )


def epoch_rollout_page(site: Site, name: str, epoch: str, task: str, query: Mapping[str, str], page: int) -> Markup:
    run = site.run(name)
    return _rollout_page(run, epoch_rollouts(run, snapshot(run, epoch).epoch), task, query, page)


def eval_rollout_page(site: Site, name: str, evaluation: str, task: str, query: Mapping[str, str],
                      page: int) -> Markup:
    run = site.run(name)
    return _rollout_page(run, evaluation_named(run, evaluation)[1], task, query, page)


def compare_page(site: Site, name: str, task: str, query: Mapping[str, str], page: int) -> Markup:
    """The same task in epochs a and b, side by side."""
    run = site.run(name)
    a, b = snapshot(run, query.get("a", "")).epoch, snapshot(run, query.get("b", "")).epoch
    columns = []
    for epoch in (a, b):
        rollouts = epoch_rollouts(run, epoch)
        record = rollouts.index.record(_find(rollouts, task))
        columns.append(el("div", el("h2", link(rollouts.task_url(task), rollouts.title)),
                          transcript(record, page, compare_path(run, task), query), class_="column"))
    return layout(
        f"{task}: epoch {a} and epoch {b}",
        [("/", "runs"), (run_url(run), name), (diff_url(run, a, b), f"diff {a} → {b}"), (None, task)],
        el("div", columns, class_="side-by-side"),
    )

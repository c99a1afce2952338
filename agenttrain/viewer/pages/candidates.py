"""A search run's candidates: the lineage tree from the baseline, and the front of the pool as the run left it.

Every candidate is an epoch; its record (metrics.candidate) names its parents, how it came about and how far it
went (the minibatch gate, the validation split). The front is rebuilt from the saved validation rollouts with the
search's own pool, so the page shows the sets the search would draw parents from next.
"""

from __future__ import annotations

from collections.abc import Sequence

from agenttrain.optimizers.pool import Member, Pool, solver_counts
from agenttrain.rundir.directory import RunDir, Snapshot
from agenttrain.viewer.html import Markup, el, layout, link, percent, table
from agenttrain.viewer.site import Site
from agenttrain.viewer.urls import diff_url, epoch_url, run_url


def is_search(snapshots: Sequence[Snapshot]) -> bool:
    return any(s.metrics.candidate is not None for s in snapshots)


def _pool(snapshots: Sequence[Snapshot]) -> Pool:
    pool = Pool()
    for s in snapshots:
        pool.join(s.epoch, s.functions, s.val_rollouts())
    return pool


def _node(run: RunDir, s: Snapshot, front: set[int], best: int | None) -> Markup:
    """One candidate's line: what it was, how it did at the gate and on the validation split, where it stands."""
    c, m = s.metrics.candidate, s.metrics
    marks = [el("span", " ★ best", class_="ok") if s.epoch == best else None,
             el("span", " · on the front", class_="ok") if s.epoch in front else None]
    if c is None:
        return el("span", link(epoch_url(run, s.epoch), f"epoch {s.epoch}"), " baseline, validation ",
                  percent(m.val_accuracy), *marks)
    parents = " + ".join(f"epoch {p}" for p in c.parents)
    gate = f"minibatch {c.parent_correct} → {c.correct} of {len(c.minibatch)}" if c.minibatch else "no gate"
    went = f", validation {percent(m.val_accuracy)}" if c.passed_gate else f" ({c.note})" if c.note else ""
    return el("span", link(epoch_url(run, s.epoch), f"epoch {s.epoch}"), f" {c.operation} of {parents}: {gate}",
              went, " ", link(diff_url(run, c.parents[0], s.epoch), "diff", class_="side"),
              el("span", f" {m.function_count} functions", class_="muted"), *marks,
              class_=f"outcome {m.status}")


def _tree(run: RunDir, snapshots: Sequence[Snapshot], front: set[int], best: int | None) -> Markup:
    """Nested lists: a candidate sits under its first parent (a merge names its second in its line)."""
    children: dict[int, list[Snapshot]] = {}
    for s in snapshots:
        if s.metrics.candidate is not None:
            children.setdefault(s.metrics.candidate.parents[0], []).append(s)

    def branch(s: Snapshot) -> Markup:
        below = children.get(s.epoch, [])
        return el("li", _node(run, s, front, best), el("ul", [branch(c) for c in below]) if below else None)

    roots = [s for s in snapshots if s.metrics.candidate is None]
    return el("ul", [branch(s) for s in roots], class_="lineage")


def _front(run: RunDir, members: list[Member]) -> Markup:
    solvers = solver_counts(members)
    rows = [[link(epoch_url(run, m.epoch), f"epoch {m.epoch}"), percent(m.accuracy), len(m.functions),
             ", ".join(sorted(t for t in m.solved if solvers[t] == 1)) or "–"] for m in members]
    return table(["set", "validation", "functions", "validation tasks it alone solves"], rows, id="front")


def candidates_page(site: Site, name: str) -> Markup:
    run = site.run(name)
    snapshots = [run.snapshot(e) for e in run.epochs()]
    crumbs = [("/", "runs"), (run_url(run), name), (None, "candidates")]
    if not is_search(snapshots):
        return layout(f"{name}: candidates", crumbs, el("p", "This run has no search candidates: its "
                                                             "optimizer method is not search.", class_="muted"))
    pool = _pool(snapshots)
    members = pool.front(max(run.epochs(), default=0) + 1)
    best = run.best_if_any()
    passed = sum(bool(s.metrics.candidate and s.metrics.candidate.passed_gate) for s in snapshots)
    summary = (f"{len(snapshots) - 1} candidates, {passed} passed the gate and ran on the validation split; "
               f"{len(members)} sets on the front")
    return layout(
        f"{name}: candidates", crumbs,
        el("p", summary),
        el("section", el("h2", "The front"), el("p", "No set is at least as good on every validation task and "
                                                   "better on one.", class_="muted"), _front(run, members)),
        el("section", el("h2", "Lineage"), _tree(run, snapshots, {m.epoch for m in members}, best)),
    )

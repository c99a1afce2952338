"""Two epochs compared: the code diff of each changed function and the training tasks that flipped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agenttrain.functions import Function
from agenttrain.readback.compare import function_changes, outcome_flips
from agenttrain.stats import compare_outcomes
from agenttrain.viewer.highlight import code
from agenttrain.viewer.html import Markup, el, layout, link, page_slice, pager, percent, render, table, verdict
from agenttrain.viewer.pages.epoch import function_block
from agenttrain.viewer.site import Site, epoch_rollouts, snapshot
from agenttrain.viewer.urls import compare_url, epoch_url, run_url, task_url

FLIPS_PER_PAGE = 50


def _functions(changes: dict[str, Any]) -> Markup:
    parts = []
    for added in changes["added"]:
        parts.append(el("div", el("h3", "added"), function_block(Function.from_dict(added)), class_="change added"))
    for name in changes["removed"]:
        parts.append(el("div", el("h3", "removed ", el("code", name)), class_="change removed"))
    for revised in changes["revised"]:
        parts.append(el("div", el("h3", "revised ", el("code", revised["name"])), code(revised["diff"], "diff"),
                        class_="change revised"))
    if changes["unchanged"]:
        parts.append(el("p", "unchanged: ", [[el("code", n), " "] for n in changes["unchanged"]], class_="muted"))
    return render(parts) if parts else el("p", "No function changed.", class_="muted")


def diff_page(site: Site, name: str, query: Mapping[str, str], page: int) -> Markup:
    run = site.run(name)
    a, b = snapshot(run, query.get("a", "")), snapshot(run, query.get("b", ""))
    # outcomes from the epochs' rollout indexes: a diff of large epochs never parses their transcripts again
    before, after = (epoch_rollouts(run, s.epoch).index.rows for s in (a, b))
    paired, flips = compare_outcomes(before, after), outcome_flips(before, after)
    shown, page, pages = page_slice(flips, page, FLIPS_PER_PAGE)
    rows = [[link(task_url(epoch_url(run, b.epoch), f["id"]), f["id"]), verdict(f["before"]), verdict(f["after"]),
             link(compare_url(run, f["id"], a.epoch, b.epoch), "side by side", class_="side")] for f in shown]
    summary = (f"train accuracy {percent(a.metrics.train_accuracy)} → "
               f"{percent(b.metrics.train_accuracy)}; {paired.fixed} fixed, {paired.broken} broken "
               f"(exact McNemar p = {paired.p_value:.3g})")
    val_a, val_b = a.val_rollouts(), b.val_rollouts()
    if val_a is not None and val_b is not None:  # search candidates: judged on the validation split
        on_val = compare_outcomes(val_a, val_b)
        summary += (f"; validation accuracy {percent(a.metrics.val_accuracy)} → {percent(b.metrics.val_accuracy)}, "
                    f"{on_val.fixed} fixed, {on_val.broken} broken (p = {on_val.p_value:.3g})")
    path = f"{run_url(run)}diff"
    return layout(
        f"epoch {a.epoch} → epoch {b.epoch}",
        [("/", "runs"), (run_url(run), name), (None, f"diff {a.epoch} → {b.epoch}")],
        el("p", link(epoch_url(run, a.epoch), f"epoch {a.epoch}"), " → ",
           link(epoch_url(run, b.epoch), f"epoch {b.epoch}"), ": ", summary),
        el("section", el("h2", "Functions"), _functions(function_changes(a, b))),
        el("section", el("h2", f"Tasks that flipped ({len(flips)})"),
           render([table(["task", f"epoch {a.epoch}", f"epoch {b.epoch}", "transcripts"], rows, id="flips"),
                   pager(path, query, page, pages)]) if flips
           else el("p", "No task changed outcome.", class_="muted")),
    )

"""Two epochs compared: the code diff of each changed function and the training tasks that flipped."""

from __future__ import annotations

from collections.abc import Mapping

from agenttrain.compare import diff_snapshots
from agenttrain.functions import Function
from agenttrain.viewer.highlight import code
from agenttrain.viewer.html import Markup, el, layout, link, percent, table, verdict
from agenttrain.viewer.pages.epoch import function_block
from agenttrain.viewer.site import Site, snapshot
from agenttrain.viewer.urls import compare_url, epoch_url, run_url, task_url


def _functions(result: dict) -> Markup:
    parts = []
    for added in result["added"]:
        parts.append(el("div", el("h3", "added"), function_block(Function.from_dict(added)), class_="change added"))
    for name in result["removed"]:
        parts.append(el("div", el("h3", "removed ", el("code", name)), class_="change removed"))
    for revised in result["revised"]:
        parts.append(el("div", el("h3", "revised ", el("code", revised["name"])), code(revised["diff"], "diff"),
                        class_="change revised"))
    if result["unchanged"]:
        parts.append(el("p", "unchanged: ", [[el("code", n), " "] for n in result["unchanged"]], class_="muted"))
    return Markup("".join(parts)) if parts else el("p", "No function changed.", class_="muted")


def diff_page(site: Site, name: str, query: Mapping[str, str]) -> Markup:
    run = site.run(name)
    a, b = snapshot(run, query.get("a", "")), snapshot(run, query.get("b", ""))
    result = diff_snapshots(a, b)
    flips = [[link(task_url(epoch_url(run, b.epoch), f["id"]), f["id"]), verdict(f["before"]), verdict(f["after"]),
              link(compare_url(run, f["id"], a.epoch, b.epoch), "side by side", class_="side")]
             for f in result["flips"]]
    summary = (f"train accuracy {percent(result['a']['train_accuracy'])} → {percent(result['b']['train_accuracy'])}; "
               f"{result['fixed']} fixed, {result['broken']} broken (exact McNemar p = {result['mcnemar_p']:.3g})")
    return layout(
        f"epoch {a.epoch} → epoch {b.epoch}",
        [("/", "runs"), (run_url(run), name), (None, f"diff {a.epoch} → {b.epoch}")],
        el("p", link(epoch_url(run, a.epoch), f"epoch {a.epoch}"), " → ", link(epoch_url(run, b.epoch),
                                                                                 f"epoch {b.epoch}"), ": ", summary),
        el("section", el("h2", "Functions"), _functions(result)),
        el("section", el("h2", f"Tasks that flipped ({len(flips)})"),
           table(["task", f"epoch {a.epoch}", f"epoch {b.epoch}", "transcripts"], flips, id="flips") if flips
           else el("p", "No task changed outcome.", class_="muted")),
    )

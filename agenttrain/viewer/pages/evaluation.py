"""One held-out evaluation (`agenttrain eval`): its accuracy with the interval, and a table of its rollouts."""

from __future__ import annotations

from collections.abc import Mapping

from agenttrain.names import STRICT_MEANING
from agenttrain.viewer.html import Markup, dollars, el, layout, link, percent
from agenttrain.viewer.pages.rollouts_table import rollouts_table
from agenttrain.viewer.site import Site, evaluation_named
from agenttrain.viewer.urls import epoch_url, run_url


def evaluation_page(site: Site, name: str, evaluation: str, query: Mapping[str, str], page: int) -> Markup:
    run = site.run(name)
    found, rollouts = evaluation_named(run, evaluation)
    interval = found.ci95
    facts = [
        ("split", found.split),
        ("functions of", link(epoch_url(run, found.epoch), f"epoch {found.epoch}")),
        ("accuracy", f"{percent(found.accuracy)} ({found.correct}/{found.n})"),
        ("95% CI (Wilson)", f"{percent(interval[0])} – {percent(interval[1])}" if interval else "–"),
        *([("strict accuracy", f"{percent(found.accuracy_strict)} ({STRICT_MEANING.removeprefix('strict: ')})")]
          if found.accuracy_strict is not None else []),
        ("cost", dollars(found.cost_usd)),
    ]
    return layout(
        f"{name} · {rollouts.title}", [("/", "runs"), (run_url(run), name), (None, rollouts.title)],
        el("dl", [[el("dt", k), el("dd", v)] for k, v in facts], class_="facts"),
        el("section", el("h2", "Rollouts"), rollouts_table(rollouts, query, page)),
    )

"""A run's transcripts searched: every rollout whose conversation holds the words, with the passage around them."""

from __future__ import annotations

from collections.abc import Mapping

from agenttrain.viewer.html import Markup, el, layout, link, page_slice, pager, table, verdict
from agenttrain.viewer.search import search
from agenttrain.viewer.site import Site
from agenttrain.viewer.urls import run_url, search_url

HITS_PER_PAGE = 50


def search_form(action: str, words: str = "") -> Markup:
    return el("form", el("input", type="search", name="q", value=words, placeholder="words in the transcripts",
                         aria_label="search the transcripts"),
              el("button", "search", type="submit"), method="get", action=action, class_="filters")


def search_page(site: Site, name: str, query: Mapping[str, str], page: int) -> Markup:
    run = site.run(name)
    words = query.get("q", "").strip()
    hits = search(run, words)
    visible, page, pages = page_slice(hits, page, HITS_PER_PAGE)
    rows = [[link(h.rollouts.url, h.rollouts.title), link(h.rollouts.task_url(h.task), h.task), verdict(h.correct),
             h.count, el("div", h.before, el("mark", h.match), h.after, class_="prose")] for h in visible]
    found = (el("p", f"{len(hits)} rollouts hold “{words}”, ignoring case.", class_="muted"),
             table(["in", "task", "result", "hits", "first hit"], rows, id="hits") if rows else None,
             pager(search_url(run), query, page, pages)) if words else ()
    return layout(
        f"{name} · search", [("/", "runs"), (run_url(run), name), (None, "search")],
        search_form(search_url(run), words),
        el("p", "Questions, messages, tool calls with their arguments, answers and golds of every epoch and "
                "evaluation.", class_="muted"),
        *found,
    )

"""The learning curve as inline SVG: train accuracy per epoch marked by outcome, the kept set's accuracy, and
each evaluated split's accuracy. Drawn on the server, so the page needs no charting script."""

from __future__ import annotations

from dataclasses import dataclass

from agenttrain.readback.history import outcome_label
from agenttrain.viewer.html import Markup, el

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 12, 28


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    train_accuracy: float
    kept_accuracy: float | None  # the incumbent's accuracy after this epoch (a rolled-back set does not count)
    outcome: str  # baseline | accepted | rolled_back | unchanged


def _x(epoch: float, last: int) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (epoch / last if last else 0.5)


def _y(accuracy: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - accuracy)


def _axes(epochs: list[int], last: int) -> list[Markup]:
    marks = []
    for level in (0, 0.25, 0.5, 0.75, 1):
        y = _y(level)
        marks.append(el("line", x1=LEFT, x2=WIDTH - RIGHT, y1=y, y2=y, class_="grid"))
        marks.append(el("text", f"{level:.0%}", x=LEFT - 6, y=y + 4, class_="tick", text_anchor="end"))
    step = max(1, len(epochs) // 12)
    marks += [el("text", e, x=_x(e, last), y=HEIGHT - 8, class_="tick", text_anchor="middle") for e in epochs[::step]]
    return marks


def _polyline(points: list[tuple[int, float]], last: int, css: str) -> Markup:
    coordinates = " ".join(f"{_x(e, last):.1f},{_y(a):.1f}" for e, a in points)
    return el("polyline", points=coordinates, class_=css)


def learning_curve(points: list[EpochPoint], held_out: dict[str, list[tuple[int, float]]]) -> Markup:
    if not points:
        return Markup("")
    epochs = [p.epoch for p in points]
    last = max([*epochs, *(e for series in held_out.values() for e, _ in series)])
    kept = [(p.epoch, p.kept_accuracy) for p in points if p.kept_accuracy is not None]
    marks = [*_axes(epochs, last), _polyline(kept, last, "kept")]
    # held-out first, so that a train mark at the same place stays visible inside the larger diamond
    for n, (split, series) in enumerate(sorted(held_out.items())):
        marks.append(_polyline(series, last, f"held-out split-{n % 4}"))
        for epoch, accuracy in series:
            x, y = _x(epoch, last), _y(accuracy)
            diamond = f"{x:.1f},{y - 8:.1f} {x + 8:.1f},{y:.1f} {x:.1f},{y + 8:.1f} {x - 8:.1f},{y:.1f}"
            marks.append(el("polygon", el("title", f"epoch {epoch}: {split} {accuracy:.1%}"), points=diamond,
                            class_=f"held-out-mark split-{n % 4}"))
    marks.append(_polyline([(p.epoch, p.train_accuracy) for p in points], last, "train"))
    for p in points:
        tip = f"epoch {p.epoch}: train {p.train_accuracy:.1%}, {outcome_label(p.outcome)}"
        marks.append(el("circle", el("title", tip), cx=_x(p.epoch, last), cy=_y(p.train_accuracy), r=4.5,
                        class_=f"mark {p.outcome}"))
    return el("svg", marks, viewBox=f"0 0 {WIDTH} {HEIGHT}", class_="curve", role="img",
              aria_label="learning curve: accuracy per epoch")


def legend(held_out_splits: list[str]) -> Markup:
    items = [el("span", el("i", class_=f"key {status}"), outcome_label(status))
             for status in ("baseline", "accepted", "rolled_back", "unchanged")]
    items.append(el("span", el("i", class_="key kept-key"), "kept set"))
    items += [el("span", el("i", class_=f"key held-out-key split-{n % 4}"), split)
              for n, split in enumerate(sorted(held_out_splits))]
    return el("p", items, class_="legend")

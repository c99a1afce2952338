"""What a long run shows on stderr: a line per phase (rollouts, the optimizer thinking, the candidate's
evaluation), `epoch k/N`, an ETA, and run totals (tokens, cost, cache hits, retries) that never reset.

`RichReporter` draws a live bar on a terminal; `PlainReporter` prints plain lines for logs and CI.
Both count the same things (`Tally`), so they always agree with each other and with the run's summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from agenttrain.endpoint.usage import Usage
from agenttrain.errors import UserError
from agenttrain.readback.history import action_outcome, outcome_label
from agenttrain.rundir.records import Action, EpochMetrics, RolloutRecord
from agenttrain.wording import clock, plural

LLM_LOGGER = "agenttrain.endpoint.client"  # where LLMClient logs its retries, with the wait in `retry_wait_s`
PLAIN_UPDATE_S = 10.0  # the plain reporter's progress line, at most this often per phase
STATUS_EVERY_S = 2.0  # how often a status line is computed (it may read files)
PLAIN_STATUS_S = 30.0  # and printed as a plain line, when it changed
RETRY_SUMMARY_S = 2.0  # and its retry line: a burst of failures is one line, not one per request


@dataclass
class Phase:
    """One stretch of rollouts (or the optimizer's step) within an epoch."""

    label: str
    total: int = 0
    reused: int = 0  # rollouts a resumed run took from its journal instead of running again
    done: int = 0  # run in this process
    correct: int = 0  # of the finished ones
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.reused + self.done

    def eta_s(self) -> float | None:
        if not self.done:
            return None
        return (time.monotonic() - self.started) / self.done * (self.total - self.finished)

    def accuracy(self) -> str:
        """Over every finished rollout, reused ones too: the same figure the epoch's summary gives."""
        return "-" if not self.finished else f"{self.correct / self.finished:.2f}"

    def progress(self) -> str:
        accuracy = self.accuracy()
        eta = self.eta_s()
        reused = f" ({self.reused} reused)" if self.reused else ""
        return (f"{self.finished}/{self.total}{reused} acc {accuracy} "
                f"ETA {'?' if eta is None else clock(eta)}")


class Tally:
    """Counts shared by both reporters: the current phase, and totals for the whole run."""

    def __init__(self) -> None:
        self.epochs: int | None = None  # the last epoch number, when training
        self.phase: Phase | None = None
        self.rollouts = 0
        self.reused = 0
        self.earlier = 0  # a resumed run's rollouts of the epochs it had finished: the totals are the run's
        self.retries = 0
        self.usage = Usage()

    def epoch_label(self, epoch: int) -> str:
        return f"epoch {epoch}" if self.epochs is None else f"epoch {epoch}/{self.epochs}"

    def totals(self) -> str:
        u = self.usage
        reused = f" ({self.reused} reused)" if self.reused else ""
        return (f"run total: {plural(self.earlier + self.rollouts + self.reused, 'rollout')}{reused}, "
                f"{u.total_tokens:,} tokens, ${u.cost_usd:.4f}, {plural(u.cache_hits, 'cache hit')}, "
                f"{plural(self.retries, 'retry', 'retries')}")


class RetryWatcher(logging.Handler):
    """Hears LLMClient's retry log records and tells the reporter, so a struggling endpoint shows live."""

    def __init__(self, on_retry: Any) -> None:
        super().__init__(logging.INFO)
        self.on_retry = on_retry
        self._logger = logging.getLogger(LLM_LOGGER)
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        wait = getattr(record, "retry_wait_s", None)
        if wait is not None:
            self.on_retry(getattr(record, "role", "llm"), float(wait))

    def __enter__(self) -> RetryWatcher:
        self._logger.addHandler(self)
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


class BaseReporter:
    """The trainer's and eval's calls, turned into `Tally` counts and lines; subclasses draw them."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tally = Tally()
        self._watcher = RetryWatcher(self.retrying)

    def __enter__(self) -> BaseReporter:
        self._watcher.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watcher.__exit__(*exc)

    # -- the Reporter protocol (trainer.Reporter) -----------------------------------------------------------

    def run_started(self, epochs: int, next_epoch: int, sizes: str, resumed: bool, earlier_rollouts: int = 0
                    ) -> None:
        self.tally.epochs = epochs
        self.tally.earlier = earlier_rollouts
        self.line(f"task: {sizes}; epochs 0-{epochs}" + (f", resuming at epoch {next_epoch}" if resumed else ""))

    def epoch_started(self, epoch: int, phase: str, tasks: int, reused: int = 0, reused_correct: int = 0) -> None:
        what = {"candidate": "rollouts" if epoch == 0 else "evaluating the candidate",
                "incumbent": "rollouts of the kept functions"}.get(phase, phase.replace("eval ", "evaluating on "))
        self.tally.phase = Phase(f"{self.tally.epoch_label(epoch)} {what}", tasks, reused, correct=reused_correct)
        self.tally.reused += reused
        self.phase_changed()

    def rollout_done(self, record: RolloutRecord, usage: Usage) -> None:
        phase = self.tally.phase
        if phase is not None:
            phase.done += 1
            phase.correct += record.correct
        self.tally.rollouts += 1
        self.tally.usage = usage
        self.progressed()

    def optimizer_started(self, epoch: int, max_actions: int) -> None:
        self.phase_done()
        label = f"{self.tally.epoch_label(epoch)} optimizer thinking (up to {plural(max_actions, 'action')})"
        self.tally.phase = Phase(label)
        self.phase_changed()

    def optimizer_done(self, epoch: int, actions: list[Action], usage: Usage) -> None:
        self.tally.usage = usage
        took = time.monotonic() - self.tally.phase.started if self.tally.phase else 0.0
        self.tally.phase = None
        self.line(f"{self.tally.epoch_label(epoch)} optimizer: {action_outcome(actions)}, in {took:.1f}s")
        self.phase_changed()

    def waiting(self, message: str) -> None:
        self.console.print(f"[yellow]waiting:[/] {message}", highlight=False)

    def epoch_done(self, metrics: EpochMetrics) -> None:
        self.phase_done()
        label = self.tally.epoch_label(metrics.epoch)
        if metrics.prompt_cuts:
            self.line(f"{label} optimizer prompt cut to fit the model's context: {'; '.join(metrics.prompt_cuts)}")
        self.line(f"{label}: train accuracy {metrics.train_accuracy:.3f}, "
                  f"{outcome_label(metrics.status)}, {plural(metrics.applied_actions, 'action')} applied, "
                  f"{plural(metrics.function_count, 'function')}")
        self.epoch_summarised()

    def retrying(self, role: str, wait_s: float) -> None:
        self.tally.retries += 1
        self.retry_seen(role, wait_s)

    def phase_done(self) -> None:
        """Close the current rollout phase with its final line (eval ends this way too, from `__exit__`)."""
        phase = self.tally.phase
        if phase is not None and phase.total:
            took = time.monotonic() - phase.started
            self.line(f"{phase.label}: {phase.finished}/{phase.total} done, acc {phase.accuracy()} in {took:.1f}s"
                      + (f" ({phase.reused} reused)" if phase.reused else ""))
            self.tally.phase = None

    # -- drawing, by subclass -------------------------------------------------------------------------------

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def phase_changed(self) -> None: ...
    def progressed(self) -> None: ...
    def epoch_summarised(self) -> None: ...
    def retry_seen(self, role: str, wait_s: float) -> None: ...


class PlainReporter(BaseReporter):
    """Plain lines, no cursor movement: for CI logs, pipes and files."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._last_line = 0.0
        self._last_retry = 0.0
        self._unreported_retries = 0

    def epoch_summarised(self) -> None:
        self.line(self.tally.totals())

    def phase_changed(self) -> None:
        phase = self.tally.phase
        if phase is not None:
            self.line(f"{phase.label} ..." if not phase.total else f"{phase.label}: {phase.progress()}")
        self._last_line = time.monotonic()

    def progressed(self) -> None:
        if time.monotonic() - self._last_line >= PLAIN_UPDATE_S and self.tally.phase is not None:
            self.line(f"{self.tally.phase.label}: {self.tally.phase.progress()}")
            self._last_line = time.monotonic()

    def retry_seen(self, role: str, wait_s: float) -> None:
        self._unreported_retries += 1
        if time.monotonic() - self._last_retry >= RETRY_SUMMARY_S:
            self.line(f"endpoint: {plural(self._unreported_retries, 'failed request')} ({role}), retrying; "
                      f"waiting {wait_s:.0f}s ({self.tally.retries} retries so far)")
            self._last_retry, self._unreported_retries = time.monotonic(), 0

    def __exit__(self, *exc: object) -> None:
        self.phase_done()
        super().__exit__(*exc)


class RichReporter(BaseReporter):
    """A live two-line display on a terminal: the current phase with its bar, and the run's totals.
    Finished phases and epochs are printed above it as plain lines."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._retry_note = ""
        self.live = Live(console=console, refresh_per_second=4, transient=True, get_renderable=self._render)

    def phase_changed(self) -> None:
        if not self.live.is_started:  # only once work starts: an early error prints alone, on its first line
            self.live.start()

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        self.phase_done()
        if self.tally.rollouts or self.tally.reused:  # the live line had them; they stay on screen
            self.line(self.tally.totals())
        super().__exit__(*exc)

    def _render(self) -> RenderableType:
        phase = self.tally.phase
        lines: list[RenderableType] = []
        if phase is not None and phase.total:
            width = 30
            filled = int(width * phase.finished / phase.total) if phase.total else 0
            lines.append(Text.assemble((phase.label, "bold"), " ", ("━" * filled, "magenta"),
                                       ("━" * (width - filled), "grey37"), " ", phase.progress()))
        elif phase is not None:
            lines.append(Text.assemble((phase.label, "bold"), f" … {time.monotonic() - phase.started:.0f}s"))
        status = self.tally.totals() + (f"  {self._retry_note}" if self._retry_note else "")
        lines.append(Text(status, style="dim" if not self._retry_note else "yellow"))
        return Group(*lines)

    def retry_seen(self, role: str, wait_s: float) -> None:
        retries = plural(self.tally.retries, "retry", "retries")
        self._retry_note = f"endpoint ({role}): {retries}, waiting {wait_s:.0f}s"

    def progressed(self) -> None:
        self._retry_note = ""  # a rollout finished: the endpoint answers again


class StatusLine:
    """A line that `compute` gives afresh every STATUS_EVERY_S, from a thread of its own: live at the foot of a
    terminal, or printed as a plain line when it changed, at most every PLAIN_STATUS_S (and once more at the end).
    Other lines printed to the console meanwhile go above it."""

    def __init__(self, console: Console, compute: Callable[[], str]) -> None:
        self.console = console
        self.compute = compute
        self._text = ""
        self._printed = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="agenttrain-status", daemon=True)
        self.live = Live(console=console, refresh_per_second=2, transient=True,
                         get_renderable=lambda: Text(self._text, style="dim")) if console.is_terminal else None

    def __enter__(self) -> StatusLine:
        if self.live is not None:
            self.live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.live is not None:
            self.live.stop()
        self._update()
        self._print()

    def _follow(self) -> None:
        last_print = time.monotonic()
        while not self._stop.wait(STATUS_EVERY_S):
            self._update()
            if self.live is None and time.monotonic() - last_print >= PLAIN_STATUS_S:
                self._print()
                last_print = time.monotonic()

    def _update(self) -> None:
        try:
            self._text = self.compute()
        except (OSError, ValueError, UserError) as exc:  # a file replaced mid-read: the next look will do
            logging.getLogger(__name__).debug("status line: %s", exc)

    def _print(self) -> None:
        if self._text and self._text != self._printed:
            self.console.print(self._text, highlight=False, markup=False)
            self._printed = self._text

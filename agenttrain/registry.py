"""What agenttrain can be extended with: tasks, agents, scorers, optimizer methods and report plots, one registry
per kind.

Built-ins register with a decorator (`@tasks.register("math")`); other packages through Python entry
points in the groups `agenttrain.tasks`, `agenttrain.agents`, `agenttrain.scorers` and `agenttrain.optimizers`,
whose names are the names a config uses and whose values are the registered objects:

    [project.entry-points."agenttrain.tasks"]
    trivia = "my_package.tasks:TriviaTask"

Nothing is imported until a registry is first asked (built-in tasks pull in sympy and math-verify), so
`import agenttrain` and `agenttrain --help` stay fast; asked for one name, a registry imports the built-ins and
only the plugins of that name, so that a scorer process does not import a plugin's optimizer (and openai).
This module sits on the ground floor, below the kinds it lists: it names their modules as strings and holds
their objects untyped; each kind's package gives the typed way in (`tasks.load_task`, `agents.make_agent`,
`scorers.judge`, `optimizers.make_optimizer`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from agenttrain.errors import UserError

T = TypeVar("T")
BUILT_IN = "agenttrain (built-in)"
HERE = "this Python process"


class UnknownName(UserError, ValueError):
    """A name nothing registered; a ValueError too, so config validation reports it under its key."""


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    value: Any
    source: str  # BUILT_IN, or the distribution and entry point that provided it

    @property
    def target(self) -> str:
        """Where the registered object is defined, as module:name."""
        return f"{self.value.__module__}:{getattr(self.value, '__qualname__', self.name)}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "target": self.target, "source": self.source}


class Registry(Generic[T]):
    def __init__(self, kind: str, builtin_modules: tuple[str, ...], group: str | None) -> None:
        self.kind = kind
        self.builtin_modules = builtin_modules
        self.group = group  # the entry point group, None for kinds only agenttrain itself provides
        self._entries: dict[str, Registration] = {}
        self._loaded = False  # the built-ins
        self._plugins_asked: set[str | None] = set()  # names whose plugins are loaded; None: every plugin

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a built-in under `name`."""
        def register(value: T) -> T:
            self._add(name, value, BUILT_IN)
            return value

        return register

    def register_here(self, name: str, value: T) -> None:
        """Register `value` for this process only (a function defined in a notebook), replacing what this process
        registered under `name` before: a notebook cell run again redefines it."""
        self._load()
        known = self._entries.get(name)
        if known is not None and known.source != HERE:
            raise UserError(f"{self.kind} {name!r} is already registered by {known.source}; choose another name")
        self._entries[name] = Registration(self.kind, name, value, HERE)

    def _add(self, name: str, value: Any, source: str) -> None:
        known = self._entries.get(name)
        if known is not None and known.value is not value:
            raise UserError(f"{source} registers {self.kind} {name!r}, which {known.source} already registers; "
                            f"uninstall one of them")
        self._entries[name] = Registration(self.kind, name, value, source)

    def _load(self, name: str | None = None) -> None:
        """The built-ins, and the plugins registering `name` (None: all of them)."""
        if not self._loaded:
            self._loaded = True  # set first: a built-in module importing another registry does not loop
            for module in self.builtin_modules:
                importlib.import_module(module)
        if None in self._plugins_asked or name in self._plugins_asked:
            return
        self._plugins_asked.add(name)
        for entry_point in metadata.entry_points(group=self.group) if self.group else ():
            if name is not None and entry_point.name != name:
                continue
            dist = entry_point.dist
            source = f"{dist.name} {dist.version}" if dist else "an entry point"
            source += f" (entry point {self.group}: {entry_point.name})"
            try:
                value = entry_point.load()
            except Exception as exc:  # a broken plugin must name itself, whatever it raised
                raise UserError(f"{source}: cannot load {entry_point.value}: {exc!r}; fix or uninstall "
                                "that package") from None
            self._add(entry_point.name, value, source)

    def get(self, name: str) -> T:
        self._load(name)
        if name not in self._entries:
            known = self.names()  # every plugin's, not only those that name `name`
            close = difflib.get_close_matches(name, known, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownName(f"unknown {self.kind} {name!r}; {guess}registered: {', '.join(sorted(known))} "
                              "(`agenttrain plugins` lists them)")
        value: T = self._entries[name].value
        return value

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def registrations(self) -> list[Registration]:
        """Built-ins first, then plugins, each by name."""
        self._load()
        return sorted(self._entries.values(), key=lambda r: (r.source != BUILT_IN, r.name))


tasks: Registry[Any] = Registry(
    "task", ("agenttrain.tasks.math", "agenttrain.tasks.jsonl", "agenttrain.tasks.inline", "agenttrain.tasks.tabmwp",
             "agenttrain.tasks.gaia"),
    "agenttrain.tasks",
)
agents: Registry[Any] = Registry(
    "agent", ("agenttrain.agents.assistant", "agenttrain.agents.react"), "agenttrain.agents"
)
scorers: Registry[Any] = Registry(
    "scorer", ("agenttrain.scorers.math", "agenttrain.scorers.tabmwp", "agenttrain.scorers.gaia",
               "agenttrain.scorers.basic"), "agenttrain.scorers",
)
optimizers: Registry[Any] = Registry(
    "optimizer method",
    ("agenttrain.optimizers.progressive", "agenttrain.optimizers.all_at_once", "agenttrain.optimizers.tool_creation",
     "agenttrain.optimizers.search"),
    "agenttrain.optimizers",
)
plots: Registry[Any] = Registry("plot", ("agenttrain.readback.plots",), None)
REGISTRIES = (tasks, agents, scorers, optimizers, plots)


def all_registrations() -> list[Registration]:
    """Everything registered, kind by kind, for `agenttrain plugins`."""
    return [r for registry in REGISTRIES for r in registry.registrations()]

"""Learned functions, the agent's trainable "weights": validation, hashing, and rendering as tools."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED_NAMES = frozenset({"python"})  # the ReAct agent's built-in code tool


class InvalidFunction(ValueError):
    """An optimizer action that cannot be applied; the message is shown back to the optimizer."""


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    parameters: dict[str, Any]  # a full JSON object schema
    code: str  # the complete `def name(...)` source
    packages: tuple[str, ...] = ()

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "packages": list(self.packages),
            "code": self.code,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Function:
        return cls(
            name=data["name"],
            description=data["description"],
            parameters=data["parameters"],
            code=data["code"],
            packages=tuple(data.get("packages", ())),
        )

    def to_openai_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def to_text(self) -> str:
        """One block per function, for ReAct tool lists and optimizer prompts."""
        return f"{self.name}: {self.description}\n  arguments (JSON schema): {json.dumps(self.parameters)}"


@dataclass(frozen=True)
class FunctionSet:
    """An ordered, immutable set of functions with unique names; edits return a new set."""

    functions: tuple[Function, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Function]:
        return iter(self.functions)

    def __len__(self) -> int:
        return len(self.functions)

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.functions)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    def get(self, name: str) -> Function | None:
        return next((f for f in self.functions if f.name == name), None)

    def add(self, function: Function) -> FunctionSet:
        if function.name in self:
            raise InvalidFunction(f"a function named {function.name!r} already exists; use revise_function")
        return FunctionSet((*self.functions, function))

    def revise(self, function: Function) -> FunctionSet:
        if function.name not in self:
            raise InvalidFunction(f"no function named {function.name!r} to revise; existing: {self.names}")
        return FunctionSet(tuple(function if f.name == function.name else f for f in self.functions))

    def remove(self, name: str) -> FunctionSet:
        if name not in self:
            raise InvalidFunction(f"no function named {name!r} to remove; existing: {self.names}")
        return FunctionSet(tuple(f for f in self.functions if f.name != name))

    def to_openai_tools(self) -> list[dict[str, Any]]:
        return [f.to_openai_tool() for f in self.functions]

    def to_json(self) -> list[dict[str, Any]]:
        return [{**f.to_dict(), "hash": f.content_hash()} for f in self.functions]

    def content_hash(self) -> str:
        """Equal for equal sets (same functions, same order), so an evaluation of one can stand for the other."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, items: list[Mapping[str, Any]]) -> FunctionSet:
        return cls(tuple(Function.from_dict(item) for item in items))



def parse_packages(packages: str | list[str] | None) -> tuple[str, ...]:
    """The paper's `packages` field is one string; accept "sympy numpy", "sympy, numpy" or a list."""
    if packages is None:
        return ()
    items = packages if isinstance(packages, list) else re.split(r"[\s,]+", packages)
    names = [str(p).strip() for p in items if str(p).strip()]
    return tuple(dict.fromkeys(n for n in names if n.lower() not in {"none", "n/a", "-"}))


def parse_parameters(arguments: str | dict[str, Any]) -> dict[str, Any]:
    """`arguments` is a JSON string of either the properties object (as in the paper) or a full schema."""
    if isinstance(arguments, str):
        try:
            schema = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidFunction(f"`arguments` is not valid JSON: {exc}") from None
    else:
        schema = arguments
    if not isinstance(schema, dict):
        raise InvalidFunction("`arguments` must be a JSON object mapping each parameter to its schema")
    if schema.get("type") == "object" and isinstance(schema.get("properties", {}), dict):
        properties = schema.get("properties", {})
        required = schema.get("required", list(properties))
    else:
        properties, required = schema, list(schema)
    for name, spec in properties.items():
        if not isinstance(spec, dict):
            raise InvalidFunction(f"parameter {name!r}: its schema must be an object such as {{\"type\": \"string\"}}")
    return {"type": "object", "properties": properties, "required": [r for r in required if r in properties]}


def _find_def(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    raise InvalidFunction(
        f"`code` must define `def {name}(...)` at the top level (the name must match `name`); "
        f"it defines {defined or 'no function'}"
    )


def _check_signature(node: ast.FunctionDef, parameters: dict[str, Any]) -> None:
    args = node.args
    positional = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    schema_names = set(parameters["properties"])
    if set(positional) != schema_names and not (args.kwarg and set(positional) <= schema_names):
        raise InvalidFunction(
            f"the parameters of `def {node.name}` {positional} do not match the names in `arguments` "
            f"{sorted(schema_names)}; make them agree"
        )


def build_function(name: str, description: str, arguments: str | dict[str, Any], packages: Any, code: str) -> Function:
    """Validate one add/revise payload; raises InvalidFunction with a reason the optimizer can act on."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidFunction(f"`name` {name!r} must be a Python identifier")
    if name in RESERVED_NAMES:
        raise InvalidFunction(f"`name` {name!r} is reserved for the built-in code tool")
    if not isinstance(description, str) or not description.strip():
        raise InvalidFunction("`description` must say what the function does")
    if not isinstance(code, str) or not code.strip():
        raise InvalidFunction("`code` must hold the full Python function, starting with `def`")
    parameters = parse_parameters(arguments)
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise InvalidFunction(f"`code` does not compile: {exc.msg} (line {exc.lineno})") from None
    _check_signature(_find_def(tree, name), parameters)
    return Function(name, description.strip(), parameters, code.strip() + "\n", parse_packages(packages))

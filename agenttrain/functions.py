"""Learned functions, the agent's trainable "weights": validation, hashing, and rendering as tools."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agenttrain.untrusted import NESTED_TOO_DEEP, loads, parse_python, too_deep

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
    def from_dict(cls, data: Any) -> Function:
        """A saved function, checked as `build_function` checks a new one's name: the name becomes a file name
        (functions/<name>.py), so a run folder we did not write must not choose it. Raises InvalidFunction."""
        if not isinstance(data, Mapping):
            raise InvalidFunction(f"expected a function object, found {type(data).__name__}")
        fields = {"name": str, "description": str, "parameters": dict, "code": str}
        if wrong := [f for f, kind in fields.items() if not isinstance(data.get(f), kind)]:
            raise InvalidFunction(f"function {data.get('name')!r}: missing or mistyped {', '.join(wrong)}")
        packages = data.get("packages", ())
        if not isinstance(packages, list | tuple) or not all(isinstance(p, str) for p in packages):
            raise InvalidFunction(f"function {data['name']!r}: `packages` must be a list of names")
        if not isinstance(data["parameters"].get("properties"), dict):
            raise InvalidFunction(f"function {data['name']!r}: `parameters` has no `properties` object")
        check_name(data["name"])
        return cls(data["name"], data["description"], data["parameters"], data["code"], tuple(packages))

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
    def from_json(cls, items: Any) -> FunctionSet:
        """A saved set (functions.json, a journaled proposal); raises InvalidFunction when it is not one."""
        if not isinstance(items, list):
            raise InvalidFunction(f"expected a list of functions, found {type(items).__name__}")
        functions = tuple(Function.from_dict(item) for item in items)
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise InvalidFunction(f"a function name is given twice in {names}")
        return cls(functions)



def parse_packages(packages: str | list[str] | None) -> tuple[str, ...]:
    """The paper's `packages` field is one string; accept "sympy numpy", "sympy, numpy" or a list."""
    if packages is None:
        return ()
    if not isinstance(packages, str | list):
        raise InvalidFunction("`packages` must be a string of package names, e.g. \"sympy numpy\"")
    items = packages if isinstance(packages, list) else re.split(r"[\s,]+", packages)
    names = [str(p).strip() for p in items if str(p).strip()]
    return tuple(dict.fromkeys(n for n in names if n.lower() not in {"none", "n/a", "-"}))


def parse_parameters(arguments: str | dict[str, Any]) -> dict[str, Any]:
    """`arguments` is a JSON string of either the properties object (as in the paper) or a full schema."""
    if isinstance(arguments, str):
        try:
            schema = loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidFunction(f"`arguments` is not valid JSON: {exc}") from None
    else:
        schema = arguments
    if not isinstance(schema, dict):
        raise InvalidFunction("`arguments` must be a JSON object mapping each parameter to its schema")
    if too_deep(schema):
        raise InvalidFunction(f"`arguments` is {NESTED_TOO_DEEP}")
    if schema.get("type") == "object" and isinstance(schema.get("properties", {}), dict):
        properties = schema.get("properties", {})
        required = schema.get("required", list(properties))
        if not isinstance(required, list):
            raise InvalidFunction("`required` must be a list of parameter names")
    else:
        properties, required = schema, list(schema)
    for name, spec in properties.items():
        if not isinstance(spec, dict):
            raise InvalidFunction(f"parameter {name!r}: its schema must be an object such as {{\"type\": \"string\"}}")
        check_schema(spec, f"parameter {name!r}")
    return {"type": "object", "properties": properties,
            "required": [r for r in required if isinstance(r, str) and r in properties]}


JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})


def check_schema(schema: dict[str, Any], where: str) -> None:
    """Refuse what strict endpoints refuse in a tool's parameters (OpenAI answers HTTP 400 for the whole request,
    so every rollout of the set would fail): an unknown type, an array without an `items` schema, `properties`
    that are not schemas, an empty `enum`. The message says where, so the optimizer can fix it."""
    types = schema.get("type")
    named = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    if "type" in schema and not (named and all(isinstance(t, str) and t in JSON_TYPES for t in named)):
        raise InvalidFunction(f"{where}: `type` {types!r} is not a JSON schema type; use one of {sorted(JSON_TYPES)}")
    if "array" in named and not isinstance(schema.get("items"), dict):
        raise InvalidFunction(f"{where}: an array needs an `items` schema, e.g. \"items\": {{\"type\": \"number\"}}")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        raise InvalidFunction(f"{where}: `enum` must be a non-empty list of values")
    for child, place in _subschemas(schema, where):
        check_schema(child, place)


def _subschemas(schema: dict[str, Any], where: str) -> Iterator[tuple[dict[str, Any], str]]:
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(spec, dict) for spec in properties.values()):
        raise InvalidFunction(f"{where}: `properties` must map each name to a schema object")
    yield from ((spec, f"{where}, property {name!r}") for name, spec in properties.items())
    if isinstance(schema.get("items"), dict):
        yield schema["items"], f"{where}, items"
    for combined in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combined, [{}])
        if not (isinstance(options, list) and options and all(isinstance(o, dict) for o in options)):
            raise InvalidFunction(f"{where}: `{combined}` must be a non-empty list of schema objects")
        yield from ((option, f"{where}, {combined}") for option in schema.get(combined, []))


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


def check_name(name: Any) -> None:
    """A function's name is a Python identifier (it is also a file name in every snapshot) and not reserved."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidFunction(f"`name` {name!r} must be a Python identifier")
    if name in RESERVED_NAMES:
        raise InvalidFunction(f"`name` {name!r} is reserved for the built-in code tool")


def build_function(name: str, description: str, arguments: str | dict[str, Any], packages: Any, code: str) -> Function:
    """Validate one add/revise payload; raises InvalidFunction with a reason the optimizer can act on."""
    check_name(name)
    if not isinstance(description, str) or not description.strip():
        raise InvalidFunction("`description` must say what the function does")
    if not isinstance(code, str) or not code.strip():
        raise InvalidFunction("`code` must hold the full Python function, starting with `def`")
    parameters = parse_parameters(arguments)
    try:
        tree = parse_python(code)
    except SyntaxError as exc:
        raise InvalidFunction(f"`code` does not compile: {exc.msg} (line {exc.lineno})") from None
    _check_signature(_find_def(tree, name), parameters)
    return Function(name, description.strip(), parameters, code.strip() + "\n", parse_packages(packages))

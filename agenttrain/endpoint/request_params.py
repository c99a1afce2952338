"""A role's model settings in the wire form its model family accepts, and the fix when an endpoint refuses one.

OpenAI's reasoning models (the o-series and the GPT-5 family) answer HTTP 400 to `max_tokens` (they take
`max_completion_tokens`, which also bounds their hidden reasoning), to a temperature other than the default
and to `stop`. So for them a null temperature is left out rather than sent as 0, `max_tokens` goes out under
the new name, and `stop` is dropped (the ReAct parser cuts a reply at its first `Observation:` anyway).
Every other model (vLLM, llama.cpp, Ollama, older OpenAI chat models) gets `max_tokens` and temperature 0
by default. A value the user sets is always sent: if the endpoint refuses it, the error names the key.
"""

from __future__ import annotations

import re
from typing import Any

from agenttrain.config import ModelParams

# after any provider prefix ("openai/o3" through LiteLLM or OpenRouter): o1, o3-mini, o4-mini, gpt-5, gpt-5.4-mini
# and the later GPT generations, all reasoning models; not gpt-4o, gpt-4.1 or local models
REASONING_MODEL = re.compile(r"^(o\d+|gpt-([5-9]|[1-9]\d))([.-]|$)")
CHAT_MODEL_TEMPERATURE = 0.0  # reproducible rollouts, and replies the response cache can stand in for
OPTIONAL_PARAMS = ("reasoning_effort", "top_p", "seed")
# how servers that do not fill in OpenAI's `param` word a refused field; a context-length error is not one
REFUSAL_WORDING = re.compile(r"unsupported|not supported|unknown|unrecognized|not permitted|not allowed|extra "
                             r"(fields|inputs)|invalid (parameter|value)", re.IGNORECASE)


def is_reasoning_model(model: str) -> bool:
    return REASONING_MODEL.match(model.rsplit("/", 1)[-1].lower()) is not None


def request_body(
    model: str,
    messages: list[dict[str, Any]],
    params: ModelParams,
    *,
    tools: list[dict[str, Any]] | None = None,
    stop: list[str] | None = None,
) -> dict[str, Any]:
    """The chat-completions request: the parameters that are set, under the names `model`'s family takes.
    Server-specific options stay under `extra_body`, which the openai client merges into the JSON."""
    reasoning = is_reasoning_model(model)
    temperature = params.temperature
    if temperature is None and not reasoning:
        temperature = CHAT_MODEL_TEMPERATURE
    body: dict[str, Any] = {"model": model, "messages": messages}
    optional = {
        "temperature": temperature,
        "max_completion_tokens" if reasoning else "max_tokens": params.max_tokens,
        **{name: getattr(params, name) for name in OPTIONAL_PARAMS},
        "tools": tools,
        "stop": None if reasoning else stop,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if params.extra_body:
        body["extra_body"] = dict(params.extra_body)
    return body


def config_key(role: str, param: str, body: dict[str, Any]) -> str | None:
    """The config key behind a request parameter, or None for what agenttrain sets itself."""
    if param in ("max_tokens", "max_completion_tokens"):
        return f"{role}.max_tokens"
    if param == "temperature" or param in OPTIONAL_PARAMS:
        return f"{role}.{param}"
    if param in body.get("extra_body", {}):
        return f"{role}.extra_body.{param}"
    return None


def refused_parameter(role: str, body: dict[str, Any], param: str | None, detail: str) -> str | None:
    """One line naming the config key to change when a 400 refuses a parameter we sent, else None.

    OpenAI names the parameter in the error's `param`; other servers only in the message, so there the names
    we sent are looked for in a message that reads as a refusal."""
    sent = [key for key in body if key not in ("model", "messages")] + list(body.get("extra_body", {}))
    if param:
        candidates = [param]
    elif REFUSAL_WORDING.search(detail):
        candidates = [key for key in sent if re.search(rf"\b{re.escape(key)}\b", detail)]
    else:
        return None
    for name in candidates:
        if (key := config_key(role, name, body)) is not None:
            return (f"the {role} endpoint refused {name!r} for model {body['model']!r} ({detail}); "
                    f"change or remove {key} in the config")
    return None

"""The model's context window: how servers say a request did not fit, and how big the window is.

A server that runs out of context answers HTTP 400; llama.cpp says "the request exceeds the available
context size", vLLM "This model's maximum context length is N tokens", OpenAI has the code
`context_length_exceeded`. llama.cpp also tells its window up front, in `GET /props`.
"""

from __future__ import annotations

import json
import urllib.request

CONTEXT_ERROR_MARKERS = ("exceeds the available context size", "maximum context length", "context_length_exceeded")


def is_context_error(status: int, code: str | None, message: str) -> bool:
    text = f"{code or ''} {message}".lower()
    return status == 400 and any(marker in text for marker in CONTEXT_ERROR_MARKERS)


def server_context_size(base_url: str | None, timeout_s: float = 3.0) -> int | None:
    """Tokens per request slot as the server reports them (llama.cpp's `/props`); None where it does not say."""
    if not base_url:
        return None
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/props", timeout=timeout_s) as response:
            props = json.load(response)
        size = props.get("default_generation_settings", {}).get("n_ctx")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and size > 0 else None

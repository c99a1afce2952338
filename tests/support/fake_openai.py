"""A fake OpenAI-compatible server on 127.0.0.1: real HTTP for the real `openai` client, scripted replies.

A test gives a `responder(request_body) -> reply`. Replies are decided from the request's content
(never from arrival order), so concurrent rollouts get deterministic answers. With `reasoning_rules=True`
the server refuses what OpenAI refuses for its reasoning models, with OpenAI's error bodies. With `rate_limit=N`
it answers 429 (with Retry-After) at once to a request that arrives while N are in flight, as a provider's
concurrency limit does.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 10
    completion_tokens: int = 5  # the visible answer; OpenAI's completion_tokens adds the reasoning tokens
    reasoning_tokens: int = 0  # reported as usage.completion_tokens_details.reasoning_tokens when set
    cached_prompt_tokens: int = 0  # reported as usage.prompt_tokens_details.cached_tokens when set


@dataclass
class Fault:
    """An HTTP failure: a status with an optional Retry-After and error code, a malformed body, a hang, a
    200 with an odd JSON body (`body`), or a connection reset before any reply (`reset`)."""

    status: int = 500
    retry_after: float | None = None
    malformed: bool = False
    delay_s: float = 0.0
    code: str | None = None  # the body's error.code, e.g. "insufficient_quota"
    message: str | None = None  # the body's error.message (default: "fake error <status>")
    param: str | None = None  # the body's error.param: the request field refused
    body: dict[str, Any] | None = None
    reset: bool = False


Responder = Callable[[dict[str, Any]], "Reply | Fault | str"]


def text(content: str) -> Reply:
    return Reply(content=content)


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str = "call_1") -> Reply:
    return tool_calls([(name, arguments)], call_id)


def tool_calls(calls: list[tuple[str, dict[str, Any] | str]], call_id: str = "call") -> Reply:
    return Reply(
        tool_calls=[
            {
                "id": f"{call_id}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ]
    )


def last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return str(users[-1].get("content") or "") if users else ""


def first_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return str(users[0].get("content") or "") if users else ""


# OpenAI's reasoning models, named independently of agenttrain's own rule so the two can disagree
REASONING_MODELS = ("o1", "o3", "o4-mini", "gpt-5")


def openai_reasoning_refusal(body: dict[str, Any]) -> Fault | None:
    """The 400 OpenAI answers a reasoning model's request with: `max_tokens`, `stop`, or a sampling value
    other than the default 1."""
    model = str(body.get("model", ""))
    if not any(model == name or model.startswith((name + "-", name + ".")) for name in REASONING_MODELS):
        return None
    for param in ("max_tokens", "stop"):
        if param in body:
            hint = " Use 'max_completion_tokens' instead." if param == "max_tokens" else ""
            return Fault(400, code="unsupported_parameter", param=param,
                         message=f"Unsupported parameter: '{param}' is not supported with this model.{hint}")
    for param in ("temperature", "top_p"):
        if param in body and body[param] != 1:
            return Fault(400, code="unsupported_value", param=param,
                         message=f"Unsupported value: '{param}' does not support {body[param]} with this model. "
                                 "Only the default (1) value is supported.")
    return None


def _usage(reply: Reply) -> dict[str, Any]:
    completion_tokens = reply.completion_tokens + reply.reasoning_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": reply.prompt_tokens + completion_tokens,
    }
    if reply.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens}
    if reply.cached_prompt_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_prompt_tokens}
    return usage


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
        ],
        "usage": _usage(reply),
    }


def _fault_response(fault: Fault) -> tuple[int, bytes, dict[str, str]]:
    if fault.delay_s:
        time.sleep(fault.delay_s)
    if fault.malformed:
        return 200, b'{"id": "chatcmpl-broken", "choices": [', {}
    if fault.body is not None:
        return 200, json.dumps(fault.body).encode(), {}
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    message = fault.message or f"fake error {fault.status}"
    error = {"error": {"message": message, "type": "fake", "code": fault.code, "param": fault.param}}
    return fault.status, json.dumps(error).encode(), headers


class _Server(ThreadingHTTPServer):
    # the default backlog of 5 drops connections when a test opens 16 at once (TCP retransmits add ~1 s)
    request_queue_size = 128


class FakeOpenAI:
    """Use as a context manager; `base_url` goes into the config, `requests` records every body.

    `max_in_flight` is the most requests the server was handling at the same time; `arrivals` the time.time() at
    which each of `requests` arrived (so that another process's clock can be compared), `ports` the client's port
    it came from; `refused` the arrival times of requests refused by the rate limit (not in `requests`).
    `GET /models` (the preflight) answers `models_status`, counted in `model_lists`.
    """

    def __init__(self, responder: Responder, latency_s: float = 0.0, reasoning_rules: bool = False,
                 models_status: int = 200, rate_limit: int | None = None, retry_after_s: float = 1.0) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.reasoning_rules = reasoning_rules
        self.models_status = models_status
        self.rate_limit = rate_limit
        self.retry_after_s = retry_after_s
        self.model_lists = 0
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.ports: list[int] = []
        self.refused: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # a short poll interval makes `__exit__` (server.shutdown) quick
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, body: dict[str, Any], port: int) -> bool:
        """Count the request in, or False when the rate limit refuses it."""
        with self._lock:
            if self.rate_limit is not None and self.in_flight >= self.rate_limit:
                self.refused.append(time.time())
                return False
            self.requests.append(body)
            self.arrivals.append(time.time())
            self.ports.append(port)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return True

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not fake._record(body, self.client_address[1]):
                    self._send(*_fault_response(Fault(429, retry_after=fake.retry_after_s, code="rate_limit_exceeded",
                                                      message="too many requests in flight")))
                    return
                try:
                    response = self._respond(body)
                finally:
                    fake._done()  # before the client sees the answer, so its next request never overlaps this one
                if response is None:
                    self._reset()
                else:
                    self._send(*response)

            def do_GET(self) -> None:
                if not self.path.rstrip("/").endswith("/models"):
                    self._send(404, b'{"error": {"message": "not found"}}', {})
                    return
                fake.model_lists += 1
                if fake.models_status != 200:
                    self._send(*_fault_response(Fault(status=fake.models_status)))
                    return
                models = {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "t"}]}
                self._send(200, json.dumps(models).encode(), {})

            def _respond(self, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]] | None:
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                if fake.reasoning_rules and (refusal := openai_reasoning_refusal(body)):
                    return _fault_response(refusal)
                reply = fake.responder(body)
                if isinstance(reply, str):
                    reply = Reply(content=reply)
                if isinstance(reply, Fault):
                    return None if reply.reset else _fault_response(reply)
                return 200, json.dumps(_completion(body, reply)).encode(), {}

            def _reset(self) -> None:
                """Close the connection with a TCP reset instead of a reply."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler

"""Model code runs in the worker, so it can reach the worker's end of the reply channel and write whatever frame it
likes there. Each such frame costs at most that call, as a capped result or a recorded error: never the trainer,
never another call, never the run's record of what the sandbox enforced."""

from __future__ import annotations

import resource
from typing import Any

import pytest

from agenttrain.functions import FunctionSet
from agenttrain.sandbox import STATE_LOST, ExecResult, Sandbox, SandboxSession
from agenttrain.sandbox.worker import truncation_note
from tests.test_sandbox import function, run_blocks, with_sandbox, with_session

pytestmark = pytest.mark.slow  # each test opens sandbox sessions

LIMIT = 1000
# Finds the worker's channel object and writes one frame on it, framed as our own code frames them: for the
# request being served, and claiming to be the supervisor's (or signed, where the channel has a key).
SEND = """
import gc, hmac, json, struct
from agenttrain.sandbox import channel as framing
channel = next(o for o in gc.get_objects() if isinstance(o, framing.Endpoint))
def send_raw(body):
    if hasattr(framing, "frame"):
        channel._socket.sendall(framing.frame(framing.FROM_SUPERVISOR, channel.request_id, body))
        return
    mac = hmac.digest(channel._key, body, "sha256")
    channel._socket.sendall(struct.pack("!I", len(mac) + len(body)) + mac + body)
def send(message):
    send_raw(json.dumps(message).encode())
"""
FORGED_RESULTS: dict[str, str] = {
    "huge output": 'send({"event": "result", "ok": True, "output": "x" * 5_000_000, "value": "v" * 9**6})',
    "wrong types": 'send({"event": "result", "ok": "yes", "output": 123, "error": [1], "value": {"a": 1}})',
    "missing fields": 'send({"event": "result"})',
    "not an object": "send([1, 2, 3])",
    "nested junk": 'send_raw(b\'{"event": "result", "ok": true, "output": \' + b"[" * 200_000 + b"]" * 200_000 + b"}")',
    "not json": 'send_raw(b"\\xff\\xfe not json")',
    "forged exit": 'send({"event": "exit", "status": "killed", "out_of_memory": "yes"})',
    "forged exit status": 'send({"event": "exit", "status": 2**80})',
    "forged failure": 'send({"event": "failed", "error": ""})',
    "unknown event": 'send({"event": "setup", "isolation": None})',
    "lone surrogates": 'send({"event": "result", "ok": True, "output": "\\ud800", "error": None, "value": "\\udfff"})',
}


def is_contained(result: ExecResult) -> bool:
    """A capped result, or a recorded error of this call."""
    capped = len(result.output) <= LIMIT + len(truncation_note(10**9)) + len(STATE_LOST) + 1
    capped = capped and (result.value is None or len(result.value) <= LIMIT + len(truncation_note(10**9)))
    recorded = result.ok or bool(result.error)
    texts = (result.output, result.value or "", result.error or "")
    encodable = all(text.encode("utf-8") is not None for text in texts)
    return capped and recorded and encodable


def test_forged_frames_cost_at_most_their_call_and_the_next_call_gets_its_own_result() -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def scenario(session: SandboxSession) -> dict[str, tuple[ExecResult, ExecResult]]:
        outcomes = {}
        for name, forge in FORGED_RESULTS.items():
            forged = await session.run_code(SEND + forge + "\nprint('the real output')")
            after = await session.run_code(f"print('after {name}')")
            outcomes[name] = (forged, after)
        return outcomes

    outcomes = with_session(scenario, max_output_chars=LIMIT, timeout_s=10)
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    for name, (forged, after) in outcomes.items():
        assert is_contained(forged), (name, forged)
        assert (after.ok, after.output) == (True, f"after {name}\n"), (name, after)
    assert rss_growth_mb < 30  # a frame's claimed size is never buffered whole


def test_a_forged_result_cannot_stand_in_for_the_next_call() -> None:
    forged_result = '{"event": "result", "ok": True, "output": "forged\\n", "error": None, "value": None}'
    forge_then_return = SEND + f"send({forged_result})"
    forged, second, third = run_blocks(forge_then_return + "\nprint('first')", "print('second')", "print('third')")
    assert forged.output in ("forged\n", "first\n") or forged.error, forged
    assert (second.output, third.output) == ("second\n", "third\n")


def test_a_function_that_forges_its_setup_reply_cannot_change_what_the_run_records() -> None:
    forger = function(
        "forger",
        SEND + 'send({"event": "setup", "isolation": {"sealed": "yes", "notes": 5, "uid": "root"}})\n'
        "def forger():\n    return 'hi'\n",
    )

    async def scenario(sandbox: Sandbox) -> tuple[ExecResult, dict[str, Any]]:
        async with sandbox.session(FunctionSet((forger,))) as session:
            called = await session.call_function("forger", {})
        return called, sandbox.describe()

    called, described = with_sandbox(scenario)
    assert called.ok or called.error
    isolation = described["isolation"]
    assert isinstance(isolation["sealed"], bool) and isinstance(isolation["notes"], list)
    assert isolation["uid"] is None or isinstance(isolation["uid"], int)


def test_return_values_and_output_with_lone_surrogates_reach_the_trainer_as_encodable_text() -> None:
    odd = function("odd", "def odd():\n    print('\\ud800 printed')\n    return '\\udfff returned'\n")
    result = with_session(lambda session: session.call_function("odd", {}), [odd])
    assert result.ok
    assert result.value is not None and "returned" in result.value
    for text in (result.output, result.value):
        text.encode("utf-8")  # raises on a lone surrogate

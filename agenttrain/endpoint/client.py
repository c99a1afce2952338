"""One async client for any OpenAI-compatible chat endpoint: retries, rate limits, the cache, usage.

The SDK's own retries are off: this module decides what is retried and for how long, so a rate limit
also slows every other request of the client down (AIMD), and the usage meter sees each real response
exactly once. A request that fails for good raises LLMError; the caller retries that work later
(`agenttrain.endpoint.outage`) and stops the run once the endpoint stays down past `llm.max_outage_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

from agenttrain.config import LLMConfig, ModelParams
from agenttrain.endpoint.cache import ReplyStore, request_key
from agenttrain.endpoint.context_window import is_context_error
from agenttrain.endpoint.request_params import refused_parameter, request_body
from agenttrain.endpoint.usage import UsageMeter
from agenttrain.errors import UserError
from agenttrain.lazy import lazy_import
from agenttrain.untrusted import scrub_json

# openai takes ~0.5 s of CPU to import: loaded by the first client, so that loading a config (which imports the
# agents and optimizers, and so this module) does not, and the sandbox's and scorers' processes start before it.
if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion
else:
    openai = lazy_import("openai")

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
PREFLIGHT_TIMEOUT_S = 5.0  # a live server answers /models at once; a dead one should not cost a minute
INSUFFICIENT_QUOTA = "insufficient_quota"  # OpenAI's 429 for an account out of credit: waiting will not help


class LLMError(Exception):
    """One request failed for good (after any retries); the caller records it and moves on."""


class ContextOverflow(LLMError):
    """The request does not fit the model's context window (HTTP 400); a shorter one may."""


class RequestRefused(LLMError):
    """The endpoint refused this request for what it holds (HTTP 400/422 to a request carrying model-written text or
    learned functions' schemas): the model's doing, not an outage. It costs the rollout or the action, never the run,
    and is not retried, since the same request would be refused again."""


class EndpointDown(UserError):
    """The endpoint cannot serve this run (down too long, wrong key, unknown model); the run stops."""


class MalformedResponse(ValueError):
    """A 200 response without a usable completion; retried like a server error."""


@dataclass(frozen=True)
class ChatReply:
    message: dict[str, Any]  # the assistant message, ready to append to `messages`
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int  # including reasoning tokens, as OpenAI counts them
    cached: bool  # served from our response cache
    reasoning_tokens: int = 0  # hidden reasoning, when the endpoint reports it
    cached_prompt_tokens: int = 0  # prompt tokens the provider read from its own prompt cache

    def to_cache(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "cached"}

    @classmethod
    def from_cache(cls, data: Any) -> ChatReply | None:
        """The stored reply, or None for an entry this version did not write (damaged, or a newer version's)."""
        names = {f.name for f in fields(cls)} - {"cached"}
        if not isinstance(data, dict) or not set(data) <= names or not _is_message(data.get("message")):
            return None
        counts = [data.get(name, 0) for name in names if name.endswith("_tokens")]
        if not all(isinstance(count, int) and not isinstance(count, bool) for count in counts):
            return None
        try:
            return cls(**data, cached=True)
        except TypeError:  # a required field missing
            return None


def _is_message(message: Any) -> bool:
    """An assistant message as `reply_from_completion` makes it: text or None, and tool calls with ids and names."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), str | None):
        return False
    calls = message.get("tool_calls", [])
    return isinstance(calls, list) and all(
        isinstance(call, dict) and isinstance(call.get("id"), str) and isinstance(call.get("function"), dict)
        and isinstance(call["function"].get("name"), str) and isinstance(call["function"].get("arguments"), str)
        for call in calls
    )


def reply_from_completion(completion: ChatCompletion) -> ChatReply:
    """Keep only what goes back into the conversation, as plain JSON; drop ids, timestamps and extras.
    The SDK does not validate a reply's shape: anything unexpected in it is a MalformedResponse (retried)."""
    try:
        return _reply(completion)
    except (AttributeError, TypeError) as exc:
        raise MalformedResponse(f"unexpected reply shape ({exc})") from None


def _reply(completion: ChatCompletion) -> ChatReply:
    choices = getattr(completion, "choices", None)
    if not choices:
        raise MalformedResponse("the response has no choices")
    choice = choices[0]
    if getattr(choice, "message", None) is None:
        raise MalformedResponse("the response's choice has no message")
    content = choice.message.content
    message: dict[str, Any] = {"role": "assistant", "content": None if content is None else str(content)}
    calls = [call for call in choice.message.tool_calls or () if call.type == "function"]
    if calls:
        # a small model's call may lack a name or arguments: kept as empty text, the agent tells the model so
        message["tool_calls"] = [
            {
                "id": str(call.id or f"call_{i}"),
                "type": "function",
                "function": {"name": str(call.function.name or ""), "arguments": _text(call.function.arguments)},
            }
            for i, call in enumerate(calls)
        ]
    usage = completion.usage
    counts = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    if not all(isinstance(count, int) for count in counts):
        raise MalformedResponse(f"the response's usage has no token counts ({usage})")
    completion_details = getattr(usage, "completion_tokens_details", None)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    return ChatReply(
        message=scrub_json(message),  # lone surrogates would make the next request unencodable
        finish_reason=choice.finish_reason,
        prompt_tokens=counts[0],
        completion_tokens=counts[1],
        cached=False,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None) or 0,
        cached_prompt_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
    )


def _text(arguments: Any) -> str:
    """A tool call's arguments as the JSON text the API specifies; some servers send an object, or nothing."""
    if arguments is None or isinstance(arguments, str):
        return arguments or ""
    return json.dumps(arguments, ensure_ascii=False)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: `retry-after-ms`, or `Retry-After` as seconds or as an HTTP date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class RequestLimiter(Protocol):
    """Bounds requests in flight: `AdaptiveLimiter` for one client, or one shared by all of a run's Ray workers or
    by all the jobs of a sweep."""

    async def __aenter__(self) -> int: ...  # waits for a slot; returns the generation the request is sent in
    async def __aexit__(self, *exc: object) -> None: ...
    def on_success(self) -> None: ...
    # a 429 for a request sent in `generation`; `retry_after_s`: the endpoint's Retry-After, which holds every request
    def on_rate_limit(self, generation: int, retry_after_s: float | None = None) -> None: ...


PROBE_SUCCESSES = 8  # past the level a rate limit struck at, a slot per PROBE_SUCCESSES·limit² successes


class AIMDLimit:
    """How many requests may be in flight, at most `ceiling`. A rate limit halves the limit (multiplicative decrease);
    successes win it back, a slot each up to just below the level the rate limit struck at, then a slot per
    8·limit² successes beyond it (additive increase). So the limit settles just under what the endpoint takes and
    probes past it rarely: a refused probe costs about one request in 8·limit² (0.2% at 8 in flight).

    The level struck at: when the limit was full, the requests the endpoint took, plus one. A burst of grants (a wave
    of replies frees many slots at once) can put many more requests in flight than the endpoint takes before the first
    429 comes back; each further 429 of that burst says the endpoint took one fewer of them, so the level comes down
    to where the endpoint refused, not where the limit had climbed. When the limit was not full, the 429 is not about
    requests in flight (a limit on requests per minute, say), and the level is the limit.

    A Retry-After holds every request, not only the refused one's retry: new requests wait until it has passed."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.struck = float(ceiling)  # the level of the last rate limit
        # bumped on each halving: a 429 for a request sent before the last halving was already answered
        self.generation = 0
        self.held_until = 0.0  # time.monotonic() before which no request is sent (Retry-After)
        self._counting = False  # the 429s of the last halving's burst bring `struck` down

    def on_success(self) -> None:
        if self.limit < self.struck - 1:
            self.limit = min(self.limit + 1, self.struck - 1)
        else:
            self.limit = min(float(self.ceiling), self.limit + 1 / (PROBE_SUCCESSES * self.limit**2))

    def rate_limited(self, generation: int, in_flight: int, retry_after_s: float | None) -> None:
        """A 429 for a request sent in `generation`, heard with `in_flight` requests out (the refused one included)."""
        if generation == self.generation:
            self._counting = in_flight >= int(self.limit)
            self.struck = float(in_flight) if self._counting else self.limit
            self.limit = max(1.0, self.limit / 2)
            self.generation += 1
        elif generation == self.generation - 1 and self._counting:
            self.struck = max(2.0, self.struck - 1)
        else:
            return  # an older burst's: already answered
        if retry_after_s:
            self.held_until = max(self.held_until, time.monotonic() + retry_after_s)

    def held_for(self) -> float:
        """Seconds until the endpoint's Retry-After has passed (0: not held)."""
        return max(0.0, self.held_until - time.monotonic())


class AdaptiveLimiter(AIMDLimit):
    """At most `limit` requests of this process in flight."""

    def __init__(self, ceiling: int) -> None:
        super().__init__(ceiling)
        self.in_flight = 0
        self._slot_freed = asyncio.Condition()

    async def __aenter__(self) -> int:
        """Waits for a slot; returns the generation the request is sent in."""
        async with self._slot_freed:
            while self.in_flight >= int(self.limit) or self.held_for():
                with contextlib.suppress(TimeoutError):  # the hold has passed
                    await asyncio.wait_for(self._slot_freed.wait(), self.held_for() or None)
            self.in_flight += 1
        return self.generation

    async def __aexit__(self, *exc: object) -> None:
        async with self._slot_freed:
            self.in_flight -= 1
            self._slot_freed.notify_all()

    def on_rate_limit(self, generation: int, retry_after_s: float | None = None) -> None:
        self.rate_limited(generation, self.in_flight, retry_after_s)


# The limiter of every client made from here on, when this process shares its request limits with others (a sweep's
# job joins the sweep's ledger: agenttrain.endpoint.shared_limits); None: each client limits itself.
SharedLimiters = Callable[[LLMConfig], RequestLimiter]
_shared_limiters: SharedLimiters | None = None


def share_request_limits(limiters: SharedLimiters | None) -> None:
    global _shared_limiters
    _shared_limiters = limiters


class LLMClient:
    """Chat completions for one role ("agent" or "optimizer"); share one `UsageMeter` and cache per run.

    `backoff_s` is the first retry's wait (doubling, with jitter, up to `max_backoff_s`, which also caps a
    server's Retry-After). `limiter` bounds requests in flight: `settings.concurrency` for this client alone
    by default; the Ray executor passes one that all its workers share. `share_with`: a client of the same event
    loop whose connection pool this one uses too (a pool's TLS context alone costs ~60 ms of CPU to build).
    """

    def __init__(
        self,
        settings: LLMConfig,
        *,
        role: str,
        meter: UsageMeter,
        cache: ReplyStore | None,
        cache_endpoint: str | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        limiter: RequestLimiter | None = None,
        share_with: LLMClient | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.meter = meter
        self.cache = cache
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._http: openai.DefaultAsyncHttpxClient = (
            share_with._http if share_with else openai.DefaultAsyncHttpxClient()
        )
        self._client = openai.AsyncOpenAI(
            base_url=settings.resolved_base_url(),
            api_key=os.environ.get(settings.api_key_env) or "not-needed",
            max_retries=0,
            timeout=settings.timeout_s,
            http_client=self._http,
        )
        self.endpoint = str(self._client.base_url).rstrip("/") + "/chat/completions"
        # what the cache calls this endpoint: the URL, unless it changes from run to run (the local server's port)
        self.cache_endpoint = cache_endpoint or self.endpoint
        shared = _shared_limiters(settings) if _shared_limiters else None
        self.limiter: RequestLimiter = limiter or shared or AdaptiveLimiter(settings.concurrency)
        self._warned_unreadable = False

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        params: ModelParams | None = None,
        tools: list[dict[str, Any]] | None = None,
        stop: list[str] | None = None,
        sample_index: int = 0,
    ) -> ChatReply:
        """One completion; `params` are the role's settings (temperature, max_tokens, ...; family defaults if
        None). `sample_index` tells apart deliberate repeats of the same request in the cache: a new index
        gets a fresh answer that a rerun replays.
        Raises LLMError (this request failed), EndpointDown (stop the run), BudgetExhausted (stop the run).
        """
        # text that is not valid Unicode (a lone surrogate from a tool's output) could not be sent as UTF-8
        body = scrub_json(request_body(model, messages, params or ModelParams(), tools=tools, stop=stop))
        key = request_key(self.cache_endpoint, body, sample_index)
        if self.cache and (hit := await self.cache.lookup(key)) is not None:
            if (reply := ChatReply.from_cache(hit)) is not None:
                self._meter(model, reply)
                return reply
            self._unreadable_entry()
        reply = await self._send(body)
        if self.cache:
            await self.cache.store(key, reply.to_cache())
        return reply

    def _unreadable_entry(self) -> None:
        """A cached entry this version cannot read is a miss, and the request is sent; said once per client."""
        if not self._warned_unreadable:
            self._warned_unreadable = True
            logger.warning("the response cache holds replies this version cannot read (damaged, or written by a "
                           "newer agenttrain); sending those requests again")

    def _meter(self, model: str, reply: ChatReply) -> None:
        self.meter.record(self.role, model, reply.prompt_tokens, reply.completion_tokens, cached=reply.cached,
                          reasoning_tokens=reply.reasoning_tokens, cached_prompt_tokens=reply.cached_prompt_tokens)

    async def _send(self, body: dict[str, Any]) -> ChatReply:
        """POST with retries; only transient failures (rate limits, 5xx, timeouts, bad bodies) are retried."""
        for attempt in range(self.settings.max_retries + 1):
            server_wait = None
            try:
                async with self.limiter as generation:
                    self.meter.check_budget()  # after waiting for a slot, so spending elsewhere is seen
                    # a reply is metered, a rate limit told, before the slot is freed: a limiter shared with other
                    # processes has counted the cost, and lowered the limit, before it admits the next request
                    try:
                        reply = reply_from_completion(await self._post(body))
                    except openai.RateLimitError as exc:
                        asked = retry_after_seconds(exc.response.headers)  # it holds the limiter's other requests
                        self.limiter.on_rate_limit(generation, None if asked is None else self._wait(attempt, asked))
                        raise
                    self._meter(body["model"], reply)
            except openai.APIStatusError as exc:
                if not _is_transient(exc):
                    raise self._refused(exc, body) or self._rejected(exc, body, attempt + 1) from None
                if exc.status_code == 429:
                    server_wait = retry_after_seconds(exc.response.headers)
                failure = f"HTTP {exc.status_code}: {_error_message(exc)}"
            except openai.APITimeoutError:
                failure = f"no response within llm.timeout_s={self.settings.timeout_s:g}s"
            except openai.APIConnectionError as exc:
                failure = f"cannot connect: {exc.__cause__ or exc}"
            except (ValueError, openai.APIResponseValidationError) as exc:
                failure = f"malformed response: {exc}"
            else:
                self.limiter.on_success()
                return reply
            if attempt < self.settings.max_retries:
                wait = self._wait(attempt, server_wait)
                # `retry_wait_s` lets the progress display show retries live (progress.RetryWatcher)
                logger.info("%s request failed (%s); retry %d in %.2fs", self.role, failure, attempt + 1, wait,
                            extra={"retry_wait_s": wait, "role": self.role})
                await asyncio.sleep(wait)
        raise self._gave_up(failure, self.settings.max_retries + 1)

    async def _post(self, body: dict[str, Any]) -> ChatCompletion:
        """`chat.completions.create(**body)` without its walk over the body's types (~2 ms of CPU per request for a
        body that is plain JSON already), with `extra_body` merged in as `create` does."""
        extra = body.get("extra_body") or {}
        json_body = {**{key: value for key, value in body.items() if key != "extra_body"}, **extra}
        from openai.types.chat import ChatCompletion

        return await self._client.post("/chat/completions", body=json_body, cast_to=ChatCompletion)

    def _wait(self, attempt: int, server_wait: float | None) -> float:
        if server_wait is not None:
            return min(server_wait, self.max_backoff_s)
        # jitter spreads out the retries of requests that failed together
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _gave_up(self, failure: str, attempts: int) -> LLMError:
        return LLMError(f"{self.role} request to {self.endpoint} failed after {attempts} attempt(s): {failure}")

    def _refused(self, exc: openai.APIStatusError, body: dict[str, Any]) -> EndpointDown | None:
        """A 400 refusing a parameter the config set: every request would be refused alike, so the run stops."""
        if exc.status_code not in (400, 422):
            return None
        fix = refused_parameter(self.role, body, exc.param, _error_message(exc))
        return EndpointDown(fix) if fix else None

    def _rejected(self, exc: openai.APIStatusError, body: dict[str, Any], attempts: int) -> Exception:
        """An error that retrying cannot fix: a wrong key or model, or no credit, stops the run at once; a request
        refused for the model-written text or tools it carries costs only that request's work."""
        status, detail, model = exc.status_code, _error_message(exc), body["model"]
        if exc.code == INSUFFICIENT_QUOTA:
            return EndpointDown(f"{self.endpoint}: the account has no credit left (HTTP {status}: {detail})")
        if status in (401, 403):
            key_state = "is set" if os.environ.get(self.settings.api_key_env) else "is not set"
            return EndpointDown(
                f"{self.endpoint} rejected the API key (HTTP {status}: {detail}); ${self.settings.api_key_env} "
                f"{key_state}. Export a valid key, or point llm.api_key_env at the variable that holds it."
            )
        if is_context_error(status, exc.code, detail):  # the request's fault, not the endpoint's
            return ContextOverflow(f"{self.role} request does not fit the model's context (HTTP {status}: {detail})")
        if status == 404:
            return EndpointDown(
                f"{self.endpoint} does not serve model {model!r} (HTTP 404: {detail}). Check the {self.role}'s "
                f"model name and llm.base_url."
            )
        if status in (400, 413, 422) and model_caused(body, exc.param, detail):
            return RequestRefused(f"{self.role} request refused by {self.endpoint} (HTTP {status}: {detail})")
        return self._gave_up(f"HTTP {status}: {detail}", attempts)

    async def close(self) -> None:
        await self._client.close()


async def check_endpoint(settings: LLMConfig, role: str) -> None:
    """Preflight: one `GET /models` before any rollout, so a dead endpoint or a rejected key stops the command
    within seconds, not after a minute of retries. Any other answer (some servers have no /models) counts
    as alive. Raises EndpointDown with one line naming the URL and the cause."""
    client = openai.AsyncOpenAI(base_url=settings.resolved_base_url(), max_retries=0,
                                api_key=os.environ.get(settings.api_key_env) or "not-needed",
                                timeout=min(settings.timeout_s, PREFLIGHT_TIMEOUT_S))
    url = str(client.base_url).rstrip("/")
    try:
        await client.models.list()
    except openai.APITimeoutError:
        raise EndpointDown(f"the {role} endpoint {url} did not answer within {client.timeout}s; {_FIX_URL}") from None
    except openai.APIConnectionError as exc:
        raise EndpointDown(f"cannot reach the {role} endpoint {url} ({_root_cause(exc)}); {_FIX_URL}") from None
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            key_state = "is set" if os.environ.get(settings.api_key_env) else "is not set"
            raise EndpointDown(f"the {role} endpoint {url} rejected the API key (HTTP {exc.status_code}); "
                               f"${settings.api_key_env} {key_state}") from None
    finally:
        await client.close()


_FIX_URL = "start the server, or fix llm.base_url ($AGENTTRAIN_BASE_URL); --offline skips this check"


def _root_cause(exc: BaseException) -> str:
    """The innermost cause, e.g. "[Errno 111] Connection refused" rather than the client's generic wrapper."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__


TOOL_WORDING = re.compile(r"\b(tools?|functions?|schema|parameters)\b", re.IGNORECASE)


def model_caused(body: dict[str, Any], param: str | None, detail: str) -> bool:
    """Whether a refused request was refused for what a model wrote: a conversation past its first turn (it holds
    replies and tool output), or tools the refusal names (learned functions' schemas). A refusal of a first turn
    that does not name the tools is the endpoint's or the config's problem, and stops the run as before."""
    if any(m.get("role") in ("assistant", "tool") for m in body["messages"]):
        return True
    names_tools = (param or "").startswith("tools") or TOOL_WORDING.search(detail) is not None
    return bool(body.get("tools")) and names_tools



def _is_transient(exc: openai.APIStatusError) -> bool:
    retryable = exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    return retryable and exc.code != INSUFFICIENT_QUOTA


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message

"""One async client for any OpenAI-compatible chat endpoint: retries, rate limits, the cache, usage.

The SDK's own retries are off: this module decides what is retried and for how long, so a rate limit
also slows every other request of the client down (AIMD), and the usage meter sees each real response
exactly once. A request that fails for good raises LLMError; the caller retries that work later
(`agenttrain.endpoint.outage`) and stops the run once the endpoint stays down past `llm.max_outage_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
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
    def from_cache(cls, data: dict[str, Any]) -> ChatReply:
        return cls(**data, cached=True)


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
    message: dict[str, Any] = {"role": "assistant", "content": choice.message.content}
    calls = [call for call in choice.message.tool_calls or () if call.type == "function"]
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in calls
        ]
    usage = completion.usage
    counts = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    if not all(isinstance(count, int) for count in counts):
        raise MalformedResponse(f"the response's usage has no token counts ({usage})")
    completion_details = getattr(usage, "completion_tokens_details", None)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    return ChatReply(
        message=message,
        finish_reason=choice.finish_reason,
        prompt_tokens=counts[0],
        completion_tokens=counts[1],
        cached=False,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None) or 0,
        cached_prompt_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
    )


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
    """Bounds requests in flight: `AdaptiveLimiter` for one client, or one shared by all of a run's Ray workers."""

    async def __aenter__(self) -> int: ...  # waits for a slot; returns the generation the request is sent in
    async def __aexit__(self, *exc: object) -> None: ...
    def on_success(self) -> None: ...
    def on_rate_limit(self, generation: int) -> None: ...


class AdaptiveLimiter:
    """At most `limit` requests in flight. A rate limit halves the limit; each success regains 1/limit of a
    slot, so a full slot comes back per window of successes (additive increase, multiplicative decrease)."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        # bumped on each halving: a 429 for a request sent before the last halving was already answered
        self.generation = 0
        self._slot_freed = asyncio.Condition()

    async def __aenter__(self) -> int:
        """Waits for a slot; returns the generation the request is sent in."""
        async with self._slot_freed:
            await self._slot_freed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        return self.generation

    async def __aexit__(self, *exc: object) -> None:
        async with self._slot_freed:
            self.in_flight -= 1
            self._slot_freed.notify_all()

    def on_success(self) -> None:
        self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)

    def on_rate_limit(self, generation: int) -> None:
        if generation == self.generation:
            self.limit = max(1.0, self.limit / 2)
            self.generation += 1


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
        self.limiter: RequestLimiter = limiter or AdaptiveLimiter(settings.concurrency)

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
        body = request_body(model, messages, params or ModelParams(), tools=tools, stop=stop)
        key = request_key(self.cache_endpoint, body, sample_index)
        if self.cache and (hit := await self.cache.lookup(key)) is not None:
            reply = ChatReply.from_cache(hit)
            self._meter(model, reply)
            return reply
        reply = await self._send(body)
        self._meter(model, reply)
        if self.cache:
            await self.cache.store(key, reply.to_cache())
        return reply

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
                    reply = reply_from_completion(await self._post(body))
            except openai.APIStatusError as exc:
                if not _is_transient(exc):
                    raise self._refused(exc, body) or self._rejected(exc, body["model"], attempt + 1) from None
                if exc.status_code == 429:
                    self.limiter.on_rate_limit(generation)
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

    def _rejected(self, exc: openai.APIStatusError, model: str, attempts: int) -> Exception:
        """An error that retrying cannot fix: a wrong key or model, or no credit, stops the run at once."""
        status, detail = exc.status_code, _error_message(exc)
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


def _is_transient(exc: openai.APIStatusError) -> bool:
    retryable = exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    return retryable and exc.code != INSUFFICIENT_QUOTA


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message

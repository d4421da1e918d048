"""The one client layer for every command that talks to an OpenAI-compatible endpoint (bench, compare,
wait, the CLI): where the endpoint is, how to authenticate, what kind it is, which request fields turn
thinking on or off and which sampling fields it accepts, where the reasoning comes back, which failures
are retried, which models it serves and when it is ready.

Each client keeps its own HTTP library (bench: its streaming HTTP/1.1 protocol, bench/stream.py, and
httpx2; compare: openai.AsyncOpenAI; wait: httpx2 and openai) but takes all of the above from here. The
shape follows vLLM's benchmark client, which keeps one request description, one measured output and one
`_get_headers` for every backend
(github.com/vllm-project/vllm, vllm/benchmarks/lib/endpoint_request_func.py).

Hosted Moonshot API facts (kind "moonshot"):
- base URLs https://api.moonshot.ai/v1 and https://api.moonshot.cn/v1 (github.com/MoonshotAI/Kimi-K2
  README.md);
- thinking is switched off with `thinking: {"type": "disabled"}`; self-hosted vLLM/SGLang take
  `chat_template_kwargs: {"thinking": false}` (github.com/MoonshotAI/Kimi-K2.5 README.md;
  platform.moonshot.ai/docs/guide/use-kimi-k2-thinking-model);
- thinking effort, the same request both ways: `thinking: {"type": "enabled", "keep": "all", "effort": E}`
  on the hosted API, `chat_template_kwargs: {"thinking": true, "preserve_thinking": true,
  "thinking_effort": E}` on open-source engines, E one of low / high / max
  (github.com/MoonshotAI/Kimi-Vendor-Verifier README.md, "Thinking Mode Parameters"); vLLM's K3 renderer
  reads `thinking_effort` and refuses other values (vllm/renderers/kimi_k3.py, _K3_THINKING_EFFORTS),
  SGLang's kimi_k3 encoder passes it to the template (sglang/srt/entrypoints/openai/serving_chat.py);
- which hosted models cannot switch thinking off, which efforts they take and which sampling they fix come
  from the catalog only (catalog.HOSTED_MODELS and each entry's hosted fields, keyed by hosted id); a
  hosted id the catalog does not know gets no special treatment: every field is sent as asked;
- reasoning comes back in `reasoning_content` (message and stream delta) on the hosted API and SGLang,
  and in `reasoning` on recent vLLM (vllm-project/vllm PR #27752 renamed the field)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Mapping, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import SecretStr

from .errors import BadInput, OperationFailed

Kind = Literal["moonshot", "self-hosted"]
# What a --reference-kind / from_url(kind=) may say: auto (from the host), or a kind.
KIND_CHOICES: tuple[str, ...] = ("auto", *get_args(Kind))
HOSTED_HOSTS = ("api.moonshot.ai", "api.moonshot.cn")
# Thinking efforts (Kimi-Vendor-Verifier README.md --thinking-effort; vllm/renderers/kimi_k3.py)
Effort = Literal["low", "high", "max"]
EFFORTS: tuple[str, ...] = get_args(Effort)
MOONSHOT_URL = "https://api.moonshot.ai/v1"

T = TypeVar("T")


class Headers(dict):
    """Request headers whose repr and str never show a credential (they end up in logs and tracebacks)."""

    _SECRET = ("authorization", "x-api-key")

    def __repr__(self) -> str:
        return repr({k: ("***" if k.lower() in self._SECRET else v) for k, v in self.items()})

    __str__ = __repr__


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """An OpenAI-compatible endpoint. `root` is scheme://host[:port][/prefix] without the /v1; the API key
    is read once from the environment variable `api_key_env` and never appears in repr, str or facts."""

    root: str
    kind: Kind = "self-hosted"
    flag: str = "--base-url"  # the option that named this endpoint, for error messages
    api_key_env: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, flag: str, kind: str = "auto", api_key_env: str | None = None,
                 key_flag: str = "--api-key-env", key_optional: bool = False,
                 env: Mapping[str, str] | None = None) -> Endpoint:
        """Parse a root or /v1 URL given to option `flag`. `kind` is auto (hosted when the host is
        Moonshot's), moonshot or self-hosted. A key variable that is not set or empty is bad input, unless
        `key_optional` and the endpoint is self-hosted (then no key is sent); so is a key `key_problem`
        refuses. Every error names the variable and `key_flag`, never the value."""
        root = normalize_url(url, flag)
        if kind == "auto":
            kind = "moonshot" if urlsplit(root).hostname in HOSTED_HOSTS else "self-hosted"
        elif kind not in get_args(Kind):
            raise BadInput(f"must be auto, moonshot or self-hosted, got {kind!r}", f"{flag}-kind")
        key = None
        if api_key_env:
            value = (os.environ if env is None else env).get(api_key_env)
            if not value and not (key_optional and kind == "self-hosted"):
                why = " (Moonshot's API needs a key)" if kind == "moonshot" else ""
                state = "empty" if value == "" else "not set"
                raise BadInput(f"environment variable {api_key_env} is {state}{why}", key_flag)
            if value:
                problem = key_problem(value)
                if problem:  # the value itself is never part of the message
                    raise BadInput(f"the API key in environment variable {api_key_env} {problem}", key_flag)
            key = SecretStr(value) if value else None
        return cls(root=root, kind=kind, flag=flag, api_key_env=api_key_env, api_key=key)  # type: ignore[arg-type]

    # --- where --------------------------------------------------------------------------------------
    @property
    def v1(self) -> str:
        """The OpenAI base URL (what openai.OpenAI(base_url=...) wants)."""
        return self.root + "/v1"

    def url(self, path: str) -> str:
        """An absolute URL for a server path such as /health, /metrics, /tokenize or /v1/models."""
        return self.root + path

    @property
    def hosted(self) -> bool:
        return self.kind == "moonshot"

    # --- who ------------------------------------------------------------------------------------------
    def headers(self, content_type: str | None = None) -> Headers:
        """The one header builder: bearer auth when there is a key, optionally a content type."""
        h = Headers()
        if content_type:
            h["Content-Type"] = content_type
        if self.api_key is not None:
            h["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return h

    def scrubber(self, *names: str | None) -> Any:
        """The secrets.Scrubber for everything written or printed about this endpoint: its key variable,
        the known ones, every credential-shaped variable and `names`."""
        return scrubber(self, names=names)

    def facts(self) -> dict[str, Any]:
        """What reports and summary.json may say about the endpoint (no secret)."""
        return {"url": self.v1, "kind": self.kind, "api_key_env": self.api_key_env}

    # --- what to send -------------------------------------------------------------------------------
    def model_id(self, name: str) -> str:
        """The model id to send: on the hosted API a self-hosted served name (catalog id, alias or repo)
        becomes the hosted id (catalog `hosted_name`, e.g. kimi-k2-instruct-0905 -> kimi-k2-0905-preview)."""
        if not self.hosted:
            return name
        from .catalog import MODELS

        key = name.lower()
        for m in MODELS.values():
            if key in (m.id, m.repo.lower(), *m.aliases) and m.hosted_name:
                return m.hosted_name
        return name

    def thinking_fields(self, model: str, thinking: bool | None, effort: str | None = None) -> dict[str, Any]:
        """Request fields that turn thinking on or off, at `effort` when thinking is not off; {} for the
        server's default (thinking None, no effort). `model` is the id this endpoint knows. On the hosted
        API a model that cannot switch thinking off (catalog) is sent no `disabled`, which it refuses;
        hosted models think by default, so thinking on needs no field unless an effort is asked."""
        if self.hosted:
            if thinking is False:
                rules = hosted_rules(model)
                return {} if rules is not None and rules.thinking_only else {"thinking": {"type": "disabled"}}
            return {"thinking": {"type": "enabled", "keep": "all", "effort": effort}} if effort else {}
        if thinking is False:
            return {"chat_template_kwargs": {"thinking": False}}
        if effort:
            return {"chat_template_kwargs": {"thinking": True, "preserve_thinking": True, "thinking_effort": effort}}
        return {} if thinking is None else {"chat_template_kwargs": {"thinking": True}}

    def check_effort(self, model: str, effort: str | None, flag: str = "--thinking-effort") -> None:
        """Bad input naming `flag` when `effort` is no thinking effort, or when the catalog says the hosted
        `model` takes none or not this one. A self-hosted engine and a hosted id the catalog does not know
        are sent it as asked (the engine's template, or the API, decides)."""
        if effort is None:
            return
        if effort not in EFFORTS:
            raise BadInput(f"must be one of {', '.join(EFFORTS)}, got {effort!r}", flag)
        rules = hosted_rules(model) if self.hosted else None
        if rules is not None and effort not in rules.efforts:
            from .catalog import HOSTED_MODELS

            takes = [m for m, h in HOSTED_MODELS.items() if h.efforts]
            why = (f"it takes {', '.join(rules.efforts)}" if rules.efforts else
                   "it takes no thinking effort (the catalog lists efforts for " + (", ".join(takes) or "no model") + ")")
            raise BadInput(f"the hosted {model} cannot be sent effort {effort!r}: {why}", flag)

    def sampling_fields(self, model: str, temperature: float | None) -> dict[str, Any]:
        """The temperature, unless the catalog says the hosted API fixes sampling for this model."""
        if temperature is None:
            return {}
        if self.hosted:
            rules = hosted_rules(model)
            if rules is not None and rules.sampling:
                return {}
        return {"temperature": temperature}

    def hosted_facts(self, model: str) -> dict[str, Any] | None:
        """What the catalog says the hosted API does with `model` (for reports); None when self-hosted."""
        if not self.hosted:
            return None
        rules = hosted_rules(model)
        if rules is None:
            return {"model": model, "in_catalog": False,
                    "note": f"{model!r} is no hosted id of the catalog: no special treatment, thinking and "
                            "sampling fields are sent as asked"}
        entry = hosted_entry(model)
        return {"model": model, "in_catalog": True, "catalog_model": entry.id if entry else None,
                "thinking_only": rules.thinking_only, "efforts": list(rules.efforts),
                "default_effort": rules.default_effort, "fixed_sampling": rules.sampling, "source": rules.source}

    # --- clients --------------------------------------------------------------------------------------
    def openai_client(self, *, timeout: Any, asynchronous: bool = True) -> Any:
        """An openai client on this endpoint with our headers and no retries of its own (RetryPolicy
        decides); the SDK's own bearer header is overridden by ours (custom headers win)."""
        import openai

        cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        return cls(base_url=self.v1, api_key="unused", default_headers=dict(self.headers()), max_retries=0,
                   timeout=timeout)


def hosted_entry(model: str) -> Any:
    """The catalog entry (catalog.ModelEntry) Moonshot's API serves under hosted id `model`: Moonshot's own
    checkpoint before a re-quantization served under its base's id; None for an id the catalog does not
    know (it then gets no special treatment)."""
    from .catalog import MODELS

    found = [m for m in MODELS.values() if m.hosted_name and m.hosted_name == model]
    return min(found, key=lambda m: m.base is not None) if found else None


def hosted_rules(model: str) -> Any:
    """What Moonshot's API does with hosted id `model` (a catalog.HostedModel): the catalog entry served
    under it (its thinking_only and hosted fields) merged with catalog.HOSTED_MODELS; None when the
    catalog knows neither (no special treatment)."""
    from .catalog import HOSTED_MODELS, HostedModel

    entry, table = hosted_entry(model), HOSTED_MODELS.get(model)
    if entry is None:
        return table
    return HostedModel(thinking_only=entry.hosted_thinking_only, efforts=entry.hosted_efforts,
                       default_effort=table.default_effort if table else None, sampling=entry.hosted_sampling,
                       source=entry.sampling_source or (table.source if table else ""))


def scrubber(*endpoints: Endpoint | None, names: tuple[str | None, ...] = ()) -> Any:
    """One secrets.Scrubber for several endpoints: each one's key (as read, whichever environment it came
    from) and key variable, plus `names`."""
    from .secrets import Scrubber

    eps = [e for e in endpoints if e is not None]
    keys = {e.api_key.get_secret_value(): e.api_key_env or "API_KEY" for e in eps if e.api_key is not None}
    return Scrubber([*(e.api_key_env for e in eps), *names], extra=keys)


def key_problem(value: str) -> str | None:
    """Why `value` cannot be an API key, or None: the rule serve applies to the deployment's key
    (launch.check_api_key), for the clients (wait, bench, compare) that send it."""
    from .secrets import MIN_LEN

    if any(unicodedata.category(c) == "Cc" for c in value):
        # A control character cannot travel in an HTTP header (RFC 9110 section 5.5): the client library
        # refuses the request, which would read as a network failure until the timeout.
        return "contains a control character (newline, CR, tab, ...); use a key without"
    if not value.isascii():
        # httpx2 (under openai 3, and wait's own requests) encodes header values as ASCII and refuses any
        # other character before sending; the character is part of the secret, so it is not named.
        return "contains a character outside ASCII; an HTTP header carries ASCII only: use a key without"
    if len(value) < MIN_LEN:
        # The scrubber never masks a shorter value (secrets.MIN_LEN): a server that echoes the key would
        # put it into every result file.
        return (f"has {len(value)} characters; use at least {MIN_LEN} (a random one, e.g. "
                "`openssl rand -hex 24`)")
    return None


def normalize_url(url: str, flag: str) -> str:
    """The root of an http(s) URL given as the root or the /v1 URL, with or without a trailing slash."""
    bad = BadInput(f"{url!r} is not an http(s) URL (e.g. http://head:8000 or http://head:8000/v1)", flag)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if parts.username or parts.password:
        # it would be echoed in errors and written into result files; keys come from an env var
        raise BadInput("credentials do not belong in the URL; put the key in an environment variable and "
                       "name it with the key option", flag)
    if parts.query or parts.fragment:
        raise BadInput(f"{url!r}: a base URL has no query or fragment", flag)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


def reasoning_of(obj: Any) -> str | None:
    """The reasoning text of a message or stream delta (dict or openai object), whichever field the
    server used: `reasoning_content` (Moonshot, SGLang) or `reasoning` (vLLM)."""
    if obj is None:
        return None
    for attr in ("reasoning_content", "reasoning"):
        value = obj.get(attr) if isinstance(obj, dict) else getattr(obj, attr, None)
        if value:
            return value
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("reasoning_content") or extra.get("reasoning") or None


# --- retries ----------------------------------------------------------------------------------------

def _transient_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures: worth another try. httpx2 is the HTTP stack of openai 3 and
    huggingface_hub 2 (their Requires-Dist); bench reads its streams through aiohttp and its own protocol."""
    import aiohttp
    import httpx2
    import openai

    return (httpx2.TransportError, aiohttp.ClientConnectionError, asyncio.TimeoutError, TimeoutError,
            ConnectionError, openai.APIConnectionError)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an error carries: openai's APIStatusError (`status_code`), aiohttp and StatusError
    (`status`), huggingface_hub's HfHubHTTPError and httpx2's HTTPStatusError (`response.status_code`)."""
    for value in (getattr(exc, "status_code", None), getattr(exc, "status", None),
                  getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(value, int):
            return value
    return None


def retry_after(exc: BaseException, *, now: float | None = None) -> float | None:
    """Seconds the server asked the client to wait (the `Retry-After` header of the answer the error
    carries: delay-seconds or an HTTP-date, RFC 9110 section 10.2.3); None when it said nothing usable."""
    from email.utils import parsedate_to_datetime

    headers = getattr(exc, "headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
    except Exception:  # noqa: BLE001 -- a headers object of another shape: no hint
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", value, re.ASCII):  # delay-seconds (a fraction tolerated)
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounded attempts. Retried: the statuses below (rate limits, overload, gateway errors) and
    connection failures/timeouts; never 4xx client errors such as a bad key, which would fail the same way
    again. The wait is what the server's `Retry-After` asks for when it says (up to `retry_after_max_s`:
    a longer ask ends the retries with the error), else exponential backoff with jitter. K2-Vendor-Verifier
    backs off from 2 s up to 60 s on 429 and connection errors (github.com/MoonshotAI/K2-Vendor-Verifier,
    tool_calls_eval.py); we bound the number of attempts so a dead endpoint ends the run."""

    attempts: int = 6  # tries in total, the first included
    base_s: float = 2.0
    cap_s: float = 60.0
    jitter: float = 0.25  # up to this fraction added, so clients do not retry in lock-step
    retry_after_max_s: float = 300.0
    statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

    def delay(self, attempt: int) -> float:
        """Backoff in seconds after failed attempt number `attempt` (1-based), when the server gave no hint."""
        # the exponent is bounded first: 2.0 ** 1100 overflows a float, and past 2 ** 64 the cap has long won
        return min(self.base_s * 2.0 ** min(attempt - 1, 64), self.cap_s) * (1 + random.random() * self.jitter)

    def pause(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or None when the server asked for longer than we wait.
        A wait of 0 (or a date already past, as from a client clock ahead of the server's) is no hint: the
        backoff applies, so retries never come in a burst."""
        asked = retry_after(exc)
        if not asked:
            return self.delay(attempt)
        return asked if asked <= self.retry_after_max_s else None

    def retryable(self, exc: BaseException) -> bool:
        if getattr(exc, "transient", False):  # our own transient failures (a truncated download)
            return True
        status = status_of(exc)
        if status is not None:
            return status in self.statuses
        return isinstance(exc, _transient_errors())

    async def run(self, call: Callable[[], Awaitable[T]], *, total_s: float | None = None) -> T:
        """`call` until it succeeds, fails for good or the attempts run out. With `total_s`, every attempt
        and every wait together end within that many seconds (asyncio.TimeoutError after it): a stalled
        endpoint cannot hold a run for attempts x the client's own timeout."""
        deadline = None if total_s is None else time.monotonic() + total_s
        for attempt in range(1, self.attempts + 1):
            try:
                if deadline is None:
                    return await call()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise asyncio.TimeoutError()
                return await asyncio.wait_for(call(), left)
            except Exception as exc:
                pause = self._next_pause(attempt, exc, deadline)
                if pause is None:
                    raise
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def run_sync(self, call: Callable[[], T], *,
                 on_retry: Callable[[BaseException, int, float], None] = lambda exc, attempt, pause: None) -> T:
        """The same, blocking; `on_retry(error, failed attempt, pause)` is told of every retry."""
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:
                pause = self._next_pause(attempt, exc, None)
                if pause is None:
                    raise
                on_retry(exc, attempt, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _next_pause(self, attempt: int, exc: BaseException, deadline: float | None) -> float | None:
        """The wait before another try, or None when `exc` is the answer: not retryable, the last
        attempt, the server asked for too long, or no time left before the deadline for another try."""
        if attempt >= self.attempts or not self.retryable(exc):
            return None
        pause = self.pause(attempt, exc)
        if pause is None or (deadline is not None and time.monotonic() + pause >= deadline):
            return None
        return pause


# Measured benchmark requests are never retried (a retry would hide the failure and the latency);
# answers to compare are retried fully; discovery before a run is retried briefly, then reported.
NO_RETRY = RetryPolicy(attempts=1)
ANSWERS = RetryPolicy()
DISCOVERY = RetryPolicy(attempts=3, base_s=0.5, cap_s=2.0, retry_after_max_s=10.0)


# --- discovery and readiness -----------------------------------------------------------------------

class StatusError(Exception):
    """An HTTP answer that is not 200 (carries the status for RetryPolicy)."""

    def __init__(self, status: int, url: str, headers: Mapping[str, str] | None = None) -> None:
        self.status, self.headers = status, headers
        super().__init__(f"{url} answered {status}")


class NotOpenAI(ValueError):
    """A 200 answer that is not what the OpenAI API answers there (a proxy's HTML login page, say); the
    message says what answered, e.g. "HTTP 200 text/html, not a chat completion"."""


def answered(response: Any) -> str:
    """What answered, for messages: the status and the media type, e.g. "HTTP 200 text/html" (never the
    body, which may quote the request's credentials)."""
    media = (response.headers.get("content-type") or "").split(";")[0].strip()
    return f"HTTP {response.status_code} {media or 'without a content type'}"


def _json(response: Any) -> Any:
    """The JSON body of an httpx2 response, or None when it is not JSON."""
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than the parser goes
        return None


def is_chat_completion(body: Any) -> bool:
    """Has `body` (parsed JSON) the shape of an OpenAI chat completion: `choices` a non-empty list whose first
    entry holds a `message` object, and `object`, when present, "chat.completion" (the OpenAI API reference's
    chat completion object; vLLM, SGLang and Moonshot's API all send it). compare/run.py reads the same
    fields (choices[0].message) and records anything else as "not an OpenAI chat completion"."""
    if not isinstance(body, dict) or body.get("object", "chat.completion") != "chat.completion":
        return False
    choices = body.get("choices")
    return (isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict)
            and isinstance(choices[0].get("message"), dict))


def list_models(ep: Endpoint, *, client: Any = None, timeout: float = 30) -> list[str]:
    """One GET /v1/models: the served model ids. httpx2 errors and StatusError propagate; NotOpenAI when
    the answer is no model list."""
    import httpx2

    own = client is None
    http = client or httpx2.Client(timeout=timeout)
    try:
        r = http.get(ep.url("/v1/models"), headers=ep.headers(), timeout=timeout)
        if r.status_code != 200:
            raise StatusError(r.status_code, ep.url("/v1/models"), r.headers)
        body = _json(r)
        data = body.get("data", []) if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise NotOpenAI(f"{answered(r)}, not a model list")
        return [m["id"] for m in data]
    finally:
        if own:
            http.close()


def served_models(ep: Endpoint, *, retry: RetryPolicy = DISCOVERY, timeout: float = 30) -> list[str]:
    """The served model ids, or bad input naming the endpoint's option when it cannot tell."""
    import httpx2

    try:
        return retry.run_sync(lambda: list_models(ep, timeout=timeout))
    except StatusError as exc:
        if exc.status in (401, 403):
            hint = ": check the API key" + (f" in {ep.api_key_env}" if ep.api_key_env else "")
        elif exc.status in retry.statuses:  # rate limited or unavailable, still after the retries
            asked = retry_after(exc)
            hint = " (busy or starting" + (f"; it asks to retry after {asked:.0f} s" if asked else "") + ")"
        else:
            hint = " (not an OpenAI-compatible endpoint?)"
        raise BadInput(f"{exc}{hint}; it does not answer /v1/models", ep.flag) from None
    except httpx2.TransportError as exc:
        raise BadInput(f"{ep.root} is unreachable ({type(exc).__name__}); it does not answer /v1/models",
                       ep.flag) from None
    except NotOpenAI as exc:
        raise BadInput(f"{ep.url('/v1/models')} answered {exc} (not an OpenAI-compatible endpoint?)",
                       ep.flag) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadInput(f"{ep.url('/v1/models')} is not an OpenAI model list; it does not answer /v1/models",
                       ep.flag) from None


def served_root(ep: Endpoint, model: str, *, timeout: float = 30) -> str | None:
    """The checkpoint an endpoint says it serves `model` from: vLLM lists it as `root` in /v1/models (the
    path or Hub id it was started with, as given: a relative path is relative to the server's working
    directory); None when the endpoint does not say."""
    import httpx2

    try:
        r = httpx2.get(ep.url("/v1/models"), headers=ep.headers(), timeout=timeout)
        data = r.json().get("data", []) if r.status_code == 200 else []
        for m in data:
            if isinstance(m, dict) and m.get("id") == model and isinstance(m.get("root"), str):
                return m["root"] if m["root"] != model else None
    except (httpx2.HTTPError, ValueError, AttributeError):
        pass
    return None


def require_model(ep: Endpoint, model: str | None, model_flag: str) -> str:
    """`model` when the endpoint serves it (or lists nothing), else bad input naming `model_flag`;
    the first served model when `model` is None."""
    served = served_models(ep)
    if model is None:
        if not served:
            raise BadInput(f"{ep.v1} lists no model; give {model_flag}", ep.flag)
        return served[0]
    if served and model not in served:
        raise BadInput(f"{ep.v1} serves {', '.join(served[:8])}, not {model!r}", model_flag)
    return model


@dataclass(frozen=True)
class Ready:
    model: str
    seconds: float


def wait_ready(ep: Endpoint, *, timeout: float, model: str | None = None, interval: float = 2.0,
               on_phase: Callable[[str, float], None] = lambda phase, elapsed: None) -> Ready:
    """Poll /health until 200, then /v1/models, then send one tiny chat completion until the answer is one
    (`is_chat_completion`: a proxy's login page answering 200 is not); OperationFailed on timeout, saying
    what answered last (e.g. "HTTP 200 text/html, not a chat completion"), or when the endpoint answers but
    can never become right (wrong model, rejected key). A readiness probe, not a retry: every failure
    before the deadline is expected while the engine loads."""
    import httpx2
    import openai

    if not math.isfinite(timeout) or timeout <= 0:
        # `elapsed > nan` is never true: a NaN timeout would wait forever
        raise BadInput(f"must be a finite number of seconds > 0, got {timeout}", "--timeout")
    start = time.monotonic()
    phase = "health"
    last_error = ""
    scrub = ep.scrubber()
    with httpx2.Client(timeout=10) as http:
        client = ep.openai_client(timeout=60, asynchronous=False)
        try:
            while True:
                elapsed = time.monotonic() - start
                if elapsed > timeout:
                    raise OperationFailed(f"{ep.root} not ready after {timeout:.0f} s (stuck at {phase}: {last_error})")
                on_phase(phase, elapsed)
                left = max(timeout - elapsed, 0.1)  # no request outlives the deadline
                try:
                    if phase == "health":
                        r = http.get(ep.url("/health"), timeout=min(10.0, left))
                        if r.status_code == 200:
                            phase = "models"
                            continue
                        last_error = f"/health answered {r.status_code}"
                    elif phase == "models":
                        ids = list_models(ep, client=http, timeout=min(10.0, left))
                        if model and model not in ids:
                            raise OperationFailed(f"{ep.root} serves {ids}, not {model!r}")
                        model = model or (ids[0] if ids else None)
                        if model:
                            phase = "completion"
                            continue
                        last_error = "/v1/models lists no model"
                    else:
                        raw = client.chat.completions.with_raw_response.create(
                            model=model or "", max_tokens=1, timeout=min(60.0, left),
                            messages=[{"role": "user", "content": "ping"}])
                        if is_chat_completion(_json(raw.http_response)):
                            return Ready(model or "", time.monotonic() - start)
                        last_error = f"/v1/chat/completions answered {answered(raw.http_response)}, not a chat completion"
                except NotOpenAI as exc:
                    last_error = f"/v1/models answered {exc}"
                except StatusError as exc:
                    if exc.status in (401, 403):
                        raise OperationFailed(f"{exc}: check the API key") from None
                    last_error = str(exc)
                except (httpx2.HTTPError, openai.APIConnectionError, openai.APIStatusError) as exc:
                    # an error body may quote the request's key: redacted before it is cut, so no part is kept
                    last_error = scrub.text(f"{type(exc).__name__}: {exc}")[:200]
                time.sleep(min(interval, max(timeout - (time.monotonic() - start), 0.0)))
        finally:
            client.close()

"""The LLM gateway (issue 15): the provider key never enters the container.

A gateway-mode workspace gets `http://<gateway>/llm/<provider>` as its base URL
(`.../llm/openai/v1` for openai) and a workspace LLM credential instead of the
key. This handler, mounted on the registry listener only (the one address
containers reach; never the admin listener), takes
`/llm/{provider}/{tail}`, authenticates the credential (`Authorization: Bearer`
or `x-api-key`; only its SHA-256 is looked up), replaces it with the real key,
read per request so a rotated secret takes effect on the next call, and forwards
to the provider's URL (`Provider.upstream_url`). The answer is streamed back chunk
by chunk as it arrives (server-sent events reach the agent at once), while a copy
of each chunk goes to a usage observer (`controller.core.usage`).

Answers of its own, in the provider's error shape (`llm_wire`), by class:
- 429 `rate_limited` (+ Retry-After): the source failed credential checks too often
  (`FailedAuthLimiter`, as the registry), before any lookup;
- 404 `unknown_provider`, `not_found` (a path outside the provider's API);
- 401 `missing_credential`; 401 `invalid_credential`, `stale_credential` (revoked:
  an older container generation), `expired_credential`, each of which spends the
  source's failed-auth budget;
- 403 `wrong_provider`: a valid credential on another provider's path (403, not
  404: the caller is known, and the path exists for other workspaces);
- 413 `body_too_large`: over `max_request_bytes`, declared or streamed;
- 429 `budget_exhausted` (`x-should-retry: false`): the workspace's budget says no;
- 403 `no_provider_key`: the workspace's key is not set (not retryable, and not a
  401: the agent's own credential is fine); 403 `provider_key_unreadable`: it is
  stored but does not decrypt with the controller's secret key;
- 503 `store_unavailable` (+ Retry-After): the database is away;
- 502 `upstream_unreachable`, 504 `upstream_timeout`: no answer from the provider.
The provider's own answers pass through with their status; they are classed
`ok`, `upstream_auth` (401/403: the real key was refused), `upstream_rate_limited`,
`upstream_client_error`, `upstream_server_error`. A stream the provider breaks
off is `upstream_broken` and the client's connection is cut (a truncated answer
must not look complete); a client that goes away is `client_closed`.

What is logged: workspace, provider, method, path (no query), status, class,
time and token counts. Never a header value, a body, the credential or the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
from aiohttp import web
from yarl import URL

from controller.api._http import STORE_RETRY_AFTER_SECONDS
from controller.api.llm_metrics import GatewayMetrics
from controller.api.llm_wire import GatewayRefusal, request_headers, response_headers
from controller.api.registry import FailedAuthLimiter
from controller.core import redact, tokens
from controller.core.errors import SecretUnreadableError, StoreUnavailableError
from controller.core.providers import PROVIDERS, Provider, WireApi
from controller.core.usage import (
    STREAM_USAGE_PATHS,
    ZERO,
    NoUsage,
    Usage,
    UsageObserver,
    asking_for_stream_usage,
    observer_for,
)

log = logging.getLogger("wsctl.llm_gateway")

MAX_REQUEST_BYTES = 32 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 600.0
"""Longest silence from the provider, before its answer starts or between two chunks.
The SDKs' own default request timeout is 600 s: a long non-streamed answer may say
nothing for minutes."""
MAX_CONNECTIONS = 1024
"""Open upstream connections at most (aiohttp's default, 100, would queue the 101st
concurrent stream behind the others)."""


class LlmCredentialRow(Protocol):
    """What the store knows of a workspace LLM credential (found by its hash)."""

    @property
    def workspace_id(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def provider(self) -> str: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class LlmCredential:
    """A plain `LlmCredentialRow`."""

    workspace_id: str
    generation: int
    provider: str
    base_url: str | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = None


class CredentialLookup(Protocol):
    def find_llm_credential(self, credential_hash: str
                            ) -> Awaitable[LlmCredentialRow | None]:
        """The credential whose SHA-256 (hex, `tokens.digest`) this is, or None."""


class KeySource(Protocol):
    async def key_for(self, workspace_id: str) -> str | None:
        """The workspace's provider key now (read per request, never cached here), or
        None when it has none."""


class UsageSink(Protocol):
    async def record(self, workspace_id: str, provider: str, usage: Usage, status: int,
                     error_class: str | None, seconds: float) -> None:
        """One call of a known workspace (after its answer); `error_class` None when it
        succeeded. Should not wait for the store: write it off the call's path."""


class Budget(Protocol):
    async def allowed(self, workspace_id: str) -> bool:
        """May the workspace make another call now?"""


@dataclass
class _Outcome:
    """What one request came to; logged, counted and recorded once at its end."""

    provider: str
    method: str
    path: str
    workspace: str | None = None
    status: int = 500
    cls: str = "internal_error"
    usage: Usage = ZERO
    extra: dict[str, str] = field(default_factory=dict)


def _upstream_class(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "upstream_auth"
    if status == 429:
        return "upstream_rate_limited"
    return "upstream_client_error" if status < 500 else "upstream_server_error"


class _CappedBody:
    """The request body as it arrives, refusing to pass more than `limit` bytes."""

    class TooLarge(Exception):
        pass

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.request.content.iter_any():
            seen += len(chunk)
            if seen > self.limit:
                self.too_large = True
                raise self.TooLarge
            yield chunk


class LlmGateway:
    """Serves `/llm/{provider}/{tail}` (every method). `close()` at shutdown."""

    def __init__(self, credentials: CredentialLookup, keys: KeySource, usage: UsageSink,
                 budget: Budget, *, metrics: GatewayMetrics | None = None,
                 limiter: FailedAuthLimiter | None = None,
                 max_request_bytes: int = MAX_REQUEST_BYTES,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS,
                 host_aliases: Mapping[str, str] | None = None) -> None:
        self.credentials = credentials
        self.keys = keys
        self.usage = usage
        self.budget = budget
        self.metrics = GatewayMetrics() if metrics is None else metrics
        # `is None`, not `or`: a FailedAuthLimiter with no sources yet has len() 0.
        self.limiter = FailedAuthLimiter() if limiter is None else limiter
        self.max_request_bytes = max_request_bytes
        self.timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                             sock_read=idle_timeout)
        self.max_connections = max_connections
        self.host_aliases = dict(host_aliases or {})
        """Upstream host -> the address the controller dials instead: a baseURL written
        for containers (`host.docker.internal`) means the workspace network's gateway,
        which is this host, as it does inside the container."""
        self._client: aiohttp.ClientSession | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/llm/{provider}/{tail:.*}", self.handle)]

    def _session(self) -> aiohttp.ClientSession:
        """One session for every call: its connection pool keeps provider connections
        (and their TLS) open between calls. No cookie jar: a cookie one workspace's
        answer sets must not ride on another workspace's calls. Answers are passed on
        as they come (no decompression), requested uncompressed so usage is readable."""
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                timeout=self.timeout,
                skip_auto_headers=("User-Agent", "Content-Type", "Accept"))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        provider = PROVIDERS.get(request.match_info["provider"])
        api: WireApi = provider.api if provider else "anthropic"
        outcome = _Outcome(provider=provider.name if provider else "unknown",
                           method=request.method, path=request.path)
        try:
            response = await self._serve(request, provider, outcome)
        except GatewayRefusal as refusal:
            outcome.status, outcome.cls = refusal.status, refusal.cls
            response = refusal.response(api)
        except asyncio.CancelledError:
            outcome.cls = "cancelled"
            self._account(outcome, time.monotonic() - started)
            raise
        except Exception as exc:  # a bug: a 500 in the provider's shape, the trace logged
            log.exception("llm gateway: %s failed", type(exc).__name__)
            outcome.status, outcome.cls = 500, "internal_error"
            response = GatewayRefusal(500, "internal_error", "internal error").response(api)
        seconds = time.monotonic() - started
        self._account(outcome, seconds)
        if outcome.workspace is not None:  # every call of a known workspace, refusals too
            await self.usage.record(outcome.workspace, outcome.provider, outcome.usage,
                                    outcome.status,
                                    None if outcome.cls == "ok" else outcome.cls, seconds)
        return response

    def _account(self, outcome: _Outcome, seconds: float) -> None:
        self.metrics.observe(outcome.workspace, outcome.provider, outcome.cls, seconds,
                             outcome.usage)
        level = logging.DEBUG if outcome.cls == "ok" else logging.INFO
        if outcome.cls in ("upstream_unreachable", "upstream_timeout", "upstream_broken",
                           "store_unavailable", "internal_error"):
            level = logging.WARNING
        u = outcome.usage
        log.log(level, "%s: llm %s %s %s -> %d %s in %.3fs (tokens in=%d out=%d "
                "cache_write=%d cache_read=%d)%s", outcome.workspace or "-", outcome.provider,
                outcome.method, outcome.path, outcome.status, outcome.cls, seconds, u.input,
                u.output, u.cache_creation, u.cache_read,
                "".join(f" {k}={v}" for k, v in sorted(outcome.extra.items())))

    async def _serve(self, request: web.Request, provider: Provider | None,
                     outcome: _Outcome) -> web.StreamResponse:
        source = request.remote or "unknown"
        wait = self.limiter.retry_after(source)
        if wait is not None:
            raise GatewayRefusal(429, "rate_limited", "too many failed credential checks "
                                 "from this address; retry later", retry_after=wait)
        if provider is None:
            raise GatewayRefusal(404, "unknown_provider", "no such provider", retry=False)
        try:
            row = await self._authenticate(request, source)
            outcome.workspace = row.workspace_id
            if row.provider != provider.name:
                raise GatewayRefusal(403, "wrong_provider", "this credential is for another "
                                     "provider's path", retry=False)
            tail = request.rel_url.raw_path.split("/", 3)[3]
            url = provider.upstream_url(tail, row.base_url, request.rel_url.raw_query_string)
            if url is None:
                raise GatewayRefusal(404, "not_found", "no such path", retry=False)
            url = self._aliased(url)
            declared = request.content_length
            if declared is not None and declared > self.max_request_bytes:
                raise self._too_large()
            if not await self.budget.allowed(row.workspace_id):
                raise GatewayRefusal(429, "budget_exhausted", "the workspace's LLM token "
                                     "budget is spent", retry=False)
            key = await self.keys.key_for(row.workspace_id)
        except SecretUnreadableError:  # a wrong secret key: the workspace's own problem
            raise GatewayRefusal(403, "provider_key_unreadable", "the controller cannot read "
                                 "the workspace's provider key; `wsctl describe` says why",
                                 retry=False) from None
        except StoreUnavailableError:
            raise GatewayRefusal(503, "store_unavailable", "the database is unavailable; "
                                 "retry later", retry_after=STORE_RETRY_AFTER_SECONDS) from None
        if not key:
            raise GatewayRefusal(403, "no_provider_key", "the workspace has no provider key "
                                 "set", retry=False)
        redact.remember(key)  # a second line of defence: never in any log line
        outcome.extra["generation"] = str(row.generation)
        return await self._forward(request, provider, url, key, outcome)

    def _aliased(self, url: str) -> str:
        parsed = URL(url, encoded=True)
        alias = self.host_aliases.get(parsed.host or "")
        return url if alias is None else str(parsed.with_host(alias))

    def _too_large(self) -> GatewayRefusal:
        return GatewayRefusal(413, "body_too_large",
                              f"request body over {self.max_request_bytes} bytes", retry=False)

    async def _authenticate(self, request: web.Request, source: str) -> LlmCredentialRow:
        """The credential presented as `Authorization: Bearer` or `x-api-key` (both are
        tried when both are sent); a 401 GatewayRefusal otherwise."""
        presented: list[str] = []
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            presented.append(value.strip())
        api_key = request.headers.get("x-api-key", "").strip()
        if api_key and api_key not in presented:
            presented.append(api_key)
        cls = "missing_credential"
        if presented:
            cls = "invalid_credential"
            now = datetime.now(UTC)
            for credential in presented:
                row = await self.credentials.find_llm_credential(tokens.digest(credential))
                if row is None:
                    continue
                if row.revoked_at is not None:
                    cls = "stale_credential"
                elif row.expires_at is not None and row.expires_at <= now:
                    cls = "expired_credential" if cls != "stale_credential" else cls
                else:
                    return row
        # Only a credential that failed is a guess. No credential guesses nothing and
        # costs no lookup; Claude Code's keyless warm-up (HEAD of its base URL, once
        # per run) must not lock a workspace out of its own gateway.
        if presented:
            self.limiter.spend(source)
            if self.limiter.retry_after(source) is not None:
                log.warning("%s: out of failed-auth budget on the LLM gateway; further "
                            "requests get 429 for a while", source)
        message = {"missing_credential": "a workspace LLM credential is required",
                   "invalid_credential": "credential not recognised",
                   "stale_credential": "credential revoked (an older container generation)",
                   "expired_credential": "credential expired"}[cls]
        raise GatewayRefusal(401, cls, message, retry=False)

    async def _openai_stream_usage(self, request: web.Request, provider: Provider,
                                   url: str) -> bytes | None:
        """An OpenAI chat/completions stream is made to report its usage (else it would
        pass the budget uncounted): the body is read whole (it is bounded) and, when
        it streams without asking, sent asking. None: forward the body as it comes."""
        if provider.api != "openai" or request.method != "POST" or not request.body_exists \
                or not URL(url, encoded=True).path.endswith(STREAM_USAGE_PATHS):
            return None
        raw = bytearray()
        try:
            async for chunk in _CappedBody(request, self.max_request_bytes).chunks():
                raw.extend(chunk)
        except _CappedBody.TooLarge:
            raise self._too_large() from None
        return asking_for_stream_usage(bytes(raw)) or bytes(raw)

    async def _forward(self, request: web.Request, provider: Provider, url: str, key: str,
                       outcome: _Outcome) -> web.StreamResponse:
        whole = await self._openai_stream_usage(request, provider, url)
        body = _CappedBody(request, self.max_request_bytes) \
            if request.body_exists and whole is None else None
        headers = request_headers(request.headers, provider.key_headers(key),
                                  keep_length=request.content_length is not None
                                  and whole is None)
        try:
            upstream = await self._session().request(
                request.method, URL(url, encoded=True), headers=headers,
                data=whole if whole is not None else body.chunks() if body else None,
                allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if body is not None and body.too_large:
                raise self._too_large() from None
            outcome.extra["host"] = URL(url, encoded=True).host or "?"
            outcome.extra["error"] = type(exc).__name__
            if isinstance(exc, TimeoutError):
                raise GatewayRefusal(504, "upstream_timeout", "the provider did not answer in "
                                     "time") from None
            raise GatewayRefusal(502, "upstream_unreachable", "the provider could not be "
                                 "reached") from None
        try:
            return await self._relay(request, upstream, outcome)
        finally:
            upstream.release()

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse,
                     outcome: _Outcome) -> web.StreamResponse:
        """The provider's answer to the client as it arrives; a copy of every chunk to
        the usage observer."""
        outcome.status, outcome.cls = upstream.status, _upstream_class(upstream.status)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(response_headers(upstream.headers))
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        observer: UsageObserver = NoUsage()
        if upstream.status < 300:
            observer = observer_for(upstream.headers.get("Content-Type"),
                                    upstream.headers.get("Content-Encoding"))
        try:
            await response.prepare(request)
        except (ConnectionError, aiohttp.ClientError):
            upstream.close()
            outcome.cls = "client_closed"
            return response
        while True:
            try:
                chunk = await upstream.content.readany()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                outcome.cls, outcome.extra["error"] = "upstream_broken", type(exc).__name__
                upstream.close()
                outcome.usage = observer.usage
                if request.transport is not None:  # cut: a truncated answer must show
                    request.transport.close()
                return response
            if not chunk:
                break
            observer.feed(chunk)
            try:
                await response.write(chunk)
            except (ConnectionError, aiohttp.ClientError):
                outcome.cls = "client_closed"
                upstream.close()
                outcome.usage = observer.usage
                return response
        outcome.usage = observer.usage
        await response.write_eof()
        return response

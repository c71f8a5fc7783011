"""The agent registry: POST /registry/register and /registry/heartbeat.

Agents authenticate with `Authorization: Bearer <token>`; only the token's
SHA-256 is looked up. Every refusal carries a named class: 400 `missing_url`,
`invalid_url`, `blocked_private_url`, `invalid_agent_card`, `invalid_body`;
401 `missing_token`, `invalid_token`, `stale_token` (a revoked generation),
`expired_token` (not revoked, but past its `expires_at`), `wrong_workspace`.
While the database cannot be reached: 503 `store_unavailable` with Retry-After
(the agent retries later; one warning line is logged per refused request).

The protocol is versioned: an agent may name its version in `X-Wsctl-Agent-Protocol`
(the agent kit always does); one this registry does not speak gets 400
`unsupported_protocol` before the token is looked at (a newer protocol may
authenticate differently: its requests must not count as failed authentications);
a refused register from the workspace's own container is recorded as its register
failure, so its status says why it never comes Online.
Without the header the agent is taken to speak version 1 (agents older than the
header). Every answer names this registry's version in the same header.

Failed authentications are rate-limited per source address (a token bucket,
`FailedAuthLimiter`): a source out of budget gets 429 `rate_limited` with
Retry-After before its body is read or any database lookup, and those refusals
are not recorded against the workspace they name (a flood cannot drive
recreates). Successful requests cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from aiohttp import web

from controller.api._http import BodyError, HttpError, answer_for, read_json
from controller.api.urlpolicy import check_agent_card, check_claimed_url
from controller.core import origin, redact, tokens
from controller.core.errors import StoreUnavailableError, WsctlError
from controller.core.observed import HEALTHY, HEARTBEAT_STATUSES

log = logging.getLogger("wsctl.registry")

MAX_BODY = 64 * 1024

PROTOCOL_VERSION = 1
"""The agent protocol this registry speaks; kept equal to the agent kit's by a test."""
PROTOCOL_HEADER = "X-Wsctl-Agent-Protocol"
SUPPORTED_PROTOCOLS = frozenset({1})

Handler = Callable[[web.Request], Awaitable[web.Response]]

Identity = Callable[[str], Awaitable[tuple[set[str], set[str]]]]
"""workspace id -> (container names/hostnames, container addresses)."""


class TokenRow(Protocol):
    @property
    def workspace_id(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


class RegistryStore(Protocol):
    def find_token(self, token_hash: str) -> Awaitable[Any]: ...
    def record_register(self, workspace_id: str, url: str, agent_card: Any,
                        token_generation: int, *,
                        at: datetime | None = None) -> Awaitable[Any]: ...
    def record_register_failure(self, workspace_id: str, cls: str, message: str, *,
                                      at: datetime | None = None) -> Awaitable[Any]: ...
    def record_heartbeat(self, workspace_id: str, status: str, *,
                               error_detail: str | None = None,
                               active_tasks: int | None = None,
                               uptime_seconds: float | None = None,
                               at: datetime | None = None,
                               generation: int | None = None) -> Awaitable[Any]: ...
    def record_auth_failure(self, workspace_id: str, cls: str,
                                  generation: int | None) -> Awaitable[None]: ...


def _count(value: object) -> int | None:
    """A heartbeat's count as an int4 >= 0, or None (absent, a bool, text, out of range)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None


@dataclass
class RegistryCounters:
    register_failures: dict[str, int] = field(default_factory=dict)
    auth_failures: dict[str, int] = field(default_factory=dict)
    auth_rate_limited: int = 0
    registers: int = 0
    heartbeats: int = 0
    a2a_refused: int = 0
    """Requests agents refused on their A2A port (no controller credential), as their
    heartbeats reported them."""
    protocol_refused: int = 0
    """Requests refused because they named an agent protocol this registry does not speak."""


class FailedAuthLimiter:
    """Per-source token buckets of failed authentications.

    Each source starts with `burst` tokens; a failed authentication spends one,
    and they refill at `refill_per_second` up to `burst`. A source with less
    than one token left is over budget until it refills. The table keeps at
    most `max_sources` sources, dropping the least recently seen (a dropped
    source starts again with a full bucket). `clock` is monotonic seconds.
    """

    def __init__(self, *, burst: int = 20, refill_per_second: float = 1.0,
                 max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or refill_per_second <= 0 or max_sources < 1:
            raise ValueError("burst, refill_per_second and max_sources must be positive")
        self.burst = float(burst)
        self.refill_per_second = refill_per_second
        self.max_sources = max_sources
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, source: str, now: float) -> float:
        tokens, at = self._buckets.get(source, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.refill_per_second)

    def retry_after(self, source: str) -> int | None:
        """Whole seconds until `source` may fail again; None while it is within budget."""
        if source not in self._buckets:
            return None
        now = self.clock()
        level = self._level(source, now)
        if level >= 1.0:
            return None
        return max(1, math.ceil((1.0 - level) / self.refill_per_second))

    def spend(self, source: str) -> None:
        """Count one failed authentication from `source`."""
        now = self.clock()
        level = self._level(source, now)
        self._buckets[source] = (max(0.0, level - 1.0), now)
        self._buckets.move_to_end(source)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)


class Refusal(HttpError):
    """The registry's answer to a request it refuses, in the agent protocol's shape:
    `{"error": {"class": ..., "message": ...}}`."""

    def __str__(self) -> str:
        return f"{self.status} {self.cls}: {self.message}"

    def response(self) -> web.Response:
        return web.json_response({"error": {"class": self.cls, "message": self.message}},
                                 status=self.status, headers=self.headers())


async def _resolve(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), 2.0)
    return sorted({str(info[4][0]) for info in infos})


class Registry:
    def __init__(self, store: RegistryStore, identity: Identity,
                 notify: Callable[[str], None], *, stale_after: float = 15.0,
                 limiter: FailedAuthLimiter | None = None) -> None:
        self.store = store
        self.stale_after = stale_after
        self.identity = identity
        self.notify = notify
        self.counters = RegistryCounters()
        self.limiter = limiter if limiter is not None else FailedAuthLimiter()
        # Last heartbeat state per workspace: only transitions wake the reconciler.
        # Entries of workspaces that stopped beating (deleted ones) are forgotten.
        self._beats: dict[str, tuple[int | None, str, str | None, float]] = {}
        self._swept_at = float("-inf")
        self.hearing_since = datetime.now(UTC)
        """Since when agents could be heard without a break: this registry's start, or
        the last request it could not record (the database was away). The planner
        holds no agent to its startup or liveness timeout for silence before then."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/registry/register", self._store_guard(self.register)),
                web.post("/registry/heartbeat", self._store_guard(self.heartbeat))]

    def _store_guard(self, handler: Handler) -> Handler:
        """An unreachable database is 503 store_unavailable (retry later), not a 500.
        What the handler sends to the store is counted under the `registry` origin.
        An agent protocol this registry does not speak is refused first, and every
        answer names the registry's protocol version."""
        async def guarded(request: web.Request) -> web.Response:
            refusal = self._protocol_refusal(request)
            if refusal is None:
                response = await self._guarded(handler, request)
            else:
                response = refusal.response()
                if request.path == "/registry/register":
                    await self._guarded(partial(self._record_protocol_refusal, refusal),
                                        request)
            response.headers[PROTOCOL_HEADER] = str(PROTOCOL_VERSION)
            return response
        return guarded

    async def _guarded(self, handler: Handler, request: web.Request) -> web.Response:
        try:
            with origin.working_for(origin.REGISTRY):
                return await handler(request)
        except WsctlError as exc:
            if isinstance(exc, StoreUnavailableError):
                self.hearing_since = datetime.now(UTC)
            answer = answer_for(exc, request, log)
            if answer is None:
                raise
            return Refusal(answer.status, answer.cls, answer.message,
                           retry_after=answer.retry_after).response()

    async def _record_protocol_refusal(self, refusal: Refusal,
                                       request: web.Request) -> web.Response:
        """Shown in the workspace's status (RegisterFailed, unsupported_protocol) when
        the refused register came from that workspace's own container, as a refused
        token is: the user sees why the agent never comes Online."""
        try:
            body = await self._body(request)
        except Refusal:
            return refusal.response()
        workspace_id = body["workspace_id"]
        _, addresses = await self.identity(workspace_id)
        if request.remote in addresses:
            try:
                await self.store.record_register_failure(workspace_id, refusal.cls,
                                                         redact.redact(refusal.message))
            except StoreUnavailableError:
                raise
            except Exception as exc:  # a workspace deleted meanwhile has no row to mark
                log.debug("protocol refusal not recorded for %s: %s", workspace_id, exc)
                return refusal.response()
            self.notify(workspace_id)
        return refusal.response()

    def _protocol_refusal(self, request: web.Request) -> Refusal | None:
        """400 unsupported_protocol for a version this registry does not speak; a
        missing header is an agent older than the header (version 1)."""
        named = request.headers.get(PROTOCOL_HEADER)
        if named is None:
            return None
        value = named.strip()
        if value.isascii() and value.isdigit() and int(value) in SUPPORTED_PROTOCOLS:
            return None
        self.counters.protocol_refused += 1
        shown = value if len(value) <= 20 and value.isprintable() else repr(value[:20])
        log.warning("%s: agent protocol %s: %s is not spoken here (this registry speaks %d); "
                    "400", request.remote, PROTOCOL_HEADER, shown, PROTOCOL_VERSION)
        return Refusal(400, "unsupported_protocol",
                       f"{PROTOCOL_HEADER}: {shown} is not a protocol version this controller "
                       f"speaks; it speaks {PROTOCOL_VERSION} (use an agent kit of protocol "
                       f"{PROTOCOL_VERSION}, or upgrade wsctl)")

    def _within_budget(self, request: web.Request) -> None:
        """429 for a source out of failed-auth budget: before the body or the database."""
        source = request.remote or "unknown"
        wait = self.limiter.retry_after(source)
        if wait is not None:
            self.counters.auth_rate_limited += 1
            log.debug("%s: too many failed agent authentications; 429", source)
            raise Refusal(429, "rate_limited",
                          "too many failed authentications from this address; retry later",
                          retry_after=wait)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await read_json(request, MAX_BODY)
        except BodyError as exc:
            raise Refusal(exc.status, exc.cls, exc.message) from None
        if not isinstance(body, dict):
            raise Refusal(400, "invalid_body", "body must be a JSON object")
        workspace_id = body.get("workspace_id")
        if not isinstance(workspace_id, str) or not workspace_id or len(workspace_id) > 200:
            raise Refusal(400, "invalid_body", "workspace_id must be a non-empty string")
        return body

    async def _authenticate(self, request: web.Request, workspace_id: str) -> int:
        """The generation of the presented token; raises a 401 Refusal otherwise."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await self._auth_failed(request, workspace_id, "missing_token", None)
            raise Refusal(401, "missing_token", "Authorization: Bearer <token> required")
        row: TokenRow | None = await self.store.find_token(tokens.digest(token))
        if row is None:
            await self._auth_failed(request, workspace_id, "invalid_token", None)
            raise Refusal(401, "invalid_token", "token not recognised")
        if not tokens.same(row.workspace_id, workspace_id):
            await self._auth_failed(request, workspace_id, "wrong_workspace", None)
            raise Refusal(401, "wrong_workspace", "token belongs to another workspace")
        if row.revoked_at is not None:
            await self._auth_failed(request, workspace_id, "stale_token", row.generation)
            raise Refusal(401, "stale_token", f"token generation {row.generation} was revoked")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            await self._auth_failed(request, workspace_id, "expired_token", row.generation)
            raise Refusal(401, "expired_token", f"token generation {row.generation} expired")
        return row.generation

    async def _auth_failed(self, request: web.Request, workspace_id: str, cls: str,
                           generation: int | None) -> None:
        self.counters.auth_failures[cls] = self.counters.auth_failures.get(cls, 0) + 1
        source = request.remote or "unknown"
        self.limiter.spend(source)
        if self.limiter.retry_after(source) is not None:  # this failure spent the last token
            log.warning("%s: out of failed-auth budget; further requests get 429 for a while",
                        source)
        # A refused token leads the planner to replace the workspace's container
        # (its token file is lost or corrupt). Only the workspace's own container
        # may set that off: anyone else naming it would otherwise force recreates.
        _, addresses = await self.identity(workspace_id)
        if request.remote not in addresses:
            log.info("%s: agent auth refused (%s) from %s, not its container: not acted on",
                     workspace_id, cls, request.remote)
            return
        log.info("%s: agent auth refused (%s)", workspace_id, cls)
        try:
            await self.store.record_auth_failure(workspace_id, cls, generation)
        except Exception as exc:  # an unknown workspace id has no row to mark
            log.debug("auth failure not recorded for %s: %s", workspace_id, exc)
        if cls in ("invalid_token", "stale_token", "expired_token", "missing_token"):
            self.notify(workspace_id)

    async def register(self, request: web.Request) -> web.Response:
        try:
            self._within_budget(request)
            body = await self._body(request)
            workspace_id = body["workspace_id"]
            generation = await self._authenticate(request, workspace_id)
        except Refusal as refusal:
            return refusal.response()
        names, addresses = await self.identity(workspace_id)
        verdict = await check_claimed_url(body.get("url"), names, addresses, _resolve)
        if verdict.ok:
            verdict = check_agent_card(body.get("agent_card"))
        if not verdict.ok:
            self.counters.register_failures[verdict.cls] = \
                self.counters.register_failures.get(verdict.cls, 0) + 1
            log.info("%s: register refused: %s (%s)", workspace_id, verdict.cls, verdict.message)
            message = redact.redact(verdict.message)
            await self.store.record_register_failure(workspace_id, verdict.cls, message)
            self.notify(workspace_id)
            return Refusal(400, verdict.cls, message).response()
        await self.store.record_register(workspace_id, redact.redact(body["url"]),
                                         redact.redact_json(body["agent_card"]),
                                         generation)
        self.counters.registers += 1
        log.info("%s: registered (token generation %d)", workspace_id, generation)
        # The register itself wakes the reconciler (the agent is Online from it): a
        # healthy first heartbeat is then no transition and costs no reconcile.
        loop_time = asyncio.get_running_loop().time()
        self._beats[workspace_id] = (generation, HEALTHY, None, loop_time)
        self._forget_quiet(loop_time)
        self.notify(workspace_id)
        return web.json_response({"ok": True, "token_generation": generation})

    async def heartbeat(self, request: web.Request) -> web.Response:
        try:
            self._within_budget(request)
            body = await self._body(request)
            workspace_id = body["workspace_id"]
            generation = await self._authenticate(request, workspace_id)
            status = body.get("status")
            if status not in HEARTBEAT_STATUSES:
                raise Refusal(400, "invalid_body", "status must be healthy or unhealthy")
            detail = body.get("error_detail")
            detail = redact.redact(detail)[:1000] if isinstance(detail, str) and detail else None
            tasks = _count(body.get("active_tasks"))  # the column is an int4 >= 0
            uptime = body.get("uptime_seconds")
            refused = _count(body.get("a2a_refused"))
        except Refusal as refusal:
            return refusal.response()
        if refused:
            self.counters.a2a_refused += refused
            log.warning("%s: its agent refused %d request(s) without the controller's "
                        "credential on its A2A port", workspace_id, refused)
        await self.store.record_heartbeat(
            workspace_id, status, error_detail=detail,
            active_tasks=tasks,
            uptime_seconds=float(uptime) if isinstance(uptime, int | float)
            and abs(uptime) < 1e300 else None,  # float() of a huge int raises
            generation=generation)
        self.counters.heartbeats += 1
        loop_time = asyncio.get_running_loop().time()
        previous = self._beats.get(workspace_id)
        self._beats[workspace_id] = (generation, status, detail, loop_time)
        # Wake the reconciler on transitions only: first beat, status or detail change,
        # or a beat after a gap (the workspace may have been reported stale).
        if previous is None or previous[:3] != (generation, status, detail) \
                or loop_time - previous[3] > self.stale_after / 2:
            self.notify(workspace_id)
        self._forget_quiet(loop_time)
        return web.json_response({"ok": True})

    def _forget_quiet(self, now: float) -> None:
        """At most once per `stale_after`: drop the heartbeat state of workspaces that
        have not beaten for half of it. The next beat of such a workspace wakes the
        reconciler anyway (a beat after a gap), as with no state at all, so this only
        bounds the map: a deleted workspace's state does not stay forever."""
        if now - self._swept_at < self.stale_after:
            return
        self._swept_at = now
        horizon = now - self.stale_after / 2
        self._beats = {k: v for k, v in self._beats.items() if v[3] >= horizon}

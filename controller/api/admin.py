"""The user/CLI API on --listen (default 127.0.0.1:8080), behind the admin token.

Routes (namespace from ?namespace=, default "default"):
  GET    /api/v1/workspaces                      list
  POST   /api/v1/workspaces                      apply (all documents or none)
  GET    /api/v1/workspaces/{name}               get
  DELETE /api/v1/workspaces/{name}               delete
  POST   /api/v1/workspaces/{name}/restart       bump spec.restartedAt
  GET    /api/v1/workspaces/{name}/describe      conditions, registration, events, diagnostics
  GET    /api/v1/events                          events, oldest first (?workspace=, ?watch=)
  GET    /api/v1/workspaces/{name}/activity      activity log
  GET    /api/v1/workspaces/{name}/logs          container logs (?follow=true: as written)
  GET    /api/v1/workspaces/{name}/exec          a command, over a WebSocket (exec.py)
  GET    /api/v1/workspaces/{name}/files         tar of a path; PUT: unpack a tar (files.py)
  GET    /api/v1/workspaces/{name}/files/stat    directory, file or missing (files.py)
  POST   /api/v1/workspaces/{name}/a2a           JSON-RPC message/send proxy
  GET    /healthz  /readyz  (no token)           GET /metrics (token)

While the database cannot be reached (a PostgreSQL restart), every route that
reads or writes the store answers 503 `{"error": ..., "class": "store_unavailable"}`
with a Retry-After header, and logs one warning line per refused request.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web

from controller.api import metrics as metrics_exposition
from controller.api import openapi
from controller.api._http import BodyError, answer_for, read_json
from controller.api.a2a import A2AProxy
from controller.api.wake import Waker
from controller.api.watch import EventCursor, WatchHub, serve_stream, serve_watch
from controller.core import manifests, origin, redact, tokens
from controller.core.activity import RecentActivity
from controller.core.errors import WsctlError
from controller.core.model import DEFAULT_NAMESPACE, DNS1123_LABEL, Workspace, WorkspaceKey

log = logging.getLogger("wsctl.api")

MAX_BODY = 1024 * 1024
USAGE_DAYS = 7
"""`GET /api/v1/usage` without `days`: the last week."""
USAGE_DAYS_MAX = 400
USAGE_ROWS = 5000
"""At most this many usage rows in one answer (workspaces x days x providers)."""
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


class AdminStore(Protocol):
    def list_workspaces(self, namespace: str | None = None) -> Awaitable[list[Workspace]]: ...
    def get_workspace(self, namespace: str, name: str) -> Awaitable[Workspace | None]: ...
    def apply_workspace(self, ws: Workspace) -> Awaitable[Workspace]: ...
    def apply_workspaces(self, workspaces: Sequence[Workspace]
                         ) -> Awaitable[list[tuple[int | None, Workspace]]]: ...
    def request_delete(self, namespace: str, name: str, *,
                       purge: bool = False) -> Awaitable[bool]: ...
    def get_registration(self, workspace_id: str) -> Awaitable[Any]: ...
    def list_events(self, workspace_id: str, limit: int = 50) -> Awaitable[list[Any]]: ...
    def recent_events(self, namespace: str | None = None, workspace_id: str | None = None,
                      *, after: datetime | None = None, limit: int = 100
                      ) -> Awaitable[list[Any]]: ...
    def latest_diagnostics(self, workspace_id: str) -> Awaitable[Any]: ...
    def list_activity(self, workspace_id: str, limit: int = 50) -> Awaitable[list[Any]]: ...
    def llm_usage(self, workspace_id: str | None = None, *, since: date | None = None,
                  limit: int = 1000) -> Awaitable[list[Any]]: ...


def _error(status: int, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": redact.redact(reason), **extra}, status=status)


def _int_query(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) <= maximum:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be an integer from 1 to {maximum}"}),
            content_type="application/json")
    return int(raw)


def _covering(namespace: str | None, workspace_id: str | None) -> Callable[[str], bool]:
    """What a watch is about: one workspace (its id), a namespace's, or all (neither)."""
    if workspace_id is not None:
        return workspace_id.__eq__
    if namespace is not None:
        return lambda wid: wid.startswith(f"{namespace}.")
    return lambda wid: True


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be true or false"}),
                                 content_type="application/json")
    return raw in ("true", "1")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@web.middleware
async def json_errors(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """aiohttp's own errors (unknown route, wrong method, body too large) as JSON too,
    and every expected failure as the answer `answer_for` gives it (an unreachable
    database is 503 store_unavailable, not a 500)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _error(exc.status, exc.reason)
    except WsctlError as exc:
        answer = answer_for(exc, request, log)
        if answer is None:
            raise
        response = _error(answer.status, answer.message, **{"class": answer.cls})
        response.headers.update(answer.headers())
        return response


def admin_auth(admin_token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not tokens.same(presented.strip(), admin_token):
            return _error(401, "admin token required (Authorization: Bearer <token>)")
        return await handler(request)
    return middleware


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FollowLogs = Callable[[web.Request, Workspace, int], Awaitable[web.StreamResponse]]
Preview = Callable[[Workspace | None, Workspace], Awaitable[dict[str, Any]]]
"""What applying the second would do to the first (None: not there yet)."""


def _working_for(where: str, handler: Handler) -> Handler:
    """`handler` with what it sends to the store counted under origin `where`."""
    @functools.wraps(handler)
    async def attributed(request: web.Request) -> web.StreamResponse:
        with origin.working_for(where):
            return await handler(request)
    return attributed


class AdminApi:
    def __init__(self, store: AdminStore, proxy: A2AProxy,
                 logs: Callable[[str, int], Awaitable[str | None]],
                 ready: Callable[[], bool], metrics: Callable[[], Awaitable[str]],
                 volumes: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
                 follow_logs: FollowLogs | None = None,
                 waker: Waker | None = None, activity: RecentActivity | None = None,
                 watch: WatchHub | None = None, preview: Preview | None = None,
                 event_watch: WatchHub | None = None) -> None:
        self.store = store
        self.event_watch = event_watch
        """`GET /api/v1/events?watch=true`; None: not served."""
        self.preview = preview
        """`POST /api/v1/workspaces?dryRun=true` (app/preview.py); None: not served."""
        self.watch = watch
        """`GET /api/v1/workspaces?watch=true` (watch.py); None: not served."""
        self.volumes = volumes
        self.follow_logs = follow_logs
        """`GET .../logs?follow=true` (streams.py); None: not served."""
        self.waker = waker
        """Wakes a suspended workspace on a message (None: suspension not supported)."""
        self.in_flight = activity or RecentActivity()
        self.proxy = proxy
        self.logs = logs
        self.ready = ready
        self.metrics = metrics
        self._openapi: dict[str, Any] | None = None

    def routes(self) -> list[web.RouteDef]:
        base = "/api/v1/workspaces"
        api = functools.partial(_working_for, origin.API)
        return [
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", _working_for(origin.METRICS, self.get_metrics)),
            web.get("/openapi.json", self.openapi),
            web.get("/api/v1/volumes", api(self.list_volumes)),
            web.get("/api/v1/usage", api(self.usage)),
            web.get("/api/v1/events", api(self.events)),
            web.get(base, api(self.list)),
            web.post(base, api(self.apply)),
            web.get(base + "/{name}", api(self.get)),
            web.delete(base + "/{name}", api(self.delete)),
            web.post(base + "/{name}/restart", api(self.restart)),
            web.post(base + "/{name}/suspend", api(self.suspend)),
            web.post(base + "/{name}/resume", api(self.resume)),
            web.get(base + "/{name}/describe", api(self.describe)),
            web.get(base + "/{name}/activity", api(self.activity)),
            web.get(base + "/{name}/logs", api(self.get_logs)),
            web.post(base + "/{name}/a2a", api(self.a2a)),
        ]

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _label(field: str, value: str) -> str:
        if not DNS1123_LABEL.match(value) or len(value) > 63:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"{field} {value!r} is not a DNS-1123 label"}),
                content_type="application/json")
        return value

    def _key(self, request: web.Request) -> WorkspaceKey:
        name = self._label("name", request.match_info["name"])
        namespace = self._label("namespace", request.query.get("namespace", DEFAULT_NAMESPACE))
        return WorkspaceKey(namespace, name)

    async def _workspace(self, request: web.Request) -> Workspace:
        key = self._key(request)
        ws = await self.store.get_workspace(key.namespace, key.name)
        if ws is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"workspace {key} not found"}),
                                   content_type="application/json")
        return ws

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return await read_json(request, MAX_BODY)
        except BodyError as exc:
            if exc.status == 413:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY,
                                                    actual_size=exc.size or 0) from None
            raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}),
                                     content_type="application/json") from None

    # ------------------------------------------------------------ handlers

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "starting"}, status=503)

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = openapi.document()
        return web.json_response(self._openapi)

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=await self.metrics(),
                            headers={"Content-Type": metrics_exposition.CONTENT_TYPE})

    async def list(self, request: web.Request) -> web.StreamResponse:
        namespace = request.query.get("namespace")
        if namespace is not None:
            self._label("namespace", namespace)
        name = request.query.get("name")
        if name is not None:
            self._label("name", name)

        async def listing() -> list[dict[str, Any]]:
            if name is not None:
                one = await self.store.get_workspace(namespace or DEFAULT_NAMESPACE, name)
                return [] if one is None else [one.to_wire()]
            return [w.to_wire() for w in await self.store.list_workspaces(namespace)]

        if request.query.get("watch") in ("true", "1"):
            if self.watch is None:
                return _error(404, "watch is not served by this controller")
            one = None if name is None else f"{namespace or DEFAULT_NAMESPACE}.{name}"
            return await serve_watch(request, self.watch, listing, _covering(namespace, one))
        return web.json_response({"items": await listing()})

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response((await self._workspace(request)).to_wire())

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The newest `limit` events, oldest first: of one `workspace` (of `namespace`,
        default "default"), of a `namespace`, or of all (neither). `watch=true`: then
        each new event or repeat as it is recorded (watch.py)."""
        namespace = request.query.get("namespace")
        if namespace is not None:
            self._label("namespace", namespace)
        name = request.query.get("workspace")
        workspace_id = None
        if name is not None:
            workspace_id = f"{namespace or DEFAULT_NAMESPACE}.{self._label('workspace', name)}"
        limit = _int_query(request, "limit", 100, 1000)
        scope = None if workspace_id else namespace

        def wire(e: Any) -> dict[str, Any]:
            ns, _, ws = e.workspace_id.partition(".")
            return {"id": e.id, "namespace": ns, "workspace": ws, "type": e.type,
                    "reason": e.reason, "message": redact.redact(e.message),
                    "count": e.count, "firstAt": e.first_at.isoformat(),
                    "lastAt": e.at.isoformat()}

        if not _bool_query(request, "watch"):
            found = await self.store.recent_events(scope, workspace_id, limit=limit)
            return web.json_response({"items": [wire(e) for e in found]})
        if self.event_watch is None:
            return _error(404, "events watch is not served by this controller")
        cursor = EventCursor()

        async def look() -> list[dict[str, Any]]:
            found = await self.store.recent_events(scope, workspace_id, after=cursor.after,
                                                   limit=limit)
            return [{"type": kind, "object": wire(e)} for kind, e in cursor.fresh(found)]

        return await serve_stream(request, self.event_watch, look,
                                  _covering(scope, workspace_id))

    async def apply(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        raws = body.get("items") if isinstance(body, dict) and "items" in body else body
        if not isinstance(raws, list):
            raws = [raws]
        documents = [manifests.parse_document(raw, "request", i)
                     for i, raw in enumerate(raws, start=1)]
        bad = [f"{d.where}: {e.path}: {e.reason}" for d in documents for e in d.errors]
        if bad:
            return _error(422, "invalid workspace(s); nothing was applied", details=bad)
        if request.query.get("dryRun") in ("true", "1", "All"):
            if self.preview is None:
                return _error(404, "dry runs are not served by this controller")
            previews = []
            for d in documents:
                assert d.workspace is not None
                key = d.workspace.key
                current = await self.store.get_workspace(key.namespace, key.name)
                previews.append(await self.preview(current, d.workspace))
            return web.json_response({"dryRun": True, "results": previews})
        results = []
        # One transaction: every document or none (a workspace being deleted is a 409).
        done = await self.store.apply_workspaces([d.workspace for d in documents
                                                  if d.workspace is not None])
        for before, applied in done:
            if before is None:
                outcome = "created"
            elif before != applied.metadata.generation:
                outcome = "configured"
            else:
                outcome = "unchanged"
            log.info("%s: applied (%s, generation %s)", applied.key, outcome,
                     applied.metadata.generation)
            results.append({"workspace": str(applied.key), "result": outcome,
                            "generation": applied.metadata.generation})
        return web.json_response({"results": results})

    async def delete(self, request: web.Request) -> web.Response:
        key = self._key(request)
        purge = _bool_query(request, "purge")
        if not await self.store.request_delete(key.namespace, key.name, purge=purge):
            return _error(404, f"workspace {key} not found")
        log.info("%s: deletion requested%s", key, " (with its storage)" if purge else "")
        return web.json_response({"workspace": str(key), "result": "deleting",
                                  "purge": purge}, status=202)

    async def _storage_volumes(self) -> Sequence[dict[str, Any]]:
        return [] if self.volumes is None else await self.volumes()

    async def list_volumes(self, request: web.Request) -> web.Response:
        """Every workspace storage volume of this controller: in use by a workspace
        (`attached`), or kept after its workspace was deleted (`retained`)."""
        existing = {w.key.id: w for w in await self.store.list_workspaces()}
        items = []
        for volume in await self._storage_volumes():
            ws = existing.get(str(volume["workspace"]))
            items.append({**volume, "status": "retained" if ws is None else "attached"})
        return web.json_response({"items": items})

    async def usage(self, request: web.Request) -> web.Response:
        """LLM use through the gateway per workspace, UTC day and provider, newest day
        first: `?workspace=NAMESPACE.NAME` for one, `?days=N` for the last N days."""
        workspace = request.query.get("workspace")
        if workspace is not None:
            try:
                WorkspaceKey.from_id(workspace)
            except ValueError as exc:
                return _error(400, str(exc))
        days = _int_query(request, "days", USAGE_DAYS, USAGE_DAYS_MAX)
        since = datetime.now(UTC).date() - timedelta(days=days - 1)
        rows = await self.store.llm_usage(workspace, since=since, limit=USAGE_ROWS)
        return web.json_response({"items": [{
            "workspace": r.workspace_id, "day": r.day.isoformat(), "provider": r.provider,
            "requests": r.requests, "errors": r.errors, "inputTokens": r.input_tokens,
            "outputTokens": r.output_tokens, "cacheCreationTokens": r.cache_creation_tokens,
            "cacheReadTokens": r.cache_read_tokens} for r in rows]})

    async def restart(self, request: web.Request) -> web.Response:
        ws = await self._workspace(request)
        if ws.metadata.deletion_timestamp is not None:
            return _error(409, f"workspace {ws.key} is being deleted")
        now = datetime.now(UTC)
        bumped = ws.model_copy(update={"spec": ws.spec.model_copy(update={"restarted_at": now})})
        applied = await self.store.apply_workspace(bumped)
        log.info("%s: restart requested (restartedAt %s)", ws.key, now.isoformat())
        return web.json_response({"workspace": str(ws.key), "restartedAt": now.isoformat(),
                                  "generation": applied.metadata.generation})

    async def describe(self, request: web.Request) -> web.Response:
        ws = await self._workspace(request)
        workspace_id = ws.key.id
        registration = await self.store.get_registration(workspace_id)
        events = await self.store.list_events(workspace_id, 20)
        diagnostics = await self.store.latest_diagnostics(workspace_id)
        found = [v for v in await self._storage_volumes() if v["workspace"] == workspace_id]
        storage = ws.spec.storage
        return web.json_response({
            "workspace": ws.to_wire(),
            "registration": _jsonable(registration),
            "events": _jsonable(events),
            "diagnostics": _jsonable(diagnostics),
            "storage": {"volume": found[0]["name"] if found else None,
                        "mountPath": storage.mount_path,
                        "reclaimPolicy": storage.reclaim_policy,
                        "sizeBytes": found[0]["sizeBytes"] if found else None},
        })

    async def activity(self, request: web.Request) -> web.Response:
        ws = await self._workspace(request)
        limit = _int_query(request, "limit", 50, 1000)
        rows = await self.store.list_activity(ws.key.id, limit)
        # Stored redacted; redacted again on the way out (rows written before a
        # secret was known to the controller, or by an older version).
        return web.json_response({"items": redact.redact_json(_jsonable(rows))})

    async def get_logs(self, request: web.Request) -> web.StreamResponse:
        ws = await self._workspace(request)
        tail = _int_query(request, "tail", 200, 10_000)
        if _bool_query(request, "follow"):
            if self.follow_logs is None:
                return _error(501, "following logs is not available in this mode")
            return await self.follow_logs(request, ws, tail)
        text = await self.logs(ws.key.id, tail)
        if text is None:
            return _error(404, f"workspace {ws.key} has no container")
        return web.Response(text=redact.redact(text), content_type="text/plain")

    async def a2a(self, request: web.Request) -> web.Response:
        ws = await self._workspace(request)
        payload = await self._json(request)
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON-RPC object")
        agent = ws.spec.agent
        if agent.protocol == "none" and agent.a2a_port is None:
            return _error(409, f"workspace {ws.key} takes no messages: its agent speaks no "
                               "protocol (spec.agent.protocol: none) and spec.agent.a2aPort "
                               "is not set; set it to the port that answers A2A JSON-RPC")
        caller = request.headers.get("X-Wsctl-Caller", "user")[:200]
        with self.in_flight.request(ws.key.id):  # not idle while it is answered
            if self.waker is not None and ws.metadata.deletion_timestamp is None:
                await self.waker.ensure_awake(ws, "a message arrived")
            return web.json_response(await self.proxy.send(ws.key.id, caller, payload,
                                                           port=agent.a2a_port))

    async def _with_waker(self, request: web.Request, verb: str) -> tuple[Workspace, Waker]:
        """The workspace of a suspend or resume, and the waker that does it."""
        ws = await self._workspace(request)
        if self.waker is None:
            raise web.HTTPNotImplemented(
                text=json.dumps({"error": f"{verb} is not available in this mode"}),
                content_type="application/json")
        if ws.metadata.deletion_timestamp is not None:
            raise web.HTTPConflict(
                text=json.dumps({"error": f"workspace {ws.key} is being deleted"}),
                content_type="application/json")
        return ws, self.waker

    async def suspend(self, request: web.Request) -> web.Response:
        ws, waker = await self._with_waker(request, "suspend")
        done = await waker.suspend(ws, "suspended by request")
        return web.json_response({"workspace": str(ws.key),
                                  "result": "suspending" if done else "already suspended"})

    async def resume(self, request: web.Request) -> web.Response:
        ws, waker = await self._with_waker(request, "resume")
        woke = await waker.ensure_awake(ws, "resume requested")
        return web.json_response({"workspace": str(ws.key),
                                  "result": "resumed" if woke else "was not suspended"})

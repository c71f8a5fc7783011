"""The Kubernetes driver: kopf handlers around the same reconcile core as standalone mode.

Handlers only translate. A `Workspace` custom resource becomes a `Workspace`
model (desired state in); the core's `WorkspaceStatus` goes back to `.status`
through the status subresource (status out). Nothing here decides what to do
with a container: that is `Reconciler.reconcile`, shared with the standalone
driver.

Level-triggered, one worker per workspace. The worker is a kopf timer whose
handler waits until something names its workspace, then reconciles from
scratch and returns; kopf then writes the status patch. Wake-ups come from
create/update/resume handlers, Docker events of the workspace's containers,
registry events (register, failure, heartbeat transitions), changes of a
Secret the workspace references, the core's own requeue deadline, and a
periodic resync. Deletion runs in the delete handler behind a finalizer,
which is removed only after the containers are gone and the tokens revoked.

LLM keys come from Kubernetes Secrets (`spec.llm.apiKey.secretRef`, and
`spec.env[].valueFrom.secretRef`) in the workspace's namespace, read from a
kopf index of Secrets, so a changed value is re-projected at once.

High availability: kopf peering. Every replica runs the same handlers; of
the replicas that see each other in the `wsctl` peering object, only the one
with the highest priority acts, the others pause (no handlers, no workers).
Replicas must have distinct priorities (equal priorities pause each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import kopf

from controller.core import origin, redact
from controller.core import settings as defaults
from controller.core.model import (
    ObjectMeta,
    Workspace,
    WorkspaceKey,
    WorkspaceStatus,
)
from controller.core.secretsource import secret_refs
from controller.drivers.k8s_objects import (
    InvalidWorkspace,
    decode_secret,
    invalid_status,
    key_of,
    status_from_body,
    status_patch,
    workspace_from_body,
)
from controller.drivers.orphans import remove_orphans
from controller.drivers.triggers import EventTriggers, TriggerStats
from controller.reconcile.ports import DriverEngine
from controller.reconcile.reconciler import Reconciler, ReconcileResult

log = logging.getLogger("wsctl.operator")

GROUP = "wsctl.dev"
VERSION = "v1alpha1"
PLURAL = "workspaces"
FINALIZER = "wsctl.dev/finalizer"
WORKER_INSTANT_EXIT_SECONDS = 0.1
WORKER_EXIT_POLL_SECONDS = 2.0
ANNOTATION_PREFIX = "kopf.wsctl.dev"
"""kopf's own bookkeeping annotations; not "wsctl.dev", or kopf would ignore changes of
wsctl.dev/restartedAt as its own."""
# Secrets that never hold an LLM key; not indexed (service-account tokens, helm releases).
UNINDEXED_SECRET_TYPES = frozenset({"kubernetes.io/service-account-token", "helm.sh/release.v1"})
EVENT_MESSAGE_LIMIT = 1024


@dataclass
class OperatorOptions:
    """Every knob of the operator driver, with its default."""

    resync_seconds: float = defaults.RESYNC_SECONDS
    """Each workspace is reconciled at least this often, whatever else happens."""

    server: str | None = None
    """Kubernetes API URL without credentials (tests, `kubectl proxy`); default: the
    in-cluster service account, else $KUBECONFIG / ~/.kube/config."""

    namespaces: tuple[str, ...] = ()
    """Serve only these namespaces; empty: cluster-wide."""

    standalone: bool = False
    """No peering: act regardless of other replicas (single replica, tests)."""

    peering_name: str = "wsctl"
    """The (Cluster)KopfPeering object the replicas meet in."""

    priority: int = 0
    """Among peered replicas only the highest priority acts; make them distinct."""

    watch_server_timeout: float = 300.0
    """Ask the API server to end every watch after this long (then kopf re-lists)."""

    watch_client_timeout: float = 330.0
    """Give up a watch request after this long even if the server never ends it:
    the guard against an operator that silently stops seeing events."""

    watch_connect_timeout: float = 30.0

    liveness_endpoint: str | None = None
    """e.g. http://0.0.0.0:8089/healthz for the pod's liveness probe."""

    error_backoff_seconds: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
    """Delays before retrying a workspace whose reconcile failed."""

    ultimate_exit_timeout: float | None = 600.0
    """kopf SIGKILLs the process if stopping after a signal hangs this long;
    None when the operator is embedded in another program (tests)."""


@dataclass
class OperatorStats(TriggerStats):
    orphan_sweeps: int = 0


class WorkspaceOperator(EventTriggers):
    """kopf handlers, per-workspace workers and their triggers; `run()` until stopped."""

    def __init__(self, reconciler: Reconciler, engine: DriverEngine,
                 options: OperatorOptions | None = None) -> None:
        self.options = options or OperatorOptions()
        self.engine = engine
        self.reconciler = replace(reconciler, secret_resolver=self.resolve_secrets)
        self.stats = OperatorStats()
        self.registry = kopf.OperatorRegistry()
        self.settings = self._settings()
        self._wakeups: dict[WorkspaceKey, asyncio.Event] = {}
        self._due: dict[WorkspaceKey, float] = {}
        self._failures: dict[WorkspaceKey, int] = {}
        self._locks: dict[WorkspaceKey, asyncio.Lock] = {}
        self._statuses: dict[str, WorkspaceStatus] = {}  # by uid: the last status written
        self._secret_users: dict[WorkspaceKey, frozenset[str]] = {}
        self._specs: dict[WorkspaceKey, Workspace] = {}
        """The last readable spec of each workspace this replica reconciled (the LLM
        gateway's view of its provider, key reference and budget)."""
        self._secrets: Mapping[Any, Any] | None = None  # kopf index: (ns, name) -> values
        self._workspaces: Mapping[Any, Any] | None = None  # kopf index: workspace ids
        self._last_sweep = 0.0
        self._stop_events = threading.Event()
        self._register()

    # ------------------------------------------------------------ configuration

    def _settings(self) -> kopf.OperatorSettings:
        opts = self.options
        settings = kopf.OperatorSettings()
        settings.persistence.finalizer = FINALIZER
        # Keep .status exactly the core's WorkspaceStatus: kopf's bookkeeping goes
        # to annotations, never to .status (which the CRD schema would prune).
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATION_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
        settings.watching.server_timeout = opts.watch_server_timeout
        settings.watching.client_timeout = opts.watch_client_timeout
        settings.watching.connect_timeout = opts.watch_connect_timeout
        settings.posting.reporting_component = "wsctl"
        settings.posting.event_name_prefix = "wsctl-"
        settings.execution.default_backoff = 5.0
        # A deleted workspace's worker (a kopf timer) must exit before the delete
        # handler runs. kopf re-checks a worker still busy (mid-reconcile) only every
        # `cancellation_polling` seconds, 60 by default: a delete that arrived during a
        # reconcile then took a minute. Give an idle worker a moment to exit at once
        # and re-check a busy one every couple of seconds (a reconcile is seconds long).
        settings.background.instant_exit_timeout = WORKER_INSTANT_EXIT_SECONDS
        settings.background.cancellation_polling = WORKER_EXIT_POLL_SECONDS
        settings.process.ultimate_exiting_timeout = opts.ultimate_exit_timeout
        return settings

    def _register(self) -> None:
        r = self.registry
        resource = (GROUP, VERSION, PLURAL)
        kopf.on.login(registry=r)(self._login)
        kopf.index(*resource, registry=r, id="workspace_ids")(self._index_workspace)
        kopf.index("v1", "secrets", registry=r, id="secret_values",
                   when=self._indexable)(self._index_secret)
        kopf.on.create(*resource, registry=r, id="created")(self._changed)
        kopf.on.update(*resource, registry=r, id="updated")(self._changed)
        kopf.on.resume(*resource, registry=r, id="resumed")(self._changed)
        kopf.on.delete(*resource, registry=r, id="deleted")(self._deleted)
        kopf.timer(*resource, registry=r, id="worker", interval=0.001)(self._worker)
        kopf.on.event("v1", "secrets", registry=r, id="secret_changed")(self._secret_changed)

    def _login(self, **kwargs: Any) -> kopf.ConnectionInfo | None:
        if self.options.server:
            return kopf.ConnectionInfo(server=self.options.server)
        found: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return found or kopf.login_with_kubeconfig(**kwargs)

    # ------------------------------------------------------------ indexes

    # kopf passes handlers keyword arguments; each takes what it needs by name.

    @staticmethod
    def _index_workspace(**kwargs: Any) -> dict[str, bool]:
        return {WorkspaceKey(str(kwargs["namespace"]), str(kwargs["name"])).id: True}

    @staticmethod
    def _indexable(**kwargs: Any) -> bool:
        body: kopf.Body = kwargs["body"]
        return body.get("type", "Opaque") not in UNINDEXED_SECRET_TYPES

    @staticmethod
    def _index_secret(**kwargs: Any) -> dict[tuple[str, str], dict[str, str]]:
        return {(str(kwargs["namespace"]), str(kwargs["name"])): decode_secret(kwargs["body"])}

    async def resolve_secrets(self, ws: Workspace) -> dict[tuple[str, str], str]:
        """Secret references of `ws` resolved from Secrets in its namespace."""
        refs = secret_refs([ws])
        self._secret_users[ws.key] = frozenset(name for name, _ in refs)
        found: dict[tuple[str, str], str] = {}
        if self._secrets is None:
            return found
        for name, key in refs:
            values = next(iter(self._secrets.get((ws.metadata.namespace, name)) or ()), None)
            if values is not None and key in values:
                found[(name, key)] = values[key]
        return found

    # ------------------------------------------------------------ triggers

    def _wakeup(self, key: WorkspaceKey) -> asyncio.Event:
        event = self._wakeups.get(key)
        if event is None:
            event = self._wakeups[key] = asyncio.Event()
            event.set()  # a new worker reconciles at once
        return event

    def trigger(self, key: WorkspaceKey, source: str) -> None:
        """Wake the workspace's worker; a worker not started yet reconciles at once anyway."""
        self.stats.count(source)
        event = self._wakeups.get(key)
        if event is not None:
            event.set()

    async def workspace(self, key: WorkspaceKey) -> Workspace | None:
        """The workspace as this replica last reconciled it (None: not seen yet)."""
        return self._specs.get(key)

    def knows(self, workspace_id: str) -> bool:
        """Whether a Workspace object with this id exists (as far as the watch has seen)."""
        if self._workspaces is not None:
            return workspace_id in self._workspaces
        return any(key.id == workspace_id for key in self._wakeups)

    def known_workspaces(self) -> int:
        """How many Workspace objects exist, as far as the watch has seen (for /metrics)."""
        if self._workspaces is not None:
            return len(self._workspaces)
        return len(self._statuses)

    def known_statuses(self) -> list[WorkspaceStatus]:
        """The last status this replica wrote or saw per workspace (for /metrics)."""
        return list(self._statuses.values())

    async def _changed(self, **kwargs: Any) -> None:
        self.trigger(key_of(kwargs["body"]), str(kwargs["reason"]))

    async def _secret_changed(self, **kwargs: Any) -> None:
        namespace, name = kwargs["namespace"], kwargs["name"]
        for key, names in list(self._secret_users.items()):
            if key.namespace == namespace and name in names:
                log.info("%s: secret %s changed", key, name)
                self.trigger(key, "secret")

    # ------------------------------------------------------------ the worker

    async def _worker(self, **kwargs: Any) -> None:
        """One turn of the workspace's worker: wait for a reason, reconcile, return."""
        body: kopf.Body = kwargs["body"]
        patch: kopf.Patch = kwargs["patch"]
        stopped: kopf.DaemonStopped = kwargs["stopped"]
        self._secrets, self._workspaces = kwargs["secret_values"], kwargs["workspace_ids"]
        key = key_of(body)
        wake = self._wakeup(key)
        timeout = min(self._due.pop(key, self.options.resync_seconds),
                      self.options.resync_seconds)
        if not wake.is_set():
            woken = asyncio.ensure_future(wake.wait())
            halted = asyncio.ensure_future(stopped.wait())
            try:
                await asyncio.wait({woken, halted}, timeout=max(timeout, 0.0),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                halted.cancel()
        if stopped or (body.get("metadata") or {}).get("deletionTimestamp"):
            return  # the delete handler takes over
        wake.clear()
        async with self._lock(key):
            await self._sweep_orphans()
            with origin.working_for(origin.RECONCILE):
                status = await self._reconcile(body)
        if status is not None:
            patch["status"] = status_patch(status)

    def _lock(self, key: WorkspaceKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _previous(self, body: kopf.Body) -> WorkspaceStatus | None:
        uid = str((body.get("metadata") or {}).get("uid"))
        return self._statuses.get(uid) or status_from_body(body)

    async def _reconcile(self, body: kopf.Body) -> WorkspaceStatus | None:
        """Reconcile once; the status to write, or None when it did not change."""
        key = key_of(body)
        meta = body.get("metadata") or {}
        previous = self._previous(body)
        self.stats.reconciles += 1
        try:
            ws = workspace_from_body(body)
            self._specs[key] = ws
        except InvalidWorkspace as exc:
            status = invalid_status(previous, str(exc), meta.get("generation"),
                                    self.reconciler.clock())
            old = previous.condition("Degraded") if previous else None
            if old is None or old.reason != "InvalidSpec" or old.message != str(exc):
                self._event(body, "Warning", "InvalidSpec", str(exc))
            log.warning("%s: invalid spec: %s", key, exc)
            self._due[key] = self.options.resync_seconds
            return self._remember(body, previous, status)
        try:
            result = await self.reconciler.reconcile(ws, previous)
        except Exception as exc:  # store or engine unavailable: retry with back-off
            delay = self._backoff(key)
            log.warning("%s: reconcile failed (%s: %s); retry in %.0fs", key,
                        type(exc).__name__, exc, delay)
            return None
        self._post_events(body, result)
        if result.error is not None:
            self._backoff(key)
        else:
            self._failures.pop(key, None)
            if result.requeue_after is not None:
                self._due[key] = result.requeue_after
        if result.status is None:
            return None
        return self._remember(body, previous, result.status)

    def _remember(self, body: kopf.Body, previous: WorkspaceStatus | None,
                  status: WorkspaceStatus) -> WorkspaceStatus | None:
        """Cache the status; return it unless the object already shows it (a write that
        failed is retried: the object would still show the older status)."""
        self._statuses[str((body.get("metadata") or {}).get("uid"))] = status
        if status == previous and status == status_from_body(body):
            return None
        return status

    def _backoff(self, key: WorkspaceKey) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delays = self.options.error_backoff_seconds
        delay = delays[min(failures, len(delays) - 1)]
        self._due[key] = delay
        return delay

    # ------------------------------------------------------------ events

    def _event(self, body: kopf.Body, type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason,
                   message=redact.redact(message)[:EVENT_MESSAGE_LIMIT])

    def _post_events(self, body: kopf.Body, result: ReconcileResult) -> None:
        for plan in result.plans:
            for event in plan.events:
                self._event(body, event.type, event.reason, event.message)
        if result.error is not None:
            self._event(body, "Warning", "RecreateFailed", str(result.error))

    # ------------------------------------------------------------ deletion

    async def _deleted(self, **kwargs: Any) -> None:
        """Remove the containers and revoke the tokens; kopf then drops the finalizer."""
        body: kopf.Body = kwargs["body"]
        key = key_of(body)
        meta = body.get("metadata") or {}
        async with self._lock(key):
            try:
                ws = workspace_from_body(body)
            except InvalidWorkspace:  # an unreadable spec still gets its containers removed
                ws = Workspace(metadata=ObjectMeta(name=key.name, namespace=key.namespace))
            if ws.metadata.deletion_timestamp is None:
                ws = ws.model_copy(update={"metadata": ws.metadata.model_copy(
                    update={"deletion_timestamp": self.reconciler.clock()})})
            with origin.working_for(origin.RECONCILE):
                result = await self.reconciler.reconcile(ws, self._previous(body))
            self._post_events(body, result)
            if result.error is not None:
                raise kopf.TemporaryError(str(result.error), delay=self._backoff(key))
        self._statuses.pop(str(meta.get("uid")), None)
        self._wakeups.pop(key, None)
        self._due.pop(key, None)
        self._failures.pop(key, None)
        self._secret_users.pop(key, None)
        self._specs.pop(key, None)
        self._locks.pop(key, None)
        log.info("%s: deleted; containers removed and tokens revoked", key)

    def _on_engine_reconnect(self) -> None:
        """The engine answers again; events of the gap were lost: wake every worker."""
        log.info("Docker engine answers again; reconciling every workspace")
        for key in list(self._wakeups):
            self.trigger(key, "engine")

    async def _sweep_orphans(self) -> None:
        """At most once per resync: remove containers of workspaces that no longer exist
        (e.g. a finalizer removed by hand while the operator was down)."""
        now = time.monotonic()
        if self._workspaces is None or now - self._last_sweep < self.options.resync_seconds:
            return
        self._last_sweep = now
        self.stats.orphan_sweeps += 1
        known = {str(k) for k in self._workspaces}
        containers = await self.engine.list_containers()
        await remove_orphans(self.engine, containers, known, self.reconciler.settings)

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Run kopf (watches, handlers, workers, peering) and the Docker event feed."""
        opts = self.options
        loop = asyncio.get_running_loop()
        self._stop_events.clear()
        self.engine.watch_events(loop, self._on_docker_event, self._stop_events,
                                 on_reconnect=self._on_engine_reconnect)
        try:
            await kopf.operator(
                registry=self.registry, settings=self.settings,
                clusterwide=not opts.namespaces, namespaces=list(opts.namespaces),
                standalone=opts.standalone,
                peering_name=None if opts.standalone else opts.peering_name,
                priority=opts.priority, liveness_endpoint=opts.liveness_endpoint,
                stop_flag=stop, ready_flag=ready)
        finally:
            self._stop_events.set()
            with contextlib.suppress(Exception):
                await asyncio.sleep(0)

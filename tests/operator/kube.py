"""A Kubernetes API emulator for the operator tests: kmock 0.8 plus what kopf needs.

kmock's `KubernetesEmulator` stores objects, lists, watches, merge- and
JSON-patches and honours finalizers. `KubeEmulator` adds what a real API
server does and kopf relies on (see shared/KUBERNETES-TESTING.md):

- `metadata.resourceVersion` (one counter for the server), `uid`,
  `creationTimestamp`, `generation` (bumped only when something other than
  metadata and status changes), names from `generateName`, the namespace
  from the URL;
- 422 (not 500) when a JSON-patch `test` op fails, 409 when a merge patch
  names a stale `resourceVersion`;
- status-subresource separation for resources that declare it: a patch of
  the object ignores `.status`, a patch of `/status` changes only `.status`,
  and a create drops `.status`;
- no MODIFIED event and no new resourceVersion for a patch that changes nothing;
- optional server-side validation of one resource with a jsonschema validator
  (422 naming the field path), like a CRD's openAPIV3Schema.

It overrides kmock's private `_handle`, hence the pinned kmock version.
`KubeServer` runs it on 127.0.0.1 in a thread of its own; `KubeClient` is a
small synchronous client for the tests (the kubectl of these tests).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import secrets
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import enums, rendering

MUTATIONS = (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)
Validator = Callable[[dict[str, Any]], list[str]]
"""object -> problems ("spec.llm.provider: 'nope' is not one of [...]"), empty if valid."""


class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server behaviour listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.revision = 0
        self.validators: dict[str, Validator] = {}  # plural -> validator

    # ------------------------------------------------------------ helpers

    def _next_version(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _has_status(self, resource: kmock.resource) -> bool:
        for known, info in self.resources.items():
            if known == resource and isinstance(info, kmock.ResourceInfo):
                return "status" in info.subresources
        return False

    def _validate(self, resource: kmock.resource, obj: dict[str, Any]) -> None:
        validator = self.validators.get(str(resource.plural))
        problems = validator(obj) if validator is not None else []
        if problems:
            raise kmock.KubernetesError(
                status=422, reason="Invalid",
                message=f"{obj.get('kind', 'object')} "
                        f"{obj.get('metadata', {}).get('name')!r} is invalid: "
                        + "; ".join(problems),
                details={"causes": [{"field": p.split(":", 1)[0], "message": p}
                                    for p in problems]})

    async def _publish(self, resource: kmock.resource, type_: str, raw: dict[str, Any]) -> None:
        await self._buses[resource].put({"type": type_, "object": copy.deepcopy(raw)})

    @staticmethod
    def _content(obj: dict[str, Any]) -> dict[str, Any]:
        """What `generation` tracks: everything but metadata and status."""
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    # ------------------------------------------------------------ mutations

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in MUTATIONS:
            return await super()._handle(request)
        async with self._lock:
            if request.action == enums.action.CREATE:
                body = await self._create(request)
            elif request.action == enums.action.UPDATE:
                body = await self._update(request)
            else:
                body = await self._delete(request)
        return aiohttp.web.json_response(body)

    async def _create(self, request: rendering.Request) -> dict[str, Any]:
        assert request.resource is not None
        obj: dict[str, Any] = copy.deepcopy(request.data or {})
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise kmock.KubernetesError(status=422, reason="Invalid",
                                        message="metadata.name: Required value")
        if request.namespace is not None:
            meta["namespace"] = request.namespace
        if self._has_status(request.resource):
            obj.pop("status", None)
        self._validate(request.resource, obj)
        key = (request.resource, meta.get("namespace"), meta["name"])
        if key in self._objects and not self._objects[key].deleted:
            raise kmock.KubernetesError(
                status=409, reason="AlreadyExists",
                message=f"{request.resource.plural} {meta['name']!r} already exists")
        meta.update(uid=str(uuid.uuid4()), generation=1, resourceVersion=self._next_version(),
                    creationTimestamp=_now())
        meta.pop("deletionTimestamp", None)
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        await self._publish(request.resource, "ADDED", obj)
        return obj

    def _existing(self, request: rendering.Request) -> tuple[Any, dict[str, Any]]:
        assert request.resource is not None and request.name is not None
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesError(
                status=404, reason="NotFound",
                message=f"{request.resource.plural} {request.name!r} not found")
        return key, copy.deepcopy(self._objects[key].raw)

    async def _update(self, request: rendering.Request) -> dict[str, Any]:
        assert request.resource is not None
        key, old = self._existing(request)
        patch = request.data
        try:
            if isinstance(patch, list):
                new: dict[str, Any] = jsonpatch.apply_patch(old, patch, in_place=False)
            elif isinstance(patch, dict):
                wanted = (patch.get("metadata") or {}).get("resourceVersion")
                if wanted is not None and wanted != old["metadata"].get("resourceVersion"):
                    raise kmock.KubernetesError(
                        status=409, reason="Conflict",
                        message="the object has been modified; please apply your changes "
                                "to the latest version and try again")
                new = _merge(old, patch)
            else:
                raise kmock.KubernetesError(status=400, reason="BadRequest",
                                            message="the patch is neither a list nor an object")
        except jsonpatch.JsonPatchTestFailed as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
        if self._has_status(request.resource):
            if request.subresource == "status":
                new = {**old, "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            elif "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        # Identity and bookkeeping are the server's, whatever the patch said.
        for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if field in old["metadata"]:
                new["metadata"][field] = old["metadata"][field]
            else:
                new["metadata"].pop(field, None)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["metadata"]["generation"] = old["metadata"].get("generation", 1)
        if new == old:
            return old
        if request.subresource != "status":
            self._validate(request.resource, new)
        if self._content(new) != self._content(old):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._next_version()
        obj = self._objects[key]
        obj.history.append(new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            obj.delete()
            await self._publish(request.resource, "DELETED", new)
        else:
            await self._publish(request.resource, "MODIFIED", new)
        return new

    async def _delete(self, request: rendering.Request) -> dict[str, Any]:
        assert request.resource is not None
        key, old = self._existing(request)
        meta = old["metadata"]
        if meta.get("deletionTimestamp"):
            return old
        if meta.get("finalizers"):
            meta["deletionTimestamp"] = _now()
            meta["resourceVersion"] = self._next_version()
            self._objects[key].history.append(old)
            await self._publish(request.resource, "MODIFIED", old)
            return old
        self._objects[key].delete()
        await self._publish(request.resource, "DELETED", old)
        return old


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(value: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(value) if isinstance(value, dict) else {}
    for key, item in patch.items():
        if item is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), item)
    return result


# ------------------------------------------------------------------ server thread


class KubeServer:
    """The emulator served on 127.0.0.1 from a background event loop."""

    def __init__(self, setup: Callable[[KubeEmulator], None]) -> None:
        self._setup = setup
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.emulator: KubeEmulator | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name="kube-api")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with KubeEmulator() as emulator, kmock.Server(emulator) as server:
            self._setup(emulator)
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> KubeServer:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the Kubernetes API emulator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status} {body.get('reason')}: {body.get('message')}")


class KubeClient:
    """A minimal synchronous Kubernetes client (what kubectl does, for the tests)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result: dict[str, Any] = json.loads(response.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, json.loads(exc.read() or b"{}")) from None

    @staticmethod
    def _path(api: str, plural: str, namespace: str | None, name: str | None = None) -> str:
        base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    def create(self, api: str, plural: str, namespace: str | None,
               obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", self._path(api, plural, namespace), obj)

    def get(self, api: str, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.request("GET", self._path(api, plural, namespace, name))

    def find(self, api: str, plural: str, namespace: str | None,
             name: str) -> dict[str, Any] | None:
        try:
            return self.get(api, plural, namespace, name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request(
            "GET", self._path(api, plural, namespace)).get("items", [])
        return items

    def patch(self, api: str, plural: str, namespace: str | None, name: str,
              patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", self._path(api, plural, namespace, name), patch,
                            "application/merge-patch+json")

    def delete(self, api: str, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.request("DELETE", self._path(api, plural, namespace, name))

    def events_for(self, namespace: str, name: str) -> Iterator[dict[str, Any]]:
        for event in self.list("v1", "events", namespace):
            if (event.get("involvedObject") or {}).get("name") == name:
                yield event

"""Storage volumes for describe and `wsctl volumes`, with a fake docker-py API.

Docker runs one disk-usage walk at a time and answers a second with a 500 ("a disk
usage operation is already running"): twenty describes at once (the chaos harness,
a dashboard) made describe answer 500. Callers now share one walk, a recent walk is
reused until a volume is created or removed, and a walk Docker refuses lists the
volumes without sizes.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import requests
from docker.errors import APIError

from controller.adapters.docker_engine import DockerEngine


def volume(name: str, workspace: str, *, instance: str = "default", kind: str = "workspace",
           size: int = 4096) -> dict[str, Any]:
    return {"Name": name, "CreatedAt": "2026-12-03T10:00:00Z",
            "Labels": {"wsctl.dev/managed-by": "wsctl", "wsctl.dev/instance": instance,
                       "wsctl.dev/volume": kind, "wsctl.dev/workspace": workspace},
            "UsageData": {"Size": size, "RefCount": 1}}


class FakeApi:
    def __init__(self) -> None:
        self.volumes_on_disk = [volume("v-alice", "default.alice"),
                                volume("v-bob", "default.bob", size=10),
                                volume("v-other", "default.carol", instance="other"),
                                volume("v-configs", "default.alice", kind="configs")]
        self.walks = 0
        self.busy = False  # another client's walk: Docker refuses ours
        self.release = threading.Event()
        self.release.set()
        self.listed_filters: list[Any] = []

    def df(self) -> dict[str, Any]:
        self.walks += 1
        if self.busy:
            response = requests.Response()
            response.status_code = 500
            raise APIError("500 Server Error", response,
                           "a disk usage operation is already running")
        assert self.release.wait(10)
        return {"Volumes": [dict(v) for v in self.volumes_on_disk]}

    def volumes(self, filters: Any = None) -> dict[str, Any]:
        self.listed_filters.append(filters)
        return {"Volumes": [{k: v for k, v in vol.items() if k != "UsageData"}
                            for vol in self.volumes_on_disk]}

    def remove_volume(self, name: str, force: bool = False) -> None:
        self.volumes_on_disk = [v for v in self.volumes_on_disk if v["Name"] != name]


def engine() -> tuple[DockerEngine, FakeApi]:
    """The adapter over the fake API (it reads only `client.api`)."""
    api = FakeApi()
    return DockerEngine(SimpleNamespace(api=api)), api  # type: ignore[arg-type]


async def test_callers_at_once_share_one_walk() -> None:
    docker, api = engine()
    api.release.clear()  # hold the walk until every caller is waiting on it
    callers = [asyncio.create_task(docker.storage_volumes()) for _ in range(20)]
    await asyncio.sleep(0.05)
    api.release.set()
    results = await asyncio.gather(*callers)
    assert api.walks == 1
    assert all(r == results[0] for r in results)
    assert [(v["name"], v["sizeBytes"]) for v in results[0]] == [("v-alice", 4096),
                                                                 ("v-bob", 10)]


async def test_a_recent_walk_is_reused_until_a_volume_goes() -> None:
    docker, api = engine()
    first = await docker.storage_volumes()
    first[0]["sizeBytes"] = -1  # a caller's copy: changing it changes nothing kept
    again = await docker.storage_volumes()
    assert api.walks == 1 and again[0]["sizeBytes"] == 4096
    await docker.remove_volume("v-bob")
    after = await docker.storage_volumes()
    assert api.walks == 2
    assert [v["name"] for v in after] == ["v-alice"]


async def test_a_walk_docker_refuses_lists_the_volumes_without_sizes() -> None:
    docker, api = engine()
    api.busy = True
    found = await docker.storage_volumes()
    assert [(v["name"], v["workspace"], v["sizeBytes"]) for v in found] == [
        ("v-alice", "default.alice", None), ("v-bob", "default.bob", None)]
    assert api.listed_filters and "wsctl.dev/instance=default" in \
        api.listed_filters[0]["label"]
    api.busy = False
    sized = await docker.storage_volumes()  # a refused walk is not kept
    assert [v["sizeBytes"] for v in sized] == [4096, 10] and api.walks == 2

"""Two Docker adapter bugs the chaos harness found, pinned with a fake docker-py API.

- A network disconnect/reconnect publishes the agent port on a new host port with
  no container event: the inspect cache must notice (the A2A proxy dialled a dead
  port while the workspace said Online).
- Diagnostics of a container being removed (`docker rm -f` racing the recreate):
  logs answer 409; capture what inspect gives instead of failing the recreate.
"""

from __future__ import annotations

from typing import Any

import requests
from docker.errors import APIError

from controller.adapters.docker_engine import DockerEngine

LABELS = {"wsctl.dev/managed-by": "wsctl", "wsctl.dev/instance": "default",
          "wsctl.dev/workspace": "default.alice", "wsctl.dev/token-generation": "1"}


class FakeApi:
    def __init__(self) -> None:
        self.port = "32001"
        self.inspects = 0
        self.logs_status = 200

    def containers(self, **_: Any) -> list[dict[str, Any]]:
        return [{"Id": "c1", "State": "running", "Status": "Up 3 minutes",
                 "Ports": [{"IP": "127.0.0.1", "PrivatePort": 8000,
                            "PublicPort": int(self.port), "Type": "tcp"}],
                 "NetworkSettings": {"Networks": {"wsctl": {"IPAddress": "172.18.0.5"}}}}]

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.inspects += 1
        return {"Id": container_id, "Name": "/wsctl-default.alice-g1",
                "Config": {"Labels": LABELS, "Env": ["A=1", "B="]},
                "State": {"Status": "running", "ExitCode": 0},
                "NetworkSettings": {"Ports": {"8000/tcp": [{"HostIp": "127.0.0.1",
                                                            "HostPort": self.port}]},
                                    "Networks": {}}}

    def logs(self, container_id: str, **_: Any) -> bytes:
        if self.logs_status == 409:
            response = requests.Response()
            response.status_code = 409
            raise APIError("409 Conflict", response,
                           "can not get logs from container which is dead or marked for removal")
        return b"line\n"


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeApi()


def engine() -> tuple[DockerEngine, FakeApi]:
    client = FakeClient()
    return DockerEngine(client), client.api  # type: ignore[arg-type]


async def test_a_moved_host_port_refreshes_the_cached_inspect() -> None:
    eng, api = engine()
    assert [c.host_port for c in await eng.list_containers()] == [32001]
    assert [c.host_port for c in await eng.list_containers()] == [32001]
    assert api.inspects == 1  # steady state: the list call only
    api.port = "32002"  # reconnected: same state, new published port
    assert [c.host_port for c in await eng.list_containers()] == [32002]
    assert api.inspects == 2


async def test_diagnostics_of_a_container_being_removed_keep_state_and_env_names() -> None:
    eng, api = engine()
    api.logs_status = 409
    found = await eng.diagnostics("c1")
    assert found is not None
    assert found.env_names == {"A": "set", "B": "unset"}
    assert found.log_tail.startswith("(no logs: can not get logs")

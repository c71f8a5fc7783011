"""EgressAccess: which workspace a source address is, and how refusals are recorded
(counted always, written once per workspace/host/port/reason a minute, bounded)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from controller.api.egress_proxy import Decision, EgressMetrics
from controller.app.egress import EgressAccess, resolver
from controller.core.egress import Verdict
from controller.core.model import Workspace, WorkspaceKey
from controller.core.observed import ObservedContainer


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.activity: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def add_event(self, workspace_id: str, type_: Any, reason: str,
                        message: str = "") -> None:
        await self.gate.wait()
        self.events.append((workspace_id, reason, message))

    async def append_activity(self, workspace_id: str, source: str, **kw: Any) -> int:
        self.activity.append({"workspace": workspace_id, "source": source, **kw})
        return len(self.activity)


def ws(name: str, egress: dict[str, Any]) -> Workspace:
    return Workspace.model_validate({"metadata": {"name": name}, "spec": {"egress": egress}})


def access(sink: Sink, listed: list[ObservedContainer], **kw: Any) -> EgressAccess:
    known = {"default.a": ws("a", {"mode": "allowlist", "allow": ["x.example"]})}
    calls = {"list": 0, "find": 0}

    async def containers() -> list[ObservedContainer]:
        calls["list"] += 1
        return listed

    async def find(key: WorkspaceKey) -> Workspace | None:
        calls["find"] += 1
        return known.get(key.id)

    made = EgressAccess(find, containers, sink,  # type: ignore[arg-type]
                        EgressMetrics(CollectorRegistry()), **kw)
    made.calls = calls  # type: ignore[attr-defined]
    return made


def container(ip: str, workspace_id: str) -> ObservedContainer:
    return ObservedContainer(id="c" + ip, name="n", workspace_id=workspace_id,
                             state="running", config_hash=None, token_generation=1,
                             restarted_at="", ip_address=ip)


async def test_source_address_to_workspace_and_its_spec() -> None:
    listed = [container("10.0.0.2", "default.a"), container("10.0.0.3", "default.gone")]
    egress = access(Sink(), listed)
    found = await egress.lookup("10.0.0.2")
    assert found is not None and found[0] == "default.a" and found[1].allow == ["x.example"]
    assert await egress.lookup("10.0.0.3") is None  # a container of no known workspace
    assert await egress.lookup("10.0.0.9") is None  # no container there
    calls = egress.calls["list"]  # type: ignore[attr-defined]
    assert await egress.lookup("10.0.0.2") is not None
    assert egress.calls["list"] == calls  # type: ignore[attr-defined]  # cached


def refused(host: str, reason: str = "not listed") -> Decision:
    return Decision("default.a", host, 443, Verdict(False, reason))


async def test_refusals_counted_always_written_once_a_minute() -> None:
    sink = Sink()
    egress = access(sink, [])
    for _ in range(5):
        egress.observe(refused("evil.example"))
    egress.observe(refused("evil.example", "another reason"))
    egress.observe(Decision("default.a", "x.example", 443, Verdict(True, "allowed", "1.2.3.4")))
    await egress.close()
    counter = egress.metrics.connections
    assert counter.labels("default.a", "refused")._value.get() == 6
    assert counter.labels("default.a", "allowed")._value.get() == 1
    assert [e[1] for e in sink.events] == ["EgressRefused", "EgressRefused"]
    assert sink.events[0][2] == "connection to evil.example:443 refused: not listed"
    assert [a["source"] for a in sink.activity] == ["system:egress", "system:egress"]


async def test_a_secret_in_a_host_name_is_redacted() -> None:
    from controller.core import redact
    secret = "tok-" + "s3cr3t" * 4
    redact.remember(secret)
    sink = Sink()
    egress = access(sink, [])
    egress.observe(refused(f"{secret}.attacker.example"))
    await egress.close()
    assert secret not in repr(sink.events) and secret not in repr(sink.activity)


async def test_writes_are_bounded() -> None:
    from controller.app import egress as module
    sink = Sink()
    sink.gate.clear()  # the store hangs
    egress = access(sink, [])
    for i in range(module.MAX_PENDING_WRITES + 10):
        egress.observe(refused(f"h{i}.example"))
    assert egress.dropped_writes == 10
    sink.gate.set()
    await egress.close()
    assert len(sink.events) == module.MAX_PENDING_WRITES


async def test_forgotten_workspaces_lose_their_series() -> None:
    egress = access(Sink(), [])
    egress.observe(Decision("default.a", "x", 443, Verdict(True, "allowed", "1.2.3.4")))
    egress.observe(Decision("default.b", "x", 443, Verdict(True, "allowed", "1.2.3.4")))
    await egress.close()
    assert egress.metrics.forget_unknown({"default.a"}.__contains__) == 1


async def test_pinned_names_resolve_first() -> None:
    resolve = resolver({"WSCTL_EGRESS_HOSTS": "outside.test=172.20.0.2, other.test=10.0.0.1"})
    assert await resolve("Outside.Test.") == ["172.20.0.2"]
    assert await resolve("localhost") != []  # the system's, for the rest


async def test_the_quiet_map_is_bounded(monkeypatch: Any) -> None:
    from controller.app import egress as module
    monkeypatch.setattr(module, "MAX_QUIET_KEYS", 3)
    egress = access(Sink(), [])
    for i in range(10):
        egress.observe(refused(f"h{i}.example"))
    await egress.close()
    assert len(egress._quiet) == 3


async def test_the_spec_is_cached_briefly_and_forgotten_on_change() -> None:
    listed = [container("10.0.0.2", "default.a")]
    egress = access(Sink(), listed, workspace_ttl=60.0)
    calls = egress.calls  # type: ignore[attr-defined]
    for _ in range(3):
        assert await egress.lookup("10.0.0.2") is not None
    assert calls["find"] == 1
    egress.forget("default.other")
    assert await egress.lookup("10.0.0.2") is not None and calls["find"] == 1
    egress.forget("default.a")  # the store's change notification
    assert await egress.lookup("10.0.0.2") is not None and calls["find"] == 2
    egress.forget()  # a reconnect: anything may have changed
    assert await egress.lookup("10.0.0.2") is not None and calls["find"] == 3


async def test_no_cache_reads_every_time() -> None:
    egress = access(Sink(), [container("10.0.0.2", "default.a")], workspace_ttl=0.0)
    for _ in range(3):
        await egress.lookup("10.0.0.2")
    assert egress.calls["find"] == 3  # type: ignore[attr-defined]

"""/metrics of a real `wsctl run` under load: scraped continuously while workspaces
are restarted, read with prometheus_client's parser; no counter or histogram
series ever goes backwards, and the histogram counts every reconcile the
controller logged."""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import Any

import pytest

from controller.testing.harness import ControllerProcess, FakeLLMThread, phase, wait_for
from tests.exposition import Exposition, never_decreased, parse

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

NAMES = ("metrics-a", "metrics-b")
ROUNDS = 3
COUNT = "wsctl_reconcile_duration_seconds_count"
RECONCILED = re.compile(r" wsctl\.reconcile: \S+: reconciled in ", re.M)


def workspace(name: str, llm_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
        "spec": {"model": "MiniMax-M3", "startupTimeoutSeconds": 60,
                 "llm": {"provider": "minimax",
                         "baseURL": f"http://host.docker.internal:{llm_port}/v1/",
                         "apiKey": {"secretRef": {"name": "e2e-llm", "key": "api-key"}}}},
    }


def scrape(controller: ControllerProcess) -> Exposition:
    return parse(controller.client().request("GET", "/metrics", raw=True))


def logged_reconciles(controller: ControllerProcess) -> int:
    """Reconciles the running process logged (one debug line each; it runs --verbose)."""
    assert controller.current_log is not None
    return len(RECONCILED.findall(controller.current_log.read_text(errors="replace")))


def online_in(controller: ControllerProcess, name: str, not_id: str | None) -> str:
    def check() -> str | None:
        obj = controller.get(name)
        cid = (obj.get("status") or {}).get("containerID")
        return cid if phase(obj) == "Online" and cid not in (None, not_id) else None
    return wait_for(check, 90, f"{name} Online in a new container", interval=0.2)


def test_metrics_never_go_backwards_under_load_and_count_every_reconcile(
        controller: ControllerProcess, fake_llm: FakeLLMThread) -> None:
    scrapes: list[Exposition] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def scraper() -> None:
        while not stop.is_set():
            try:
                scrapes.append(scrape(controller))
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)
                return
            time.sleep(0.02)

    try:
        scrapes.append(scrape(controller))
        controller.apply(*(workspace(name, fake_llm.port) for name in NAMES))
        ids = {name: online_in(controller, name, None) for name in NAMES}
        thread = threading.Thread(target=scraper, name="scraper", daemon=True)
        thread.start()
        try:
            for _ in range(ROUNDS):
                for name in NAMES:
                    code, _, err = controller.cli("restart", name)
                    assert code == 0, err
                ids = {name: online_in(controller, name, ids[name]) for name in NAMES}
        finally:
            stop.set()
            thread.join(30)
        assert failures == []
        scrapes.append(scrape(controller))

        assert len(scrapes) > 20, "the scraper hardly ran"
        # Series of other tests' deleted workspaces (the LLM gateway's, per workspace)
        # may go: series must be bounded by the fleet. None of this test's may.
        for i, (before, after) in enumerate(itertools.pairwise(scrapes)):
            assert never_decreased(before, after, gone=lambda ws: not ws.startswith(
                "default.metrics-")) == [], f"scrape {i} -> {i + 1}"
        first, last = scrapes[0], scrapes[-1]
        restarts = ROUNDS * len(NAMES)
        assert last.value(COUNT) - first.value(COUNT) >= restarts + len(NAMES)
        assert (last.get("wsctl_recreates_total", reason="RestartRequested")
                - first.get("wsctl_recreates_total", reason="RestartRequested")) == restarts
        assert last.value("wsctl_reconcile_duration_seconds_sum") > first.value(
            "wsctl_reconcile_duration_seconds_sum")
        assert last.value("wsctl_workspaces") >= len(NAMES)
        # Statements by origin: the restarts were API requests, their recreates reconciles,
        # the new agents registered; every origin is a series from the first scrape.
        for where in ("api", "reconcile", "registry", "metrics"):
            assert (last.value("wsctl_db_queries_total", origin=where)
                    > first.value("wsctl_db_queries_total", origin=where)), where

        def quiet_moment() -> tuple[int, float] | None:
            """The log count before and after one scrape agree: nothing ran in between."""
            before = logged_reconciles(controller)
            count = scrape(controller).value(COUNT)
            return (before, count) if logged_reconciles(controller) == before else None

        logged, counted = wait_for(quiet_moment, 30, "a scrape between two reconciles")
        assert counted == logged
    finally:
        stop.set()
        for name in NAMES:
            controller.cli("delete", name)

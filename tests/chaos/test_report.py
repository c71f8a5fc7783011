"""The report from a made-up run: JSON shape, self-contained HTML with two SVG plots,
and a terminal summary that names every violation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from controller.chaos import report
from controller.chaos.model import FaultPlan, FaultRecord, PhaseChange, RunClock, Violation
from controller.chaos.probes import Observer
from controller.chaos.runner import RunConfig, RunResult
from controller.chaos.workload import Acked, Workload
from tests.chaos.fakes import FakeEngine, inline


def made_up_run() -> RunResult:
    clock = RunClock()
    observer = Observer(cast(Any, None), FakeEngine(), inline, clock, ["w01", "w02"], "chaos")
    observer.phases = [
        PhaseChange(0.1, "w01", "Pending", ""), PhaseChange(1.0, "w01", "Online", ""),
        PhaseChange(5.0, "w01", "Degraded", "HeartbeatStale"),
        PhaseChange(9.0, "w01", "Online", ""), PhaseChange(1.2, "w02", "Online", "")]
    records = []
    for i, (kind, target, lifted, converged) in enumerate(
            [("pause", "w01", 8.0, 9.0), ("kill", "w02", 10.0, 11.5),
             ("kill", "w02", 14.0, None), ("postgres-restart", None, 16.0, 16.2)], start=1):
        r = FaultRecord(FaultPlan(i, kind, target, 0.5), (target,) if target else ("w01", "w02"))
        r.injected_at, r.lifted_at, r.converged_at = lifted - 1, lifted, converged
        records.append(r)
    workload = Workload(cast(Any, None), clock, ["w01", "w02"], "run")
    workload.stats.sent, workload.stats.acked = 10, 9
    workload.stats.failures["HTTP 502"] = 1
    workload.acked["a"] = Acked("a", "w01", 1.0, 1.1, confirmed_at=2.0)
    violations = [Violation("converge", "w02", "#3 kill on w02",
                            "not converged <script>alert(1)</script>", 40.0)]
    return RunResult(RunConfig(workspaces=2, faults=4, seed=9), [r.plan for r in records],
                     records, violations, observer, workload, 42.0,
                     {"one-container": "pass", "converge": "fail"}, ["a note"], "2026-11-24")


def test_json_html_and_summary(tmp_path: Path) -> None:
    data = report.to_json(made_up_run(), {"mode": "self-contained", "wsctl": "0.1.0",
                                          "commit": "0123456789abcdef", "dirty": True})
    json_path, html_path = report.write(tmp_path / "out", data)
    loaded = json.loads(json_path.read_text())
    assert loaded["verdict"] == "fail"
    assert loaded["convergence"]["kill"] == {
        "count": 2, "injected": 2, "converged": 1, "not_converged": 1, "skipped": 0, "missed": 0,
        "p50": 1.5, "p90": 1.5, "p99": 1.5, "max": 1.5, "seconds": [1.5]}
    assert loaded["timeline"]["w01"][2] == [5.0, "Degraded", "HeartbeatStale"]
    assert loaded["workload"]["with_activity_row"] == 1

    page = html_path.read_text()
    assert page.count("<svg") == 2
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "time to converge per fault type" in page.lower()
    assert "commit 0123456789ab with uncommitted changes" in page  # what was judged

    text = report.summary(data, html_path)
    assert text.splitlines()[0].startswith("wsctl chaos: FAIL  (2 workspaces, 4 faults, seed 9")
    assert "commit 0123456789ab with uncommitted changes)" in text.splitlines()[0]
    assert "[converge] w02 / #3 kill on w02: not converged" in text
    assert "note: a note" in text and str(html_path) in text
    assert len(text.splitlines()) < 40  # one screen


def test_the_files_section_says_what_was_written_acknowledged_and_checked(
        tmp_path: Path) -> None:
    from controller.chaos.files import FileWriter

    run = made_up_run()
    assert report.to_json(run, {})["files"] == {"enabled": False}

    async def nothing(*_: Any) -> Any:
        return None
    files = FileWriter(nothing, nothing, lambda _: None, lambda: 0.0, ["w01", "w02"], "r")
    files.started = True
    files.stats.written, files.stats.acked, files.stats.checked = 12, 10, 10
    files.stats.missing, files.stats.changed = 2, 1
    files.stats.failures["exec failed"] = 2
    run.files = files
    data = report.to_json(run, {})
    assert data["files"] == {
        "enabled": True, "directory": "/workspace/chaos", "interval": 3.0, "written": 12,
        "acknowledged": 10, "checked": 10, "missing": 2, "changed": 1, "unreadable": 0,
        "not_acknowledged": {"exec failed": 2}, "per_workspace": {"w01": 0, "w02": 0}}
    text = report.summary(data)
    assert ("files: 12 written, 10 acknowledged, 10 checked, 2 missing, 1 changed "
            "(not acknowledged: exec failed x2)") in text.splitlines()
    _, html_path = report.write(tmp_path, data)
    assert "12 numbered files written into the workspaces' storage" in html_path.read_text()

"""`wsctl chaos run --self-contained` end to end: real controller, Docker, PostgreSQL.

A small run must pass; and the harness must be able to fail: against a
controller broken on purpose (WSCTL_DEBUG_BREAK_*, controller/testing/debug_breaks.py)
each invariant is reported, naming the workspace and the fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import docker
import pytest
from docker.errors import DockerException

from controller.adapters.database import open_store
from controller.chaos.environment import PLANTED_ENV

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
PLANTED = "sk-planted-chaos-" + secrets.token_hex(8)


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    try:
        docker.from_env(timeout=30).ping()
    except DockerException as exc:
        pytest.fail(f"no Docker engine answers ({type(exc).__name__}); "
                    "run scripts/bootstrap docker (make test does)")


def chaos(report: Path, *args: str, env: dict[str, str] | None = None
          ) -> tuple[int, str, dict[str, Any]]:
    """Run `wsctl chaos run --self-contained ARGS`; (exit code, output, report.json)."""
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "chaos", "run", "--self-contained",
         "--report", str(report), *args],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=900,
        cwd=REPO, check=False)
    output = proc.stdout + proc.stderr
    path = report / "report.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return proc.returncode, output, data


def scan_for_planted_secrets(data_dir: Path, report: Path, output: str) -> None:
    """Issue 7: the planted LLM key and the admin token appear nowhere in what the
    run leaves behind: the harness's output, every report file, every controller
    log, and every row of every table (status, events, diagnostics, activity,
    registrations; the secrets table holds only ciphertext)."""
    planted = {"llm key": PLANTED, "admin token": (data_dir / "admin.token").read_text().strip()}
    texts = {"chaos output": output}
    texts |= {str(f): f.read_text(errors="replace") for f in report.rglob("*") if f.is_file()}
    logs = sorted(data_dir.glob("controller-*.log"))
    assert logs, f"no controller log kept in {data_dir}"
    texts |= {str(f): f.read_text(errors="replace") for f in logs}

    async def rows() -> dict[str, str]:
        async with open_store(data_dir, None) as store:
            conn = await asyncpg.connect(store.dsn)
            try:
                tables = [r["tablename"] for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
                return {f"table {t}": "\n".join(
                    r["row"] for r in await conn.fetch(
                        f'SELECT t::text AS row FROM "{t}" t'))  # noqa: S608 - from pg_tables
                    for t in tables}
            finally:
                await conn.close()

    tables = asyncio.run(rows())
    assert {"table events", "table diagnostics", "table workspaces"} <= tables.keys()
    assert tables["table events"] and tables["table diagnostics"]  # the run left a record
    texts |= tables
    leaks = [(where, label) for where, text in texts.items()
             for label, value in planted.items() if value in text]
    assert leaks == []


def failed(data: dict[str, Any]) -> set[str]:
    return {name for name, verdict in data["invariants"].items() if verdict == "fail"}


def test_small_run_passes_with_every_fault_type_and_writes_the_report(tmp_path: Path) -> None:
    # 10 s tokens: refreshed in place every ~5 s, through every fault type.
    args = ["--workspaces", "3", "--faults", "13", "--seed", "2", "--settle", "90",
            "--token-expiration", "10"]
    code, output, data = chaos(tmp_path / "report", *args, "--keep",
                               env={PLANTED_ENV: PLANTED})
    kept = re.search(r"kept (\S+) \(controller logs", output)
    assert kept is not None, output[-4000:]
    try:
        scan_for_planted_secrets(Path(kept.group(1)), tmp_path / "report", output)
    finally:
        shutil.rmtree(kept.group(1), ignore_errors=True)
    assert code == 0, output[-4000:]
    assert data["verdict"] == "pass" and data["violations"] == []
    assert set(data["invariants"].values()) == {"pass"}
    kinds = {"kill", "stop", "remove", "pause", "network", "token", "suspend", "delete-reapply",
             "bad-register", "crash-loop", "controller-kill", "postgres-restart", "lateral"}
    assert set(data["convergence"]) == kinds
    for kind, stats in data["convergence"].items():
        assert stats["converged"] == stats["injected"] >= 1, kind
    assert data["workload"]["acked"] > 0 and data["workload"]["missing"] == 0
    # Files written into every workspace's storage through kills, recreates, a
    # suspension and a delete + re-apply: each acknowledged one read back intact.
    files = data["files"]
    assert files["checked"] == files["acknowledged"] > 0, files
    assert files["missing"] == files["changed"] == files["unreadable"] == 0, files
    assert all(n > 0 for n in files["per_workspace"].values()), files
    assert "files: " in output and "files pass" in output
    refreshed = [n for n in data["notes"] if n.startswith("tokens expire after 10s: ")]
    assert refreshed and int(refreshed[0].split(": ")[1].split()[0]) > 0, data["notes"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<svg") == 2
    assert f"report: {tmp_path / 'report' / 'report.html'}" in output.splitlines()
    assert "wsctl chaos: PASS" in output

    printed = subprocess.run(
        [sys.executable, "-m", "controller", "chaos", "run", "--self-contained",
         "--print-schedule", *args], capture_output=True, text=True, check=True, cwd=REPO)
    assert [line.split("s  ", 1)[1] for line in printed.stdout.splitlines()] == [
        f["label"] for f in data["faults"]]  # same seed, same schedule


def test_broken_recreate_activity_and_secret_are_each_reported(tmp_path: Path) -> None:
    code, output, data = chaos(
        tmp_path / "report", "--workspaces", "2", "--faults", "2", "--only", "kill",
        "--seed", "1", "--fault-timeout", "8", "--settle", "3",
        env={"WSCTL_DEBUG_BREAK_RECREATE": "1", "WSCTL_DEBUG_BREAK_ACTIVITY_WRITES": "1",
             "WSCTL_DEBUG_BREAK_LOG_SECRET": "1", "WSCTL_DEBUG_BREAK_KEY_IN_CONTAINER": "1"})
    assert code == 1, output[-4000:]
    assert {"converge", "one-container", "activity", "secrets"} <= failed(data)
    killed = [f for f in data["faults"] if f["injected_at"] is not None]
    assert killed
    for fault in killed:
        (v,) = [v for v in data["violations"]
                if v["invariant"] == "converge" and v["fault"] == fault["label"]]
        assert v["workspace"] == fault["target"] and "is exited" in v["detail"]
        assert f"[converge] {fault['target']} / {fault['label']}: not converged" in output
    assert any(v["invariant"] == "activity" and "without an activity row" in v["detail"]
               for v in data["violations"])
    secrets = [v["detail"] for v in data["violations"] if v["invariant"] == "secrets"]
    assert all(d.startswith("llm-api-key appears in ") for d in secrets), secrets
    assert any("appears in the environment of" in d for d in secrets), secrets  # the knob
    assert "sk-chaos-PLANTED" not in json.dumps(data)  # the report names it, never shows it


def test_broken_token_revocation_expiry_and_degraded_reason_are_each_reported(
        tmp_path: Path) -> None:
    code, output, data = chaos(
        tmp_path / "report", "--workspaces", "2", "--faults", "3", "--only", "kill,pause",
        "--seed", "4", "--settle", "30", "--token-expiration", "10",
        env={"WSCTL_DEBUG_BREAK_TOKEN_REVOCATION": "1", "WSCTL_DEBUG_BREAK_TOKEN_EXPIRY": "1",
             "WSCTL_DEBUG_BREAK_DEGRADED_REASON": "1"})
    assert code == 1, output[-4000:]
    assert failed(data) == {"tokens", "degraded-cause"}
    tokens = [v["detail"] for v in data["violations"] if v["invariant"] == "tokens"]
    assert tokens and all("is still accepted" in d for d in tokens), tokens
    # Both: a replaced generation (revocation) and a refreshed-away token (expiry).
    assert any("(replaced) is still accepted" in d for d in tokens), tokens
    assert any("(expired) is still accepted" in d for d in tokens), tokens
    pauses = {f["label"] for f in data["faults"] if f["kind"] == "pause"}
    causes = [v for v in data["violations"] if v["invariant"] == "degraded-cause"]
    assert any("AgentUnhealthy" in v["detail"] and v["fault"] in pauses for v in causes)
    assert any("never reported Degraded HeartbeatStale" in v["detail"] for v in causes)


def test_old_container_left_running_is_caught_by_the_continuous_probe(tmp_path: Path) -> None:
    code, output, data = chaos(
        tmp_path / "report", "--workspaces", "1", "--faults", "1", "--only", "bad-register",
        "--seed", "1", "--fault-timeout", "10", "--settle", "3",
        env={"WSCTL_DEBUG_BREAK_STOP_OLD": "1"})
    assert code == 1, output[-4000:]
    assert "single-runner" in failed(data)
    (runner,) = [v for v in data["violations"] if v["invariant"] == "single-runner"]
    assert runner["workspace"] == "w01"
    assert runner["fault"].startswith("#1 bad-register")
    assert runner["detail"].startswith("two running containers: ")


def test_a_ready_workspace_that_does_not_answer_fails_serves(tmp_path: Path) -> None:
    """Ready must mean reachable: with the proxy dialling nowhere, every converged
    workspace still reports Ready, and the harness says `serves` failed."""
    code, output, data = chaos(
        tmp_path / "report", "--workspaces", "2", "--faults", "1", "--only", "pause",
        "--seed", "1", "--settle", "20", env={"WSCTL_DEBUG_BREAK_SERVES": "1"})
    assert code == 1, output[-4000:]
    assert "serves" in failed(data), data["violations"]
    serves = [v for v in data["violations"] if v["invariant"] == "serves"]
    assert {v["workspace"] for v in serves} == {"w01", "w02"}
    assert any("Online, but message/send answered HTTP 502" in v["detail"]
               for v in serves), serves


def test_a_recreate_that_forgets_the_storage_loses_acknowledged_files(tmp_path: Path) -> None:
    """With recreated containers mounting a fresh volume instead of the workspace's
    (WSCTL_DEBUG_BREAK_STORAGE), the files written before a kill are gone: `files`
    fails, naming the workspace, the kill and the files; nothing else does."""
    code, output, data = chaos(
        tmp_path / "report", "--workspaces", "2", "--faults", "2", "--only", "kill",
        "--seed", "4", "--rate", "0.2", "--files-interval", "0.5", "--settle", "20",
        env={"WSCTL_DEBUG_BREAK_STORAGE": "1"})
    assert code == 1, output[-4000:]
    assert failed(data) == {"files"}, data["violations"]
    lost = [v for v in data["violations"] if v["invariant"] == "files"]
    kills = {f["target"]: f["label"] for f in data["faults"] if f["injected_at"] is not None}
    assert lost and {v["workspace"] for v in lost} <= set(kills)
    for v in lost:
        assert kills[v["workspace"]] in v["fault"].split(", ")
        assert re.search(r"\d+ missing \(1\.txt, 2\.txt", v["detail"]), v["detail"]
        assert f"[files] {v['workspace']} / {v['fault']}: of " in output
    assert data["files"]["missing"] > 0


def test_a_workspace_on_an_open_network_fails_isolation(tmp_path: Path) -> None:
    """With every container also on the open network (WSCTL_DEBUG_BREAK_OPEN_NETWORK),
    the lateral probe reaches the other workspace and the host: `isolation` fails,
    naming each path; nothing else does. Without the knob the same run passes."""
    args = ["--workspaces", "2", "--faults", "2", "--only", "lateral", "--seed", "1",
            "--settle", "10"]
    code, output, data = chaos(tmp_path / "broken", *args,
                               env={"WSCTL_DEBUG_BREAK_OPEN_NETWORK": "1"})
    assert code == 1, output[-4000:]
    assert failed(data) == {"isolation"}, [
        v for v in data["violations"] if v["invariant"] != "isolation"]
    breaches = [v["detail"] for v in data["violations"] if v["invariant"] == "isolation"]
    assert any(re.match(r"chaos\.w0[12] at [0-9.]+ \([0-9.]+:8000\): reached", d)
               for d in breaches), breaches
    assert any(d.startswith("the host at ") for d in breaches), breaches
    assert any(d.startswith("the bait on the host accepted") for d in breaches), breaches

    code, output, data = chaos(tmp_path / "sound", *args)
    assert code == 0, output[-4000:]
    assert data["invariants"]["isolation"] == "pass"
    notes = [n for f in data["faults"] for n in f.get("notes", [])]
    assert any(re.search(r"\d+ lateral path\(s\) tried, 0 reached", n) for n in notes), notes

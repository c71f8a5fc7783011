"""wsctl benchmarks: controller overhead against raw Docker and docker-compose, same run.

    python -m benchmarks.bench            # full: N = 10, 50, 200 (make bench)
    python -m benchmarks.bench --quick    # small N, checks the suite works (make bench-quick)

    # bring-up only, chosen N, 5 interleaved trials; this tree against another checkout,
    # with a py-spy profile of each controller and per-workspace call counts:
    python -m benchmarks.bench --only bringup --sizes 10,50,200 --trials 5 \
        --compare /tmp/wsctl-before --no-compose --profile /tmp/prof

    # wake-to-answer only (suspended workspace vs `docker start` of a stopped container):
    python -m benchmarks.bench --only wake --quick --out benchmarks/results/quick

    # the LLM gateway's added latency only (direct calls to a fake provider vs through
    # the gateway; benchmarks/gateway.py):
    python -m benchmarks.bench --only gateway --quick --out /tmp/gwbench

    # the egress proxy's added latency only (HTTPS on new connections from inside an
    # open workspace direct vs an allowlist one through the proxy; benchmarks/egress.py):
    python -m benchmarks.bench --only egress --quick --out /tmp/egbench

Every figure is a ratio or a count measured in the same run as its baseline.
Results: benchmarks/results/{results.json,results.md,*.png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import docker
import yaml

from benchmarks import baselines
from benchmarks.cli import COMMAND_RESTART_GOAL, bench_cli, cli_table, timed, wsctl_command
from benchmarks.egress import bench_egress, egress_table
from benchmarks.fleet import (
    KEY,
    DockerEvents,
    Fleet,
    cpu_by_group,
    fleet_environment,
    postmaster_pid,
    proc_stats,
)
from benchmarks.gateway import bench_gateway, gateway_table
from controller.adapters.images import DEFAULT_TAG, ensure_agent_image
from controller.core.a2a import message_send
from controller.core.containerspec import ContainerSpec, container_spec
from controller.core.model import Workspace
from controller.core.projection import project
from controller.core.settings import PlatformSettings, default_cache_dir
from controller.testing.harness import ControllerProcess, phase, wait_for

RESULTS = Path(__file__).parent / "results"
REPO_ROOT = Path(__file__).resolve().parents[1]
PARALLELISM = 8


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": pct(values, 95), "p99": pct(values, 99),
            "n": len(values)}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def event_time(event: dict[str, Any]) -> float:
    return int(event["timeNano"]) / 1e9


def metrics(proc: ControllerProcess) -> dict[str, float]:
    text = proc.client().request("GET", "/metrics", raw=True)
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(wsctl_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match[1]] = float(match[2])
    return values


def docker_calls(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("wsctl_docker_api_calls_total"))


def specs_for(fleet: Fleet, names: list[str], instance: str, *,
              calls_llm: bool = False) -> list[ContainerSpec]:
    """The controller's own container specs of these fleet workspaces, for the baselines
    to create by hand (same settings, env and networks)."""
    settings = PlatformSettings(registry_url="http://host.docker.internal:9",
                                network=fleet.network, instance=instance)
    out = []
    for name in names:
        ws = Workspace.model_validate(fleet.workspace(name, calls_llm=calls_llm))
        out.append(container_spec(ws, project(ws, {("bench", "api-key"): KEY}, settings),
                                  settings, 1))
    return out


def all_online(proc: ControllerProcess, count: int) -> bool:
    items = proc.client().request("GET", "/api/v1/workspaces")["items"]
    return len(items) == count and all(
        (i.get("status") or {}).get("phase") == "Online" for i in items)


def online_with_new(proc: ControllerProcess, name: str, old_container: str) -> bool:
    status = proc.get(name).get("status") or {}
    return status.get("phase") == "Online" and status.get("containerID") not in (
        None, old_container)


# ---------------------------------------------------------------- 1. recreate overhead


def bench_recreate(fleet: Fleet, restarts: int) -> dict[str, Any]:
    """All timed the same way: from just before the request (controller), the spawn of
    `wsctl restart` (the command: a new process, Python's start-up included) or the
    first Docker call (raw docker-py, in this process) to Docker's start event of the
    new container, on the same event watcher and the same (wall) clock. The request
    and the command alternate on one controller."""
    say(f"recreate: {restarts} restarts through the controller's API, {restarts} through "
        "`wsctl restart`, vs raw docker-py")
    instance = "bench-rc"
    controller_times: list[float] = []
    cli_times: list[float] = []
    with fleet.controller(instance, "--heartbeat-seconds", "5") as proc:
        events = DockerEvents(fleet.client, f"wsctl.dev/instance={instance}").start()
        command = [*wsctl_command(), "restart", "rc", "--server", proc.server,
                   "--data-dir", str(proc.data_dir)]
        try:
            proc.apply(fleet.workspace("rc"))
            wait_for(lambda: all_online(proc, 1), 60, "rc Online")
            previous = proc.get("rc")["status"]["containerID"]
            for i in range(2 * restarts):
                by_command = i % 2 == 1
                events.drain()
                started = time.time()
                if by_command:
                    timed(command)  # raises, naming the error, if the command fails
                else:
                    proc.client().request("POST", "/api/v1/workspaces/rc/restart")
                (start_event,) = events.wait("start", 1, 60, exclude={previous})
                (cli_times if by_command else controller_times).append(
                    event_time(start_event) - started)
                wait_for(partial(online_with_new, proc, "rc", previous), 60, "rc Online again")
                previous = proc.get("rc")["status"]["containerID"]
        finally:
            events.stop()
    raw_times: list[float] = []
    raw_calls: list[float] = []
    label = {"wsctl.dev/instance": "bench-raw-rc"}
    events = DockerEvents(fleet.client, "wsctl.dev/instance=bench-raw-rc").start()
    try:
        (spec,) = specs_for(fleet, ["rawrc"], "bench-raw-rc")
        cid = baselines.create_start(fleet.client, spec, fleet.gateway, label)
        for generation in range(2, restarts + 2):
            # Like the controller's runs, replace an agent that is up (signal handlers set).
            wait_for(partial(baselines.agent_answers, fleet.client, cid, spec.network), 30,
                     "raw agent up")
            spec = ContainerSpec(**{**spec.__dict__, "name": spec.name.rsplit("-g", 1)[0]
                                    + f"-g{generation}"})
            events.drain()
            started = time.time()
            old, cid = cid, baselines.recreate(fleet.client, cid, spec, fleet.gateway, label)
            raw_calls.append(time.time() - started)
            (start_event,) = events.wait("start", 1, 60, exclude={old})
            raw_times.append(event_time(start_event) - started)
    finally:
        events.stop()
        fleet.remove_instance("bench-raw-rc")
    c, r, cmd = summary(controller_times), summary(raw_times), summary(cli_times)
    return {"controller": c, "raw": r, "command": cmd, "raw_calls_returned": summary(raw_calls),
            "ratio_median": c["median"] / r["median"], "ratio_p95": c["p95"] / r["p95"],
            "command_ratio_median": cmd["median"] / r["median"],
            "command_ratio_p95": cmd["p95"] / r["p95"],
            "end_point": "Docker's start event of the new container",
            "goal": "ratio <= 1.10", "command_goal": COMMAND_RESTART_GOAL}


# ---------------------------------------------------------------- 2. cold bring-up (+3, 5)


def bench_names(n: int) -> list[str]:
    return [f"w{i:03d}" for i in range(n)]


class Profiler:
    """`py-spy record` of a controller process (all threads, idle ones too) while it runs."""

    def __init__(self, pid: int, out: Path) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--idle", "--threads", "--rate", "200",
             "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def by_label(values: dict[str, float], family: str) -> dict[str, float]:
    """The samples of one labelled family, by their (single) label's value."""
    return {k.split('"')[1]: v for k, v in values.items() if k.startswith(family + "{")}


def queries_by_origin(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """SQL statements sent between two scrapes, by origin (as the controller counted them:
    `wsctl_db_queries_total{origin}`). A controller from before the origin label (a
    --compare checkout) gives one `unattributed` total, its scrapes' statements in it."""
    family = "wsctl_db_queries_total"
    if family in after:
        return {"unattributed": after[family] - before.get(family, 0.0)}
    old = by_label(before, family)
    return {o: v - old.get(o, 0.0) for o, v in by_label(after, family).items()}


def per_workspace(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, Any]:
    """Docker API calls (by name) and SQL statements per workspace between two scrapes.
    The scrapes' own statements are counted under the `metrics` origin and left out;
    every other origin (the apply's `api`, `reconcile`, the agents' `registry`) is in."""
    calls = {k.split('"')[1]: (after[k] - before.get(k, 0)) / n for k in after
             if k.startswith("wsctl_docker_api_calls_total{") and after[k] != before.get(k, 0)}
    queries = {o: v / n for o, v in queries_by_origin(before, after).items() if v}
    return {"docker_calls": calls, "docker_calls_total": sum(calls.values()),
            "sql_statements": sum(v for o, v in queries.items() if o != "metrics"),
            "sql_by_origin": queries}


def manifest_file(fleet: Fleet, names: list[str], folder: Path) -> Path:
    """The multi-document file a user would apply (written before the clock starts)."""
    path = folder / "bench-workspaces.yaml"
    path.write_text(yaml.safe_dump_all([fleet.workspace(name) for name in names]))
    return path


def wsctl_apply(proc: ControllerProcess, manifest: Path, repo: Path | None
                ) -> subprocess.Popen[str]:
    """`wsctl apply -f MANIFEST` as a user runs it: a new process of the controller's
    interpreter and checkout (`python -m controller` is `wsctl`), against this controller."""
    env = {k: v for k, v in os.environ.items() if k not in ("WSCTL_SERVER", "WSCTL_ADMIN_TOKEN")}
    return subprocess.Popen(
        [sys.executable, "-m", "controller", "apply", "-f", str(manifest),
         "--server", proc.server, "--data-dir", str(proc.data_dir)],
        cwd=repo or REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def controller_bringup(fleet: Fleet, n: int, *, instance: str, via: str = "api",
                       repo: Path | None = None, steady: bool = False,
                       profile: Path | None = None) -> dict[str, Any]:
    """Apply N workspaces at once to a fresh controller, `via` the API (one request from
    this process) or the `command` (`wsctl apply -f`, its process included). Seconds from
    just before the request or the spawn until Docker's start event of the last
    container, and until all were Online; calls and CPU per workspace on the way."""
    result: dict[str, Any] = {"n": n, "via": via}
    with fleet.controller(instance, "--heartbeat-seconds", "30", "--resync-seconds", "10",
                          "--docker-parallelism", str(PARALLELISM), repo=repo) as proc:
        assert proc.proc is not None
        manifest = manifest_file(fleet, bench_names(n), proc.data_dir)
        cpu0, rss0 = proc_stats(proc.proc.pid)
        before = metrics(proc)
        postmaster = postmaster_pid(proc.data_dir)
        groups0 = cpu_by_group(postmaster)
        profiler = None if profile is None else Profiler(proc.proc.pid, profile)
        events = DockerEvents(fleet.client, f"wsctl.dev/instance={instance}").start()
        try:
            started = time.time()
            if via == "command":
                cli = wsctl_apply(proc, manifest, repo)
                out, err = cli.communicate(timeout=300)
                result["command_exit_seconds"] = time.time() - started
                if cli.returncode != 0:
                    raise RuntimeError(f"wsctl apply exited {cli.returncode}: {err or out}")
            else:
                proc.apply(*[fleet.workspace(name) for name in bench_names(n)])
            starts = events.wait("start", n, 600)
            result["controller_seconds"] = max(event_time(e) for e in starts) - started
            result["controller_cpu_seconds"] = proc_stats(proc.proc.pid)[0] - cpu0
            result["cpu_seconds"] = {k: v - groups0[k]
                                     for k, v in cpu_by_group(postmaster).items()}
            if profiler is not None:
                profiler.stop()
            result["bringup_per_workspace"] = per_workspace(before, metrics(proc), n)
            wait_for(lambda: all_online(proc, n), 600, f"{n} workspaces Online", interval=0.5)
            result["online_seconds"] = time.time() - started
        finally:
            events.stop()
            if profiler is not None and profiler.proc.poll() is None:
                profiler.stop()
        if steady:
            result["steady"] = steady_state(proc, n, rss0)
    return result


def raw_bringup(fleet: Fleet, n: int) -> dict[str, Any]:
    """Raw docker-py in this process (no interpreter start-up), timed like the controller:
    from just before the first call to Docker's start event of the last container."""
    instance = f"bench-raw{n}"
    groups0 = cpu_by_group()
    specs = specs_for(fleet, bench_names(n), instance)  # what the script has at hand
    events = DockerEvents(fleet.client, f"wsctl.dev/instance={instance}").start()
    try:
        started = time.time()
        calls = baselines.bring_up(fleet.client, specs, fleet.gateway,
                                   {"wsctl.dev/instance": instance}, PARALLELISM)
        starts = events.wait("start", n, 600)
        daemons = cpu_by_group()["docker_daemons"] - groups0["docker_daemons"]
        return {"seconds": max(event_time(e) for e in starts) - started,
                "calls_returned_seconds": calls, "cpu_seconds": {"docker_daemons": daemons}}
    finally:
        events.stop()
        fleet.remove_instance(instance)


def compose_bringup(fleet: Fleet, n: int) -> dict[str, Any]:
    """`docker-compose up -d` of the same services, a command like `wsctl apply -f`: from
    just before the spawn to Docker's start event of the last container. `seconds` is
    None when compose did not finish (then there is nothing to compare with)."""
    project = f"wsctlbench{n}"
    folder = baselines.compose_file(specs_for(fleet, bench_names(n), f"bench-cmp{n}"),
                                    fleet.gateway)
    events = DockerEvents(fleet.client, f"com.docker.compose.project={project}").start()
    try:
        started = time.time()
        exited, running = baselines.compose_up(folder, project, fleet.client)
        seconds: float | None = None
        if exited is not None:
            starts = events.wait("start", n, 60)
            seconds = max(event_time(e) for e in starts) - started
        return {"seconds": seconds, "exit_seconds": exited, "running": running}
    finally:
        events.stop()
        baselines.compose_down(folder, project)


def bench_scale(fleet: Fleet, n: int, steady: bool, trials: int) -> dict[str, Any]:
    """Bring-up at N: `trials` runs each of the controller from the command, the
    controller from the API request and raw docker-py, in an order rotated per trial;
    medians and p95 compared. Steady state after the first API run; docker-compose once
    (it is the slow one, and at N=200 may not finish)."""
    say(f"bring-up N={n}: controller from `wsctl apply -f` and from the API, raw docker-py "
        f"({PARALLELISM} parallel), docker-compose; {trials} trial(s)")
    variants = ["command", "api", "raw"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for trial in range(trials):
        for variant in variants[trial % 3:] + variants[:trial % 3]:
            if variant == "raw":
                runs["raw"].append(raw_bringup(fleet, n))
            else:
                runs[variant].append(controller_bringup(
                    fleet, n, instance=f"bench-up{n}-{variant}-{trial}", via=variant,
                    steady=steady and trial == 0 and variant == "api"))
        last = {v: runs[v][-1].get("controller_seconds", runs[v][-1].get("seconds"))
                for v in variants}
        say(f"  trial {trial + 1}/{trials}: from the command {last['command']:.2f} s, "
            f"from the API {last['api']:.2f} s, raw {last['raw']:.2f} s")

    def of(variant: str, key: str) -> dict[str, float]:
        return summary([r[key] for r in runs[variant]])

    first_api = runs["api"][0]
    result: dict[str, Any] = {
        "n": n, "trials": trials, "runs": runs,
        "command": of("command", "controller_seconds"),
        "command_online": of("command", "online_seconds"),
        "command_exit": of("command", "command_exit_seconds"),
        "api": of("api", "controller_seconds"), "api_online": of("api", "online_seconds"),
        "raw": of("raw", "seconds"), "raw_calls_returned": of("raw", "calls_returned_seconds"),
        # Calls, statements and CPU per workspace: the first API run.
        **{k: first_api[k] for k in ("bringup_per_workspace", "controller_cpu_seconds",
                                     "cpu_seconds", "steady") if k in first_api},
    }
    for variant in ("command", "api"):
        result[f"ratio_{variant}"] = result[variant]["median"] / result["raw"]["median"]
        result[f"ratio_{variant}_p95"] = result[variant]["p95"] / result["raw"]["p95"]
    compose = compose_bringup(fleet, n)
    result["compose"] = compose
    result["ratio_compose"] = (None if compose["seconds"] is None
                               else result["command"]["median"] / compose["seconds"])
    return result


def bench_bringup_trials(fleet: Fleet, sizes: list[int], trials: int,
                         variants: dict[str, Path | None], compose: bool,
                         profile: Path | None) -> dict[str, Any]:
    """Bring-up only: each trial runs every variant (controller checkouts, raw docker-py,
    optionally compose) at each N, in an order rotated per trial so drift on a busy
    machine spreads evenly over the variants."""
    labels = [*variants, "raw"] + (["compose"] if compose else [])
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {n: {v: [] for v in labels}
                                                         for n in sizes}
    for trial in range(trials):
        for n in sizes:
            order = labels[trial % len(labels):] + labels[:trial % len(labels)]
            for label in order:
                if label == "raw":
                    runs[n][label].append(raw_bringup(fleet, n))
                elif label == "compose":
                    runs[n][label].append(compose_bringup(fleet, n))
                else:
                    where = None if profile is None else profile / f"{label}-n{n}-t{trial}.txt"
                    r = controller_bringup(fleet, n, instance=f"bench-up{n}",
                                           repo=variants[label], profile=where)
                    runs[n][label].append({"seconds": r["controller_seconds"], **r})
                say(f"trial {trial + 1}/{trials} N={n} {label}: "
                    f"{runs[n][label][-1]['seconds'] or float('nan'):.2f} s")
    table: dict[int, dict[str, Any]] = {}
    for n in sizes:
        table[n] = {}
        for label in labels:
            secs = [r["seconds"] for r in runs[n][label] if r["seconds"] is not None]
            table[n][label] = summary(secs) if secs else None
    return {"sizes": sizes, "trials": trials, "variants": {k: str(v or REPO_ROOT)
                                                           for k, v in variants.items()},
            "runs": runs, "summary": table}


def ms_per_ws(seconds: list[float], n: int) -> str:
    return f"{statistics.median(seconds) / n * 1e3:.1f}"


def bringup_table(ab: dict[str, Any]) -> str:
    lines = ["| N | variant | median s | p95 s | vs raw (median) | vs raw (p95) "
             "| Docker calls / ws | SQL / ws | controller CPU ms / ws | PostgreSQL CPU ms / ws "
             "| Docker daemons CPU ms / ws |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in ab["sizes"]:
        raw = ab["summary"][n]["raw"]
        for label, stats in ab["summary"][n].items():
            if stats is None:
                lines.append(f"| {n} | {label} | did not finish | | | | | | |")
                continue
            extra = ["", "", "", ""]
            done = [r for r in ab["runs"][n][label] if "bringup_per_workspace" in r]
            if done:
                per = [r["bringup_per_workspace"] for r in done]
                extra = [
                    f"{statistics.median(p['docker_calls_total'] for p in per):.1f}",
                    f"{statistics.median(p['sql_statements'] for p in per):.1f}",
                    ms_per_ws([r["controller_cpu_seconds"] for r in done], n),
                    ms_per_ws([r["cpu_seconds"]["postgres"] for r in done], n)]
            cpu = [r["cpu_seconds"]["docker_daemons"] for r in ab["runs"][n][label]
                   if "cpu_seconds" in r]
            extra.append(ms_per_ws(cpu, n) if cpu else "")
            lines.append(
                f"| {n} | {label} | {stats['median']:.2f} | {stats['p95']:.2f} | "
                f"{stats['median'] / raw['median']:.3f} | {stats['p95'] / raw['p95']:.3f} | "
                + " | ".join(extra) + " |")
    return "\n".join(lines) + "\n"


RECONCILES = "wsctl_reconcile_duration_seconds_count"


def steady_state(proc: ControllerProcess, n: int, rss0: int) -> dict[str, Any]:
    """One resync pass of an in-sync fleet and the reconciles it queues: Docker calls, SQL
    statements, controller CPU; RSS.

    The statements are those the controller counted under the `resync` and `reconcile`
    origins (`wsctl_db_queries_total{origin}`), not an estimate: heartbeats (`registry`)
    and the benchmark's own scrapes (`metrics`) are counted apart. The window runs from
    a quiet moment after one pass (its N reconciles done, the queue empty) to the same
    moment after the next, so it holds one pass and its reconciles whatever the phase of
    the polling. Polled once a second: every scrape costs the controller a little CPU."""
    assert proc.proc is not None
    pid = proc.proc.pid

    def settled_after(seen: dict[str, float]) -> dict[str, float]:
        """The metrics once a pass newer than `seen` ran and its reconciles are done."""
        last: dict[str, float] = {}

        def settled() -> dict[str, float] | None:
            nonlocal last
            now = metrics(proc)
            done = (now.get("wsctl_resyncs_total", 0) > seen.get("wsctl_resyncs_total", 0)
                    and now.get(RECONCILES, 0) >= seen.get(RECONCILES, 0) + n
                    and now.get("wsctl_queue_depth", 0) == 0
                    and now.get(RECONCILES) == last.get(RECONCILES))
            last = now
            return now if done else None

        return wait_for(settled, 60, "a resync pass and its reconciles", interval=1.0)

    before = settled_after(metrics(proc))
    cpu_a = proc_stats(pid)[0]
    after = settled_after(before)
    cpu_b, rss = proc_stats(pid)
    passes = after["wsctl_resyncs_total"] - before["wsctl_resyncs_total"]
    reconciles = after[RECONCILES] - before[RECONCILES]
    queries = queries_by_origin(before, after)
    resync_sql = queries.get("resync", 0.0) + queries.get("reconcile", 0.0)
    return {
        "passes": passes,
        "reconciles_per_pass": reconciles / passes,
        "docker_calls_per_pass": (docker_calls(after) - docker_calls(before)) / passes,
        "docker_calls_by_name": {k.split('"')[1]: (after[k] - before.get(k, 0)) / passes
                                 for k in after if k.startswith("wsctl_docker_api_calls_total{")
                                 and after[k] != before.get(k, 0)},
        "db_queries_per_pass": resync_sql / passes,
        "db_queries_per_workspace_per_pass": resync_sql / passes / n,
        "db_queries_by_origin_per_pass": {o: v / passes for o, v in queries.items() if v},
        "cpu_seconds_per_pass": (cpu_b - cpu_a) / passes,
        "heartbeats_in_window": after["wsctl_agent_heartbeats_total"]
        - before["wsctl_agent_heartbeats_total"],
        "rss_bytes": rss,
        "rss_per_workspace_mib": (rss - rss0) / n / 2**20,
    }


# ---------------------------------------------------------------- 4. reaction


def bench_reaction(fleet: Fleet, kills: int) -> dict[str, Any]:
    say(f"reaction: {kills} x docker kill -> replacement started")
    instance = "bench-kill"
    reactions: list[float] = []
    with fleet.controller(instance, "--heartbeat-seconds", "5",
                          "--crash-loop-threshold", "1000") as proc:
        events = DockerEvents(fleet.client, f"wsctl.dev/instance={instance}").start()
        try:
            proc.apply(fleet.workspace("k"))
            wait_for(lambda: all_online(proc, 1), 60, "k Online")
            for _ in range(kills):
                current = proc.get("k")["status"]["containerID"]
                events.drain()
                fleet.client.api.kill(current)
                (died,) = events.wait("die", 1, 30)
                (started,) = events.wait("start", 1, 30, exclude={current})
                reactions.append(event_time(started) - event_time(died))
                wait_for(partial(online_with_new, proc, "k", current), 60, "k Online again")
        finally:
            events.stop()
    return {"reaction": summary(reactions), "goal": "p99 < 1 s on top of Docker's start time"}


def docker_start_time(fleet: Fleet, samples: int) -> dict[str, float]:
    """Docker's own create+start time for this container (the floor of any reaction)."""
    label = {"wsctl.dev/instance": "bench-floor"}
    times = []
    try:
        for i, spec in enumerate(specs_for(fleet, [f"f{i}" for i in range(samples)],
                                           "bench-floor")):
            del i
            started = time.monotonic()
            baselines.create_start(fleet.client, spec, fleet.gateway, label)
            times.append(time.monotonic() - started)
    finally:
        fleet.remove_instance("bench-floor")
    return summary(times)


# ---------------------------------------------------------------- 5. wake


WAKE_FLOOR = ("`docker start` of the same kind of container (same settings and networks), "
              "stopped, -> its agent's answer to `message/send` at its address on the "
              "workspace network")


def answered(answer: dict[str, Any], text: str) -> None:
    """The agent's reply to `text` (the fake LLM echoes it), not an error."""
    if "result" not in answer or f"fake-llm heard: {text}" not in json.dumps(answer):
        raise RuntimeError(f"no answer to {text!r}: {answer}")


def suspended_and_gone(proc: ControllerProcess, client: docker.DockerClient, instance: str,
                       name: str) -> bool:
    """Suspended, and nothing of it runs (its standby container waits created)."""
    return phase(proc.get(name)) == "Suspended" and not client.containers.list(
        filters={"label": f"wsctl.dev/instance={instance}", "status": "running"})


def bench_wake(fleet: Fleet, samples: int) -> dict[str, Any]:
    """Wake-to-answer: one A2A `message/send` through the admin API to a suspended
    workspace (the controller wakes it: a fresh token into its standby container,
    start, the agent's register, Online, then the proxied message), from just before
    the request to the answer received. The floor: Docker's own `start` of a stopped
    container with the same settings and networks, from just before the call to its
    agent's answer to the same message at its address on the workspace network (polled
    every 10 ms). The agent's boot is in both, and so is its call to the fake LLM:
    both are `egress: open`, access direct (benchmarks/fleet.py).

    The samples alternate which side goes first, and each is taken with both asleep
    (the workspace Suspended and its container gone; the raw container stopped).
    Docker's start events and the controller's own `wsctl_wake_seconds` (wake ->
    Online) are recorded to show where the time goes."""
    say(f"wake: {samples} x a message to a suspended workspace vs docker start of the "
        "same stopped container, each to the agent's answer")
    instance, raw_instance, name = "bench-wake", "bench-raw-wake", "wk"
    path = f"/api/v1/workspaces/{name}"
    runs: dict[str, list[float]] = {k: [] for k in (
        "wsctl", "wsctl_to_start_event", "floor", "floor_to_start_event",
        "docker_start_call")}
    with fleet.controller(instance) as proc:
        api = proc.client()
        events = DockerEvents(fleet.client, f"wsctl.dev/instance={instance}").start()
        raw_events = DockerEvents(fleet.client, f"wsctl.dev/instance={raw_instance}").start()
        try:
            # The one bench whose agents call the LLM: `egress: open` on both sides
            # (benchmarks/fleet.py says why).
            proc.apply(fleet.workspace(name, calls_llm=True))
            (spec,) = specs_for(fleet, ["rawwk"], raw_instance, calls_llm=True)
            cid = baselines.create_start(fleet.client, spec, fleet.gateway,
                                         {"wsctl.dev/instance": raw_instance})
            wait_for(lambda: all_online(proc, 1), 60, f"{name} Online")
            # One answer each first: no sample is an agent's very first answer.
            answered(api.request("POST", path + "/a2a", message_send("hello")), "hello")
            answered(baselines.answer_after_start(fleet.client, cid, spec,
                                                  message_send("hello")), "hello")
            wakes_before = metrics(proc)

            def asleep() -> None:
                if phase(proc.get(name)) != "Suspended":
                    api.request("POST", path + "/suspend")
                wait_for(partial(suspended_and_gone, proc, fleet.client, instance, name), 60,
                         f"{name} Suspended, nothing running")
                fleet.client.api.stop(cid, timeout=5)
                wait_for(lambda: not fleet.client.api.inspect_container(cid)["State"][
                    "Running"], 30, "the raw container stopped")
                time.sleep(0.5)  # a quiet moment: the suspend's reconcile is written

            def wsctl_sample(text: str) -> None:
                events.drain()
                started = time.time()
                answer = api.request("POST", path + "/a2a", message_send(text))
                runs["wsctl"].append(time.time() - started)
                answered(answer, text)
                (start_event,) = events.wait("start", 1, 30)
                runs["wsctl_to_start_event"].append(event_time(start_event) - started)

            def floor_sample(text: str) -> None:
                raw_events.drain()
                started = time.time()
                fleet.client.api.start(cid)
                runs["docker_start_call"].append(time.time() - started)
                answer = baselines.answer_after_start(fleet.client, cid, spec,
                                                      message_send(text))
                runs["floor"].append(time.time() - started)
                answered(answer, text)
                (start_event,) = raw_events.wait("start", 1, 30)
                runs["floor_to_start_event"].append(event_time(start_event) - started)

            for i in range(samples):
                order = (wsctl_sample, floor_sample) if i % 2 == 0 else (floor_sample,
                                                                          wsctl_sample)
                for sample in order:
                    asleep()
                    sample(f"wake {i}")
                say(f"  sample {i + 1}/{samples}: wsctl {runs['wsctl'][-1]:.3f} s, "
                    f"floor {runs['floor'][-1]:.3f} s (docker start call "
                    f"{runs['docker_start_call'][-1]:.3f} s)")
            wakes_after = metrics(proc)
        finally:
            events.stop()
            raw_events.stop()
            fleet.remove_instance(raw_instance)
    wakes = (wakes_after.get("wsctl_wake_seconds_count", 0.0)
             - wakes_before.get("wsctl_wake_seconds_count", 0.0))
    wake_sum = (wakes_after.get("wsctl_wake_seconds_sum", 0.0)
                - wakes_before.get("wsctl_wake_seconds_sum", 0.0))
    w, f = summary(runs["wsctl"]), summary(runs["floor"])
    return {
        "samples": samples, "wsctl": w, "floor": f,
        "docker_start_call": summary(runs["docker_start_call"]),
        "wsctl_to_start_event": summary(runs["wsctl_to_start_event"]),
        "floor_to_start_event": summary(runs["floor_to_start_event"]),
        "controller_wakes": wakes,
        "controller_wake_seconds_mean": wake_sum / wakes if wakes else None,
        "ratio_p50": w["median"] / f["median"], "ratio_p99": w["p99"] / f["p99"],
        "runs": runs,
        "end_point": "the agent's answer to one A2A message/send, received",
        "floor_is": WAKE_FLOOR, "goal": "ratio_p50 <= 1.5",
    }


# ---------------------------------------------------------------- report


def machine(client: docker.DockerClient) -> dict[str, Any]:
    version = client.version()
    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu": cpu_model, "python": platform.python_version(),
            "docker": version.get("Version"), "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1)}


def source() -> dict[str, Any]:
    """The commit measured, and whether the tree had changes not in it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout
    try:
        changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
        return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(changed),
                "changed_paths": changed}
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"commit": None, "dirty": None, "error": str(exc)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N; checks the suite works")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=["all", "bringup", "wake", "gateway", "egress", "cli"],
                        default="all",
                        help="bringup: only the cold bring-up, at --sizes, --trials times; "
                        "writes bringup.{json,md} to --out, not results.*; wake: only "
                        "wake-to-answer, --samples times; writes wake[-quick].{json,md}; "
                        "gateway: only the LLM gateway's added latency; writes "
                        "gateway[-quick].{json,md}; egress: only the egress proxy's added "
                        "latency; writes egress[-quick].{json,md}; cli: the command line's "
                        "latency against docker ps; writes cli[-quick].{json,md}")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                        help="comma-separated N for bring-up (default 10,50,200; 3 with --quick)")
    parser.add_argument("--samples", type=int,
                        help="wake-to-answer samples (default 20; 3 with --quick)")
    parser.add_argument("--trials", type=int, default=1,
                        help="--only bringup: repetitions, interleaved across variants")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        metavar="CHECKOUT", help="--only bringup: also run the controller of "
                        "this checkout (e.g. `git archive` of an older commit); repeatable")
    parser.add_argument("--no-compose", action="store_true",
                        help="--only bringup: skip the docker-compose baseline")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="--only bringup: py-spy record each controller during bring-up "
                        "(raw collapsed stacks, all threads incl. idle) into DIR")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. a timeout) unwinds through the cleanups instead of leaving a fleet.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    client = docker.from_env(timeout=300, max_pool_size=32)
    ensure_agent_image(client, tag=DEFAULT_TAG, cache_dir=default_cache_dir(), progress=say)
    sizes = args.sizes or ([3] if args.quick else [10, 50, 200])
    if args.only == "bringup":
        return bringup_only(args, client, sizes)
    wakes = args.samples or (3 if args.quick else 20)
    if args.only == "wake":
        return wake_only(args, client, wakes)
    if args.only == "gateway":
        return one_bench(args, client, "gateway", bench_gateway, gateway_table)
    if args.only == "egress":
        return one_bench(args, client, "egress", bench_egress, egress_table)
    if args.only == "cli":  # with `wsctl restart` against raw docker-py (issue 17)
        def cli_and_restart(fleet: Fleet, quick: bool,
                            progress: Callable[[str], None]) -> dict[str, Any]:
            return {**bench_cli(fleet, quick, progress),
                    "restart": bench_recreate(fleet, 3 if quick else 10)}
        return one_bench(args, client, "cli", cli_and_restart, cli_table)
    baselines.ensure_compose()
    restarts, kills = (3, 3) if args.quick else (20, 20)
    started = time.monotonic()
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                               "quick": args.quick, "source": source(),
                               "machine": machine(client), "parallelism": PARALLELISM}
    with fleet_environment(client) as fleet:
        results["docker_start"] = docker_start_time(fleet, 5 if args.quick else 20)
        results["recreate"] = bench_recreate(fleet, restarts)
        results["scale"] = [bench_scale(fleet, n, steady=True, trials=1 if args.quick else 3)
                            for n in sizes]
        results["reaction"] = bench_reaction(fleet, kills)
        results["wake"] = bench_wake(fleet, wakes)
        results["gateway"] = bench_gateway(fleet, args.quick, say)
        results["egress"] = bench_egress(fleet, args.quick, say)
        results["cli"] = {**bench_cli(fleet, args.quick, say),
                          "restart": results["recreate"]}
    results["duration_seconds"] = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("results-quick.json" if args.quick else "results.json")).write_text(
        json.dumps(results, indent=2))
    from benchmarks.report import write_report

    table = write_report(results, args.out, quick=args.quick)
    gateway = gateway_table(results["gateway"])
    egress = egress_table(results["egress"])
    cli = cli_table(results["cli"])
    with (args.out / ("results-quick.md" if args.quick else "results.md")).open("a") as md:
        md.write("\n" + gateway + "\n" + egress + "\n" + cli)
    print(table + "\n" + gateway + "\n" + egress + "\n" + cli)
    return 0


def bringup_only(args: argparse.Namespace, client: docker.DockerClient,
                 sizes: list[int]) -> int:
    if not args.no_compose:
        baselines.ensure_compose()
    variants: dict[str, Path | None] = {"wsctl": None}
    for i, checkout in enumerate(args.compare):
        variants["compare" if i == 0 else f"compare{i + 1}"] = checkout.resolve()
    measured, started = source(), time.monotonic()
    with fleet_environment(client) as fleet:
        ab = bench_bringup_trials(fleet, sizes, args.trials, variants, not args.no_compose,
                                  args.profile)
    ab.update(when=datetime.now(UTC).isoformat(timespec="seconds"), source=measured,
              machine=machine(client),
              parallelism=PARALLELISM, duration_seconds=time.monotonic() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bringup.json").write_text(json.dumps(ab, indent=2, default=str))
    text = bringup_table(ab)
    (args.out / "bringup.md").write_text(text)
    print(text)
    return 0


def wake_only(args: argparse.Namespace, client: docker.DockerClient, samples: int) -> int:
    from benchmarks.report import wake_table

    doc: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                           "quick": args.quick, "source": source(), "machine": machine(client)}
    started = time.monotonic()
    with fleet_environment(client) as fleet:
        doc["wake"] = bench_wake(fleet, samples)
    doc["duration_seconds"] = time.monotonic() - started
    suffix = "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"wake{suffix}.json").write_text(json.dumps(doc, indent=2))
    text = wake_table(doc)
    (args.out / f"wake{suffix}.md").write_text(text)
    print(text)
    return 0


def one_bench(args: argparse.Namespace, client: docker.DockerClient, name: str,
              run: Callable[[Fleet, bool, Callable[[str], None]], dict[str, Any]],
              table: Callable[[dict[str, Any]], str]) -> int:
    """`--only gateway|egress`: that bench alone, on a fleet environment of its own;
    `<name>[-quick].json|md` in --out."""
    doc: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                           "quick": args.quick, "source": source(), "machine": machine(client)}
    started = time.monotonic()
    with fleet_environment(client) as fleet:
        doc[name] = run(fleet, args.quick, say)
    doc["duration_seconds"] = time.monotonic() - started
    suffix = "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}{suffix}.json").write_text(json.dumps(doc, indent=2))
    from benchmarks.report import machine_line, source_line

    text = "\n".join([machine_line(doc), "", source_line(doc["source"]), "",
                      table(doc[name])])
    (args.out / f"{name}{suffix}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())




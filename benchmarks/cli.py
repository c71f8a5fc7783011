"""The command line's own latency (issue 17), against `docker ps` in the same run.

One real `wsctl run` with two workspaces Online; then, interleaved call by call so
machine noise hits all of them, `docker ps` (the floor: a Go binary and one API
call), `wsctl get` and `wsctl describe NAME`, each a new process, timed from spawn
to exit on this process's clock. `wsctl` is the console script of the interpreter
running the benchmark (the one `make` installs), so the time includes Python's
start-up and every import a user pays for.

    python -m benchmarks.bench --only cli [--quick]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.fleet import Fleet
from benchmarks.gateway import _say
from controller.testing.harness import phase, wait_for

GOAL_RATIO = 10.0
"""Issue 17: `wsctl get` within 10x `docker ps`."""
GOAL_MS = 100.0
"""Issue 17: `wsctl get` under 100 ms wall, median."""
COMMAND_RESTART_GOAL = 1.25
"""Issue 17: `wsctl restart` (spawn -> the new container's start event) within 1.25x raw
docker-py's graceful stop, remove, create, token, start (bench.bench_recreate)."""
INSTANCE = "bench-cli"
NAMES = ("cla", "clb")


def wsctl_command() -> list[str]:
    script = Path(sys.executable).with_name("wsctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controller"]


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-300:]}")
    return seconds


def stats_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1000 for v in values)
    return {"n": len(ordered), "median": statistics.median(ordered), "min": ordered[0],
            "max": ordered[-1]}


def bench_cli(fleet: Fleet, quick: bool,
              progress: Callable[[str], None] = _say) -> dict[str, Any]:
    samples = 5 if quick else 20
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise RuntimeError("the docker command is not installed (scripts/bootstrap docker)")
    with fleet.controller(INSTANCE) as proc:
        proc.apply(*(fleet.workspace(n) for n in NAMES))
        def online() -> bool:
            return all(phase(proc.get(n)) == "Online" for n in NAMES)
        wait_for(online, 120, "the workspaces Online")
        where = ["--server", proc.server, "--data-dir", str(proc.data_dir)]
        commands = {
            "docker ps": [docker_cli, "ps"],
            "wsctl get": [*wsctl_command(), "get", *where],
            "wsctl describe": [*wsctl_command(), "describe", NAMES[0], *where],
        }
        for argv in commands.values():  # warm the page cache and the sockets
            timed(argv)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(samples):
            for name, argv in commands.items():
                times[name].append(timed(argv))
            if (i + 1) % 5 == 0:
                progress(f"  cli: {i + 1}/{samples} rounds")
    result: dict[str, Any] = {name: stats_ms(values) for name, values in times.items()}
    floor = result["docker ps"]["median"]
    for name in ("wsctl get", "wsctl describe"):
        result[name]["ratio"] = result[name]["median"] / floor
    result["goal_ratio"] = GOAL_RATIO
    result["goal_ms"] = GOAL_MS
    result["goal_met"] = (result["wsctl get"]["ratio"] <= GOAL_RATIO
                          and result["wsctl get"]["median"] < GOAL_MS)
    result["command"] = " ".join(wsctl_command())
    progress(f"cli: get median {result['wsctl get']['median']:.1f} ms "
             f"({result['wsctl get']['ratio']:.1f}x docker ps "
             f"{floor:.1f} ms), describe {result['wsctl describe']['median']:.1f} ms")
    return result


def cli_table(c: dict[str, Any]) -> str:
    from benchmarks.gateway import verdict

    get = c["wsctl get"]
    lines = [
        "## Command-line latency",
        "",
        f"Each a new process, spawn to exit, median of {get['n']} interleaved calls "
        f"against a running controller with two workspaces (`{c['command']}`).",
        "",
        "| command | median | min | max | vs docker ps | goal | |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("docker ps", "wsctl get", "wsctl describe"):
        s = c[name]
        ratio = f"{s['ratio']:.1f}x" if "ratio" in s else "1x (floor)"
        goal, met = "", ""
        if name == "wsctl get":
            goal = f"< {c['goal_ms']:g} ms and <= {c['goal_ratio']:g}x"
            met = verdict(c["goal_met"])
        lines.append(f"| `{name}` | {s['median']:.1f} ms | {s['min']:.1f} ms | "
                     f"{s['max']:.1f} ms | {ratio} | {goal} | {met} |")
    restart = c.get("restart")
    if restart:
        cmd, raw, api = restart["command"], restart["raw"], restart["controller"]
        ratio = restart["command_ratio_median"]
        lines += [
            "",
            f"`wsctl restart` (spawn -> Docker's start event of the new container) against "
            f"raw docker-py doing the same work in-process (graceful stop, remove, create "
            f"with the same settings, token through the archive API, start; first call -> "
            f"start event), median of {cmd['n']}; the API request alone for reference:",
            "",
            "| path | median | p95 | vs raw | goal | |",
            "|---|---|---|---|---|---|",
            f"| raw docker-py | {raw['median'] * 1000:.0f} ms | {raw['p95'] * 1000:.0f} ms "
            "| 1x (baseline) | | |",
            f"| `wsctl restart` | {cmd['median'] * 1000:.0f} ms | {cmd['p95'] * 1000:.0f} ms "
            f"| {ratio:.2f}x | <= {restart['command_goal']:g}x | "
            f"{verdict(ratio <= restart['command_goal'])} |",
            f"| API request | {api['median'] * 1000:.0f} ms | {api['p95'] * 1000:.0f} ms "
            f"| {restart['ratio_median']:.2f}x | | |",
        ]
    return "\n".join(lines) + "\n"

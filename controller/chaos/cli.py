"""`wsctl chaos run`: the command line of the chaos harness.

Exit codes: 0 every invariant held, 1 a violation (each named on the terminal
and in the report) or the run could not be set up, 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.chaos.kinds import FAULT_KINDS, OWNS_CONTROLLER, OWNS_ENGINE, OWNS_POSTGRES


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def _token_lifetime(value: str) -> int:
    if not value.isdigit() or not 10 <= int(value) <= 604800:
        raise argparse.ArgumentTypeError(f"{value!r}: a token lifetime is 10..604800 seconds")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return number


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number >= 0")
    return number


def _fault_types(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown fault type(s) {', '.join(unknown) or value!r}; "
                                         f"known: {', '.join(FAULT_KINDS)}")
    return kinds


def add_chaos_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                      common: argparse.ArgumentParser) -> None:
    chaos = sub.add_parser("chaos", help="break a fleet on purpose and check the invariants")
    chaos_sub = chaos.add_subparsers(dest="chaos_command", required=True, metavar="COMMAND")
    help_ = ("inject faults into a fleet under traffic; exit 1 naming every violated "
             "invariant, workspace and fault")
    p = chaos_sub.add_parser("run", help=help_, description=help_, parents=[common])
    p.set_defaults(func=cmd_chaos_run)
    p.add_argument("--workspaces", type=_positive_int, default=5, metavar="N")
    p.add_argument("--faults", type=int, default=30, metavar="K", help="faults to inject")
    p.add_argument("--seed", type=int, default=1, metavar="S",
                   help="same seed, same fault schedule (default 1)")
    p.add_argument("--rate", type=_positive_float, default=0.5, metavar="R",
                   help="mean faults per second (default 0.5)")
    p.add_argument("--settle", type=_positive_float, default=120.0, metavar="SECONDS",
                   help="time the fleet may take to converge after the last fault")
    p.add_argument("--fault-timeout", type=_positive_float, default=120.0, metavar="SECONDS",
                   help="time one fault may take to converge after it is lifted")
    p.add_argument("--report", type=Path, default=Path("chaos-report"), metavar="DIR",
                   help="where report.json and report.html go (default ./chaos-report)")
    p.add_argument("--self-contained", action="store_true",
                   help="start a private controller, network and fake LLM; remove them after")
    p.add_argument("--only", type=_fault_types, default=None, metavar="TYPE[,TYPE]",
                   help=f"fault types to draw from ({', '.join(FAULT_KINDS)})")
    p.add_argument("--docker-restart", action="store_true",
                   help="also restart the Docker engine (only where the harness owns it)")
    p.add_argument("--workload-interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="seconds between two message/send to one workspace")
    p.add_argument("--files-interval", type=_non_negative_float, default=3.0,
                   metavar="SECONDS",
                   help="seconds between two numbered files written into one workspace's "
                        "storage, all read back at the end (default 3; 0: no files)")
    p.add_argument("--token-expiration", type=_token_lifetime, default=None, metavar="SECONDS",
                   help="give every workspace spec.tokenExpirationSeconds (>= 10): tokens are "
                        "refreshed in place throughout the run")
    p.add_argument("--print-schedule", action="store_true",
                   help="print the fault schedule for these flags and exit")
    p.add_argument("--keep", action="store_true",
                   help="with --self-contained: keep the temporary data dir (logs, database)")
    external = p.add_argument_group("against a running controller (without --self-contained)")
    external.add_argument("--server", default=None, help="admin API (default: as the CLI)")
    external.add_argument("--network", default="wsctl", help="the controller's --network")
    external.add_argument("--instance", default="default", help="the controller's --instance")
    external.add_argument("--heartbeat-seconds", type=_positive_float, default=None,
                          help="the controller's --heartbeat-seconds (default 5; "
                               "1 with --self-contained)")
    external.add_argument("--registry", default=None, metavar="URL",
                          help="agent registry URL, for the stale-token probe")
    external.add_argument("--controller-log", type=Path, action="append", default=[],
                          metavar="FILE", help="controller log to scan for secrets (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true")


def _say_since(start: float) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(f"[{time.monotonic() - start:7.1f}s] {line}", file=sys.stderr, flush=True)
    return say


def _capabilities(args: argparse.Namespace) -> set[str]:
    found = {OWNS_CONTROLLER, OWNS_POSTGRES} if args.self_contained else set()
    if not args.self_contained and (args.data_dir / "postgres" / "postmaster.pid").exists():
        found.add(OWNS_POSTGRES)
    if args.docker_restart:
        found.add(OWNS_ENGINE)
    return found


def cmd_chaos_run(args: argparse.Namespace) -> int:
    from controller.chaos import faults as fault_types
    from controller.chaos.environment import Options
    from controller.chaos.runner import RunConfig, workspace_names
    from controller.chaos.schedule import make_schedule

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    config = RunConfig(workspaces=args.workspaces, faults=args.faults, seed=args.seed,
                       rate=args.rate, settle=args.settle, fault_timeout=args.fault_timeout,
                       only=args.only, workload_interval=args.workload_interval,
                       token_expiration=args.token_expiration,
                       files_interval=args.files_interval or None)
    if args.faults < 0:
        print("error: --faults must not be negative", file=sys.stderr)
        return 2
    try:
        kinds = fault_types.available(_capabilities(args), args.only)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_schedule:
        for plan in make_schedule(args.seed, args.faults, workspace_names(args.workspaces),
                                  kinds, args.rate):
            print(f"{plan.delay:7.3f}s  {plan.label}")
        return 0
    heartbeat = args.heartbeat_seconds or (1.0 if args.self_contained else 5.0)
    options = Options(self_contained=args.self_contained, server=args.server,
                      data_dir=args.data_dir, network=args.network, instance=args.instance,
                      registry=args.registry, heartbeat_seconds=heartbeat,
                      controller_logs=args.controller_log, docker_restart=args.docker_restart,
                      keep=args.keep)
    import asyncio

    return asyncio.run(_run(options, config, args.report))


async def _run(options: Any, config: Any, report_dir: Path) -> int:
    from controller.adapters.chaos_docker import ChaosEngineError
    from controller.chaos import report
    from controller.chaos.api import ApiError
    from controller.chaos.environment import SetupError, external, self_contained
    from controller.chaos.runner import run_chaos
    from controller.core import redact

    say = _say_since(time.monotonic())
    source = _source()  # at the start: the code this run loads, whatever lands meanwhile
    mode = "self-contained" if options.self_contained else "external"
    try:
        environment = self_contained if options.self_contained else external
        async with environment(options, say) as env:
            say(f"chaos run ({mode}): {config.workspaces} workspaces, {config.faults} faults, "
                f"seed {config.seed}, fault types "
                f"{', '.join(sorted({p.kind for p in _schedule(env, config)})) or 'none'}")
            redact.remember(*env.planted.values())
            result = await run_chaos(env, config, say)
            if not options.self_contained:
                for name in result.observer.names:
                    await env.api.delete(name)
    except (SetupError, ChaosEngineError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # The report passes through redaction of every secret the run planted or read
    # (the LLM key, the admin token, agent tokens): a violation's detail or a note
    # quoting an answer must not carry one into a file.
    data = redact.redact_json(report.to_json(
        result, {"mode": mode, "heartbeat_seconds": options.heartbeat_seconds,
                 "network": env.network, "namespace": env.namespace, **source}))
    _, html_path = report.write(report_dir, data)
    print(report.summary(data, html_path))
    return 0 if result.passed else 1


def _source() -> dict[str, Any]:
    """What the run ran: wsctl's version and, from a git checkout, its commit (a
    recorded report names the code it judged; `dirty`: uncommitted changes)."""
    import subprocess

    from controller import __version__

    here = Path(__file__).resolve().parent
    source: dict[str, Any] = {"wsctl": __version__, "commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=here, capture_output=True, text=True, timeout=10,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return source  # not a checkout (an installed wheel): the version says enough
    return {**source, "commit": commit, "dirty": bool(status.strip())}


def _schedule(env: Any, config: Any) -> list[Any]:
    from controller.chaos.runner import plan_for

    plans: list[Any] = plan_for(env, config)
    return plans

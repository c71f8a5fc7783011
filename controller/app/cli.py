"""The `wsctl` command line. Exit codes: 0 success, 1 error (one-line reason), 2 usage.

Importing this module (and building the parser) must stay cheap: a client command
such as `wsctl get` is one HTTP request, and Python's start-up is most of its time.
Whatever a command needs beyond the standard library (pydantic models, YAML,
asyncio, the server, Docker, PostgreSQL) is imported inside that command;
tests/unit/test_cli_imports.py fails when a client command pulls one in.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from controller import __version__
from controller.app.cli_completion import add_completion_command
from controller.app.cli_workspaces import add_commands
from controller.chaos.cli import add_chaos_command
from controller.core import settings as defaults
from controller.core.errors import WsctlError
from controller.core.settings import DEFAULT_IMAGE, default_cache_dir, default_data_dir

if TYPE_CHECKING:
    from controller.adapters.postgres import Store
    from controller.app.doctor import DoctorOptions
    from controller.core import manifests


class CliError(WsctlError):
    """An error for the user: printed as one line, exit code 1."""


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    documents = _load(args.filename)
    for doc in documents:
        ws = doc.workspace
        assert ws is not None
        provider = ws.spec.llm.provider if ws.spec.llm else "none"
        print(f"{doc.where}: ok Workspace {ws.key} image={ws.spec.image} provider={provider}")
    return 0


def _load(filenames: Sequence[str]) -> list[manifests.Document]:
    from controller.core import manifests

    paths = [Path(f) for f in filenames]
    stdin_text = sys.stdin.read() if any(f == "-" for f in filenames) else None
    try:
        return manifests.load(paths, stdin_text)
    except manifests.ManifestError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        raise CliError(f"{exc}; nothing was applied") from None


# ---------------------------------------------------------------- render


@contextlib.asynccontextmanager
async def _store(args: argparse.Namespace) -> AsyncIterator[Store]:
    """The store of --data-dir / $DATABASE_URL (its failures are `WsctlError`s: one line)."""
    from controller.adapters.database import open_store

    async with open_store(args.data_dir, os.environ.get("DATABASE_URL"), _progress) as store:
        yield store


def cmd_render(args: argparse.Namespace) -> int:
    import asyncio
    import json

    import yaml

    from controller.core import manifests
    from controller.core.containerspec import container_spec
    from controller.core.projection import MissingSecret, ProjectionError, project
    from controller.core.secretsource import env_name, resolve, secret_refs
    from controller.core.settings import PlatformSettings

    workspaces = manifests.workspaces(_load(args.filename))

    async def stored(refs: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        async with _store(args) as store:
            return await store.get_secrets(refs)

    secrets = asyncio.run(resolve(secret_refs(workspaces), os.environ, stored))
    settings = PlatformSettings()
    rendered: list[dict[str, object]] = []
    problems: list[str] = []
    for ws in workspaces:
        try:
            projection = project(ws, secrets, settings)
        except ProjectionError as exc:
            problems += [f"{exc.workspace}: {p} (set it with `wsctl secret set "
                         f"{p.ref.name} {p.ref.key}` or ${env_name(p.ref.name, p.ref.key)})"
                         for p in exc.problems if isinstance(p, MissingSecret)]
            continue
        spec = container_spec(ws, projection, settings, token_generation=1)
        rendered.append({"workspace": str(ws.key), "container": spec.shown()})
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        raise CliError(f"{len(problems)} unresolved secret reference(s)")
    if args.output == "json":
        print(json.dumps(rendered, indent=2))
    else:
        print(yaml.safe_dump_all(rendered, sort_keys=False), end="")
    return 0


# ---------------------------------------------------------------- secrets


def cmd_secret_set(args: argparse.Namespace) -> int:
    import asyncio

    if sys.stdin.isatty():
        print(f"value for {args.name}/{args.key} (input hidden is not supported; "
              "end with Enter):", file=sys.stderr)
        value = sys.stdin.readline().rstrip("\n")
    else:
        value = sys.stdin.read().rstrip("\n")
    if not value:
        raise CliError("empty secret value on standard input; nothing was stored")

    async def run() -> None:
        async with _store(args) as store:
            await store.set_secret(args.name, args.key, value)

    asyncio.run(run())
    print(f"secret {args.name}/{args.key} set")
    return 0


def cmd_secret_list(args: argparse.Namespace) -> int:
    import asyncio

    async def run() -> list[tuple[str, str, object]]:
        async with _store(args) as store:
            return [(n, k, t) for n, k, t in await store.list_secret_keys()]

    rows = asyncio.run(run())
    print(f"{'NAME':<24} {'KEY':<24} VALUE")
    for name, key, _ in rows:
        print(f"{name:<24} {key:<24} <set>")
    return 0


def cmd_secret_delete(args: argparse.Namespace) -> int:
    import asyncio

    async def run() -> bool:
        async with _store(args) as store:
            return await store.delete_secret(args.name, args.key)

    if not asyncio.run(run()):
        raise CliError(f"secret {args.name}/{args.key} not found")
    print(f"secret {args.name}/{args.key} deleted")
    return 0


# ---------------------------------------------------------------- images


def cmd_images_build(args: argparse.Namespace) -> int:
    from controller.adapters.docker_engine import connect
    from controller.adapters.images import build_agent_image

    result = build_agent_image(
        connect(), agent=args.agent, tag=args.tag, base_image=args.base,
        cache_dir=args.cache_dir,
        force=args.force, progress=_progress,
    )
    state = "built" if result.built else "up to date"
    print(f"{result.tag} {state} ({result.image_id[:19]}, base {result.base})")
    return 0


# ---------------------------------------------------------------- run


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def _non_negative(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return int(value)


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number >= 0")
    return number


def _dns_label(value: str) -> str:
    from controller.core.names import DNS1123_LABEL

    if not DNS1123_LABEL.match(value) or len(value) > 30:
        raise argparse.ArgumentTypeError(f"{value!r} is not a short DNS-1123 label")
    return value


def _doctor_options(args: argparse.Namespace) -> DoctorOptions:
    from controller.app.doctor import DoctorOptions

    registry_host, registry_port = args.registry_listen or (None, defaults.REGISTRY_PORT)
    return DoctorOptions(
        data_dir=args.data_dir, listen_host=args.listen[0], listen_port=args.listen[1],
        registry_host=registry_host, registry_port=registry_port,
        egress_port=args.egress_port, network=args.network,
        database_url=os.environ.get("DATABASE_URL"))


def cmd_doctor(args: argparse.Namespace) -> int:
    from controller.app.doctor import run_doctor

    return run_doctor(_doctor_options(args), lambda line: print(line, flush=True))


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from controller.app import logs
    from controller.app.doctor import preflight
    from controller.app.runtime import Controller
    from controller.app.wiring import RunOptions
    from controller.core.settings import Retention

    # The cheap doctor checks first: a stopped engine or a taken port is one line.
    checks = _doctor_options(args)
    problem = preflight(checks)
    if problem is not None:
        raise CliError(problem.line().removeprefix("FAIL "))

    logs.configure(args.verbose)
    options = RunOptions(
        data_dir=args.data_dir, cache_dir=args.cache_dir,
        listen_host=args.listen[0], listen_port=args.listen[1],
        registry_host=checks.registry_host, registry_port=checks.registry_port,
        egress_port=args.egress_port,
        database_url=checks.database_url, resync_seconds=args.resync_seconds,
        heartbeat_seconds=args.heartbeat_seconds, build_image=not args.no_build,
        demo=args.demo, network=args.network, instance=args.instance, workers=args.workers,
        docker_parallelism=args.docker_parallelism,
        crash_loop_threshold=args.crash_loop_threshold,
        retention=Retention(
            activity_days=args.retain_activity_days, activity_rows=args.retain_activity,
            events=args.retain_events, diagnostics=args.retain_diagnostics,
            history_days=args.retain_history_days),
        retention_interval_seconds=args.retention_interval,
    )

    if args.kubernetes:
        from controller.app.runtime_k8s import operator_options, run_kubernetes

        try:
            run_kubernetes(options, operator_options(vars(args)), _progress)
        except OSError as exc:
            raise CliError(f"cannot start: {exc}") from None
        return 0

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Controller(options, _progress).serve(stop)

    try:
        asyncio.run(main_loop())
    except OSError as exc:  # e.g. a port taken between the check and the bind
        raise CliError(f"cannot start: {exc}") from None
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from controller.core.crd import render

    print(render(), end="")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsctl", description="Reconciling controller for AI-agent workspaces on Docker.")
    parser.add_argument("--version", action="version", version=f"wsctl {__version__}")
    debug_help = "on an error, also print the traceback (or set WSCTL_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=debug_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=debug_help)
    common.add_argument("--data-dir", type=Path, default=default_data_dir(),
                        help="state folder (default: $WSCTL_DATA_DIR or ~/.local/share/wsctl)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str,
            parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub,
            ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("validate", cmd_validate, "check Workspace manifests without applying anything")
    p.add_argument("-f", "--filename", action="append", required=True,
                   help="file, folder or - for stdin (repeatable)")

    p = add("render", cmd_render, "print the container a reconcile would create")
    p.add_argument("-f", "--filename", action="append", required=True,
                   help="file, folder or - for stdin (repeatable)")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")

    secret = sub.add_parser("secret", help="manage secrets (values are never printed)")
    secret_sub = secret.add_subparsers(dest="secret_command", required=True, metavar="COMMAND")
    p = add("set", cmd_secret_set, "store a secret value read from standard input, encrypted "
            "with $WSCTL_SECRET_KEY or <data-dir>/secret.key", secret_sub)
    p.add_argument("name")
    p.add_argument("key")
    add("list", cmd_secret_list, "list secret names and keys (never values)", secret_sub)
    p = add("delete", cmd_secret_delete, "delete one secret key", secret_sub)
    p.add_argument("name")
    p.add_argument("key")

    def add_addresses(p: argparse.ArgumentParser) -> None:
        listen = (defaults.LISTEN_HOST, defaults.API_PORT)
        p.add_argument("--listen", type=_host_port, default=listen,
                       help=f"admin/CLI API address; with --kubernetes: /metrics, /healthz "
                            f"and /readyz, no token (default {listen[0]}:{listen[1]})")
        p.add_argument("--registry-listen", type=_host_port, default=None,
                       help="agent registry address (default: workspace network gateway:"
                            f"{defaults.REGISTRY_PORT})")
        p.add_argument("--egress-port", type=int, default=None,
                       help="egress proxy port, on the registry's address, for allowlist "
                            "workspaces (default: the registry port + 1)")
        p.add_argument("--network", default=defaults.NETWORK,
                       help=f"Docker network for workspaces (default {defaults.NETWORK})")

    p = add("run", cmd_run, "run the controller: reconcile loop, registry and API")
    add_addresses(p)
    p.add_argument("--resync-seconds", type=float, default=defaults.RESYNC_SECONDS,
                   help="full resync period; events drive reconciles in between "
                        f"(default {defaults.RESYNC_SECONDS:g})")
    p.add_argument("--workers", type=_positive, default=defaults.WORKERS,
                   help=f"workspaces reconciled at once (default {defaults.WORKERS})")
    p.add_argument("--docker-parallelism", type=_positive, default=defaults.DOCKER_PARALLELISM,
                   metavar="N", help="Docker API calls in flight at most (default "
                   f"{defaults.DOCKER_PARALLELISM}); a reconcile's bookkeeping does not hold "
                   "one of these")
    p.add_argument("--crash-loop-threshold", type=int, default=defaults.CRASH_LOOP_THRESHOLD,
                   metavar="N", help="container deaths within 5 minutes that make a workspace "
                   f"CrashLooping and back off (default {defaults.CRASH_LOOP_THRESHOLD})")
    p.add_argument("--instance", default=defaults.INSTANCE, type=_dns_label,
                   help="controller instance name; scopes the containers it owns")
    p.add_argument("--retain-activity-days", type=_non_negative_float, metavar="DAYS",
                   default=defaults.RETAIN_ACTIVITY_DAYS,
                   help="delete activity older than this (default "
                        f"{defaults.RETAIN_ACTIVITY_DAYS:g}; 0: no age limit)")
    p.add_argument("--retain-activity", type=_non_negative, metavar="N",
                   default=defaults.RETAIN_ACTIVITY_ROWS,
                   help="activity rows kept per workspace, the newest (default "
                        f"{defaults.RETAIN_ACTIVITY_ROWS}; 0: no limit)")
    p.add_argument("--retain-events", type=_non_negative, metavar="N",
                   default=defaults.RETAIN_EVENTS,
                   help=f"events kept per workspace (default {defaults.RETAIN_EVENTS}; "
                        "0: no limit)")
    p.add_argument("--retain-diagnostics", type=_non_negative, metavar="N",
                   default=defaults.RETAIN_DIAGNOSTICS,
                   help="diagnostics of dead containers kept per workspace (default "
                        f"{defaults.RETAIN_DIAGNOSTICS}; 0: no limit)")
    p.add_argument("--retain-history-days", type=_non_negative_float, metavar="DAYS",
                   default=defaults.RETAIN_HISTORY_DAYS,
                   help="delete events and diagnostics older than this (default "
                        f"{defaults.RETAIN_HISTORY_DAYS:g}; 0: no age limit)")
    p.add_argument("--retention-interval", type=_non_negative_float, metavar="SECONDS",
                   default=defaults.RETENTION_INTERVAL_SECONDS,
                   help="seconds between retention passes (default "
                        f"{defaults.RETENTION_INTERVAL_SECONDS:g}; 0: no retention)")
    p.add_argument("--heartbeat-seconds", type=int, default=defaults.HEARTBEAT_SECONDS)
    p.add_argument("--no-build", action="store_true",
                   help="do not build the agent image when it is missing")
    p.add_argument("--demo", action="store_true",
                   help="also serve the fake LLM and apply examples/demo.yaml")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--kubernetes", action="store_true",
                   help="run as a Kubernetes operator: Workspaces are custom resources")
    p.add_argument("--namespace", action="append", metavar="NS",
                   help="with --kubernetes: serve only this namespace (repeatable)")
    p.add_argument("--peering-priority", type=int, default=None, metavar="N",
                   help="with --kubernetes: of peered replicas only the highest acts")
    p.add_argument("--no-peering", action="store_true",
                   help="with --kubernetes: a single replica, no peering object needed")
    p.add_argument("--liveness", metavar="URL",
                   help="with --kubernetes: serve a liveness probe, e.g. http://0.0.0.0:8089/healthz")

    p = add("doctor", cmd_doctor, "check this machine for wsctl: engine, limits, image base, "
            "agent image, data dir and key files, ports, the registry from a container, "
            "PostgreSQL; one line each with the fix (exit 1 if any fails)")
    add_addresses(p)

    add_commands(sub, common)
    add_chaos_command(sub, common)
    add_completion_command(sub)

    p = add("crd", cmd_crd, "print the Workspace CustomResourceDefinition (crds/workspace.yaml)")

    images = sub.add_parser("images", help="manage the agent image")
    images_sub = images.add_subparsers(dest="images_command", required=True, metavar="COMMAND")
    p = add("build", cmd_images_build, "build the agent image locally", images_sub)
    p.add_argument("--agent", choices=("reference", "claude-code"), default="reference",
                   help="reference: the reference agent (wsctl/agent:latest); claude-code: "
                        "Claude Code behind an A2A front (wsctl/agent-claude-code:latest)")
    p.add_argument("--tag", default=None,
                   help=f"image tag (default: {DEFAULT_IMAGE}, or "
                        "wsctl/agent-claude-code:latest with --agent claude-code)")
    p.add_argument("--base", default=None,
                   help="base image (default: python:3.11-slim-bookworm if it can be had, "
                        "else a local debootstrap base; with --agent claude-code "
                        "wsctl/base-node:bookworm, made with debootstrap)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (wsctl completion)
        from controller.app.cli_completion import autocomplete

        autocomplete(parser)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("WSCTL_DEBUG", "") not in ("", "0")
    try:
        code: int = args.func(args)
    except WsctlError as exc:  # an expected failure: one line, no traceback
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

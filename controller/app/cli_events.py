"""`wsctl events [NAME] [-w]`: the controller's events across workspaces, newest
last, as `kubectl events` prints them; `-w` then prints each new event (or a repeat,
its count moved) as the controller records it, from `GET /api/v1/events?watch=true`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.app.cli_watch import stream
from controller.app.cli_workspaces import (
    CommandError,
    StreamedTable,
    _age,
    call,
    dump,
    table,
)

EVENTS_PATH = "/api/v1/events"
HEADER = ("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE")


def _query(args: argparse.Namespace) -> dict[str, str]:
    query = {"limit": str(args.limit)}
    if args.name:
        query["workspace"] = args.name
    return query


def _last_seen(event: dict[str, Any], now: datetime) -> str:
    seen = _age(event.get("lastAt"), now)
    if int(event.get("count", 1)) > 1:
        return f"{seen} (x{event['count']} over {_age(event.get('firstAt'), now)})"
    return seen


def event_row(event: dict[str, Any], now: datetime, namespaces: bool) -> list[str]:
    cells = [_last_seen(event, now), event["type"], event["reason"],
             f"workspace/{event['workspace']}", " ".join(str(event["message"]).split())]
    return [event["namespace"], *cells] if namespaces else cells


def _wanted(args: argparse.Namespace) -> Callable[[dict[str, Any]], bool]:
    types = set(args.types or ())
    return lambda event: not types or event.get("type") in types


def cmd_events(args: argparse.Namespace) -> int:
    if args.name and args.all_namespaces:
        raise CommandError("a NAME with -A: name a workspace, or list every namespace")
    if args.watch:
        return _watch(args)
    items = call(args, "GET", EVENTS_PATH, query=_query(args),
                 namespaced=not args.all_namespaces)["items"]
    items = list(filter(_wanted(args), items))
    if args.output in ("json", "yaml"):
        print(dump({"items": items}, args.output))
        return 0
    if not items:
        where = f"workspace/{args.name}" if args.name else (
            "any namespace" if args.all_namespaces else f"namespace {args.namespace}")
        print(f"No events found in {where}.", file=sys.stderr)
        return 0
    now = datetime.now(UTC)
    header = ["NAMESPACE", *HEADER] if args.all_namespaces else list(HEADER)
    print(table([event_row(e, now, args.all_namespaces) for e in items], header))
    return 0


def _watch(args: argparse.Namespace) -> int:
    """The newest events, then one line per new event or repeat, until interrupted or
    the controller ends the stream."""
    wanted = _wanted(args)
    printed = StreamedTable(["NAMESPACE", *HEADER] if args.all_namespaces else list(HEADER))
    for message in stream(args, EVENTS_PATH, _query(args)):
        event = message.get("object")
        if message.get("type") not in ("ADDED", "MODIFIED") or not event or not wanted(event):
            continue
        if args.output in ("json", "yaml"):
            print(json.dumps(event) if args.output == "json"
                  else "---\n" + dump(event, "yaml"), flush=True)
            continue
        print("\n".join(printed.lines(event_row(event, datetime.now(UTC),
                                               args.all_namespaces))), flush=True)
    raise CommandError("the controller ended the watch (stopped or restarted)")


def _types(value: str) -> list[str]:
    types = [t.strip() for t in value.split(",")]
    wrong = [t for t in types if t not in ("Normal", "Warning")]
    if wrong:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, wrong))}: the types are "
                                         "Normal and Warning")
    return types


def _limit(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 1 to 1000")
    return int(value)


def add_events_command(add: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    p = add("events", cmd_events, "the controller's events across workspaces, newest last "
            "(-w: then each new one as it is recorded)")
    p.add_argument("name", nargs="?", metavar="NAME", help="one workspace's events")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after the list, each new event or repeat as it happens (Ctrl-C "
                        "ends it)")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="every namespace (a NAMESPACE column first)")
    p.add_argument("--types", type=_types, metavar="TYPES",
                   help="only these types: Normal, Warning (comma-separated)")
    p.add_argument("--limit", type=_limit, default=100, metavar="N",
                   help="the newest N events (1-1000, default 100)")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

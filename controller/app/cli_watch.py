"""`wsctl wait` and `wsctl get -w`: the controller's watch stream, read as it comes.

Both read `GET /api/v1/workspaces?watch=true` (controller/api/watch.py), NDJSON:
`ADDED` / `MODIFIED` / `DELETED` with the workspace as GET shows it, `BOOKMARK`s
while nothing happens. `wait` returns as soon as the stream shows the condition
met, never by polling; a timeout names the last state seen.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from controller.app.cli_workspaces import (
    HEADER,
    CommandError,
    StreamedTable,
    _condition,
    client,
    row,
    shown,
)
from controller.app.client import ClientError

WATCH_PATH = "/api/v1/workspaces"


def stream(args: argparse.Namespace, path: str, query: dict[str, str]
           ) -> Iterator[dict[str, Any]]:
    """A watch's NDJSON events (BOOKMARKs included), until it ends: `path?watch=true`,
    in the namespace of -n unless -A."""
    query = {**query, "watch": "true"}
    if not getattr(args, "all_namespaces", False):
        query["namespace"] = args.namespace
    try:
        response = client(args).open("GET", path, query, timeout=None)
    except ClientError as exc:
        raise CommandError(str(exc)) from None
    with response:
        for line in response:
            if line.strip():
                yield json.loads(line)


def _events(args: argparse.Namespace, name: str | None) -> Iterator[dict[str, Any]]:
    """The workspaces watch's events (of one NAME, or all that -n/-A cover)."""
    return stream(args, WATCH_PATH, {} if name is None else {"name": name})


def _in_background(events: Iterator[dict[str, Any]]) -> queue.Queue[dict[str, Any] | None]:
    """The events, read by a daemon thread into a queue (None: the stream ended), so the
    caller can wait with a deadline."""
    q: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def pump() -> None:
        try:
            for event in events:
                q.put(event)
        except (OSError, ValueError, CommandError):
            pass
        q.put(None)

    threading.Thread(target=pump, daemon=True, name="watch").start()
    return q


# ------------------------------------------------------------------ wait


def duration(value: str) -> float:
    """`120`, `120s`, `2m`, `1h`: seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (value[:-1], value[-1]) if value[-1:] in units else (value, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration (e.g. 90s, 2m)")
    return seconds


def condition_check(text: str) -> Callable[[dict[str, Any] | None], bool]:
    """`condition=Ready[=True|False]`, `phase=Online`, `delete`: a test of a workspace's
    wire form (None: it does not exist)."""
    kind, _, rest = text.partition("=")
    if kind == "delete" and not rest:
        return lambda obj: obj is None
    if kind == "condition" and rest:
        name, _, wanted = rest.partition("=")
        want = wanted or "True"
        if want not in ("True", "False", "Unknown"):
            raise argparse.ArgumentTypeError(f"--for={text}: a condition is True, False "
                                             "or Unknown")
        return lambda obj: obj is not None and _condition(obj, name).get("status") == want
    if kind == "phase" and rest:
        return lambda obj: obj is not None and (obj.get("status") or {}).get(
            "phase", "Pending") == rest
    raise argparse.ArgumentTypeError(f"--for={text}: expected condition=NAME[=True|False], "
                                     "phase=PHASE or delete")


def _state(obj: dict[str, Any] | None) -> str:
    if obj is None:
        return "absent"
    status = obj.get("status") or {}
    conditions = ", ".join(f"{c['type']}={c['status']}"
                           + (f" ({c['reason']})" if c.get("reason") else "")
                           for c in status.get("conditions") or [])
    return f"phase {status.get('phase', 'Pending')}" + (f", {conditions}" if conditions else "")


def cmd_wait(args: argparse.Namespace) -> int:
    if bool(args.names) == args.all:
        raise CommandError("name one or more workspaces, or --all")
    test = condition_check(args.for_)
    deadline = time.monotonic() + args.timeout
    one = args.names[0] if len(args.names) == 1 else None
    events = _in_background(_events(args, one))
    seen: dict[str, dict[str, Any]] = {}
    listed = False  # the stream's first BOOKMARK ends the initial ADDED events

    while True:
        try:
            event = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            last = "; ".join(f"{n}: {_state(seen.get(n))}"
                             for n in (args.names or sorted(seen))) or "no workspaces"
            raise CommandError(f"timed out after {args.timeout:g}s waiting for "
                               f"--for={args.for_}; last: {last}") from None
        if event is None:
            raise CommandError("the controller ended the watch (stopped or restarted)")
        kind = event.get("type")
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if kind in ("ADDED", "MODIFIED") and name:
            seen[name] = obj
        elif kind == "DELETED" and name:
            seen.pop(name, None)
        elif kind == "BOOKMARK" and not listed:
            listed = True
            missing = [n for n in args.names if n not in seen]
            if missing and args.for_ != "delete":
                raise CommandError(f"workspace(s) {', '.join(missing)} not found in "
                                   f"namespace {args.namespace}")
        if not listed:
            continue
        targets = args.names or sorted(seen)
        if targets and all(test(seen.get(n)) for n in targets):
            return _report(targets, args.for_)
        if not targets and args.for_ == "delete":
            return 0


def checked_condition(text: str) -> str:
    condition_check(text)  # raises ArgumentTypeError naming what is wrong
    return text


def _report(names: list[str], what: str) -> int:
    for name in names:
        print(f"workspace/{name} {'deleted' if what == 'delete' else 'condition met'}")
    return 0


# ------------------------------------------------------------------ get -w


def watch_get(args: argparse.Namespace) -> int:
    """`wsctl get [NAME] -w`: the table, then one row per change (DELETED: its phase
    shown as Deleted; with -o, each changed object in that form), until interrupted or
    the controller ends the watch."""
    printed = StreamedTable(list(HEADER))
    for event in _events(args, args.name):
        kind = event.get("type")
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            continue
        obj = dict(event.get("object") or {})
        if args.selector and not args.selector(obj):
            continue
        if kind == "DELETED":
            obj["status"] = {**(obj.get("status") or {}), "phase": "Deleted"}
        if args.output != "table":  # each change in the -o form, as kubectl's -w
            sys.stdout.write(shown(obj, args.output))
            sys.stdout.flush()
            continue
        print("\n".join(printed.lines(row(obj, datetime.now(UTC)))), flush=True)
    raise CommandError("the controller ended the watch (stopped or restarted)")


def add_watch_commands(add: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    p = add("wait", cmd_wait, "wait until workspaces meet a condition (exit 0), or the "
            "timeout passes (exit 1, naming the last state seen)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="every workspace of the namespace")
    p.add_argument("--for", dest="for_", required=True, metavar="CONDITION",
                   type=checked_condition,
                   help="condition=Ready (or condition=Degraded=False), phase=Online, or "
                        "delete")
    p.add_argument("--timeout", type=duration, default=120.0,
                   help="e.g. 90s, 2m (default 120s)")


# ------------------------------------------------------------------ explain


def cmd_explain(args: argparse.Namespace) -> int:
    """`wsctl explain spec.llm`: the field's type and documentation, and its fields,
    from the model (the same text as the CRD's descriptions)."""
    from controller.core.crd import openapi_schema  # the model: only here

    node: dict[str, Any] = openapi_schema()
    path = [p for p in args.field.removeprefix("workspace.").split(".") if p]
    walked: list[str] = []
    for part in path:
        children = fields_of(node)
        if part not in children:
            known = ", ".join(children) or "none (not an object)"
            where = ".".join(walked) or "a Workspace"
            raise CommandError(f"field {part!r} does not exist in {where}; its fields: "
                               f"{known}")
        node = children[part]
        walked.append(part)
    print(f"FIELD:  {'.'.join(walked) or 'Workspace'} <{field_type(node)}>")
    if node.get("description"):
        print("\nDESCRIPTION:\n    " + "\n    ".join(_wrap(str(node["description"]))))
    children = fields_of(node)
    if children:
        required = set(_object(node).get("required") or [])
        print("\nFIELDS:")
        for name, child in children.items():
            flag = " -required-" if name in required else ""
            print(f"  {name}\t<{field_type(child)}>{flag}")
            text = str(child.get("description") or "").split(". ")[0].strip()
            if text:
                print("    " + "\n    ".join(_wrap(text.rstrip(".") + ".")))
    return 0


def _object(node: dict[str, Any]) -> dict[str, Any]:
    """The schema of a field's elements when it is an array (of arrays...), else its own."""
    while node.get("type") == "array":
        node = node.get("items") or {}
    return node


def fields_of(node: dict[str, Any]) -> dict[str, Any]:
    """The fields below a schema node (an array's: its elements'), by name."""
    return dict(_object(node).get("properties") or {})


def field_type(node: dict[str, Any]) -> str:
    kind = str(node.get("type") or "object")
    if kind == "array":
        return f"[]{field_type(node.get('items') or {})}"
    if node.get("enum"):
        return f"{kind}: {' | '.join(str(e) for e in node['enum'])}"
    return kind


def _wrap(text: str, width: int = 76) -> list[str]:
    import textwrap

    return textwrap.wrap(" ".join(text.split()), width) or [""]


def add_explain_command(add: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    p = add("explain", cmd_explain, "the documentation of a Workspace field, e.g. "
            "`wsctl explain spec.llm` (the same text as the CRD's)")
    p.add_argument("field", nargs="?", default="", metavar="FIELD")

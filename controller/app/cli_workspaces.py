"""CLI commands that talk to a running controller: apply, get, describe, restart,
delete, send, logs, activity. Output formats: table (default), json, yaml."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.app.client import Client, ClientError
from controller.core.a2a import message_send
from controller.core.errors import WsctlError


class CommandError(WsctlError):
    """An error for the user: printed as one line, exit code 1."""


def client(args: argparse.Namespace) -> Client:
    try:
        return Client.from_environment(args.server, args.data_dir)
    except ClientError as exc:
        raise CommandError(str(exc)) from None


def call(args: argparse.Namespace, method: str, path: str, body: Any = None, *,
         raw: bool = False, headers: dict[str, str] | None = None,
         query: dict[str, str] | None = None, namespaced: bool = True) -> Any:
    """One request; in -n's namespace unless `namespaced` is False (-A: every one)."""
    where = {"namespace": args.namespace} if namespaced else {}
    try:
        return client(args).request(method, path, body, {**where, **(query or {})},
                                    headers=headers, raw=raw)
    except ClientError as exc:
        raise CommandError(str(exc)) from None


def _age(created: str | None, now: datetime) -> str:
    if not created:
        return "-"
    seconds = int((now - datetime.fromisoformat(created)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


HEADER = ("NAME", "PHASE", "READY", "REASON", "RESTARTS", "EGRESS", "AGE")
"""The columns of `row`, as `wsctl get` prints them."""


def row(obj: dict[str, Any], now: datetime) -> list[str]:
    status = obj.get("status") or {}
    ready = _condition(obj, "Ready")
    degraded = _condition(obj, "Degraded")
    reason = degraded.get("reason", "") if degraded.get("status") == "True" else ""
    if not reason and ready.get("status") != "True":
        reason = ready.get("reason", "")
    return [obj["metadata"]["name"], status.get("phase", "Pending"),
            ready.get("status", "Unknown"), reason or "-", str(status.get("restartCount", 0)),
            egress_shown((obj.get("spec") or {}).get("egress")),
            _age(obj["metadata"].get("creationTimestamp"), now)]


def egress_shown(egress: dict[str, Any] | None) -> str:
    """none | allowlist(N) | OPEN (upper case: the opt-in with a route off the host)."""
    mode = (egress or {}).get("mode", "none")
    if mode == "allowlist":
        return f"allowlist({len((egress or {}).get('allow') or [])})"
    return "OPEN" if mode == "open" else str(mode)


def _aligned(cells: list[str], widths: list[int]) -> str:
    return "   ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(_aligned(r, widths) for r in [header, *rows])


def shown(value: Any, output: Any) -> str:
    """One object or list as `get -o` prints it, a final newline included: json, yaml,
    name (`workspace/NAME`, one object), or a jsonpath template (as written: kubectl
    adds no newline)."""
    if output == "name":
        return f"workspace/{value['metadata']['name']}\n"
    if output in ("json", "yaml"):
        return dump(value, output) + "\n"
    return str(output(value))


def output_format(value: str) -> Any:
    """`-o` of get: table, json, yaml, name or jsonpath=TEMPLATE (compiled here, so a bad
    template is a usage error naming the problem)."""
    if value in ("table", "json", "yaml", "name"):
        return value
    kind, sep, template = value.partition("=")
    if kind != "jsonpath" or not sep:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of table, json, yaml, name, "
                                         "jsonpath=TEMPLATE")
    from controller.app.cli_jsonpath import Template, TemplateError

    try:
        return Template(template)
    except TemplateError as exc:
        raise argparse.ArgumentTypeError(f"jsonpath: {exc}") from None


class StreamedTable:
    """A table printed a row at a time (a watch): the header with the first row, each
    column as wide as the widest cell so far (a stream cannot look ahead)."""

    def __init__(self, header: list[str]) -> None:
        self.header = header
        self.widths = [len(h) for h in header]
        self.started = False

    def lines(self, cells: list[str]) -> list[str]:
        self.widths = [max(w, len(c)) for w, c in zip(self.widths, cells, strict=True)]
        rows = [cells] if self.started else [self.header, cells]
        self.started = True
        return [_aligned(r, self.widths) for r in rows]


def dump(value: Any, output: str) -> str:
    if output == "json":
        return json.dumps(value, indent=2)
    import yaml  # only for -o yaml: a table or JSON does without it

    return yaml.safe_dump(value, sort_keys=False).rstrip()


# ------------------------------------------------------------------ commands


def workspaces_of(filenames: list[str], nothing_was: str) -> list[Any]:
    """The Workspaces of `-f` files, folders or - (stdin); every problem printed, then one
    error saying `nothing was <nothing_was>`."""
    from controller.core import manifests  # the models: only where a manifest is parsed

    paths = [Path(f) for f in filenames]
    stdin_text = sys.stdin.read() if any(f == "-" for f in filenames) else None
    try:
        documents = manifests.load(paths, stdin_text)
    except manifests.ManifestError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        raise CommandError(f"{exc}; nothing was {nothing_was}") from None
    return list(manifests.workspaces(documents))


def _items(filenames: list[str], nothing_was: str) -> list[dict[str, Any]]:
    return [ws.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})
            for ws in workspaces_of(filenames, nothing_was)]


def cmd_diff(args: argparse.Namespace) -> int:
    """What `apply -f` would change, per workspace, and what the container would go
    through; exit 1 when anything would change (like `kubectl diff`)."""
    answer = call(args, "POST", "/api/v1/workspaces", {"items": _items(args.filename,
                                                                      "compared")},
                  query={"dryRun": "true"})
    differs = False
    for r in answer["results"]:
        name = r["workspace"].split("/", 1)[1]
        container = {"create": "a container is created", "keep": "the container stays",
                     "recreate": "the container is recreated",
                     "cannot": "no container can be made"}.get(r["container"], r["container"])
        why = f" ({'; '.join(r['why'])})" if r.get("why") else ""
        print(f"workspace/{name} {r['result']}: {container}{why}")
        for line in r.get("changes") or []:
            print(f"  {line}")
        differs = differs or r["result"] != "unchanged" or r["container"] != "keep"
    return 1 if differs else 0


def cmd_apply(args: argparse.Namespace) -> int:
    items = _items(args.filename, "applied")
    if args.dry_run == "server":
        answer = call(args, "POST", "/api/v1/workspaces", {"items": items},
                      query={"dryRun": "true"})
        for r in answer["results"]:
            print(f"workspace/{r['workspace'].split('/', 1)[1]} {r['result']} "
                  "(server dry run)")
        return 0
    answer = call(args, "POST", "/api/v1/workspaces", {"items": items})
    for result in answer["results"]:
        print(f"workspace/{result['workspace'].split('/', 1)[1]} {result['result']}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    if args.watch:
        from controller.app.cli_watch import watch_get

        return watch_get(args)
    now = datetime.now(UTC)
    if args.name:
        if args.all_namespaces or args.selector:
            raise CommandError("a NAME with -A or -l: name a workspace, or select them")
        objects = [call(args, "GET", f"/api/v1/workspaces/{args.name}")]
    else:
        objects = call(args, "GET", "/api/v1/workspaces",
                       namespaced=not args.all_namespaces)["items"]
    if args.selector:
        objects = [o for o in objects if args.selector(o)]
    if args.sort_by:
        objects.sort(key=args.sort_by)
    if args.output != "table":
        if args.output == "name":
            sys.stdout.write("".join(shown(o, "name") for o in objects))
        else:
            sys.stdout.write(shown(objects[0] if args.name else {"items": objects},
                                   args.output))
        return 0
    if not objects:
        print("No workspaces found.", file=sys.stderr)
        return 0
    header = list(HEADER)
    rows = [row(o, now) for o in objects]
    if args.all_namespaces:
        header = ["NAMESPACE", *header]
        rows = [[o["metadata"].get("namespace", "default"), *r]
                for o, r in zip(objects, rows, strict=True)]
    print(table(rows, header))
    return 0


def selector(text: str) -> Any:
    """`-l key=value,key!=value,key,!key` (labels from metadata.labels), as kubectl's
    equality-based selectors: a test of a workspace's wire form."""
    tests = []
    for term in (t.strip() for t in text.split(",")):
        key, op, value = term, "exists", ""
        for sep, name in (("!=", "ne"), ("==", "eq"), ("=", "eq")):
            if sep in term:
                key, value = (p.strip() for p in term.split(sep, 1))
                op = name
                break
        else:
            if term.startswith("!"):
                key, op = term[1:], "absent"
        if not key or any(c in key + value for c in " =!"):
            raise argparse.ArgumentTypeError(f"-l {text!r}: {term!r} is not key=value, "
                                             "key!=value, key or !key")
        tests.append((key, op, value))

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(
            (op == "eq" and labels.get(k) == v) or (op == "ne" and labels.get(k) != v)
            or (op == "exists" and k in labels) or (op == "absent" and k not in labels)
            for k, op, v in tests)
    return matches


def sort_key(text: str) -> Any:
    """`--sort-by .metadata.name` (or `{.status.restartCount}`): a field path, as
    kubectl's; numbers sort as numbers, absent fields first."""
    path = text.strip().removeprefix("{").removesuffix("}")
    if not path.startswith(".") or not all(path[1:].split(".")):
        raise argparse.ArgumentTypeError(f"--sort-by {text!r}: expected a field path such as "
                                         ".metadata.name or .status.restartCount")
    parts = path[1:].split(".")

    def key(obj: dict[str, Any]) -> tuple[int, Any]:
        value: Any = obj
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return (0, "")
        return (1, value) if isinstance(value, int | float) else (2, str(value))
    return key


def cmd_describe(args: argparse.Namespace) -> int:
    info = call(args, "GET", f"/api/v1/workspaces/{args.name}/describe")
    if args.output in ("json", "yaml"):
        print(dump(info, args.output))
        return 0
    ws = info["workspace"]
    status = ws.get("status") or {}
    spec = ws.get("spec") or {}
    llm = spec.get("llm") or {}
    api_key = llm.get("apiKey")
    key_shown = (f"secretRef {api_key['secretRef']['name']}/{api_key['secretRef']['key']}"
                 if api_key else "<unset>")
    lines = [
        f"Name:          {ws['metadata']['name']}",
        f"Namespace:     {ws['metadata']['namespace']}",
        f"Generation:    {ws['metadata'].get('generation')}"
        f" (observed {status.get('observedGeneration', '-')})",
        f"Image:         {spec.get('image')}",
        f"Provider:      {llm.get('provider', '-')}  apiKey: {key_shown}",
        f"Egress:        {egress_shown(spec.get('egress'))}"
        + "".join(f"\n  allow:       {entry}"
                  for entry in (spec.get("egress") or {}).get("allow") or [])
        + ("  (a route off this host: reaches what the host reaches)"
           if (spec.get("egress") or {}).get("mode") == "open" else ""),
        f"Phase:         {status.get('phase', 'Pending')}",
        f"Container:     {(status.get('containerID') or '-')[:12]}",
        f"Config hash:   {status.get('configHash', '-')}",
        f"Token gen:     {status.get('tokenGeneration', 0)}",
        f"Restarts:      {status.get('restartCount', 0)}"
        + (f" (last: {status['lastRecreateReason']})" if status.get("lastRecreateReason")
           else ""),
        "Conditions:",
    ]
    conditions = status.get("conditions") or []
    lines += ["  TYPE         STATUS   REASON                   SINCE                      MESSAGE"]
    for c in conditions:
        lines.append(f"  {c['type']:<12} {c['status']:<8} {c['reason']:<24} "
                     f"{c['lastTransitionTime']:<26} {c.get('message', '')}")
    failure = status.get("lastRegisterFailure")
    registration = info.get("registration") or {}
    marker = registration.get("register_failure")
    lines.append("Last register failure:")
    shown = marker or failure
    if shown:
        lines.append(f"  class: {shown.get('class') or shown.get('class_')}  at: {shown['at']}  "
                     f"message: {shown.get('message', '')}")
    else:
        lines.append("  <none>")
    if registration:
        lines.append(f"Registration:  url={registration.get('url')} "
                     f"generation={registration.get('token_generation')} "
                     f"heartbeat={registration.get('heartbeat_status')} "
                     f"at={registration.get('last_heartbeat_at')}")
    lines.append("Events:")
    events = info.get("events") or []
    lines += [f"  {e['at']}  {e['type']:<8} {e['reason']:<20} x{e.get('count', 1)}  "
              f"{e['message']}" for e in events] or ["  <none>"]
    storage = info.get("storage") or {}
    if storage:
        lines.append(f"Storage:       {storage.get('volume') or '<not created yet>'} at "
                     f"{storage.get('mountPath')} ({storage.get('reclaimPolicy')}; "
                     f"{_size(storage.get('sizeBytes'))} on disk)")
    diag = info.get("diagnostics")
    lines.append("Last diagnostics:")
    if diag:
        env = ", ".join(f"{k}={v}" for k, v in sorted((diag.get("env_names") or {}).items()))
        lines += [f"  container: {(diag.get('container_id') or '-')[:12]}  reason: "
                  f"{diag['reason']}  exit code: {diag.get('exit_code')}  "
                  f"oom: {diag.get('oom_killed')}  at: {diag['captured_at']}",
                  f"  env: {env}", "  last log lines:"]
        lines += [f"    {line}" for line in (diag.get("log_tail") or "").splitlines()[-15:]]
    else:
        lines.append("  <none>")
    print("\n".join(lines))
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    answer = call(args, "POST", f"/api/v1/workspaces/{args.name}/restart")
    print(f"workspace/{args.name} restarted (restartedAt {answer['restartedAt']})")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    answer = call(args, "POST", f"/api/v1/workspaces/{args.name}/suspend")
    print(f"workspace/{args.name} {answer['result']}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    print(f"workspace/{args.name} waking (up to its startupTimeoutSeconds)", file=sys.stderr)
    answer = call(args, "POST", f"/api/v1/workspaces/{args.name}/resume")
    print(f"workspace/{args.name} {answer['result']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    if bool(args.name) == bool(args.filename):
        raise CommandError("name a workspace, or give its manifests with -f")
    targets = [(args.namespace, args.name)]
    if args.filename:
        targets = [(ws.key.namespace, ws.key.name)
                   for ws in workspaces_of(args.filename, "deleted")]
    for namespace, name in targets:
        try:
            client(args).request("DELETE", f"/api/v1/workspaces/{name}", None,
                                 {"namespace": namespace,
                                  **({"purge": "true"} if args.purge else {})})
        except ClientError as exc:
            raise CommandError(f"workspace/{name}: {exc}") from None
        print(f"workspace/{name} deleting" + (" with its storage" if args.purge else ""))
    return 0


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}B"


def cmd_volumes(args: argparse.Namespace) -> int:
    items = call(args, "GET", "/api/v1/volumes")["items"]
    if args.output in ("json", "yaml"):
        print(dump({"items": items}, args.output))
        return 0
    now = datetime.now(UTC)
    rows = [[v["name"], v["workspace"].replace(".", "/", 1), v["status"],
             _size(v.get("sizeBytes")), _age(v.get("createdAt"), now)] for v in items]
    print(table(rows, ["VOLUME", "WORKSPACE", "STATUS", "SIZE", "AGE"]))
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    query = {"days": str(args.days)}
    if args.name:
        query["workspace"] = f"{args.namespace}.{args.name}"
    items = call(args, "GET", "/api/v1/usage", query=query)["items"]
    if args.output in ("json", "yaml"):
        print(dump({"items": items}, args.output))
        return 0
    rows = [[u["workspace"].replace(".", "/", 1), u["day"], u["provider"], str(u["requests"]),
             str(u["errors"]), str(u["inputTokens"]), str(u["outputTokens"]),
             str(u["cacheCreationTokens"] + u["cacheReadTokens"])] for u in items]
    print(table(rows, ["WORKSPACE", "DAY (UTC)", "PROVIDER", "REQUESTS", "ERRORS",
                       "TOKENS IN", "TOKENS OUT", "CACHE"]))
    return 0


def reply_text(answer: dict[str, Any]) -> str:
    result = answer.get("result") or {}
    parts = result.get("parts") or ((result.get("status") or {}).get("message") or {}).get("parts")
    return "".join(p.get("text", "") for p in parts or [] if isinstance(p, dict))


def cmd_send(args: argparse.Namespace) -> int:
    answer = call(args, "POST", f"/api/v1/workspaces/{args.name}/a2a", message_send(args.text))
    if args.output in ("json", "yaml"):
        print(dump(answer, args.output))
        return 0
    if "error" in answer:
        raise CommandError(f"agent error: {answer['error'].get('message', answer['error'])}")
    print(reply_text(answer))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.follow:
        from controller.app.cli_exec import follow_logs

        return follow_logs(args)
    print(call(args, "GET", f"/api/v1/workspaces/{args.name}/logs", raw=True,
               query={"tail": str(args.tail)}), end="")
    return 0


def cmd_activity(args: argparse.Namespace) -> int:
    items = call(args, "GET", f"/api/v1/workspaces/{args.name}/activity")["items"]
    if args.output in ("json", "yaml"):
        print(dump({"items": items}, args.output))
        return 0
    rows = [[str(i["id"]), i["at"], i["source"], i["source_kind"], str(i.get("source_id") or "-"),
             i.get("method") or "-", i.get("status") or "-"] for i in items]
    print(table(rows, ["ID", "AT", "SOURCE", "KIND", "SOURCE_ID", "METHOD", "STATUS"]))
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    client_opts = argparse.ArgumentParser(add_help=False, parents=[common])
    client_opts.add_argument("--server", default=None,
                             help="controller API (default: $WSCTL_SERVER or 127.0.0.1:8080)")
    client_opts.add_argument("-n", "--namespace", default="default")

    def add(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_,
                                                    parents=[client_opts])
        p.set_defaults(func=func)
        return p

    p = add("apply", cmd_apply, "create or update workspaces from manifests")
    p.add_argument("-f", "--filename", action="append", required=True)
    p.add_argument("--dry-run", choices=("none", "server"), default="none",
                   help="server: the controller validates and says what it would do, "
                        "changing nothing")
    p = add("diff", cmd_diff, "what apply -f would change, per workspace, and whether the "
            "container would be recreated and why (exit 1 when anything would change)")
    p.add_argument("-f", "--filename", action="append", required=True)
    p = add("get", cmd_get, "list workspaces, or show one")
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", type=output_format, default="table",
                   metavar="FORMAT", help="table, json, yaml, name, or jsonpath=TEMPLATE "
                   "(kubectl's: '{.items[*].metadata.name}', "
                   "'{range .items[*]}{.metadata.name}{\"\\t\"}{.status.phase}{\"\\n\"}{end}')")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="every namespace (a NAMESPACE column first)")
    p.add_argument("-l", "--selector", type=selector, metavar="SELECTOR",
                   help="labels: key=value, key!=value, key, !key; comma: and")
    p.add_argument("--sort-by", type=sort_key, metavar="FIELD",
                   help="a field path, e.g. .metadata.name or .status.restartCount")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after the table, one row per change, as it happens (Ctrl-C ends it)")
    p = add("describe", cmd_describe, "conditions, register failure, events, diagnostics")
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    p = add("restart", cmd_restart, "recreate a workspace's container (bumps restartedAt)")
    p.add_argument("name")
    p = add("suspend", cmd_suspend, "stop a workspace's container until it is needed "
            "(files stay; a message, an exec or resume wakes it)")
    p.add_argument("name")
    p = add("resume", cmd_resume, "wake a suspended workspace and wait until it is Online")
    p.add_argument("name")
    p = add("delete", cmd_delete, "delete a workspace, its container and tokens "
            "(its storage volume too with --purge or spec.storage.reclaimPolicy Delete)")
    p.add_argument("name", nargs="?")
    p.add_argument("-f", "--filename", action="append",
                   help="delete the workspaces of these manifests (file, folder or -)")
    p.add_argument("--purge", action="store_true",
                   help="also remove the workspace's storage volume (its files are lost)")
    p = add("volumes", cmd_volumes, "workspace storage volumes: attached, or retained "
            "after their workspace was deleted")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p = add("usage", cmd_usage, "LLM use through the gateway: requests, errors and tokens "
            "per workspace and UTC day")
    p.add_argument("name", nargs="?", help="one workspace (default: all)")
    p.add_argument("--days", type=int, default=7, help="the last N UTC days (default 7)")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p = add("send", cmd_send, "send a message to a workspace's agent (A2A message/send)")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    p = add("logs", cmd_logs, "print the workspace container's logs")
    p.add_argument("name")
    p.add_argument("--tail", type=int, default=200)
    p.add_argument("-f", "--follow", action="store_true",
                   help="print lines as they are written, until the container stops (Ctrl-C "
                        "ends it)")
    p = add("activity", cmd_activity, "the workspace's activity log")
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    from controller.app.cli_events import add_events_command  # it imports this module
    from controller.app.cli_exec import add_stream_commands  # it imports this module too
    from controller.app.cli_watch import (  # it imports this module too
        add_explain_command,
        add_watch_commands,
    )

    add_stream_commands(add)
    add_watch_commands(add)
    add_explain_command(add)
    add_events_command(add)

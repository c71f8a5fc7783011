"""Shell completion for bash and zsh: `wsctl completion bash|zsh` prints the shell
code, and the shell then runs `wsctl` with `_ARGCOMPLETE` set for every Tab
(argcomplete's protocol). Workspace names come from the running controller.

Nothing here costs a normal command anything: `main()` calls `autocomplete` only
when `_ARGCOMPLETE` is set, and argcomplete is imported only then (or by
`wsctl completion`). A completion must never break the shell: when no controller
answers within `TIMEOUT`, or anything else goes wrong, it completes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

TIMEOUT = 2.0
"""Seconds a Tab waits for the controller's list of workspaces."""

SHELLS = ("bash", "zsh")

HELP = """\
bash (in ~/.bashrc, or for this shell only):
  source <(wsctl completion bash)
zsh (in ~/.zshrc, after `autoload -U compinit && compinit`):
  source <(wsctl completion zsh)

Commands, options and choices complete as they are typed; a workspace NAME
completes from the running controller (found as the command would find it:
--server, $WSCTL_SERVER, the data dir's server.json), in -n's namespace. When
no controller answers within 2 s nothing is completed."""


def cmd_completion(args: argparse.Namespace) -> int:
    # only here and when completing: no other command pays for argcomplete
    from argcomplete.shell_integration import shellcode

    # use_defaults=False: with no match, bash must not fall back to the current
    # folder's file names (a NAME that is a file name would be a wrong answer).
    print(shellcode(["wsctl"], use_defaults=False, shell=args.shell), end="")
    return 0


def add_completion_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "print the shell code that completes wsctl commands and workspace names"
    p = sub.add_parser("completion", help=help_, description=help_, epilog=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=cmd_completion)


# ------------------------------------------------------------------ completers


def workspace_names(prefix: str, parsed_args: argparse.Namespace,
                    **_: Any) -> dict[str, str]:
    """The controller's workspaces in -n's namespace whose name starts with `prefix`,
    each with its phase (zsh shows it beside the name); names already on the line
    (`wsctl wait a b`) are left out. Nothing when no controller answers."""
    from controller.app.client import Client

    try:
        client = dataclasses.replace(
            Client.from_environment(getattr(parsed_args, "server", None),
                                    parsed_args.data_dir), timeout=TIMEOUT)
        items = client.request("GET", "/api/v1/workspaces", None,
                               {"namespace": getattr(parsed_args, "namespace", "default")}
                               )["items"]
        given = set(getattr(parsed_args, "names", None) or ())
        found = {str(o["metadata"]["name"]): str((o.get("status") or {}).get("phase")
                                                 or "Pending") for o in items}
    except Exception:  # any failure at all: a Tab completes nothing, never a traceback
        return {}
    return {name: phase for name, phase in sorted(found.items())
            if name.startswith(prefix) and name not in given}


def field_paths(prefix: str, **_: Any) -> dict[str, str]:
    """`wsctl explain spec.l<Tab>`: the Workspace fields one level below what is
    typed, as full paths, each with its type (from the model, as explain shows it)."""
    from controller.app.cli_watch import field_type, fields_of
    from controller.core.crd import openapi_schema  # the model: only for explain

    *parents, last = prefix.split(".")
    node: dict[str, Any] | None = openapi_schema()
    for part in parents:
        node = fields_of(node or {}).get(part)
    head = "".join(f"{part}." for part in parents)
    return {head + name: field_type(child) for name, child in fields_of(node or {}).items()
            if name.startswith(last)}


NAME_DESTS = ("name", "names")
"""In a client command (one with --server), a positional of these is a workspace's
name: every such command gets `workspace_names` without listing it here."""


def attach_completers(parser: argparse.ArgumentParser) -> None:
    """Give every workspace NAME positional and explain's FIELD their completers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                attach_completers(child)
                if name == "explain":
                    _complete(child, "field", field_paths)
    if any("--server" in action.option_strings for action in parser._actions):
        for dest in NAME_DESTS:
            _complete(parser, dest, workspace_names)


def _complete(parser: argparse.ArgumentParser, dest: str, completer: Any) -> None:
    for action in parser._actions:
        if not action.option_strings and action.dest == dest:
            action.completer = completer  # type: ignore[attr-defined]  # argcomplete's hook


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (`_ARGCOMPLETE` is set) and exit."""
    import argcomplete

    attach_completers(parser)
    # Options only once a `-` is typed: `wsctl describe <Tab>` lists names, not flags.
    argcomplete.autocomplete(parser, always_complete_options=False)  # exits

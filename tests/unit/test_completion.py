"""`wsctl completion bash|zsh` and the completers behind it (issue 17): the shell code
registers wsctl's completion function, a workspace NAME positional completes from
the controller, and a controller that is down or silent completes nothing, quickly,
without a word on the terminal. tests/e2e/test_completion.py runs it in bash and
zsh against a real `wsctl run`."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from controller.app.cli import build_parser, main
from controller.app.cli_completion import (
    attach_completers,
    field_paths,
    workspace_names,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("shell", "registers"), [
    ("bash", "complete -o nospace -o bashdefault -F _python_argcomplete wsctl"),
    ("zsh", "compdef _python_argcomplete wsctl")])
def test_completion_prints_the_shell_code(shell: str, registers: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    out = capsys.readouterr().out
    assert "_python_argcomplete() {" in out
    assert registers in out


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["completion", "fish"])
    assert exit_.value.code == 2
    assert "argument shell: invalid choice: 'fish'" in capsys.readouterr().err


def test_the_help_says_how_to_load_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["completion", "--help"])
    out = capsys.readouterr().out
    assert "source <(wsctl completion bash)" in out and "compinit" in out


def completed_by(parser: argparse.ArgumentParser, completer: Any) -> set[str]:
    """`command dest` of every positional of `parser`'s commands that `completer` completes."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found |= {f"{name} {a.dest}" for a in child._actions
                          if getattr(a, "completer", None) is completer}
                found |= {f"{name} {inner}" for inner in completed_by(child, completer)}
    return found


def test_every_workspace_name_positional_completes_names() -> None:
    parser = build_parser()
    attach_completers(parser)
    assert completed_by(parser, workspace_names) == {
        "activity name", "delete name", "describe name", "events name", "exec name",
        "get name",
        "logs name", "restart name", "resume name", "send name", "suspend name",
        "usage name", "wait names"}  # not `secret set NAME`: a secret's name
    assert completed_by(parser, field_paths) == {"explain field"}


def test_field_paths_complete_one_level_below_what_is_typed() -> None:
    top = field_paths(prefix="")
    assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(top)
    below = field_paths(prefix="spec.l")
    assert "spec.llm" in below and below["spec.llm"] == "object"
    assert all(path.startswith("spec.l") and path.count(".") == 1 for path in below)
    assert {p.rsplit(".", 1)[1] for p in field_paths(prefix="spec.llm.")} >= {"provider"}
    assert field_paths(prefix="spec.nosuch.x") == {}


# ------------------------------------------------------------------ names


class Stub(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Stub.seen.append(self.path)
        items = [{"metadata": {"name": n}, "status": {"phase": "Online"}}
                 for n in ("alpha", "alps", "beta")]
        body = json.dumps({"items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Stub.seen.clear()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def args_for(server: str, data_dir: Path, **more: Any) -> argparse.Namespace:
    return argparse.Namespace(server=server, data_dir=data_dir, namespace="default", **more)


def test_names_come_from_the_controller_by_prefix(stub: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCTL_ADMIN_TOKEN", "t")
    assert workspace_names(prefix="al", parsed_args=args_for(stub, tmp_path)) == {
        "alpha": "Online", "alps": "Online"}
    # wait NAME...: a name already on the line is not offered again; -n is asked for
    given = args_for(stub, tmp_path, names=["alpha"])
    given.namespace = "team"
    assert list(workspace_names(prefix="", parsed_args=given)) == ["alps", "beta"]
    assert Stub.seen[-1] == "/api/v1/workspaces?namespace=team"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_controller_completes_nothing(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("WSCTL_ADMIN_TOKEN", "t")
    assert workspace_names(prefix="", parsed_args=args_for(server, tmp_path)) == {}
    monkeypatch.delenv("WSCTL_ADMIN_TOKEN")  # and no admin.token in the data dir either
    assert workspace_names(prefix="", parsed_args=args_for(server, tmp_path)) == {}


def backend(line: str, server: str, tmp_path: Path,
            timeout: float = 20) -> tuple[subprocess.CompletedProcess[str], list[str], float]:
    """What the shell code runs at a Tab: wsctl with `_ARGCOMPLETE` set; its
    completions (argcomplete writes them to fd 8, or this file) and its time."""
    answer = tmp_path / "completions"
    env = {"PATH": os.environ["PATH"], "WSCTL_ADMIN_TOKEN": "t", "WSCTL_SERVER": server,
           "WSCTL_DATA_DIR": str(tmp_path), "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash",
           "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "controller"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    words = [w for w in answer.read_text().split("\013") if w] if answer.exists() else []
    return done, words, took


def test_a_down_controller_is_silent_at_a_tab(tmp_path: Path) -> None:
    done, words, _ = backend("wsctl describe ", f"127.0.0.1:{closed_port()}", tmp_path)
    assert (done.returncode, done.stdout, done.stderr, words) == (0, "", "", [])


def test_a_silent_controller_costs_at_most_the_timeout(tmp_path: Path) -> None:
    """A listener that never answers (a hung controller): the Tab gives up after 2 s."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        server = f"127.0.0.1:{listener.getsockname()[1]}"
        done, words, took = backend("wsctl get ", server, tmp_path)
    assert (done.returncode, done.stderr, words) == (0, "", [])
    assert 1.5 < took < 6, took


def test_the_backend_answers_with_names(stub: str, tmp_path: Path) -> None:
    done, words, _ = backend("wsctl logs a", stub, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(w.strip() for w in words) == ["alpha", "alps"]

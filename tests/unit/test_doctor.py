"""`wsctl doctor`'s pure parts, the port check, and how the CLI reports an expected
failure: one line, no traceback, unless --debug / WSCTL_DEBUG=1 asks for it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.adapters.hostnet import check_bindable, listener_of
from controller.app.cli import main
from controller.app.doctor import CheckResult, evaluate_limits, fail, ok


@pytest.mark.parametrize(("memory", "cpu", "pids", "missing"), [
    (False, True, True, "memory"),
    (True, False, True, "CPU quota"),
    (True, True, False, "pids"),
    (False, False, True, "memory, CPU quota"),
])
def test_limits_fail_naming_what_the_engine_cannot_enforce(
        memory: bool, cpu: bool, pids: bool, missing: str) -> None:
    result = evaluate_limits(memory, cpu, pids, "1")
    assert result.status == "fail"
    assert f"cannot enforce {missing} limits (cgroup v1)" in result.detail
    assert "cgroup_enable=memory" in result.fix
    assert result.line().startswith("FAIL resource limits: ") and "; fix: " in result.line()


def test_limits_ok_when_all_three_are_enforced() -> None:
    result = evaluate_limits(True, True, True, "2")
    assert result.status == "ok" and "fix" not in result.line()


def test_a_line_carries_the_fix_only_when_failing() -> None:
    assert ok("x", "fine").line() == "ok   x: fine"
    assert fail("x", "broken", "mend it").line() == "FAIL x: broken; fix: mend it"
    assert CheckResult("x", "skip", "needs y").line() == "skip x: needs y"
    assert not fail("x", "broken", "").ok and ok("x", "y").ok


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_a_taken_port_names_the_process_holding_it(listener: int) -> None:
    busy = check_bindable("127.0.0.1", listener)
    assert busy is not None and busy.reason == "in use"
    assert busy.pid == os.getpid()
    assert busy.holder() == f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()})"
    assert listener_of(listener) == (os.getpid(), busy.command)


def test_a_free_port_is_bindable(listener: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    assert check_bindable("127.0.0.1", free) is None


def test_an_address_not_of_this_host_is_said_so() -> None:
    busy = check_bindable("192.0.2.254", 8080)  # TEST-NET-1: never ours
    assert busy is not None and busy.reason == "192.0.2.254 is not an address of this host"


# --------------------------------------------------------------- one line, or --debug


def test_an_expected_failure_is_one_line_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSCTL_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("WSCTL_DEBUG", raising=False)
    code = main(["get", "--data-dir", str(tmp_path), "--server", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (f"error: no admin token at {tmp_path}/admin.token: is `wsctl run` using this "
                   "data dir? (--data-dir / WSCTL_DATA_DIR, or set WSCTL_ADMIN_TOKEN)\n")


@pytest.mark.parametrize("how", ["flag-first", "flag-after", "environment"])
def test_debug_adds_the_traceback(how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSCTL_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("WSCTL_DEBUG", raising=False)
    args = ["get", "--data-dir", str(tmp_path), "--server", "127.0.0.1:9"]
    if how == "flag-first":
        args = ["--debug", *args]
    elif how == "flag-after":
        args = [*args, "--debug"]
    else:
        monkeypatch.setenv("WSCTL_DEBUG", "1")
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert "Error: no admin token at " in err  # the exception line of the traceback
    assert err.splitlines()[-1].startswith("error: no admin token at ")

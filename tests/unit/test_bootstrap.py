"""scripts/bootstrap's pieces that can be tried without touching the machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parents[2] / "scripts" / "bootstrap"


def clear_stale_pid(pid_file: Path, name: str) -> str:
    done = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1" && clear_stale_pid "$2" "$3"',
            "bash",
            str(BOOTSTRAP),
            str(pid_file),
            name,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout + done.stderr


def test_a_pid_file_of_a_process_that_is_gone_is_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["sleep", "0"])
    gone.wait()
    pid_file = tmp_path / "docker.pid"
    pid_file.write_text(str(gone.pid))
    said = clear_stale_pid(pid_file, "dockerd")
    assert not pid_file.exists()
    assert "no longer runs" in said


def test_a_pid_file_of_the_running_process_is_kept(tmp_path: Path) -> None:
    running = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = tmp_path / "docker.pid"
        pid_file.write_text(f"{running.pid}\n")
        assert clear_stale_pid(pid_file, "sleep") == ""
        assert pid_file.exists()
        # The same pid now held by another program (pid reuse after a restart) is stale.
        clear_stale_pid(pid_file, "dockerd")
        assert not pid_file.exists()
    finally:
        running.kill()
        running.wait()


def test_no_pid_file_is_no_change(tmp_path: Path) -> None:
    assert clear_stale_pid(tmp_path / "absent.pid", "dockerd") == ""


def test_sourcing_runs_no_step() -> None:
    done = subprocess.run(
        ["bash", "-c", 'source "$1" && echo sourced', "bash", str(BOOTSTRAP)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == "sourced\n"
    assert "bootstrap:" not in done.stderr

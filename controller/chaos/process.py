"""One `wsctl run` child process: its ports, argv, log files and signals.

Shared by the chaos harness (which starts, SIGKILLs and restarts its own
controller) and the test harness (`controller.testing.harness`), so both run
the controller the same way: `python -m controller run` with its own data dir,
network, instance label and ports, every start appending a log file.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunProcess:
    data_dir: Path
    network: str
    instance: str
    gateway: str
    env: dict[str, str]
    listen_port: int = 0
    registry_port: int = 0
    egress_port: int = 0
    """0: a free one; -1: no --egress-port flag (a checkout older than the egress proxy)."""
    log_files: list[Path] = field(default_factory=list)
    """Every start's log file (a list a test may share among several processes)."""
    proc: subprocess.Popen[bytes] | None = None
    current_log: Path | None = None
    """This process's log file since its last start."""

    def __post_init__(self) -> None:
        self.listen_port = self.listen_port or free_port("127.0.0.1")
        self.registry_port = self.registry_port or free_port(self.gateway)
        if self.egress_port == 0:
            self.egress_port = free_port(self.gateway)

    @property
    def listen(self) -> str:
        """The admin API's HOST:PORT (`--listen`)."""
        return f"127.0.0.1:{self.listen_port}"

    @property
    def registry(self) -> str:
        return f"http://{self.gateway}:{self.registry_port}"

    def spawn(self, flags: Sequence[str], extra_env: Mapping[str, str],
              cwd: Path | None = None) -> Path:
        """Start `wsctl run` with these flags; its output goes to a new log file (returned)."""
        log_file = self.data_dir / f"controller-{len(self.log_files)}.log"
        self.log_files.append(log_file)
        self.current_log = log_file
        with log_file.open("wb") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller", "run", "--data-dir", str(self.data_dir),
                 "--listen", self.listen,
                 "--registry-listen", f"{self.gateway}:{self.registry_port}",
                 *(["--egress-port", str(self.egress_port)] if self.egress_port > 0 else []),
                 "--network", self.network, "--instance", self.instance, "--no-build",
                 *flags],
                stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                env={**self.env, **extra_env})
        return log_file

    def signal_and_wait(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` and wait for the exit (SIGKILL after 30 s)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_files if p.exists())

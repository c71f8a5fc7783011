"""Files in every workspace's storage: written during the run, read back at the end.

Beside the message traffic, every `interval` seconds each workspace gets one
numbered file, `<mountPath>/chaos/<seq>.txt` with known content, written into
its running container (Docker exec as the agent's user, through the harness's
Docker adapter). A write is *acknowledged* when the exec exited 0; one that
failed (no running container, container paused or gone mid-fault) is counted,
not acknowledged, and never checked. After the faults every acknowledged file
must be in the workspace's running container with its content (the `files`
invariant): the storage volume outlives kills, recreates, suspensions and a
delete + re-apply (reclaimPolicy Retain).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from controller.chaos.model import cancel_all
from controller.core.model import DEFAULT_MOUNT_PATH

FILES_DIR = DEFAULT_MOUNT_PATH + "/chaos"
"""Where the files go: the workspaces' storage (the chaos manifests keep the default
spec.storage.mountPath)."""
WRITE_TIMEOUT = 20.0
READ_ATTEMPTS = 3

Write = Callable[[str, str, str, str], Awaitable[None]]
"""(container id, directory, file name, content); raises unless the write exited 0."""
Read = Callable[[str, str], Awaitable[dict[str, str]]]
"""(container id, directory) -> {file name: sha256 hex} of the `*.txt` files there."""


@dataclass(frozen=True)
class WrittenFile:
    workspace: str
    seq: int
    digest: str
    """sha256 hex of the content written."""
    sent_at: float
    acked_at: float
    container: str

    @property
    def name(self) -> str:
        return f"{self.seq}.txt"


@dataclass
class FileStats:
    written: int = 0
    """Writes attempted."""
    acked: int = 0
    checked: int = 0
    """Acknowledged files looked for at the end."""
    missing: int = 0
    changed: int = 0
    unreadable: int = 0
    """Acknowledged files of workspaces whose storage could not be read at the end."""
    failures: Counter[str] = field(default_factory=Counter)
    """Unacknowledged writes by why: 'no running container', 'exec failed', ..."""


@dataclass(frozen=True)
class FileLoss:
    """What one workspace's storage lacks at the end."""

    workspace: str
    missing: tuple[WrittenFile, ...] = ()
    changed: tuple[WrittenFile, ...] = ()
    unreadable: str | None = None
    """Why the storage could not be read (then every acknowledged file is unverified)."""
    acked: int = 0
    kept_after: WrittenFile | None = None
    """The first acknowledged file after the last lost one that is intact: between the
    two lies the moment the storage lost them."""


def content(run_id: str, workspace: str, seq: int) -> str:
    return f"wsctl chaos run {run_id}: {workspace} file {seq}\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def compare(written: list[WrittenFile], found: dict[str, str]
            ) -> tuple[list[WrittenFile], list[WrittenFile]]:
    """(missing, changed) of the acknowledged files, given what the storage holds."""
    missing = [f for f in written if f.name not in found]
    changed = [f for f in written if f.name in found and found[f.name] != f.digest]
    return missing, changed


class FileWriter:
    def __init__(self, write: Write, read: Read, running: Callable[[str], str | None],
                 clock: Callable[[], float], workspaces: list[str], run_id: str, *,
                 interval: float = 3.0, directory: str = FILES_DIR,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.write = write
        self.read = read
        self.running = running
        """The id of the workspace's running container (None: there is none)."""
        self.clock = clock
        self.workspaces = workspaces
        self.run_id = run_id
        self.interval = interval
        self.directory = directory
        self.sleep = sleep
        self.acked: dict[str, list[WrittenFile]] = {name: [] for name in workspaces}
        self.stats = FileStats()
        self.started = False
        self._seq: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def start(self) -> None:
        self.started = True
        for i, name in enumerate(self.workspaces):
            offset = self.interval * i / max(1, len(self.workspaces))  # spread the execs
            self._tasks.append(asyncio.create_task(self._loop(name, offset),
                                                   name=f"files-{name}"))

    async def stop(self) -> None:
        self._stop.set()
        await cancel_all(self._tasks)

    async def _loop(self, name: str, offset: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), offset)
        while not self._stop.is_set():
            await self.write_one(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)  # the pacing

    async def write_one(self, name: str) -> WrittenFile | None:
        """One numbered file into the workspace's running container; the record if
        the write was acknowledged (exec exited 0)."""
        self._seq[name] += 1
        seq = self._seq[name]
        self.stats.written += 1
        container = self.running(name)
        if container is None:
            self.stats.failures["no running container"] += 1
            return None
        text = content(self.run_id, name, seq)
        sent_at = self.clock()
        try:
            await asyncio.wait_for(self.write(container, self.directory, f"{seq}.txt", text),
                                   WRITE_TIMEOUT)
        except TimeoutError:
            self.stats.failures["exec timed out"] += 1
            return None
        except Exception:  # container paused, stopping or gone: not acknowledged
            self.stats.failures["exec failed"] += 1
            return None
        written = WrittenFile(name, seq, digest(text), sent_at, self.clock(), container)
        self.acked[name].append(written)
        self.stats.acked += 1
        return written

    async def verify(self) -> list[FileLoss]:
        """Read every workspace's files back from its running container; what is
        missing, changed or could not be read. Counts into `stats`."""
        losses = []
        for name in self.workspaces:
            written = self.acked[name]
            if not written:
                continue
            self.stats.checked += len(written)
            found, why = await self._read(name)
            if found is None:
                self.stats.unreadable += len(written)
                losses.append(FileLoss(name, unreadable=why, acked=len(written)))
                continue
            missing, changed = compare(written, found)
            self.stats.missing += len(missing)
            self.stats.changed += len(changed)
            if missing or changed:
                last = max(f.seq for f in (*missing, *changed))
                lost = {f.seq for f in (*missing, *changed)}
                kept = next((f for f in written if f.seq > last and f.seq not in lost), None)
                losses.append(FileLoss(name, tuple(missing), tuple(changed), acked=len(written),
                                       kept_after=kept))
        return losses

    async def _read(self, name: str) -> tuple[dict[str, str] | None, str]:
        why = "no running container"
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                await self.sleep(1.0)  # the container may be replaced right now: look again
            container = self.running(name)
            if container is None:
                why = "no running container"
                continue
            try:
                return await self.read(container, self.directory), ""
            except Exception as exc:  # reported if no attempt succeeds
                why = f"{type(exc).__name__}: {exc}"
        return None, why

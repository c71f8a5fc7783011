"""The files written into the workspaces' storage: only writes that exited 0 are
acknowledged, and every acknowledged file is looked for at the end, by name and
content."""

from __future__ import annotations

import asyncio

from controller.chaos.files import FILES_DIR, FileWriter, WrittenFile, compare, content, digest
from tests.chaos.fakes import Clock


class Storage:
    """One volume per workspace, reached through whichever container is running."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, str]] = {}
        self.container: dict[str, str | None] = {"w01": "c1", "w02": "c2"}
        self.broken: set[str] = set()
        """Containers whose exec fails (paused, stopping, gone)."""
        self.unreadable: set[str] = set()

    def running(self, name: str) -> str | None:
        return self.container.get(name)

    def workspace(self, container: str) -> str:
        return next(n for n, c in self.container.items() if c == container)

    async def write(self, container: str, directory: str, name: str, text: str) -> None:
        assert directory == FILES_DIR
        if container in self.broken:
            raise RuntimeError(f"exec in {container}: container is paused")
        self.files.setdefault(self.workspace(container), {})[name] = digest(text)

    async def read(self, container: str, directory: str) -> dict[str, str]:
        if container in self.unreadable:
            raise RuntimeError("no such container")
        return dict(self.files.get(self.workspace(container), {}))


def writer(storage: Storage, clock: Clock) -> FileWriter:
    return FileWriter(storage.write, storage.read, storage.running, clock, ["w01", "w02"],
                      "run1", sleep=clock.sleep)


def test_compare_names_missing_and_changed_files() -> None:
    files = [WrittenFile("w01", n, digest(content("r", "w01", n)), n, n + 0.1, "c1")
             for n in (1, 2, 3)]
    found = {"1.txt": files[0].digest, "3.txt": "0" * 64, "9.txt": "x"}
    missing, changed = compare(files, found)
    assert [f.name for f in missing] == ["2.txt"]
    assert [f.name for f in changed] == ["3.txt"]


async def test_only_writes_that_exited_0_are_acknowledged() -> None:
    storage, clock = Storage(), Clock()
    files = writer(storage, clock)
    assert (await files.write_one("w01")) is not None
    storage.broken.add("c1")
    assert await files.write_one("w01") is None
    storage.container["w01"] = None
    assert await files.write_one("w01") is None
    assert [f.seq for f in files.acked["w01"]] == [1]  # seq 2 and 3 were never acknowledged
    assert files.stats.written == 3 and files.stats.acked == 1
    assert dict(files.stats.failures) == {"exec failed": 1, "no running container": 1}


async def test_every_acknowledged_file_is_read_back_from_the_running_container() -> None:
    storage, clock = Storage(), Clock()
    files = writer(storage, clock)
    for _ in range(3):
        await files.write_one("w01")
        await files.write_one("w02")
    assert await files.verify() == []
    assert files.stats.checked == 6 and files.stats.missing == 0

    # A recreate that lost the storage: w01's new container sees an empty volume.
    storage.files["w01"] = {"3.txt": digest("something else")}
    (loss,) = await files.verify()
    assert loss.workspace == "w01" and loss.acked == 3
    assert [f.name for f in loss.missing] == ["1.txt", "2.txt"]
    assert [f.name for f in loss.changed] == ["3.txt"]
    assert loss.kept_after is None  # nothing intact after the last lost file

    # Lost early, intact later: the first intact file after the loss brackets it.
    await files.write_one("w01")
    storage.files["w01"] = {"4.txt": storage.files["w01"]["4.txt"]}
    (loss,) = await files.verify()
    assert [f.name for f in loss.missing] == ["1.txt", "2.txt", "3.txt"]
    assert loss.kept_after is not None and loss.kept_after.name == "4.txt"


async def test_storage_that_cannot_be_read_is_a_loss_not_a_skip() -> None:
    storage, clock = Storage(), Clock()
    files = writer(storage, clock)
    await files.write_one("w01")
    storage.unreadable.add("c1")
    (loss,) = await files.verify()
    assert loss.unreadable == "RuntimeError: no such container" and loss.acked == 1
    assert clock.slept == [1.0, 1.0]  # three attempts
    assert files.stats.unreadable == 1


async def test_the_writer_paces_each_workspace_and_stops() -> None:
    storage = Storage()
    files = FileWriter(storage.write, storage.read, storage.running, Clock(), ["w01", "w02"],
                       "run1", interval=0.01)
    files.start()
    for _ in range(200):
        if all(len(files.acked[n]) >= 2 for n in ("w01", "w02")):
            break
        await asyncio.sleep(0.01)
    await files.stop()
    assert all(len(files.acked[n]) >= 2 for n in ("w01", "w02"))
    assert storage.files["w01"]["1.txt"] == digest(content("run1", "w01", 1))

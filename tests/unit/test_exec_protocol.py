"""The exec frame protocol, the command and path checks, Docker's multiplexed stream
parser, the line redactor of logs -f, and the CLI's side of exec and cp (argument
parsing, NAME:/path, the tar it makes and the one it unpacks)."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
from pathlib import Path

import pytest

from controller.adapters.docker_streams import Demultiplexer
from controller.api.streams import MAX_LINE, LineRedactor
from controller.app import cli_exec
from controller.app.cli import build_parser
from controller.app.cli_workspaces import CommandError
from controller.core import redact
from controller.core import streams as proto

# ------------------------------------------------------------------ frames


def test_frames_round_trip_on_every_channel() -> None:
    for channel in (proto.STDIN, proto.STDOUT, proto.STDERR, proto.STATUS, proto.RESIZE,
                    proto.CLOSE):
        assert proto.parse(proto.frame(channel, b"\x00data\xff")) == (channel, b"\x00data\xff")
    assert proto.parse(bytes((proto.CLOSE, proto.STDIN))) == (proto.CLOSE, b"\x00")


@pytest.mark.parametrize("message", [b"", b"\x05x", b"\xfeabc"])
def test_an_empty_frame_or_an_unknown_channel_is_refused(message: bytes) -> None:
    with pytest.raises(proto.FrameError):
        proto.parse(message)
    with pytest.raises(proto.FrameError):
        proto.frame(7)


def test_resize_is_json_with_bounded_integers() -> None:
    channel, payload = proto.parse(proto.resize_frame(120, 40))
    assert channel == proto.RESIZE
    assert json.loads(payload) == {"width": 120, "height": 40}
    assert proto.parse_resize(payload) == (120, 40)
    for bad in (b"{", b"[]", b'{"width": 0, "height": 5}', b'{"width": 5}',
                b'{"width": true, "height": 5}', b'{"width": 5, "height": 10001}',
                b'{"width": "5", "height": 5}'):
        with pytest.raises(proto.FrameError):
            proto.parse_resize(bad)


def test_status_carries_the_exit_code_or_an_error() -> None:
    assert proto.parse_status(proto.parse(proto.status_frame(7))[1]) == (7, None)
    assert proto.parse_status(proto.parse(proto.status_frame(None, "gone"))[1]) == (None, "gone")
    for bad in (b"x", b"[]", b'{"exitCode": "1"}', b'{"exitCode": true}'):
        with pytest.raises(proto.FrameError):
            proto.parse_status(bad)


# ------------------------------------------------------------------ commands and paths


def test_a_command_needs_a_program_and_fits_the_request_line() -> None:
    assert proto.check_command(["sh", "-c", ""]) == ["sh", "-c", ""]
    for bad in ([], [""], ["ls", "a\x00b"], ["x"] * (proto.MAX_ARGS + 1),
                ["echo", "é" * 2000]):  # 12,000 characters URL-encoded
        with pytest.raises(proto.FrameError):
            proto.check_command(bad)
    assert proto.check_command(["echo", "a" * 7000])


@pytest.mark.parametrize(("raw", "path"), [
    ("/workspace", "/workspace"), ("/workspace/", "/workspace"),
    ("//workspace//a/", "/workspace/a"),
    ("/workspace/../configs/x", "/configs/x"), ("/./tmp/.", "/tmp"), ("/", "/"),
])
def test_container_paths_are_absolute_and_normalised(raw: str, path: str) -> None:
    assert proto.container_path(raw) == path


@pytest.mark.parametrize("raw", ["workspace", "", "./x", "/a\x00b", "/" + "a" * 5000])
def test_bad_container_paths_are_refused(raw: str) -> None:
    with pytest.raises(proto.FrameError):
        proto.container_path(raw)


def test_under_configs_and_split() -> None:
    assert proto.is_under("/configs", "/configs")
    assert proto.is_under("/configs/.auth_token", "/configs")
    assert not proto.is_under("/configsx", "/configs")
    assert not proto.is_under("/workspace", "/configs")
    assert proto.split_path("/workspace/data") == ("/workspace", "data")
    assert proto.split_path("/tmp") == ("/", "tmp")
    with pytest.raises(proto.FrameError):
        proto.split_path("/")


# ------------------------------------------------------------------ Docker's stream


def _mux(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_the_demultiplexer_handles_frames_split_anywhere() -> None:
    wire = _mux(1, b"hello ") + _mux(2, b"oops\n") + _mux(1, b"") + _mux(1, b"world\n" * 3)
    whole = Demultiplexer().feed(wire)
    joined = {1: b"", 2: b""}
    for stream, data in whole:
        joined[stream] += data
    assert joined == {1: b"hello " + b"world\n" * 3, 2: b"oops\n"}
    for size in (1, 3, 7, 8, 9, 13):
        parser = Demultiplexer()
        pieces: dict[int, bytes] = {1: b"", 2: b""}
        for i in range(0, len(wire), size):
            for stream, data in parser.feed(wire[i:i + size]):
                assert data  # never an empty piece
                pieces[stream] += data
        assert pieces == joined, size


# ------------------------------------------------------------------ logs -f redaction


def test_followed_logs_are_redacted_line_by_line() -> None:
    secret = "sk-line-secret-0123456789"
    redact.remember(secret)
    try:
        lines = LineRedactor()
        out = lines.feed(b"first line\nthe key is sk-line-")
        assert out == b"first line\n"
        out += lines.feed(b"secret-0123456789 ok\nno newline")
        out += lines.flush()
        assert secret.encode() not in out
        assert out.count(b"<redacted:") == 1
        assert out.endswith(b" ok\nno newline")
        # A line longer than MAX_LINE is passed on in pieces, not held whole.
        assert len(lines.feed(b"x" * (MAX_LINE + 1))) == MAX_LINE + 1
    finally:
        redact.forget_all()


# ------------------------------------------------------------------ the CLI


def test_exec_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["exec", "-it", "alice", "--", "sh", "-c", "exit 7"])
    assert (args.name, args.command, args.stdin, args.tty) == (
        "alice", ["sh", "-c", "exit 7"], True, True)
    args = parser.parse_args(["exec", "--server", "h:1", "alice", "-i", "--", "ls", "--server"])
    assert (args.command, args.stdin, args.server) == (["ls", "--server"], True, "h:1")
    with pytest.raises(CommandError, match="no command"):
        cli_exec.exec_command([])
    assert parser.parse_args(["logs", "-f", "alice"]).follow is True


def test_exec_t_without_a_terminal_is_refused_before_connecting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pipe()
    os.close(write)
    with os.fdopen(read) as pipe:
        monkeypatch.setattr("sys.stdin", pipe)
        args = build_parser().parse_args(["exec", "-t", "alice", "--", "sh"])
        with pytest.raises(CommandError, match="-t needs a terminal"):
            cli_exec.cmd_exec(args)


@pytest.mark.parametrize(("raw", "workspace", "path"), [
    ("alice:/workspace/x", "alice", "/workspace/x"), ("a-1:/", "a-1", "/"),
    ("./alice:/x", None, "./alice:/x"), ("/tmp/x", None, "/tmp/x"), ("-", None, "-"),
    ("local.txt", None, "local.txt"), ("Alice:/x", None, "Alice:/x"), ("~/x", None, "~/x"),
])
def test_cp_locations(raw: str, workspace: str | None, path: str) -> None:
    assert cli_exec.location(raw) == cli_exec.Location(path, workspace)


def test_a_relative_workspace_path_is_an_error_naming_the_fix() -> None:
    with pytest.raises(CommandError, match=r"absolute.*\./alice:workspace"):
        cli_exec.location("alice:workspace")


def test_the_upload_tar_is_made_as_it_is_read_and_belongs_to_the_agent(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f.bin").write_bytes(os.urandom(700_000))
    (source / "link").symlink_to("d/f.bin")
    chunks = list(cli_exec._tar_of(source, "renamed"))
    assert max(len(c) for c in chunks) <= cli_exec.CHUNK
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"renamed", "renamed/d", "renamed/d/f.bin", "renamed/link"}
        assert {(m.uid, m.gid) for m in members.values()} == {(10001, 10001)}
        assert members["renamed/link"].issym()
        data = tar.extractfile("renamed/d/f.bin")
        assert data is not None and data.read() == (source / "d" / "f.bin").read_bytes()


def test_the_download_is_unpacked_under_its_new_name_and_nothing_escapes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def add(name: str, data: bytes = b"", **kw: object) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in kw.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data))
        add("./data", type=tarfile.DIRTYPE, mode=0o755)
        add("./data/a.txt", b"a", mode=0o4755)
        add("./data/hard", type=tarfile.LNKTYPE, linkname="./data/a.txt")
        add("./data/out", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("./data/../../escape.txt", b"no")
    buffer.seek(0)
    dest = tmp_path / "dest"
    dest.mkdir()
    with tarfile.open(fileobj=buffer, mode="r|") as tar:
        tar.extractall(dest, members=cli_exec._renamed(tar, "copy"),  # noqa: S202
                       filter=cli_exec._safe)
    assert (dest / "copy" / "a.txt").read_bytes() == b"a"
    assert not (dest / "copy" / "a.txt").stat().st_mode & 0o4000  # no setuid
    assert (dest / "copy" / "hard").read_bytes() == b"a"
    assert not (dest / "copy" / "out").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert "skipped copy/out" in capsys.readouterr().err

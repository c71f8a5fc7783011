"""The agent image builder's decisions, without a Docker engine (fake client)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any, cast

import docker
import pytest
from docker.errors import APIError, ImageNotFound

from controller.adapters import baseimage, images
from controller.adapters.baseimage import (
    BASE_RECIPE,
    BASE_RECIPE_LABEL,
    LOCAL_BASE,
    PUBLIC_BASE,
    ImageBuildError,
    select_base,
)
from controller.adapters.images import (
    SOURCE_HASH_LABEL,
    build_agent_image,
    source_hash,
)


class FakeImage:
    def __init__(self, ref: str, labels: dict[str, str] | None = None) -> None:
        self.id = "sha256:" + format(abs(hash(ref)), "x").ljust(64, "0")
        self.attrs: dict[str, Any] = {"Config": {"Labels": labels or {}}}


class FakeImages:
    def __init__(self, present: dict[str, FakeImage]) -> None:
        self.present = present

    def get(self, ref: str) -> FakeImage:
        if ref not in self.present:
            raise ImageNotFound(f"no such image: {ref}")
        return self.present[ref]


class FakeAPI:
    def __init__(self, images: FakeImages, pullable: set[str]) -> None:
        self.images = images
        self.pullable = pullable
        self.pulls: list[str] = []
        self.builds: list[dict[str, Any]] = []

    def pull(self, repo: str, tag: str | None = None) -> None:
        ref = f"{repo}:{tag}" if tag else repo
        self.pulls.append(ref)
        if ref not in self.pullable:
            raise APIError("500 Server Error: lookup registry-1.docker.io: no such host")
        self.images.present[ref] = FakeImage(ref)

    def build(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.builds.append(kwargs)
        ctx = Path(kwargs["path"])
        assert (ctx / "Dockerfile").is_file()
        assert (ctx / "wsctl_agent" / "__main__.py").is_file()
        labels = {SOURCE_HASH_LABEL: kwargs["buildargs"]["AGENT_SOURCE_HASH"]}
        labels[images.BASE_LABEL] = kwargs["buildargs"]["BASE_IMAGE"]
        self.images.present[kwargs["tag"]] = FakeImage(kwargs["tag"] + "built", labels)
        return [
            {"stream": "Step 1/15 : ARG BASE_IMAGE=python:3.11-slim-bookworm\n"},
            {"stream": " ---> 170a3034d2da\n"},
            {"aux": {"ID": "sha256:" + "b" * 64}},
            {"stream": "Successfully built bbbbbbbbbbbb\n"},
        ]


class FakeClient:
    def __init__(self, present: dict[str, FakeImage], pullable: set[str] | None = None) -> None:
        self.images = FakeImages(present)
        self.api = FakeAPI(self.images, pullable or set())


def as_client(fake: FakeClient) -> docker.DockerClient:
    return cast(docker.DockerClient, fake)


def test_source_hash_is_stable_and_covers_agent_files(tmp_path: Path) -> None:
    agent = tmp_path / "agent"
    shutil.copytree(images.AGENT_SOURCE_DIR, agent, ignore=shutil.ignore_patterns("__pycache__"))
    dockerfile = tmp_path / "Dockerfile"
    shutil.copyfile(images.DOCKERFILE, dockerfile)
    first = source_hash(dockerfile, agent)
    assert first == source_hash(dockerfile, agent)
    assert first == source_hash()  # same content as the real tree
    (agent / "__pycache__").mkdir(exist_ok=True)
    (agent / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    assert source_hash(dockerfile, agent) == first  # caches do not count
    (agent / "llm.py").write_text((agent / "llm.py").read_text() + "\n# changed\n")
    assert source_hash(dockerfile, agent) != first
    changed = source_hash(dockerfile, agent)
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    assert source_hash(dockerfile, agent) != changed


def test_up_to_date_image_is_not_rebuilt(tmp_path: Path) -> None:
    tag = "wsctl/agent:latest"
    labels = {SOURCE_HASH_LABEL: source_hash(), images.BASE_LABEL: LOCAL_BASE}
    fake = FakeClient({tag: FakeImage(tag, labels)})
    lines: list[str] = []
    result = build_agent_image(as_client(fake), cache_dir=tmp_path, progress=lines.append)
    assert result.built is False
    assert result.base == LOCAL_BASE
    assert fake.api.builds == [] and fake.api.pulls == []
    assert any("up to date" in ln for ln in lines)


def test_stale_image_is_rebuilt_with_hash_and_base_build_args(tmp_path: Path) -> None:
    tag = "wsctl/agent:latest"
    fake = FakeClient(
        {
            tag: FakeImage(tag, {SOURCE_HASH_LABEL: "old"}),
            PUBLIC_BASE: FakeImage(PUBLIC_BASE),
        }
    )
    lines: list[str] = []
    result = build_agent_image(as_client(fake), cache_dir=tmp_path, progress=lines.append)
    assert result.built is True and result.base == PUBLIC_BASE
    (call,) = fake.api.builds
    assert call["buildargs"]["BASE_IMAGE"] == PUBLIC_BASE
    assert call["buildargs"]["AGENT_SOURCE_HASH"] == source_hash()
    assert call["rm"] is True and call["decode"] is True and call["tag"] == tag
    assert "build: Step 1/15 : ARG BASE_IMAGE=python:3.11-slim-bookworm" in lines
    assert not any("--->" in ln for ln in lines)  # layer ids are noise, not progress
    assert result.image_id == "sha256:" + "b" * 64
    # force rebuilds even when up to date, without the layer cache
    again = build_agent_image(as_client(fake), cache_dir=tmp_path, force=True, progress=print)
    assert again.built is True and fake.api.builds[-1]["nocache"] is True


def test_build_error_chunk_becomes_one_line_error(tmp_path: Path) -> None:
    fake = FakeClient({PUBLIC_BASE: FakeImage(PUBLIC_BASE)})

    def failing_build(**_: Any) -> list[dict[str, Any]]:
        return [{"errorDetail": {"message": "The command '/bin/sh -c x'\nreturned 1"}}]

    fake.api.build = failing_build  # type: ignore[method-assign]
    with pytest.raises(ImageBuildError, match=r"^docker build failed: The command .* returned 1$"):
        build_agent_image(as_client(fake), cache_dir=tmp_path, progress=lambda _: None)


def test_explicit_base_must_exist_or_pull(tmp_path: Path) -> None:
    fake = FakeClient({})
    with pytest.raises(ImageBuildError, match=r"base image corp/python:3\.11 is not present"):
        select_base(
            as_client(fake), base_image="corp/python:3.11", cache_dir=tmp_path, progress=print
        )
    assert fake.api.pulls == ["corp/python:3.11"]
    fake.api.pullable.add("corp/python:3.11")
    assert (
        select_base(
            as_client(fake), base_image="corp/python:3.11", cache_dir=tmp_path, progress=print
        )
        == "corp/python:3.11"
    )


def test_public_base_used_when_pullable(tmp_path: Path) -> None:
    fake = FakeClient({}, pullable={PUBLIC_BASE})
    assert select_base(as_client(fake), base_image=None, cache_dir=tmp_path, progress=print) == (
        PUBLIC_BASE
    )


def test_cached_local_base_skips_pull_and_debootstrap(tmp_path: Path) -> None:
    fake = FakeClient({LOCAL_BASE: FakeImage(LOCAL_BASE, {BASE_RECIPE_LABEL: BASE_RECIPE})})
    assert select_base(as_client(fake), base_image=None, cache_dir=tmp_path, progress=print) == (
        LOCAL_BASE
    )
    assert fake.api.pulls == []


def test_unpullable_public_base_falls_back_to_debootstrap_and_needs_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a local base from an older recipe does not count as cached
    fake = FakeClient({LOCAL_BASE: FakeImage(LOCAL_BASE, {BASE_RECIPE_LABEL: "old"})})
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    lines: list[str] = []
    with pytest.raises(ImageBuildError, match="needs root"):
        select_base(as_client(fake), base_image=None, cache_dir=tmp_path, progress=lines.append)
    assert fake.api.pulls == [PUBLIC_BASE]
    assert any(f"{PUBLIC_BASE} unavailable" in ln for ln in lines)


def test_debootstrap_output_is_condensed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake-debootstrap"
    body = ["#!/bin/sh", "echo 'I: Checking Release signature'"]
    for i in range(40):
        body += [f"echo 'I: Retrieving pkg{i} 1.0'", f"echo 'I: Validating pkg{i} 1.0'"]
    body += [f"echo 'I: Unpacking pkg{i}...'" for i in range(30)]
    body += ["echo 'I: Base system installed successfully.'", "exit 0"]
    script.write_text("\n".join(body) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    lines: list[str] = []
    baseimage._run_debootstrap(
        str(script), tmp_path / "rootfs", "http://mirror.invalid", lines.append
    )
    assert lines == [
        "debootstrap: I: Checking Release signature",
        "debootstrap: I: Retrieving done: 40 packages",
        "debootstrap: I: Unpacking done: 30 packages",
        "debootstrap: I: Base system installed successfully.",
    ]


def test_debootstrap_failure_names_the_error(tmp_path: Path) -> None:
    script = tmp_path / "fake-debootstrap"
    script.write_text("#!/bin/sh\necho 'E: Failed getting release file http://x/Release'\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(ImageBuildError, match=r"debootstrap exited with 1: E: Failed getting"):
        baseimage._run_debootstrap(str(script), tmp_path / "rootfs", "http://x", lambda _: None)

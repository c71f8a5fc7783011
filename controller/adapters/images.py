"""Local image builder for the reference agent (``wsctl/agent:latest``) and the
Claude Code agent (``wsctl/agent-claude-code:latest``, ``--agent claude-code``).

The agent image is built from ``deploy/agent/Dockerfile`` on top of a base that
provides Python 3.11; ``baseimage.py`` chooses that base (and makes
``wsctl/base:bookworm`` with debootstrap when no other is at hand).

The agent image carries the label ``wsctl.dev/agent-source-hash``: a hash of the
Dockerfile and the agent's files. An image whose label matches the current
sources is up to date and is not rebuilt unless ``force``.

The Claude Code image is built from ``deploy/agent-claude-code/Dockerfile`` on
``wsctl/base-node:bookworm`` (debootstrap, Debian's nodejs), with the pinned
``@anthropic-ai/claude-code`` tarball (``npm_package.py``: fetched on the host,
integrity-checked, cached) unpacked into the context; its source hash also covers
the package's version and integrity.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import docker
from docker.errors import APIError, DockerException

from controller.adapters.baseimage import LOCAL_BASE as LOCAL_BASE
from controller.adapters.baseimage import (
    NODE_BASE,
    NODE_RECIPE,
    Progress,
    _get_image,
    _one_line,
    _remove_if_untagged,
    ensure_local_base,
    select_base,
)
from controller.adapters.baseimage import PUBLIC_BASE as PUBLIC_BASE
from controller.adapters.baseimage import ImageBuildError as ImageBuildError
from controller.adapters.baseimage import base_availability as base_availability
from controller.adapters.npm_package import CLAUDE_CODE, fetch_package, unpack_package
from controller.core.model import DEFAULT_IMAGE
from controller.core.settings import CLAUDE_CODE_IMAGE

DEFAULT_TAG = DEFAULT_IMAGE
SOURCE_HASH_LABEL = "wsctl.dev/agent-source-hash"
BASE_LABEL = "wsctl.dev/agent-base"
BUILD_TIMEOUT = 900

_REPO_ROOT = Path(__file__).resolve().parents[2]
# Located on disk, never imported: the agent and the adapters are independent.
AGENT_SOURCE_DIR = Path(__file__).resolve().parents[1] / "agent"
DOCKERFILE = _REPO_ROOT / "deploy" / "agent" / "Dockerfile"
CLAUDE_CODE_DOCKERFILE = _REPO_ROOT / "deploy" / "agent-claude-code" / "Dockerfile"
CLAUDE_CODE_TAG = CLAUDE_CODE_IMAGE
AGENTS = ("reference", "claude-code")
"""What `wsctl images build --agent` builds."""


def default_tag(agent: str = "reference") -> str:
    return CLAUDE_CODE_TAG if agent == "claude-code" else DEFAULT_TAG


@dataclass(frozen=True)
class ImageBuildResult:
    tag: str
    image_id: str
    base: str
    built: bool  # False when the image was already up to date


# -- sources -------------------------------------------------------------------


def _dockerfile_path(agent: str = "reference") -> Path:
    if agent == "claude-code":
        path = CLAUDE_CODE_DOCKERFILE
        if not path.is_file():
            raise ImageBuildError(f"Claude Code Dockerfile not found at {path}; "
                                  "run from a source checkout")
        return path
    override = os.environ.get("WSCTL_AGENT_DOCKERFILE")
    path = Path(override) if override else DOCKERFILE
    if not path.is_file():
        raise ImageBuildError(
            f"agent Dockerfile not found at {path}; run from a source checkout "
            "or set WSCTL_AGENT_DOCKERFILE"
        )
    return path


FRONTS = ("claude_code.py",)
"""Files of the agent package that are another image's front: not in the reference
image, so a change to them does not rebuild it."""


def agent_source_files(agent_dir: Path = AGENT_SOURCE_DIR,
                       exclude: tuple[str, ...] = ()) -> list[Path]:
    """The agent package's files (sorted), without caches and ``exclude`` (names)."""
    if not (agent_dir / "__main__.py").is_file():
        raise ImageBuildError(f"agent package not found at {agent_dir}")
    return sorted(
        p
        for p in agent_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
        and p.name not in exclude
    )


def source_hash(dockerfile: Path | None = None, agent_dir: Path = AGENT_SOURCE_DIR,
                extra: str = "", exclude: tuple[str, ...] = FRONTS) -> str:
    """sha256 over the Dockerfile and every agent file (relative path and content) but
    ``exclude``, and ``extra`` (the Claude Code package's version and integrity)."""
    digest = hashlib.sha256()
    df = dockerfile or _dockerfile_path()
    digest.update(b"Dockerfile\0" + df.read_bytes() + b"\0")
    if extra:
        digest.update(b"extra\0" + extra.encode() + b"\0")
    for path in agent_source_files(agent_dir, exclude):
        rel = path.relative_to(agent_dir).as_posix()
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def _write_context(ctx: Path, dockerfile: Path, exclude: tuple[str, ...] = FRONTS) -> None:
    shutil.copyfile(dockerfile, ctx / "Dockerfile")
    target = ctx / "wsctl_agent"
    for src in agent_source_files(exclude=exclude):
        dst = target / src.relative_to(AGENT_SOURCE_DIR)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(0o644)
    for d in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        d.chmod(0o755)


# -- agent image --------------------------------------------------------------------


def _up_to_date(image: Any, digest: str) -> bool:
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return bool(labels.get(SOURCE_HASH_LABEL) == digest)


def _image_base(image: Any) -> str:
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return str(labels.get(BASE_LABEL) or "unknown")


def _source_hash_for(agent: str) -> str:
    if agent == "claude-code":
        return source_hash(_dockerfile_path(agent), extra=_claude_code_extra(), exclude=())
    return source_hash(_dockerfile_path(agent))


def _claude_code_extra() -> str:
    return f"{CLAUDE_CODE.name}@{CLAUDE_CODE.version}|{CLAUDE_CODE.integrity}"


def build_agent_image(
    client: docker.DockerClient,
    *,
    agent: str = "reference",
    tag: str | None = None,
    base_image: str | None = None,
    cache_dir: Path,
    force: bool = False,
    progress: Progress,
) -> ImageBuildResult:
    """Build the agent image unless ``tag`` already carries the current source hash.

    With ``base_image`` the image is also rebuilt when it was built on another base.
    ``agent`` is ``reference`` (wsctl/agent:latest) or ``claude-code``.
    """
    if agent not in AGENTS:
        raise ImageBuildError(f"unknown agent {agent!r}: one of {', '.join(AGENTS)}")
    tag = tag or default_tag(agent)
    dockerfile = _dockerfile_path(agent)
    digest = _source_hash_for(agent)
    current = _get_image(client, tag)
    if (
        current is not None
        and not force
        and _up_to_date(current, digest)
        and (base_image is None or _image_base(current) == base_image)
    ):
        progress(f"image: {tag} is up to date ({str(current.id)[:19]})")
        return ImageBuildResult(
            tag=tag, image_id=str(current.id), base=_image_base(current), built=False
        )

    buildargs: dict[str, str] = {}
    tarball: Path | None = None
    if agent == "claude-code":  # first: a package that fails its check builds nothing
        tarball = fetch_package(CLAUDE_CODE, Path(cache_dir), progress)
        buildargs["CLAUDE_CODE_VERSION"] = CLAUDE_CODE.version
        if base_image:
            base = select_base(client, base_image=base_image, cache_dir=Path(cache_dir),
                               progress=progress)
        else:
            ensure_local_base(client, cache_dir=Path(cache_dir), progress=progress,
                              recipe=NODE_RECIPE)
            base = NODE_BASE
    else:
        base = select_base(client, base_image=base_image, cache_dir=Path(cache_dir),
                           progress=progress)
    progress(f"image: building {tag} on {base}")
    started = time.monotonic()
    image_id: str | None = None
    with tempfile.TemporaryDirectory(prefix="wsctl-agent-build-") as tmp:
        ctx = Path(tmp)
        _write_context(ctx, dockerfile, exclude=() if agent == "claude-code" else FRONTS)
        if tarball is not None:
            unpack_package(tarball, ctx / "claude-code")
        try:
            stream = client.api.build(
                path=str(ctx),
                tag=tag,
                buildargs={
                    "BASE_IMAGE": base,
                    "AGENT_SOURCE_HASH": digest,
                    "AGENT_BASE_IMAGE": base,
                    **buildargs,
                },
                rm=True,
                forcerm=True,
                pull=False,
                nocache=force,
                decode=True,
                timeout=BUILD_TIMEOUT,
            )
            for chunk in stream:
                image_id = _handle_build_chunk(chunk, progress) or image_id
        except ImageBuildError:
            raise
        except (APIError, DockerException) as exc:
            raise ImageBuildError(f"docker build of {tag} failed: {_one_line(exc)}") from None
    image = _get_image(client, tag)
    if image is None:
        raise ImageBuildError(f"docker build finished but {tag} is missing")
    if not _up_to_date(image, digest):
        raise ImageBuildError(f"built {tag} lacks the expected {SOURCE_HASH_LABEL} label")
    progress(f"image: built {tag} in {time.monotonic() - started:.1f}s ({str(image.id)[:19]})")
    if current is not None and current.id != image.id:
        _remove_if_untagged(client, str(current.id))
    return ImageBuildResult(tag=tag, image_id=str(image_id or image.id), base=base, built=True)


_BUILD_NOISE = re.compile(r"^\s*(---> |Removing intermediate container)")


def _handle_build_chunk(chunk: Any, progress: Progress) -> str | None:
    if not isinstance(chunk, dict):
        return None
    if "error" in chunk or "errorDetail" in chunk:
        detail = chunk.get("errorDetail") or {}
        message = detail.get("message") if isinstance(detail, dict) else None
        raise ImageBuildError(
            f"docker build failed: {' '.join(str(message or chunk.get('error')).split())}"
        )
    text = chunk.get("stream")
    if isinstance(text, str):
        for line in text.splitlines():
            if not line.strip() or _BUILD_NOISE.match(line):
                continue
            line = " ".join(line.split()) if line.startswith("Step ") else line.rstrip()
            progress(f"build: {line if len(line) <= 160 else line[:157] + '...'}")
    aux = chunk.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
        return str(aux["ID"])
    return None


ImageState = Literal["current", "stale", "missing"]


def agent_image_state(client: docker.DockerClient, tag: str = DEFAULT_TAG,
                      agent: str = "reference") -> tuple[ImageState, str]:
    """(state, one line): is `tag` here, and built from the current agent sources?"""
    image = _get_image(client, tag)
    if image is None:
        return "missing", f"{tag} is not built yet"
    try:
        digest = _source_hash_for(agent)
    except ImageBuildError as exc:
        return "stale", f"{tag} is here but its sources cannot be checked: {exc}"
    built = str(image.attrs.get("Created", "?"))[:19]
    if not _up_to_date(image, digest):
        return "stale", f"{tag} ({built}) was built from other agent sources than these"
    return "current", (f"{tag} is current ({str(image.id)[7:19]}, built {built}, "
                       f"base {_image_base(image)})")


def ensure_agent_image(
    client: docker.DockerClient,
    *,
    tag: str | None = None,
    agent: str = "reference",
    cache_dir: Path,
    progress: Progress,
) -> ImageBuildResult:
    """Build the agent image only if it is missing or stale."""
    return build_agent_image(client, agent=agent, tag=tag, cache_dir=cache_dir, force=False,
                             progress=progress)

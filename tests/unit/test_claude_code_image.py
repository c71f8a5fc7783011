"""Building wsctl/agent-claude-code without a Docker engine or the npm registry: the
package comes from a file:// "registry" holding a tarball made here."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from controller.adapters import baseimage, images, npm_package
from controller.adapters.baseimage import BASE_RECIPE_LABEL, NODE_BASE, NODE_RECIPE
from controller.adapters.images import (
    CLAUDE_CODE_TAG,
    SOURCE_HASH_LABEL,
    ImageBuildError,
    build_agent_image,
)
from controller.adapters.npm_package import NpmPackage, fetch_package, integrity_of
from tests.unit.test_images import FakeClient, FakeImage, as_client

FILES = {
    "package/package.json": b'{"name": "@anthropic-ai/claude-code", "version": "9.9.9"}',
    "package/cli.js": b"#!/usr/bin/env node\nconsole.log('9.9.9 (Claude Code)')\n",
    "package/vendor/ripgrep/COPYING": b"license",
    "package/vendor/ripgrep/x64-linux/rg": b"elf",
    "package/vendor/ripgrep/arm64-linux/rg": b"elf",
    "package/vendor/ripgrep/x64-darwin/rg": b"macho",
    "package/vendor/ripgrep/x64-win32/rg.exe": b"pe",
    "package/vendor/seccomp/x64/apply-seccomp": b"elf",
    "package/vendor/seccomp/arm64/apply-seccomp": b"elf",
}


def make_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(("/rg", "seccomp")) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[NpmPackage, Path]:
    """A registry folder serving claude-code 9.9.9, and the package pinned to it."""
    data = make_tarball()
    package = NpmPackage("@anthropic-ai/claude-code", "9.9.9", integrity_of(data))
    folder = tmp_path / "registry"
    served = folder / package.name / "-" / package.tarball_name
    served.parent.mkdir(parents=True)
    served.write_bytes(data)
    monkeypatch.setenv("WSCTL_NPM_REGISTRY", folder.as_uri())
    monkeypatch.setattr(images, "CLAUDE_CODE", package)
    return package, served


def test_the_pinned_package_and_the_python_base_recipe() -> None:
    assert npm_package.CLAUDE_CODE.url() == (
        "https://registry.npmjs.org/@anthropic-ai/claude-code/-/claude-code-2.1.112.tgz")
    assert npm_package.CLAUDE_CODE.integrity.startswith("sha512-9FUgJ0EOvILyhIqx")
    # the node base is a recipe of its own; the python base's hash did not move (an
    # existing wsctl/base:bookworm is not remade)
    assert baseimage.BASE_RECIPE == "7a8952adf30cdaa7"
    assert NODE_RECIPE.recipe_hash != baseimage.BASE_RECIPE
    assert "nodejs" in NODE_RECIPE.packages and NODE_RECIPE.node_major == 18


def test_fetch_verifies_and_caches(tmp_path: Path, registry: tuple[NpmPackage, Path]) -> None:
    package, served = registry
    lines: list[str] = []
    path = fetch_package(package, tmp_path / "cache", lines.append)
    assert path == tmp_path / "cache" / "npm" / "claude-code-9.9.9.tgz"
    assert integrity_of(path.read_bytes()) == package.integrity
    served.unlink()  # the cache answers now
    assert fetch_package(package, tmp_path / "cache", lines.append) == path
    assert any("from the cache" in ln for ln in lines)


def test_an_integrity_mismatch_is_an_error_and_builds_nothing(
        tmp_path: Path, registry: tuple[NpmPackage, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    package, served = registry
    served.write_bytes(served.read_bytes() + b"tampered")
    with pytest.raises(ImageBuildError, match="fails its integrity check: expected sha512-"):
        fetch_package(package, tmp_path / "cache", print)
    assert not (tmp_path / "cache" / "npm" / package.tarball_name).exists()
    made: list[object] = []
    monkeypatch.setattr(images, "ensure_local_base", lambda *a, **k: made.append(k))
    fake = FakeClient({})
    with pytest.raises(ImageBuildError, match="nothing was built"):
        build_agent_image(as_client(fake), agent="claude-code", cache_dir=tmp_path / "cache",
                          progress=print)
    assert fake.api.builds == [] and made == []  # no base made, no image built


def test_unpack_keeps_this_platform_only(tmp_path: Path,
                                         registry: tuple[NpmPackage, Path]) -> None:
    package, _ = registry
    tarball = fetch_package(package, tmp_path / "cache", print)
    dest = tmp_path / "out"
    npm_package.unpack_package(tarball, dest, machine="x86_64")
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert found == ["cli.js", "package.json", "vendor/ripgrep/COPYING",
                     "vendor/ripgrep/x64-linux/rg", "vendor/seccomp/x64/apply-seccomp"]
    assert (dest / "cli.js").stat().st_mode & 0o111  # the `claude` link points at it


def test_claude_code_image_builds_on_the_node_base(
        tmp_path: Path, registry: tuple[NpmPackage, Path]) -> None:
    node_base = FakeImage(NODE_BASE, {BASE_RECIPE_LABEL: NODE_RECIPE.recipe_hash})
    fake = FakeClient({NODE_BASE: node_base})
    contexts: list[list[str]] = []
    original = fake.api.build

    def build(**kwargs: Any) -> list[dict[str, Any]]:
        ctx = Path(kwargs["path"])
        contexts.append(sorted(p.relative_to(ctx).as_posix() for p in ctx.rglob("*")))
        return original(**kwargs)

    fake.api.build = build  # type: ignore[method-assign]
    result = build_agent_image(as_client(fake), agent="claude-code",
                               cache_dir=tmp_path / "cache", progress=print)
    assert (result.tag, result.base, result.built) == (CLAUDE_CODE_TAG, NODE_BASE, True)
    (call,) = fake.api.builds
    assert call["buildargs"]["BASE_IMAGE"] == NODE_BASE
    assert call["buildargs"]["CLAUDE_CODE_VERSION"] == "9.9.9"
    assert "claude-code/cli.js" in contexts[0] and "wsctl_agent/claude_code.py" in contexts[0]
    assert "wsctl_agent/kit.py" in contexts[0]
    assert "Dockerfile" in contexts[0]
    digest = call["buildargs"]["AGENT_SOURCE_HASH"]
    assert digest != images.source_hash()  # not the reference agent's hash
    # up to date now: nothing is fetched or built again
    assert fake.images.present[CLAUDE_CODE_TAG].attrs["Config"]["Labels"][
        SOURCE_HASH_LABEL] == digest
    again = build_agent_image(as_client(fake), agent="claude-code",
                              cache_dir=tmp_path / "cache", progress=print)
    assert again.built is False and len(fake.api.builds) == 1


def test_the_example_runs_the_claude_code_image_through_the_gateway() -> None:
    from controller.core.manifests import load, workspaces

    example = Path(__file__).resolve().parents[2] / "examples" / "claude-code.yaml"
    (ws,) = workspaces(load([example]))
    assert ws.spec.image == CLAUDE_CODE_TAG == images.default_tag("claude-code")
    assert ws.spec.llm is not None
    assert (ws.spec.llm.provider, ws.spec.llm.access) == ("minimax", "gateway")


def test_the_front_is_not_in_the_reference_image(tmp_path: Path) -> None:
    """A change to the Claude Code front neither ships in nor rebuilds wsctl/agent."""
    agent = tmp_path / "agent"
    shutil.copytree(images.AGENT_SOURCE_DIR, agent,
                    ignore=shutil.ignore_patterns("__pycache__"))
    reference = images.source_hash(images.DOCKERFILE, agent)
    (agent / "claude_code.py").write_text("# changed\n")
    assert images.source_hash(images.DOCKERFILE, agent) == reference
    assert images.source_hash(images.DOCKERFILE, agent, exclude=()) != \
        images.source_hash(images.DOCKERFILE, images.AGENT_SOURCE_DIR, exclude=())
    (agent / "kit.py").write_text((agent / "kit.py").read_text() + "# changed\n")
    assert images.source_hash(images.DOCKERFILE, agent) != reference
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    images._write_context(ctx, images.DOCKERFILE)
    assert (ctx / "wsctl_agent" / "kit.py").is_file()
    assert not (ctx / "wsctl_agent" / "claude_code.py").exists()

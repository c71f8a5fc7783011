"""The container a reconcile would create for a workspace. Pure: no I/O.

`container_spec` is the one recipe for a workspace container. The Docker
adapter turns a `ContainerSpec` into engine calls; `wsctl render` prints it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from controller.core.model import DEFAULT_IMAGE, DEFAULT_MOUNT_PATH, Workspace
from controller.core.projection import EnvValue, LlmGrant, Projection
from controller.core.settings import AGENT_UID, CONFIG_MOUNT, PlatformSettings

LABEL_PREFIX = "wsctl.dev/"
LABEL_MANAGED_BY = LABEL_PREFIX + "managed-by"
LABEL_WORKSPACE = LABEL_PREFIX + "workspace"
LABEL_CONFIG_HASH = LABEL_PREFIX + "config-hash"
LABEL_TOKEN_GENERATION = LABEL_PREFIX + "token-generation"
LABEL_RESTARTED_AT = LABEL_PREFIX + "restarted-at"
LABEL_INSTANCE = LABEL_PREFIX + "instance"
LABEL_WORKSPACE_UID = LABEL_PREFIX + "workspace-uid"
"""On a storage volume: the uid of the workspace object that created it."""
LABEL_VOLUME = LABEL_PREFIX + "volume"
"""On a storage volume: its role ("workspace")."""
MANAGED_BY = "wsctl"


def _prefix(instance: str) -> str:
    return "wsctl" if instance == "default" else f"wsctl-{instance}"


def container_name(workspace_id: str, generation: int, instance: str = "default") -> str:
    """Deterministic per token generation, so a retried create finds its container."""
    return f"{_prefix(instance)}-{workspace_id}-g{generation}"


def restarted_at_label(ws: Workspace) -> str:
    restarted_at = ws.spec.restarted_at
    return restarted_at.isoformat() if restarted_at else ""


def config_volume_name(workspace_id: str, instance: str = "default") -> str:
    return f"{_prefix(instance)}-{workspace_id}-configs"


def storage_volume_name(workspace_id: str, instance: str = "default") -> str:
    """The workspace's storage volume: named from its namespace and name only, so
    the same workspace applied again (after a delete with Retain) finds it."""
    return f"{_prefix(instance)}-{workspace_id}-workspace"


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    labels: dict[str, str]
    mount_path: str
    """Where every container of the workspace mounts it."""
    owner_image: str | None = None
    """Set when the image is not known to have `mount_path` owned by the agent's
    uid: a new volume is then chowned once, by a short root container of this
    image with no network and only CAP_CHOWN, and mounted without Docker's
    copy-up (which would copy the image directory's owner back onto it). Unset
    for the reference image at the default path: its /workspace belongs to the
    agent, and Docker's copy-up gives the new volume that owner for free."""


def _owned_by_agent(ws: Workspace) -> bool:
    return ws.spec.storage.mount_path == DEFAULT_MOUNT_PATH \
        and ws.spec.image.split(":", 1)[0] == DEFAULT_IMAGE.split(":", 1)[0]


def storage_volume(ws: Workspace, instance: str = "default") -> VolumeSpec:
    return VolumeSpec(
        name=storage_volume_name(ws.key.id, instance),
        labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: instance,
                LABEL_WORKSPACE: ws.key.id, LABEL_VOLUME: "workspace",
                LABEL_WORKSPACE_UID: ws.metadata.uid or ""},
        mount_path=ws.spec.storage.mount_path,
        owner_image=None if _owned_by_agent(ws) else ws.spec.image)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    type: Literal["volume", "tmpfs"] = "volume"
    read_only: bool = False
    no_copy: bool = False
    """Docker does not copy the image's content at `target` into an empty volume."""


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, EnvValue]
    mounts: tuple[Mount, ...]
    network: str
    agent_port: int
    memory_bytes: int
    nano_cpus: int
    pids_limit: int
    user: str
    config_hash: str
    token_generation: int
    read_only_rootfs: bool = True
    tmpfs: dict[str, str] = field(
        default_factory=lambda: {"/tmp": "rw,nosuid,nodev,size=64m"}  # noqa: S108 (container path)
    )
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges:true",)
    extra_hosts: dict[str, str] = field(
        default_factory=lambda: {"host.docker.internal": "host-gateway"}
    )
    extra_networks: tuple[str, ...] = ()
    """Joined as well before start: egress `open` (an ordinary bridge, a route off)."""
    dns_options: tuple[str, ...] = ()
    """resolv.conf options. Without a route off the host an external name cannot
    resolve; these make the lookup fail in a second, not after glibc's 2 x 5 s."""
    entrypoint: tuple[str, ...] | None = None
    """spec.command: the image's ENTRYPOINT replaced (None: the image's)."""
    command: tuple[str, ...] | None = None
    """spec.args: the image's CMD replaced (None: the image's)."""
    working_dir: str | None = None
    llm: LlmGrant | None = None
    """Gateway mode: the executor mints this generation's LLM credential for it and
    puts it where `env` holds the placeholder."""

    @property
    def wants_llm_credential(self) -> bool:
        return self.llm is not None and any(v.llm_credential for v in self.env.values())

    def with_llm_credential(self, credential: str) -> ContainerSpec:
        """The spec with the minted credential in place of every placeholder."""
        env = {name: EnvValue(credential, secret=True) if v.llm_credential else v
               for name, v in self.env.items()}
        return dataclasses.replace(self, env=env)

    def shown(self) -> dict[str, object]:
        """Printable form: secret env values are shown as <set>, never their value."""
        return {
            "name": self.name,
            "image": self.image,
            "user": self.user,
            "labels": dict(self.labels),
            "env": {name: v.shown() for name, v in self.env.items()},
            "mounts": [
                {"type": m.type, "source": m.source, "target": m.target, "readOnly": m.read_only,
                 **({"noCopy": True} if m.no_copy else {})}
                for m in self.mounts
            ],
            "networks": [self.network, *self.extra_networks],
            "agentPort": self.agent_port,
            "limits": {
                "memoryBytes": self.memory_bytes,
                "nanoCpus": self.nano_cpus,
                "pids": self.pids_limit,
            },
            "security": {
                "readOnlyRootfs": self.read_only_rootfs,
                "tmpfs": dict(self.tmpfs),
                "capDrop": list(self.cap_drop),
                "securityOpt": list(self.security_opt),
            },
            "extraHosts": dict(self.extra_hosts),
            **({"dnsOptions": list(self.dns_options)} if self.dns_options else {}),
            **({"command": list(self.entrypoint)} if self.entrypoint is not None else {}),
            **({"args": list(self.command)} if self.command is not None else {}),
            **({"workingDir": self.working_dir} if self.working_dir is not None else {}),
            "configHash": self.config_hash,
        }


def container_spec(ws: Workspace, projection: Projection, settings: PlatformSettings,
                   token_generation: int) -> ContainerSpec:
    workspace_id = ws.key.id
    return ContainerSpec(
        name=container_name(workspace_id, token_generation, settings.instance),
        image=ws.spec.image,
        labels={
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_INSTANCE: settings.instance,
            LABEL_WORKSPACE: workspace_id,
            LABEL_CONFIG_HASH: projection.config_hash,
            LABEL_TOKEN_GENERATION: str(token_generation),
            LABEL_RESTARTED_AT: restarted_at_label(ws),
        },
        env=projection.env,
        mounts=(Mount(source=config_volume_name(workspace_id, settings.instance),
                      target=CONFIG_MOUNT),
                Mount(source=storage_volume_name(workspace_id, settings.instance),
                      target=ws.spec.storage.mount_path, no_copy=not _owned_by_agent(ws))),
        network=settings.network,
        extra_networks=(settings.open_network,) if ws.spec.egress.mode == "open" else (),
        dns_options=() if ws.spec.egress.mode == "open" else ("timeout:1", "attempts:1"),
        agent_port=settings.agent_port,
        memory_bytes=ws.spec.resources.memory_bytes,
        nano_cpus=ws.spec.resources.nano_cpus,
        pids_limit=settings.pids_limit,
        user=f"{AGENT_UID}:{AGENT_UID}",
        config_hash=projection.config_hash,
        token_generation=token_generation,
        llm=projection.llm,
        entrypoint=tuple(ws.spec.command) if ws.spec.command is not None else None,
        command=tuple(ws.spec.args) if ws.spec.args is not None else None,
        working_dir=ws.spec.working_dir,
    )

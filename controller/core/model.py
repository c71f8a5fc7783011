"""The Workspace object: desired state (spec) and observed state (status).

One source of truth shared by the CLI, the HTTP API, the store and the CRD.
Field names on the wire are camelCase as in Kubernetes; Python attributes are
snake_case. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from controller.core.names import DNS1123_LABEL as DNS1123_LABEL
from controller.core.providers import PROVIDERS, ProviderName
from controller.core.settings import DEFAULT_IMAGE as DEFAULT_IMAGE

API_VERSION: Literal["wsctl.dev/v1alpha1"] = "wsctl.dev/v1alpha1"
KIND: Literal["Workspace"] = "Workspace"
DEFAULT_NAMESPACE = "default"

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
MEMORY_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<unit>Ki|Mi|Gi|Ti|k|M|G|T)?$")
CPU_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<milli>m)?$")

# Environment names the platform itself projects; users cannot set them.
RESERVED_ENV_PREFIX = "WSCTL_"

_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
MIN_TOKEN_EXPIRATION_SECONDS = 10  # the agent re-reads its token every heartbeat (default 5 s)
MAX_TOKEN_EXPIRATION_SECONDS = 7 * 86400
MIN_IDLE_TIMEOUT_SECONDS = 10
MAX_IDLE_TIMEOUT_SECONDS = 30 * 86400
MIN_LIVENESS_TIMEOUT_SECONDS = 10
MAX_LIVENESS_TIMEOUT_SECONDS = 86400
DEFAULT_LIVENESS_TIMEOUT_SECONDS = 60
"""Four heartbeat TTLs at the default --heartbeat-seconds 5 (TTL 15 s): a short docker
pause, network blip or database restart is reported (HeartbeatStale), not acted on."""
MIN_MEMORY_BYTES = 32 * 2**20  # below this the Python agent cannot start
MAX_CPUS = 64.0


# Fields users reach for that would give a workspace the host. Named with the
# reason instead of pydantic's generic "extra inputs are not permitted".
FORBIDDEN_SPEC_FIELDS = {
    "privileged": "workspaces never run privileged",
    "hostNetwork": "workspaces never share the host's network",
    "hostPID": "workspaces never share the host's process namespace",
    "hostIPC": "workspaces never share the host's IPC namespace",
    "volumes": "a workspace gets only its own volume (spec.storage); host paths are never "
               "mounted",
    "mounts": "a workspace gets only its own volume (spec.storage); host paths are never "
              "mounted",
    "binds": "host paths are never mounted into workspaces",
    "dockerSocket": "the Docker socket is never given to a workspace",
    "capAdd": "workspaces run with every capability dropped",
    "capabilities": "workspaces run with every capability dropped",
    "securityContext": "the container's security settings are fixed by wsctl",
    "devices": "host devices are never given to a workspace",
    "user": "the agent always runs as its own non-root user",
}


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def parse_memory(quantity: str) -> int:
    """Kubernetes-style memory quantity ("512Mi", "1G", "1048576") to bytes."""
    match = MEMORY_QUANTITY.match(quantity.strip())
    if not match:
        raise ValueError(
            f"{quantity!r} is not a memory quantity (examples: 512Mi, 1Gi, 268435456)"
        )
    return int(float(match["num"]) * _MEMORY_UNITS[match["unit"]])


def parse_cpus(quantity: str) -> float:
    """Kubernetes-style CPU quantity ("1", "0.5", "500m") to a number of CPUs."""
    match = CPU_QUANTITY.match(quantity.strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a CPU quantity (examples: 1, 0.5, 500m)")
    value = float(match["num"])
    return value / 1000 if match["milli"] else value


class SecretKeyRef(_Model):
    """Points at one key of a named secret; the value never lives in the spec."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]

    @field_validator("name")
    @classmethod
    def _name_is_dns(cls, value: str) -> str:
        if not DNS1123_LABEL.match(value):
            raise ValueError(
                "must be a DNS-1123 label: lower case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value


class SecretSource(_Model):
    secret_ref: SecretKeyRef


class LLMBudget(_Model):
    """A cap on the tokens the workspace's LLM calls may use per UTC day (gateway mode:
    the gateway counts them and, once the day's total reaches it, refuses calls)."""

    tokens_per_day: Annotated[int, Field(ge=1)]


LLMAccess = Literal["gateway", "direct"]
"""gateway (default): the container gets the controller's LLM gateway as its base URL
and a per-generation workspace credential; the provider key stays in the controller.
direct: the key itself is in the container's environment (the agent and anything it
runs can read it)."""


class LLMSpec(_Model):
    provider: ProviderName
    api_key: SecretSource | None = None
    base_url: Annotated[str | None, Field(alias="baseURL")] = None
    access: Annotated[LLMAccess, Field(description=(
        "gateway (default): the container gets the controller's LLM gateway as its base "
        "URL and a credential minted per container; the provider key stays in the "
        "controller. direct: the key itself is in the container's environment."))] = "gateway"
    budget: LLMBudget | None = None

    @model_validator(mode="after")
    def _budget_needs_the_gateway(self) -> LLMSpec:
        if self.budget is not None and self.access != "gateway":
            raise ValueError("budget: counted by the LLM gateway, so it needs access: gateway")
        return self

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


class EnvVar(_Model):
    name: Annotated[str, Field(min_length=1, max_length=255)]
    value: str | None = None
    value_from: SecretSource | None = None

    @field_validator("name")
    @classmethod
    def _name_is_env(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError(
                "must be a C identifier: letters, digits and '_', not starting with a digit"
            )
        if value.startswith(RESERVED_ENV_PREFIX):
            raise ValueError(f"names starting with {RESERVED_ENV_PREFIX} are set by the platform")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("set exactly one of value and valueFrom")
        return self


class Resources(_Model):
    memory: str = "512Mi"
    cpus: str = "1"

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if parse_memory(value) < MIN_MEMORY_BYTES:
            raise ValueError(f"must be at least {MIN_MEMORY_BYTES // 2**20}Mi")
        return value

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, value: str) -> str:
        cpus = parse_cpus(value)
        if not 0.01 <= cpus <= MAX_CPUS:
            raise ValueError(f"must be between 0.01 (10m) and {MAX_CPUS:g}")
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)

    @property
    def nano_cpus(self) -> int:
        return round(parse_cpus(self.cpus) * 1e9)


PURGE_ANNOTATION = "wsctl.dev/purge"
"""Set to "true" on a workspace before deleting it: its storage volume is removed
too, whatever spec.storage.reclaimPolicy says (`wsctl delete --purge`)."""
DEFAULT_MOUNT_PATH = "/workspace"
MOUNT_PATH = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
# Container paths the platform owns: the storage volume may not hide or shadow them.
RESERVED_PATHS = ("/configs", "/tmp", "/proc",  # noqa: S108 - container paths, refused "/sys", "/dev", "/etc", "/usr", "/bin",
                  "/sbin", "/lib", "/lib64", "/opt/wsctl", "/run", "/var/run")


class StorageSpec(_Model):
    """The workspace's own volume: it outlives every container of the workspace."""

    mount_path: str = DEFAULT_MOUNT_PATH
    reclaim_policy: Literal["Retain", "Delete"] = "Retain"
    """On delete: Retain keeps the volume (the same namespace/name applied again
    re-attaches it); Delete removes it once the container is gone."""

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        if len(value) > 255 or not MOUNT_PATH.match(value) or any(
                part in (".", "..") for part in value.split("/")):
            raise ValueError("must be an absolute path such as /workspace (letters, digits, "
                             "'.', '_', '-'; no '..', no trailing '/')")
        for reserved in RESERVED_PATHS:
            if value == reserved or value.startswith(reserved + "/") \
                    or reserved.startswith(value + "/"):
                raise ValueError(f"{value} would hide or shadow {reserved}, which the "
                                 "container needs")
        return value


EgressMode = Literal["none", "allowlist", "open"]
_EGRESS_HOST = re.compile(
    r"(\*\.)?(?=.{1,253}(:|$))([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*"
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:[0-9]{1,5})?")


class EgressSpec(_Model):
    """Where the workspace may connect beyond the controller.

    none (default): nothing leaves but through the controller (registry, LLM gateway).
    allowlist: HTTP and HTTPS to the hosts in `allow` through the controller's egress
    proxy (host names, `*.domain` wildcards, `host:port`). open: an ordinary Docker
    network, with a route to what the host reaches (opt-in, shown as such)."""

    mode: EgressMode = "none"
    allow: Annotated[list[str], Field(max_length=256)] = Field(default_factory=list)

    @field_validator("allow")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for i, entry in enumerate(value):
            if not _EGRESS_HOST.fullmatch(entry.lower()):
                raise ValueError(f"allow[{i}] {entry!r} is not a host name, *.domain or "
                                 "host:port")
            port = entry.rpartition(":")[2] if ":" in entry else None
            if port is not None and not 0 < int(port) < 65536:
                raise ValueError(f"allow[{i}] {entry!r}: port out of range")
        return [entry.lower() for entry in value]

    @model_validator(mode="after")
    def _allow_needs_allowlist(self) -> EgressSpec:
        if self.allow and self.mode != "allowlist":
            raise ValueError(f"allow: only read with mode: allowlist (mode is {self.mode})")
        return self


MAX_PROBE_SECONDS = 3600
ABSOLUTE_PATH = re.compile(r"^/\S*$")


class HTTPGetAction(_Model):
    """GET http://<container address>:<port><path>; a status from 200 to 399 is success."""

    path: Annotated[str, Field(max_length=2048)] = "/"
    port: Annotated[int, Field(ge=1, le=65535)]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(ch.isspace() for ch in value):
            raise ValueError("must start with '/' and contain no spaces")
        return value


class TCPSocketAction(_Model):
    """A TCP connection to <container address>:<port> opens."""

    port: Annotated[int, Field(ge=1, le=65535)]


class ExecAction(_Model):
    """The command (no shell) exits 0 inside the container, as the agent's user."""

    command: Annotated[list[Annotated[str, Field(max_length=4096)]],
                       Field(min_length=1, max_length=64)]


class Probe(_Model):
    """A Kubernetes-shaped probe, run by the controller (spec.agent.protocol: none)."""

    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    initial_delay_seconds: Annotated[int, Field(ge=0, le=MAX_PROBE_SECONDS)] = 0
    period_seconds: Annotated[int, Field(ge=1, le=MAX_PROBE_SECONDS)] = 10
    timeout_seconds: Annotated[int, Field(ge=1, le=MAX_PROBE_SECONDS)] = 1
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3

    @model_validator(mode="after")
    def _one_handler(self) -> Probe:
        handlers = [name for name, value in (("httpGet", self.http_get),
                                             ("tcpSocket", self.tcp_socket),
                                             ("exec", self.exec)) if value is not None]
        if len(handlers) != 1:
            raise ValueError("set exactly one of httpGet, tcpSocket and exec"
                             + (f" (found {', '.join(handlers)})" if handlers else ""))
        return self

    def shown(self) -> str:
        """The handler, as conditions and events name it: `httpGet :8000/healthz`."""
        if self.http_get is not None:
            return f"httpGet :{self.http_get.port}{self.http_get.path}"
        if self.tcp_socket is not None:
            return f"tcpSocket :{self.tcp_socket.port}"
        assert self.exec is not None
        return "exec " + " ".join(self.exec.command)


AgentProtocol = Literal["wsctl", "none"]


class AgentSpec(_Model):
    """How the controller knows the agent is up.

    wsctl (default): the agent registers and heartbeats (docs/agents.md); Ready means
    heard from. none: any image; Ready comes from spec.readinessProbe (or, with no
    probe, from the container running) and spec.livenessProbe recreates it."""

    protocol: Annotated[AgentProtocol, Field(description=(
        "wsctl (default): the agent registers and heartbeats with the controller. none: "
        "readiness and liveness come from spec.readinessProbe / spec.livenessProbe."))] \
        = "wsctl"
    a2a_port: Annotated[int | None, Field(ge=1, le=65535, alias="a2aPort", description=(
        "protocol none: the container port that answers A2A JSON-RPC (wsctl send); "
        "unset, the workspace takes no messages."))] = None


class WorkspaceSpec(_Model):
    image: Annotated[str, Field(min_length=1, max_length=255)] = DEFAULT_IMAGE
    model: Annotated[str | None, Field(max_length=255)] = None
    llm: LLMSpec | None = None
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    startup_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 180
    """A container whose agent has not registered nor heartbeated this long after its
    start is recreated once (StartupTimeout); a replacement that times out too waits
    a back-off before the next attempt."""
    liveness_timeout_seconds: Annotated[
        int, Field(ge=MIN_LIVENESS_TIMEOUT_SECONDS, le=MAX_LIVENESS_TIMEOUT_SECONDS)
    ] = DEFAULT_LIVENESS_TIMEOUT_SECONDS
    """A container whose agent has not been heard from this long (no heartbeat; never
    less than the heartbeat TTL) is recreated (LivenessFailed), within the crash-loop
    back-off. Shorter silences are reported (HeartbeatStale), not acted on."""
    token_expiration_seconds: Annotated[
        int | None, Field(ge=MIN_TOKEN_EXPIRATION_SECONDS, le=MAX_TOKEN_EXPIRATION_SECONDS)
    ] = None
    """Agent token lifetime. Unset: the token lives as long as its container.
    Set: the controller refreshes it at half its lifetime, in place, without a
    recreate (like a projected service-account token)."""
    paused: bool = False
    restarted_at: datetime | None = None
    idle_timeout_seconds: Annotated[int | None, Field(ge=MIN_IDLE_TIMEOUT_SECONDS,
                                                      le=MAX_IDLE_TIMEOUT_SECONDS)] = None
    """With no A2A message, exec or copy for this long, the controller suspends the
    workspace (stops its container; files stay); the next message or exec wakes it.
    Unset: never."""
    storage: StorageSpec = Field(default_factory=StorageSpec)
    egress: EgressSpec = Field(default_factory=EgressSpec)
    command: Annotated[list[Annotated[str, Field(max_length=4096)]] | None,
                       Field(min_length=1, max_length=256, description=(
                           "The image's ENTRYPOINT replaced, as a Pod's command."))] = None
    args: Annotated[list[Annotated[str, Field(max_length=4096)]] | None,
                    Field(max_length=256, description=(
                        "The image's CMD replaced, as a Pod's args."))] = None
    working_dir: Annotated[str | None, Field(max_length=255, description=(
        "The process's working directory (absolute); unset, the image's WORKDIR."))] = None
    agent: AgentSpec = Field(default_factory=AgentSpec)
    readiness_probe: Probe | None = None
    """protocol none: Ready while it succeeds; after failureThreshold failures in a row
    the workspace is Degraded ReadinessProbeFailed (not recreated)."""
    liveness_probe: Probe | None = None
    """protocol none: after failureThreshold failures in a row the container is
    recreated (LivenessProbeFailed), within the crash-loop back-off."""

    @model_validator(mode="before")
    @classmethod
    def _no_host_access(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in FORBIDDEN_SPEC_FIELDS.items():
                if key in data:
                    raise ValueError(f"spec.{key} is not allowed: {why}")
        return data

    @field_validator("image")
    @classmethod
    def _image_ref(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9._/:@-]*$", value) or value.endswith((":", "/")):
            raise ValueError("must be an image reference such as wsctl/agent:latest")
        return value

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        if value is not None and not ABSOLUTE_PATH.match(value):
            raise ValueError("must be an absolute path such as /workspace")
        return value

    @model_validator(mode="after")
    def _probes_need_protocol_none(self) -> WorkspaceSpec:
        if self.agent.protocol == "none":
            return self
        for field_name, value in (("readinessProbe", self.readiness_probe),
                                  ("livenessProbe", self.liveness_probe),
                                  ("agent.a2aPort", self.agent.a2a_port)):
            if value is not None:
                raise ValueError(
                    f"{field_name}: only read with agent.protocol: none (a wsctl agent's "
                    "health is its registration and heartbeats)")
        return self

    @model_validator(mode="after")
    def _env_is_consistent(self) -> WorkspaceSpec:
        seen: set[str] = set()
        owned = PROVIDERS[self.llm.provider].projected_names() if self.llm else frozenset()
        for index, var in enumerate(self.env):
            if var.name in seen:
                raise ValueError(f"env[{index}].name: {var.name} is set twice")
            if var.name in owned:
                raise ValueError(
                    f"env[{index}].name: {var.name} is projected from spec.llm "
                    "(use spec.llm.apiKey / spec.llm.baseURL / spec.model)"
                )
            seen.add(var.name)
        return self


class ObjectMeta(BaseModel):
    """The subset of Kubernetes ObjectMeta wsctl uses; other keys are kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    name: Annotated[str, Field(min_length=1, max_length=63)]
    namespace: Annotated[str, Field(min_length=1, max_length=63)] = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS1123_LABEL.match(value):
            raise ValueError(
                "must be a DNS-1123 label: at most 63 lower case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value


class ConditionType(StrEnum):
    READY = "Ready"
    DEGRADED = "Degraded"
    PROGRESSING = "Progressing"


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    ONLINE = "Online"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    SUSPENDED = "Suspended"
    """Stopped by the controller (idle) or `wsctl suspend`; a message or exec wakes it."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    """metav1.Condition: lastTransitionTime moves only when status flips."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, Field(min_length=1, max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: Annotated[int | None, Field(ge=0)] = None

    @field_validator("reason")
    @classmethod
    def _reason_is_camel(cls, value: str) -> str:
        if not CONDITION_REASON.match(value):
            raise ValueError("must be CamelCase (letters, digits, '_', ',' and ':')")
        return value


class RegisterFailure(_Model):
    at: datetime
    class_: Annotated[str, Field(alias="class")]
    message: str = ""


class WorkspaceStatus(_Model):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    container_id: Annotated[str | None, Field(alias="containerID")] = None
    config_hash: str | None = None
    token_generation: int = 0
    restart_count: int = 0
    last_register_failure: RegisterFailure | None = None
    last_recreate_reason: str | None = None
    restart_context_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class Workspace(_Model):
    api_version: Literal["wsctl.dev/v1alpha1"] = API_VERSION
    kind: Literal["Workspace"] = KIND
    metadata: ObjectMeta
    spec: WorkspaceSpec = Field(default_factory=WorkspaceSpec)
    status: WorkspaceStatus | None = None

    @property
    def key(self) -> WorkspaceKey:
        return WorkspaceKey(self.metadata.namespace, self.metadata.name)

    def to_wire(self) -> dict[str, Any]:
        """The object as JSON-ready camelCase data, without unset status."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True, order=True)
class WorkspaceKey:
    """Identity of a workspace. `id` joins with '.', which no DNS label contains."""

    namespace: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.namespace}.{self.name}"

    @classmethod
    def from_id(cls, workspace_id: str) -> WorkspaceKey:
        namespace, sep, name = workspace_id.partition(".")
        if not sep or not DNS1123_LABEL.match(namespace) or not DNS1123_LABEL.match(name):
            raise ValueError(f"{workspace_id!r} is not a workspace id (namespace.name)")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

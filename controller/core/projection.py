"""Projection: spec + resolved secrets + platform settings -> container env.

The only place a container's environment is assembled; create, restart, drift
and token expiry all call `project`. Also computes the config hash that marks
a container as built from exactly this desired state. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controller.core.errors import WsctlError
from controller.core.model import SecretKeyRef, Workspace
from controller.core.providers import PROVIDERS
from controller.core.settings import A2A_CREDENTIAL_PATH, TOKEN_PATH, PlatformSettings

SecretLookup = Mapping[tuple[str, str], str]
"""(secret name, key) -> value."""


@dataclass(frozen=True)
class EnvValue:
    value: str
    secret: bool = False
    llm_credential: bool = False
    """A placeholder: the executor puts the workspace LLM credential it mints for the
    container's generation here (gateway mode); never part of the config hash."""

    def shown(self) -> str:
        """How the value may be printed: secret values never are."""
        if self.llm_credential:
            return "<llm-credential>"
        return "<set>" if self.secret else self.value


LLM_CREDENTIAL = EnvValue("", secret=True, llm_credential=True)


@dataclass(frozen=True)
class LlmGrant:
    """Gateway mode: what a container generation's LLM credential lets it call."""

    provider: str
    base_url: str | None
    """spec.llm.baseURL, or None for the provider's default."""


@dataclass(frozen=True)
class MissingSecret:
    field: str
    ref: SecretKeyRef

    def __str__(self) -> str:
        return f"{self.field}: secret {self.ref.name!r} has no key {self.ref.key!r}"


@dataclass(frozen=True)
class UnreadableSecret:
    """A referenced secret exists but cannot be read (the store's message says why)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


class ProjectionError(WsctlError, ValueError):
    """The spec cannot be projected; each problem names its field."""

    def __init__(self, workspace: str,
                 problems: Sequence[MissingSecret | UnreadableSecret]) -> None:
        self.workspace = workspace
        self.problems = problems
        super().__init__(f"{workspace}: " + "; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Projection:
    env: dict[str, EnvValue] = field(default_factory=dict)
    config_hash: str = ""
    llm: LlmGrant | None = None
    """Set in gateway mode: the container gets a credential for this, not the key."""

    def plain_env(self) -> dict[str, str]:
        """Name -> value, for the container engine only: never log this."""
        return {name: v.value for name, v in self.env.items()}

    def shown_env(self) -> dict[str, str]:
        return {name: v.shown() for name, v in self.env.items()}


def _resolve(ref: SecretKeyRef, where: str, secrets: SecretLookup,
             missing: list[MissingSecret]) -> str | None:
    value = secrets.get((ref.name, ref.key))
    if value is None:
        missing.append(MissingSecret(where, ref))
    return value


def project_env(ws: Workspace, secrets: SecretLookup,
                settings: PlatformSettings) -> dict[str, EnvValue]:
    spec = ws.spec
    missing: list[MissingSecret] = []
    env: dict[str, EnvValue] = {"LOG_LEVEL": EnvValue(settings.log_level)}

    for index, var in enumerate(spec.env):
        if var.value is not None:
            env[var.name] = EnvValue(var.value)
        elif var.value_from is not None:
            value = _resolve(var.value_from.secret_ref, f"spec.env[{index}].valueFrom.secretRef",
                             secrets, missing)
            if value is not None:
                env[var.name] = EnvValue(value, secret=True)

    if spec.llm is not None:
        provider = PROVIDERS[spec.llm.provider]
        gateway = spec.llm.access == "gateway"
        base_url = provider.gateway_base_url(settings.registry_url) if gateway else \
            provider.normalize_base_url(spec.llm.base_url or provider.default_base_url)
        for name in provider.base_url_vars:
            env[name] = EnvValue(base_url)
        if spec.model:
            for name in provider.model_vars:
                env[name] = EnvValue(spec.model)
            for name in provider.tier_model_vars:
                env.setdefault(name, EnvValue(spec.model))
        key = None
        if spec.llm.api_key is not None:
            # Resolved in both modes: a missing key is reported at apply time, not at
            # the agent's first call. In gateway mode it goes no further.
            key = _resolve(spec.llm.api_key.secret_ref, "spec.llm.apiKey.secretRef",
                           secrets, missing)
        if key is not None:  # no key, no credential: the agent says so (AgentUnhealthy)
            for name in provider.key_vars:
                env[name] = LLM_CREDENTIAL if gateway else EnvValue(key, secret=True)

    if missing:
        raise ProjectionError(str(ws.key), missing)

    if spec.egress.mode == "allowlist":  # what HTTP clients read, both spellings
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = EnvValue(settings.egress_proxy_url)
        for name in ("NO_PROXY", "no_proxy"):  # the registry and the LLM gateway
            env[name] = EnvValue("host.docker.internal,localhost,127.0.0.1")

    env.update({
        "WSCTL_WORKSPACE_ID": EnvValue(ws.key.id),
        "WSCTL_WORKSPACE_NAME": EnvValue(ws.metadata.name),
        "WSCTL_REGISTRY_URL": EnvValue(settings.registry_url),
        "WSCTL_AGENT_PORT": EnvValue(str(settings.agent_port)),
        "WSCTL_HEARTBEAT_SECONDS": EnvValue(str(settings.heartbeat_seconds)),
        "WSCTL_TOKEN_FILE": EnvValue(TOKEN_PATH),
        "WSCTL_A2A_CREDENTIAL_FILE": EnvValue(A2A_CREDENTIAL_PATH),
        "WSCTL_WORKSPACE_DIR": EnvValue(ws.spec.storage.mount_path),
    })
    return dict(sorted(env.items()))


def secret_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def config_hash(ws: Workspace, env: Mapping[str, EnvValue],
                llm: LlmGrant | None = None) -> str:
    """Hash of everything that, when changed, needs a new container.

    Stable across dict order; secret values enter only as their SHA-256. In gateway
    mode the key enters not at all (a new key needs no new container: the gateway
    reads it per call) but where the credential leads does (a credential is bound to
    its provider and upstream).
    """
    canonical = json.dumps(config_material(ws, env, llm), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_material(ws: Workspace, env: Mapping[str, EnvValue],
                    llm: LlmGrant | None = None) -> dict[str, object]:
    """What `config_hash` hashes: two workspaces whose material differs need different
    containers (`wsctl diff` names the keys that differ)."""
    spec = ws.spec
    material: dict[str, object] = {
        "image": spec.image,
        "env": {
            name: "llm-credential" if v.llm_credential
            else ("sha256:" + secret_digest(v.value)) if v.secret else v.value
            for name, v in sorted(env.items())
        },
        "memory": spec.resources.memory_bytes,
        "nanoCpus": spec.resources.nano_cpus,
        "restartedAt": spec.restarted_at.isoformat() if spec.restarted_at else None,
    }
    for key, value in (("command", spec.command), ("args", spec.args),
                       ("workingDir", spec.working_dir)):
        if value is not None:  # unset stays out: hashes of existing containers hold
            material[key] = value
    if spec.egress.mode != "none":  # the networks it joins (allow is read per connection)
        material["egress"] = spec.egress.mode
    if llm is not None:
        material["llmGateway"] = {"provider": llm.provider, "baseURL": llm.base_url}
    return material


def llm_grant(ws: Workspace) -> LlmGrant | None:
    llm = ws.spec.llm
    if llm is None or llm.access != "gateway":
        return None
    return LlmGrant(llm.provider, llm.base_url)


def project(ws: Workspace, secrets: SecretLookup, settings: PlatformSettings) -> Projection:
    env = project_env(ws, secrets, settings)
    grant = llm_grant(ws)
    return Projection(env=env, config_hash=config_hash(ws, env, grant), llm=grant)

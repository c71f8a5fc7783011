"""The BYOK provider table: one row per LLM provider. Pure data, no I/O.

A row says which environment variables receive the API key, the base URL and
the model, what the default base URL is, and whether a trailing `/v1` is
stripped from the base URL (Anthropic-compatible SDKs append `/v1/messages`
themselves, so `.../v1` would make them call `/v1/v1/messages`).

For the LLM gateway (issue 15) a row also says which API the endpoint speaks
(`api`: the shape of its error answers), in which header the provider expects
the real key (`key_header`) and what the container's base URL adds after
`/llm/<provider>` (`gateway_suffix`: OpenAI-style clients expect their base URL
to end in `/v1`, Anthropic-style ones append `/v1/...` themselves). `upstream_url`
maps a gateway path back to the provider: the gateway must call exactly the URL
the SDK would have called in `direct` mode with the projected base URL, so a
workspace behaves the same in both modes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

ProviderName = Literal["anthropic", "minimax", "openai", "deepseek", "moonshot"]

WireApi = Literal["anthropic", "openai"]
"""Which API the provider's endpoint speaks, and so the shape of its error answers."""

KeyHeader = Literal["x-api-key", "bearer"]
"""How the provider expects the key on the wire: `x-api-key: <key>` or
`Authorization: Bearer <key>`."""

# Claude Code's model tiers: a provider that knows no Claude names needs each set to its model.
CLAUDE_CODE_TIERS = (
    "ANTHROPIC_SMALL_FAST_MODEL",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL",
    "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "ANTHROPIC_DEFAULT_OPUS_MODEL",
)

_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")


@dataclass(frozen=True)
class Provider:
    name: str
    key_vars: tuple[str, ...]
    base_url_vars: tuple[str, ...]
    default_base_url: str
    model_vars: tuple[str, ...]
    strip_v1: bool
    api: WireApi
    key_header: KeyHeader
    gateway_suffix: str
    """What the container's gateway base URL adds after `/llm/<name>`: "" or "/v1"."""
    tier_model_vars: tuple[str, ...] = ()
    """Set to spec.model too, unless spec.env sets them: the model names a client picks
    for its other tiers (Claude Code's small fast model, its haiku/sonnet/opus
    aliases), which a provider that knows no Claude model names would refuse."""

    def projected_names(self) -> frozenset[str]:
        return frozenset(self.key_vars + self.base_url_vars + self.model_vars)

    def normalize_base_url(self, url: str) -> str:
        """Drop trailing slashes and, for Anthropic-style APIs, a trailing /v1."""
        url = url.strip().rstrip("/")
        if self.strip_v1:
            while url.endswith("/v1"):
                url = url[: -len("/v1")].rstrip("/")
        return url

    def key_headers(self, key: str) -> dict[str, str]:
        """The header carrying the real key to the provider."""
        if self.key_header == "x-api-key":
            return {"x-api-key": key}
        return {"Authorization": f"Bearer {key}"}

    def gateway_base_url(self, gateway: str) -> str:
        """The base URL a gateway-mode container is given, `gateway` being the
        gateway's origin (`http://host:port`): `.../llm/<name>` plus the suffix."""
        return f"{gateway.rstrip('/')}/llm/{self.name}{self.gateway_suffix}"

    def upstream_url(self, tail: str, base_url: str | None = None, query: str = "") -> str | None:
        """The provider URL for a gateway request `/llm/<name>/<tail>` (tail raw,
        still percent-encoded), or None when the path is not one to forward.

        The upstream base is `base_url` (the workspace's `spec.llm.baseURL`) or the
        default, normalised as the projection does; the tail minus the gateway
        suffix is appended to it, which is what the SDK would call in direct mode.
        `/v1` appears exactly once where base and tail meet: a base ending in
        `/v1` (OpenAI-style) and a tail starting with `v1/` (a client that added
        one more) do not make `/v1/v1`. Dot segments (`..`, also percent-encoded)
        are refused: a request must stay under the provider's base URL.
        """
        tail = tail.lstrip("/")
        if _DOT_SEGMENT.search(unquote(tail)) or "\\" in unquote(tail):
            return None
        prefix = self.gateway_suffix.strip("/")
        if prefix:
            if tail != prefix and not tail.startswith(prefix + "/"):
                return None
            tail = tail[len(prefix):].lstrip("/")
        base = self.normalize_base_url(base_url or self.default_base_url)
        while tail.startswith("v1/v1/") or tail == "v1/v1":
            tail = tail[len("v1/"):]
        if base.endswith("/v1") and (tail == "v1" or tail.startswith("v1/")):
            tail = tail[len("v1"):].lstrip("/")
        url = f"{base}/{tail}" if tail else base
        return f"{url}?{query}" if query else url


PROVIDERS: dict[str, Provider] = {
    "anthropic": Provider(
        name="anthropic",
        key_vars=("ANTHROPIC_API_KEY",),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.anthropic.com",
        model_vars=("ANTHROPIC_MODEL",),
        strip_v1=True,
        api="anthropic",
        key_header="x-api-key",
        gateway_suffix="",
    ),
    "minimax": Provider(
        name="minimax",
        key_vars=("MINIMAX_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.minimax.io/anthropic",
        model_vars=("ANTHROPIC_MODEL", "MINIMAX_MODEL"),
        strip_v1=True,
        api="anthropic",
        key_header="bearer",
        gateway_suffix="",
        tier_model_vars=CLAUDE_CODE_TIERS,
    ),
    "deepseek": Provider(
        name="deepseek",
        key_vars=("DEEPSEEK_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.deepseek.com/anthropic",
        model_vars=("ANTHROPIC_MODEL",),
        strip_v1=True,
        api="anthropic",
        key_header="bearer",
        gateway_suffix="",
        tier_model_vars=CLAUDE_CODE_TIERS,
    ),
    "moonshot": Provider(
        name="moonshot",
        key_vars=("MOONSHOT_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.moonshot.ai/anthropic",
        model_vars=("ANTHROPIC_MODEL",),
        strip_v1=True,
        api="anthropic",
        key_header="bearer",
        gateway_suffix="",
        tier_model_vars=CLAUDE_CODE_TIERS,
    ),
    # OpenAI-style clients expect the /v1 in the base URL: keep it.
    "openai": Provider(
        name="openai",
        key_vars=("OPENAI_API_KEY",),
        base_url_vars=("OPENAI_BASE_URL",),
        default_base_url="https://api.openai.com/v1",
        model_vars=("OPENAI_MODEL",),
        strip_v1=False,
        api="openai",
        key_header="bearer",
        gateway_suffix="/v1",
    ),
}

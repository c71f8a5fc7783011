"""The BYOK provider table: one row per LLM provider. Pure data, no I/O.

A row says which environment variables receive the API key, the base URL and
the model, what the default base URL is, and whether a trailing `/v1` is
stripped from the base URL (Anthropic-compatible SDKs append `/v1/messages`
themselves, so `.../v1` would make them call `/v1/v1/messages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProviderName = Literal["anthropic", "minimax", "openai", "deepseek", "moonshot"]


@dataclass(frozen=True)
class Provider:
    name: str
    key_vars: tuple[str, ...]
    base_url_vars: tuple[str, ...]
    default_base_url: str
    model_vars: tuple[str, ...]
    strip_v1: bool

    def projected_names(self) -> frozenset[str]:
        return frozenset(self.key_vars + self.base_url_vars + self.model_vars)

    def normalize_base_url(self, url: str) -> str:
        """Drop trailing slashes and, for Anthropic-style APIs, a trailing /v1."""
        url = url.strip().rstrip("/")
        if self.strip_v1:
            while url.endswith("/v1"):
                url = url[: -len("/v1")].rstrip("/")
        return url


PROVIDERS: dict[str, Provider] = {
    "anthropic": Provider(
        name="anthropic",
        key_vars=("ANTHROPIC_API_KEY",),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.anthropic.com",
        model_vars=("ANTHROPIC_MODEL",),
        strip_v1=True,
    ),
    "minimax": Provider(
        name="minimax",
        key_vars=("MINIMAX_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.minimax.io/anthropic",
        model_vars=("ANTHROPIC_MODEL", "MINIMAX_MODEL"),
        strip_v1=True,
    ),
    "deepseek": Provider(
        name="deepseek",
        key_vars=("DEEPSEEK_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.deepseek.com/anthropic",
        model_vars=("ANTHROPIC_MODEL",),
        strip_v1=True,
    ),
    "moonshot": Provider(
        name="moonshot",
        key_vars=("MOONSHOT_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
        base_url_vars=("ANTHROPIC_BASE_URL",),
        default_base_url="https://api.moonshot.ai/anthropic",
        model_vars=("ANTHROPIC_MODEL",),
        strip_v1=True,
    ),
    # OpenAI-style clients expect the /v1 in the base URL: keep it.
    "openai": Provider(
        name="openai",
        key_vars=("OPENAI_API_KEY",),
        base_url_vars=("OPENAI_BASE_URL",),
        default_base_url="https://api.openai.com/v1",
        model_vars=("OPENAI_MODEL",),
        strip_v1=False,
    ),
}

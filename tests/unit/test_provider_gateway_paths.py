"""The provider table's gateway columns: where the real key goes, and which upstream
URL a gateway path maps to (exactly one /v1; the URL the SDK calls in direct mode)."""

from __future__ import annotations

import pytest

from controller.core.providers import PROVIDERS

GATEWAY = "http://172.18.0.1:8090"


@pytest.mark.parametrize(("name", "header"), [
    ("anthropic", {"x-api-key": "k"}),
    ("minimax", {"Authorization": "Bearer k"}),
    ("deepseek", {"Authorization": "Bearer k"}),
    ("moonshot", {"Authorization": "Bearer k"}),
    ("openai", {"Authorization": "Bearer k"}),
])
def test_key_header_per_provider(name: str, header: dict[str, str]) -> None:
    assert PROVIDERS[name].key_headers("k") == header


def test_every_provider_has_the_gateway_columns() -> None:
    for provider in PROVIDERS.values():
        assert provider.key_header in ("x-api-key", "bearer")
        assert provider.gateway_suffix in ("", "/v1")
        # Anthropic-compatible endpoints get /v1 from the SDK; OpenAI's is in the base.
        assert (provider.api == "anthropic") == provider.strip_v1
        assert (provider.api == "openai") == (provider.gateway_suffix == "/v1")


@pytest.mark.parametrize(("name", "base"), [
    ("anthropic", f"{GATEWAY}/llm/anthropic"),
    ("minimax", f"{GATEWAY}/llm/minimax"),
    ("openai", f"{GATEWAY}/llm/openai/v1"),
])
def test_gateway_base_url(name: str, base: str) -> None:
    assert PROVIDERS[name].gateway_base_url(GATEWAY + "/") == base


@pytest.mark.parametrize(("name", "base_url", "tail", "expected"), [
    # The seed case: minimax with a trailing /v1/ in spec.llm.baseURL.
    ("minimax", "https://x/anthropic/v1/", "v1/messages", "https://x/anthropic/v1/messages"),
    ("minimax", None, "v1/messages", "https://api.minimax.io/anthropic/v1/messages"),
    ("anthropic", None, "v1/messages", "https://api.anthropic.com/v1/messages"),
    ("anthropic", "https://proxy.example/", "v1/messages/count_tokens",
     "https://proxy.example/v1/messages/count_tokens"),
    ("deepseek", None, "v1/messages", "https://api.deepseek.com/anthropic/v1/messages"),
    ("moonshot", "https://api.moonshot.ai/anthropic/v1", "v1/messages",
     "https://api.moonshot.ai/anthropic/v1/messages"),
    # A client that appended one /v1 too many still gets exactly one.
    ("anthropic", None, "v1/v1/messages", "https://api.anthropic.com/v1/messages"),
    ("openai", None, "v1/chat/completions", "https://api.openai.com/v1/chat/completions"),
    ("openai", "https://api.openai.com/v1/", "v1/responses", "https://api.openai.com/v1/responses"),
    ("openai", None, "v1/v1/chat/completions", "https://api.openai.com/v1/chat/completions"),
    ("openai", None, "v1/models", "https://api.openai.com/v1/models"),
    # An OpenAI-compatible base without /v1: what the SDK would call in direct mode.
    ("openai", "https://generativelanguage.example/v1beta/openai/", "v1/chat/completions",
     "https://generativelanguage.example/v1beta/openai/chat/completions"),
])
def test_upstream_url(name: str, base_url: str | None, tail: str, expected: str) -> None:
    assert PROVIDERS[name].upstream_url(tail, base_url) == expected


def test_upstream_url_keeps_the_query_and_the_encoding() -> None:
    assert PROVIDERS["openai"].upstream_url("v1/models/a%2Fb", None, "limit=2&x=%20") == \
        "https://api.openai.com/v1/models/a%2Fb?limit=2&x=%20"


@pytest.mark.parametrize(("name", "tail"), [
    ("openai", "chat/completions"),  # the openai gateway base ends in /v1
    ("openai", "v1x/chat"),
    ("anthropic", "v1/../admin"),
    ("anthropic", "v1/%2e%2e/admin"),
    ("anthropic", ".."),
    ("minimax", "v1/./messages"),
    ("minimax", "v1/%5C..%5Cx"),
])
def test_paths_not_forwarded(name: str, tail: str) -> None:
    assert PROVIDERS[name].upstream_url(tail) is None


def test_the_host_cannot_be_changed_by_the_path() -> None:
    for tail in ("@evil.example/v1/messages", "/evil.example/v1/messages", "//evil.example"):
        url = PROVIDERS["anthropic"].upstream_url(tail)
        assert url is not None and url.startswith("https://api.anthropic.com/"), url

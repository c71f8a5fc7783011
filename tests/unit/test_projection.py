"""Projection: the provider table row by row, /v1 normalisation, the config hash."""

from __future__ import annotations

from typing import get_args

import pytest

from controller.core.containerspec import container_spec
from controller.core.model import Workspace
from controller.core.projection import (
    LLM_CREDENTIAL,
    LlmGrant,
    MissingSecret,
    ProjectionError,
    config_hash,
    config_material,
    project,
)
from controller.core.providers import PROVIDERS, ProviderName
from controller.core.settings import PlatformSettings
from tests.unit.helpers import minimax, workspace

SETTINGS = PlatformSettings()
KEY = "sk-test-7f3a9c"
SECRETS = {("llm", "key"): KEY, ("minimax", "api-key"): KEY}


def with_provider(provider: str, base_url: str | None = None,
                  access: str = "direct") -> Workspace:
    llm: dict[str, object] = {"provider": provider, "access": access,
                              "apiKey": {"secretRef": {"name": "llm", "key": "key"}}}
    if base_url is not None:
        llm["baseURL"] = base_url
    return workspace(model="m-1", llm=llm)


def test_provider_literal_matches_table() -> None:
    assert set(get_args(ProviderName)) == set(PROVIDERS)


# Expected projection per provider: key vars, base URL vars with default URL, model vars.
EXPECTED = {
    "anthropic": ({"ANTHROPIC_API_KEY"}, {"ANTHROPIC_BASE_URL": "https://api.anthropic.com"},
                  {"ANTHROPIC_MODEL"}),
    "minimax": ({"MINIMAX_API_KEY", "ANTHROPIC_AUTH_TOKEN"},
                {"ANTHROPIC_BASE_URL": "https://api.minimax.io/anthropic"},
                {"ANTHROPIC_MODEL", "MINIMAX_MODEL"}),
    "deepseek": ({"DEEPSEEK_API_KEY", "ANTHROPIC_AUTH_TOKEN"},
                 {"ANTHROPIC_BASE_URL": "https://api.deepseek.com/anthropic"},
                 {"ANTHROPIC_MODEL"}),
    "moonshot": ({"MOONSHOT_API_KEY", "ANTHROPIC_AUTH_TOKEN"},
                 {"ANTHROPIC_BASE_URL": "https://api.moonshot.ai/anthropic"},
                 {"ANTHROPIC_MODEL"}),
    "openai": ({"OPENAI_API_KEY"}, {"OPENAI_BASE_URL": "https://api.openai.com/v1"},
               {"OPENAI_MODEL"}),
}


def test_every_provider_row_is_tested() -> None:
    assert set(EXPECTED) == set(PROVIDERS)


CLAUDE_TIERS = {"ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL"}


@pytest.mark.parametrize("provider", sorted(EXPECTED))
def test_claude_code_tiers_name_the_model_of_a_compatible_provider(provider: str) -> None:
    """Claude Code asks a small fast model for side work; MiniMax, DeepSeek and Moonshot
    know no Claude model names, so every tier is their model."""
    env = project(with_provider(provider), SECRETS, SETTINGS).env
    tiers = {name: env[name].value for name in CLAUDE_TIERS if name in env}
    if provider in {"minimax", "deepseek", "moonshot"}:
        assert tiers == dict.fromkeys(CLAUDE_TIERS, "m-1")
    else:
        assert tiers == {}


def test_a_tier_set_in_spec_env_wins_and_no_model_sets_none() -> None:
    chosen = minimax(env=[{"name": "ANTHROPIC_SMALL_FAST_MODEL", "value": "MiniMax-small"}])
    env = project(chosen, SECRETS, SETTINGS).env
    assert env["ANTHROPIC_SMALL_FAST_MODEL"].value == "MiniMax-small"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"].value == "MiniMax-M3"
    no_model = workspace(llm={"provider": "minimax",
                              "apiKey": {"secretRef": {"name": "llm", "key": "key"}}})
    assert CLAUDE_TIERS & project(no_model, SECRETS, SETTINGS).env.keys() == set()


@pytest.mark.parametrize("provider", sorted(EXPECTED))
def test_provider_row(provider: str) -> None:
    key_vars, url_vars, model_vars = EXPECTED[provider]
    env = project(with_provider(provider), SECRETS, SETTINGS).env
    for name in key_vars:
        assert env[name].value == KEY and env[name].secret, name
    for name, url in url_vars.items():
        assert env[name].value == url and not env[name].secret
    for name in model_vars:
        assert env[name].value == "m-1"
    other_llm_vars = {n for p in PROVIDERS.values() for n in p.projected_names()}
    assert other_llm_vars & env.keys() == key_vars | url_vars.keys() | model_vars


@pytest.mark.parametrize("given, projected", [
    ("https://api.minimax.io/anthropic/v1/", "https://api.minimax.io/anthropic"),
    ("https://api.minimax.io/anthropic/v1", "https://api.minimax.io/anthropic"),
    ("https://api.minimax.io/anthropic/", "https://api.minimax.io/anthropic"),
    ("https://api.minimax.io/anthropic//v1//", "https://api.minimax.io/anthropic"),
    ("http://127.0.0.1:9999/v1/v1", "http://127.0.0.1:9999"),
    ("http://host.docker.internal:9000", "http://host.docker.internal:9000"),
    ("https://proxy.example/v10", "https://proxy.example/v10"),
])
def test_anthropic_style_base_url_loses_trailing_v1(given: str, projected: str) -> None:
    env = project(minimax(base_url=given, access="direct"), SECRETS, SETTINGS).env
    assert env["ANTHROPIC_BASE_URL"].value == projected
    assert not (env["ANTHROPIC_BASE_URL"].value + "/v1/messages").count("/v1/v1")


def test_openai_keeps_its_v1_but_loses_trailing_slash() -> None:
    env = project(with_provider("openai", "https://gw.example/v1/"), SECRETS, SETTINGS).env
    assert env["OPENAI_BASE_URL"].value == "https://gw.example/v1"


def test_platform_vars_and_user_env() -> None:
    ws = minimax(env=[{"name": "LOG_LEVEL", "value": "debug"}, {"name": "FOO", "value": "bar"}])
    env = project(ws, SECRETS, SETTINGS).env
    assert env["WSCTL_WORKSPACE_ID"].value == "default.alice"
    assert env["WSCTL_TOKEN_FILE"].value == "/configs/.auth_token"
    assert env["WSCTL_REGISTRY_URL"].value == SETTINGS.registry_url
    assert env["LOG_LEVEL"].value == "debug"
    assert env["FOO"].value == "bar"


def test_env_value_from_secret_is_marked_secret() -> None:
    ws = minimax(env=[{"name": "GH_TOKEN", "valueFrom": {"secretRef": {"name": "gh", "key": "t"}}}])
    env = project(ws, {**SECRETS, ("gh", "t"): "ghp_x"}, SETTINGS).env
    assert env["GH_TOKEN"].value == "ghp_x" and env["GH_TOKEN"].secret
    assert env["GH_TOKEN"].shown() == "<set>"


def test_missing_secrets_are_all_named_with_their_field() -> None:
    ws = minimax(env=[{"name": "GH_TOKEN", "valueFrom": {"secretRef": {"name": "gh", "key": "t"}}}])
    with pytest.raises(ProjectionError) as info:
        project(ws, {}, SETTINGS)
    fields = [p.field for p in info.value.problems if isinstance(p, MissingSecret)]
    assert fields == ["spec.env[0].valueFrom.secretRef", "spec.llm.apiKey.secretRef"]
    assert "default/alice" in str(info.value) and "'api-key'" in str(info.value)


def test_no_api_key_projects_no_key_var() -> None:
    ws = workspace(llm={"provider": "minimax", "access": "direct"})
    env = project(ws, {}, SETTINGS).env
    assert "ANTHROPIC_AUTH_TOKEN" not in env and "MINIMAX_API_KEY" not in env
    assert env["ANTHROPIC_BASE_URL"].value == "https://api.minimax.io/anthropic"


# ------------------------------------------------------------------ config hash


def test_hash_is_stable_across_dict_order() -> None:
    a = minimax(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    b = minimax(env=[{"name": "B", "value": "2"}, {"name": "A", "value": "1"}])
    assert project(a, SECRETS, SETTINGS).config_hash == project(b, SECRETS, SETTINGS).config_hash
    env = project(a, SECRETS, SETTINGS).env
    reversed_env = dict(reversed(list(env.items())))
    assert config_hash(a, env) == config_hash(a, reversed_env)


@pytest.mark.parametrize("change", [
    {"env": [{"name": "LOG_LEVEL", "value": "debug"}]},
    {"image": "wsctl/agent:v2"},
    {"resources": {"memory": "1Gi", "cpus": "1"}},
    {"resources": {"memory": "512Mi", "cpus": "2"}},
    {"restartedAt": "2026-11-24T00:00:00Z"},
    {"model": "MiniMax-M2"},
    {"command": ["python3", "-m", "http.server"]},
    {"args": ["8000"]},
    {"workingDir": "/srv"},
])
def test_hash_changes_with_every_input(change: dict[str, object]) -> None:
    base = minimax()
    changed = Workspace.model_validate(
        {**base.to_wire(), "spec": {**base.to_wire()["spec"], **change}})
    assert project(base, SECRETS, SETTINGS).config_hash != \
        project(changed, SECRETS, SETTINGS).config_hash


def test_hash_changes_with_secret_value_and_holds_only_its_digest() -> None:
    ws = minimax(access="direct")
    one = project(ws, SECRETS, SETTINGS)
    two = project(ws, {("minimax", "api-key"): "sk-other"}, SETTINGS)
    assert one.config_hash != two.config_hash
    assert KEY not in one.config_hash


def test_hash_ignores_unrelated_metadata() -> None:
    a = minimax()
    b = Workspace.model_validate({**a.to_wire(), "metadata": {"name": "alice",
                                                              "labels": {"team": "x"}}})
    assert project(a, SECRETS, SETTINGS).config_hash == project(b, SECRETS, SETTINGS).config_hash


# ------------------------------------------------------------------ gateway mode


@pytest.mark.parametrize("provider", sorted(EXPECTED))
def test_gateway_mode_projects_the_gateway_and_a_credential_never_the_key(provider: str) -> None:
    key_vars, url_vars, model_vars = EXPECTED[provider]
    projection = project(with_provider(provider, access="gateway"), SECRETS, SETTINGS)
    env = projection.env
    for name in key_vars:
        assert env[name] is LLM_CREDENTIAL, name  # the executor mints it per generation
    expected_url = f"{SETTINGS.registry_url}/llm/{provider}" + \
        ("/v1" if provider == "openai" else "")
    for name in url_vars:
        assert env[name].value == expected_url
    for name in model_vars:
        assert env[name].value == "m-1"
    assert all(KEY not in v.value for v in env.values())
    assert projection.llm == LlmGrant(provider, None)


def test_gateway_mode_is_the_default() -> None:
    projection = project(minimax(base_url="https://api.minimax.io/anthropic/v1/"),
                         SECRETS, SETTINGS)
    assert projection.llm == LlmGrant("minimax", "https://api.minimax.io/anthropic/v1/")
    assert projection.env["ANTHROPIC_BASE_URL"].value == \
        "http://host.docker.internal:8081/llm/minimax"
    assert projection.env["ANTHROPIC_AUTH_TOKEN"] is LLM_CREDENTIAL


def test_gateway_mode_without_a_key_gets_no_credential() -> None:
    projection = project(workspace(llm={"provider": "minimax"}), {}, SETTINGS)
    assert "ANTHROPIC_AUTH_TOKEN" not in projection.env  # the agent reports it missing
    assert not any(v.llm_credential for v in projection.env.values())


def test_gateway_mode_still_reports_a_missing_key_secret() -> None:
    with pytest.raises(ProjectionError, match=r"spec\.llm\.apiKey\.secretRef"):
        project(minimax(), {}, SETTINGS)


def test_gateway_mode_hash_ignores_the_key_but_not_where_the_credential_leads() -> None:
    base = project(minimax(), SECRETS, SETTINGS)
    assert project(minimax(), {("minimax", "api-key"): "sk-other"}, SETTINGS).config_hash \
        == base.config_hash  # a rotated key needs no new container
    for other in (minimax(base_url="https://proxy.example/anthropic"),
                  minimax(access="direct")):
        assert project(other, SECRETS, SETTINGS).config_hash != base.config_hash
    assert KEY not in base.config_hash


def test_unset_command_args_and_working_dir_leave_the_hash_of_existing_containers() -> None:
    material = config_material(minimax(), project(minimax(), SECRETS, SETTINGS).env)
    assert not {"command", "args", "workingDir"} & set(material)


def test_probes_and_protocol_need_no_new_container() -> None:
    base = minimax(agent={"protocol": "none"})
    probed = minimax(agent={"protocol": "none", "a2aPort": 9000},
                     readinessProbe={"httpGet": {"port": 8000}},
                     livenessProbe={"tcpSocket": {"port": 8000}})
    assert project(base, SECRETS, SETTINGS).config_hash == \
        project(probed, SECRETS, SETTINGS).config_hash


def test_command_args_and_working_dir_reach_the_container_as_a_pod_would_have_them() -> None:
    ws = minimax(command=["python3", "-m", "http.server"], args=["8000"], workingDir="/workspace")
    spec = container_spec(ws, project(ws, SECRETS, SETTINGS), SETTINGS, 1)
    assert spec.entrypoint == ("python3", "-m", "http.server")  # replaces ENTRYPOINT
    assert spec.command == ("8000",)  # replaces CMD
    assert spec.working_dir == "/workspace"
    shown = spec.shown()
    assert shown["command"] == ["python3", "-m", "http.server"] and shown["args"] == ["8000"]
    plain = container_spec(minimax(), project(minimax(), SECRETS, SETTINGS), SETTINGS, 1)
    assert (plain.entrypoint, plain.command, plain.working_dir) == (None, None, None)
    assert "command" not in plain.shown()

"""`wsctl render`: the container a reconcile would create, secrets shown as <set>."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.app.cli import main

EXAMPLE = Path(__file__).parents[2] / "examples" / "workspace.yaml"
PLANTED = "sk-planted-4d1c0ffee"


def test_render_shows_projection_without_secret_values(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WSCTL_SECRET_MINIMAX_API_KEY", PLANTED)
    assert main(["render", "-f", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert PLANTED not in out
    (doc,) = list(yaml.safe_load_all(out))
    container = doc["container"]
    assert doc["workspace"] == "default/alice"
    assert container["image"] == "wsctl/agent:latest"
    env = container["env"]
    # gateway mode (the default): a credential minted per container, the gateway's URL
    assert env["MINIMAX_API_KEY"] == env["ANTHROPIC_AUTH_TOKEN"] == "<llm-credential>"
    assert env["ANTHROPIC_BASE_URL"] == "http://host.docker.internal:8081/llm/minimax"
    assert env["ANTHROPIC_MODEL"] == "MiniMax-M3"
    assert container["labels"]["wsctl.dev/workspace"] == "default.alice"
    assert container["labels"]["wsctl.dev/config-hash"] == container["configHash"]
    assert container["limits"]["memoryBytes"] == 512 * 2**20
    assert container["limits"]["nanoCpus"] == 10**9
    assert container["mounts"][0]["target"] == "/configs"
    assert container["security"]["capDrop"] == ["ALL"]

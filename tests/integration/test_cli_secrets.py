"""`wsctl secret` and `wsctl render` against a real embedded PostgreSQL in a data dir."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from controller.app.cli import main

pytestmark = pytest.mark.postgres

EXAMPLE = Path(__file__).parents[2] / "examples" / "workspace.yaml"
PLANTED = "sk-cli-PLANTED-93c1d"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_secret_set_list_render_delete(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("WSCTL_SECRET_MINIMAX_API_KEY", raising=False)
    where = ["--data-dir", str(data_dir)]

    monkeypatch.setattr("sys.stdin", io.StringIO(PLANTED + "\n"))
    code, out, err = run(["secret", "set", "minimax", "api-key", *where], capsys)
    assert code == 0, err
    assert "secret minimax/api-key set" in out

    code, out, err = run(["secret", "list", *where], capsys)
    assert code == 0
    assert "minimax" in out and "api-key" in out and "<set>" in out

    code, out, err = run(["render", "-f", str(EXAMPLE), *where], capsys)
    assert code == 0, err
    (doc,) = list(yaml.safe_load_all(out))
    assert doc["container"]["env"]["MINIMAX_API_KEY"] == "<llm-credential>"  # gateway mode
    assert doc["container"]["configHash"]  # the key resolved: rendering did not fail

    absent = tmp_path / "absent.yaml"
    absent.write_text(EXAMPLE.read_text().replace("name: minimax, key", "name: absent, key"))
    code, out, err = run(["render", "-f", str(absent), *where], capsys)
    assert code == 1
    assert "spec.llm.apiKey.secretRef" in err
    assert "wsctl secret set absent api-key" in err
    assert "WSCTL_SECRET_ABSENT_API_KEY" in err

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(["secret", "set", "minimax", "other", *where], capsys)
    assert code == 1 and "empty secret value" in err

    code, out, err = run(["secret", "delete", "minimax", "api-key", *where], capsys)
    assert code == 0
    code, out, err = run(["secret", "delete", "minimax", "api-key", *where], capsys)
    assert code == 1 and "not found" in err
    code, out, err = run(["render", "-f", str(EXAMPLE), *where], capsys)
    assert code == 1 and "spec.llm.apiKey.secretRef" in err


def test_environment_secret_wins_and_needs_no_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WSCTL_SECRET_MINIMAX_API_KEY", PLANTED)
    missing = tmp_path / "never-created"
    code, out, err = run(["render", "-f", str(EXAMPLE), "--data-dir", str(missing)], capsys)
    assert code == 0, err
    assert PLANTED not in out + err
    assert not missing.exists()  # every reference resolved from the environment

"""Manifests and `wsctl validate`: one bad document among good ones is reported alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.app.cli import main
from controller.core import manifests

GOOD = """\
apiVersion: wsctl.dev/v1alpha1
kind: Workspace
metadata: {{name: {name}}}
spec:
  llm: {{provider: minimax, apiKey: {{secretRef: {{name: minimax, key: api-key}}}}}}
"""

BAD = """\
apiVersion: wsctl.dev/v1alpha1
kind: Workspace
metadata: {name: Bob_1}
spec:
  llm: {provider: acme}
  startupTimeoutSeconds: soon
"""


def write(tmp_path: Path, text: str, name: str = "ws.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_one_bad_document_among_good_ones(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "---\n".join([GOOD.format(name="a"), BAD, GOOD.format(name="c")]))
    assert main(["validate", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if ": document " in line]
    assert error_lines, err
    assert all("document 2" in line for line in error_lines), err
    assert any("metadata.name" in line for line in error_lines)
    assert any("spec.llm.provider" in line for line in error_lines)
    assert any("spec.startupTimeoutSeconds" in line for line in error_lines)
    assert "nothing was applied" in err


def test_valid_file_prints_one_line_per_object(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.format(name="a") + "---\n" + GOOD.format(name="b"))
    assert main(["validate", "-f", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "default/a" in out[0] and "default/b" in out[1]


def test_directory_and_duplicates(tmp_path: Path) -> None:
    write(tmp_path, GOOD.format(name="a"), "one.yaml")
    write(tmp_path, GOOD.format(name="a"), "two.yml")
    write(tmp_path, "not: yaml: at all", "notes.txt")
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load([tmp_path])
    lines = info.value.lines()
    assert len(lines) == 1
    assert "two.yml: document 1 (a): metadata.name" in lines[0]
    assert "also defined in" in lines[0]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "apiVersion: x\nmetadata: [unclosed\n")
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load([path])
    assert "line" in info.value.lines()[0]


def test_non_mapping_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load([path, tmp_path / "nope.yaml"])
    lines = info.value.lines()
    assert "expected a mapping" in lines[0]
    assert "no such file" in lines[1]


def test_example_validates() -> None:
    docs = manifests.load([Path(__file__).parents[2] / "examples"])
    names = sorted(str(w.key) for w in manifests.workspaces(docs))
    assert names == ["default/alice", "default/coder", "default/demo"]


def test_usage_error_exit_code_is_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2

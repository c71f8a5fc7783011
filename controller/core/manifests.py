"""Reading Workspace manifests: multi-document YAML files or folders of them.

Errors name the file, the document, the field path and the reason. Pure apart
from reading the files it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.core.errors import WsctlError
from controller.core.model import Workspace

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class FieldError:
    path: str
    reason: str


@dataclass(frozen=True)
class Document:
    source: str
    index: int  # 1-based position in its file
    name: str | None
    workspace: Workspace | None
    errors: tuple[FieldError, ...] = field(default_factory=tuple)

    @property
    def where(self) -> str:
        label = f" ({self.name})" if self.name else ""
        return f"{self.source}: document {self.index}{label}"


class ManifestError(WsctlError):
    """Any document was invalid: nothing may be applied."""

    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents
        bad = [d for d in documents if d.errors]
        super().__init__(f"{len(bad)} invalid document(s)")

    def lines(self) -> list[str]:
        return [f"{d.where}: {e.path}: {e.reason}" for d in self.documents for e in d.errors]


def _field_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def _reason(error: dict[str, Any]) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_document(raw: object, source: str, index: int) -> Document:
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        return Document(source, index, None, None,
                        (FieldError("(document)", f"expected a mapping, got {kind}"),))
    metadata = raw.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    name = name if isinstance(name, str) else None
    try:
        workspace = Workspace.model_validate(raw)
    except ValidationError as exc:
        errors = tuple(
            FieldError(_field_path(e["loc"]), _reason(dict(e))) for e in exc.errors()
        )
        return Document(source, index, name, None, errors)
    return Document(source, index, name, workspace)


def parse_text(text: str, source: str) -> list[Document]:
    try:
        raws = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        return [Document(source, 0, None, None, (FieldError(f"(yaml {where})", problem),))]
    documents = [parse_document(raw, source, i) for i, raw in enumerate(raws, start=1)]
    if not documents:
        return [Document(source, 0, None, None, (FieldError("(file)", "no documents"),))]
    return documents


def manifest_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
    return [path]


def _duplicates(documents: list[Document]) -> list[Document]:
    seen: dict[tuple[str, str], Document] = {}
    out: list[Document] = []
    for doc in documents:
        if doc.workspace is None:
            out.append(doc)
            continue
        key = (doc.workspace.metadata.namespace, doc.workspace.metadata.name)
        first = seen.get(key)
        if first is not None:
            error = FieldError("metadata.name", f"{key[0]}/{key[1]} also defined in {first.where}")
            out.append(Document(doc.source, doc.index, doc.name, None, (error,)))
            continue
        seen[key] = doc
        out.append(doc)
    return out


def load(paths: Iterable[Path], stdin_text: str | None = None) -> list[Document]:
    """Parse every document; raises ManifestError if any one is invalid."""
    documents: list[Document] = []
    for path in paths:
        if str(path) == "-":
            documents += parse_text(stdin_text or "", "<stdin>")
            continue
        if not path.exists():
            documents.append(Document(str(path), 0, None, None,
                                      (FieldError("(file)", "no such file or directory"),)))
            continue
        files = manifest_files(path)
        if not files:
            documents.append(Document(str(path), 0, None, None,
                                      (FieldError("(folder)", "no .yaml/.yml/.json files"),)))
        for file in files:
            documents += parse_text(file.read_text(encoding="utf-8"), str(file))
    documents = _duplicates(documents)
    if any(d.errors for d in documents):
        raise ManifestError(documents)
    return documents


def workspaces(documents: list[Document]) -> list[Workspace]:
    return [d.workspace for d in documents if d.workspace is not None]

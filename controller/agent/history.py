"""The agent's conversation history, kept in the workspace's storage volume.

`<WSCTL_WORKSPACE_DIR>/.wsctl/history.jsonl`: one JSON object per line,
``{"role": "user" | "assistant", "content": "..."}``, a user line always followed
by its answer. The volume outlives every container of the workspace, so an agent
that is restarted, recreated or woken from suspend still remembers: each LLM
request carries the earlier turns (the newest `MAX_TURNS`).

Bounded: when the file holds more than `KEEP_TURNS` turns it is rewritten with
the newest `MAX_TURNS` (a temporary file renamed over it, so a crash leaves one
or the other). A torn last line (the container died mid-write) is skipped.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

MAX_TURNS = 20
"""Earlier turns sent with each request (a turn: a question and its answer)."""
KEEP_TURNS = 2 * MAX_TURNS
"""Turns the file may hold before it is compacted to the newest MAX_TURNS."""
FILE = Path(".wsctl") / "history.jsonl"

Message = dict[str, str]


class History:
    """Turns of one workspace; without a workspace dir it remembers nothing."""

    def __init__(self, workspace_dir: str | None) -> None:
        self.path = None if workspace_dir is None else Path(workspace_dir) / FILE
        self._lock = threading.Lock()
        self._turns: list[tuple[str, str]] | None = None

    def _load(self) -> list[tuple[str, str]]:
        if self._turns is not None:
            return self._turns
        turns: list[tuple[str, str]] = []
        pending: str | None = None
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path else []
        except OSError:
            lines = []
        for line in lines:
            try:
                entry: Any = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
                continue
            if entry.get("role") == "user":
                pending = entry["content"]
            elif entry.get("role") == "assistant" and pending is not None:
                turns.append((pending, entry["content"]))
                pending = None
        self._turns = turns[-KEEP_TURNS:]
        return self._turns

    def messages(self, text: str) -> list[Message]:
        """The LLM request's messages: the newest earlier turns, then `text`."""
        with self._lock:
            earlier = self._load()[-MAX_TURNS:]
        messages: list[Message] = []
        for question, answer in earlier:
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]
        return [*messages, {"role": "user", "content": text}]

    def record(self, text: str, reply: str) -> None:
        """Append one answered turn (durably); compact past KEEP_TURNS."""
        if self.path is None:
            return
        with self._lock:
            turns = self._load()
            turns.append((text, reply))
            lines = [json.dumps({"role": "user", "content": text}),
                     json.dumps({"role": "assistant", "content": reply})]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if len(turns) > KEEP_TURNS:
                del turns[:-MAX_TURNS]
                self._rewrite(turns)
                return
            with self.path.open("a", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
                out.flush()
                os.fsync(out.fileno())

    def _rewrite(self, turns: list[tuple[str, str]]) -> None:
        assert self.path is not None
        temporary = self.path.with_suffix(".jsonl.tmp")
        with temporary.open("w", encoding="utf-8") as out:
            for question, answer in turns:
                out.write(json.dumps({"role": "user", "content": question}) + "\n")
                out.write(json.dumps({"role": "assistant", "content": answer}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)

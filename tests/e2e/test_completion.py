"""Shell completion against a real `wsctl run` (issue 17): bash and zsh load
`wsctl completion bash|zsh`, and a Tab runs wsctl (this checkout's, first on PATH)
as the shell code does. Commands, options and workspace names complete; the names
are the controller's, in -n's namespace.

bash is driven as readline drives it: COMP_WORDS, COMP_CWORD, COMP_LINE, COMP_POINT
and the function `complete -p wsctl` names. zsh: compinit registers the function
for wsctl, and that function runs with zsh's `words`, BUFFER and CURSOR; only
zsh's own `_describe` (which draws the menu and needs a terminal) is replaced by
one that prints what it was given."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.core.model import Phase
from controller.testing.harness import ControllerProcess, FakeLLMThread
from tests.e2e.test_exec_cp import REPO
from tests.e2e.test_lifecycle import workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

DEFAULT = ("cmp-alpha", "cmp-alps", "cmp-beta")
OTHER_NS, OTHER = "e2e-compl", "cmp-gamma"

BASH_TAB = r"""
source <(wsctl completion bash) || exit 3
fn=$(complete -p wsctl | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
[ -n "$fn" ] || { echo "wsctl has no completion function" >&2; exit 4; }
COMP_LINE=$1 COMP_POINT=${#1} COMP_TYPE=9; shift
COMP_WORDS=("$@") COMP_CWORD=$(($# - 1))
"$fn" wsctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""

ZSH_TAB = r"""
autoload -U compinit && compinit -u -D || exit 3
source <(wsctl completion zsh) || exit 3
fn=${_comps[wsctl]}
[[ -n $fn ]] || { print -u2 "compinit has no completion function for wsctl"; exit 4 }
_describe() { print -rl -- ${(P)2} }
BUFFER=$1 CURSOR=${#1}; shift
words=("$@")
$fn
"""


@pytest.fixture(scope="module")
def shell_env(controller: ControllerProcess, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, str]:
    """PATH with a `wsctl` that runs this checkout; the server and data dir of the
    test controller, as a user's environment would give them."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "wsctl").write_text(f'#!/bin/sh\nexec {sys.executable} -m controller "$@"\n')
    (bin_dir / "wsctl").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
            "HOME": str(tmp_path_factory.mktemp("home")), "WSCTL_SERVER": controller.server,
            "WSCTL_DATA_DIR": str(controller.data_dir)}


@pytest.fixture(scope="module")
def names(controller: ControllerProcess, fake_llm: FakeLLMThread) -> Iterator[None]:
    other = workspace(OTHER, fake_llm.port)
    other["metadata"]["namespace"] = OTHER_NS
    controller.apply(*(workspace(n, fake_llm.port) for n in DEFAULT), other)
    yield
    for name in DEFAULT:
        controller.cli("delete", name)
    controller.cli("delete", "-n", OTHER_NS, OTHER)


def words_of(line: str) -> list[str]:
    return line.split() + ([""] if line.endswith(" ") else [])


def bash_tab(env: dict[str, str], line: str) -> set[str]:
    done = subprocess.run(["bash", "-c", BASH_TAB, "bash", line, *words_of(line)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return {w.strip() for w in done.stdout.splitlines() if w.strip()}


def zsh_tab(env: dict[str, str], line: str) -> set[str]:
    done = subprocess.run(["zsh", "-f", "-c", ZSH_TAB, "zsh", line, *words_of(line)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return {w for w in done.stdout.splitlines() if w}


def test_bash_completes_commands_options_and_names(shell_env: dict[str, str],
                                                   names: None) -> None:
    assert bash_tab(shell_env, "wsctl ge") == {"get"}
    assert bash_tab(shell_env, "wsctl get --sel") == {"--selector"}
    assert bash_tab(shell_env, "wsctl get cmp-al") == {"cmp-alpha", "cmp-alps"}
    # the default namespace's (not cmp-gamma); -n's when given
    assert bash_tab(shell_env, "wsctl describe cmp-") == set(DEFAULT)
    assert bash_tab(shell_env, f"wsctl describe -n {OTHER_NS} ") == {OTHER}
    # every name of the namespace: ours, and whatever other tests left
    assert set(DEFAULT) <= bash_tab(shell_env, "wsctl describe ")
    assert bash_tab(shell_env, "wsctl wait cmp-alpha cmp-") == {"cmp-alps", "cmp-beta"}
    assert bash_tab(shell_env, "wsctl exec cmp-b") == {"cmp-beta"}
    assert bash_tab(shell_env, "wsctl explain spec.ll") == {"spec.llm"}


def test_bash_with_no_controller_completes_nothing(shell_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    env = {**shell_env, "WSCTL_SERVER": "127.0.0.1:9", "WSCTL_ADMIN_TOKEN": "t"}
    started = time.monotonic()
    assert bash_tab(env, "wsctl get cmp-") == set()
    assert time.monotonic() - started < 10
    assert bash_tab(env, "wsctl ge") == {"get"}  # what needs no controller still does


def test_zsh_registers_and_completes_names_with_their_phase(shell_env: dict[str, str],
                                                            names: None) -> None:
    done = subprocess.run(
        ["zsh", "-f", "-c", "autoload -U compinit && compinit -u -D && "
         "source <(wsctl completion zsh) && print -r -- ${_comps[wsctl]}"],
        env=shell_env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "_python_argcomplete\n", "")
    assert zsh_tab(shell_env, "wsctl ge") == {"get:list workspaces, or show one"}
    phases = zsh_tab(shell_env, "wsctl get cmp-al")
    assert {p.split(":", 1)[0] for p in phases} == {"cmp-alpha", "cmp-alps"}
    assert all(p.split(":", 1)[1] in {phase.value for phase in Phase} for p in phases), phases
    assert {p.split(":", 1)[0] for p in zsh_tab(shell_env, f"wsctl logs -n {OTHER_NS} ")
            } == {OTHER}

"""The folder tree draws the architecture: test knobs stay off the production path."""

from __future__ import annotations

import subprocess
import sys

from controller.app.wiring import debug_knobs


def test_the_composition_root_does_not_import_test_code_unless_asked() -> None:
    probe = ("import sys, controller.app.cli, controller.app.runtime, controller.app.runtime_k8s;"
             "print(sorted(m for m in sys.modules if m.startswith('controller.testing')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_test_knobs_only_when_one_is_set() -> None:
    assert debug_knobs({"WSCTL_DEBUG": "1", "PATH": "/bin"}) is None
    knobs = debug_knobs({"WSCTL_DEBUG_STALL_AFTER_OP": "WriteToken"})
    assert knobs is not None and knobs.stall_after_op == "WriteToken" and not knobs.recreate
    broken = debug_knobs({"WSCTL_DEBUG_BREAK_RECREATE": "1"})
    assert broken is not None and broken.recreate and broken.stall_after_op is None

"""Names the command line needs before any fault is loaded: the fault types (in
`FAULTS` order; tests/chaos/test_faults.py checks they agree) and the capabilities a
fault may need from the run. No imports: `wsctl --help` and every other command
build the chaos parser, and must not pay for the harness."""

from __future__ import annotations

FAULT_KINDS = ("kill", "stop", "remove", "pause", "network", "token", "suspend",
               "delete-reapply", "bad-register", "crash-loop", "controller-kill",
               "postgres-restart", "docker-restart", "lateral")

# Capabilities a fault may need from the run.
OWNS_CONTROLLER = "controller"  # the harness started the controller (--self-contained)
OWNS_POSTGRES = "postgres"  # the controller's embedded PostgreSQL is on this machine
OWNS_ENGINE = "docker-restart"  # --docker-restart: the harness may restart dockerd

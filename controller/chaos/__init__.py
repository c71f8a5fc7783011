"""The chaos harness (`wsctl chaos run`): breaks a fleet on purpose and checks the
invariants of docs/design.md section 8.

A client of the controller: it talks to the admin API and the agent registry
over HTTP, to Docker only through `controller.adapters.chaos_docker`, and to
the database only to plant a secret when it attaches to a running controller.

  faults.py       one injector per fault type, each naming the Degraded it may cause
  schedule.py     the seed -> fault schedule (pure)
  workload.py     message/send traffic and the acknowledged-activity check
  probes.py       continuous sampling: timeline, two-runner and Failed probes
  checks.py       the verdict's pure rules (convergence, cause attribution, secrets)
  runner.py       one run: fleet up, faults, settle, final invariants
  environment.py  a self-contained controller, or an attached one
  report.py       JSON, HTML with inline SVG, terminal summary
  cli.py          `wsctl chaos run`
"""

"""wsctl reference agent.

Runs inside the workspace container as ``python3 -m wsctl_agent`` (the image
copies this package to ``/opt/wsctl/wsctl_agent``). Standard library only, and
nothing outside this package is imported, so the same files work both as
``controller.agent`` (tests) and as ``wsctl_agent`` (inside the container).

Test knobs (spec env; unset they do nothing): ``AGENT_BOOT_DELAY_SECONDS`` (wait
before reading the token), ``AGENT_REGISTER_PAYLOAD`` (normal | no_url |
private_url | bad_card), ``AGENT_REGISTER_ONCE`` and ``AGENT_REJECT_GRACE_SECONDS``
(do not retry a refused register), ``AGENT_EXIT_AFTER_SECONDS`` (crash),
``AGENT_ADVERTISE_URL``, ``AGENT_BIND_HOST``, and ``AGENT_ECHO`` (print its value
at start: a container that leaks a secret to its output, so tests can check that
the controller redacts what it stores of that output).
"""

__version__ = "0.1.0"

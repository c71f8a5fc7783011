"""wsctl reference agent.

Runs inside the workspace container as ``python3 -m wsctl_agent`` (the image
copies this package to ``/opt/wsctl/wsctl_agent``). Standard library only, and
nothing outside this package is imported, so the same files work both as
``controller.agent`` (tests) and as ``wsctl_agent`` (inside the container).
"""

__version__ = "0.1.0"

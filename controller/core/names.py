"""Name rules shared by the model and the command line (no pydantic: the CLI checks
a name before it asks the controller anything)."""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
"""A Kubernetes name label: lower-case alphanumerics and '-', alphanumeric at both ends."""

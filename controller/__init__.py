"""wsctl: a Kubernetes-style reconciling controller for AI-agent workspaces on local Docker."""

__version__ = "0.1.0"

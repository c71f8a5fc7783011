"""The application: the composition roots (`wsctl run`, Kubernetes mode), the CLI and
its HTTP client, `wsctl doctor`. The only layer that knows every adapter."""

"""One workspace through observe -> plan -> execute, against ports (Protocols)
that the adapters implement."""

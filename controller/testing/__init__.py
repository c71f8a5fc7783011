"""Test knobs and the fake LLM. Plugged in from the composition root only when asked
for (--demo, WSCTL_DEBUG_* variables); no layer below app/ imports this package."""

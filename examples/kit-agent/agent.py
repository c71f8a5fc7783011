"""A tiny wsctl agent on the agent kit (docs/agents.md): it echoes A2A message/send.
In an image derived from wsctl/agent:latest `import wsctl_kit` just works."""

import signal

import wsctl_kit

agent = wsctl_kit.Agent.from_environment()
card = {"name": agent.workspace_name, "url": agent.claimed_url(), "version": "1.0",
        "skills": [{"id": "echo", "name": "Echo", "description": "Echoes text."}]}

# The A2A port: only the controller's credential gets in; each message's text goes here.
wsctl_kit.serve_a2a(agent, lambda text: f"kit-agent heard: {text}", card)
signal.signal(signal.SIGTERM, lambda *_: agent.stop())
try:
    agent.register(card)
    agent.start_heartbeats(lambda: wsctl_kit.Health())
    while not agent.wait(60):
        pass
except wsctl_kit.Stopped:
    pass
except wsctl_kit.KitError as exc:  # e.g. ProtocolMismatch: say why, without a traceback
    raise SystemExit(f"kit-agent: {exc}") from None

"""A tiny wsctl agent on the agent kit (docs/agents.md): it echoes A2A message/send.
In an image derived from wsctl/agent:latest `import wsctl_kit` just works."""

import json
import signal
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import wsctl_kit

agent = wsctl_kit.Agent.from_environment()


class A2A(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if not agent.authorized(self.headers.get("Authorization")):  # only the controller
            return self.answer(401, {"error": "the controller's credential is required"})
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        parts = request.get("params", {}).get("message", {}).get("parts", [])
        text = "".join(p.get("text", "") for p in parts if p.get("kind", "text") == "text")
        self.answer(200, {"jsonrpc": "2.0", "id": request.get("id"), "result": {
            "kind": "message", "role": "agent", "messageId": str(uuid.uuid4()),
            "parts": [{"kind": "text", "text": f"kit-agent heard: {text}"}]}})

    def answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("0.0.0.0", agent.port), A2A)
Thread(target=server.serve_forever, daemon=True).start()
signal.signal(signal.SIGTERM, lambda *_: agent.stop())
try:
    agent.register({"name": agent.workspace_name, "url": agent.claimed_url(), "version": "1.0",
                    "skills": [{"id": "echo", "name": "Echo", "description": "Echoes text."}]})
    agent.start_heartbeats(lambda: wsctl_kit.Health())
    while not agent.wait(60):
        pass
except wsctl_kit.Stopped:
    pass
except wsctl_kit.KitError as exc:  # e.g. ProtocolMismatch: say why, without a traceback
    raise SystemExit(f"kit-agent: {exc}") from None

"""HTTP side of the agent: health, agent card, and A2A JSON-RPC ``message/send``.

Every request must carry the controller's credential for this container,
``Authorization: Bearer <the contents of WSCTL_A2A_CREDENTIAL_FILE>``: anything else
(another workspace, a local process on the published port) gets 401 and is counted
in the next heartbeat (``a2a_refused``). Without the file every request is refused.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import kit, llm, log
from .config import Config
from .history import History
from .state import AgentState, agent_card

MAX_BODY_BYTES = 1 << 20

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
LLM_FAILED = -32000

Completer = Callable[[Config, list[dict[str, str]]], str]
"""(config, messages: earlier turns then the new user message) -> the reply text."""


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        config: Config,
        state: AgentState,
        guard: kit.Agent,
        completer: Completer = llm.complete,
    ) -> None:
        self.config = config
        self.state = state
        self.completer = completer
        self.guard = guard
        """Checks the controller's credential on every request (`kit.Agent.authorized`)."""
        self.history = History(config.workspace_dir)
        self.card_url = ""
        super().__init__((config.bind_host, config.port), _Handler)
        self.card_url = config.claimed_url(self.port)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def card(self) -> dict[str, Any]:
        return agent_card(self.config, self.card_url)


def rpc_error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


def message_text(params: Any) -> str | None:
    """Join the text parts of ``params.message.parts``; None when the shape is wrong."""
    message = params.get("message") if isinstance(params, dict) else None
    parts = message.get("parts") if isinstance(message, dict) else None
    if not isinstance(parts, list):
        return None
    texts = [
        p["text"]
        for p in parts
        if isinstance(p, dict)
        and p.get("kind", "text") == "text"
        and isinstance(p.get("text"), str)
    ]
    return "\n".join(texts) if texts else None


def handle_rpc(server: AgentServer, raw: bytes) -> dict[str, Any]:
    try:
        request: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return rpc_error(None, PARSE_ERROR, "Parse error: body is not valid JSON")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return rpc_error(None, INVALID_REQUEST, "Invalid Request: expected a JSON-RPC 2.0 object")
    req_id = request.get("id")
    method = request["method"]
    if method != "message/send":
        return rpc_error(req_id, METHOD_NOT_FOUND, f"Method not found: {method}")
    params = request.get("params")
    text = message_text(params)
    if text is None:
        return rpc_error(req_id, INVALID_PARAMS, "Invalid params: params.message.parts has no text")
    server.state.task_started()
    try:
        reply = server.completer(server.config, server.history.messages(text))
    except llm.LLMError as exc:
        if exc.is_auth_error:
            server.state.set_llm_error(f"llm-auth: {exc}")
        log.warning("message_failed", error=str(exc))
        return rpc_error(req_id, LLM_FAILED, str(exc))
    finally:
        server.state.task_finished()
    if server.config.has_llm_credential:
        server.state.set_llm_error(None)
    try:
        server.history.record(text, reply)
    except OSError as exc:  # the answer still goes out; the next turn will not know it
        log.warning("history_not_written", error=f"{type(exc).__name__}: {exc}")
    log.info("message_answered", chars_in=len(text), chars_out=len(reply))
    result: dict[str, Any] = {
        "kind": "message",
        "role": "agent",
        "messageId": str(uuid.uuid4()),
        "parts": [{"kind": "text", "text": reply}],
    }
    incoming = params.get("message") if isinstance(params, dict) else None
    if isinstance(incoming, dict) and isinstance(incoming.get("contextId"), str):
        result["contextId"] = incoming["contextId"]
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = "wsctl-agent"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request access logs at debug only; health probes would flood stdout.
        log.debug("http_request", method=self.command, path=self.path)

    def _send_json(self, status: int, body: Any, *, close: bool = False) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:  # a body left unread must not be taken for the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _refused(self) -> bool:
        """401 unless the controller's credential is presented (the caller is counted)."""
        if self.server.guard.authorized(self.headers.get("Authorization")):
            return False
        log.warning("a2a_refused", path=self.path.split("?", 1)[0],
                    credential_file="present" if self.server.guard.a2a_credential()
                    else "missing")
        self._send_json(401, {"error": {"class": "unauthorized",
                                        "message": "the controller's credential is required"}},
                        close=True)
        return True

    def do_GET(self) -> None:
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            status, detail = self.server.state.health()
            self._send_json(200, {"status": status, "error_detail": detail})
        elif path in ("/.well-known/agent.json", "/.well-known/agent-card.json"):
            self._send_json(200, self.server.card())
        else:
            self._send_json(404, {"error": {"class": "not_found", "message": path}})

    def do_POST(self) -> None:
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/", "/a2a"):
            self._send_json(404, {"error": {"class": "not_found", "message": path}})
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._send_json(413, rpc_error(None, INVALID_REQUEST, "body too large or bad length"))
            return
        raw = self.rfile.read(length) if length else b""
        self._send_json(200, handle_rpc(self.server, raw))

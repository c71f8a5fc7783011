"""wsctl agent kit: the wsctl agent protocol for any Python agent, standard library only.

One file. In the agent image it is ``/opt/wsctl/wsctl_kit.py`` (``/opt/wsctl`` is on
``PYTHONPATH``), so any Python program there can ``import wsctl_kit``; elsewhere, copy
this file next to your agent. The three calls::

    import wsctl_kit

    agent = wsctl_kit.Agent.from_environment()   # what the controller projected
    agent.register(card)                          # blocks until the registry accepts it
    agent.start_heartbeats(lambda: wsctl_kit.Health())   # or agent.heartbeat(health)
    agent.token()                                 # the current registry token

and the agent's A2A port, where only the controller may call it::

    server = wsctl_kit.serve_a2a(agent, lambda text: "an answer to " + text, card)

(``A2AServer``: JSON-RPC ``message/send`` to a function from text to text; or check
``agent.authorized(request_authorization_header)`` in a server of your own).
``agent.stop()`` ends the heartbeats.

The protocol (``docs/agents.md``): ``POST $WSCTL_REGISTRY_URL/registry/register`` and
``/registry/heartbeat`` with ``Authorization: Bearer <the token file's content>`` and
``X-Wsctl-Agent-Protocol: <PROTOCOL_VERSION>``. The controller rewrites the token file
in place when it rotates the token; the file is re-read before every request, so a
rotated token is used from the next request on. The token is never logged.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

__all__ = [
    "PROTOCOL_HEADER", "PROTOCOL_VERSION", "A2AError", "A2AServer", "Agent", "ConfigError",
    "Health", "KitError", "NotRegistered", "ProtocolMismatch", "RegistrationRefused",
    "RegistryError", "RegistryUnavailable", "Stopped", "TokenMissing", "Unauthorized",
    "serve_a2a",
]

PROTOCOL_VERSION = 1
"""The wsctl agent protocol this kit speaks; the controller's registry names its own in
the same header of every answer, and refuses a version it does not speak."""
PROTOCOL_HEADER = "X-Wsctl-Agent-Protocol"

DEFAULT_TOKEN_FILE = "/configs/.auth_token"
DEFAULT_A2A_CREDENTIAL_FILE = "/configs/.a2a_credential"
BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 10.0
TOKEN_POLL_SECONDS = 0.5
# The controller writes the token before the container starts: a file still missing
# after this long was lost (deleted, then the container restarted). The kit says so
# (401 missing_token), and the controller replaces the container.
TOKEN_MISSING_REPORT_SECONDS = 2.0
HTTP_TIMEOUT = 5.0
# A 429 (too many failed authentications from this address) or 503 (the
# controller's database is restarting) names a Retry-After; it is honoured up to this.
RETRY_AFTER_CAP = 30.0
# What the controller mints (secrets.token_urlsafe(32)). A re-read that does not
# look like one (a write caught half way) is ignored and the held token kept.
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
HEALTHY, UNHEALTHY = "healthy", "unhealthy"

# The A2A port: JSON-RPC 2.0 error codes, and the largest request body read.
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
ANSWER_FAILED = -32000
MAX_BODY_BYTES = 1 << 20
CARD_PATHS = ("/.well-known/agent.json", "/.well-known/agent-card.json")

# The registry is always reached directly, never through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- errors ------------------------------------------------------------------------


class KitError(Exception):
    """Every error the kit raises; its message says what happened and what to do."""


class ConfigError(KitError):
    """The environment lacks what the controller projects (not in a wsctl workspace?)."""


class TokenMissing(KitError):
    """The token file is not there (the controller writes it before the container starts)."""


class Stopped(KitError):
    """`stop()` was called while a call was waiting."""


class A2AError(KitError):
    """Raised by an A2A `respond` function: the caller gets a JSON-RPC error with this
    message (and `code`, by default ANSWER_FAILED) instead of an answer."""

    def __init__(self, message: str, code: int = ANSWER_FAILED) -> None:
        super().__init__(message)
        self.code = code


class RegistryError(KitError):
    """The registry refused a request or could not be reached (`status` 0)."""

    def __init__(self, status: int, error_class: str, message: str,
                 retry_after: float | None = None) -> None:
        self.status = status
        self.error_class = error_class
        self.message = message
        self.retry_after = retry_after
        text = (f"registry unreachable: {message}" if status == 0
                else f"registry answered {status} {error_class}: {message}")
        super().__init__(text)


class RegistrationRefused(RegistryError):
    """400: the register body was refused (e.g. `blocked_private_url`, `invalid_agent_card`)."""


class ProtocolMismatch(RegistryError):
    """400 `unsupported_protocol`: the controller does not speak this kit's protocol version."""


class Unauthorized(RegistryError):
    """401: the token was refused (`invalid_token`, `stale_token`, `expired_token`, ...)."""


class NotRegistered(RegistryError):
    """404: the registry does not know this agent (register again)."""


class RegistryUnavailable(RegistryError):
    """Unreachable, 429 `rate_limited` or 5xx (`store_unavailable`): try again later."""


# -- health ------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What a heartbeat reports. `detail` says why when unhealthy (it shows in the
    workspace's status as the reason of `Degraded AgentUnhealthy`)."""

    status: str = HEALTHY
    detail: str | None = None
    active_tasks: int | None = None

    def __post_init__(self) -> None:
        if self.status not in (HEALTHY, UNHEALTHY):
            raise ValueError(f"Health.status must be {HEALTHY!r} or {UNHEALTHY!r}, "
                             f"got {self.status!r}")

    @classmethod
    def unhealthy(cls, detail: str, active_tasks: int | None = None) -> Health:
        return cls(UNHEALTHY, detail, active_tasks)


class Log(Protocol):
    def __call__(self, level: str, event: str, **fields: object) -> None: ...


def stderr_log(level: str, event: str, **fields: object) -> None:
    """The default log: one `key=value` line per event on stderr (never a secret)."""
    if level == "debug":
        return
    parts = [time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), f"level={level}",
             f"event={event}"]
    for key, value in fields.items():
        if value is not None:
            text = str(value)
            quote = text == "" or any(c.isspace() or c in '"=' for c in text)
            parts.append(f"{key}={json.dumps(text) if quote else text}")
    try:
        sys.stderr.write(" ".join(parts) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed stderr must not kill the agent
        pass


@dataclass(frozen=True)
class _Answer:
    status: int  # 0 when the registry could not be reached
    body: Any = None
    reason: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def retry_delay(self, default: float) -> float:
        """Retry-After when named (at least `default`, at most RETRY_AFTER_CAP), else it."""
        if self.retry_after is None:
            return default
        return min(max(self.retry_after, default), RETRY_AFTER_CAP)

    def _error(self, key: str) -> str | None:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        value = err.get(key) if isinstance(err, dict) else None
        return value if isinstance(value, str) else None

    def error_class(self) -> str:
        return self._error("class") or "unknown"

    def error_message(self) -> str:
        return (self._error("message") or self.reason)[:300]

    def error(self) -> RegistryError:
        kind: type[RegistryError]
        if self.status == 400:
            kind = (ProtocolMismatch if self.error_class() == "unsupported_protocol"
                    else RegistrationRefused)
        else:
            kind = {401: Unauthorized, 404: NotRegistered}.get(self.status, RegistryUnavailable)
        return kind(self.status, self.error_class(), self.error_message(), self.retry_after)


# -- the agent ---------------------------------------------------------------------


class Agent:
    """One workspace's agent, speaking the wsctl protocol to the controller's registry.

    Thread-safe: the heartbeat thread, the HTTP server's threads (`authorized`) and
    the main thread may use it at once.
    """

    def __init__(self, workspace_id: str, registry_url: str, *, port: int = 8000,
                 heartbeat_seconds: float = 5.0, token_file: str = DEFAULT_TOKEN_FILE,
                 a2a_credential_file: str = DEFAULT_A2A_CREDENTIAL_FILE,
                 workspace_name: str | None = None, workspace_dir: str | None = None,
                 log: Log = stderr_log, stop_event: threading.Event | None = None,
                 user_agent: str = f"wsctl-kit/{PROTOCOL_VERSION}") -> None:
        self.workspace_id = workspace_id
        self.workspace_name = workspace_name or workspace_id.rsplit(".", 1)[-1]
        self.registry_url = registry_url.rstrip("/")
        self.port = port
        self.heartbeat_seconds = max(heartbeat_seconds, 0.05)
        self.token_file = token_file
        self.a2a_credential_file = a2a_credential_file
        self.workspace_dir = workspace_dir
        self.controller_protocol: int | None = None
        """The protocol version the registry named in its last answer."""
        self._log = log
        self._user_agent = user_agent
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_missing_logged = False
        self._credential: bytes | None = None
        self._refused = 0
        self._registration: tuple[Any, str] | None = None  # the last accepted card and url
        self._started = time.monotonic()
        self._heartbeats: threading.Thread | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None, **options: Any) -> Agent:
        """An agent from what the controller projects into every workspace container:
        WSCTL_WORKSPACE_ID, WSCTL_REGISTRY_URL, WSCTL_AGENT_PORT, WSCTL_HEARTBEAT_SECONDS,
        WSCTL_TOKEN_FILE, WSCTL_A2A_CREDENTIAL_FILE, WSCTL_WORKSPACE_NAME,
        WSCTL_WORKSPACE_DIR. `options` (e.g. `log=`) go to the constructor."""
        e = os.environ if env is None else env

        def opt(name: str) -> str | None:
            return e.get(name, "").strip() or None

        def number(name: str, default: float) -> float:
            raw = opt(name)
            try:
                value = default if raw is None else float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if not 0 <= value < float("inf"):
                raise ConfigError(f"{name} must be a non-negative number, got {raw!r}")
            return value

        for name in ("WSCTL_WORKSPACE_ID", "WSCTL_REGISTRY_URL"):
            if opt(name) is None:
                raise ConfigError(f"{name} is not set: the controller sets it in every "
                                  "workspace container (is this running under wsctl?)")
        port = number("WSCTL_AGENT_PORT", 8000)
        if port != int(port) or port > 65535:
            raise ConfigError(f"WSCTL_AGENT_PORT must be a port number, got {port!r}")
        return cls(str(opt("WSCTL_WORKSPACE_ID")), str(opt("WSCTL_REGISTRY_URL")),
                   port=int(port), heartbeat_seconds=number("WSCTL_HEARTBEAT_SECONDS", 5.0),
                   token_file=opt("WSCTL_TOKEN_FILE") or DEFAULT_TOKEN_FILE,
                   a2a_credential_file=opt("WSCTL_A2A_CREDENTIAL_FILE")
                   or DEFAULT_A2A_CREDENTIAL_FILE,
                   workspace_name=opt("WSCTL_WORKSPACE_NAME"),
                   workspace_dir=opt("WSCTL_WORKSPACE_DIR"), **options)

    # -- lifecycle -----------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 2.0) -> None:
        """End the heartbeats and any waiting call (which raises `Stopped`)."""
        self._stop.set()
        thread = self._heartbeats
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds` unless `stop()` is called; True when stopping."""
        return self._stop.wait(seconds)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped("the agent is stopping")

    # -- call 3: the token -----------------------------------------------------------

    def token(self) -> str:
        """The current registry token, re-read from the token file (the controller
        rewrites it in place when it rotates the token). Raises `TokenMissing`."""
        self._refresh_token()
        with self._lock:
            token = self._token
        if token is None:
            raise TokenMissing(f"no token in {self.token_file}: the controller writes it "
                               "before the container starts")
        return token

    def _read_token_file(self) -> str | None:
        try:
            with open(self.token_file, encoding="utf-8") as fh:
                return fh.read().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._log("warning", "token_unreadable", path=self.token_file,
                      error=type(exc).__name__)
            return None

    def _refresh_token(self) -> None:
        """Adopt a token the controller rotated in place (a whole one), or the first one."""
        token = self._read_token_file()
        with self._lock:
            held = self._token
            if token is None or token == held or (held is not None
                                                  and not TOKEN_SHAPE.match(token)):
                return
            self._token = token
        if held is not None:
            self._log("info", "token_reloaded", reason="refreshed")

    def wait_for_token(self) -> str:
        """Read the token file, waiting until it is there; raises `Stopped`.

        While it is missing the registry is told (a register without a token, 401
        `missing_token`) after TOKEN_MISSING_REPORT_SECONDS, then with backoff: a
        container whose token file was lost is replaced by the controller.
        """
        waited, report_at = 0.0, TOKEN_MISSING_REPORT_SECONDS
        while True:
            token = self._read_token_file()
            if token is not None:
                if self._token_missing_logged:
                    self._log("info", "token_found", path=self.token_file)
                    self._token_missing_logged = False
                with self._lock:
                    changed, self._token = self._token is not None and token != self._token, token
                if changed:
                    self._log("info", "token_reloaded", changed="true")
                return token
            if not self._token_missing_logged:
                self._log("warning", "token_missing", path=self.token_file, action="waiting")
                self._token_missing_logged = True
            if waited >= report_at:
                answer = self._post("/registry/register",
                                    {"workspace_id": self.workspace_id}, token="")
                self._log("warning", "token_missing_reported", http_status=answer.status,
                          error_class=answer.error_class())
                report_at = waited + min(report_at * 2, BACKOFF_CAP)
            self._sleep(TOKEN_POLL_SECONDS)
            waited += TOKEN_POLL_SECONDS

    # -- the A2A port ------------------------------------------------------------------

    def a2a_credential(self) -> bytes | None:
        """What the controller presents on the A2A port (the file's content, read once it
        is there: it does not change in a container's life)."""
        if self._credential is None:
            try:
                with open(self.a2a_credential_file, "rb") as fh:
                    self._credential = fh.read().strip() or None
            except OSError:
                return None
        return self._credential

    def authorized(self, authorization: str | None) -> bool:
        """Is this `Authorization` header the controller's `Bearer` credential? Compared
        in constant time. A refusal is counted and reported in the next heartbeat."""
        expected = self.a2a_credential()
        scheme, _, presented = (authorization or "").partition(" ")
        presented = presented.strip()
        ok = (expected is not None and scheme.lower() == "bearer" and bool(presented)
              and hmac.compare_digest(presented.encode(), expected))
        if not ok:
            with self._lock:
                self._refused += 1
        return ok

    # -- HTTP ----------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], token: str | None = None) -> _Answer:
        """POST with the held token (or `token`, "" for none). Never raises."""
        with self._lock:
            bearer = (self._token or "") if token is None else token
        request = urllib.request.Request(  # noqa: S310 - the URL comes from the controller
            self.registry_url + path, data=json.dumps(body).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "Authorization": f"Bearer {bearer}", "User-Agent": self._user_agent,
                     PROTOCOL_HEADER: str(PROTOCOL_VERSION)})
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT) as resp:
                self._note_protocol(resp.headers.get(PROTOCOL_HEADER))
                return _Answer(resp.status, _parse_json(resp.read()))
        except urllib.error.HTTPError as exc:
            headers = exc.headers
            self._note_protocol(headers.get(PROTOCOL_HEADER) if headers else None)
            raw = exc.read() if exc.fp is not None else b""
            return _Answer(exc.code, _parse_json(raw), str(exc.reason),
                           _retry_after(headers.get("Retry-After") if headers else None))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return _Answer(0, None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")

    def _note_protocol(self, value: str | None) -> None:
        if value is not None and value.strip().isdigit():
            self.controller_protocol = int(value.strip())

    # -- call 1: register ----------------------------------------------------------------

    def claimed_url(self) -> str:
        """The URL to claim by default: this container's hostname and the agent port."""
        return f"http://{socket.gethostname()}:{self.port}"

    def register_body(self, card: Any, url: str) -> dict[str, Any]:
        """The register request's body (a subclass may shape it)."""
        return {"workspace_id": self.workspace_id, "url": url, "agent_card": card}

    def register(self, card: Mapping[str, Any], url: str | None = None, *,
                 retry_refused: bool = True) -> None:
        """Register with an A2A agent card; returns once the registry accepted it.

        `url` defaults to the card's `url`, else `claimed_url()`; the registry accepts
        only this container's own name or address, or a public host. Waits for the
        token file; retries with backoff (honouring Retry-After) while the registry is
        unreachable, busy or refuses the token (the token file is re-read first).
        A refused body (400) is retried too, unless `retry_refused` is False: then it
        raises `RegistrationRefused`. Raises `ProtocolMismatch` (never retried) and
        `Stopped`.
        """
        if url is None:
            card_url = card.get("url") if isinstance(card, Mapping) else None
            url = card_url if isinstance(card_url, str) and card_url else self.claimed_url()
        with self._lock:
            has_token = self._token is not None
        if not has_token:
            self.wait_for_token()
        backoff, attempt = BACKOFF_INITIAL, 0
        while True:
            if self._stop.is_set():
                raise Stopped("the agent is stopping")
            attempt += 1
            self._refresh_token()
            answer = self._post("/registry/register", self.register_body(card, url))
            if answer.ok:
                self._log("info", "register_ok", attempt=attempt, url=url)
                self._registration = (card, url)
                return
            error = answer.error()
            if isinstance(error, ProtocolMismatch):
                self._log("error", "register_protocol_mismatch", protocol=PROTOCOL_VERSION,
                          controller_protocol=self.controller_protocol,
                          message=error.message)
                raise error
            if answer.status == 401:
                self._log("warning", "register_unauthorized", attempt=attempt,
                          error_class=error.error_class)
                self.wait_for_token()
            elif answer.status == 400:
                self._log("error", "register_rejected", attempt=attempt,
                          error_class=error.error_class, message=error.message)
                if not retry_refused:
                    raise error
            elif answer.status == 0:
                self._log("warning", "register_unreachable", attempt=attempt,
                          reason=answer.reason)
            else:  # 429 rate_limited, 503 store_unavailable, ...: retry later
                self._log("warning", "register_failed", attempt=attempt,
                          http_status=answer.status, error_class=error.error_class)
            delay = answer.retry_delay(backoff)
            self._log("debug", "register_retry", delay_seconds=delay)
            self._sleep(delay)
            backoff = min(backoff * 2, BACKOFF_CAP)

    # -- call 2: heartbeats ------------------------------------------------------------

    def heartbeat(self, health: Health | None = None) -> None:
        """One heartbeat (healthy unless `health` says otherwise); raises a
        `RegistryError` when it was not accepted (`Unauthorized`: the token file is
        re-read for the next one; `NotRegistered`: register again)."""
        answer = self._beat(health if health is not None else Health())
        if not answer.ok:
            if answer.status == 401:
                self._refresh_token()
            raise answer.error()

    def _beat(self, health: Health) -> _Answer:
        self._refresh_token()
        body: dict[str, Any] = {
            "workspace_id": self.workspace_id, "status": health.status,
            "error_detail": health.detail,
            "uptime_seconds": round(time.monotonic() - self._started, 3)}
        if health.active_tasks is not None:
            body["active_tasks"] = health.active_tasks
        with self._lock:
            refused, self._refused = self._refused, 0
        if refused:
            body["a2a_refused"] = refused
        answer = self._post("/registry/heartbeat", body)
        if refused and not answer.ok:  # reported with the next one instead
            with self._lock:
                self._refused += refused
        return answer

    def start_heartbeats(self, health: Callable[[], Health],
                         interval: float | None = None) -> threading.Thread:
        """`run_heartbeats` in a daemon thread (one per agent)."""
        if self._heartbeats is not None and self._heartbeats.is_alive():
            raise KitError("heartbeats are already running for this agent")
        self._heartbeats = threading.Thread(target=self.run_heartbeats, args=(health, interval),
                                            name="wsctl-heartbeats", daemon=True)
        self._heartbeats.start()
        return self._heartbeats

    def run_heartbeats(self, health: Callable[[], Health],
                       interval: float | None = None) -> None:
        """Heartbeat every `interval` (default WSCTL_HEARTBEAT_SECONDS) until `stop()`,
        reporting `health()` (an exception in it reports unhealthy with its message).
        Never raises: a refused token is re-read, a registry that forgot this agent
        gets the last accepted card again, an unreachable or busy one is retried."""
        every = self.heartbeat_seconds if interval is None else max(interval, 0.05)
        last: tuple[int, str] | None = None
        try:
            while not self._stop.is_set():
                current = self._health(health)
                answer = self._beat(current)
                outcome = (answer.status, current.status)
                repeat = outcome == last
                last = outcome
                if answer.ok:
                    self._log("debug" if repeat else "info", "heartbeat_ok",
                              status=current.status, error_detail=current.detail)
                elif answer.status == 401:
                    self._log("warning", "heartbeat_unauthorized",
                              error_class=answer.error_class())
                    self.wait_for_token()
                elif answer.status == 404 and self._registration is not None:
                    self._log("warning", "heartbeat_unknown_agent",
                              error_class=answer.error_class(), action="re-register")
                    self.register(*self._registration)
                    continue
                elif answer.status == 0:
                    self._log("debug" if repeat else "warning", "heartbeat_unreachable",
                              reason=answer.reason)
                else:  # 429 rate_limited, 503 store_unavailable, ...: retry later
                    self._log("warning", "heartbeat_failed", http_status=answer.status,
                              error_class=answer.error_class(),
                              message=answer.error_message())
                self._sleep(answer.retry_delay(every))
        except Stopped:
            return
        except ProtocolMismatch as exc:  # from a re-register: nothing to retry
            self._log("error", "heartbeats_ended", error=str(exc))

    def _health(self, health: Callable[[], Health]) -> Health:
        try:
            current = health()
        except Exception as exc:  # the agent's own check failed: say so
            return Health.unhealthy(f"health check failed: {type(exc).__name__}: {exc}")
        if not isinstance(current, Health):
            return Health.unhealthy(f"health check returned {type(current).__name__}, "
                                    "not a wsctl_kit.Health")
        return current


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form; an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None


# -- the A2A port ----------------------------------------------------------------------

Respond = Callable[[str], str]
"""The text of an A2A message (its text parts, joined by newlines) -> the answer's text."""


def message_text(params: Any) -> str | None:
    """Join the text parts of ``params.message.parts``; None when there is none."""
    message = params.get("message") if isinstance(params, dict) else None
    parts = message.get("parts") if isinstance(message, dict) else None
    if not isinstance(parts, list):
        return None
    texts = [p["text"] for p in parts if isinstance(p, dict)
             and p.get("kind", "text") == "text" and isinstance(p.get("text"), str)]
    return "\n".join(texts) if texts else None


def rpc_error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


def answer_rpc(raw: bytes, respond: Respond) -> dict[str, Any]:
    """One JSON-RPC request body -> its response: `message/send` goes to `respond`."""
    try:
        request: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return rpc_error(None, PARSE_ERROR, "Parse error: body is not valid JSON")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return rpc_error(None, INVALID_REQUEST, "Invalid Request: expected a JSON-RPC 2.0 object")
    req_id, params = request.get("id"), request.get("params")
    if request["method"] != "message/send":
        return rpc_error(req_id, METHOD_NOT_FOUND, f"Method not found: {request['method']}")
    text = message_text(params)
    if text is None:
        return rpc_error(req_id, INVALID_PARAMS, "Invalid params: params.message.parts has no text")
    try:
        reply = respond(text)
    except A2AError as exc:
        return rpc_error(req_id, exc.code, str(exc))
    result: dict[str, Any] = {"kind": "message", "role": "agent",
                              "messageId": str(uuid.uuid4()),
                              "parts": [{"kind": "text", "text": reply}]}
    incoming = params.get("message") if isinstance(params, dict) else None
    if isinstance(incoming, dict) and isinstance(incoming.get("contextId"), str):
        result["contextId"] = incoming["contextId"]
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


class A2AServer(ThreadingHTTPServer):
    """The agent's A2A port. Every request must carry the controller's credential
    (`Agent.authorized`; anything else is 401, counted and reported in the next
    heartbeat). POST `/` or `/a2a`: JSON-RPC `message/send`, answered by `respond`
    (an `A2AError` it raises is a JSON-RPC error). GET `/.well-known/agent.json` (or
    `agent-card.json`): `card()`. GET `/healthz`: `health()`."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, agent: Agent, respond: Respond, card: Callable[[], Mapping[str, Any]],
                 health: Callable[[], Health] = Health, *,
                 address: tuple[str, int] | None = None, server_version: str = "wsctl-kit"
                 ) -> None:
        self.agent = agent
        self._respond = respond
        self._card = card
        self._health = health
        self.server_version = server_version
        # 0.0.0.0: the controller calls in on the workspace network.
        super().__init__(address or ("0.0.0.0", agent.port), _A2AHandler)  # noqa: S104

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def serve_a2a(agent: Agent, respond: Respond, card: Mapping[str, Any] | None = None,
              health: Callable[[], Health] = Health) -> A2AServer:
    """An `A2AServer` on the agent's port, serving in a daemon thread; `card` (default
    the one `register` was given) is its agent card."""
    def current_card() -> Mapping[str, Any]:
        if card is not None:
            return card
        registration = agent._registration
        return registration[0] if registration is not None else {}

    server = A2AServer(agent, respond, current_card, health)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     name="wsctl-a2a", daemon=True).start()
    return server


class _A2AHandler(BaseHTTPRequestHandler):
    server: A2AServer
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return self.server.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request lines at debug only: the controller's probes would flood the log.
        self.server.agent._log("debug", "http_request", method=self.command,
                               path=self.path.split("?", 1)[0])

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:  # a body left unread must not be taken for the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _refused(self) -> bool:
        agent = self.server.agent
        if agent.authorized(self.headers.get("Authorization")):
            return False
        agent._log("warning", "a2a_refused", path=self.path.split("?", 1)[0],
                   credential_file="present" if agent.a2a_credential() else "missing")
        self._send(401, {"error": {"class": "unauthorized",
                                   "message": "the controller's credential is required"}})
        return True

    def do_GET(self) -> None:
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            health = self.server.agent._health(self.server._health)
            self._send(200, {"status": health.status, "error_detail": health.detail})
        elif path in CARD_PATHS:
            self._send(200, dict(self.server._card()))
        else:
            self._send(404, {"error": {"class": "not_found", "message": path}})

    def do_POST(self) -> None:
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/", "/a2a"):
            self._send(404, {"error": {"class": "not_found", "message": path}})
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._send(413, rpc_error(None, INVALID_REQUEST, "body too large or bad length"))
            return
        raw = self.rfile.read(length) if length else b""
        self._send(200, answer_rpc(raw, self.server._respond))

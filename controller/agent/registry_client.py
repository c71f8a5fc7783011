"""Registration and heartbeats against the wsctl registry.

Authenticates with ``Authorization: Bearer <token>``, the token read from the
token file the controller writes before the container starts. With
``spec.tokenExpirationSeconds`` the controller refreshes that file in place;
the file is re-read before every heartbeat and register, so a refreshed token
is used from the next request on. The token value is never logged.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from . import log
from .config import PRIVATE_URL, Config
from .state import AgentState, agent_card

BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 10.0
TOKEN_POLL_SECONDS = 0.5
# The controller writes the token before the container starts: a file still missing
# after this long was lost (deleted, then the container restarted). The agent says
# so (401 missing_token), and the controller replaces the container.
TOKEN_MISSING_REPORT_SECONDS = 2.0
HTTP_TIMEOUT = 5.0
# A 429 (too many failed authentications from this address) or 503 (the
# controller's database is restarting) names a Retry-After; it is honoured up to this.
RETRY_AFTER_CAP = 30.0
# What the controller mints (secrets.token_urlsafe(32)). A re-read that does not
# look like one (a write caught half way) is ignored and the held token kept.
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")

# The registry is always reached directly, never through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Response:
    status: int  # 0 when the registry could not be reached
    body: Any = None
    reason: str = ""
    retry_after: float | None = None  # seconds, from a Retry-After header

    def retry_delay(self, default: float) -> float:
        """How long to wait before the next attempt: Retry-After when the registry
        named one (at least `default`, at most RETRY_AFTER_CAP), else `default`."""
        if self.retry_after is None:
            return default
        return min(max(self.retry_after, default), RETRY_AFTER_CAP)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_class(self) -> str:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("class"), str):
            return str(err["class"])
        return "unknown"

    def error_message(self) -> str:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
        return self.reason[:300]


def register_payload(config: Config, url: str) -> dict[str, Any]:
    """The register body, shaped by the ``AGENT_REGISTER_PAYLOAD`` test knob.

    ``no_url`` omits the top-level ``url`` key; ``private_url`` claims
    ``http://10.11.12.13:8000``; ``bad_card`` sends an ``agent_card`` that is not
    an object.
    """
    kind = config.register_payload
    claimed = PRIVATE_URL if kind == "private_url" else url
    card: Any = agent_card(config, claimed)
    if kind == "bad_card":
        card = "not-an-agent-card"
    body: dict[str, Any] = {"workspace_id": config.workspace_id, "url": claimed, "agent_card": card}
    if kind == "no_url":
        del body["url"]
    return body


class RegistryClient:
    def __init__(self, config: Config, state: AgentState, stop: threading.Event, port: int) -> None:
        self.config = config
        self.state = state
        self.stop = stop
        self.port = port
        self._token: str | None = None
        self._token_missing_logged = False
        self.registered = threading.Event()  # set after a successful register

    # -- token -------------------------------------------------------------
    def _read_token_once(self) -> str | None:
        try:
            with open(self.config.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("token_unreadable", path=self.config.token_file, error=type(exc).__name__)
            return None
        return token or None

    def load_token(self) -> str | None:
        """Read the token file, waiting until it exists. ``None`` only when stopping.

        While it is missing, the registry is told (without a token) after
        ``TOKEN_MISSING_REPORT_SECONDS`` and then with backoff.
        """
        waited, report_at = 0.0, TOKEN_MISSING_REPORT_SECONDS
        while not self.stop.is_set():
            token = self._read_token_once()
            if token is not None:
                if self._token_missing_logged:
                    log.info("token_found", path=self.config.token_file)
                    self._token_missing_logged = False
                changed = self._token is not None and token != self._token
                if changed:
                    log.info("token_reloaded", changed="true")
                self._token = token
                return token
            if not self._token_missing_logged:
                log.warning("token_missing", path=self.config.token_file, action="waiting")
                self._token_missing_logged = True
            if waited >= report_at:
                resp = self.post("/registry/register", {"workspace_id": self.config.workspace_id},
                                 token="")
                log.warning("token_missing_reported", http_status=resp.status,
                            error_class=resp.error_class())
                report_at = waited + min(report_at * 2, BACKOFF_CAP)
            self.stop.wait(TOKEN_POLL_SECONDS)
            waited += TOKEN_POLL_SECONDS
        return None

    def refresh_token(self) -> None:
        """Adopt a token the controller refreshed in place (a 43-byte read)."""
        token = self._read_token_once()
        if token is not None and token != self._token and TOKEN_SHAPE.match(token):
            log.info("token_reloaded", reason="refreshed")
            self._token = token

    # -- HTTP ----------------------------------------------------------------
    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> Response:
        """POST with the current token (or `token`, "" for none)."""
        data = json.dumps(body).encode("utf-8")
        bearer = (self._token or "") if token is None else token
        req = urllib.request.Request(  # noqa: S310 - URL comes from the controller's env
            self.config.registry_url + path,
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Authorization": f"Bearer {bearer}",
                "User-Agent": "wsctl-agent",
            },
        )
        try:
            with _OPENER.open(req, timeout=HTTP_TIMEOUT) as resp:
                return Response(resp.status, _parse_json(resp.read()))
        except urllib.error.HTTPError as exc:
            raw = exc.read() if exc.fp is not None else b""
            return Response(exc.code, _parse_json(raw), str(exc.reason),
                            _retry_after(exc.headers.get("Retry-After") if exc.headers else None))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return Response(0, None, f"{type(exc).__name__}: {reason}")

    # -- protocol ------------------------------------------------------------
    def register_until_accepted(self) -> bool:
        """Register with backoff. True when heartbeats should start, False when stopping."""
        backoff = BACKOFF_INITIAL
        attempt = 0
        while not self.stop.is_set():
            attempt += 1
            self.refresh_token()
            body = register_payload(self.config, self.config.claimed_url(self.port))
            resp = self.post("/registry/register", body)
            if resp.ok:
                log.info("register_ok", attempt=attempt, url=body.get("url"))
                self.registered.set()
                return True
            if resp.status == 401:
                log.warning(
                    "register_unauthorized", attempt=attempt, error_class=resp.error_class()
                )
                if self.load_token() is None:
                    return False
            elif resp.status == 400:
                log.error(
                    "register_rejected",
                    attempt=attempt,
                    error_class=resp.error_class(),
                    message=resp.error_message(),
                )
                if self.config.register_once:
                    log.info("register_once", action="heartbeat_without_retry",
                             after_seconds=self.config.reject_grace_seconds)
                    return not self.stop.wait(self.config.reject_grace_seconds)
            elif resp.status == 0:
                log.warning("register_unreachable", attempt=attempt, reason=resp.reason)
            else:  # 429 rate_limited, 503 store_unavailable, ...: retry later
                log.warning(
                    "register_failed",
                    attempt=attempt,
                    http_status=resp.status,
                    error_class=resp.error_class(),
                )
            delay = resp.retry_delay(backoff)
            log.debug("register_retry", delay_seconds=delay)
            if self.stop.wait(delay):
                return False
            backoff = min(backoff * 2, BACKOFF_CAP)
        return False

    def heartbeat_body(self) -> dict[str, Any]:
        status, detail = self.state.health()
        return {
            "workspace_id": self.config.workspace_id,
            "status": status,
            "error_detail": detail,
            "active_tasks": self.state.active_tasks,
            "uptime_seconds": self.state.uptime_seconds(),
        }

    def heartbeat_once(self) -> Response:
        return self.post("/registry/heartbeat", self.heartbeat_body())

    def run(self) -> None:
        """Main loop: wait for boot delay and token, register, then heartbeat forever."""
        if self.config.boot_delay_seconds > 0:
            log.info("boot_delay", seconds=self.config.boot_delay_seconds)
            if self.stop.wait(self.config.boot_delay_seconds):
                return
        if self.load_token() is None:
            return
        while not self.stop.is_set():
            if not self.register_until_accepted():
                return
            if not self._heartbeat_loop():
                return

    def _heartbeat_loop(self) -> bool:
        """Heartbeat until stopping (False) or the registry forgot us (True: re-register)."""
        last: tuple[int, str] | None = None
        while not self.stop.is_set():
            self.refresh_token()
            body = self.heartbeat_body()
            refused = self.state.take_a2a_refused()
            if refused:
                body["a2a_refused"] = refused
            resp = self.post("/registry/heartbeat", body)
            if refused and not resp.ok:
                self.state.give_back_a2a_refused(refused)
            outcome = (resp.status, str(body["status"]))
            if resp.ok:
                emit = log.info if outcome != last else log.debug
                emit("heartbeat_ok", status=body["status"], error_detail=body["error_detail"])
            elif resp.status == 401:
                log.warning("heartbeat_unauthorized", error_class=resp.error_class())
                if self.load_token() is None:
                    return False
            elif resp.status == 404 and not self.config.register_once:
                log.warning(
                    "heartbeat_unknown_agent", error_class=resp.error_class(), action="re-register"
                )
                return True
            elif resp.status == 0:
                emit = log.warning if outcome != last else log.debug
                emit("heartbeat_unreachable", reason=resp.reason)
            else:  # 429 rate_limited, 503 store_unavailable, ...: retry later
                log.warning(
                    "heartbeat_failed", http_status=resp.status, error_class=resp.error_class()
                )
            last = outcome
            if self.stop.wait(resp.retry_delay(self.config.heartbeat_seconds)):
                return False
        return False


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

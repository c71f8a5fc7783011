"""What the LLM gateway changes on the wire: which headers pass, and its own error
answers in the provider's shape.

Headers: hop-by-hop headers (RFC 9110 section 7.6.1: Connection and every header it names,
Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) belong to one
connection and never pass, in either direction; nor does Host (aiohttp sets the
upstream's). Towards the provider the presented credential (`Authorization`,
`x-api-key`) is removed and the real key set in the header the provider expects;
`Accept-Encoding` becomes `identity` so the gateway can read usage from the
answer; `Expect` is the gateway's own business. Everything else is end-to-end
and passes: `anthropic-version`, `anthropic-beta`, `openai-*`, content type,
idempotency keys, the answer's request ids and rate-limit headers.

Errors: the gateway's own refusals and upstream failures answer in the shape the
provider's SDK parses, so the agent's SDK raises its ordinary exception (401
AuthenticationError, 429 RateLimitError, 5xx InternalServerError, ...):
Anthropic `{"type": "error", "error": {"type", "message"}}`, OpenAI
`{"error": {"message", "type", "param", "code"}}` (the code is the wsctl class).
Every one carries `x-wsctl-error-class`; `x-should-retry: false` (which both
SDKs honour) where retrying cannot help.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from controller.core.providers import WireApi

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
})
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
ERROR_CLASS_HEADER = "x-wsctl-error-class"

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                 403: "permission_error", 404: "invalid_request_error",
                 413: "invalid_request_error", 429: "rate_limit_error"}


Headers = CIMultiDictProxy[str] | CIMultiDict[str]


def _connection_listed(headers: Headers) -> set[str]:
    """Header names the Connection header declares hop-by-hop."""
    named: set[str] = set()
    for value in headers.getall("Connection", []):
        named.update(part.strip().lower() for part in value.split(",") if part.strip())
    return named


def _end_to_end(headers: Headers, also_drop: Iterable[str]) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | _connection_listed(headers) | {h.lower() for h in also_drop}
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in drop or low.startswith("proxy-"):
            continue
        kept.add(name, value)
    return kept


def request_headers(headers: Headers, key_headers: Mapping[str, str], *,
                    keep_length: bool) -> CIMultiDict[str]:
    """The headers sent to the provider. `keep_length`: the client declared the body's
    length and the body is passed through unchanged, so the same length is sent (the
    provider gets a plain body, not a chunked one)."""
    drop = set(CREDENTIAL_HEADERS) | {"accept-encoding", "expect"}
    if not keep_length:
        drop.add("content-length")
    kept = _end_to_end(headers, drop)
    kept.update(key_headers)
    kept["Accept-Encoding"] = "identity"
    return kept


def response_headers(headers: Headers) -> CIMultiDict[str]:
    """The provider's answer headers passed to the client. Content-Length is left to
    the response (set from the upstream's when it had one)."""
    return _end_to_end(headers, {"content-length"})


def error_body(api: WireApi, status: int, cls: str, message: str) -> dict[str, object]:
    """An error answer's body in the provider's own shape."""
    text = f"wsctl LLM gateway: {message} ({cls})"
    if api == "openai":
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else
                                 "invalid_request_error")
        return {"error": {"message": text, "type": kind, "param": None, "code": cls}}
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else
                                "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": text}}


class GatewayRefusal(Exception):
    """An answer the gateway gives itself: status, a wsctl class naming the failure,
    a message (never holding a credential, a key or a body), and whether a retry
    can help (`retry` False sets `x-should-retry: false`)."""

    def __init__(self, status: int, cls: str, message: str, *,
                 retry_after: int | None = None, retry: bool | None = None) -> None:
        super().__init__(f"{status} {cls}: {message}")
        self.status = status
        self.cls = cls
        self.message = message
        self.retry_after = retry_after
        self.retry = retry

    def response(self, api: WireApi) -> web.Response:
        headers = {ERROR_CLASS_HEADER: self.cls}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.retry is not None:
            headers["x-should-retry"] = "true" if self.retry else "false"
        return web.json_response(error_body(api, self.status, self.cls, self.message),
                                 status=self.status, headers=headers)

"""A small blocking HTTP client for the admin API, used by the CLI.

Finds the server at --server / $WSCTL_SERVER (default http://127.0.0.1:8080)
and the admin token in <data-dir>/admin.token (or $WSCTL_ADMIN_TOKEN), so a
user never copies a token by hand.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Any

from controller.core.errors import WsctlError

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ClientError(WsctlError):
    """One line for the user."""


@dataclass(frozen=True)
class Client:
    server: str
    token: str
    timeout: float = 180.0

    @classmethod
    def from_environment(cls, server: str | None, data_dir: Path) -> Client:
        """The server is --server, else $WSCTL_SERVER, else where the controller of
        `data_dir` said it listens (its server.json), else 127.0.0.1:8080."""
        url = server or os.environ.get("WSCTL_SERVER") or _announced(data_dir) or DEFAULT_SERVER
        if "://" not in url:
            url = "http://" + url
        token = os.environ.get("WSCTL_ADMIN_TOKEN")
        if not token:
            path = data_dir / "admin.token"
            try:
                token = path.read_text().strip()
            except FileNotFoundError:
                raise ClientError(
                    f"no admin token at {path}: is `wsctl run` using this data dir? "
                    "(--data-dir / WSCTL_DATA_DIR, or set WSCTL_ADMIN_TOKEN)") from None
            except PermissionError:
                raise ClientError(f"cannot read {path}: permission denied") from None
        return cls(url.rstrip("/"), token)

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        with self.open(method, path, query, data, {**sent, **(headers or {})}) as response:
            try:
                payload = response.read()
            except TimeoutError:
                raise ClientError(f"{self.server} did not answer within "
                                  f"{self.timeout:.0f}s") from None
        if raw:
            return payload.decode("utf-8", "replace")
        return json.loads(payload) if payload else None

    def open(self, method: str, path: str,
             query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
             data: bytes | Iterable[bytes] | None = None, headers: Mapping[str, str] | None = None,
             *, timeout: float | EllipsisType | None = ...) -> http.client.HTTPResponse:
        """The answer to a request, open, for the caller to read as it comes and close
        (`wsctl logs -f`, `wsctl cp`); `data` that is an iterable of chunks is sent as
        it is produced (chunked). `timeout`: seconds a read may wait (default the
        client's; None: no limit, for a stream that may be quiet for long)."""
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if not url.startswith(("http://", "https://")):
            raise ClientError(f"server URL must be http(s): {self.server}")
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        wait = self.timeout if isinstance(timeout, EllipsisType) else timeout
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(  # noqa: S310
                request, timeout=wait)
        except urllib.error.HTTPError as exc:
            raise ClientError(self._explain(exc)) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"no wsctl server answers at {self.server} ({exc.reason}); "
                              "start one with `wsctl run` or set --server") from None
        except TimeoutError:
            raise ClientError(f"{self.server} did not answer within {wait or 0:.0f}s") from None
        return response

    @staticmethod
    def _explain(exc: urllib.error.HTTPError) -> str:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        message = body.get("error") if isinstance(body, dict) else None
        details = body.get("details") if isinstance(body, dict) else None
        text = f"{exc.code} {message or exc.reason}"
        if details:
            text += ": " + "; ".join(str(d) for d in details)
        return text


def _announced(data_dir: Path) -> str | None:
    """The URL a running `wsctl run` wrote to <data-dir>/server.json, if any."""
    try:
        url = json.loads((data_dir / "server.json").read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None

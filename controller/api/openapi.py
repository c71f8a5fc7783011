"""The admin API's OpenAPI 3.1 document, generated from the pydantic models.

Served at /openapi.json. The Workspace schemas are the model's own JSON Schema
(2020-12, which OpenAPI 3.1 uses), so the document cannot drift from what the
API accepts and returns.
"""

from __future__ import annotations

from typing import Any

from controller import __version__
from controller.core.model import Workspace

REF = "#/components/schemas/{model}"
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
ERROR = {"type": "object", "properties": {"error": {"type": "string"}},
         "required": ["error"], "additionalProperties": True}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


def _schemas() -> dict[str, Any]:
    # Validation mode for requests and responses alike: responses omit unset
    # fields, which the validation schema allows (they have defaults).
    workspace = Workspace.model_json_schema(by_alias=True, ref_template=REF, mode="validation")
    schemas: dict[str, Any] = dict(workspace.pop("$defs", {}))
    schemas["Workspace"] = workspace
    schemas["WorkspaceInput"] = {"$ref": "#/components/schemas/Workspace"}
    schemas["Error"] = ERROR
    schemas["WorkspaceList"] = {
        "type": "object", "required": ["items"],
        "properties": {"items": {"type": "array",
                                 "items": {"$ref": "#/components/schemas/Workspace"}}}}
    schemas["ApplyRequest"] = {
        "type": "object", "required": ["items"], "additionalProperties": False,
        "properties": {"items": {"type": "array", "maxItems": 500,
                                 "items": {"$ref": "#/components/schemas/WorkspaceInput"}}}}
    schemas["ApplyResult"] = {
        "type": "object", "required": ["results"],
        "properties": {"results": {"type": "array", "items": {
            "type": "object", "required": ["workspace", "result", "generation"],
            "properties": {"workspace": {"type": "string"},
                           "result": {"enum": ["created", "configured", "unchanged"]},
                           "generation": {"type": ["integer", "null"]}}}}}}
    schemas["JsonRpcRequest"] = {
        "type": "object", "required": ["jsonrpc", "method", "params"],
        "properties": {"jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer"]},
                       "method": {"const": "message/send"},
                       "params": {"type": "object"}}}
    return schemas


def _stream_paths(one: list[dict[str, Any]], bad: dict[str, Any],
                  not_found: dict[str, Any]) -> dict[str, Any]:
    """exec (a WebSocket: documented as the GET that asks for the upgrade) and copy."""
    # The request line is read up to 8190 bytes: the lengths here keep a generated
    # query (up to 12 characters per URL-encoded character) within it.
    path = {"name": "path", "in": "query", "required": True,
            "description": "an absolute path in the container",
            "schema": {"type": "string", "pattern": "^/", "maxLength": 256}}
    flag = {"enum": ["true", "false", "1", "0"]}
    busy = _error("too many streams open (Retry-After)")
    no_container = _error("the workspace has no running container")
    tar = {"content": {"application/x-tar": {"schema": {"type": "string",
                                                         "format": "binary"}}}}
    failed = _error("tar (or sh) in the container failed; its message")
    return {
        "/api/v1/workspaces/{name}/exec": {"get": {
            "operationId": "execInWorkspace",
            "description": "WebSocket (subprotocol v1.exec.wsctl.dev; frames in "
                           "controller/core/streams.py): the command runs as the agent's "
                           "uid in the newest running container. A request without "
                           "Upgrade: websocket is 400.",
            "parameters": [
                *one, {"name": "command", "in": "query", "required": True,
                       "style": "form", "explode": True,
                       "description": "the program, then each argument (repeated; "
                                      "at most 7 KiB URL-encoded in all)",
                       "schema": {"type": "array", "minItems": 1, "maxItems": 16,
                                  "items": {"type": "string", "maxLength": 24}}},
                {"name": "tty", "in": "query", "required": False, "schema": flag},
                {"name": "stdin", "in": "query", "required": False, "schema": flag}],
            "responses": {"101": {"description": "switching to the WebSocket"},
                          "400": _error("bad query, or not a WebSocket upgrade"),
                          "404": not_found, "409": no_container, "429": busy}}},
        "/api/v1/workspaces/{name}/files": {
            "get": {"operationId": "copyFromWorkspace", "parameters": [*one, path],
                    "responses": {"200": {"description": "a tar of the path, streamed", **tar},
                                  "400": bad, "404": _error("no such workspace or path"),
                                  "409": no_container, "422": failed, "429": busy}},
            "put": {"operationId": "copyToWorkspace", "parameters": [*one, path],
                    "requestBody": {"required": True, **tar},
                    "responses": {"200": _json({"type": "object", "required": ["path", "bytes"]},
                                               "unpacked into the folder `path`"),
                                  "400": bad, "403": _error("under /configs: refused"),
                                  "404": _error("no such workspace or folder"),
                                  "409": no_container, "422": failed, "429": busy}}},
        "/api/v1/workspaces/{name}/files/stat": {"get": {
            "operationId": "statInWorkspace", "parameters": [*one, path],
            "responses": {"200": _json({"type": "object", "required": ["path", "type"],
                                        "properties": {"type": {"enum": [
                                            "directory", "file", "missing"]}}},
                                       "what the path is, as the agent sees it"),
                          "400": bad, "404": not_found, "409": no_container, "422": failed,
                          "429": busy}}},
    }


def _list_of(required: list[str], properties: dict[str, Any], description: str
             ) -> dict[str, Any]:
    """A 200 answer `{"items": [...]}` of objects with these fields."""
    return _json({"type": "object", "required": ["items"], "properties": {"items": {
        "type": "array", "items": {"type": "object", "required": required,
                                   "properties": properties}}}}, description)


def document() -> dict[str, Any]:
    namespace = {"name": "namespace", "in": "query", "required": False, "schema": NAME}
    name = {"name": "name", "in": "path", "required": True, "schema": NAME}
    workspace = {"$ref": "#/components/schemas/Workspace"}
    not_found = _error("no such workspace")
    bad = _error("invalid name, namespace or query")
    one = [name, namespace]
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "wsctl admin API", "version": __version__,
                 "description": "Declared workspaces, their status, and the A2A proxy. "
                                "Every route but /healthz and /readyz needs the admin "
                                "token (Authorization: Bearer)."},
        "security": [{"admin": []}],
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "paths": {
            "/healthz": {"get": {"security": [], "operationId": "healthz",
                                 "responses": {"200": _json({"type": "object"}, "alive")}}},
            "/readyz": {"get": {"security": [], "operationId": "readyz", "responses": {
                "200": _json({"type": "object"}, "ready"),
                "503": _json({"type": "object"}, "starting")}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {
                "200": _json({"type": "object"}, "this document")}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {"200": {
                "description": "Prometheus text exposition",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/v1/volumes": {
                "get": {"operationId": "listVolumes", "responses": {"200": _json(
                    {"type": "object", "required": ["items"], "properties": {"items": {
                        "type": "array", "items": {
                            "type": "object", "required": ["name", "workspace", "status"],
                            "properties": {"status": {"enum": ["attached", "retained"]}}}}}},
                    "workspace storage volumes, attached or retained")}}},
            "/api/v1/usage": {
                "get": {"operationId": "llmUsage", "parameters": [
                    {"name": "workspace", "in": "query", "required": False,
                     "description": "one workspace (NAMESPACE.NAME)",
                     "schema": {"type": "string"}},
                    {"name": "days", "in": "query", "required": False,
                     "description": "the last N UTC days (default 7)",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 400}}],
                    "responses": {"200": _list_of(
                        ["workspace", "day", "provider", "requests", "errors", "inputTokens",
                         "outputTokens", "cacheCreationTokens", "cacheReadTokens"],
                        {"workspace": {"type": "string"},
                         "day": {"type": "string", "format": "date"},
                         "provider": {"type": "string"},
                         **{k: {"type": "integer", "minimum": 0} for k in (
                             "requests", "errors", "inputTokens", "outputTokens",
                             "cacheCreationTokens", "cacheReadTokens")}},
                        "LLM use through the gateway per workspace, UTC day and provider"),
                        "400": bad}}},
            "/api/v1/events": {
                "get": {"operationId": "listEvents",
                        "description": "The newest events, oldest first: of one workspace, "
                                       "of a namespace, or of all (neither given). "
                                       "`watch=true` (not described here: a stream) sends "
                                       "them as NDJSON, then each new event or repeat.",
                        "parameters": [
                    namespace,
                    {"name": "workspace", "in": "query", "required": False,
                     "description": "one workspace's name (in `namespace`, default "
                                    "\"default\")", "schema": NAME},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                    "responses": {"200": _list_of(
                        ["id", "namespace", "workspace", "type", "reason", "message", "count",
                         "firstAt", "lastAt"],
                        {"id": {"type": "integer"}, "namespace": {"type": "string"},
                         "workspace": {"type": "string"},
                         "type": {"enum": ["Normal", "Warning"]},
                         "reason": {"type": "string"}, "message": {"type": "string"},
                         "count": {"type": "integer", "minimum": 1},
                         "firstAt": {"type": "string", "format": "date-time"},
                         "lastAt": {"type": "string", "format": "date-time"}},
                        "events, oldest first"),
                        "400": bad}}},
            "/api/v1/workspaces": {
                "get": {"operationId": "listWorkspaces", "parameters": [namespace],
                        "responses": {"200": _json({"$ref": "#/components/schemas/"
                                                            "WorkspaceList"}, "workspaces"),
                                      "400": bad}},
                "post": {"operationId": "applyWorkspaces",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/ApplyRequest"}}}},
                         "responses": {
                             "200": _json({"$ref": "#/components/schemas/ApplyResult"},
                                          "applied, all or nothing"),
                             "400": _error("body is not JSON"),
                             "409": _error("a workspace is being deleted"),
                             "413": _error("body too large"),
                             "422": _error("invalid documents; nothing was applied")}},
            },
            "/api/v1/workspaces/{name}": {
                "get": {"operationId": "getWorkspace", "parameters": one,
                        "responses": {"200": _json(workspace, "the workspace"),
                                      "400": bad, "404": not_found}},
                "delete": {"operationId": "deleteWorkspace", "parameters": [
                    *one, {"name": "purge", "in": "query", "required": False,
                           "description": "also remove the storage volume",
                           "schema": {"enum": ["true", "false", "1", "0"]}}],
                           "responses": {"202": _json({"type": "object"}, "deleting"),
                                         "400": bad, "404": not_found}},
            },
            "/api/v1/workspaces/{name}/restart": {
                "post": {"operationId": "restartWorkspace", "parameters": one,
                         "responses": {"200": _json({"type": "object"}, "restartedAt bumped"),
                                       "400": bad, "404": not_found,
                                       "409": _error("being deleted")}}},
            "/api/v1/workspaces/{name}/suspend": {
                "post": {"operationId": "suspendWorkspace", "parameters": one,
                         "responses": {"200": _json({"type": "object"},
                                                    "suspending, or already suspended"),
                                       "400": bad, "404": not_found,
                                       "409": _error("being deleted")}}},
            "/api/v1/workspaces/{name}/resume": {
                "post": {"operationId": "resumeWorkspace", "parameters": one,
                         "responses": {"200": _json({"type": "object"},
                                                    "Online again, or was not suspended"),
                                       "400": bad, "404": not_found,
                                       "409": _error("being deleted"),
                                       "504": _error("did not come back in time")}}},
            "/api/v1/workspaces/{name}/describe": {
                "get": {"operationId": "describeWorkspace", "parameters": one,
                        "responses": {"200": _json({"type": "object", "required": [
                            "workspace", "registration", "events", "diagnostics", "storage"]},
                            "workspace with registration, events, diagnostics and storage"),
                            "400": bad, "404": not_found}}},
            "/api/v1/workspaces/{name}/activity": {
                "get": {"operationId": "workspaceActivity", "parameters": [
                    *one, {"name": "limit", "in": "query", "required": False,
                           "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                        "responses": {"200": _json({"type": "object", "required": ["items"]},
                                                   "activity rows, newest first"),
                                      "400": bad, "404": not_found}}},
            "/api/v1/workspaces/{name}/logs": {
                "get": {"operationId": "workspaceLogs", "parameters": [
                    *one, {"name": "tail", "in": "query", "required": False,
                           "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                    {"name": "follow", "in": "query", "required": False,
                     "description": "stream the lines as they are written (chunked), until "
                                    "the container stops or the client goes away",
                     "schema": {"enum": ["true", "false", "1", "0"]}}],
                        "responses": {"200": {"description": "container log lines",
                                              "content": {"text/plain": {
                                                  "schema": {"type": "string"}}}},
                                      "400": bad, "404": not_found,
                                      "429": _error("too many streams open")}}},
            "/api/v1/workspaces/{name}/a2a": {
                "post": {"operationId": "sendToAgent", "parameters": one,
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/JsonRpcRequest"}}}},
                         "responses": {
                             "200": _json({"type": "object"}, "the agent's JSON-RPC answer"),
                             "400": _error("not a JSON-RPC message/send"),
                             "404": not_found,
                             "413": _error("body too large"),
                             "409": _error("no running container"),
                             "502": _error("the agent did not answer"),
                             "504": _error("a suspended workspace did not wake in time")}}},
        },
    }
    spec["paths"].update(_stream_paths(one, bad, not_found))
    unauthorized = _error("admin token missing or wrong")
    unavailable = {**_error("the database is unavailable (class store_unavailable); "
                            "retry after Retry-After seconds"),
                   "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if operation.get("security") != []:
                operation["responses"]["401"] = unauthorized
            if path.startswith("/api/"):
                operation["responses"].setdefault("405", _error("method not allowed"))
            if path.startswith("/api/") or path == "/metrics":  # the routes that read the store
                operation["responses"].setdefault("503", unavailable)
    return spec

"""The OpenAPI description beyond what FastAPI derives from the routes: the Bitrix24-shaped
``/rest/`` surface and the answers of ``/api/v1/*``.

The ``/rest/`` routes take any path (``/rest/{tail:path}``, see :mod:`._rest`) and read
their parameters by hand, so FastAPI can describe none of it: the paths a Bitrix24 client
uses, the four encodings, where the client key may stand and Bitrix24's answer shapes are
written here. The ``/api/v1/*`` handlers read their bodies by hand too; FastAPI knows the
bodies from ``openapi_extra`` but not the answers, which are added here. One description
serves Swagger UI (``/docs``) and the fuzzing in ``tests/security/test_fuzz_openapi.py``,
which checks the answers against it.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from ..bitrix import METHOD_NAME

JSON = "application/json"
NDJSON = "application/x-ndjson"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

_REST_TAG = "Bitrix24-shaped /rest/"
_API_TAG = "/api/v1"

# Reused pieces, referenced as #/components/...; each is written once.
_SCHEMAS: dict[str, Any] = {
    "BitrixAnswer": {
        "type": "object",
        "description": "Bitrix24's own answer, passed through unchanged.",
        "required": ["result"],
        "properties": {
            "result": {"description": "The method's payload: a scalar, object or array."},
            "total": {"type": "integer", "description": "List methods: matching records."},
            "next": {"type": "integer", "description": "List methods: `start` of the next page."},
            "time": {"type": "object", "description": "Bitrix24's timing of the call."},
        },
    },
    "BitrixError": {
        "type": "object",
        "description": (
            "Bitrix24's error shape; the gateway's own refusals take it too "
            "(`NO_AUTH_FOUND`, `ACCESS_DENIED`, `QUERY_LIMIT_EXCEEDED`, ...)."
        ),
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "error_description": {"type": "string"},
        },
    },
    "Rest3Error": {
        "type": "object",
        "description": "REST 3.0's error shape.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "GatewayError": {
        "type": "object",
        "description": "A failure of `/api/v1/*`: docs/http-api.md lists every `code`.",
        "required": ["success", "error", "code", "status"],
        "properties": {
            "success": {"const": False},
            "error": {"type": "string", "description": "For a person to read."},
            "code": {"type": "string", "description": "For a program to branch on."},
            "status": {"type": "integer", "description": "The HTTP status again."},
            "retry_after": {"type": "integer", "description": "Seconds; with 429 and 503."},
            "bitrix": {
                "type": "object",
                "description": "What Bitrix24 answered, when the error is Bitrix24's.",
                "properties": {
                    "error": {"type": "string"},
                    "error_description": {"type": "string"},
                },
            },
        },
    },
    "RestParams": {
        "type": "object",
        "description": (
            "The method's parameters, and `auth`: a client key where a Bitrix24 token "
            "would stand. A form or multipart body uses PHP's brackets for nesting "
            "(`fields[TITLE]=Deal`, `select[]=ID`)."
        ),
        "properties": {"auth": {"type": "string", "description": "A client key."}},
        "additionalProperties": True,
    },
    "RestFormParams": {
        "type": "object",
        "description": "Parameters in PHP's bracket form, and `auth`: a client key.",
        "properties": {"auth": {"type": "string", "description": "A client key."}},
        "additionalProperties": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        },
    },
}

_PARAMETERS: dict[str, Any] = {
    "RestMethod": {
        "name": "method",
        "in": "path",
        "required": True,
        "description": (
            "A Bitrix24 REST method, e.g. `crm.deal.list`; a `.json` suffix is allowed "
            "(`.xml` is refused)."
        ),
        "schema": {"type": "string", "pattern": METHOD_NAME.pattern.replace("$", r"(\.json)?$")},
        "examples": {
            "list": {"value": "crm.deal.list"},
            "batch": {"value": "batch"},
            "suffix": {"value": "user.current.json"},
        },
    },
    "RestQuery": {
        "name": "params",
        "in": "query",
        "required": False,
        "description": (
            "The method's parameters in the query string, PHP's brackets for nesting "
            "(`filter[>ID]=10&select[]=ID`); `auth` among them is the client key."
        ),
        "style": "form",
        "explode": True,
        "schema": {"$ref": "#/components/schemas/RestFormParams"},
    },
    "PortalName": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "A registered portal's name: for a key allowed on several portals.",
        "schema": {"type": "string"},
    },
    "WebhookUser": {
        "name": "user_id",
        "in": "path",
        "required": True,
        "description": "Any user id: the gateway ignores it (the portal's grant decides).",
        "schema": {"type": "string"},
    },
    "WebhookKey": {
        "name": "key",
        "in": "path",
        "required": True,
        "description": "The client key; refused unless the client was added with --allow-url-key.",
        "schema": {"type": "string"},
    },
}

_SECURITY_SCHEMES: dict[str, Any] = {
    "restAuth": {
        "type": "apiKey",
        "in": "query",
        "name": "auth",
        "description": (
            "A client key as Bitrix24's `auth` parameter: in the query string, or (not "
            "expressible here) in the form, multipart or JSON body."
        ),
    },
}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("schemas", schema_name)}}}


def _rest_responses(*, v3: bool) -> dict[str, Any]:
    """The statuses ``api/_rest.py`` gives itself; any other is Bitrix24's own (``default``)."""
    error = "Rest3Error" if v3 else "BitrixError"
    own = {
        "400": "INVALID_REQUEST: the request could not be read (brackets, JSON, `.xml`).",
        "401": "NO_AUTH_FOUND, or INVALID_CREDENTIALS for a key in the path: no valid key.",
        "403": "ACCESS_DENIED: not for this key (portal, method, address) or no valid grant.",
        "404": "ERROR_METHOD_NOT_FOUND: not a Bitrix24 method name.",
        "409": "UPSTREAM_OUTCOME_UNKNOWN: a write may have been done; do not resend blindly.",
        "413": "INVALID_REQUEST: the body is over the limit.",
        "429": "OPERATION_TIME_LIMIT: the method is blocked; see Retry-After.",
        "503": "QUERY_LIMIT_EXCEEDED: the portal's queue is full; see Retry-After.",
    }
    responses: dict[str, Any] = {"200": _json("BitrixAnswer", "Bitrix24's answer, unwrapped.")}
    responses.update({status: _json(error, text) for status, text in own.items()})
    responses["default"] = _json(error, "Bitrix24's own error, with Bitrix24's status.")
    return responses


def _rest_operation(
    summary: str,
    description: str,
    parameters: list[dict[str, Any]],
    *,
    post: bool,
    url_key: bool = False,
    v3: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [_REST_TAG],
        "summary": summary,
        "description": description,
        "parameters": [*parameters, _ref("parameters", "RestQuery")],
        "responses": _rest_responses(v3=v3),
        # The key in the path (webhook style) needs no other credential.
        "security": [] if url_key else [{"clientKey": []}, {"restAuth": []}],
    }
    if post:
        op["requestBody"] = {
            "required": False,
            "content": {
                JSON: {"schema": _ref("schemas", "RestParams")},
                FORM: {"schema": _ref("schemas", "RestFormParams")},
                MULTIPART: {"schema": _ref("schemas", "RestFormParams")},
            },
        }
    return op


def _rest_path(summary: str, description: str, *names: str, **kinds: bool) -> dict[str, Any]:
    parameters = [_ref("parameters", name) for name in names]
    return {
        verb: {
            **_rest_operation(summary, description, parameters, post=verb == "post", **kinds),
            "operationId": f"rest_{'_'.join(n.lower() for n in names)}_{verb}",
        }
        for verb in ("get", "post")
    }


_REST_PATHS: dict[str, Any] = {
    "/rest/{method}": _rest_path(
        "Call a method as on Bitrix24",
        "A Bitrix24 client's request with the client key in place of the token "
        "(docs/drop-in.md). The portal is the key's only one.",
        "RestMethod",
    ),
    "/rest/{user_id}/{key}/{method}": _rest_path(
        "Call a method, the key in the URL (incoming-webhook style)",
        "For clients that only take a webhook URL; the client must allow it "
        "(`b24gate client add --allow-url-key`).",
        "WebhookUser",
        "WebhookKey",
        "RestMethod",
        url_key=True,
    ),
    "/rest/api/{method}": _rest_path(
        "Call a REST 3.0 method",
        "Passed through to the portal's `/rest/api/METHOD`, alone (never in a batch); "
        "errors in REST 3.0's shape.",
        "RestMethod",
        v3=True,
    ),
    "/portals/{name}/rest/{method}": _rest_path(
        "Call a method on a named portal",
        "`/rest/` for a key allowed on several portals; the forms "
        "`/portals/{name}/rest/{user_id}/{key}/{method}` and `/portals/{name}/rest/api/{method}` "
        "work the same way.",
        "PortalName",
        "RestMethod",
    ),
}

# The answers of /api/v1/*: (status 200's JSON schema, its description) per path.
_BATCH_ENTRY: dict[str, Any] = {
    "type": "object",
    "description": "A command's `result` (and `total`, `next`), or its `error`.",
    "properties": {
        "result": {},
        "total": {"type": "integer"},
        "next": {"type": "integer"},
        "error": {"type": "object"},
    },
}
_API_ANSWERS: dict[str, dict[str, Any]] = {
    "/api/v1/call": {
        "type": "object",
        "required": ["success", "data"],
        "properties": {"success": {"const": True}, "data": _ref("schemas", "BitrixAnswer")},
    },
    "/api/v1/batch": {
        "type": "object",
        "required": ["success", "results"],
        "properties": {
            "success": {"const": True},
            "results": {"type": "array", "items": _BATCH_ENTRY},
        },
    },
    "/api/v1/list": {
        "type": "object",
        "description": "One page, with `page_size`.",
        "required": ["success", "items", "next_cursor"],
        "properties": {
            "success": {"const": True},
            "items": {"type": "array", "items": {"type": "object"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
}
_JOB_VIEW: dict[str, Any] = {
    "type": "object",
    "description": "A job: its state and how many of its commands are in each state.",
    "required": ["id", "state", "total", "counts", "done"],
    "properties": {
        "id": {"type": "string"},
        "portal": {"type": "string"},
        "state": {"enum": ["queued", "running", "done", "cancelled"]},
        "total": {"type": "integer"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "done": {"type": "integer"},
        "external_id": {"type": ["string", "null"]},
        "created_at": {"type": "number"},
        "finished_at": {"type": ["number", "null"]},
        "expires_at": {"type": ["number", "null"]},
    },
}
_JOB_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["success", "job"],
    "properties": {"success": {"const": True}, "job": _JOB_VIEW},
}
_JOB_RESULTS: dict[str, Any] = {
    "type": "object",
    "description": "A page of the commands in order (`format=ndjson`: all of them, one a line).",
    "required": ["success", "items", "next_after"],
    "properties": {
        "success": {"const": True},
        "items": {"type": "array", "items": {"type": "object"}},
        "next_after": {"type": ["integer", "null"]},
    },
}
_EVENTS_PAGE = {
    "type": "object",
    "description": "The events after the cursor that the key may see (`format=ndjson`: one "
    "a line, the next cursor in `X-Next-Cursor`).",
    "required": ["success", "portal", "events", "next", "missed"],
    "properties": {
        "success": {"const": True},
        "portal": {"type": "string"},
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["cursor", "event", "data", "ts", "source", "received_at"],
                "properties": {
                    "cursor": {"type": "integer"},
                    "event": {"type": "string"},
                    "data": {"type": "object"},
                    "ts": {"type": ["number", "null"]},
                    "source": {"enum": ["online", "offline"]},
                    "received_at": {"type": "number"},
                },
            },
        },
        "next": {"type": "integer"},
        "missed": {"type": "integer"},
    },
}
# The other answers of /api/v1/*: (path, verb) -> (success status, its JSON schema).
_API_OTHER_ANSWERS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("/api/v1/jobs", "post"): ("202", _JOB_ANSWER),
    ("/api/v1/jobs/{job_id}", "get"): ("200", _JOB_ANSWER),
    ("/api/v1/jobs/{job_id}/results", "get"): ("200", _JOB_RESULTS),
    ("/api/v1/jobs/{job_id}/cancel", "post"): ("200", _JOB_ANSWER),
    ("/api/v1/events", "get"): ("200", _EVENTS_PAGE),
}
_API_ERRORS = {
    "400": "The request is malformed (`invalid_json`, `invalid_request`, `invalid_method`).",
    "401": "No valid client key (`unauthorized`).",
    "403": "The key may not use this method, address or events (`method_forbidden`, "
    "`ip_forbidden`, `events_forbidden`).",
    "404": "No such portal (`unknown_portal`) or job (`unknown_job`) for this key.",
    "409": "The portal needs an administrator (`needs_authorization`), or an idempotency "
    "key is in use or its first request's outcome is unknown.",
    "422": "The idempotency key was used with another request (`idempotency_key_reused`).",
    "413": "The body is over the limit (`body_too_large`).",
    "429": "Over a limit (`rate_limited`); see `retry_after`.",
}


def _name_methods(node: Any) -> None:
    """Every ``method`` field of a body gets the rule the gateway applies to it (another name
    is refused with ``invalid_method``), and an example."""
    if isinstance(node, dict):
        method = node.get("properties", {}).get("method")
        if isinstance(method, dict) and method.get("type") == "string":
            method.update(pattern=METHOD_NAME.pattern, examples=["crm.deal.list", "user.current"])
        for value in node.values():
            _name_methods(value)
    elif isinstance(node, list):
        for value in node:
            _name_methods(value)


def _describe_api(paths: dict[str, Any]) -> None:
    answers = {(path, "post"): ("200", answer) for path, answer in _API_ANSWERS.items()}
    for (path, verb), (status, answer) in {**answers, **_API_OTHER_ANSWERS}.items():
        op = paths.get(path, {}).get(verb)
        if op is None:
            continue
        _name_methods(op.get("requestBody"))
        op.setdefault("tags", [_API_TAG])
        ok = op["responses"].setdefault(status, {"description": "Successful Response"})
        content = ok.setdefault("content", {})
        content[JSON] = {"schema": deepcopy(answer)}
        for status, text in _API_ERRORS.items():
            op["responses"][status] = _json("GatewayError", text)
        # Bitrix24's own error keeps its status; the upstream ones are 502, 503 and 504.
        op["responses"]["default"] = _json("GatewayError", "Any other failure; same shape.")


def describe(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's ``schema`` with the ``/rest/`` paths and the answers of ``/api/v1/*``;
    changed in place and returned."""
    components = schema.setdefault("components", {})
    for kind, items in (
        ("schemas", _SCHEMAS),
        ("parameters", _PARAMETERS),
        ("securitySchemes", _SECURITY_SCHEMES),
    ):
        components.setdefault(kind, {}).update(deepcopy(items))
    paths = schema.setdefault("paths", {})
    _describe_api(paths)
    paths.update(deepcopy(_REST_PATHS))
    return schema

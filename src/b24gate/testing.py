"""What an integrator's tests, and b24gate's own, need beyond the package façades.

- :func:`server_config`: the uvicorn configuration ``b24gate serve`` uses, to run the
  gateway in-process exactly as it runs in production (no access line with a key in it,
  no forwarded headers trusted by uvicorn); :func:`redact_target` is how a request target
  is written into a log line, and :class:`AccessLineRedactor` the filter on uvicorn's
  access lines; :func:`free_port`, a port for a server started a moment later that no
  outgoing connection can be holding.
- Bitrix24's PHP parameter rules, as the gateway and the sandbox read them:
  :func:`parse_php_query`, :func:`parse_php_pairs`, :func:`build_php_query`,
  :func:`unquote` (PHP's ``urldecode``), PHP's caps (:data:`MAX_INPUT_VARS`,
  :data:`MAX_INPUT_NESTING`) and the errors strict parsing raises (:class:`PhpInputError`,
  :class:`TooManyVariables`, :class:`NestingTooDeep`).
- The gateway's log lines: :class:`TextFormatter`, :class:`JsonFormatter`,
  :class:`RequestIdFilter` (which stamps each record with :data:`REQUEST_ID`, the id of
  the request being served) and :func:`fields_text` (``key=value`` pairs, quoted as a
  text line quotes them).
- :func:`idempotency_fingerprint`: what makes two requests under one ``Idempotency-Key``
  the same request, as the store keeps it.
- :class:`AdminSessions` and :data:`ADMIN_SESSION_TTL`: the admin page's session cookies,
  to make one that has expired (its ``clock``); :class:`AdminTokenGuesses`, the budget of
  wrong admin tokens per address; :func:`admin_same_origin`, whether a form comes from the
  admin page's own origin.
"""

from ._http_server import AccessLineRedactor, free_port, redact_target, server_config
from ._logs import REQUEST_ID, JsonFormatter, RequestIdFilter, TextFormatter, fields_text
from ._php import (
    MAX_INPUT_NESTING,
    MAX_INPUT_VARS,
    NestingTooDeep,
    PhpInputError,
    TooManyVariables,
    build_php_query,
    parse_php_pairs,
    parse_php_query,
    unquote,
)
from .api._admin_session import SESSION_TTL as ADMIN_SESSION_TTL
from .api._admin_session import Sessions as AdminSessions
from .api._admin_session import SignInLimit as AdminTokenGuesses
from .api._admin_session import same_origin as admin_same_origin
from .api._idempotency import fingerprint as idempotency_fingerprint

__all__ = [
    "ADMIN_SESSION_TTL",
    "MAX_INPUT_NESTING",
    "MAX_INPUT_VARS",
    "REQUEST_ID",
    "AccessLineRedactor",
    "AdminSessions",
    "AdminTokenGuesses",
    "JsonFormatter",
    "NestingTooDeep",
    "PhpInputError",
    "RequestIdFilter",
    "TextFormatter",
    "TooManyVariables",
    "admin_same_origin",
    "build_php_query",
    "fields_text",
    "free_port",
    "idempotency_fingerprint",
    "parse_php_pairs",
    "parse_php_query",
    "redact_target",
    "server_config",
    "unquote",
]

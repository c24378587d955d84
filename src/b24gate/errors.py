"""The one exception tree of b24gate. Each error carries a stable machine ``code`` and an
HTTP ``status``; errors that Bitrix24 said keep its ``error`` / ``error_description``.
Retry policy keys off the class, never off message text. No message ever holds a token,
a client secret or a client key.

    B24GateError
    ├── ConfigError                   start-up: bad settings, unreadable or foreign master key
    ├── RequestError (400)            invalid_json, invalid_request, invalid_method, too_deep,
    │                                 invalid_batch
    │   ├── BodyTooLarge (413)        body_too_large, too_many_parameters
    │   └── InvalidSetting            invalid_setting: an administrator's value (``field``)
    ├── Unauthorized (401)            unauthorized
    ├── Forbidden (403)               method_forbidden, ip_forbidden
    ├── UnknownPortal (404)           unknown_portal
    ├── UnknownClient (404)           unknown_client: no active client key of that name
    ├── Conflict (409)                conflict: a name, domain or key id is taken
    │   └── StoreConflict             (b24gate.store) raised by the store itself
    ├── NeedsAuthorization (409)      needs_authorization: the grant is gone, an admin must act
    ├── RateLimited (429)             rate_limited, with retry_after
    ├── UpstreamError
    │   ├── UpstreamUnreachable (502) upstream_unreachable (sent=False: never reached Bitrix24)
    │   ├── UpstreamInvalid (502)     upstream_invalid: the answer is not Bitrix24's JSON
    │   ├── PortalMoved (502)         the portal answered a redirect to another host
    │   ├── PortalUnavailable (502)   portal_unavailable: a redirect to itself (licence page)
    │   ├── UpstreamTimeout (504)     upstream_timeout: no answer, the call was a read
    │   └── OutcomeUnknown (504)      upstream_outcome_unknown: a write may have happened
    ├── BitrixError (Bitrix24's status) bitrix_error: Bitrix24 answered an error
    │   ├── TokenRejected             expired_token / invalid_token: refresh, retry once
    │   ├── CredentialsRejected       INVALID_CREDENTIALS: an incoming webhook is gone
    │   ├── QueryLimitExceeded (503)  not executed: back off and retry
    │   └── OperationTimeLimit (429)  the method is blocked until operating_reset_at
    └── OAuthError                    the OAuth server refused a token request
        ├── GrantRevoked              no retry can fix it: re-authorize
        └── OAuthUnavailable          network error or 5xx: retry with back-off
"""

from __future__ import annotations

from typing import Any, Literal

# The values an administrator gives for a portal or a client key (:class:`InvalidSetting`).
SettingField = Literal[
    "burst",
    "client_id",
    "client_secret",
    "ips",
    "methods",
    "name",
    "oauth_url",
    "plan",
    "portals",
    "rate",
    "token_method",
    "url",
    "webhook_url",
]


class B24GateError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ConfigError(B24GateError):
    code = "config_error"


class RequestError(B24GateError):
    code = "invalid_request"
    status = 400


class BodyTooLarge(RequestError):
    code = "body_too_large"
    status = 413


class InvalidSetting(RequestError):
    """An administrator's value for a portal or a client key is refused (a URL that is not
    https, a bad name, a budget out of range, a CIDR that is none). ``field`` names the
    value, so that a command line can point at its option and an API at its field."""

    code = "invalid_setting"

    def __init__(self, field: SettingField, message: str) -> None:
        super().__init__(message)
        self.field: SettingField = field


class Unauthorized(B24GateError):
    code = "unauthorized"
    status = 401


class Forbidden(B24GateError):
    code = "forbidden"
    status = 403


class UnknownPortal(B24GateError):
    code = "unknown_portal"
    status = 404


class UnknownClient(B24GateError):
    code = "unknown_client"
    status = 404


class Conflict(B24GateError):
    """Something that must be unique is taken (a portal's name or domain, a client's name
    or key id), or a change does not fit what it changes (a webhook for an OAuth portal)."""

    code = "conflict"
    status = 409


class NeedsAuthorization(B24GateError):
    code = "needs_authorization"
    status = 409

    def __init__(self, portal: str, reason: str, *, fix: str | None = None) -> None:
        """``fix`` says what the administrator does; by default, authorize the portal again."""
        fix = fix or f"run `b24gate portal authorize {portal}` and open the URL it prints"
        super().__init__(f"portal {portal!r} needs authorization ({reason}): {fix}")
        self.portal = portal
        self.reason = reason


class RateLimited(B24GateError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float, *, operation_time: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # True when Bitrix24 blocked the method for its operating time (OPERATION_TIME_LIMIT),
        # False when the request budget is exhausted (QUERY_LIMIT_EXCEEDED).
        self.operation_time = operation_time


class UpstreamError(B24GateError):
    code = "upstream_error"
    status = 502


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamInvalid(UpstreamError):
    code = "upstream_invalid"


class PortalMoved(UpstreamError):
    code = "portal_moved"

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.location = location


class PortalUnavailable(UpstreamError):
    code = "portal_unavailable"


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    status = 504


class OutcomeUnknown(UpstreamError):
    code = "upstream_outcome_unknown"
    status = 504


class BitrixError(B24GateError):
    """Bitrix24 answered ``{"error", "error_description"}``."""

    code = "bitrix_error"

    def __init__(self, status: int, error: str, description: str, body: Any = None) -> None:
        super().__init__(f"Bitrix24 answered {status} {error or '(no code)'}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.body = body


class TokenRejected(BitrixError):
    """``expired_token`` or ``invalid_token``: refresh and retry the call once."""


class CredentialsRejected(BitrixError):
    """401 ``INVALID_CREDENTIALS``: the incoming webhook (user + code) is unknown to the
    portal. No refresh can help; an administrator must register a new webhook."""


class QueryLimitExceeded(BitrixError):
    """503 ``QUERY_LIMIT_EXCEEDED``: the call was not executed."""


class OperationTimeLimit(BitrixError):
    """429 ``OPERATION_TIME_LIMIT``: the method is blocked until ``reset_at``."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        body: Any = None,
        reset_at: float | None = None,
    ) -> None:
        super().__init__(status, error, description, body)
        self.reset_at = reset_at


class OAuthError(B24GateError):
    """The OAuth server refused a token request."""

    code = "oauth_error"
    status = 502

    def __init__(self, error: str, description: str, http_status: int | None = None) -> None:
        super().__init__(f"the OAuth server answered {error}: {description}")
        self.error = error
        self.description = description
        self.http_status = http_status


class GrantRevoked(OAuthError):
    """``invalid_grant``, ``invalid_client``, ``PAYMENT_REQUIRED``, … : re-authorize."""


class OAuthUnavailable(OAuthError):
    """A network error or a 5xx from the OAuth server: worth a bounded retry."""

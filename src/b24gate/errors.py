"""The one exception tree of b24gate. Each error carries a stable machine ``code`` and an
HTTP ``status``; errors that Bitrix24 said keep its ``error`` / ``error_description``.
Retry policy keys off the class, never off message text. No message ever holds a token,
a client secret or a client key. Every code below is in docs/http-api.md (a test holds
the two to each other): raise the class, never a ``code=`` of one's own.

    B24GateError (500)                internal_error: a bug; the log has the details
    ├── ConfigError (500)             config_error: start-up: bad settings, master key
    ├── PortalMisconfigured (500)     portal_misconfigured: a webhook portal's URL is unusable
    ├── RequestError (400)            invalid_request
    │   ├── InvalidJson               invalid_json: not UTF-8 JSON, or not an object
    │   ├── InvalidMethod             invalid_method: not a Bitrix24 method name
    │   ├── InvalidBatch              invalid_batch: a batch Bitrix24 could read otherwise
    │   ├── TooDeep                   too_deep: nested deeper than PHP's 64 levels
    │   ├── UnknownEvent              unknown_event: an application event not handled here
    │   ├── InvalidSetting            invalid_setting: an administrator's value (``field``)
    │   ├── InvalidIdempotencyKey     invalid_idempotency_key: not 1..255 printable ASCII
    │   └── BodyTooLarge (413)        body_too_large
    │       └── TooManyParameters     too_many_parameters: over PHP's 1,000 variables
    ├── Unauthorized (401)            unauthorized
    ├── Forbidden (403)               forbidden: /metrics without the admin token
    │   ├── MethodForbidden           method_forbidden: the key's method patterns
    │   ├── IpForbidden               ip_forbidden: the key's address allow-list
    │   ├── EventsForbidden           events_forbidden: the key may read no events
    │   └── EventRefused              event_refused: an install event forged or not ours
    ├── UnknownPortal (404)           unknown_portal
    ├── UnknownClient (404)           unknown_client: no active client key of that name
    ├── UnknownJob (404)              unknown_job: no such job, or another client's
    ├── Conflict (409)                conflict: a name, domain or key id is taken
    │   └── StoreConflict             raised by the store itself (b24gate.store)
    ├── NeedsAuthorization (409)      needs_authorization: the grant is gone, an admin must act
    ├── IdempotencyKeyInUse (409)     idempotency_key_in_use: its first request still runs
    ├── IdempotentOutcomeUnknown (409) outcome_unknown: its first request died mid-way
    ├── IdempotencyKeyReused (422)    idempotency_key_reused: the key of another request
    ├── RateLimited (429)             rate_limited, with retry_after
    ├── LockTimeout (503)             lock_timeout: another process held a lock too long
    ├── ConnectError (400)            connect_failed: the connect flow (/oauth/*) cannot go on
    │   ├── NotOAuth                  not_oauth: a webhook portal needs no authorization
    │   ├── AccessDenied              access_denied: Bitrix24 did not grant access
    │   ├── InvalidCallback           invalid_callback: the callback lacks code or state
    │   ├── DomainMismatch            domain_mismatch: the grant came from another portal
    │   ├── MemberMismatch            member_mismatch: another Bitrix24 than the portal's
    │   ├── CodeRefused               code_refused: the OAuth server refused the code
    │   ├── InvalidTicket (403)       invalid_ticket: unknown, used or expired ticket
    │   └── InvalidState (403)        invalid_state: unknown, used or expired state
    ├── UpstreamError (502)           upstream_error
    │   ├── UpstreamUnreachable       upstream_unreachable (sent=False: never reached Bitrix24)
    │   ├── UpstreamInvalid           upstream_invalid: the answer is not Bitrix24's JSON
    │   ├── PortalMoved               portal_moved: a redirect to another host
    │   ├── PortalUnavailable         portal_unavailable: a redirect to itself (licence page)
    │   ├── UpstreamTimeout (504)     upstream_timeout: no answer, the call was a read
    │   ├── OutcomeUnknown (504)      upstream_outcome_unknown: a write may have happened
    │   └── EventUnverifiable (503)   oauth_unavailable: no answer to vouch for an event
    ├── BitrixError (Bitrix24's status) bitrix_error: Bitrix24 answered an error
    │   ├── TokenRejected             expired_token / invalid_token: refresh, retry once
    │   ├── CredentialsRejected       INVALID_CREDENTIALS: an incoming webhook is gone
    │   ├── QueryLimitExceeded (503)  not executed: back off and retry
    │   └── OperationTimeLimit (429)  the method is blocked until operating_reset_at
    └── OAuthError (502)              oauth_error: the OAuth server refused a token request
        ├── GrantRevoked              no retry can fix it: re-authorize
        └── OAuthUnavailable          network error or 5xx: retry with back-off

Which :class:`BitrixError` an answer of Bitrix24 is, is decided in one place,
:func:`b24gate.bitrix.classify`.
"""

from __future__ import annotations

from typing import Any, Literal

# The values an administrator gives for a portal or a client key (:class:`InvalidSetting`).
SettingField = Literal[
    "burst",
    "client_id",
    "client_secret",
    "event_names",
    "events",
    "ips",
    "methods",
    "name",
    "oauth_url",
    "plan",
    "portal",
    "portals",
    "rate",
    "token_method",
    "url",
    "webhook_url",
]


class B24GateError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(B24GateError):
    code = "config_error"


class PortalMisconfigured(B24GateError):
    """A stored portal cannot be called as it is (a webhook portal without a usable webhook
    URL): an administrator must set it again."""

    code = "portal_misconfigured"


class RequestError(B24GateError):
    code = "invalid_request"
    status = 400


class InvalidJson(RequestError):
    code = "invalid_json"


class InvalidMethod(RequestError):
    """Not a Bitrix24 method name (docs/http-api.md's pattern): nothing is sent."""

    code = "invalid_method"


class InvalidBatch(RequestError):
    """A ``batch`` whose commands Bitrix24 could read another way than the gateway checks
    them (:func:`b24gate.bitrix.parse_batch`)."""

    code = "invalid_batch"


class TooDeep(RequestError):
    """Parameters nested deeper than PHP's ``max_input_nesting_level`` (64)."""

    code = "too_deep"


class UnknownEvent(RequestError):
    """An application event other than ``ONAPPINSTALL`` / ``ONAPPUNINSTALL``."""

    code = "unknown_event"


class InvalidIdempotencyKey(RequestError):
    """An ``Idempotency-Key`` (or ``idempotency_key``) that is not 1 to 255 printable ASCII
    characters, or two different ones in one request: nothing is run."""

    code = "invalid_idempotency_key"


class BodyTooLarge(RequestError):
    code = "body_too_large"
    status = 413


class TooManyParameters(BodyTooLarge):
    """More parameters than PHP's ``max_input_vars`` (1,000): PHP would drop the rest."""

    code = "too_many_parameters"


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


class MethodForbidden(Forbidden):
    """The key's method patterns do not allow the method (or a command of its batch)."""

    code = "method_forbidden"


class IpForbidden(Forbidden):
    """The key has an address allow-list, and the caller is not on it."""

    code = "ip_forbidden"


class EventsForbidden(Forbidden):
    """The key's event patterns are empty: it may read no portal's events."""

    code = "events_forbidden"


class EventRefused(Forbidden):
    """An application event (an install event, or a delivery to the events handler) is
    forged or cannot be matched to a portal. The message says
    nothing that would help a forger; the log has the reason."""

    code = "event_refused"

    def __init__(self) -> None:
        super().__init__("the event was refused")


class UnknownPortal(B24GateError):
    code = "unknown_portal"
    status = 404


class UnknownClient(B24GateError):
    code = "unknown_client"
    status = 404


class UnknownJob(B24GateError):
    """No job with this id, or another client's (which the caller must not learn exists)."""

    code = "unknown_job"
    status = 404


class Conflict(B24GateError):
    """Something that must be unique is taken (a portal's name or domain, a client's name
    or key id), or a change does not fit what it changes (a webhook for an OAuth portal)."""

    code = "conflict"
    status = 409


class StoreConflict(Conflict):
    """The store's own refusal: a name, domain, key id or token that must be unique is
    taken, or a row it names is missing. The message says which, and never holds a secret."""


class NeedsAuthorization(B24GateError):
    code = "needs_authorization"
    status = 409

    def __init__(self, portal: str, reason: str, *, fix: str | None = None) -> None:
        """``fix`` says what the administrator does; by default, authorize the portal again."""
        fix = fix or f"run `b24gate portal authorize {portal}` and open the URL it prints"
        super().__init__(f"portal {portal!r} needs authorization ({reason}): {fix}")
        self.portal = portal
        self.reason = reason


class IdempotencyKeyInUse(B24GateError):
    """The request's idempotency key belongs to a request still running, which did not end
    within ``idempotency_wait``: try again later (nothing was run for this one)."""

    code = "idempotency_key_in_use"
    status = 409


class IdempotentOutcomeUnknown(B24GateError):
    """A write was on its way when its gateway stopped, and its answer was never kept: it
    may have been done, so it is never run again. The first request of an idempotency key
    (the key's answer), or a job's command (its result, docs/jobs.md)."""

    code = "outcome_unknown"
    status = 409


class IdempotencyKeyReused(B24GateError):
    """The idempotency key was used with another request (method, path, query or body):
    nothing is run, and the first answer stays the key's."""

    code = "idempotency_key_reused"
    status = 422


class RateLimited(B24GateError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float, *, operation_time: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # True when Bitrix24 blocked the method for its operating time (OPERATION_TIME_LIMIT),
        # False when the request budget is exhausted (QUERY_LIMIT_EXCEEDED).
        self.operation_time = operation_time


class LockTimeout(B24GateError):
    """Another process held a lock (a portal's token refresh) for longer than the caller
    was willing to wait."""

    code = "lock_timeout"
    status = 503


class ConnectError(B24GateError):
    """The connect flow (``portal authorize``, ``/oauth/start``, ``/oauth/callback``) cannot
    go on; the message is shown to the administrator. Each reason is a subclass."""

    code = "connect_failed"
    status = 400


class NotOAuth(ConnectError):
    """The portal calls an incoming webhook: there is nothing to authorize."""

    code = "not_oauth"


class AccessDenied(ConnectError):
    """Bitrix24 sent the browser back with an ``error``: the user did not grant access."""

    code = "access_denied"


class InvalidCallback(ConnectError):
    code = "invalid_callback"


class DomainMismatch(ConnectError):
    """The grant came from another portal than the one being connected."""

    code = "domain_mismatch"


class MemberMismatch(ConnectError):
    """The grant is for another Bitrix24 (``member_id``) than the portal was connected to."""

    code = "member_mismatch"


class CodeRefused(ConnectError):
    """The OAuth server refused to exchange the authorization code."""

    code = "code_refused"


class InvalidTicket(ConnectError):
    """No valid ticket (unknown, used or expired), and no admin token instead."""

    code = "invalid_ticket"
    status = 403


class InvalidState(ConnectError):
    """The callback's OAuth ``state`` is unknown, used or expired."""

    code = "invalid_state"
    status = 403


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


class EventUnverifiable(UpstreamError):
    """The OAuth server or the portal that could vouch for an install event's token did not
    answer. Nothing was changed; Bitrix24 does not send the event again."""

    code = "oauth_unavailable"
    status = 503

    def __init__(self) -> None:
        super().__init__("the event cannot be verified now")


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

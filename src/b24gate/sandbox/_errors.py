"""Bitrix24's error answers: ``{"error": CODE, "error_description": TEXT}`` with its statuses.

Statuses follow the current system-error table of Bitrix24's docs (docs/protocol.md §6).
"""

from __future__ import annotations


class RestError(Exception):
    """An error answer of the emulated portal or OAuth server."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def no_auth_found() -> RestError:
    return RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")


def expired_token() -> RestError:
    return RestError(401, "expired_token", "The access token provided has expired.")


def invalid_token() -> RestError:
    # Not in the docs; the text real portals send, as observed by third-party clients.
    return RestError(401, "invalid_token", "Unable to get application by token.")


def invalid_credentials() -> RestError:
    return RestError(401, "INVALID_CREDENTIALS", "Invalid request credentials")


def insufficient_scope(webhook: bool) -> RestError:
    who = "webhook token" if webhook else "access token"
    return RestError(
        401,
        "insufficient_scope",
        f"The request requires higher privileges than provided by the {who}",
    )


def method_not_found() -> RestError:
    return RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


def https_required() -> RestError:
    return RestError(401, "INVALID_REQUEST", "Https required.")


def query_limit_exceeded() -> RestError:
    return RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")


def operation_time_limit() -> RestError:
    return RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")


def internal_error() -> RestError:
    return RestError(500, "INTERNAL_SERVER_ERROR", "Internal server error")


def not_found() -> RestError:
    # Method-level errors carry an empty code (docs/protocol.md §6).
    return RestError(400, "", "Not found")


def invalid_argument(description: str) -> RestError:
    return RestError(400, "INVALID_ARG_VALUE", description)


def application_context_required() -> RestError:
    # app.info called with a webhook (api-reference/common/system/app-info.md).
    return RestError(400, "ACCESS_DENIED", "Access denied! Application context required")


def invalid_id() -> RestError:
    return RestError(400, "", "ID is not defined or invalid.")


class ArgumentError(RestError):
    """Bitrix24's ``ERROR_ARGUMENT``: ``CRestServer::outputError`` adds the argument's name
    to the answer (``RestException::initFromException`` on a ``Main\\ArgumentException``)."""

    def __init__(self, description: str, argument: str) -> None:
        super().__init__(400, "ERROR_ARGUMENT", description)
        self.argument = argument

    def body(self) -> dict[str, str]:
        return {**super().body(), "argument": self.argument}


def argument_null(argument: str) -> ArgumentError:
    # Main\ArgumentNullException's own text.
    return ArgumentError(f"Argument '{argument}' is null or empty", argument)


def wrong_auth_type() -> RestError:
    # Bitrix\Rest\AuthTypeException: the event.* methods take an application's token only.
    return RestError(403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")


def access_denied(detail: str = "") -> RestError:
    # Bitrix\Rest\AccessException: "Access denied!" and the reason after a space.
    return RestError(403, "ACCESS_DENIED", "Access denied!" + (f" {detail}" if detail else ""))

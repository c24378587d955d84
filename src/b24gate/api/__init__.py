"""The HTTP surface: routes, request parsing and the error → JSON mapping."""

from ._app import CallRequest, create_app

__all__ = ["CallRequest", "create_app"]

"""The ``b24gate`` command: one module per group of subcommands, registered on import."""

from . import _client, _doctor, _events, _key, _portal, _serve  # noqa: F401  (each registers its commands)
from ._base import app, main

__all__ = ["app", "main"]

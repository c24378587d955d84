"""b24gate: an OAuth 2.0 gateway between 1C:Enterprise (or any HTTP client) and Bitrix24."""

__all__ = ["__version__"]

__version__ = "0.1.0"

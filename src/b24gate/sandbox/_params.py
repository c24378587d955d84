"""PHP-style parameters, from the shared leaf module :mod:`b24gate._php` (no gateway logic)."""

from .._php import Params, build_php_query, flatten_php, parse_php_pairs, parse_php_query

__all__ = ["Params", "build_php_query", "flatten_php", "parse_php_pairs", "parse_php_query"]

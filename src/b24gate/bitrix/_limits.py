"""Bitrix24's fixed figures that a client works within (docs/protocol.md §5).

The request budget of each plan is in :mod:`._plans`; what the gateway does near these
limits (waiting its turn, holding a blocked method) is core's business.
"""

from __future__ import annotations

from typing import Final

# Commands one `batch` may carry; the 51st and later get ERROR_BATCH_LENGTH_EXCEEDED (§4.2).
BATCH_LIMIT: Final = 50
# Rows of one list page: a page with fewer is the last one (§3.4).
PAGE_SIZE: Final = 50
# Seconds of operating time a method may be charged within 10 minutes before Bitrix24
# blocks it with OPERATION_TIME_LIMIT (§5.2; the docs' example size).
OPERATING_LIMIT: Final = 480.0
# Seconds a refresh token lives unused: 180 days; each refresh issues a new one (§1.4).
REFRESH_TOKEN_LIFETIME: Final = 180 * 24 * 3600

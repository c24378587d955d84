"""The gateway's core: portal and client administration, client access, tokens, the
connect flow, the app's install events, the path of a call (admission, the dispatcher,
Bitrix24's operating-time budget, the scheduler and limiter, forwarding), and bulk calls
and list exports on top of it."""

# The address rules are Bitrix24's (b24gate.bitrix); administration offers them here too.
from ..bitrix import WebhookAddress, oauth_address, portal_address, webhook_address

# The errors of the connect flow and of install events, from the one tree, offered here too.
from ..errors import ConnectError, EventRefused, EventUnverifiable
from ._access import (
    NewKey,
    admit,
    authenticate,
    bearer,
    hash_key,
    key_id_of,
    key_matches,
    method_allowed,
    new_key,
    peer_address,
)
from ._admin import (
    Budget,
    IssuedKey,
    NewClient,
    PortalStatus,
    add_client,
    add_portal,
    client_name,
    ip_ranges,
    list_clients,
    list_portals,
    method_patterns,
    new_client,
    oauth_portal,
    operator_call,
    operator_client,
    portal_change,
    portal_name,
    portal_status,
    request_budget,
    revoke_client,
    set_portal,
    token_request_method,
    webhook_portal,
)
from ._bulk import MAX_COMMANDS, BulkResult, Command, run_commands
from ._connect import Connected, Connector
from ._dispatcher import CallResult, Dispatcher
from ._export import (
    MAX_PAGE_SIZE,
    ListQuery,
    Pager,
    decode_cursor,
    encode_cursor,
    list_query,
    read_page,
)
from ._forward import Forwarder, RetryPolicy, rest_base
from ._gateway import Gateway
from ._install import Installer
from ._jobs import MAX_JOB_COMMANDS, JobRunner
from ._limiter import SHARED_RETRY, FallbackLimiter, Limiter, LocalLimiter, RedisLimiter
from ._operating import OPERATING_WAIT, OperatingBudget
from ._scheduler import LINGER, Plan, Scheduler
from ._tokens import TokenManager, TokenPolicy, acceptable_endpoint, oauth_server
from ._webhook import fix_for, webhook_fix

__all__ = [
    "LINGER",
    "MAX_COMMANDS",
    "MAX_JOB_COMMANDS",
    "MAX_PAGE_SIZE",
    "OPERATING_WAIT",
    "SHARED_RETRY",
    "Budget",
    "BulkResult",
    "CallResult",
    "Command",
    "ConnectError",
    "Connected",
    "Connector",
    "Dispatcher",
    "EventRefused",
    "EventUnverifiable",
    "FallbackLimiter",
    "Forwarder",
    "Gateway",
    "Installer",
    "IssuedKey",
    "JobRunner",
    "Limiter",
    "ListQuery",
    "LocalLimiter",
    "NewClient",
    "NewKey",
    "OperatingBudget",
    "Pager",
    "Plan",
    "PortalStatus",
    "RedisLimiter",
    "RetryPolicy",
    "Scheduler",
    "TokenManager",
    "TokenPolicy",
    "WebhookAddress",
    "acceptable_endpoint",
    "add_client",
    "add_portal",
    "admit",
    "authenticate",
    "bearer",
    "client_name",
    "decode_cursor",
    "encode_cursor",
    "fix_for",
    "hash_key",
    "ip_ranges",
    "key_id_of",
    "key_matches",
    "list_clients",
    "list_portals",
    "list_query",
    "method_allowed",
    "method_patterns",
    "new_client",
    "new_key",
    "oauth_address",
    "oauth_portal",
    "oauth_server",
    "operator_call",
    "operator_client",
    "peer_address",
    "portal_address",
    "portal_change",
    "portal_name",
    "portal_status",
    "read_page",
    "request_budget",
    "rest_base",
    "revoke_client",
    "run_commands",
    "set_portal",
    "token_request_method",
    "webhook_address",
    "webhook_fix",
    "webhook_portal",
]

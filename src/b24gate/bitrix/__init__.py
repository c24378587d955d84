"""The Bitrix24 protocol: the OAuth token endpoint and ``app.info``, the REST client, error
classification, method names, ``batch`` commands as Bitrix24 reads them and as the gateway
writes them, ``batch`` answers split by command, Bitrix24's fixed limits (50 commands a
batch, 50 rows a page, operating time), portal addresses, incoming webhook URLs and the
plans' request budgets. It knows nothing of b24gate's clients or storage.

    tokens = await OAuthClient(session).refresh(oauth_url, client_id, secret, refresh_token)
    answer = await RestClient(session).call(
        tokens.client_endpoint, "crm.deal.list", {}, auth=tokens.access_token, write=False
    )
"""

from ._batch import BatchAnswer, as_map, command_error, with_command_errors
from ._commands import (
    REFERENCE,
    Batch,
    BatchCommand,
    batchable,
    encode_batch,
    encode_command,
    has_reference,
    is_read,
    names_connector,
    parse_batch,
    parse_command,
    with_auth_connector,
)
from ._errors import classify
from ._limits import BATCH_LIMIT, OPERATING_LIMIT, PAGE_SIZE, REFRESH_TOKEN_LIFETIME
from ._names import METHOD_NAME, method_reads, valid_method
from ._oauth import (
    ALLOWED_OAUTH_HOSTS,
    DEFAULT_OAUTH_TIMEOUT,
    OAuthClient,
    app_info_url,
    server_endpoint_allowed,
    token_url,
)
from ._origin import (
    DEFAULT_OAUTH_URL,
    Origin,
    WebhookAddress,
    is_loopback,
    oauth_address,
    portal_address,
    portal_origin,
    webhook_address,
)
from ._plans import DEFAULT_PLAN, MAX_BURST, MAX_RATE, PLANS, PlanBudget, check_burst, check_rate
from ._rest import DEFAULT_REST_TIMEOUT, RestClient
from ._tokens import TokenSet
from ._webhook import WebhookUrl, parse_webhook_url

__all__ = [
    "ALLOWED_OAUTH_HOSTS",
    "BATCH_LIMIT",
    "DEFAULT_OAUTH_TIMEOUT",
    "DEFAULT_OAUTH_URL",
    "DEFAULT_PLAN",
    "DEFAULT_REST_TIMEOUT",
    "MAX_BURST",
    "MAX_RATE",
    "METHOD_NAME",
    "OPERATING_LIMIT",
    "PAGE_SIZE",
    "PLANS",
    "REFERENCE",
    "REFRESH_TOKEN_LIFETIME",
    "Batch",
    "BatchAnswer",
    "BatchCommand",
    "OAuthClient",
    "Origin",
    "PlanBudget",
    "RestClient",
    "TokenSet",
    "WebhookAddress",
    "WebhookUrl",
    "app_info_url",
    "as_map",
    "batchable",
    "check_burst",
    "check_rate",
    "classify",
    "command_error",
    "encode_batch",
    "encode_command",
    "has_reference",
    "is_loopback",
    "is_read",
    "method_reads",
    "names_connector",
    "oauth_address",
    "parse_batch",
    "parse_command",
    "parse_webhook_url",
    "portal_address",
    "portal_origin",
    "server_endpoint_allowed",
    "token_url",
    "valid_method",
    "webhook_address",
    "with_auth_connector",
    "with_command_errors",
]

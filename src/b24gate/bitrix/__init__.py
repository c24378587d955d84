"""The Bitrix24 protocol: the OAuth token endpoint, the REST client, error classification and
method names. It knows nothing of b24gate's clients or storage.

    tokens = await OAuthClient(session).refresh(oauth_url, client_id, secret, refresh_token)
    answer = await RestClient(session).call(
        tokens.client_endpoint, "crm.deal.list", {}, auth=tokens.access_token, write=False
    )
"""

from ._names import METHOD_NAME, is_read, valid_method
from ._oauth import (
    ALLOWED_OAUTH_HOSTS,
    DEFAULT_OAUTH_TIMEOUT,
    OAuthClient,
    server_endpoint_allowed,
    token_url,
)
from ._rest import DEFAULT_REST_TIMEOUT, RestClient
from ._tokens import TokenSet

__all__ = [
    "ALLOWED_OAUTH_HOSTS",
    "DEFAULT_OAUTH_TIMEOUT",
    "DEFAULT_REST_TIMEOUT",
    "METHOD_NAME",
    "OAuthClient",
    "RestClient",
    "TokenSet",
    "is_read",
    "server_endpoint_allowed",
    "token_url",
    "valid_method",
]

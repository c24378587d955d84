"""The HTTP surface: routes, request parsing and the error → JSON mapping.

Every route runs in a :class:`Frame`; :func:`error_response` renders an error in a surface's
shape (:func:`bitrix_shape` for ``/rest/``'s); :class:`PeerBudget` is how many install
events one address may send (:data:`EVENT_BURST` at once).
"""

from ._app import CallRequest, create_app
from ._errors import error_response
from ._frame import Frame
from ._install import EVENT_BURST, PeerBudget
from ._rest import bitrix_shape

__all__ = [
    "EVENT_BURST",
    "CallRequest",
    "Frame",
    "PeerBudget",
    "bitrix_shape",
    "create_app",
    "error_response",
]

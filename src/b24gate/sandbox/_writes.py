"""Writes counted per external id, so that a test or a benchmark can prove nothing was
created twice (``GET /_sandbox/writes``).

Bitrix24 does not refuse a second record with the same ``ORIGIN_ID``: the field is a plain
string "used only for linking to an external source" (crm-deal-add.md), so a write sent
twice is two records. The sandbox keeps that behaviour and counts instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

# The fields an external system names its records by: CRM's ORIGIN_ID, the XML_ID 1C
# exchanges use (CRM entities have no such field and ignore it, but the write is still
# counted), and catalog.product's xmlId.
EXTERNAL_ID_FIELDS = ("ORIGIN_ID", "XML_ID", "xmlId")


def _external_id(value: Any) -> str | None:
    """The value as the key shows it: a non-empty string or an integer; anything else
    (a list, an object, a flag) names no record."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text or None


class WriteCounter:
    """Successful ``.add`` calls per ``"<entity>:<FIELD>:<value>"``."""

    def __init__(self) -> None:
        self.by_external_id: Counter[str] = Counter()
        self.total = 0

    def record(self, entity: str, fields: Mapping[str, Any]) -> None:
        """Count one record created by ``<entity>.add`` (alone or in a batch) under each
        external id its fields carry; a record carrying none is not counted."""
        keys = [
            f"{entity}:{name}:{value}"
            for name in EXTERNAL_ID_FIELDS
            if (value := _external_id(fields.get(name))) is not None
        ]
        if keys:
            self.by_external_id.update(keys)
            self.total += 1

    def snapshot(self) -> dict[str, Any]:
        counts = dict(sorted(self.by_external_id.items()))
        return {
            "by_external_id": counts,
            "doubled": [key for key, count in counts.items() if count > 1],
            "total": self.total,
        }

    def reset(self) -> None:
        self.by_external_id.clear()
        self.total = 0

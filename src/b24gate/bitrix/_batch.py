"""Reading Bitrix24's ``batch`` answers: PHP's empty maps, per-command errors, and each
command's own answer out of the whole (docs/protocol.md §4.1, §4.3).

    answer = BatchAnswer.of(body)
    for key in keys:
        outcome = answer.outcome(key)   # the command's answer, or its error
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BitrixError
from ._errors import classify


def as_map(value: Any) -> Mapping[str, Any]:
    """A map of a batch answer. PHP writes one keyed 0..n-1 (a ``cmd`` sent as a list) as a
    list, and an empty one as ``[]``: the list's items are keyed "0".."n-1" here."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    return {}


def with_command_errors(body: Mapping[str, Any], change: Callable[[Any], Any]) -> dict[str, Any]:
    """A ``batch`` answer with ``change`` applied to each per-command error
    (``result.result_error``), a map or a list (a ``cmd`` sent as a list) as it came: every
    place an error is rewritten (the token scrubbed, the two fields kept) walks both shapes
    the same way. ``body`` itself is left as it is."""
    outer = body.get("result")
    errors = outer.get("result_error") if isinstance(outer, Mapping) else None
    changed: Any
    if isinstance(errors, Mapping):
        changed = {key: change(error) for key, error in errors.items()}
    elif isinstance(errors, list):
        changed = [change(error) for error in errors]
    else:
        return dict(body)
    assert isinstance(outer, Mapping)
    return {**body, "result": {**outer, "result_error": changed}}


def command_error(error: Any) -> BitrixError:
    """The error of one command of a batch (an entry of ``result_error``), typed and given
    the status as the same error of a call on its own (:func:`classify`): for the limits,
    the command was not executed (``QUERY_LIMIT_EXCEEDED``), or its method is blocked
    (``OPERATION_TIME_LIMIT``, which inside a batch does not say until when)."""
    body = as_map(error)
    code = str(body.get("error", ""))
    description = str(body.get("error_description", ""))
    return classify(None, code, description, dict(body))


@dataclass(frozen=True)
class BatchAnswer:
    """A ``batch``'s answer split by command key: each map of the answer, read with
    :func:`as_map`."""

    results: Mapping[str, Any]
    errors: Mapping[str, Any]
    totals: Mapping[str, Any]
    nexts: Mapping[str, Any]
    times: Mapping[str, Any]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> BatchAnswer:
        outer = as_map(body.get("result"))
        return cls(
            results=as_map(outer.get("result")),
            errors=as_map(outer.get("result_error")),
            totals=as_map(outer.get("result_total")),
            nexts=as_map(outer.get("result_next")),
            times=as_map(outer.get("result_time")),
        )

    def error(self, key: str) -> BitrixError | None:
        """The command's error, typed as :func:`command_error` types it; None if it had none."""
        return command_error(self.errors[key]) if key in self.errors else None

    def answer(self, key: str) -> dict[str, Any] | None:
        """The command's answer in the shape of the same call's answer alone (``result``,
        and ``total``, ``next``, ``time`` when given: its own ``time`` block carries the
        operating time charged to its method); None when the batch holds no result for it."""
        if key not in self.results:
            return None
        answer: dict[str, Any] = {"result": self.results[key]}
        for name, values in (("total", self.totals), ("next", self.nexts), ("time", self.times)):
            if key in values:
                answer[name] = values[key]
        return answer

    def outcome(self, key: str) -> dict[str, Any] | BitrixError:
        """What the command's caller gets: its error, else its answer, else (the batch
        said nothing of it) an error that says so."""
        error = self.error(key)
        if error is not None:
            return error
        answer = self.answer(key)
        if answer is not None:
            return answer
        return BitrixError(500, "ERROR_UNEXPECTED_ANSWER", "the batch did not answer this call")

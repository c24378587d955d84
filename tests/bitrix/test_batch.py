"""A ``batch``'s answer split by command: each caller gets what Bitrix24 answered for its
command, in the shape of the same call's answer alone."""

from __future__ import annotations

from typing import Any

from b24gate.bitrix import BatchAnswer
from b24gate.errors import BitrixError, OperationTimeLimit, QueryLimitExceeded


def _answer(**maps: Any) -> dict[str, Any]:
    """A batch answer as Bitrix24 writes it: empty maps are PHP's `[]`."""
    names = ("result", "result_error", "result_total", "result_next", "result_time")
    return {"result": {name: maps.get(name, []) for name in names}}


def test_each_command_gets_its_own_result_total_next_and_time() -> None:
    answer = BatchAnswer.of(
        _answer(
            result={"c0": [{"ID": "1"}], "c1": {"ID": "2"}},
            result_total={"c0": 51},
            result_next={"c0": 50},
            result_time={"c0": {"operating": 1.5}, "c1": {"operating": 0}},
        )
    )
    assert answer.outcome("c0") == {
        "result": [{"ID": "1"}],
        "total": 51,
        "next": 50,
        "time": {"operating": 1.5},
    }
    assert answer.outcome("c1") == {"result": {"ID": "2"}, "time": {"operating": 0}}


def test_a_commands_error_is_typed_as_the_same_error_of_a_call_alone() -> None:
    answer = BatchAnswer.of(
        _answer(
            result={"c2": True},
            result_error={
                "c0": {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many"},
                "c1": {"error": "OPERATION_TIME_LIMIT", "error_description": "blocked"},
                "c3": {"error": "", "error_description": "Not found"},
            },
        )
    )
    assert isinstance(answer.outcome("c0"), QueryLimitExceeded)
    assert isinstance(answer.outcome("c1"), OperationTimeLimit)
    assert answer.outcome("c2") == {"result": True}
    error = answer.outcome("c3")
    assert isinstance(error, BitrixError)
    assert (error.status, error.description) == (400, "Not found")


def test_a_cmd_sent_as_a_list_is_answered_as_lists_keyed_by_position() -> None:
    answer = BatchAnswer.of(_answer(result=["first", "second"], result_total=[0, 2]))
    assert answer.outcome("1") == {"result": "second", "total": 2}


def test_a_command_the_batch_does_not_answer_gets_an_error_not_another_ones_result() -> None:
    # With halt set, or a broken answer: the command is absent from every map.
    for body in (_answer(result={"c0": 1}), {"result": None}, {}):
        error = BatchAnswer.of(body).outcome("c1")
        assert isinstance(error, BitrixError)
        assert (error.status, error.error) == (500, "ERROR_UNEXPECTED_ANSWER")

"""PHP bracket parameters: what a Bitrix24 method sees of a query string or form."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b24gate.sandbox import build_php_query, parse_php_pairs, parse_php_query
from b24gate.testing import MAX_INPUT_VARS, NestingTooDeep, TooManyVariables, unquote


def test_bracket_key_becomes_a_map() -> None:
    assert parse_php_query("fields[TITLE]=x&fields[STAGE_ID]=NEW") == {
        "fields": {"TITLE": "x", "STAGE_ID": "NEW"}
    }


def test_filter_operator_stays_part_of_the_key() -> None:
    # As clients encode them: `=` as %3D and `%` as %25 inside the key.
    assert parse_php_query("filter[>ID]=5&filter[!%3DSTAGE_ID]=WON&filter[%25TITLE]=a") == {
        "filter": {">ID": "5", "!=STAGE_ID": "WON", "%TITLE": "a"}
    }


def test_empty_brackets_append_to_a_list() -> None:
    assert parse_php_query("select[]=ID&select[]=TITLE") == {"select": ["ID", "TITLE"]}


def test_nested_brackets() -> None:
    query = (
        "fields[PHONE][0][VALUE]=1&fields[PHONE][0][VALUE_TYPE]=WORK"
        "&fields[PHONE][1][VALUE]=2&fields[NAME]=Ivan"
    )
    assert parse_php_query(query) == {
        "fields": {
            "PHONE": [{"VALUE": "1", "VALUE_TYPE": "WORK"}, {"VALUE": "2"}],
            "NAME": "Ivan",
        }
    }


def test_keys_zero_to_n_minus_one_make_a_list() -> None:
    assert parse_php_query("id[0]=7&id[1]=8&id[2]=9") == {"id": ["7", "8", "9"]}


def test_other_integer_keys_make_a_map() -> None:
    # PHP keeps these as arrays with holes or out-of-order keys: json_encode writes objects.
    assert parse_php_query("id[1]=a&id[2]=b") == {"id": {"1": "a", "2": "b"}}
    assert parse_php_query("id[0]=a&id[2]=b") == {"id": {"0": "a", "2": "b"}}
    assert parse_php_query("id[1]=a&id[0]=b") == {"id": {"1": "a", "0": "b"}}
    # An empty index continues after the largest integer key, as PHP's $a[] does.
    assert parse_php_query("id[]=a&id[5]=b&id[]=c") == {"id": {"0": "a", "5": "b", "6": "c"}}


def test_top_level_integer_keys_stay_a_map() -> None:
    # Regression: a body of only `0=a` used to turn the whole parameter set into a list.
    assert parse_php_query("0=a") == {"0": "a"}
    assert parse_php_pairs([("0", "a"), ("1", "b")]) == {"0": "a", "1": "b"}


def test_url_encoded_brackets() -> None:
    assert parse_php_query("fields%5BTITLE%5D=x&select%5B%5D=ID&select%5B%5D=TITLE") == {
        "fields": {"TITLE": "x"},
        "select": ["ID", "TITLE"],
    }


def test_cyrillic_values() -> None:
    query = (
        "fields%5BTITLE%5D=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0+%E2%84%961"
        "&name=%D0%90%D0%BD%D0%BD%D0%B0"
    )
    assert parse_php_query(query) == {"fields": {"TITLE": "Сделка №1"}, "name": "Анна"}


def test_plain_keys_and_blank_values() -> None:
    assert parse_php_query("id=5&auth=abc&comment=") == {"id": "5", "auth": "abc", "comment": ""}
    assert parse_php_query("") == {}


def test_a_later_plain_value_replaces_an_array_and_vice_versa() -> None:
    assert parse_php_query("a[b]=1&a=2") == {"a": "2"}
    assert parse_php_query("a=2&a[b]=1") == {"a": {"b": "1"}}


def test_malformed_bracket_key_is_not_nested() -> None:
    # An unclosed bracket is no array: the method never sees a `fields` map.
    parsed = parse_php_query("fields[TITLE=x&id=5")
    assert "fields" not in parsed
    assert parsed["id"] == "5"
    assert list(parsed.values()) == ["x", "5"]
    # PHP ignores whatever follows the last closing bracket.
    assert parse_php_query("fields[TITLE]junk=x") == {"fields": {"TITLE": "x"}}


def test_build_php_query_writes_brackets() -> None:
    query = build_php_query(
        {
            "fields": {"TITLE": "Сделка №1", "PHONE": [{"VALUE": "1"}]},
            "select": ["ID", "TITLE"],
            "skip": None,
            "flag": True,
        }
    )
    assert query == (
        "fields[TITLE]=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0%20%E2%84%961"
        "&fields[PHONE][0][VALUE]=1&select[0]=ID&select[1]=TITLE&flag=1"
    )


# Names PHP keeps as they are: no brackets, and no spaces or dots, which PHP turns into `_`
# in top-level names. Text values may be anything UTF-8 can carry.
_NAME_CHARS = st.characters(codec="utf-8", exclude_categories=["Cc", "Z"], exclude_characters="[].")
_names = st.text(_NAME_CHARS, min_size=1, max_size=12)
_texts = st.text(st.characters(codec="utf-8"), max_size=20)


def _not_a_list(mapping: dict[str, str]) -> bool:
    # A map keyed 0..n-1 is a list in PHP; it would rightly come back as one.
    return list(mapping) != [str(i) for i in range(len(mapping))]


# Empty arrays vanish in http_build_query, so lists and maps have at least one item.
_values = st.one_of(
    _texts,
    st.lists(_texts, min_size=1, max_size=5),
    st.dictionaries(_names, _texts, min_size=1, max_size=5).filter(_not_a_list),
)


@given(st.dictionaries(_names, _values, max_size=6))
def test_build_then_parse_round_trips(params: dict[str, Any]) -> None:
    assert parse_php_query(build_php_query(params)) == params


@given(st.dictionaries(_names, st.one_of(st.none(), _texts), max_size=6))
def test_nulls_are_dropped_like_php(params: dict[str, str | None]) -> None:
    expected = {k: v for k, v in params.items() if v is not None}
    assert parse_php_query(build_php_query(params)) == expected


# PHP's own rules, as `php_register_variable_ex` applies them (PHP 8.3).


def test_appends_continue_after_the_largest_integer_key_like_php() -> None:
    assert parse_php_query("a[]=1&a[]=2&a[5]=x&a[]=y") == {
        "a": {"0": "1", "1": "2", "5": "x", "6": "y"}
    }
    # PHP 8.3: after a negative first key, `[]` takes the next one up.
    assert parse_php_query("a[-3]=x&a[]=y") == {"a": {"-3": "x", "-2": "y"}}
    # Only a canonical decimal is an integer key: "05" and "-0" are strings.
    assert parse_php_query("a[05]=x&a[-0]=y&a[]=z") == {"a": {"05": "x", "-0": "y", "0": "z"}}
    assert parse_php_query("a[][]=1&a[][]=2&a[ ]=3") == {"a": [["1"], ["2"], "3"]}


def test_a_unicode_digit_is_a_plain_key_not_a_crash() -> None:
    # "²".isdigit() is True, but int("²") raises: the old parser answered 500.
    assert parse_php_query("a[²]=x&a[]=y") == {"a": {"²": "x", "0": "y"}}


def test_names_are_mangled_like_php() -> None:
    assert parse_php_query("a.b=1& c d=2") == {"a_b": "1", "c_d": "2"}
    # An unclosed bracket at the top makes a plain name; a deeper one is ignored.
    assert parse_php_query("a[b.c=1&x[y][z=2") == {"a_b_c": "1", "x": {"y": "2"}}
    assert parse_php_query("a[b[c]=1") == {"a": {"b[c": "1"}}
    assert parse_php_query("=1&[a]=2") == {}  # no name: PHP drops it


def test_the_sixty_fifth_bracket_drops_the_variable_like_php() -> None:
    ok = "a" + "[k]" * 64
    parsed: Any = parse_php_query(f"{ok}=1")
    for _ in range(1 + 64):  # `a`, then 64 times `k`
        parsed = parsed.get("a", parsed.get("k"))
    assert parsed == "1"
    # One level more: PHP drops the whole variable, what it held before included.
    too_deep = "a" + "[k]" * 65
    assert parse_php_query(f"a[x]=1&{too_deep}=2&b=3") == {"b": "3"}
    with pytest.raises(NestingTooDeep):
        parse_php_query(f"{too_deep}=2", strict=True)


def test_the_thousand_and_first_pair_is_over_phps_cap() -> None:
    pairs = [(f"p{i}", "x") for i in range(MAX_INPUT_VARS + 5)]
    kept = parse_php_pairs(pairs)
    assert len(kept) == MAX_INPUT_VARS  # PHP keeps the first 1,000
    assert parse_php_pairs(pairs[:MAX_INPUT_VARS], strict=True) == kept
    with pytest.raises(TooManyVariables):
        parse_php_pairs(pairs, strict=True)


def _cpu_seconds(pairs: list[tuple[str, str]]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        parse_php_pairs(pairs, max_vars=len(pairs))
        best = min(best, time.process_time() - started)
    return best


def test_appending_is_linear_in_the_number_of_pairs() -> None:
    """The old parser looked at every key of an array for each `[]` (64 KB of `a[]&`:
    15 s). Ten times the pairs must cost about ten times the work, not a hundred: CPU
    time of this process (other processes' load does not count), best of three."""
    # Sizes a quadratic parser still gets through in seconds, so a regression fails
    # rather than hangs.
    small, large = [("a[]", "")] * 2_000, [("a[]", "")] * 20_000
    ratio = _cpu_seconds(large) / max(_cpu_seconds(small), 1e-4)
    assert ratio < 30, ratio  # linear: ~10; quadratic: ~100
    assert _cpu_seconds(large) < 1.0


_PIECES = ["%", "4", "1", "A", "+", "\\", "x", "Д", "%D0%90", "%zz", "%5C", "%FF"]


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_unquote_is_phps_urldecode(text: str) -> None:
    assert unquote(text) == unquote_plus(text)

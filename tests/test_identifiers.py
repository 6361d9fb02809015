"""Identifier validators: the scalar and vectorised forms agree, and each follows its rule."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from remediation.identifiers import (
    canonical_eui64,
    eui64_keys,
    eui64_text,
    is_valid_mpan,
    is_valid_mprn,
    mpan_check_digit,
    mpan_valid_array,
    mprn_valid_array,
    mpxn_keys,
    mpxn_text,
)

HEX = "0123456789abcdefABCDEF"
eui_like = st.one_of(
    st.text(alphabet=HEX, min_size=16, max_size=16),
    st.lists(st.text(alphabet=HEX, min_size=2, max_size=2), min_size=8, max_size=8).map("-".join),
    st.text(alphabet=HEX + "-: gGxZ", max_size=24),
    st.text(max_size=20),
)
digits = st.text(alphabet="0123456789", min_size=0, max_size=16)


@given(st.lists(eui_like, max_size=30))
def test_eui64_vectorised_matches_scalar(values):
    keys, ok = eui64_keys(pa.array(values, pa.string()))
    texts = eui64_text(keys).to_pylist()
    got = [text if valid else None for text, valid in zip(texts, ok)]
    assert got == [canonical_eui64(v) for v in values]


def _spelled(width: int):
    """Values all `width` bytes long, as an extract spells its ids (16 digits, or eight hyphenated pairs), some with a
    byte changed: the decoding in place must agree with the general rule on every one of them."""
    pair = st.text(alphabet=HEX, min_size=2, max_size=2)
    good = (
        st.text(alphabet=HEX, min_size=16, max_size=16)
        if width == 16
        else st.lists(pair, min_size=8, max_size=8).map("-".join)
    )
    spoiled = st.tuples(good, st.integers(0, width - 1), st.sampled_from(" -gG:x0aF\t")).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
    )
    return st.lists(st.one_of(good, good, spoiled), min_size=1, max_size=30)


@given(st.one_of(_spelled(16), _spelled(23)))
def test_eui64_uniformly_spelled_batches_match_scalar(values):
    keys, ok = eui64_keys(pa.array(values, pa.string()))
    texts = eui64_text(keys).to_pylist()
    assert [text if valid else None for text, valid in zip(texts, ok)] == [canonical_eui64(v) for v in values]
    assert all(key == 0 for key, valid in zip(keys.tolist(), ok) if not valid)


@given(st.binary(min_size=8, max_size=8), st.booleans(), st.booleans())
def test_eui64_any_spelling_gives_one_canonical_form(raw, hyphens, lower):
    text = raw.hex()
    if hyphens:
        text = "-".join(text[i : i + 2] for i in range(0, 16, 2))
    text = text.lower() if lower else text.upper()
    assert canonical_eui64(text) == "-".join(f"{b:02X}" for b in raw)


@given(st.text(alphabet=HEX, min_size=0, max_size=20).filter(lambda t: len(t) != 16))
def test_eui64_wrong_length_rejected(text):
    assert canonical_eui64(text) is None


@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.integers(0, 9))
def test_mpan_check_digit_rule(first12, last):
    expected = sum(int(d) * w for d, w in zip(first12, [3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43])) % 11 % 10
    assert mpan_check_digit(first12) == expected
    assert is_valid_mpan(first12 + str(last)) == (last == expected)


@given(st.lists(st.one_of(digits, st.text(max_size=14), st.none()), max_size=30))
def test_mpan_and_mprn_vectorised_match_scalar(values):
    arr = pa.array(values, pa.string())
    assert mpan_valid_array(arr).tolist() == [is_valid_mpan(v) for v in values]
    assert mprn_valid_array(arr).tolist() == [is_valid_mprn(v) for v in values]


@given(digits)
def test_mprn_is_six_to_ten_digits_without_a_check_digit_rule(text):
    assert is_valid_mprn(text) == (6 <= len(text) <= 10)


@given(st.lists(st.one_of(st.text(alphabet="0123456789", max_size=17), st.text(max_size=6), st.none()), max_size=40))
def test_mpxn_text_gives_back_every_digit_string_it_keyed(values):
    """MPxN keys keep leading zeros apart and their text comes back exactly; anything not 1-15 digits is null."""
    texts = mpxn_text(mpxn_keys(pa.array(values, pa.string()))).to_pylist()
    ok = [v is not None and v.isascii() and v.isdigit() and 1 <= len(v) <= 15 for v in values]
    assert texts == [v if good else None for v, good in zip(values, ok)]

"""Long descriptions split into one caption per sentence, without cutting abbreviations, numbers or names."""

from __future__ import annotations

import pytest

from tcjepa.data.sentences import split_captions, split_sentences


def test_plain_sentences_and_other_terminators() -> None:
    assert split_sentences("A dog runs. It is brown! Is it fast? Yes.") == [
        "A dog runs.",
        "It is brown!",
        "Is it fast?",
        "Yes.",
    ]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Dr. Smith walks a dog. The dog is brown.", ["Dr. Smith walks a dog.", "The dog is brown."]),
        ("Mr. and Mrs. Jones sit on a bench.", ["Mr. and Mrs. Jones sit on a bench."]),
        ("Fruit, e.g. Apples and pears, lie on a table.", ["Fruit, e.g. Apples and pears, lie on a table."]),
        (
            "One kind, i.e. The red one, is ripe. Others are not.",
            ["One kind, i.e. The red one, is ripe.", "Others are not."],
        ),
        ("Cups, plates, etc. and a jug stand here.", ["Cups, plates, etc. and a jug stand here."]),
        ("A flag of the U.S. Army hangs. It is red.", ["A flag of the U.S. Army hangs.", "It is red."]),
    ],
)
def test_abbreviations_mid_sentence_do_not_split(text: str, want: list[str]) -> None:
    assert split_sentences(text) == want


def test_etc_at_the_end_of_a_sentence_still_ends_it() -> None:
    assert split_sentences("Cups, plates, etc. The table is oak.") == ["Cups, plates, etc.", "The table is oak."]


def test_decimals() -> None:
    assert split_sentences("The pole is 3.5 m tall. It leans 0.25 degrees.") == [
        "The pole is 3.5 m tall.",
        "It leans 0.25 degrees.",
    ]


def test_initials() -> None:
    assert split_sentences("A book by J. R. R. Tolkien lies open. Nothing else is there.") == [
        "A book by J. R. R. Tolkien lies open.",
        "Nothing else is there.",
    ]


def test_ellipses() -> None:
    # Followed by lower case the sentence goes on; followed by a capital a new one starts; "…" is the same.
    assert split_sentences("He waited... and waited. It was dark... The end.") == [
        "He waited... and waited.",
        "It was dark...",
        "The end.",
    ]
    assert split_sentences("Silence\u2026 Then a bell.") == ["Silence\u2026", "Then a bell."]
    assert split_sentences("...") == []


def test_quotes_and_brackets_closing_after_the_period_stay_with_their_sentence() -> None:
    assert split_sentences('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]
    assert split_sentences("The sign reads \u201cOpen.\u201d A man waits.") == [
        "The sign reads \u201cOpen.\u201d",
        "A man waits.",
    ]
    assert split_sentences("A cat (it is grey.) A dog (it sleeps.)") == ["A cat (it is grey.)", "A dog (it sleeps.)"]


def test_whitespace_is_stripped_and_empty_pieces_dropped() -> None:
    assert split_sentences("   A  cat\n sits.   \n\n  A dog   lies.  ") == ["A cat sits.", "A dog lies."]
    assert split_sentences("") == [] and split_sentences(" \n\t ") == [] and split_sentences(". . !") == []
    assert split_sentences("no final stop") == ["no final stop"]
    assert split_sentences("First part\n\nsecond paragraph") == ["First part", "second paragraph"]  # blank line ends


def test_captions_of_an_image_are_split_in_order() -> None:
    assert split_captions(["A cat. A dog.", "", "A bird."]) == ["A cat.", "A dog.", "A bird."]


def test_a_very_long_caption_is_split_quickly_and_kept_whole_without_stops() -> None:
    long = "word " * 2000
    assert split_sentences(long) == [long.strip()]
    many = "A cat sits. " * 1000
    assert split_sentences(many) == ["A cat sits."] * 1000

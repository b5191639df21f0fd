"""EM / F1 with SQuAD normalisation, and per-objective scoring of 'a1; a2; ...' answers."""

import pytest

from envs.scoring import exact_match, f1_score, normalize_answer, score_objectives, split_answers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple,  a pear ", "apple pear"),
        ("Theatre of the Absurd", "theatre of absurd"),  # 'the' inside words stays
        ("U.S.A.", "usa"),
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_any_gold():
    assert exact_match("the Paris", ["London", "paris"]) == 1.0
    assert exact_match("Paris France", ["paris"]) == 0.0


def test_f1_worked_numbers():
    # pred {new, york, city} vs gold {new, york}: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("New York City", ["New York"]) == pytest.approx(0.8)
    assert f1_score("Boston", ["New York"]) == 0.0
    assert f1_score("New York City", ["Boston", "new york city"]) == 1.0  # best gold


def test_split_answers_pads_and_cuts():
    assert split_answers("a; b ;c", 3) == ["a", "b", "c"]
    assert split_answers("a", 3) == ["a", "", ""]
    assert split_answers("a;b;c;d", 2) == ["a", "b"]
    assert split_answers("", 2) == ["", ""]


def test_per_objective_scores():
    golds = [["Paris"], ["Berlin", "Berlin, Germany"], ["1999"]]
    s = score_objectives("paris; the Berlin; 2000", golds)
    assert s.em == (1.0, 1.0, 0.0)
    assert s.em_sum == 2.0 and s.em_mean == pytest.approx(2 / 3)
    none = score_objectives(None, golds)
    assert none.em == (0.0, 0.0, 0.0) and none.f1_mean == 0.0
    # an empty slot never matches, even an empty gold after normalisation
    assert score_objectives("; Berlin", [["the"], ["Berlin"]]).em == (0.0, 1.0)

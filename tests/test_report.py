import pytest

from model.report import classification_report


def test_report_on_a_hand_computed_example():
    gold = ["positive", "positive", "negative", "neutral", "neutral", "neutral"]
    pred = ["positive", "neutral", "negative", "neutral", "neutral", "positive"]
    r = classification_report(gold, pred)
    assert r["n"] == 6
    assert r["accuracy"] == pytest.approx(4 / 6)
    # positive: tp=1 fp=1 fn=1 -> p=r=f1=0.5; negative: 1/1/1; neutral: tp=2 fp=1 fn=1 -> 2/3
    assert r["per_class"]["positive"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["negative"]["f1"] == pytest.approx(1.0)
    assert r["per_class"]["neutral"]["precision"] == pytest.approx(2 / 3)
    assert r["f1_macro"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert r["f1_weighted"] == pytest.approx((0.5 * 2 + 1 * 1 + 2 / 3 * 3) / 6)
    assert r["confusion"]["neutral"]["positive"] == 1 and r["confusion"]["positive"]["neutral"] == 1


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError):
        classification_report(["positive"], [])

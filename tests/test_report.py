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


def _paired_bootstrap():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "paired_bootstrap.py"
    spec = importlib.util.spec_from_file_location("paired_bootstrap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_bootstrap_tells_a_real_gain_from_none():
    compare = _paired_bootstrap().compare
    gold = ["positive", "negative", "neutral"] * 40

    def rows(preds: list[str]) -> list[dict]:
        return [{"line": i, "label": g, "predicted": p} for i, (g, p) in enumerate(zip(gold, preds))]

    weak = rows(["neutral"] * len(gold))
    same = compare(weak, weak, resamples=200, seed=0)["figures"]["f1_macro"]
    assert same["b_minus_a"] == 0 and same["ci95"] == [0, 0]
    better = compare(weak, rows(gold), resamples=200, seed=0)["figures"]["negative_recall"]
    assert better["b_minus_a"] == 1.0 and better["ci95"][0] == 1.0
    with pytest.raises(SystemExit):
        compare(weak, rows(gold)[:-1], resamples=10, seed=0)


def test_the_flag_curve_counts_what_ranks_above_each_budget_of_neutral_flags():
    from bench.flag_curve import curve

    def row(label: str, neutral: float, positive: float) -> dict:
        return {"label": label, "probs": {"neutral": neutral, "positive": positive, "negative": 1 - neutral - positive}}

    rows = [row("negative", 0.1, 0.1), row("neutral", 0.2, 0.4), row("positive", 0.3, 0.1),  # found with the wrong sign
            row("neutral", 0.5, 0.2), row("neutral", 0.6, 0.2), row("positive", 0.9, 0.1)]
    assert curve(rows, budgets=(1, 2, 3)) == {"1": {"found": 1, "right_sign": 1}, "2": {"found": 2, "right_sign": 1},
                                              "3": {"found": 2, "right_sign": 1}}

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_a_class_with_no_examples_and_no_predictions_is_no_figure_in_the_table_as_in_macro_f1(capsys):
    """The table showed 0.000 for such a class while f1_macro left it out: the two disagreed."""
    from sentinel.cli import print_report

    r = classification_report(["positive", "neutral"], ["positive", "neutral"])
    assert r["f1_macro"] == pytest.approx(1.0) and r["f1_macro_labels"] == ["positive", "neutral"]
    assert r["per_class"]["negative"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # keys kept, numbers for readers
    print_report({**r, "model": "m", "data": "d", "skipped": 0})
    shown = capsys.readouterr().out
    table = shown[shown.index("per class"):shown.index("confusion")]
    rows = {cells[0]: cells[1:] for line in table.splitlines() if len(cells := line.replace("\u2502", " ").split()) == 5}
    assert rows["negative"] == ["-", "-", "-", "0"] and rows["positive"] == ["1.000", "1.000", "1.000", "1"], shown
    predicted_only = classification_report(["positive"], ["negative"])  # predicted, never gold: precision 0 is a figure
    assert predicted_only["f1_macro_labels"] == ["positive", "negative"]


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


def test_the_flag_curve_ranks_ties_in_the_order_given_and_the_head_rule_counts_the_same():
    """One count for bench/flag_curve.py and the n-gram head's weight rule (training.ngram): ties in
    p(neutral) rank in the order given (as a stable sort), so a tie straddling a neutral message is
    counted the same by both."""
    import numpy as np

    from model.report import flag_curve
    from training.ngram import flag_curve as found_curve

    # LABELS order: positive, negative, neutral. All tied at p(neutral) 0.4 but the last; a budget
    # past the two neutral messages has no point.
    probs = np.array([[0.5, 0.1, 0.4], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.1, 0.5, 0.4], [0.05, 0.05, 0.9]])
    gold = ["positive", "positive", "neutral", "negative", "neutral"]
    assert flag_curve(probs, gold, (1, 2, 3)) == {"1": {"found": 2, "right_sign": 1}, "2": {"found": 3, "right_sign": 2}}
    assert flag_curve(probs.tolist(), gold, (1, 2, 3)) == flag_curve(probs, gold, (1, 2, 3))
    assert found_curve(probs, gold, (1, 2, 3)) == {"1": 2, "2": 3}


def test_the_targets_check_reads_each_target_from_its_split_and_says_whether_it_is_met():
    import json
    from pathlib import Path

    from bench.indomain_run import TARGETS, check

    stored = Path(__file__).resolve().parents[1] / "docs" / "results" / "indomain"
    reports = {"test-discord": json.loads((stored / "fresh-r8-discord.json").read_text()),
               "test-tfns": json.loads((stored / "fresh-r8-tfns.json").read_text())}
    found = {t["name"]: (round(t["value"], 3), t["met"]) for t in check(reports)}
    # The shipped adapter's figures, as the README's targets table gives them.
    assert found == {"Discord negative precision": (0.333, False), "Discord negative recall": (0.4, False),
                     "Discord positive precision": (0.4, False), "Discord positive recall": (0.25, False),
                     "Discord macro F1": (0.549, False), "Discord neutral precision": (0.974, True), "TFNS weighted F1": (0.871, True)}
    assert [t["met"] for t in check({})] == [False] * len(TARGETS)  # a missing report meets nothing
    # The counts behind each precision and recall, and how little 8 or 10 messages pin them down.
    by_name = {t["name"]: t for t in check(reports)}
    assert (by_name["Discord negative recall"]["hits"], by_name["Discord negative recall"]["of"]) == (4, 10)
    assert (by_name["Discord negative precision"]["hits"], by_name["Discord negative precision"]["of"]) == (4, 12)
    assert by_name["Discord negative recall"]["interval_95"] == [0.168, 0.687]
    assert "interval_95" not in by_name["Discord macro F1"]


def test_the_wilson_interval_matches_its_textbook_values():
    from bench.indomain_run import wilson

    low, high = wilson(4, 10)  # Wilson 1927; as statsmodels' proportion_confint(4, 10, method="wilson")
    assert (round(low, 4), round(high, 4)) == (0.1682, 0.6873)
    assert wilson(0, 8)[0] == 0.0 and 0.0 < wilson(0, 8)[1] < 0.4


def test_the_recipe_is_the_cards_train_command_with_the_splits_and_the_adapter_filled_in():
    import json
    from pathlib import Path

    from bench.indomain_run import SHIPPED_CARD, recipe

    args = recipe(json.loads(SHIPPED_CARD.read_text()), Path("/splits"), Path("/run/adapter"))
    assert args[args.index("--out") + 1] == "/run/adapter" and args[args.index("--val-data") + 1] == "/splits/select.csv"
    assert args.count("/splits/train-indomain.csv") == 3 and args[args.index("--lr") + 1] == "5e-4"
    assert not any("SPLITS" in a or "ADAPTER_DIR" in a for a in args)
    with pytest.raises(SystemExit):
        recipe({"commands": []}, Path("/splits"), Path("/a"))



def test_an_interrupted_training_is_resumed_not_started_again(tmp_path):
    from bench.indomain_run import resuming

    adapter = tmp_path / "adapter"
    assert resuming(adapter) == []  # nothing yet: a fresh run
    (adapter / "checkpoint").mkdir(parents=True)
    assert resuming(adapter) == []  # a save that never wrote its state is not a checkpoint
    (adapter / "checkpoint" / "trainer_state.json").write_text("{}")
    assert resuming(adapter) == ["--resume"]


def test_a_steps_output_appears_only_once_its_command_succeeded(tmp_path):
    """A report is how a resumed run knows a step is done: it is written aside and renamed at the end.
    So a run killed while the command is still writing leaves no report, and a failed command none."""
    from bench.indomain_run import run_into, sentinel

    report, log = tmp_path / "select.json", tmp_path / "select.err"
    partial = tmp_path / "select.json.part"
    # The runner itself killed (-9, with its command) after the command has written half its output.
    half_then_wait = [sys.executable, "-c", "import sys, time; print('half', flush=True); time.sleep(120)"]
    script = f"from pathlib import Path\nfrom bench.indomain_run import run_into\nrun_into({half_then_wait!r}, Path({str(log)!r}), Path({str(report)!r}))"
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not any(f.exists() and "half" in f.read_text() for f in (partial, report)):
            assert runner.poll() is None and time.monotonic() < deadline, "the command never wrote its first line"
            time.sleep(0.05)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
    assert not report.exists(), "a killed step left a report a resumed run would take for a finished one"

    with pytest.raises(SystemExit, match="failed"):
        sentinel(["no-such-command"], log, stdout=report)
    assert not report.exists() and not partial.exists()
    run_into([sys.executable, "-c", "print('whole')"], log, stdout=report)
    assert report.read_text() == "whole\n" and not partial.exists()
    sentinel(["--help"], log, stdout=report)
    assert "Usage" in report.read_text()


def test_the_probability_ensemble_averages_each_example_and_refuses_other_files():
    from bench.prob_ensemble import mean_rows

    def row(line: int, label: str, pos: float, neg: float) -> dict:
        return {"line": line, "label": label, "predicted": "?", "probs": {"positive": pos, "negative": neg, "neutral": 1 - pos - neg}}

    a = [row(2, "negative", 0.1, 0.5), row(3, "neutral", 0.3, 0.0)]
    b = [row(2, "negative", 0.1, 0.1), row(3, "neutral", 0.9, 0.0)]
    mean = mean_rows([a, b])
    assert mean[0]["probs"] == pytest.approx({"positive": 0.1, "negative": 0.3, "neutral": 0.6})
    assert [r["predicted"] for r in mean] == ["neutral", "positive"]  # p(positive) 0.6 on line 3
    assert [(r["line"], r["label"]) for r in mean] == [(2, "negative"), (3, "neutral")]
    with pytest.raises(ValueError, match="other examples"):
        mean_rows([a, [b[1], b[0]]])


def test_swing_resolution_counts_a_scope_that_never_resolved_apart_not_as_minutes():
    """A scope that fired and never resolved has no minutes: the summary counts its stream in
    `never_resolved` and leaves it out of the last-scope figures, instead of reading it as 0."""
    from bench.swing_resolution import summarise

    def row(seed, btc, scopes):
        return {"seed": seed, "resolved_min_after_end": btc, "fired": 1,
                "scopes": {name: {"resolved_min_after_end": m, "fired": f} for name, (m, f) in scopes.items()}}

    rows = [
        row(0, 30.0, {"asset:BTC": (30.0, 1), "all": (80.0, 1), "channel:general": (None, 0)}),  # never fired: not counted
        row(1, 40.0, {"asset:BTC": (40.0, 1), "all": (None, 1)}),  # fired, never resolved
        row(2, None, {"asset:BTC": (None, 1), "all": (20.0, 2)}),  # BTC never resolved; `all` flapped
        row(3, 50.0, {"asset:BTC": (50.0, 1), "all": (120.0, 1)}),
    ]
    out = summarise(rows)
    assert out["median_min"] == 40.0  # over the seeds whose BTC resolved
    assert out["never_resolved"] == 2
    assert (out["last_scope_median_min"], out["last_scope_max_min"]) == (100.0, 120.0)
    assert out["flapped"] == 1


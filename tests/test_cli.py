"""The `sentinel` CLI end to end, as a subprocess, on the tiny model (real tokenizer, real loading)."""

from __future__ import annotations

import json
import re
from pathlib import Path
import os
import subprocess
import sys

from typing import TYPE_CHECKING

import pytest

from model.labels import LABELS

if TYPE_CHECKING:
    from stream.settings import Settings


def sentinel(args: list[str], env_extra: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "sentinel.cli", *args], input=stdin, capture_output=True, text=True, env=env, timeout=300
    )


def test_eval_and_train_head_take_the_seed_discord_format_with_its_score_file(tmp_path):
    """eval's help left seed-discord out and its error pointed at "train's --scores", an option eval had not."""
    export = tmp_path / "export.csv"
    export.write_text("AuthorID,Author,Date_original,Date,Content,Attachments,Reactions,Preprocessed\n"
                      "1,a,x,x,$BTC to the moon,,,\n2,b,x,x,$ETH crash rekt,,,\n", encoding="utf-8")
    scores = tmp_path / "scores.csv"
    scores.write_text("AuthorID,Average_Sentiment_Score\n1,0.4\n2,-0.3\n", encoding="utf-8")
    helped = sentinel(["eval", "--help"], {"COLUMNS": "200"})
    assert "seed-discord" in helped.stdout and "--scores" in helped.stdout, helped.stdout
    missing = sentinel(["eval", "--data", str(export), "--format", "seed-discord"], {"SENTINEL_BASE": "lexicon"})
    assert missing.returncode == 2 and "or --scores" in missing.stderr and "train's" not in missing.stderr, missing.stderr
    done = sentinel(["eval", "--data", str(export), "--format", "seed-discord", "--scores", str(scores), "--json"], {"SENTINEL_BASE": "lexicon"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["per_class"]["negative"]["support"] == 1
    elsewhere = sentinel(["eval", "--data", str(export), "--format", "csv", "--text-col", "Content", "--label-col", "AuthorID",
                          "--scores", str(scores)], {"SENTINEL_BASE": "lexicon"})
    assert elsewhere.returncode == 2 and "only with the seed-discord format" in elsewhere.stderr, elsewhere.stderr
    headed = sentinel(["train-head", "--data", str(export), "--format", "seed-discord", "--scores", str(scores),
                       "--select", str(scores), "--out", str(tmp_path / "head")], {"SENTINEL_BASE": "lexicon"})
    # Past the export (read with the score file) to the --select file, read after it: here not a select.csv.
    assert headed.returncode == 2 and "scores.csv:1: no 'text', 'label' columns" in headed.stderr, headed.stderr


def check_settings(settings: Settings, *, aliases: bool = True) -> None:
    """The start-up check as the CLI makes it: every problem, one a line, in one ValueError."""
    from stream.worker import settings_problems

    if problems := settings_problems(settings, aliases=aliases):
        raise ValueError("\n".join(problems))


@pytest.fixture(scope="module")
def tiny_env(tiny_model_dir, cache_dir):
    return {"SENTINEL_BASE": str(tiny_model_dir), "SENTINEL_CACHE_DIR": str(cache_dir), "SENTINEL_DTYPE": "float32"}


def test_classify_json_from_args_and_stdin(tiny_env):
    r = sentinel(["classify", "--json", "BTC to 100k", "ETH is dead"], tiny_env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["BTC to 100k", "ETH is dead"]
    for row in rows:
        assert set(row) == {"text", "label", "probs", "score"}
        assert row["label"] in LABELS and set(row["probs"]) == set(LABELS)
        assert row["score"] == pytest.approx(row["probs"]["positive"] - row["probs"]["negative"])
    piped = sentinel(["classify", "--json"], tiny_env, stdin="BTC to 100k\n\nETH is dead\n")
    assert [json.loads(line) for line in piped.stdout.splitlines()] == rows


def test_classify_table(tiny_env):
    r = sentinel(["classify", "SOL breaks out"], tiny_env)
    assert r.returncode == 0, r.stderr
    assert "SOL breaks out" in r.stdout and "score" in r.stdout


def test_classify_empty_text_is_a_clear_error(tiny_env):
    r = sentinel(["classify", "ok", "   "], tiny_env)
    assert r.returncode == 2 and "text 2 is empty" in r.stderr


def test_classify_4bit_on_cpu_is_a_clear_error(tiny_env):
    r = sentinel(["classify", "--device", "cpu", "--quantize", "4bit", "x"], tiny_env)
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr


def test_eval_json_report(tiny_env, tmp_path):
    data = tmp_path / "tfns.csv"
    data.write_text("text,label\nBTC rallies,1\nETH dumps,0\nFed speaks,2\nSOL up,1\n", encoding="utf-8")
    r = sentinel(["eval", "--data", str(data), "--format", "tfns", "--json", "--limit", "3"], tiny_env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {"accuracy", "f1_macro", "f1_weighted", "per_class", "confusion", "n"} <= set(report)
    assert report["n"] == 3
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 3


def test_eval_and_train_name_each_row_skip_bad_skips_on_stderr(tmp_path):
    """A count of skipped rows says nothing of which: eval and train name each as the loader's error
    reads (`FILE:LINE: reason`), on stderr, so eval's --json stdout stays one object."""
    data = tmp_path / "rows.jsonl"
    rows = ['{"text": "$BTC up", "label": "positive"}', '{bad json', '{"text": "$ETH down", "label": "negative"}',
            '{"text": "no label"}', '{"text": "gm", "label": "neutral"}']
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    named = [f"skipped {data}:2: invalid JSON", f"skipped {data}:4: missing column 'label'"]

    r = sentinel(["eval", "--data", str(data), "--skip-bad", "--json"], {"SENTINEL_BASE": "lexicon"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == 2
    assert [line[: len(want)] for line, want in zip(r.stderr.splitlines(), named)] == named and r.stderr.count("skipped ") == 2, r.stderr
    # train names them the same way before anything else (here it stops at too few rows to split).
    r = sentinel(["train", "--data", str(data), "--skip-bad", "--out", str(tmp_path / "adapter")], {"SENTINEL_BASE": "lexicon"})
    assert "skipped rows 2" in r.stdout, r.stdout
    assert [line[: len(want)] for line, want in zip(r.stderr.splitlines(), named)] == named and r.stderr.count("skipped ") == 2, r.stderr
    # A file of many bad rows names the first 20 and counts the rest, as `sentinel run` lists dead letters.
    data.write_text("\n".join(rows[:1] + ["{bad json"] * 25) + "\n", encoding="utf-8")
    r = sentinel(["eval", "--data", str(data), "--skip-bad", "--json"], {"SENTINEL_BASE": "lexicon"})
    assert json.loads(r.stdout)["skipped"] == 25
    assert r.stderr.count("skipped ") == 20 and f"skipped {data}:21: invalid JSON" in r.stderr and "... and 5 more skipped" in r.stderr, r.stderr


def test_eval_and_train_of_a_csv_given_as_jsonl_point_to_format_csv(tmp_path):
    posts = tmp_path / "posts.csv"
    posts.write_text("text,label\nbtc up,positive\n", encoding="utf-8")
    for command in (["eval"], ["train", "--out", str(tmp_path / "out")]):
        r = sentinel([*command, "--data", str(posts), "--format", "jsonl"], {"SENTINEL_BASE": "lexicon"})
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert " ".join(r.stderr.split()) == (f"error: {posts}:1: invalid JSON: Expecting value; the line reads as a CSV row of 2 fields, "
                                              "so this is likely a CSV file: --format csv reads it"), r.stderr


def test_an_adapter_path_that_is_not_there_is_one_line_before_anything_loads(tmp_path):
    data = tmp_path / "rows.jsonl"
    rows = [{"text": f"${t} post {i}", "label": label} for i, (t, label) in enumerate([("BTC", "positive"), ("ETH", "negative"), ("SOL", "neutral")] * 4)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    missing = str(tmp_path / "no-adapter")
    for args in (["eval", "--data", str(data), "--card", "--adapter", missing],
                 ["train", "--data", str(data), "--init-adapter", missing, "--out", str(tmp_path / "out"), "--val-fraction", "0.5"]):
        r = sentinel(args, {"SENTINEL_BASE": "lexicon"})
        assert r.returncode == 2 and "no such directory" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)



def test_a_lora_shape_asked_of_a_warm_start_that_keeps_its_own_is_refused(tmp_path):
    """A warm start trains the --init-adapter's own r, alpha, dropout and targets: an --r given
    beside it would be ignored without a word (the card records the adapter's), so it is an error
    naming each, before the model loads. The same values as the adapter's, or none given, pass."""
    data = tmp_path / "rows.jsonl"
    rows = [{"text": f"${t} post {i}", "label": label} for i, (t, label) in enumerate([("BTC", "positive"), ("ETH", "negative"), ("SOL", "neutral")] * 4)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    adapter = tmp_path / "dapt"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["v_proj", "q_proj"]}))
    base = ["train", "--data", str(data), "--init-adapter", str(adapter), "--out", str(tmp_path / "out"), "--val-fraction", "0.5"]
    r = sentinel(base + ["--r", "16", "--target-modules", "q_proj"], {"SENTINEL_BASE": "lexicon"})
    assert r.returncode == 2 and "trains on in its own LoRA shape" in r.stderr, r.stderr
    assert "--r 16 asked, 8 there; --target-modules q_proj asked, q_proj,v_proj there" in r.stderr and "--alpha" not in r.stderr, r.stderr
    for same in ([], ["--r", "8", "--alpha", "16", "--target-modules", "q_proj,v_proj"]):
        r = sentinel(base + same, {"SENTINEL_BASE": "lexicon"})  # goes on, to fail later on the keyword scorer's lack of weights
        assert "own LoRA shape" not in r.stderr and "Traceback" not in r.stderr, (same, r.stderr)



def test_eval_holdout_of_several_files_is_the_split_train_held_out_and_a_card_of_other_files_is_refused(tmp_path):
    """`train --data A --data B` splits A's rows and B's, one file after the other: `eval --holdout`
    took one --data, so it could only split one file, a split holding rows the adapter trained on.
    It takes several in train's order; where the adapter's card records other files, it says which."""
    from training.split import training_split
    from training.trainer import sha256_file

    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.csv"
        path.write_text("text,label\n" + "".join(f"{name} post {i},{LABELS[i % 3]}\n" for i in range(30)), encoding="utf-8")
        files.append(path)
    held = training_split(files, None, 0.25, 7, fmt="csv")[0].validation
    wanted = {(str(tmp_path / f"{ex.text[0]}.csv"), ex.line) for ex in held}
    assert {name for name, _ in wanted} == {str(f) for f in files}  # the split draws on both files
    preds = tmp_path / "preds.jsonl"
    both = ["eval", "--data", str(files[0]), "--data", str(files[1]), "--holdout", "0.25", "--seed", "7", "--json"]
    r = sentinel(both + ["--predictions", str(preds)], {"SENTINEL_BASE": "lexicon"})
    assert r.returncode == 0, r.stderr
    assert {(p["file"], p["line"]) for p in map(json.loads, preds.read_text().splitlines())} == wanted
    assert json.loads(r.stdout)["n"] == len(held) and json.loads(r.stdout)["data"] == f"{files[0]} + {files[1]}"
    # An adapter whose card records its split: only its files, in its order, with its seed and fraction, are that split.
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "model_card.json").write_text(json.dumps({"split": {"val_fraction": 0.25, "seed": 7},
                                                         "data": [{"path": "a.csv", "sha256": sha256_file(files[0])},
                                                                  {"path": "b.csv", "sha256": sha256_file(files[1])}]}))
    r = sentinel(both + ["--adapter", str(adapter), "--card"], {"SENTINEL_BASE": "lexicon"})
    assert r.returncode == 0, r.stderr
    assert "(1 evaluation)" in " ".join(r.stderr.split()), r.stderr  # said "(1 evaluations)"
    recorded = json.loads((adapter / "model_card.json").read_text())["evaluations"]["a + b (holdout 0.25 seed 7)"]
    assert [entry["path"] for entry in recorded["data"]] == [str(f) for f in files] and recorded["n"] == len(held)
    for args in (["--data", str(files[0])], ["--data", str(files[1]), "--data", str(files[0])]):
        r = sentinel(["eval", *args, "--holdout", "0.25", "--seed", "7", "--adapter", str(adapter)], {"SENTINEL_BASE": "lexicon"})
        assert r.returncode == 2 and "its card: --data a.csv --data b.csv --holdout 0.25 --seed 7" in r.stderr, r.stderr
    r = sentinel(both[:-1] + ["--seed", "8", "--adapter", str(adapter)], {"SENTINEL_BASE": "lexicon"})
    assert r.returncode == 2 and "with that --holdout and --seed" in r.stderr, r.stderr


def test_eval_holdout_of_an_adapter_trained_with_val_data_is_refused_naming_its_validation_file(tmp_path):
    """`train --val-data V` holds out no split of its --data files (its card's `val_fraction` is
    null): `eval --holdout` on them went on and split rows the adapter trained on. It is refused,
    naming V, the evaluation there is; a card from before V was listed says --val-data FILE."""
    from training.trainer import sha256_file

    data, val = tmp_path / "a.csv", tmp_path / "v.csv"
    for path in (data, val):
        path.write_text("text,label\n" + "".join(f"{path.stem} post {i},{LABELS[i % 3]}\n" for i in range(30)), encoding="utf-8")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    split = {"train": 30, "validation": 30, "overlap_removed": 0, "seed": 42, "val_fraction": None, "skipped_rows": 0}
    trained = [{"path": "a.csv", "sha256": sha256_file(data)}]
    listed = [{"path": "v.csv", "sha256": sha256_file(val), "role": "validation"}]
    args = ["eval", "--data", str(data), "--holdout", "0.1", "--adapter", str(adapter), "--json"]
    for entries, named in ((trained + listed, "v.csv"), (trained, "FILE")):
        (adapter / "model_card.json").write_text(json.dumps({"split": split, "data": entries}))
        r = sentinel(args, {"SENTINEL_BASE": "lexicon"})
        assert r.returncode == 2 and r.stdout == "", r.stderr
        assert f"trained with --val-data {named} and held out no split" in r.stderr and f"sentinel eval --data {named}" in r.stderr, r.stderr
    r = sentinel([a for a in args if a not in ("--holdout", "0.1")], {"SENTINEL_BASE": "lexicon"})  # without --holdout it evaluates
    assert r.returncode == 0 and json.loads(r.stdout)["n"] == 30, r.stderr


def test_a_warm_start_whose_targets_are_a_peft_regex_refuses_a_target_list_and_keeps_the_regex(tmp_path):
    """PEFT takes a string `target_modules` as a regex over the base's full module names: the
    shape check read it as one module's name. A list given beside it cannot be compared: refused,
    saying so; left out, the warm start goes on (it trains the adapter's own targets)."""
    data = tmp_path / "rows.jsonl"
    rows = [{"text": f"${t} post {i}", "label": label} for i, (t, label) in enumerate([("BTC", "positive"), ("ETH", "negative"), ("SOL", "neutral")] * 4)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    adapter = tmp_path / "dapt"
    adapter.mkdir()
    regex = r".*\.(q_proj|v_proj)"
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": regex}))
    base = ["train", "--data", str(data), "--init-adapter", str(adapter), "--out", str(tmp_path / "out"), "--val-fraction", "0.5"]
    for targets in ("q_proj,v_proj", regex):
        r = sentinel(base + ["--target-modules", targets], {"SENTINEL_BASE": "lexicon"})
        assert r.returncode == 2 and f"the PEFT regex {regex!r} there, which no list of module names can be checked against" in r.stderr, r.stderr
    r = sentinel(base + ["--r", "8"], {"SENTINEL_BASE": "lexicon"})  # goes on, to fail later on the keyword scorer's lack of weights
    assert "own LoRA shape" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_eval_card_records_a_pooled_heads_figures_beside_the_adapters_own_never_over_them(tmp_path):
    """The card is the adapter's: `eval --card` with an n-gram head pooled (SENTINEL_NGRAM_HEAD;
    auto pools the shipped head with the shipped adapter) must not replace the adapter's own
    figures on a file with the pooled ones under the same key."""
    data = tmp_path / "test-voices.csv"
    data.write_text("text,label\nBTC to the moon,positive\nETH is dumping hard,negative\nwen AMA,neutral\n", encoding="utf-8")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "model_card.json").write_text(json.dumps({"base_model": "x"}))
    for head in ("none", "default", "none"):
        r = sentinel(["eval", "--data", str(data), "--adapter", str(adapter), "--card", "--json"], {"SENTINEL_BASE": "lexicon", "SENTINEL_NGRAM_HEAD": head})
        assert r.returncode == 0, r.stderr
    evaluations = json.loads((adapter / "model_card.json").read_text())["evaluations"]
    assert {key: entry["model"] for key, entry in evaluations.items()} == {"test-voices": "lexicon", "test-voices (+ngram)": "lexicon+ngram"}


def test_eval_and_label_pool_run_on_the_keyword_scorer(tmp_path):
    """The keyword scorer has no torch and no batch size of its own: both commands still work on it."""
    from test_discord import PM, write_export

    data = tmp_path / "tfns.csv"
    data.write_text("text,label\nBTC rallies,1\nETH dumps,0\n", encoding="utf-8")
    r = sentinel(["eval", "--data", str(data), "--format", "tfns", "--json", "--base", "lexicon"], {})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 2

    export = tmp_path / "export.csv"
    write_export(export, [["1.0e+17", "a", f"2022/3/{day} {PM}1:00", "2022/3/1", text, "", "", ""]
                          for day, text in enumerate(["gm", "MC is dumping hard", "new map tonight", "wen moon"], start=1)]
                 + [["1.0e+17", "a", f"2023/3/1 {PM}1:00", "2023/3/1", "held out: crash", "", "", ""]])
    r = sentinel(["label-pool", "--export", str(export), "--out", str(tmp_path / "pool"), "--top", "1", "--random", "2", "--base", "lexicon"], {})
    assert r.returncode == 0, r.stderr
    batch = [json.loads(line) for line in (tmp_path / "pool" / "batch.jsonl").read_text().splitlines()]
    keys = (tmp_path / "pool" / "keys.csv").read_text().splitlines()
    assert [b["n"] for b in batch] == [1, 2, 3] and len(keys) == 4 and keys[0] == "n,key,pool,p_neutral"
    ranked = [b["text"] for b, row in zip(batch, keys[1:]) if ",model-ranked," in row]
    assert ranked == ["MC is dumping hard"]  # the one the keywords find least neutral
    assert all("held out" not in b["text"] for b in batch)


def test_eval_malformed_row_names_its_line(tiny_env, tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("text,label\nBTC rallies,1\nETH dumps,9\n", encoding="utf-8")
    r = sentinel(["eval", "--data", str(data), "--format", "tfns"], tiny_env)
    assert r.returncode == 2 and f"{data}:3" in r.stderr


def test_a_bad_setting_is_one_line_naming_the_variable_and_never_its_value():
    # A value that may be a secret (a password pasted into the wrong variable) must not be echoed.
    r = sentinel(["worker"], {"SENTINEL_KAFKA_SASL_MECHANISM": "hunter2-secret", "SENTINEL_ALERT_FIRE_Z": "-1"})
    assert r.returncode == 2, r.stderr
    assert "SENTINEL_KAFKA_SASL_MECHANISM" in r.stderr and "SENTINEL_ALERT_FIRE_Z" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_every_option_that_sets_a_setting_is_named_as_model_settings_names_it():
    # model_settings names a bad option's value by option_names (`--batch-size` for batch_size); an
    # option spelt otherwise would be named by a flag the command does not have.
    import typer.main

    from sentinel.cli import app, option_names
    from stream.settings import Settings

    def commands(group):
        for command in group.commands.values():
            yield from commands(command) if hasattr(command, "commands") else [command]

    options = [(command.name, param) for command in commands(typer.main.get_command(app)) for param in command.params
               if param.name in Settings.model_fields]
    assert {param.name for _, param in options} >= {"base", "adapter", "device", "dtype", "quantize", "batch_size"}
    assert [(name, param.opts) for name, param in options if option_names([param.name])[param.name] not in param.opts] == []


def test_bad_window_or_alert_settings_stop_run_and_worker_before_anything_starts():
    # Checked before the model loads or the embedded stack starts: seconds, not a traceback later.
    r = sentinel(["run", os.devnull], {"SENTINEL_ALERT_HALF_LIFE": "15"})
    assert r.returncode == 2 and "SENTINEL_ALERT_HALF_LIFE: bad duration '15'" in r.stderr, r.stderr
    r = sentinel(["worker"], {"KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9", "SENTINEL_ALERT_BASELINE": "90m"})
    assert r.returncode == 2 and "whole number of windows" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = sentinel(["run", os.devnull], {"SENTINEL_WINDOWS": "15m,1 hour"})
    assert r.returncode == 2 and "SENTINEL_WINDOWS: bad duration '1 hour'" in r.stderr, r.stderr
    # Ids kept longer than the buckets would accept posts into buckets already trimmed.
    r = sentinel(["run", os.devnull], {"SENTINEL_RETENTION": "48h", "SENTINEL_DEDUPE_WINDOW": "72h"})
    assert r.returncode == 2 and "SENTINEL_DEDUPE_WINDOW must be above zero and at most SENTINEL_RETENTION" in r.stderr, r.stderr
    r = sentinel(["run", os.devnull], {"SENTINEL_DEDUPE_WINDOW": "0m"})
    assert r.returncode == 2 and "SENTINEL_DEDUPE_WINDOW" in r.stderr, r.stderr
    # One post a day ahead of the clock would hold the watermark there, and a 2 h window would drop everything else.
    r = sentinel(["run", os.devnull], {"SENTINEL_DEDUPE_WINDOW": "2h"})
    assert r.returncode == 2 and "SENTINEL_MAX_FUTURE must be below SENTINEL_DEDUPE_WINDOW" in r.stderr, r.stderr
    r = sentinel(["windows"], {"SENTINEL_DEDUPE_WINDOW": "72h", "REDIS_URL": "redis://127.0.0.1:9/0"})
    assert r.returncode == 2 and "SENTINEL_DEDUPE_WINDOW" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # Grouping reads the pair scopes from 6 h before an onset: kept for less, every read would be short.
    r = sentinel(["run", os.devnull], {"SENTINEL_PAIR_RETENTION": "6h"})
    assert r.returncode == 2 and "SENTINEL_PAIR_RETENTION (21600 s, capped at SENTINEL_RETENTION) must exceed" in r.stderr, r.stderr
    r = sentinel(["windows"], {"SENTINEL_PAIR_RETENTION": "soon", "REDIS_URL": "redis://127.0.0.1:9/0"})
    assert r.returncode == 2 and "SENTINEL_PAIR_RETENTION: bad duration 'soon'" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_dedupe_window_defaults_to_the_retention():
    from sentinel.run import open_store  # the worker's store
    from stream.settings import Settings
    from stream.windows import dedupe_window_s

    assert dedupe_window_s("48h", "") == 48 * 3600
    assert dedupe_window_s("48h", "2h") == 7200
    from stream.worker import post_limits

    short = Settings(retention="48h", dedupe_window="2h", max_future="10m")
    check_settings(short)  # posts at most 10 minutes ahead: fits a 2 h window
    assert post_limits(short).max_future_s == 600

    store = open_store(Settings(retention="48h", dedupe_window="2h", redis_url="redis://127.0.0.1:9/0"))
    assert (store.retention_s, store.dedupe_s) == (48 * 3600, 7200)


def test_the_pair_scopes_are_kept_twelve_hours_by_default_and_never_beyond_the_retention():
    from sentinel.run import open_store
    from stream.settings import Settings
    from stream.windows import pair_retention_s

    assert open_store(Settings(redis_url="redis://127.0.0.1:9/0")).pair_retention_s == 12 * 3600
    assert pair_retention_s("10h", "12h", 6 * 3600) == 10 * 3600
    # The worker's start-up check refuses it too, before the model loads (open_store comes later).

    with pytest.raises(ValueError, match="SENTINEL_PAIR_RETENTION"):
        check_settings(Settings(pair_retention="6h"))


def test_error_text_with_brackets_is_printed_not_parsed_as_markup(capsys):
    # Worker log lines and exception texts hold things like Llama's "[/INST]": as rich markup
    # they raised MarkupError inside the error path itself.
    from sentinel.cli import fail

    assert fail("worker said [/INST] and [bold]x").exit_code == 2
    assert "worker said [/INST] and [bold]x" in capsys.readouterr().err


def test_the_run_summary_names_the_incidents_and_their_roots():
    from sentinel.cli import incident_summary

    def record(incident: str, root: str, scope: str = "all") -> dict:
        return {"incident_id": incident, "root_scope": root, "scope": scope}

    assert incident_summary([]) is None
    assert incident_summary([{"scope": "asset:BTC", "incident_id": ""}]) is None  # ungrouped records
    # The demo's swing: many transitions, one incident.
    assert incident_summary([record("i1", "asset:ETH", s) for s in ("all", "asset:ETH", "source:discord")]) == "1 (asset:ETH)"
    many = [record(f"b{i}", "asset:BTC") for i in range(3)] + [record("e", "asset:ETH"), record("s", "asset:SOL"), record("x", "channel:x")]
    assert incident_summary(many) == "6 (asset:BTC x3, asset:ETH, asset:SOL, 1 more root)"


def test_the_summary_json_carries_the_tables_incidents(tmp_path, capsys):
    """`--summary-json` (the demo's out/demo-summary.json) holds what the table's `incidents (roots)`
    row says, in full, after the run's own fields, which stay as they were."""
    from sentinel.cli import print_run_summary

    summary = {key: 0 for key in ("consumed", "valid", "dlq", "duplicates", "late_dropped", "ahead", "processed", "capped",
                                  "text_capped", "wall_s", "posts_per_s")}
    summary.update(alerts=5, labels={"positive": 0, "negative": 0, "neutral": 0}, ended=True)
    alerts = [{"incident_id": "e", "root_scope": "asset:ETH", "scope": s} for s in ("all", "asset:ETH", "source:discord")]
    alerts += [{"incident_id": f"b{i}", "root_scope": "asset:BTC", "scope": "all"} for i in range(2)]
    path = tmp_path / "summary.json"
    print_run_summary(Path("demo.jsonl"), summary, alerts, alerts_out=None, summary_json=path)
    written = json.loads(path.read_text())
    assert written == {**summary, "incidents": 3, "incident_roots": {"asset:BTC": 2, "asset:ETH": 1}}
    assert list(written)[: len(summary)] == list(summary)
    assert "3 (asset:BTC x2, asset:ETH)" in capsys.readouterr().out
    # Without grouping no record names an incident: none, as the table shows no row.
    print_run_summary(Path("demo.jsonl"), summary, [{"incident_id": "", "scope": "all"}], alerts_out=None, summary_json=path)
    assert {k: json.loads(path.read_text())[k] for k in ("incidents", "incident_roots")} == {"incidents": 0, "incident_roots": {}}
    assert "incidents (roots)" not in capsys.readouterr().out


def test_settings_that_would_crash_later_are_refused_up_front(tmp_path):
    from pydantic import ValidationError

    from stream.settings import Settings

    assert Settings(log_level="debug").log_level == "DEBUG"  # any case, as logging takes it
    assert Settings(log_level="warn").log_level == "WARNING"  # and logging's aliases
    for bad in ({"log_level": "verbose"}, {"device": "gpu"}, {"device": "cuda:x"}):
        with pytest.raises(ValidationError):
            Settings(**bad)
    assert Settings(device="cuda:1").device == "cuda:1"
    for bad in ("sentinel.example.com", "ftp://sentinel.example.com", "https://", "https://s.example.com/?token=x", "https://x/?", "https://x/#",
                "https://host:abc", "https://u:hunter2@s.example.com", "https://s.example.com/risk", "http://[::1"):
        with pytest.raises(ValidationError, match="console_url"):
            Settings(console_url=bad)  # a dead link in every notification otherwise
    assert Settings(console_url=" https://s.example.com/ ").console_url == "https://s.example.com"
    assert Settings(console_url="HTTP://[::1]:8080").console_url == "HTTP://[::1]:8080"
    assert Settings(kafka_broker="kafka-0:9092, kafka-1:9092,[::1]:9093,kafka-2").kafka_broker  # a port may be left to the default
    bad_json = tmp_path / "aliases.json"
    bad_json.write_text("{bad")
    for overrides, message in (({"bucket": "0m"}, "SENTINEL_BUCKET: must be at least 1s"),
                               ({"aliases_file": tmp_path / "hunter2"}, "SENTINEL_ALIASES_FILE: cannot read the file (No such file"),
                               ({"aliases_file": bad_json}, "SENTINEL_ALIASES_FILE: not a JSON object"),
                               ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": tmp_path / "hunter2"},
                                "SENTINEL_KAFKA_SSL_CAFILE: cannot load the CA file (No such file"),
                               ({"kafka_security_protocol": "SASL_SSL", "kafka_ssl_cafile": bad_json, "kafka_sasl_username": "u",
                                 "kafka_sasl_password": "p"}, "SENTINEL_KAFKA_SSL_CAFILE: cannot load"),
                               ({"alert_overrides": "{hunter2"}, "SENTINEL_ALERT_OVERRIDES: alert overrides are not valid JSON")):
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            check_settings(Settings(**overrides))
        assert "hunter2" not in str(info.value) and str(tmp_path) not in str(info.value)  # never a setting's value
    check_settings(Settings(aliases_file=tmp_path / "hunter2"), aliases=False)  # a command that only reads Redis


def test_every_bad_window_alert_tls_and_notify_setting_is_named_in_one_error(tmp_path):
    # Named one at a time, three bad settings cost an operator three pod restarts.
    from stream.settings import Settings

    bad = Settings(bucket="0s", max_ahead="0s", alert_overrides="{hunter2", aliases_file=tmp_path / "hunter2", windows="15m,1 hour",
                   alert_thaw="soon", kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "hunter2", alert_group_wait="later",
                   notify_claim_idle=10)
    with pytest.raises(ValueError) as info:
        check_settings(bad)
    lines = str(info.value).splitlines()
    assert [line.split(":")[0].split(" ")[0] for line in lines] == [
        "SENTINEL_WINDOWS", "SENTINEL_BUCKET", "SENTINEL_ALIASES_FILE", "SENTINEL_MAX_AHEAD", "SENTINEL_ALERT_OVERRIDES", "SENTINEL_ALERT_THAW",
        "SENTINEL_KAFKA_SSL_CAFILE", "SENTINEL_ALERT_GROUP_WAIT", "SENTINEL_NOTIFY_CLAIM_IDLE"], lines
    for message in ("SENTINEL_WINDOWS: bad duration '1 hour'", "SENTINEL_BUCKET: must be at least 1s", "SENTINEL_ALIASES_FILE: cannot read the file (No such file",
                    "SENTINEL_MAX_AHEAD: must be longer than zero", "SENTINEL_ALERT_OVERRIDES: alert overrides are not valid JSON",
                    "SENTINEL_ALERT_THAW: bad duration 'soon'", "SENTINEL_KAFKA_SSL_CAFILE: cannot load the CA file (No such file",
                    "SENTINEL_ALERT_GROUP_WAIT: bad duration 'later'", "SENTINEL_NOTIFY_CLAIM_IDLE (10 s) must exceed the notification retry delays"):
        assert sum(line.startswith(message) for line in lines) == 1, (message, lines)
    assert "hunter2" not in str(info.value) and str(tmp_path) not in str(info.value)  # never a setting's value
    # A command that only reads Redis: the same problems but the alias table's.
    with pytest.raises(ValueError) as info:
        check_settings(bad, aliases=False)
    assert str(info.value).splitlines() == [line for line in lines if not line.startswith("SENTINEL_ALIASES_FILE")]


def test_a_check_whose_input_is_wrong_is_skipped_not_said_again_or_as_a_follow_on():
    from stream.settings import Settings

    def lines(**values: object) -> list[str]:
        with pytest.raises(ValueError) as info:
            check_settings(Settings(**values), aliases=False)
        return str(info.value).splitlines()

    # The dedupe window, the max future, the sequential detector's retention and the pair retention
    # are all judged against the retention: with it unreadable, only it is named (and the checks
    # after those still run: a skipped check must not stop the others).
    assert lines(retention="soon", dedupe_window="2h", max_future="1d", notify_claim_idle=10) == [
        "SENTINEL_RETENTION: bad duration 'soon'; use a number and one of s, m, h, d (e.g. 15m)",
        "SENTINEL_NOTIFY_CLAIM_IDLE (10 s) must exceed the notification retry delays (15 s) by more than 30 s"]
    # A dedupe window that is wrong itself is named once; the max future is not judged against it.
    assert lines(dedupe_window="72h") == ["SENTINEL_DEDUPE_WINDOW must be above zero and at most SENTINEL_RETENTION (172800 s)"]
    assert lines(dedupe_window="72h", max_future="later") == [
        "SENTINEL_DEDUPE_WINDOW must be above zero and at most SENTINEL_RETENTION (172800 s)",
        "SENTINEL_MAX_FUTURE: bad duration 'later'; use a number and one of s, m, h, d (e.g. 15m)"]
    # No alert config is built from an unreadable duration or overrides: each input named, and not
    # the retention the sequential detector's config would need.
    assert lines(retention="24h", max_future="1h") == [
        "SENTINEL_RETENTION must cover the alert window and baseline (90060 s) for the sequential detector"]
    assert lines(alert_window="1 hour", alert_overrides="[]", retention="24h", max_future="1h") == [
        "SENTINEL_ALERT_OVERRIDES: alert overrides must be a JSON object {scope pattern: {threshold: value}}",
        "SENTINEL_ALERT_WINDOW: bad duration '1 hour'; use a number and one of s, m, h, d (e.g. 15m)"]
    # Incident grouping's durations unreadable: the pair retention's own problem only, not its comparison.
    assert lines(alert_group_repeat="soon", pair_retention="6h") == [
        "SENTINEL_ALERT_GROUP_REPEAT: bad duration 'soon'; use a number and one of s, m, h, d (e.g. 15m)"]
    assert lines(alert_group_repeat="soon", pair_retention="never") == [
        "SENTINEL_ALERT_GROUP_REPEAT: bad duration 'soon'; use a number and one of s, m, h, d (e.g. 15m)",
        "SENTINEL_PAIR_RETENTION: bad duration 'never'; use a number and one of s, m, h, d (e.g. 15m)"]
    # Each single problem is still exactly its one line.
    assert lines(bucket="0m") == ["SENTINEL_BUCKET: must be at least 1s"]
    assert lines(alert_overrides="{x") == ["SENTINEL_ALERT_OVERRIDES: alert overrides are not valid JSON (Expecting property name enclosed "
                                           "in double quotes at character 1)"]


def test_the_cli_names_every_bad_stream_setting_in_one_line(tmp_path):
    from sentinel.cli import invalid_settings, stream_problems
    from stream.settings import Settings

    # One line, as the settings that do not parse are: a pod log reads an error a line.
    assert invalid_settings(stream_problems(Settings(bucket="0s", max_ahead="0s", alert_overrides="garbage"), "reader")) == (
        "invalid settings: SENTINEL_BUCKET: must be at least 1s; SENTINEL_MAX_AHEAD: must be longer than zero; "
        "SENTINEL_ALERT_OVERRIDES: alert overrides are not valid JSON (Expecting value at character 0)")
    # A worker's: the services it notifies too, named beside the others rather than after them.
    assert invalid_settings(stream_problems(Settings(bucket="0s", apprise_config=tmp_path / "hunter2.yml"), "worker")) == (
        "invalid settings: SENTINEL_BUCKET: must be at least 1s; SENTINEL_APPRISE_CONFIG: not a file")


def test_an_output_replaced_when_done_keeps_its_mode_its_link_and_what_is_not_a_plain_file(tmp_path):
    from stream.tools.files import replaced_when_done

    shared = tmp_path / "shared.jsonl"
    shared.write_text("old\n")
    shared.chmod(0o664)
    with replaced_when_done(shared) as handle:
        handle.write("new\n")
    assert shared.read_text() == "new\n" and shared.stat().st_mode & 0o777 == 0o664
    link = tmp_path / "latest.jsonl"
    link.symlink_to(shared)
    with replaced_when_done(link) as handle:
        handle.write("via the link\n")
    assert link.is_symlink() and shared.read_text() == "via the link\n"
    umask = os.umask(0o022)
    os.umask(umask)
    with replaced_when_done(tmp_path / "fresh.jsonl") as handle:
        handle.write("x\n")
    assert (tmp_path / "fresh.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open makes it
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    with replaced_when_done(fifo) as handle:  # written to, not replaced by a file
        handle.write("through the pipe\n")
    assert reader.communicate(timeout=10)[0] == "through the pipe\n" and fifo.is_fifo()
    with pytest.raises(ValueError, match="cannot write"):
        with replaced_when_done(Path("/proc/sentinel-out.jsonl")):
            pass
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_an_output_that_is_the_commands_own_redirected_stdout_is_written_in_place(tmp_path):
    """`sentinel run FILE --alerts-out /dev/stdout > out.txt`: /dev/stdout is then a regular file, and
    replacing it by a rename sent all the command printed after it (the summary) to the unlinked old
    file, and dropped what the shell wrote before. It is written where the stream stands, as a pipe."""
    script = ("import sys; from pathlib import Path; from stream.tools.files import replaced_when_done\n"
              "print('printed before')\n"
              "with replaced_when_done(Path(sys.argv[1])) as handle:\n    handle.write('the output\\n')\n"
              "print('printed after')\n")
    out = tmp_path / "out.txt"
    for name in ("/dev/stdout", str(out)):
        out.write_text("the shell's\n")
        with out.open("a") as handle:
            done = subprocess.run([sys.executable, "-c", script, name], stdout=handle, stderr=subprocess.PIPE, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert out.read_text() == "the shell's\nprinted before\nthe output\nprinted after\n", (name, out.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no .part left


def test_an_output_named_by_dev_stdout_or_dev_fd_on_a_pipe_is_written_through_the_pipe(tmp_path):
    """/dev/stdout on a pipe (`--alerts-out /dev/stdout | jq`, a pod's stdout) and /dev/fd/N (a
    shell's `--alerts-out >(jq ...)`) resolve to /proc/PID/fd/pipe:[N], a name that is no file:
    until session 55's review they were taken for a file not there yet, whose temp file could not
    be made in /proc ("cannot write /dev/stdout: No such file or directory", exit 2). And a closed
    stdout (`>&-`, sys.stdout None) with the output on stderr's file is written, not an AttributeError."""
    script = ("import sys; from pathlib import Path; from stream.tools.files import replaced_when_done\n"
              "print('printed before')\n"
              "with replaced_when_done(Path(sys.argv[1])) as handle:\n    handle.write('the output\\n')\n"
              "print('printed after', file=sys.stderr if sys.stdout is None else sys.stdout)\n")
    done = subprocess.run([sys.executable, "-c", script, "/dev/stdout"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "printed before\nthe output\nprinted after\n", (done.stdout, done.stderr)
    read, write = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-c", script, f"/dev/fd/{write}"], capture_output=True, text=True, timeout=60, pass_fds=(write,))
    finally:
        os.close(write)
    with os.fdopen(read) as piped:
        assert done.returncode == 0 and piped.read() == "the output\n", done.stderr
    err_file = tmp_path / "err.txt"
    with err_file.open("w") as handle:
        done = subprocess.run(["bash", "-c", 'exec "$0" -c "$1" "$2" >&-', sys.executable, script.replace("print('printed before')\n", ""),
                               str(err_file)], stderr=handle, timeout=60)
    assert done.returncode == 0 and err_file.read_text() == "the output\nprinted after\n", err_file.read_text()


def test_eval_predictions_to_dev_stdout_on_a_pipe_come_before_the_report(tmp_path):
    """`sentinel eval --predictions /dev/stdout | jq`: a plain open wrote it until session 55, whose
    replaced_when_done refused it after every example was classified (exit 2)."""
    data = tmp_path / "lab.csv"
    data.write_text("text,label\nBTC rally strong,positive\nThe call is at noon,neutral\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "eval", "--data", str(data), "--predictions", "/dev/stdout", "--json"],
                          capture_output=True, text=True, timeout=120, env={**env, "SENTINEL_BASE": "lexicon"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and [json.loads(line)["line"] for line in lines[:2]] == [2, 3] and json.loads(lines[2])["n"] == 2, lines


def test_eval_predictions_to_its_own_redirected_stdout_come_before_the_report(tmp_path):
    """`sentinel eval --predictions /dev/stdout > out.txt` opened out.txt anew ("w"): cut back to
    its start, the report then overwrote the predictions from the stream's own position."""
    data = tmp_path / "lab.csv"
    data.write_text("text,label\nBTC rally strong,positive\nThe call is at noon,neutral\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    out.write_text("the shell's\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    with out.open("a") as handle:
        done = subprocess.run([sys.executable, "-m", "sentinel.cli", "eval", "--data", str(data), "--predictions", "/dev/stdout", "--json"],
                              stdout=handle, stderr=subprocess.PIPE, text=True, timeout=120, env={**env, "SENTINEL_BASE": "lexicon"})
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "the shell's" and len(lines) == 4, lines
    assert [json.loads(line)["line"] for line in lines[1:3]] == [2, 3] and json.loads(lines[3])["n"] == 2, lines


def test_a_silence_that_would_silence_nothing_or_forever_is_refused():
    from stream.alerts.silences import silence_request

    assert silence_request(" asset:btc ", 3600) == "asset:BTC"  # tickers are upper case in every scope
    assert silence_request("asset:*", 3600) == "asset:*" and silence_request("channel:General", 60) == "channel:General"
    for scope, seconds in (("", 3600), ("   ", 3600), ("asset:ETH", 0), ("asset:ETH", 31 * 86400)):
        with pytest.raises(ValueError):
            silence_request(scope, seconds)


def test_bad_input_on_the_command_line_is_one_line_and_loses_no_file(tmp_path):
    lexicon = {"SENTINEL_BASE": "lexicon"}
    r = sentinel(["worker"], {**lexicon, "SENTINEL_LOG_LEVEL": "verbose", "KAFKA_BROKER": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9"})
    assert r.returncode == 2 and "SENTINEL_LOG_LEVEL" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = sentinel(["windows"], {**lexicon, "SENTINEL_BUCKET": "0m", "REDIS_URL": "redis://127.0.0.1:9/0"})
    assert r.returncode == 2 and "SENTINEL_BUCKET: must be at least 1s" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # import-discord into its own input, or from a file that is not an export: the files stay as they were.
    export = tmp_path / "export.csv"
    export.write_text("Date_original,Content\n", encoding="utf-8")
    r = sentinel(["import-discord", str(export), "--out", str(export)], lexicon)
    assert r.returncode == 2 and "is the input file" in r.stderr and export.read_text() == "Date_original,Content\n", r.stderr
    kept = tmp_path / "kept.jsonl"
    kept.write_text("earlier output\n")
    r = sentinel(["import-discord", str(export), "--out", str(kept)], lexicon)
    assert r.returncode == 2 and kept.read_text() == "earlier output\n", r.stderr
    # A broker that is not there: one line, and the earlier recording is kept.
    r = sentinel(["record", "--topic", "post-sentiment", "--out", str(kept)], {**lexicon, "KAFKA_BROKER": "127.0.0.1:9"})
    assert r.returncode == 2 and "error: Kafka: KafkaConnectionError" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert kept.read_text() == "earlier output\n" and [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    r = sentinel(["replay", os.devnull], {**lexicon, "KAFKA_BROKER": "127.0.0.1:9"})
    assert r.returncode == 2 and "error: Kafka:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = sentinel(["replay", os.devnull], {**lexicon, "KAFKA_BROKER": "kafka-0:9092,127.0.0.1:abc"})
    assert r.returncode == 2 and "KAFKA_BROKER: a comma-separated list of host:port" in r.stderr and "abc" not in r.stderr, r.stderr
    r = sentinel(["model", "prepare"], {"SENTINEL_BASE": "smollm2", "SENTINEL_CACHE_DIR": "/proc/sentinel-cache"})
    assert r.returncode == 2 and "SENTINEL_CACHE_DIR: cannot create it" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # A run that fails before any worker writes leaves no empty worker log behind, nor names one.
    temp = tmp_path / "temp"
    temp.mkdir()
    r = sentinel(["run", os.devnull], {**lexicon, "KAFKA_BROKER": "127.0.0.1:9", "TMPDIR": str(temp)})
    assert r.returncode == 2 and "configure both" in r.stderr and "worker log" not in r.stderr and list(temp.iterdir()) == [], r.stderr
    # Output paths are checked before the run, not after it.
    r = sentinel(["run", os.devnull, "--alerts-out", str(tmp_path / "no" / "alerts.jsonl")], lexicon)
    assert r.returncode == 2 and f"{tmp_path / 'no'} does not exist" in r.stderr, r.stderr
    (tmp_path / "file").write_text("")
    r = sentinel(["run", os.devnull, "--alerts-out", str(tmp_path / "file" / "alerts.jsonl")], lexicon)
    assert r.returncode == 2 and f"{tmp_path / 'file'} is not a directory" in r.stderr, r.stderr
    # record's too: it was checked only after reading the whole topic (here the dead broker would say first).
    r = sentinel(["record", "--topic", "forum-posts", "--out", str(tmp_path / "no" / "r.jsonl")], {"KAFKA_BROKER": "127.0.0.1:9"})
    assert r.returncode == 2 and f"cannot write {tmp_path / 'no' / 'r.jsonl'}" in r.stderr and "Kafka" not in r.stderr, r.stderr
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\n$BTC up,positive\n", encoding="utf-8")
    r = sentinel(["eval", "--data", str(labelled), "--holdout", "0"], lexicon)
    assert r.returncode == 2 and "--holdout: a fraction between 0 and 1" in r.stderr, r.stderr
    r = sentinel(["eval", "--data", str(labelled), "--predictions", str(tmp_path / "no" / "p.jsonl")], lexicon)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr, r.stderr
    shipped = str(Path(__file__).resolve().parents[1] / "model" / "adapters" / "default")
    r = sentinel(["soup", shipped, shipped, "--out", str(kept)], lexicon)
    assert r.returncode == 2 and "a file, not a directory" in r.stderr and kept.read_text() == "earlier output\n", r.stderr
    (tmp_path / "empty-model").mkdir()
    r = sentinel(["classify", "--base", str(tmp_path / "empty-model"), "$BTC up"], {})
    assert r.returncode == 2 and "cannot load base model" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    # train: too little data, or a warm start that is not there, before the model loads and OUT is made.
    r = sentinel(["train", "--data", str(labelled), "--out", str(tmp_path / "adapter")], lexicon)
    assert r.returncode == 2 and "0 validation examples" in r.stderr and not (tmp_path / "adapter").exists(), r.stderr
    labelled.write_text("text,label\n" + "".join(f"post {i},{('positive', 'negative', 'neutral')[i % 3]}\n" for i in range(60)), encoding="utf-8")
    (tmp_path / "not-an-adapter").mkdir()  # (one that is not there at all: test_an_adapter_path_that_is_not_there_...)
    r = sentinel(["train", "--data", str(labelled), "--out", str(tmp_path / "adapter"), "--init-adapter", str(tmp_path / "not-an-adapter")], lexicon)
    assert r.returncode == 2 and "not a saved LoRA adapter" in r.stderr and not (tmp_path / "adapter").exists(), r.stderr
    r = sentinel(["train", "--data", str(labelled), "--out", str(tmp_path / "adapter"), "--target-modules", ","], lexicon)
    assert r.returncode == 2 and "--target-modules: name at least one module" in r.stderr and not (tmp_path / "adapter").exists(), r.stderr
    r = sentinel(["silence", "asset:ETH", "--for", "3000000d"], {**lexicon, "REDIS_URL": "redis://127.0.0.1:9/0"})
    assert r.returncode == 2 and "--for: more than zero and at most 30d" in r.stderr, r.stderr


def test_classify_names_a_stdin_line_that_is_not_utf8(tiny_env):
    """stdin comes with an undecodable byte as a surrogate escape: the tokenizer raised on it."""
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "classify", "--json"], input=b"btc up\nbtc \xff up\n",
                       capture_output=True, env={**os.environ, **tiny_env}, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.decode().strip() == "error: text 2 is not UTF-8 text"


def test_run_on_a_recording_keeps_its_partition_count(tmp_path, capsys):
    # A recording keeps each partition's order only on as many partitions as it names: on the
    # embedded stack `sentinel run` takes its count; a SENTINEL_PARTITIONS set otherwise is warned about.
    from sentinel.cli import recording_partitions
    from stream.settings import Settings

    lines = [{"topic": "forum-posts", "partition": p, "offset": 0, "timestamp": 0, "key": f"k{p}", "value": "{}"} for p in (0, 7, 3)]
    recording = tmp_path / "rec.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert recording_partitions(Settings(), recording).partitions == 8
    chosen = Settings(partitions=4)
    assert recording_partitions(chosen, recording).partitions == 4
    assert "recorded from 8 partitions but SENTINEL_PARTITIONS is 4: per-partition order is not kept" in capsys.readouterr().err
    posts = tmp_path / "posts.jsonl"
    posts.write_text(json.dumps({"id": "a", "text": "x", "created_at": "2026-03-01T00:00:00Z"}) + "\n")
    assert recording_partitions(Settings(), posts).partitions == Settings().partitions  # posts name no partition


def test_run_on_a_recording_of_more_partitions_than_set_warns_once(tmp_path):
    """SENTINEL_PARTITIONS=2 on a 4-partition recording: the start-up's warning and the replay's
    said the same thing twice; now the start-up's alone, and every post is still processed."""
    recording = tmp_path / "rec4.jsonl"
    posts = [{"id": f"p{i}", "text": "$BTC up big" if i % 2 else "$ETH crash", "created_at": f"2026-01-01T00:{i:02d}:00Z"} for i in range(8)]
    recording.write_text("".join(json.dumps({"topic": "forum-posts", "partition": i % 4, "offset": i // 4, "timestamp": 1_767_225_600_000 + i * 60_000,
                                             "key": f"k{i}", "value": json.dumps(post)}) + "\n" for i, post in enumerate(posts)))
    summary = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BROKER", "REDIS_URL")}
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(recording), "--summary-json", str(summary)],
                       env={**env, "SENTINEL_BASE": "lexicon", "SENTINEL_PARTITIONS": "2"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(summary.read_text())["processed"] == 8
    assert r.stderr.count("per-partition order is not kept") == 1, r.stderr
    assert "recorded from 4 partitions but SENTINEL_PARTITIONS is 2" in r.stderr, r.stderr


def test_run_on_a_recording_naming_a_huge_partition_keeps_the_default_count(tmp_path, capsys):
    # One corrupt record line (partition 2**31 - 2) must not make the embedded stack create 2**31 partitions.
    from sentinel.cli import MAX_CREATED_PARTITIONS, recording_partitions
    from stream.settings import Settings

    lines = [{"topic": "forum-posts", "partition": p, "offset": 0, "timestamp": 0, "key": f"k{p}", "value": "{}"}
             for p in (0, 2**31 - 2, MAX_CREATED_PARTITIONS - 1)]
    recording = tmp_path / "rec.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert recording_partitions(Settings(), recording).partitions == Settings().partitions
    assert "names partition 2,147,483,646: the embedded stack creates at most 1,024" in capsys.readouterr().err
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines[::2]))
    assert recording_partitions(Settings(), recording).partitions == MAX_CREATED_PARTITIONS  # at the limit: taken


def unreachable_env() -> dict[str, str]:
    """The environment of a command whose broker and Redis are closed ports on this host: refused at once."""
    from stream.tools.services import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_") and k not in ("KAFKA_BROKER", "REDIS_URL")}
    return {**env, "SENTINEL_BASE": "lexicon", "KAFKA_BROKER": f"127.0.0.1:{free_port()}", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "SENTINEL_WEB_HOST": "127.0.0.1", "SENTINEL_WEB_PORT": str(free_port())}  # not 6066: a worker here may hold it


def test_a_worker_that_cannot_reach_kafka_at_start_up_says_so_in_one_line_and_exits_1():
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "worker"], capture_output=True, text=True, env=unreachable_env(), timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
    # Ours alone: aiokafka's own "Unable connect to" is held back and given as its detail.
    assert len(errors) == 1 and "sentinel.worker: cannot reach Kafka at start-up" in errors[0], r.stderr
    assert "detail=" in errors[0] and "Unable connect to" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "Unclosed" not in r.stderr, r.stderr


def test_a_worker_whose_web_port_is_taken_says_so_in_one_line_and_exits_2():
    """It printed Faust's traceback and exited 1 (after loading the model). The port is held by a
    real listening socket; the check comes before Kafka, so the closed broker port is never tried."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**unreachable_env(), "SENTINEL_WEB_PORT": str(port)}
        r = subprocess.run([sys.executable, "-m", "sentinel.cli", "worker"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: SENTINEL_WEB_PORT={port}: cannot listen on 127.0.0.1:{port}") and "another process" in line, r.stderr
    assert "Kafka" not in r.stderr and "Traceback" not in r.stderr


def test_the_worker_holds_its_web_port_from_the_check_until_faust_serves_on_it(tmp_path):
    """The check bound and closed a socket, and Faust bound the port again after Kafka and the
    model: a process taking the port in between got Faust's traceback, exit 1. The check's sockets
    are held, listening, and Faust's web server serves on them."""
    import errno
    import socket

    from stream.tools.services import free_port, listening_sockets

    port = free_port()
    listeners = listening_sockets("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:  # another server, as aiohttp's binds
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
            other.listen()
    assert taken.value.errno == errno.EADDRINUSE

    assert faust_answers(tmp_path, "127.0.0.1", port, listeners, f"http://127.0.0.1:{port}/nothing-here") == 404  # aiohttp's: the held socket is the one served
    assert all(sock.fileno() == -1 for sock in listeners)  # and the server closed it on stop


def faust_answers(tmp_path: Path, host: str, port: int, listeners: list, url: str) -> int:
    """The status a worker's Faust web server, serving on `listeners` as SENTINEL_WEB_HOST=`host`, answers `url` with."""
    import asyncio
    import urllib.error
    import urllib.request

    from stream.settings import Settings
    from stream.worker import faust_app

    def get() -> int:
        try:
            return urllib.request.urlopen(url, timeout=10).status
        except urllib.error.HTTPError as answer:
            return answer.code

    async def served() -> int:
        app = faust_app(Settings(kafka_broker="127.0.0.1:9", cache_dir=tmp_path, web_host=host, web_port=port), listeners)
        await app.web.start_server()
        try:
            return await asyncio.to_thread(get)
        finally:
            await app.web.stop_server()

    return asyncio.run(served())


@pytest.mark.parametrize("host", ["::1", "::"])
def test_a_worker_serves_on_an_ipv6_web_host(tmp_path, host):
    """SENTINEL_WEB_HOST=:: (or ::1) ended the worker at its start, exit 1: Faust builds its
    canonical URL as http://{web_host}:{web_port}, and http://:::6066 is not a URL. The
    healthcheck and sentinel run's start watch already bracket an IPv6 address."""
    import socket

    from stream.tools.services import free_port, listening_sockets

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    port = free_port()
    listeners = listening_sockets(host, port)

    assert faust_answers(tmp_path, host, port, listeners, f"http://[::1]:{port}/nothing-here") == 404


def test_an_address_the_host_names_twice_is_held_once(monkeypatch):
    """Now that the check's sockets stay open, an address getaddrinfo gives twice (a name listed
    twice in /etc/hosts) found the port taken by the first: held once, as asyncio's server does."""
    import socket

    from stream.tools.services import free_port, listening_sockets

    port = free_port()
    twice = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))] * 2
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: twice)
    (held,) = listening_sockets("twice.example", port)
    held.close()


def test_a_replay_that_cannot_reach_kafka_closes_its_consumer(tmp_path):
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "1", "text": "btc up"}\n')
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "replay", str(posts)], capture_output=True, text=True,
                       env=unreachable_env(), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    ours = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and ours[0].startswith("error: Kafka: KafkaConnectionError"), r.stderr
    assert "Unclosed" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert " ERROR " not in r.stderr, r.stderr  # aiokafka's own "Unable connect to" held back: our line alone


def test_a_run_on_a_configured_broker_that_is_down_says_so_in_one_line(tmp_path):
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "1", "text": "btc up"}\n')
    temp = tmp_path / "temp"
    temp.mkdir()
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(posts)], capture_output=True, text=True,
                       env={**unreachable_env(), "TMPDIR": str(temp)}, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: Kafka: KafkaConnectionError: Unable to bootstrap") and r.stderr.count("\n") == 1, r.stderr
    assert list(temp.iterdir()) == []  # no empty sentinel-worker-*.log left: no worker wrote one


def test_train_help_says_what_the_smoke_test_options_do():
    """README's smoke test, `sentinel train --max-steps 1 --eval-limit 4`: both options had no help."""
    from typer.testing import CliRunner

    from sentinel.cli import app

    shown = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output.split())
    assert "stop after N optimizer steps" in shown and "validate on the first N validation rows only" in shown, shown


def test_a_record_that_cannot_reach_kafka_says_so_in_one_line(tmp_path):
    """aiokafka's own "Unable connect to" ERROR came first, and our line named the error's class twice."""
    out = tmp_path / "r.jsonl"
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "record", "--topic", "forum-posts", "--out", str(out)],
                       capture_output=True, text=True, env=unreachable_env(), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: Kafka: KafkaConnectionError: Unable to bootstrap") and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.count("KafkaConnectionError") == 1 and not out.exists(), r.stderr


def test_aiokafka_lines_are_held_only_inside_a_probe(caplog):
    import logging

    from stream.kafka import held_logs, held_messages, release_logs

    aiokafka = logging.getLogger("aiokafka.client")
    with caplog.at_level(logging.WARNING), held_logs("aiokafka") as held:
        aiokafka.error("Unable connect to %s", "a:1")
        aiokafka.error("Unable connect to %s", "a:1")
    assert not caplog.records and held_messages(held) == "Unable connect to a:1"
    release_logs(held[:1])  # a probe that passed writes what it held, as it would have been
    with caplog.at_level(logging.WARNING):
        aiokafka.error("a running worker's line")
    assert [record.getMessage() for record in caplog.records] == ["Unable connect to a:1", "a running worker's line"]


def test_sentinel_incidents_says_when_a_resolved_incidents_root_resolved_and_when_it_was_declared_over():
    """The list said neither, where the resolution and the console page say "root resolved T1;
    declared over T2" (a tail clearing puts a group interval or more between them): both layouts
    say it now; an open one says nothing of it, and a summary from before session 48 the declaration."""
    from rich.console import Console as Rich

    from sentinel.cli import incidents_table

    t = 1772625600  # 2026-03-04T12:00:00Z
    member = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": False, "severity": "critical", "onset": "2026-03-04T12:00:00Z"}
    base = {"root_scope": "asset:ETH", "opened": t, "market": False, "severity": "critical", "acked": None, "members": [member]}
    found = [{**base, "incident_id": "over1", "state": "resolved", "at": t + 1320, "root_resolved": t + 420},
             {**base, "incident_id": "older1", "state": "resolved", "at": t + 1320},
             {**base, "incident_id": "open1", "state": "open", "at": t + 600}]
    for width in (200, 80):
        cli = Rich(width=width, record=True)
        cli.print(incidents_table(found, width))
        lines = cli.export_text().splitlines()
        if width >= 160:  # the ended column alone, its lines in order (a time has a line of its own)
            at = [cell.strip() for cell in next(line for line in lines if "┃ ended" in line).split("┃")].index("ended")
            lines = [line.replace("┃", "│").split("│")[at] for line in lines if line.count("│") > at]
        said = " ".join(re.sub("[│┃]", " ", "\n".join(lines)).split())  # a line folded in its cell reads on
        assert said.count("root resolved 2026-03-04T12:07:00Z; declared over 2026-03-04T12:22:00Z") == 1, (width, said)
        assert said.count("declared over 2026-03-04T12:22:00Z") == 2 and "12:10:00" not in said, (width, said)


def incidents_found(usual: bool) -> list[dict]:
    """Two incidents, one resolved, acknowledged and given a verdict. Usual: the demo's incident's
    root and related scopes (`make demo`) and the default acknowledgement. Long: a 31-character
    member scope and a reason with a timestamp in it."""
    t = 1772625600  # 2026-03-04T12:00:00Z
    scopes = (("channel:announcements", "channel:general", "channel:trading", "source:discord", "all") if usual
              else ("channel:reddit/r/CryptoCurrency", "source:discord"))
    members = [{"scope": scope, "kind": kind, "firing": False, "severity": "warning", "onset": "2026-03-04T12:00:00Z"}
               for scope, kind in (("asset:ETH", "sentiment_drop"), ("asset:ETH", "volume_spike"), *((scope, "sentiment_drop") for scope in scopes))]
    base = {"root_scope": "asset:ETH", "opened": t, "market": not usual, "severity": "critical", "members": members,
            "acked": "acknowledged" if usual else "alice (cli) 2026-03-04T12:10:00Z: looking", "verdict": {"verdict": "false-alarm"}}
    return [{**base, "incident_id": "3f9a0c1d2e4b5a6978ab", "state": "resolved", "at": t + 1320, "root_resolved": t + 420},
            {**base, "incident_id": "9a0c1d2e4b5a6978ab3f", "state": "open", "at": t + 600, "acked": None, "verdict": None}]


@pytest.mark.parametrize("usual", [True, False], ids=["usual", "long"])
def test_sentinel_incidents_splits_no_header_or_word_at_160_179_or_200_columns(usual):
    """From 160 columns each field had a column; ten of them on 160-179 folded a header
    ("acknowledge" over "d") and cells ("sentiment_d" / "rop,", "channel:red" / "dit/r/Crypt"),
    and (b60ccd3) the opened time ("2026-03-04T12:0" / "0:00Z"). The wide table now comes only
    where every column's longest word fits whole, and the fields one a line beside the id
    otherwise: every word shown is a whole header or field word, and every one is shown."""
    from rich.console import Console as Rich

    from sentinel.cli import INCIDENTS_COLUMNS, _incident_lines, _incident_row, incidents_table

    found = incidents_found(usual)
    wide_words = {w for row in (INCIDENTS_COLUMNS, *map(_incident_row, found)) for cell in row for w in cell.split()}
    narrow_words = {w for item in found for line in ["id", "incident", item["incident_id"], *_incident_lines(item)] for w in line.split()}
    layouts = {}
    for width in (160, 179, 200):
        cli = Rich(width=width, record=True)
        cli.print(incidents_table(found, width))
        lines = cli.export_text().splitlines()
        assert max(map(len, lines)) <= width and lines[0].split() == ["incidents"], (width, lines)
        shown = {w for line in lines[1:] for cell in re.split("[│┃]", line) for w in cell.split() if not set(w) <= set("━┏┓┳┡┩╇└┘┴─")}
        layouts[width] = "wide" if "severity" in shown else "narrow"
        expected = wide_words if layouts[width] == "wide" else narrow_words
        assert shown == expected, (width, sorted(shown - expected), sorted(expected - shown), "\n".join(lines))
    # The demo's incident has its columns from 179 on (177 fits it); the long ones from 200.
    assert layouts == ({160: "narrow", 179: "wide", 200: "wide"} if usual else {160: "narrow", 179: "narrow", 200: "wide"})


@pytest.mark.parametrize("usual", [True, False], ids=["usual", "long"])
def test_sentinel_incidents_keeps_every_field_on_24_40_and_80_columns(usual):
    """Narrow, the fields went one a line beside the id (20 characters): on 40 columns that left 13
    beside it and every time folded ("2026-03-04T12" / ":00:00Z"); on 24 rich left the fields'
    column out, only the ids shown. Every field is shown on any width, each id whole on a line of
    its own, and every word whole wherever the longest fits (40 and 80 here)."""
    from rich.console import Console as Rich

    from sentinel.cli import _incident_lines, incidents_table

    found = incidents_found(usual)
    texts = [[item["incident_id"], *_incident_lines(item)] for item in found]
    for width in (24, 40, 80):
        cli = Rich(width=width, record=True)
        cli.print(incidents_table(found, width))
        lines = cli.export_text().splitlines()
        assert max(map(len, lines)) <= width, (width, "\n".join(lines))
        cells = [cell.strip() for line in lines[1:] for cell in re.split("[│┃]", line)[1:-1]]
        cells = [c for c in cells if c and c not in ("id", "incident")]
        assert all(item["incident_id"] in cells for item in found), (width, "\n".join(lines))
        said = "".join("".join(c.split()) for c in cells)
        assert said == "".join("".join(line.split()) for text in texts for line in text), (width, "\n".join(lines))
        if width >= 40:
            words = {w for text in texts for line in text for w in line.split()}
            assert {w for c in cells for w in c.split()} == words, (width, "\n".join(lines))


def test_fitted_widths_give_each_column_its_longest_word_then_share_the_rest_max_min_fair():
    from sentinel.cli import fitted_widths

    rows = [("id", "text", "note"), ("a1", "one two three four", "ok")]
    assert fitted_widths(rows, 3 * 3 + 1 + 2 + 5 + 4 - 1) is None  # one short of the longest words (2, 5, 4)
    assert fitted_widths(rows, 3 * 3 + 1 + 2 + 5 + 4) == [2, 5, 4]
    assert fitted_widths(rows, 3 * 3 + 1 + 30) == [2, 18, 4]  # the long line whole, the rest unused
    assert fitted_widths(rows, 3 * 3 + 1 + 14) == [2, 8, 4]


def test_a_command_without_its_broker_or_redis_says_what_the_url_is_for(tmp_path):
    """A newcomer following the README's `sentinel replay posts.jsonl` on a machine with no broker got
    only "replay needs KAFKA_BROKER", with no word that `sentinel run FILE` brings a broker of its own."""
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "1", "text": "BTC up", "created_at": "2026-03-04T12:00:00Z"}\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not re.match(r"(?i)(sentinel_)?(kafka|redis)_", k)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], capture_output=True, text=True, env=env, timeout=120)

    replay = run("replay", str(posts), "--speed", "60")
    assert replay.returncode == 2 and "needs KAFKA_BROKER" in replay.stderr and "`sentinel run FILE`" in replay.stderr, replay.stderr
    record = run("record", "--topic", "post-sentiment", "--out", str(tmp_path / "out.jsonl"))
    assert record.returncode == 2 and "needs KAFKA_BROKER (the broker whose topic it reads)" in record.stderr, record.stderr
    windows = run("windows", "--scope", "asset:eth")
    assert windows.returncode == 2 and "needs REDIS_URL (the Redis the workers use)" in windows.stderr, windows.stderr

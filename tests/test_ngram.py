"""The n-gram head and its fusion (SENTINEL_NGRAM_HEAD): features, the pool, the head's files, the
scorer that wraps another, training and the weight rule, and the CLI with the keyword base."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from model.fusion import FusedScorer, fuse
from model.labels import LABELS
from model.lexicon import LexiconClassifier
from model.ngram import BUCKETS, CARD_FILE, PACKAGED_HEAD_DIR, WEIGHTS_FILE, HeadError, NgramHead, features, head_dir

ROOT = Path(__file__).resolve().parents[1]


def sentinel(args: list[str], env_extra: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update({"SENTINEL_BASE": "lexicon", **env_extra})
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def toy_head(w: float = 1.0, buckets: int = 64) -> NgramHead:
    rng = np.random.default_rng(0)
    return NgramHead(weights=rng.normal(size=(buckets, 3)).astype(np.float32), bias=np.array([0.1, -0.2, 0.3], dtype=np.float32),
                     card={"fusion": {"w": w}, "buckets": buckets})


def test_features_are_pinned():
    """crc32 of the n-grams: the ids the shipped head was trained on, in every process. A change to
    the tokeniser, the grams or the hash breaks every shipped head and the bench's figures."""
    ids = features("BTC to the moon")
    assert len(ids) == 46
    assert ids[:6] == [8833, 11117, 12027, 13874, 17030, 17073]
    assert ids[-3:] == [234447, 255108, 257046]
    assert features("") == [0] and features("   ") == [0]
    assert max(features("x" * 50)) < BUCKETS


def test_the_word_cache_changes_no_id_and_holds_short_words_only():
    """features() hashes a word's grams once (an LRU cache): the ids must be what hashing them each
    time gives, and a long token (four ids a character) must not be kept, or posts of unique long
    tokens would fill the worker's memory."""
    from model import ngram

    long_word = "0x" + "ab" * 30
    text = f"wen moon {long_word} wen lambo"
    ngram._word_ids.cache_clear()
    words = ["wen", "moon", long_word, "wen", "lambo"]
    hashed = {i for w in words for i in ngram._word_grams(w, BUCKETS)}
    hashed |= {zlib.crc32(f"b:{a} {b}".encode()) % BUCKETS for a, b in zip(words, words[1:])}
    first = features(text)
    assert first == sorted(hashed)
    assert ngram._word_ids.cache_info().currsize == 3  # wen, moon, lambo: not the 62-character token
    assert features(text) == first
    ngram._word_ids.cache_clear()
    assert features(text) == first


def test_the_word_cache_is_bounded_in_memory():
    """Posts of unique words (a raid of random tokens) fill the cache: it holds at most maxsize words,
    and each as 4-byte ids. As tuples of int objects 2,048 words of 32 characters took 10.5 MB."""
    import random
    import string
    import tracemalloc

    from model import ngram

    assert ngram._word_ids.cache_info().maxsize == 8192
    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(ngram.CACHED_WORD_CHARS)) for _ in range(2048)]
    ngram._word_ids.cache_clear()
    tracemalloc.start()
    try:
        for word in words:
            features(word)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert ngram._word_ids.cache_info().currsize == 2048
    assert held < 4 * 2**20, held


def test_a_batch_of_long_posts_is_gathered_in_chunks():
    """The head gathers a run of posts' ids at once: bounded (CHUNK_IDS), or a batch of posts at the
    10,000-character cap held every id as a Python int and its weight row together (82 MB for 64 posts)."""
    import random
    import string
    import tracemalloc

    head = NgramHead.load(PACKAGED_HEAD_DIR)
    rng = random.Random(1)
    posts = [" ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(1700))[:10_000]
             for _ in range(32)]
    tracemalloc.start()
    try:
        logits = head.logits(posts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20, peak
    assert (logits[5] == head.logits(posts[5:6])[0]).all()


def test_a_texts_logits_do_not_depend_on_its_batch():
    """The head sums each text's rows in one segment sum over the batch: a post's probabilities must
    be the same alone or beside others (the model's are not, in bf16: docs/benchmarks.md)."""
    head = NgramHead.load(PACKAGED_HEAD_DIR)
    texts = ["BTC to the moon", "", "dump it all, rug", "gm po", "x" * 300]
    together = head.logits(texts)
    for row, text in zip(together, texts):
        assert (head.logits([text])[0] == row).all()
    assert (head.logits(texts[::-1])[::-1] == together).all()
    assert head.logits([]).shape == (0, len(LABELS))


def test_fuse_at_zero_is_the_model_and_rows_sum_to_one():
    rng = np.random.default_rng(1)
    p_model, p_head = rng.dirichlet([1, 1, 1], 20), rng.dirichlet([1, 1, 1], 20)
    np.testing.assert_allclose(fuse(p_model, p_head, 0.0), p_model, rtol=1e-12)
    fused = fuse(p_model, p_head, 0.75)
    np.testing.assert_allclose(fused.sum(1), 1.0, rtol=1e-12)
    assert not np.allclose(fused, p_model)
    # a zero probability is clipped, not -inf: the row stays a distribution
    zero = fuse(np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]), 1.0)
    assert np.isfinite(zero).all() and zero.sum() == pytest.approx(1.0)


def test_head_probs_are_the_normalised_bag(tmp_path):
    head = toy_head()
    ids = features("eth pump", head.buckets)
    want = head.weights[ids].sum(0) / np.sqrt(len(ids)) + head.bias
    want = np.exp(want - want.max()) / np.exp(want - want.max()).sum()
    np.testing.assert_allclose(head.probs(["eth pump"])[0], want, rtol=1e-5)
    assert head.probs(["a", "b c"]).sum(1) == pytest.approx([1.0, 1.0])


def test_save_load_round_trips_exactly(tmp_path):
    head = toy_head(w=0.75)
    head.save(tmp_path / "h")
    back = NgramHead.load(tmp_path / "h")
    assert np.array_equal(back.weights, head.weights) and np.array_equal(back.bias, head.bias)
    assert back.card == head.card and back.w == 0.75
    texts = ["BTC to the moon", "sell everything"]
    assert np.array_equal(back.probs(texts), head.probs(texts))


def test_a_head_too_large_for_float32_is_written_in_float16(tmp_path):
    """The shipped head's size: 2^18 buckets of weights, float32 over 2 MB compressed, so float16."""
    rng = np.random.default_rng(2)
    head = NgramHead(weights=rng.normal(size=(BUCKETS, 3)).astype(np.float32), bias=np.zeros(3, dtype=np.float32), card={"fusion": {"w": 1.0}})
    head.save(tmp_path)
    back = NgramHead.load(tmp_path)
    assert back.card["weights_dtype"] == "float16" and back.weights.dtype == np.float32
    np.testing.assert_allclose(back.weights, head.weights, rtol=1e-3, atol=1e-3)
    assert (tmp_path / WEIGHTS_FILE).stat().st_size < 2_000_000


def test_resaving_the_shipped_head_keeps_it_float16(tmp_path):
    """Loaded, a float16 head's weights are float32 holding float16 values, which compress under
    HALF_OVER: save's default must go by the card's weights_dtype, not the size, or a re-saved head
    doubles on disk."""
    head = NgramHead.load(PACKAGED_HEAD_DIR)
    assert head.card["weights_dtype"] == "float16"
    head.save(tmp_path)
    with np.load(tmp_path / WEIGHTS_FILE) as data:
        assert data["weights"].dtype == np.float16
    assert json.loads((tmp_path / CARD_FILE).read_text())["weights_dtype"] == "float16"
    texts = ["BTC to the moon", "sell everything", "the meeting is at noon"]
    assert np.array_equal(NgramHead.load(tmp_path).probs(texts), head.probs(texts))


@pytest.mark.parametrize("damage, named", [
    (lambda d: (d / WEIGHTS_FILE).write_bytes(b"not a zip"), WEIGHTS_FILE),
    (lambda d: (d / WEIGHTS_FILE).unlink(), WEIGHTS_FILE),
    (lambda d: (d / CARD_FILE).write_text("{"), CARD_FILE),
    (lambda d: (d / CARD_FILE).write_text('{"fusion": {}}'), CARD_FILE),
    (lambda d: (d / CARD_FILE).write_text('{"fusion": {"w": 1}, "buckets": 65}'), WEIGHTS_FILE),
    (lambda d: np.savez_compressed(d / WEIGHTS_FILE, weights=np.zeros((64, 3)), bias=np.zeros(3), labels=np.array(["a", "b", "c"])), WEIGHTS_FILE),
    (lambda d: np.savez_compressed(d / WEIGHTS_FILE, weights=np.zeros((64, 2)), bias=np.zeros(3), labels=np.array(LABELS)), WEIGHTS_FILE),
    (lambda d: np.savez_compressed(d / WEIGHTS_FILE, weights=np.zeros((64, 3)), bias=np.array(["a", "b", "c"]), labels=np.array(LABELS)), WEIGHTS_FILE),
    (lambda d: (d / CARD_FILE).write_text("[" * 200_000), CARD_FILE),  # too deep for the JSON parser
])
def test_a_damaged_head_is_an_error_naming_the_file(tmp_path, damage, named):
    toy_head().save(tmp_path)
    damage(tmp_path)
    with pytest.raises(HeadError, match=named) as caught:
        NgramHead.load(tmp_path)
    assert caught.value.name == named


def test_fused_scorer_over_the_lexicon():
    lexicon = LexiconClassifier()
    head = toy_head(w=0.5)
    fused = FusedScorer(lexicon, head)
    texts = ["BTC to the moon", "eth dump incoming", "the meeting is at noon"]
    judged = fused.classify(texts)
    p_model = np.array([[j.probs[c] for c in LABELS] for j in lexicon.classify(texts)])
    want = fuse(p_model, head.probs(texts), 0.5)
    for j, row in zip(judged, want):
        assert [j.probs[c] for c in LABELS] == pytest.approx(list(row))
        assert j.label == LABELS[int(np.argmax(row))] and j.score == pytest.approx(row[0] - row[1])
    assert fused.info.id == "lexicon+ngram"
    for off, alone in zip(FusedScorer(lexicon, head, w=0.0).classify(texts), lexicon.classify(texts)):
        assert off.probs == pytest.approx(alone.probs) and off.label == alone.label


def test_the_model_id_tells_heads_apart_by_content_and_keeps_the_packaged_head_plain(tmp_path):
    """The packaged head (auto, default) is `+ngram`, as stored results and the docs say; a head from
    any other directory is `+ngram-` and 8 hex of its weights file's sha256: two heads' records,
    reports and metric labels differ, the same head's agree wherever it lies, and no path shows."""
    from sentinel.cli import with_ngram_head
    from stream.settings import Settings

    lexicon = LexiconClassifier()
    assert with_ngram_head(lexicon, Settings(ngram_head="default")).info.id == "lexicon+ngram"
    assert FusedScorer(lexicon, NgramHead.load(PACKAGED_HEAD_DIR)).info.id == "lexicon+ngram"
    shutil.copytree(PACKAGED_HEAD_DIR, tmp_path / "copy")
    toy_head().save(tmp_path / "toy")
    ids = {}
    for name in ("copy", "toy"):
        digest = hashlib.sha256((tmp_path / name / WEIGHTS_FILE).read_bytes()).hexdigest()
        ids[name] = with_ngram_head(lexicon, Settings(ngram_head=str(tmp_path / name))).info.id
        assert ids[name] == f"lexicon+ngram-{digest[:8]}" and str(tmp_path) not in ids[name]
    assert ids["copy"] != ids["toy"]
    # Hashed once, at load: scoring never reads the file again.
    fused = FusedScorer(lexicon, NgramHead.load(tmp_path / "toy"))
    (tmp_path / "toy" / WEIGHTS_FILE).unlink()
    assert fused.classify(["BTC to the moon"])[0].label in LABELS and fused.info.id == ids["toy"]


def test_pooling_the_head_is_logged_with_the_fused_id_and_never_the_path(tmp_path, caplog):
    """"model loaded" names the model before the head is pooled: one INFO line says the head is on,
    with the id every result carries, the head's tag and its w. A head from a directory is named by
    its tag (its weights' hash), never the directory: a setting's value is not logged."""
    import logging

    from sentinel.cli import with_ngram_head
    from stream.settings import Settings

    def pooled(setting: str) -> list[logging.LogRecord]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sentinel.model"):
            fused = with_ngram_head(LexiconClassifier(), Settings(ngram_head=setting))
        found = [r for r in caplog.records if r.getMessage() == "n-gram head pooled"]
        assert len(found) == 1 and found[0].levelno == logging.INFO
        assert found[0].model == fused.info.id and found[0].w == fused.w
        return found

    shipped = pooled("default")[0]
    assert (shipped.model, shipped.head, shipped.w) == ("lexicon+ngram", "ngram", NgramHead.load(PACKAGED_HEAD_DIR).w)
    toy_head(w=0.5).save(tmp_path / "toy")
    toy = pooled(str(tmp_path / "toy"))[0]
    digest = hashlib.sha256((tmp_path / "toy" / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert (toy.model, toy.head, toy.w) == (f"lexicon+ngram-{digest[:8]}", f"ngram-{digest[:8]}", 0.5)
    assert all(str(tmp_path) not in f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    # The model alone (none, and auto with a model the head was not chosen with): no such line.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sentinel.model"):
        with_ngram_head(LexiconClassifier(), Settings(ngram_head="none"))
        with_ngram_head(LexiconClassifier(), Settings())
    assert not [r for r in caplog.records if r.getMessage() == "n-gram head pooled"]


def test_the_cli_says_the_head_is_on(tmp_path):
    done = sentinel(["classify", "--json", "BTC to the moon"], {"SENTINEL_NGRAM_HEAD": "default"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "n-gram head pooled model=lexicon+ngram head=ngram w=" in done.stderr
    assert "n-gram head pooled" not in sentinel(["classify", "--json", "BTC to the moon"], {"SENTINEL_NGRAM_HEAD": "none"}, cwd=tmp_path).stderr


def test_train_head_separates_two_obvious_classes():
    from training.ngram import train_head

    texts = [f"moon rally {i}" for i in range(30)] + [f"crash dump {i}" for i in range(30)] + [f"the meeting {i}" for i in range(30)]
    labels = ["positive"] * 30 + ["negative"] * 30 + ["neutral"] * 30
    head = train_head(texts, labels, seed=1, buckets=1 << 12)
    pred = [LABELS[i] for i in head.probs(["big moon rally today", "total crash and dump", "the meeting room"]).argmax(1)]
    assert pred == ["positive", "negative", "neutral"]


def test_choose_weight_picks_zero_when_the_head_only_hurts():
    from training.ngram import choose_weight, sweep_weights

    labels = ["positive"] * 4 + ["negative"] * 4 + ["neutral"] * 12
    sources = ["discord"] * 16 + ["tfns"] * 4
    right = np.array([[0.9, 0.05, 0.05]] * 4 + [[0.05, 0.9, 0.05]] * 4 + [[0.05, 0.05, 0.9]] * 12)
    wrong = right[:, [2, 0, 1]]  # the head says neutral for every non-neutral one and the opposite for neutral ones
    sweep = sweep_weights(right, wrong, labels, sources)
    assert choose_weight(sweep) == 0.0
    helpful = sweep_weights(np.full_like(right, 1 / 3), right, labels, sources)
    assert choose_weight(helpful) > 0  # the rule can pick a w: it is not stuck at 0


def test_choose_weight_keeps_tfns_within_the_guard():
    from training.ngram import choose_weight

    sweep = [{"w": 0.0, "found_at_6": 1, "f1_macro": 0.5, "tfns_f1_weighted": 0.90},
             {"w": 0.5, "found_at_6": 3, "f1_macro": 0.6, "tfns_f1_weighted": 0.895},
             {"w": 1.0, "found_at_6": 5, "f1_macro": 0.7, "tfns_f1_weighted": 0.85}]
    assert choose_weight(sweep) == 0.5 and choose_weight(sweep, tfns_guard=False) == 1.0


def test_eval_with_a_head_on_the_lexicon_base(tmp_path):
    """SENTINEL_NGRAM_HEAD wraps the configured scorer in `sentinel eval`: the report's model says so
    and its figures are the fused ones."""
    data = tmp_path / "d.csv"
    data.write_text("text,label\nBTC to the moon,positive\nthe meeting is at noon,neutral\nETH dump,negative\n")
    head = toy_head(w=3.0, buckets=BUCKETS)
    head.weights[:] = 0
    head.bias[:] = [0, 0, 5]  # a head that says neutral, strongly: fused, everything is neutral
    head.save(tmp_path / "h")
    plain = sentinel(["eval", "--data", str(data), "--format", "csv", "--json"], {})
    fused = sentinel(["eval", "--data", str(data), "--format", "csv", "--json"], {"SENTINEL_NGRAM_HEAD": str(tmp_path / "h")})
    assert plain.returncode == 0 and fused.returncode == 0, fused.stderr
    plain_r, fused_r = json.loads(plain.stdout), json.loads(fused.stdout)
    # A head of its own directory: named by its weights file's hash (fusion.head_tag), never the path.
    tag = hashlib.sha256((tmp_path / "h" / WEIGHTS_FILE).read_bytes()).hexdigest()[:8]
    assert plain_r["model"] == "lexicon" and fused_r["model"] == f"lexicon+ngram-{tag}"
    assert plain_r["accuracy"] == 1.0 and fused_r["confusion"]["positive"]["neutral"] == 1


def test_train_head_end_to_end_on_the_lexicon_base(tmp_path):
    train, select = tmp_path / "train.csv", tmp_path / "select.csv"
    with train.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["text", "label"])
        for i in range(10):
            rows.writerows([[f"moon rally {i}", "positive"], [f"crash dump {i}", "negative"], [f"meeting notes {i}", "neutral"]])
    with select.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["text", "label", "source"])
        for i in range(8):
            rows.writerows([[f"big rally {i}", "positive", "discord"], [f"a dump {i}", "negative", "voices"],
                            [f"notes {i}", "neutral", "discord"], [f"quarterly notes {i}", "neutral", "tfns"]])
    done = sentinel(["train-head", "--data", str(train), "--select", str(select), "--out", str(tmp_path / "h"), "--format", "csv"], {})
    assert done.returncode == 0, done.stderr
    head = NgramHead.load(tmp_path / "h")
    card = head.card
    assert card["training"]["rows"] == 30 and card["training"]["files"][0]["sha256"]
    assert card["fusion"]["scored_with"] == "lexicon" and len(card["fusion"]["select_sweep"]) == 11
    assert json.loads(done.stdout.strip().splitlines()[-1])["w"] == head.w
    # a bad row names its file and line, as the other commands do
    train.write_text("text,label\nfine,positive\nbad row,maybe\n")
    bad = sentinel(["train-head", "--data", str(train), "--select", str(select), "--out", str(tmp_path / "h2"), "--format", "csv"], {})
    assert bad.returncode == 2 and "train.csv:3: unknown label" in bad.stderr and not (tmp_path / "h2").exists()


def test_train_head_card_records_how_files_were_read_and_select_was_scored(tmp_path):
    """Enough to rebuild the head from its card: the files' columns and label map as given, and the
    scorer's device, dtype, quantize and batch size (they move p_model on select, so the w chosen)."""
    train, select = tmp_path / "train.csv", tmp_path / "select.csv"
    train.write_text("post,stance\n" + "".join(f"moon rally {i},2\ncrash dump {i},0\nmeeting notes {i},1\n" for i in range(10)))
    select.write_text("text,label,source\n" + "".join(f"big rally {i},positive,discord\na dump {i},negative,voices\n"
                                                       f"notes {i},neutral,discord\nquarterly notes {i},neutral,tfns\n" for i in range(8)))
    label_map = "0=negative,1=neutral,2=positive"
    done = sentinel(["train-head", "--data", str(train), "--select", str(select), "--out", str(tmp_path / "h"), "--format", "csv",
                     "--text-col", "post", "--label-col", "stance", "--label-map", label_map, "--batch-size", "7"], {})
    assert done.returncode == 0, done.stderr
    card = NgramHead.load(tmp_path / "h").card
    assert card["training"]["format"] == "csv" and card["training"]["rows"] == 30  # the fields before these, unchanged
    assert {k: card["training"][k] for k in ("text_col", "label_col", "label_map")} == {
        "text_col": "post", "label_col": "stance", "label_map": label_map}
    assert card["fusion"]["scored_with"] == "lexicon"
    assert card["fusion"]["scoring"] == {"device": "cpu", "dtype": "none", "quantize": "none", "batch_size": 7}


@pytest.mark.parametrize("make, said", [
    (lambda d: d / "missing", "SENTINEL_NGRAM_HEAD: not a directory"),
    (lambda d: (toy_head().save(d / "h"), (d / "h" / WEIGHTS_FILE).write_bytes(b"junk"))[0], f"SENTINEL_NGRAM_HEAD: {WEIGHTS_FILE}: not a head's weights"),
])
def test_a_bad_head_setting_exits_2_naming_the_variable(tmp_path, make, said):
    path = make(tmp_path)
    done = sentinel(["classify", "BTC to the moon"], {"SENTINEL_NGRAM_HEAD": str(path)})
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr
    assert str(tmp_path) not in done.stderr  # the setting's value is never printed


def test_the_shipped_head_loads_and_names_its_weight():
    head = NgramHead.load(ROOT / "model" / "heads" / "default")
    assert head.buckets == BUCKETS and head.w == head.card["fusion"]["w"] > 0
    assert [f["path"].rsplit("/", 1)[-1] for f in head.card["training"]["files"]] == [
        "train-tfns.csv", "train-indomain.csv", "train-discord-round2.csv", "train-discord-round3.csv",
        "train-voices-round2.csv", "train-voices-round3.csv"]


def test_default_is_the_shipped_head_wherever_the_command_runs_and_another_model_is_warned_of(tmp_path):
    """`SENTINEL_NGRAM_HEAD=default` is the packaged head (as SENTINEL_ADAPTER=default), not a
    directory of that name under the working directory. Its w was chosen with the shipped adapter, so
    pooled with another model's probabilities (here the keyword scorer's) the command says so."""
    assert head_dir("default") == PACKAGED_HEAD_DIR and head_dir(tmp_path) == tmp_path
    done = sentinel(["classify", "--json", "BTC to the moon"], {"SENTINEL_NGRAM_HEAD": "default"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label"] in LABELS
    assert "chosen with another model" in done.stderr and "smollm2+default" in done.stderr
    # A head chosen with this very model: no warning.
    head = NgramHead.load(PACKAGED_HEAD_DIR)
    head.card["fusion"]["scored_with"] = "lexicon"
    head.save(tmp_path / "h")
    quiet = sentinel(["classify", "--json", "BTC to the moon"], {"SENTINEL_NGRAM_HEAD": str(tmp_path / "h")}, cwd=tmp_path)
    assert quiet.returncode == 0 and "chosen with another model" not in quiet.stderr, quiet.stderr


def test_a_select_file_the_weight_cannot_be_chosen_on_is_refused_in_one_line(tmp_path):
    """No source column, no Discord or voices rows, or the training file itself: each a clear error,
    never a head whose card says a rule chose a weight it could not judge."""
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"moon rally {i},positive\ncrash dump {i},negative\nnotes {i},neutral\n" for i in range(5)))
    cases = {"nosource.csv": ("text,label\nbig rally,positive\n", "nosource.csv:1: no source column"),
             "tfnsonly.csv": ("text,label,source\nbig rally,positive,tfns\nnotes,neutral,twitter\n", "tfnsonly.csv:1: no discord or voices rows"),
             "empty.csv": ("text,label,source\n", "empty.csv:1: no discord or voices rows")}
    for name, (text, said) in cases.items():
        (tmp_path / name).write_text(text)
        done = sentinel(["train-head", "--data", str(train), "--select", str(tmp_path / name), "--out", str(tmp_path / "h"), "--format", "csv"], {})
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
    train_as_select = tmp_path / "select.csv"
    train_as_select.write_text("text,label,source\nbig rally,positive,discord\nnotes,neutral,discord\n")
    done = sentinel(["train-head", "--data", str(train_as_select), "--select", str(train_as_select), "--out", str(tmp_path / "h"), "--format", "csv"], {})
    assert done.returncode == 2 and "is the --select file" in done.stderr, done.stderr
    assert not (tmp_path / "h").exists()


def test_only_the_commands_that_load_the_classifier_check_the_head():
    """The console and report pods share the workers' ConfigMap: a head mounted on the workers alone
    must not stop a command that never loads the classifier."""
    reader = sentinel(["silences"], {"SENTINEL_NGRAM_HEAD": "/nowhere/head"})
    assert reader.returncode == 2 and "needs REDIS_URL" in reader.stderr and "SENTINEL_NGRAM_HEAD" not in reader.stderr, reader.stderr
    scorer = sentinel(["classify", "BTC up"], {"SENTINEL_NGRAM_HEAD": "/nowhere/head"})
    assert scorer.returncode == 2 and "SENTINEL_NGRAM_HEAD: not a directory" in scorer.stderr and "/nowhere" not in scorer.stderr


def test_the_head_reads_a_text_no_further_than_a_post_can_be():
    long = "moon " * 2_000 + "dump " * 100_000
    assert features(long) == features(long[:10_000])


def test_auto_pools_the_shipped_head_with_the_shipped_model_only():
    """SENTINEL_NGRAM_HEAD's default, `auto`: the shipped head's w was chosen with the shipped base and
    adapter (its card's scored_with), so it is pooled with that model and with no other; `none` is
    the model alone whatever it is."""
    import dataclasses

    from sentinel.cli import with_ngram_head
    from stream.settings import Settings

    assert Settings().ngram_head == "auto"
    shipped_id = NgramHead.load(PACKAGED_HEAD_DIR).card["fusion"]["scored_with"]
    shipped = LexiconClassifier()
    shipped.info = dataclasses.replace(shipped.info, base=shipped_id.split("+")[0], adapter=shipped_id.split("+")[1])
    assert shipped.info.id == shipped_id == "smollm2+default"
    assert isinstance(with_ngram_head(shipped, Settings()), FusedScorer)
    other = LexiconClassifier()
    assert with_ngram_head(other, Settings()) is other
    assert with_ngram_head(shipped, Settings(ngram_head="none")) is shipped
    assert isinstance(with_ngram_head(other, Settings(ngram_head="default")), FusedScorer)  # asked for by name: pooled, with a warning


def test_bench_classify_times_what_the_fused_scorer_adds():
    """`sentinel bench classify` times the head's pass apart (FusedScorer.pool): it must be the very
    work FusedScorer.classify does after the model, or the cost it reports is of something else."""
    from sentinel.benchmarks import head_figures

    fused = FusedScorer(LexiconClassifier(), NgramHead.load(PACKAGED_HEAD_DIR))
    posts = ["wen moon, this token is pumping", "rug pull, dev sold everything, dump it", "anyone up for a raid tonight?"] * 4
    judged = fused.scorer.classify(posts)
    assert fused.pool(judged, posts) == fused.classify(posts)
    assert fused.pool(judged, posts) != list(judged)  # the head moves these probabilities
    figures = head_figures(fused, judged, posts, scorer_posts_per_s=50.0)
    assert figures["head"] == "lexicon+ngram" and figures["head_w"] == fused.w
    assert 0 < figures["head_share_of_time"] < 1 and figures["scorer_with_head_posts_per_s"] < 50.0

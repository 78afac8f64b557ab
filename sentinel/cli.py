"""The `sentinel` command line: one entry point for every job."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sentinel.logs import setup_logging
from sentinel.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Forum Sentinel: crypto-forum sentiment early warning.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: side-by-side throughput in one run, printed as JSON.")
model_app = typer.Typer(no_args_is_help=True, help="Model housekeeping.")
app.add_typer(bench_app, name="bench")
app.add_typer(model_app, name="model")

out = Console()
err = Console(stderr=True)

# Shared model options; None means "keep the setting from the environment".
BaseOpt = Annotated[Optional[str], typer.Option("--base", help="'smollm2' (bundled), a hub id or a local directory")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="LoRA adapter directory or hub id; 'none' for the bare base")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="auto | float32 | bfloat16 | float16")]
QuantizeOpt = Annotated[Optional[str], typer.Option("--quantize", help="none | 8bit | 4bit (CUDA only)")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="posts per forward pass")]


def model_settings(**overrides: Any) -> Settings:
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return Settings.model_validate({**settings.model_dump(), **chosen}) if chosen else settings


def load_classifier(settings: Settings) -> Any:
    from model.base import ModelLoadError
    from model.classifier import Classifier

    try:
        with err.status(f"loading {settings.base} (adapter: {settings.adapter}) ..."):
            return Classifier.load(settings)
    except ModelLoadError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True
    )


@app.command()
def classify(
    texts: Annotated[Optional[list[str]], typer.Argument(help="posts to judge; stdin lines when none")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per text")] = False,
    base: BaseOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
    batch_size: BatchOpt = None,
) -> None:
    """Judge posts as positive / negative / neutral about the price."""
    from model.prompt import EmptyTextError, clean_text

    items = list(texts) if texts else [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not items:
        err.print("[red]error:[/red] no text given (pass texts as arguments or lines on stdin)")
        raise typer.Exit(2)
    for number, text in enumerate(items, start=1):
        try:
            clean_text(text)
        except EmptyTextError:
            err.print(f"[red]error:[/red] text {number} is empty or whitespace only")
            raise typer.Exit(2) from None
    settings = model_settings(base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size)
    classifier = load_classifier(settings)
    judgements = classifier.classify(items)
    if as_json:
        for text, j in zip(items, judgements):
            print(json.dumps({"text": text, **j.as_dict()}, ensure_ascii=False))
        return
    table = Table(title=f"model: {classifier.info.id} on {classifier.info.device} ({classifier.info.dtype})")
    for col in ("label", "positive", "negative", "neutral", "score"):
        table.add_column(col, justify="right" if col != "label" else "left")
    table.add_column("text", overflow="fold")
    colour = {"positive": "green", "negative": "red", "neutral": "yellow"}
    for text, j in zip(items, judgements):
        p = j.probs
        table.add_row(
            f"[{colour[j.label]}]{j.label}[/]",
            f"{p['positive']:.3f}",
            f"{p['negative']:.3f}",
            f"{p['neutral']:.3f}",
            f"{j.score:+.3f}",
            text if len(text) <= 160 else text[:157] + "...",
        )
    out.print(table)


@app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Option("--data", exists=True, dir_okay=False, help="labelled CSV / JSONL / Alpaca JSON")],
    fmt: Annotated[str, typer.Option("--format", help="auto | tfns | alpaca | csv | jsonl")] = "auto",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    label_map: Annotated[Optional[str], typer.Option("--label-map", help="e.g. 0=negative,1=positive,2=neutral")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="first N examples only")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip malformed rows (counted) instead of failing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as one JSON object")] = False,
    base: BaseOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
    batch_size: BatchOpt = None,
) -> None:
    """Accuracy, F1 and the confusion matrix on a labelled file."""
    from model.metrics import classification_report
    from training.data import DataError, load_examples, parse_label_map

    try:
        loaded = load_examples(
            data, fmt, text_col=text_col, label_col=label_col, label_map=parse_label_map(label_map), skip_bad=skip_bad, limit=limit
        )
    except (DataError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not loaded.examples:
        err.print(f"[red]error:[/red] {data} holds no usable examples")
        raise typer.Exit(2)
    settings = model_settings(base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size)
    classifier = load_classifier(settings)
    preds: list[str] = []
    examples = loaded.examples
    with progress() as bar:
        task = bar.add_task("classifying", total=len(examples))
        step = classifier.batch_size * 4
        for start in range(0, len(examples), step):
            chunk = examples[start : start + step]
            preds.extend(j.label for j in classifier.classify([e.text for e in chunk]))
            bar.advance(task, len(chunk))
    report = classification_report([e.label for e in examples], preds)
    report.update(model=classifier.info.id, data=str(data), skipped=len(loaded.skipped))
    if as_json:
        print(json.dumps(report))
        return
    print_report(report)


def print_report(report: dict[str, Any]) -> None:
    from model.labels import LABELS

    out.print(
        f"[bold]{report['model']}[/bold] on {report['data']}: n={report['n']}  accuracy={report['accuracy']:.3f}  "
        f"f1_macro={report['f1_macro']:.3f}  f1_weighted={report['f1_weighted']:.3f}  skipped={report['skipped']}"
    )
    per = Table(title="per class")
    for col in ("label", "precision", "recall", "f1", "support"):
        per.add_column(col)
    for label in LABELS:
        c = report["per_class"][label]
        per.add_row(label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
    out.print(per)
    conf = Table(title="confusion (rows gold, columns predicted)")
    conf.add_column("gold")
    for label in LABELS:
        conf.add_column(label, justify="right")
    for gold in LABELS:
        conf.add_row(gold, *(str(report["confusion"][gold][p]) for p in LABELS))
    out.print(conf)


@bench_app.command("classify")
def bench_classify_cmd(
    posts: Annotated[int, typer.Option("--posts", min=1, help="posts scored by our scorer")] = 256,
    naive_posts: Annotated[int, typer.Option("--naive-posts", min=1, help="of those, how many the slow baseline scores")] = 64,
    words: Annotated[int, typer.Option("--words", min=1, help="words per synthetic post")] = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    base: BaseOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Our batched prefix-cached scorer against per-post generate + parsing, on the same posts."""
    from sentinel.bench import bench_classify
    from sentinel.synthetic import synthetic_posts

    settings = model_settings(base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size)
    with err.status("benchmarking (naive baseline is slow) ..."):
        result = bench_classify(settings, synthetic_posts(posts, words=words), naive_posts)
    print(json.dumps(result))


@model_app.command("prepare")
def model_prepare() -> None:
    """Convert the bundled GGUF base into the cache once (containers run this at build time)."""
    from model.base import DEFAULT_BASE, ensure_converted_base

    settings = model_settings()
    if settings.base != DEFAULT_BASE:
        out.print(f"base is {settings.base!r}; nothing to convert")
        return
    with err.status("converting the bundled GGUF (about 30 s, once) ..."):
        path = ensure_converted_base(settings.cache_dir)
    out.print(str(path))


if __name__ == "__main__":
    app()

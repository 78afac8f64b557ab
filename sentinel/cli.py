"""The `sentinel` command line: one entry point for every job."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import stat
import sys
import time
from collections import Counter
from pathlib import Path
from types import EllipsisType
from typing import Annotated, Any, Awaitable, Callable, Collection, Coroutine, Iterable, Iterator, Literal, Mapping, Optional, Sequence, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from model.scorer import Judgement, Scorer
from sentinel import BAD_LINES_SHOWN, stops
from stream.logs import redact, setup_logging, worth_keeping
from stream.settings import Settings, get_settings, problems_unless_reading, read_settings, redis_given, unknown_variables, variable_name
from stream.timefmt import shown

class _Group(TyperGroup):
    """Every command's group: a Ctrl-C or SIGTERM that no command turned into its own line (one
    that came before its work began, as its modules load or a large file is counted, or in a
    command with no stop of its own: `sentinel bench`) is one line, "interrupted" (exit 130) or
    "terminated" (143), as the commands that say more end. One while the command line itself is
    read, before any command ran, says so, as one during the CLI's imports does (sentinel.main)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with stops_said(lambda how: f"{how} before the command started", unwind=False):
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:  # typer's own click's Context
        with stops_said(lambda how: how, unwind=False):
            return super().invoke(ctx)


class _App(typer.Typer):
    """The `sentinel` app: a RunError (sentinel/run.py: a configuration or stack problem, already in
    words) that a command did not turn into a line itself is one `error:` line and exit 2, never a
    traceback, whichever command raised it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            from sentinel.run import RunError

            if not isinstance(exc, RunError):
                raise
            fail(redact(str(exc)))
            raise SystemExit(2) from None


# Tracebacks never print local variables: a frame inside the Redis client holds the password
# (`auth_args = ['default', '<password>']`). Set here, not left to typer's default.
app = _App(
    cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
    help="Forum Sentinel: crypto-forum sentiment early warning.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: side-by-side throughput in one run, printed as JSON.")
model_app = typer.Typer(no_args_is_help=True, help="Model housekeeping.")
app.add_typer(bench_app, name="bench")
app.add_typer(model_app, name="model")

T = TypeVar("T")

out = Console()
# soft_wrap: an error is one line in a pod log, not cut at 80 columns by a console with no terminal.
err = Console(stderr=True, soft_wrap=True)

# Shared model options; None means "keep the setting from the environment".
BaseOpt = Annotated[Optional[str], typer.Option("--base", help="'smollm2' (bundled), a hub id or a local directory")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="LoRA adapter directory or hub id; 'none' for the bare base")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="auto | float32 | bfloat16 | float16")]
QuantizeOpt = Annotated[Optional[str], typer.Option("--quantize", help="none | 8bit | 4bit (CUDA only)")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="posts per forward pass")]


def model_settings(*, stream: Literal["worker", "reader"] | None = None, scorer: bool = False, redis: bool = False, **overrides: Any) -> Settings:
    """The environment's settings with any CLI options laid over them; also sets up logging. Every
    setting that is wrong is named in one line: a field that does not parse, settings wrong
    together, the Redis URL and, for `stream`, the stream checks (`worker`: a worker's, the alias
    table and the services it notifies too; `reader`: a command that only reads what workers
    wrote); for `scorer` (a command that loads the classifier), the n-gram head. Fixing one and
    only then hearing of the next costs a pod restart each. `overrides`: the command's options that
    were given, by the fields they set; a problem with one names the option. `redis` (or any
    `stream`): a command that connects to Redis, which also loads the TLS files a rediss:// URL
    names; the others (classify, train, replay, record ...) never open them, and a laptop or Job
    given the workers' REDIS_URL without their CA must not be refused for a file it never reads."""
    given = {k: v for k, v in overrides.items() if v is not None}
    found = read_settings(given, names=option_names(given))
    setup_logging(found.settings.log_level, found.settings.log_json)
    # The head only where the classifier loads: the console and report pods share the worker's
    # ConfigMap, and a head mounted on the workers alone must not stop them.
    problems = [*found.problems, *(stream_problems(found.settings, stream, found.failing) if stream else []), redis_url_problem(files=redis or stream is not None),
                *(model_dir_problems(found.settings, option_names(given)) if scorer else []),
                ngram_head_problem(found.settings) if scorer else None]
    if bad := [problem for problem in problems if problem]:
        raise fail(invalid_settings(bad))
    return found.settings


def option_names(fields: Collection[str]) -> dict[str, str]:
    """The command option that sets each of `fields` (`--batch-size` for batch_size: every option
    model_settings takes is named so, tests/test_cli.py checks), so a bad value the operator typed
    is named as they typed it, not by the variable it stands in for."""
    return {field: "--" + field.replace("_", "-") for field in fields}


def model_dir_problems(settings: Settings, names: dict[str, str]) -> list[str]:
    """A base or adapter that can only be a directory and is none, named with the other settings:
    the model load would say one of them, the adapter first, only after every other setting was
    right (the gpu overlay's first start without its weights took a restart for each). By the
    option or variable that set it, never the path (a setting's value)."""
    from model.paths import missing_dir

    fields = ("base",) if settings.base == "lexicon" else ("base", "adapter")  # the lexicon loads no adapter
    return [f"{names.get(field) or variable_name(field)}: {problem}" for field in fields if (problem := missing_dir(getattr(settings, field)))]


def ngram_head_problem(settings: Settings) -> str | None:
    """What is wrong with SENTINEL_NGRAM_HEAD's directory (model/ngram.py reads it: numpy, no torch),
    checked with the other settings so a bad head is one line and exit 2 before the model loads, not
    a traceback after. Names the file inside the directory, never the path (a setting's value)."""
    from model.ngram import AUTO, HeadError, NgramHead, head_dir

    path = head_dir(settings.ngram_head)
    if path is None or settings.ngram_head == AUTO:  # auto: the shipped head, if its model loads (with_ngram_head)
        return None
    try:
        NgramHead.load(path)
    except HeadError as exc:
        return f"SENTINEL_NGRAM_HEAD: {exc.name}: {exc.reason}" if path.is_dir() else f"SENTINEL_NGRAM_HEAD: {exc.reason}"
    return None


def redis_url_problem(*, files: bool = True) -> str | None:
    """What is wrong with the Redis URL the environment sets, naming its variable, whether or not
    the other settings validate (None: nothing, or no URL). The URL is judged by the client that
    will use it (stream.redis_client), which Settings sits below, so it is not one of Settings'
    own checks; redis is imported only where a URL is set. With SENTINEL_REDIS_CLUSTER itself not a
    boolean the URL waits for it: whether several endpoints are right depends on it. `files`: the
    TLS files a rediss:// URL names loaded too (only for a command that connects)."""
    given = redis_given()
    if given is None or given[1] is None:
        return None
    from stream.redis_client import url_setting_problem  # imports redis: only where a URL is set

    return url_setting_problem(given[0], cluster=given[1], files=files)


def inert(value: str) -> Text:
    """A table cell of text that came from posts, files or operators: shown as written, never read
    as Rich markup (`[/]` in a reason made the whole table raise)."""
    return Text(value)


def invalid_settings(problems: list[str]) -> str:
    """Problems with the settings, every one of them, as one line: a pod log reads an error a line,
    and a line per problem would read as several errors. (A message of several lines, a check of
    several settings together, gives each of its lines.)"""
    lines = [line for problem in problems for line in problem.splitlines()]
    # A backstop: no check quotes a value, but a library's message inside one might.
    return redact("invalid settings: " + "; ".join(lines))


def stream_problems(settings: Settings, stream: Literal["worker", "reader"], failing: Collection[str] = ()) -> list[str]:
    """The window and alert settings, checked before anything slow starts (the model load, the
    embedded stack), so a bad duration or threshold is named now, not as a traceback minutes later.
    Every problem found, not only the first (stream.worker.settings_problems); none from a check
    that reads a `failing` field (at its default: stream.settings.read_settings)."""
    from stream.worker import RENAMED_VARIABLES, problems_of, settings_problems

    problems = settings_problems(settings, aliases=stream == "worker", failing=failing)
    if stream == "worker":  # a worker's settings: the services it notifies, loaded as it will load them
        problems += problems_unless_reading(failing, lambda s: problems_of(functools.partial(check_notify_settings, s)), settings)
        # A mistyped variable would leave its default in force unnoticed: say it, as any wrong setting.
        problems += unknown_variables(os.environ, said=RENAMED_VARIABLES)
    return problems


def check_notify_settings(settings: Settings) -> None:
    """SENTINEL_APPRISE_URLS and SENTINEL_APPRISE_CONFIG loaded (no network): a ValueError naming
    the variable and the entry, never a URL's secret parts."""
    if settings.apprise_urls is None and settings.apprise_config is None:
        return
    from stream.alerts.notify import build_apprise

    build_apprise(settings.apprise_urls.get_secret_value() if settings.apprise_urls is not None else None, settings.apprise_config)


def load_classifier(settings: Settings) -> Scorer:
    """The configured scorer, every command's and the worker's (also in its model process), with the
    n-gram head pooled in as SENTINEL_NGRAM_HEAD says (by default the shipped head with the shipped
    model only)."""
    return with_ngram_head(load_scorer(settings), settings)


def with_ngram_head(scorer: Scorer, settings: Settings) -> Scorer:
    """`scorer` wrapped in model.fusion.FusedScorer at the w the head's card names, or `scorer` itself:
    with `none`, and with `auto` when the scorer is not the model the shipped head's w was chosen
    with (the keyword scorer, another base or adapter). The head is numpy only: the lexicon path
    stays torch-free."""
    from model.fusion import FusedScorer, head_tag
    from model.ngram import AUTO, HeadError, NgramHead, chosen_with, head_dir

    path = head_dir(settings.ngram_head)
    if path is None:
        return scorer
    auto = settings.ngram_head == AUTO
    try:
        paired = chosen_with(path)
        if auto and paired != scorer.info.id:
            return scorer
        head = NgramHead.load(path)
    except HeadError as exc:  # checked at start-up (ngram_head_problem), but for auto; changed on disk since
        if auto:  # a package without its head runs as the model alone, as without its adapter (model.base)
            logging.getLogger("sentinel.model").warning("the shipped n-gram head does not load: the model alone", extra={"reason": exc.reason})
            return scorer
        raise fail(f"SENTINEL_NGRAM_HEAD: {exc.name}: {exc.reason}") from None  # never the path: a setting's value
    if paired and paired != scorer.info.id:
        # w was chosen against one model's probabilities; pooled with another's it is a guess.
        logging.getLogger("sentinel.model").warning(
            "the n-gram head's fusion weight was chosen with another model: run sentinel train-head with this one",
            extra={"head_chosen_with": paired, "model": scorer.info.id, "w": head.w})
    fused = FusedScorer(scorer, head)
    # "model loaded" names the model alone, before the head is pooled: this line says the head is on
    # (with auto, the default, nothing else does). The head by its tag, never its directory: a
    # setting's value is not logged.
    logging.getLogger("sentinel.model").info("n-gram head pooled", extra={"model": fused.info.id, "head": head_tag(head), "w": fused.w})
    return fused


def load_scorer(settings: Settings) -> Scorer:
    if settings.base == "lexicon":  # no torch imported on this path (tests/test_layers.py)
        from model.lexicon import LexiconClassifier

        return LexiconClassifier()
    from model.base import ModelLoadError
    from model.classifier import Classifier

    try:
        with err.status(f"loading {settings.base} (adapter: {settings.adapter}) ..."):
            return Classifier.load(settings)
    except ModelLoadError as exc:
        raise fail(str(exc)) from None


PLAIN_PROGRESS_S = 10.0  # off a terminal, a progress line this often (seconds of wall time)


class PlainProgress(Progress):
    """Rich's bar on a terminal. Off one (a log, a Kubernetes Job's), where rich draws nothing (a
    transient bar not even at the end), a plain line every `every` seconds instead:
    `replayed 1,200/5,000 (event time 2026-01-01T12:00:00Z)`. Rich's refresh thread renders a few
    times a second, terminal or not, so a line comes also while the caller waits (a paced gap)."""

    def __init__(self, *columns: str | ProgressColumn, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic, **kwargs: Any):
        self.every, self.clock = PLAIN_PROGRESS_S if every is None else every, clock
        self.last_line = clock()  # set before rich's __init__, which renders once
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Iterable[RenderableType]:
        if "live" in vars(self) and not self.console.is_terminal and self.clock() - self.last_line >= self.every:
            self.last_line = self.clock()
            self.console.print(", ".join(map(plain_task, self.tasks)), markup=False, highlight=False)
        yield from super().get_renderables()

    def say(self, task: TaskID, **fields: Any) -> None:
        """Update `task`'s fields, and off a terminal print the line at the next refresh, not up to
        `every` later: a log says when a run's phase changed (its worker started, posts flow)."""
        self.update(task, **fields)
        self.last_line = self.clock() - self.every

    def stop(self) -> None:
        if self.console.is_interactive or self.disable:
            super().stop()
        else:
            self.live.stop()  # without the blank line rich ends with off a terminal: a log has no bar to close


def plain_task(task: Task) -> str:
    total = "?" if task.total is None else f"{task.total:,.0f}"
    detail = task.fields.get("detail")
    return f"{task.description} {task.completed:,.0f}/{total}" + (f" ({detail})" if detail else "")


class DetailColumn(ProgressColumn):
    """A task's `detail` field, when it has one (a paced replay's event time)."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("detail") or ""))


def progress(console: Console | None = None, **kwargs: Any) -> PlainProgress:
    return PlainProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), DetailColumn(),
                         console=console or err, transient=True, **kwargs)


def classify_all(classifier: Scorer, texts: list[str], batch_size: int, what: str) -> list[Judgement]:
    """Judge many texts with a progress bar, a few batches per call so the bar moves."""
    judgements: list[Judgement] = []
    with progress() as bar:
        task = bar.add_task(what, total=len(texts))
        for start in range(0, len(texts), batch_size * 4):
            chunk = texts[start : start + batch_size * 4]
            judgements.extend(classifier.classify(chunk))
            bar.advance(task, len(chunk))
    return judgements


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
            text.encode("utf-8")  # stdin and arguments come with undecodable bytes as surrogate escapes
            clean_text(text)
        except UnicodeEncodeError:
            err.print(f"[red]error:[/red] text {number} is not UTF-8 text")
            raise typer.Exit(2) from None
        except EmptyTextError:
            err.print(f"[red]error:[/red] text {number} is empty or whitespace only")
            raise typer.Exit(2) from None
    settings = model_settings(scorer=True, base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size)
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
            inert(text if len(text) <= 160 else text[:157] + "..."),
        )
    out.print(table)


@app.command()
def soup(
    adapters: Annotated[list[Path], typer.Argument(help="two or more adapter directories trained on the same base and targets")],
    out_dir: Annotated[Path, typer.Option("--out", help="where the soup adapter and its model card go")],
    weights: Annotated[Optional[str], typer.Option("--weights", help="comma-separated, one per adapter, summing to 1 (default: equal)")] = None,
) -> None:
    """Average adapters (e.g. the same recipe at several seeds) into one: the mean of their LoRA weight
    changes, exactly, as one adapter of the summed rank. Merged at load, it runs as fast as one."""
    from training.soup import SoupError, make_soup

    try:
        chosen = [float(w) for w in weights.split(",")] if weights else None
    except ValueError:
        raise fail(f"--weights: not a comma-separated list of numbers: {weights!r}") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out {out_dir}: a file, not a directory")
    try:
        card = make_soup(adapters, out_dir, chosen)
    except SoupError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # --out cannot be made or written
        raise os_failure(exc) from None
    print(f"wrote {out_dir}: rank {card['soup']['rank']}, {len(adapters)} members")


# seed-discord labels each author by the research's per-author score file: every command that
# takes the format takes this too (eval and train-head had the format, not the file).
ScoresOpt = Annotated[Optional[Path], typer.Option("--scores", exists=True, dir_okay=False,
                                                   help="seed-discord: the per-author score CSV (default: meritcircle_user_sentiment.csv beside the export)")]
SKIP_BAD_HELP = f"skip malformed rows instead of failing: counted, and the first {BAD_LINES_SHOWN} named on stderr (FILE:LINE: reason)"


def name_skipped(skipped: Sequence[Exception]) -> None:
    """`--skip-bad`'s rows on stderr, one a line as the loader's error reads (`FILE:LINE: reason`),
    so a count of skipped rows can be traced to them; stderr leaves `eval --json`'s stdout one object."""
    for row in skipped[:BAD_LINES_SHOWN]:
        err.print(f"skipped {escape(str(row))}", highlight=False)
    if len(skipped) > BAD_LINES_SHOWN:
        err.print(f"... and {len(skipped) - BAD_LINES_SHOWN} more skipped", highlight=False)


@app.command("eval")
def evaluate(
    data: Annotated[list[Path], typer.Option("--data", exists=True, dir_okay=False, help="labelled CSV / JSONL / Alpaca JSON; repeat for several, read one after another (with --holdout, give sentinel train's --data files in its order)")],
    fmt: Annotated[str, typer.Option("--format", help="auto | tfns | alpaca | csv | jsonl | seed-discord (its score file: --scores)")] = "auto",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    label_map: Annotated[Optional[str], typer.Option("--label-map", help="e.g. 0=negative,1=positive,2=neutral")] = None,
    scores: ScoresOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="first N examples only")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help=SKIP_BAD_HELP)] = False,
    holdout: Annotated[Optional[float], typer.Option("--holdout", help="evaluate only the stratified validation split sentinel train holds out (its --val-fraction)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="with --holdout: the split's seed (sentinel train's --seed)")] = 42,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as one JSON object")] = False,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", dir_okay=False, help="also write each example's line, gold label, predicted label and probabilities here (JSON lines; no texts)")] = None,
    card: Annotated[bool, typer.Option("--card", help="also record the report in the adapter's model_card.json (evaluations, keyed by the data file's name without its extension, with its sha256; several files: their names joined by ' + '; with an n-gram head pooled, under 'NAME (+ngram)')")] = False,
    base: BaseOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
    batch_size: BatchOpt = None,
) -> None:
    """Accuracy, F1 and the confusion matrix on a labelled file."""
    from model.report import classification_report
    from training.data import DataError, parse_label_map
    from training.indomain import sha256
    from training.split import holdout_mismatch, load_files, stratified_split

    writable_outputs(predictions)  # before the classifying, not after it
    if holdout is not None and not 0 < holdout < 1:  # 0 would quietly evaluate the whole file
        raise fail("--holdout: a fraction between 0 and 1, as sentinel train's --val-fraction")
    settings = model_settings(scorer=True, base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size)
    if holdout and (problem := holdout_mismatch(trained_card(settings), [(path, sha256(path)) for path in data], holdout, seed)):
        raise fail(problem)

    try:
        loaded, skipped = load_files(
            data, None if holdout else limit, fmt=fmt, text_col=text_col, label_col=label_col, label_map=parse_label_map(label_map),
            skip_bad=skip_bad, scores_path=scores,
        )
        files = {id(example): path for path, example in loaded}  # an example's line is its file's
        examples = [example for _, example in loaded]
        if holdout:  # the very split training held out: same loader, same files in the same order, same function, same seed
            examples = stratified_split(examples, holdout, seed).validation[:limit]
    except (DataError, ValueError) as exc:
        raise fail(str(exc)) from None
    name_skipped(skipped)
    if not examples:
        raise fail(f"{' and '.join(map(str, data))} {'holds' if len(data) == 1 else 'hold'} no usable examples")
    card_path = adapter_card(settings) if card else None
    classifier = load_classifier(settings)
    judgements = classify_all(classifier, [e.text for e in examples], settings.batch_size, "classifying")
    preds = [j.label for j in judgements]
    if predictions:
        from stream.tools.files import replaced_when_done

        # Whole or not at all, as the other outputs; `--predictions /dev/stdout > f` goes before the report,
        # where a plain open cut f back to its start under the report.
        try:
            with replaced_when_done(predictions) as out_file:
                for example, judgement in zip(examples, judgements):
                    # Several files: each line names its file, as lines repeat across files.
                    where = {"file": str(files[id(example)])} if len(data) > 1 else {}
                    out_file.write(json.dumps({**where, "line": example.line, "label": example.label, "predicted": judgement.label,
                                               "probs": judgement.probs}) + "\n")
        except ValueError as exc:
            raise fail(str(exc)) from None
    report = classification_report([e.label for e in examples], preds)
    report.update(model=classifier.info.id, data=" + ".join(map(str, data)), skipped=len(skipped))
    if card_path:
        from training.trainer import record_evaluation

        subset = ", ".join(part for part in (pooled_head(classifier), f"holdout {holdout:g} seed {seed}" if holdout else "",
                                             f"first {limit}" if limit else "") if part)
        card_data = record_evaluation(card_path, data, report, subset)
        count = len(card_data["evaluations"])
        err.print(f"recorded in {card_path} ({count} evaluation{'' if count == 1 else 's'})")
    if as_json:
        print(json.dumps(report))
        return
    print_report(report)


def pooled_head(scorer: Scorer) -> str:
    """`+ngram` (the head's tag) when an n-gram head is pooled with the model, else "": the card is the
    adapter's, so the pooled figures go beside its own under a key of their own, never over them."""
    from model.fusion import FusedScorer, head_tag

    return f"+{head_tag(scorer.head)}" if isinstance(scorer, FusedScorer) else ""


def trained_card(settings: Settings) -> dict[str, Any]:
    """The adapter's model card, or {} where it has none (no adapter, a hub id, a card that does not
    read): what `eval --holdout` checks its split against. A missing adapter is named later, as ever."""
    from model.base import ModelLoadError, resolve_adapter

    try:
        path = resolve_adapter(settings.adapter, settings.base)
        return json.loads((Path(path) / "model_card.json").read_text()) if path else {}
    except (ModelLoadError, OSError, ValueError):
        return {}


def adapter_card(settings: Settings) -> Path:
    """The model card `sentinel eval --card` writes to; checked before the model loads."""
    from model.base import ModelLoadError, resolve_adapter

    try:
        path = resolve_adapter(settings.adapter, settings.base)
    except ModelLoadError as exc:
        raise fail(str(exc)) from None
    card = Path(path) / "model_card.json" if path else None
    if card is None or not card.is_file():
        raise fail(f"--card needs an adapter directory with a model_card.json (adapter: {settings.adapter!r})")
    return card


def print_report(report: dict[str, Any]) -> None:
    from model.labels import LABELS
    from model.report import averaged

    out.print(
        f"[bold]{report['model']}[/bold] on {report['data']}: n={report['n']}  accuracy={report['accuracy']:.3f}  "
        f"f1_macro={report['f1_macro']:.3f}  f1_weighted={report['f1_weighted']:.3f}  skipped={report['skipped']}"
    )
    per = Table(title="per class")
    for col in ("label", "precision", "recall", "f1", "support"):
        per.add_column(col)
    present = averaged(report["confusion"])
    for label in LABELS:
        c = report["per_class"][label]
        # A class with no examples and no predictions has no figures (0/0), and macro F1 leaves it
        # out: 0.000 here read as a class the model got wholly wrong, and disagreed with f1_macro.
        figures = (f"{c[k]:.3f}" if label in present else "-" for k in ("precision", "recall", "f1"))
        per.add_row(label, *figures, str(c["support"]))
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
    """Our batched prefix-cached scorer against per-post generate + parsing, on the same posts; with
    the n-gram head the commands pool (SENTINEL_NGRAM_HEAD), its cost beside the scorer's."""
    from sentinel.benchmarks import bench_classify
    from sentinel.synthetic import synthetic_posts

    settings = model_settings(base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size,
                              scorer=True)
    with err.status("benchmarking (naive baseline is slow) ..."):
        result = bench_classify(settings, synthetic_posts(posts, words=words), naive_posts,
                                pool=lambda classifier: with_ngram_head(classifier, settings))
    print(json.dumps(result))


# ---------------------------------------------------------------------------- training


@app.command("train-head")
def train_head_cmd(
    data: Annotated[list[Path], typer.Option("--data", exists=True, dir_okay=False, help="training file(s); repeat for several")],
    select: Annotated[Path, typer.Option("--select", exists=True, dir_okay=False, help="sentinel splits's select.csv (text, label, source): chooses the fusion weight")],
    out_dir: Annotated[Path, typer.Option("--out", help="where ngram_head.npz and its card ngram_head.json go")],
    fmt: Annotated[str, typer.Option("--format", help="auto | tfns | alpaca | csv | jsonl | seed-discord (its score file: --scores)")] = "auto",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    label_map: Annotated[Optional[str], typer.Option("--label-map")] = None,
    scores: ScoresOpt = None,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    base: BaseOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
    batch_size: BatchOpt = None,
) -> None:
    """Train the n-gram head (SENTINEL_NGRAM_HEAD) on labelled files and choose its fusion weight on
    --select with the configured classifier; writes the head and its card."""
    import numpy as np

    from model.labels import LABELS
    from training.data import DataError, load_examples, parse_label_map
    from training.indomain import sha256
    from training.ngram import EPOCHS, choose_weight, head_card, read_select, sweep_weights, train_head

    settings = model_settings(base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size)
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out {out_dir}: a file, not a directory")
    if same := [path for path in data if sha256(path) == sha256(select)]:
        # A head trained on the rows its weight is chosen on would choose the weight it learnt.
        raise fail(f"--data {same[0]} is the --select file: the weight must be chosen on rows the head never trained on")
    try:
        examples = [e for path in data for e in load_examples(path, fmt, text_col=text_col, label_col=label_col,
                                                             label_map=parse_label_map(label_map), scores_path=scores).examples]
        chosen_on, sources = read_select(select)
    except (DataError, ValueError) as exc:
        raise fail(str(exc)) from None
    if not examples:
        raise fail("the --data files hold no usable examples")
    out.print(f"train {len(examples)}  select {len(chosen_on)}")
    # The model alone (never a head, SENTINEL_NGRAM_HEAD aside): the weight is chosen against what it will be pooled with.
    scorer = load_scorer(settings)
    judged = classify_all(scorer, [e.text for e in chosen_on], settings.batch_size, "scoring select")
    p_model = np.array([[j.probs[label] for label in LABELS] for j in judged], dtype=np.float64)
    with progress() as bar:
        task = bar.add_task("training the head", total=EPOCHS)
        head = train_head([e.text for e in examples], [e.label for e in examples], seed, on_epoch=lambda _: bar.advance(task))
    select_labels = [e.label for e in chosen_on]
    sweep = sweep_weights(p_model, head.probs([e.text for e in chosen_on]), select_labels, sources)
    w = choose_weight(sweep)
    head.card = head_card(w=w, sweep=sweep, select=select, scored_with=scorer.info.id, files=data, fmt=fmt,
                          labels=[e.label for e in examples], seed=seed, buckets=head.buckets, select_rows=len(chosen_on),
                          text_col=text_col, label_col=label_col, label_map=label_map, scorer_info=scorer.info,
                          batch_size=settings.batch_size)
    try:
        head.save(out_dir)
    except OSError as exc:
        raise os_failure(exc) from None
    at_w, at_0 = head.card["fusion"]["select_at_w"], head.card["fusion"]["select_at_0"]
    print(json.dumps({"out": str(out_dir), "w": w, "select_found_at_6": [at_0["found_at_6"], at_w["found_at_6"]],
                      "select_f1_macro": [at_0["f1_macro"], at_w["f1_macro"]],
                      "select_tfns_f1_weighted": [at_0["tfns_f1_weighted"], at_w["tfns_f1_weighted"]]}))


# Every linear layer: training.trainer.DEFAULT_TARGETS, spelled out so the CLI starts without torch.
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def warm_start_shape_conflicts(ctx: typer.Context, init_dir: Path, given: dict[str, Any]) -> list[str]:
    """The LoRA shape options given on the command line that the --init-adapter's own shape
    overrides: a warm start trains the adapter's r, alpha, dropout and targets, whatever was asked."""
    config = json.loads((init_dir / "adapter_config.json").read_text())
    targets = config.get("target_modules") or []
    theirs = {"r": config.get("r"), "alpha": config.get("lora_alpha"), "dropout": config.get("lora_dropout", 0.0),
              "target_modules": targets if isinstance(targets, str) else sorted(targets)}
    ours = {**given, "target_modules": sorted(t.strip() for t in given["target_modules"].split(",") if t.strip())}
    conflicts = []
    for name in (name for name in given if given_on_the_command_line(ctx, name)):
        if name == "target_modules" and isinstance(targets, str):
            # PEFT reads a string as a regex matched against each module's full name, a list as name
            # suffixes: which modules the regex takes depends on the base, so no list can be said to match it.
            conflicts.append(f"--target-modules {given[name]} asked, the PEFT regex {targets!r} there, which no list of module "
                             "names can be checked against")
        elif ours[name] != theirs[name]:
            conflicts.append(f"--{name.replace('_', '-')} {given[name]} asked, "
                             f"{','.join(theirs[name]) if name == 'target_modules' else theirs[name]} there")
    return conflicts


def given_on_the_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given, not left at its default. By the source's name: typer's
    ParameterSource is not always the one `click` exports."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option("--data", exists=True, dir_okay=False, help="training file(s); repeat for several")],
    out_dir: Annotated[Path, typer.Option("--out", help="where the adapter and its model card go")],
    fmt: Annotated[str, typer.Option("--format", help="auto | tfns | alpaca | csv | jsonl | seed-discord (its score file: --scores)")] = "auto",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    label_map: Annotated[Optional[str], typer.Option("--label-map")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help=SKIP_BAD_HELP)] = False,
    scores: ScoresOpt = None,
    val_data: Annotated[Optional[Path], typer.Option("--val-data", exists=True, dir_okay=False, help="explicit validation file (else a stratified split)")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction")] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    r: Annotated[int, typer.Option("--r", min=1)] = 16,
    alpha: Annotated[int, typer.Option("--alpha", min=1)] = 32,
    dropout: Annotated[float, typer.Option("--dropout", help="LoRA dropout; costly on CPU")] = 0.0,
    target_modules: Annotated[str, typer.Option("--target-modules", help="comma-separated")] = LORA_TARGETS,
    learning_rate: Annotated[float, typer.Option("--lr")] = 3e-4,
    epochs: Annotated[float, typer.Option("--epochs")] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="stop after N optimizer steps, whatever --epochs gives (validated at the last); 1 with --eval-limit 4 is a smoke test")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1)] = 1,
    max_length: Annotated[int, typer.Option("--max-length", min=8, help="post tokens kept")] = 128,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", min=0)] = 20,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.0,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = False,
    class_weighting: Annotated[str, typer.Option("--class-weighting", help="none | weights | balance")] = "none",
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="optimizer steps between validations")] = 200,
    patience: Annotated[int, typer.Option("--patience", min=1, help="validations without gain before stopping")] = 3,
    select_metric: Annotated[str, typer.Option("--select-metric", help="f1_weighted | f1_macro: what chooses the checkpoint")] = "f1_weighted",
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", min=1, help="validate on the first N validation rows only (a smoke test: the card's figures are then on those N)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from OUT/checkpoint, with the command that wrote it (only --epochs, --max-steps, --patience, --eval-every, --gradient-checkpointing, --device, --dtype may change)")] = False,
    init_adapter: Annotated[Optional[Path], typer.Option("--init-adapter", help="start from this LoRA adapter ('default': the shipped one) instead of a fresh one, in its own r, alpha, dropout and targets")] = None,
    base: BaseOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Fine-tune a LoRA adapter with the classifier's own prompt; writes the adapter and a model card."""
    from rich.progress import Progress as RichProgress

    from model.base import DEFAULT_ADAPTER, ModelLoadError, resolve_adapter
    from training.data import DataError, parse_label_map
    from training.split import training_split
    from training.trainer import ResumeError, TrainConfig, Trainer, write_model_card

    settings = model_settings(base=base, device=device, dtype=dtype, quantize=quantize)
    if class_weighting not in ("none", "weights", "balance"):
        raise fail("--class-weighting must be none, weights or balance")
    if select_metric not in ("f1_weighted", "f1_macro"):
        raise fail("--select-metric must be f1_weighted or f1_macro")
    try:
        split, skipped = training_split(
            data, val_data, val_fraction, seed, fmt=fmt, text_col=text_col, label_col=label_col,
            label_map=parse_label_map(label_map), skip_bad=skip_bad, scores_path=scores,
        )
    except (DataError, ValueError) as exc:
        raise fail(str(exc)) from None
    name_skipped(skipped)
    split_train, validation, overlap = split.train, split.validation, split.overlap_removed
    out.print(f"train {len(split_train)}  validation {len(validation)}  removed from train (also in validation) {overlap}  skipped rows {len(skipped)}")
    if not split_train or not validation:  # before the model loads and OUT is made
        raise fail(f"{len(split_train)} training and {len(validation)} validation examples: both need some "
                   "(more data, another --val-fraction, or --val-data)")
    try:
        init_dir = resolve_adapter(str(init_adapter), settings.base) if init_adapter else None
    except ModelLoadError as exc:
        raise fail(f"--init-adapter: {exc}") from None
    if str(init_adapter) == DEFAULT_ADAPTER and init_dir is None:
        raise fail(f"--init-adapter {DEFAULT_ADAPTER}: the shipped adapter fits only the default base, not {settings.base}")
    # A local adapter only: its card records the warm start from the adapter's own config file.
    if init_dir is not None and not (Path(init_dir) / "adapter_config.json").is_file():
        raise fail(f"--init-adapter {init_adapter}: not a saved LoRA adapter (no adapter_config.json there)")
    if init_dir is not None and (conflicts := warm_start_shape_conflicts(
            ctx, Path(init_dir), {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": target_modules})):
        raise fail(f"--init-adapter {init_adapter} trains on in its own LoRA shape, not the one asked ({'; '.join(conflicts)}): "
                   "leave those options out, or train a fresh adapter without --init-adapter")
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out {out_dir}: a file, not a directory")
    if not [t for t in target_modules.split(",") if t.strip()]:
        raise fail("--target-modules: name at least one module, e.g. q_proj,v_proj")
    cfg = TrainConfig(
        base=settings.base, r=r, alpha=alpha, dropout=dropout, target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()),
        learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
        max_length=max_length, warmup_steps=warmup_steps, weight_decay=weight_decay, seed=seed,
        gradient_checkpointing=gradient_checkpointing, quantize=settings.quantize, class_weighting=class_weighting,
        eval_every=eval_every, patience=patience, select_metric=select_metric, eval_limit=eval_limit, device=settings.device, dtype=settings.dtype,
        cache_dir=settings.cache_dir, init_adapter=Path(init_dir) if init_dir else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, split_train, validation, out_dir)
    bar = RichProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} samples/s  val F1w {task.fields[f1]}"),
        TimeRemainingColumn(), console=err,
    )
    with bar:
        task = bar.add_task("training", total=None, loss=float("nan"), rate=0.0, f1="-")

        def on_progress(event: dict[str, Any]) -> None:
            if "eval" in event:
                bar.update(task, f1=f"{event['eval']['f1_weighted']:.4f}")
                err.print(f"step {event['step']}: validation f1_weighted={event['eval']['f1_weighted']:.4f} "
                          f"f1_macro={event['eval']['f1_macro']:.4f} accuracy={event['eval']['accuracy']:.4f}")
            else:
                bar.update(task, total=event["total"], completed=event["step"], loss=event["loss"], rate=event["samples_per_s"])
                if not err.is_terminal and event["step"] % 20 == 0:  # logs and CI get a line now and then
                    err.print(f"step {event['step']}/{event['total']} loss {event['loss']:.4f} {event['samples_per_s']:.1f} samples/s")

        try:
            result = trainer.run(resume=resume, progress=on_progress)
        except (ModelLoadError, FileNotFoundError, ResumeError) as exc:
            raise fail(str(exc)) from None
    split_info = {"train": len(split_train), "validation": len(validation), "overlap_removed": overlap, "seed": seed,
                  "val_fraction": None if val_data else val_fraction, "skipped_rows": len(skipped)}
    card = write_model_card(result, cfg, trainer.info, list(data), split_info, validation_file=val_data,
                            init_identity=trainer.init_adapter_identity)
    out.print(json.dumps({"out": str(out_dir), "validation": {k: card["validation_metrics"].get(k) for k in ("f1_weighted", "f1_macro", "accuracy", "n")},
                          "steps": result.state.step, "best_step": result.state.best_step, "seconds": round(result.seconds, 1),
                          "samples_per_s": round(result.samples_per_s, 2)}))


@app.command()
def adapt(
    export: Annotated[Path, typer.Option("--export", exists=True, dir_okay=False, help="meritcircle_cleaned_discord.csv: its pre-2023 messages, less the select and test texts")],
    out_dir: Annotated[Path, typer.Option("--out", help="where the adapter and its card go")],
    r: Annotated[int, typer.Option("--r", min=1, help="LoRA rank: the classifier trained from it keeps it")] = 8,
    alpha: Annotated[int, typer.Option("--alpha", min=1)] = 16,
    target_modules: Annotated[str, typer.Option("--target-modules", help="comma-separated")] = LORA_TARGETS,
    learning_rate: Annotated[float, typer.Option("--lr")] = 2e-4,
    epochs: Annotated[float, typer.Option("--epochs", min=0.0001)] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="at most this many optimizer steps, as sentinel train's")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", min=1, help="measure the held-out perplexity on the first N held-out blocks only (a smoke test)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    block: Annotated[int, typer.Option("--block", min=2, help="tokens per packed training sequence")] = 128,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    base: BaseOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Domain-adaptive pretraining: a LoRA adapter that learns the community's language from unlabelled
    messages (next-token loss), for `sentinel train --init-adapter` to fine-tune the classifier from."""
    from rich.progress import Progress as RichProgress

    from model.base import ModelLoadError
    from training.adapt import AdaptConfig, adapt as run_adapt, export_corpus
    from training.data import DataError

    settings = model_settings(base=base, device=device, dtype=dtype)
    try:
        texts, source = export_corpus(export)
    except (DataError, ValueError) as exc:
        raise fail(str(exc)) from None
    out.print(f"{len(texts)} messages to adapt on; left out: " + ", ".join(f"{why} {n}" for why, n in source["left_out"].items()))
    cfg = AdaptConfig(base=settings.base, r=r, alpha=alpha, target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()),
                      learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, eval_limit=eval_limit, batch_size=batch_size, block=block, seed=seed,
                      device=settings.device, dtype=settings.dtype, cache_dir=settings.cache_dir)
    bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=err)
    with bar:
        task = bar.add_task("adapting", total=None, loss=float("nan"))

        def on_progress(event: dict[str, Any]) -> None:
            bar.update(task, total=event["total"], completed=event["step"], loss=event["loss"])
            if not err.is_terminal and event["step"] % 20 == 0:
                err.print(f"step {event['step']}/{event['total']} loss {event['loss']:.4f}")

        try:
            card = run_adapt(cfg, texts, out_dir, source, on_progress)
        except (ModelLoadError, ValueError) as exc:
            raise fail(str(exc)) from None
    out.print(json.dumps({"out": str(out_dir), "held_out_perplexity": card["held_out_perplexity"], "steps": card["steps"],
                          "seconds": card["training_seconds"]}))


# ---------------------------------------------------------------------------- streaming


def fail(message: str) -> typer.Exit:
    # Messages carry file paths, exception text and log lines: print them, never parse them as markup.
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


def redis_errors() -> tuple[type[Exception], ...]:
    """What a Redis client raises. redis-py's cluster client raises some of its own (no node
    reachable, a TLS handshake refused) outside RedisError."""
    from redis.exceptions import RedisClusterException, RedisError

    return (RedisError, RedisClusterException)


def redis_failure(exc: Exception) -> typer.Exit:
    """A Redis error as one redacted line. Connection and auth failures are configuration
    problems, and their traceback runs through client frames that hold the URL and password."""
    hint = ""
    settings = get_settings()
    url = settings.redis_url
    if url is not None and url.get_secret_value().startswith("rediss://") and "reset by peer" in str(exc):
        # TLS 1.3 reports a refused client certificate only as a closed connection.
        hint = " (the server closed the TLS connection: does it require a client certificate? ssl_certfile and ssl_keyfile in REDIS_URL's query)"
    elif type(exc).__name__ in ("MovedError", "AskError") and not settings.redis_cluster:
        # A plain client on a cluster node: the key lives on another node. (Through the cluster
        # client, a MOVED that outran its retries is said as it is: the flag is set.)
        from stream.redis_client import cluster_node_problem

        return fail(cluster_node_problem())
    elif "NOAUTH" in str(exc) or "HELLO must be called" in str(exc):
        hint = " (the server needs a password: in REDIS_URL, redis://:PASSWORD@host:port, or SENTINEL_REDIS_PASSWORD)"
    elif "WRONGPASS" in str(exc) or "invalid username-password pair" in str(exc):
        hint = " (the server refused the password: REDIS_URL's, or SENTINEL_REDIS_PASSWORD)"
    return fail(redact(f"Redis: {type(exc).__name__}: {exc}") + hint)  # the hint holds no secret: its redis://:PASSWORD@ stays


def kafka_errors() -> tuple[type[Exception], ...]:
    """What the Kafka client raises (a refused connection included)."""
    from aiokafka.errors import KafkaError

    return (KafkaError,)


def kafka_failure(exc: Exception, then: str = "") -> typer.Exit:
    """One line for a Kafka error; `then` adds what the command got done before it."""
    # aiokafka's errors name their own class ("KafkaConnectionError: Unable to bootstrap ..."): once is enough.
    said = str(exc)
    said = said if type(exc).__name__ in said else f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    return fail(redact(f"Kafka: {said} (KAFKA_BROKER, SENTINEL_KAFKA_*)") + then)


def os_failure(exc: OSError) -> typer.Exit:
    """A file the command reads or writes (a TLS CA file among them), as one line."""
    return fail(redact(f"{exc.strerror or type(exc).__name__}: {exc.filename or exc}"))


def writable_outputs(*paths: Path | None) -> None:
    """Output options checked before the work that fills them, not after."""
    from stream.tools.files import output_problem

    for path in paths:
        if path is not None and (problem := output_problem(path)):
            raise fail(f"cannot write {path}: {problem}")


@app.command()
def worker() -> None:
    """The long-running production worker; all configuration comes from the environment."""
    import asyncio
    import logging

    from sentinel.run import START_STEPS, open_store, tell_start_step
    from stream.redis_client import cluster_mode_problem, credentials_refused
    from stream.kafka import ensure_topics, held_logs, held_messages, partition_count, release_logs, worker_topics
    from stream.model_process import ModelProcess
    from stream.model_thread import ModelThread
    from stream.tools.services import listening_sockets
    from stream.windows import partitions_mismatch
    from stream.worker import build_worker

    settings = model_settings(stream="worker", scorer=True)
    if not settings.kafka_broker or not settings.redis_url:
        raise fail("the worker needs KAFKA_BROKER and REDIS_URL (sentinel run starts an embedded stack for you)")
    # Before Kafka and the model: Faust binds its web server last, and a taken port was a traceback
    # from deep in its start-up, exit 1, after the model had loaded. Held from here on and served
    # on by Faust, so no other process can take it in between.
    try:
        listeners = listening_sockets(settings.web_host, settings.web_port)
    except OSError as problem:
        hint = " (another process listens there: give every worker its own port)" if problem.errno == errno.EADDRINUSE else ""
        raise fail(f"SENTINEL_WEB_PORT={settings.web_port}: cannot listen on {settings.web_host}:{settings.web_port}: "
                   f"{problem.strerror or problem}{hint}") from None
    checking, loading, starting = START_STEPS  # what sentinel run's progress line says until /readyz answers
    tell_start_step(settings.start_step_file, checking)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Faust runs on this loop too
    # The topics before the model: a restart that will stop on them should not load a 7B model first.
    # aiokafka's own lines held back meanwhile: a dead broker is our one line, their detail in it.
    with held_logs("aiokafka") as held:
        try:
            loop.run_until_complete(ensure_topics(settings, worker_topics(settings)))
            partitions = loop.run_until_complete(partition_count(settings, settings.topic_posts))
        except Exception as exc:  # noqa: BLE001 - any start-up failure to reach Kafka is reported the same way
            # One structured line (JSON under SENTINEL_LOG_JSON) and a non-zero exit, so the pod restarts
            # with backoff; not a traceback through client frames that hold connection settings.
            context = {"error": redact(f"{type(exc).__name__}: {exc}")} | ({"detail": redact(held_messages(held))} if held else {})
            logging.getLogger("sentinel.worker").error("cannot reach Kafka at start-up", extra=context)
            raise typer.Exit(1) from None
    release_logs(held)
    if partitions is not None and partitions != settings.partitions:
        # The alert frontier waits for partitions 0..SENTINEL_PARTITIONS-1: fewer than the topic has
        # and boundaries are judged before the others are past them, more and it waits on partitions
        # that never come. Refused, not warned: judging would be wrong for as long as it ran.
        raise fail(partitions_mismatch(settings.topic_posts, settings.partitions, partitions, "refusing to start"))
    store = open_store(settings)
    # Before the model loads, as the topics: a plain client on a cluster node would write part of
    # each batch and stop on the rest, after every restart.
    if cluster_problem := loop.run_until_complete(cluster_mode_problem(store.redis)):
        raise fail(cluster_problem)
    if refused := loop.run_until_complete(credentials_refused(store.redis)):
        raise redis_failure(refused)
    tell_start_step(settings.start_step_file, loading)
    model_thread = ModelThread()  # makes the model calls, one at a time, off the event loop
    if model_apart(settings):
        classifier: Scorer = ModelProcess.start(functools.partial(scorer_in_child, settings))
    else:
        classifier = loaded_unless_stopped(model_thread, settings)  # loaded where it will run
    tell_start_step(settings.start_step_file, starting)  # its web server, and /readyz, come last
    try:
        run_faust(build_worker(settings, classifier, store, model_thread=model_thread, listeners=listeners), settings)
    finally:
        if isinstance(classifier, ModelProcess):
            classifier.close()


def loaded_unless_stopped(model_thread: Any, settings: Settings) -> Scorer:
    """The model, loaded on the worker's model thread; a Ctrl-C or SIGTERM during the load (a pod
    deleted as it starts) says its stop line and ends the process at once, 130 or 143. The load
    cannot be cut short on its thread, which the interpreter joins at exit (a ThreadPoolExecutor's),
    and once the stop line is said later signals are ignored (sentinel.stops): a stop unwound to the
    group's stop line left the process up until the model had loaded (minutes for a large one), and
    only the kubelet's SIGKILL ended it sooner, where a SIGTERM ended it at once before."""
    try:
        return model_thread.load(lambda: load_classifier(settings))
    except (KeyboardInterrupt, SystemExit) as exc:
        code = stops.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else exc.code
        if code not in (stops.INTERRUPTED, stops.TERMINATED):
            raise
        say_stopped("interrupted" if code == stops.INTERRUPTED else "terminated")
        logging.shutdown()  # os._exit skips it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # nothing of the worker runs yet: its sockets and connections end with the process


def model_apart(settings: Settings) -> bool:
    """SENTINEL_MODEL_PROCESS resolved. On a GPU the model's kernel launches wait for the event loop
    at one interpreter lock (1.2-1.5 times as long a call on an H200), so `auto` gives it a process of
    its own there; on CPU the same measured 8-10% slower (docs/benchmarks.md, "The pipeline on a
    GPU"), and the keyword scorer has no model to move."""
    if settings.model_process != "auto":
        return settings.model_process == "true"
    if settings.base == "lexicon":
        return False
    if settings.device == "auto":
        from model.base import resolve_device  # the device the loader will pick

        return resolve_device("auto").type == "cuda"
    return settings.device.startswith("cuda")


def scorer_in_child(settings: Settings) -> Scorer:
    """The model process's factory (stream/model_process.py): its logs go where the worker's go."""
    setup_logging(settings.log_level, settings.log_json)
    return load_classifier(settings)


def run_faust(worker: Any, settings: Settings) -> None:
    """Run the worker under Faust's Worker, with our logging and our SIGTERM (stream.worker.Shutdown)."""
    import asyncio

    import faust

    class Worker(faust.Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Faust's start-up spinner writes terminal control codes and " OK ^" to stdout, a line
            # that breaks a JSON log pipeline; without it Faust logs "Ready" through our logging.
            self.spinner = None

        def _setup_logging(self) -> None:  # keep our structured logging instead of mode's
            setup_logging(settings.log_level, settings.log_json)

        def _on_sigterm(self) -> None:  # Kubernetes: drain and commit within the grace period
            if not getattr(self, "_draining", False):
                self._draining = True
                asyncio.ensure_future(worker.shutdown.run(settings.shutdown_grace), loop=self.loop)

    Worker(worker.app, loglevel=settings.log_level.lower(), redirect_stdouts=False, quiet=True).execute_from_commandline()


@app.command()
def run(
    file: Annotated[Path, typer.Argument(readable=False, help="JSONL of posts (or recorded records); a file, not a pipe")],
    alerts_out: Annotated[Optional[Path], typer.Option("--alerts-out", help="write alert records here as JSONL")] = None,
    summary_json: Annotated[Optional[Path], typer.Option("--summary-json", help="write the summary here as JSON")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="give up when processing takes longer (seconds)")] = 3600.0,
    worker_log_path: Annotated[Optional[Path], typer.Option("--worker-log", help="keep the worker's log here (else a temp file, kept only on failure or where a stop finds an error, or a warning before the stop, in it)")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="worker processes in the consumer group")] = 1,
    with_console: Annotated[bool, typer.Option("--console", help="after the run, keep the stack up and serve the console until Ctrl-C")] = False,
    report_path: Annotated[Optional[Path], typer.Option("--report", dir_okay=False, help="also write the daily report of every day in the data (html, md or csv by suffix)")] = None,
    input_ended: Annotated[bool, typer.Option(
        "--input-ended", help="FILE is the whole input: settle the end of a configured stack as the embedded one's (judge every scope "
                              "through the newest post of any partition, then trim every scope a retention behind it). Safe only when "
                              "nothing else writes to these topics or this Redis; implied on the embedded stack")] = False,
) -> None:
    """The main job: embedded stack (unless configured), a worker, FILE replayed at full speed, a summary."""
    import signal
    import tempfile

    from sentinel.run import RunError, connected, half_configured, notifying, run_once
    from stream.tools.replay import holds_a_line, recorded_partitions
    from stream.tools.services import run_async

    settings = model_settings(stream="worker", scorer=True)
    writable_outputs(alerts_out, summary_json, report_path, worker_log_path)
    if notice := notifying(settings):
        err.print(f"warning: {notice}", soft_wrap=True, markup=False, highlight=False)
    refuse_unreadable_twice(file, "run")
    if wrong := not_posts(file, "run"):  # every line dead-lettered and a summary of nothing: the wrong file
        raise fail(wrong)  # refused before the embedded stack, which takes seconds to start, as replay refuses it
    if wrong := recording_not_of_posts(settings, file):
        raise fail(wrong)
    # Counting and reading a recording of a retained topic take a while: a stop there ends as one
    # mid-run does (nothing was started yet, so nothing needs stopping).
    outputs = [(option, path) for option, path in (("--alerts-out", alerts_out), ("--summary-json", summary_json),
                                                   ("--report", report_path)) if path]
    with stops_said(lambda how: how + not_written(outputs)):
        with file.open("rb") as handle:
            total = sum(1 for number, line in enumerate(handle, start=1) if holds_a_line(line, number))
        recorded = recorded_partitions(file)  # once, for the topics and the replay: each pass reads the whole recording
    settings = recording_partitions(settings, file, recorded)
    if with_console:
        settings = run_console_settings(settings)
    # A summary of nothing would read as a run. Said after the settings' own errors (one URL of the
    # two) and before the embedded stack starts, which takes seconds, as a file of no post is; and
    # before the temp worker log is made, which only the `try` below removes when no worker wrote it.
    if problem := half_configured(settings):
        raise fail(problem)
    if not total:
        raise fail(f"{file} holds no lines: nothing to run")
    worker_log = worker_log_path or Path(tempfile.mkstemp(prefix="sentinel-worker-", suffix=".log")[1])
    written: list[Path] = []  # the outputs written whole: a stop after them (the console's Ctrl-C) loses none
    finished = False  # the run ended as it should (its summary printed): a stop then ends only --console's look
    try:
        with connected(settings) as (live, embedded):
            with progress() as bar:
                sent_task = bar.add_task("replayed", total=total)
                done_task = bar.add_task("processed", total=total)
                summary, alerts = run_async(
                    run_once(
                        live,
                        file,
                        embedded=embedded,
                        timeout=timeout,
                        input_ended=input_ended,
                        workers=workers,
                        worker_log=worker_log,
                        recorded=recorded,
                        on_sent=lambda n: bar.update(sent_task, completed=n),
                        on_consumed=lambda n: bar.update(done_task, completed=n),
                        # what it waits for while the worker starts (loading a model can take minutes)
                        on_phase=lambda text: bar.say(done_task, detail=text),
                    )
                )
            if report_path:  # here, while an embedded stack's Redis still holds the run's roll-ups
                write_run_report(live, report_path)
                written.append(report_path)
                out.print(f"report written to {report_path}", soft_wrap=True, markup=False, highlight=False)
            print_run_summary(file, summary, alerts, alerts_out=alerts_out, summary_json=summary_json, written=written)
            finished = True
            if with_console:
                # The stack stays up for exploring what the run saw; Ctrl-C ends both.
                from sentinel.run import serve_console

                announce_console(live)
                serve_console(live)
    except (KeyboardInterrupt, SystemExit) as exc:
        if isinstance(exc, SystemExit) and exc.code != 128 + signal.SIGTERM:
            raise
        # The stack and the workers are stopped by now; say what was not written, and where their
        # log is, or that it went.
        code, how = (130, "interrupted") if isinstance(exc, KeyboardInterrupt) else (128 + signal.SIGTERM, "terminated")
        unwritten = [(option, path) for option, path in (("--alerts-out", alerts_out), ("--summary-json", summary_json),
                                                        ("--report", report_path)) if path and path not in written]
        said = how + not_written(unwritten)
        # A stop the user asked for is no failure: a temp log is kept only where it says an error, or
        # a warning before the stop (why the run was stopped, maybe: it looked stuck). A SIGTERM to a
        # finished run's console (its usual end under a supervisor), or one while the worker still
        # imported (it logs `terminated`), left one in the temp folder each time.
        if worker_log_path is None and (finished or not log_worth_keeping(worker_log)):
            worker_log.unlink(missing_ok=True)
        else:
            said += f" (worker log: {worker_log})"
        say_stopped(said)
        raise typer.Exit(code) from None
    except RunError as exc:
        tail = worker_log.read_text(errors="replace").splitlines()[-30:]
        if not tail and worker_log_path is None:  # no worker got to write: nothing to point at or keep
            worker_log.unlink(missing_ok=True)
            raise fail(str(exc)) from None
        err.print("\n".join(tail), markup=False, highlight=False)
        raise fail(f"{exc} (worker log: {worker_log})") from None
    except redis_errors() as exc:
        raise redis_failure(exc) from None
    except kafka_errors() as exc:
        raise kafka_failure(exc) from None
    finally:
        # A temp log no worker wrote (a broker or Redis refused, a SIGTERM before the worker) is not
        # kept: each such run left an empty sentinel-worker-*.log in the temp folder.
        if worker_log_path is None and worker_log.exists() and not worker_log.stat().st_size:
            worker_log.unlink(missing_ok=True)
    if worker_log_path is None:
        worker_log.unlink(missing_ok=True)


def log_worth_keeping(path: Path) -> bool:
    """Whether the worker log at PATH is kept after a stop (stream.logs.worth_keeping); False where
    there is none."""
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            return worth_keeping(lines)
    except FileNotFoundError:
        return False


def not_posts(file: Path, command: str) -> str | None:
    """Why `sentinel run` or `replay` refuses FILE where no line is a JSON object (a CSV, a JSON
    array, the wrong file): every line would be dead-lettered. None where one line is (the rest are
    the DLQ's, as documented)."""
    from stream.tools.replay import no_json_object

    if wrong := no_json_object(file):
        return (f"{file}: no line is a JSON object ({wrong}); sentinel {command} reads posts, one JSON object a line "
                "(examples/demo-stream.jsonl), or the records sentinel record writes")
    return None


def not_a_posts_topic(settings: Settings, topic: str) -> str | None:
    """Which of the worker's own output topics TOPIC is ("alerts", "sentiment", "dead-letter"): a
    recording of one, sent into the posts topic, is dead-lettered whole. None for any other."""
    return {settings.topic_alerts: "alerts", settings.topic_sentiment: "sentiment", settings.topic_dlq: "dead-letter"}.get(topic)


def recording_not_of_posts(settings: Settings, file: Path) -> str | None:
    """Why `sentinel run` refuses FILE: a recording of the alerts, sentiment or dead-letter topic,
    whose records its worker would dead-letter every one of (run has no --topic: it sends to the
    posts topic). None for posts, or a recording of any other topic."""
    from stream.tools.replay import recorded_topic

    if (named := recorded_topic(file)) is None or not (what := not_a_posts_topic(settings, named[1])):
        return None
    number, recorded_in = named
    return (f"{file}:{number}: recorded from topic {recorded_in!r}, the {what} topic, not posts: sentinel run sends its file to "
            f"the posts topic, whose worker would dead-letter every record; run a recording of the posts topic "
            f"(sentinel record --topic {settings.topic_posts}), or compare alert recordings with sentinel compare-alerts")


def refuse_unreadable_twice(file: Path, command: str) -> None:
    """`sentinel run` and `replay` read FILE more than once (its lines and partitions counted, then
    sent, and `--from-line` names a line of it to resume from): `-`, a pipe or a terminal would be
    empty after the first pass. Refused, not spooled: a recording can be the size of a retained
    topic, and a copy the user makes is one they choose the place of and can resume from."""
    # Each problem one line, here rather than typer's checks: those print a four-line usage box, and
    # a path they cannot stat (a folder without search permission) passed them to a traceback.
    if str(file) != "-":
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:  # a dangling symlink too
            raise fail(f"{file} does not exist") from None
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror or type(exc).__name__}") from None
        if stat.S_ISDIR(mode):
            raise fail(f"{file} is a directory: sentinel {command} reads one JSONL file")
    if str(file) == "-" or not readable_twice(file):
        raise fail(f"{file}: not a regular file (stdin or a pipe?): sentinel {command} reads its file more than once (to count "
                   f"its lines and partitions, then to send them); write it to a file first (e.g. zcat posts.jsonl.gz > posts.jsonl)")
    try:
        file.open("rb").close()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or type(exc).__name__}") from None


def readable_twice(file: Path) -> bool:
    """A file, or /dev/null (reads the same, nothing, each time); not a pipe, socket, terminal or
    other character device: /dev/zero or /dev/urandom never end, and their line count ran until
    memory did (MemoryError)."""
    st = file.stat()
    if stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return True
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev


class NotPosts(ValueError):
    """`sentinel replay` of a file where no line is a JSON object (`not_posts`)."""


def not_written(unwritten: Sequence[tuple[str, Path]]) -> str:
    """What a stopped `sentinel run` says of the outputs it did not write. Nothing is written part
    way: alert records are JSON lines with no room for a mark, and a partial file read by
    `compare-alerts` would pass for a whole run's alerts (a file already there is left as it was)."""
    if not unwritten:
        return ""
    named = ", ".join(f"{option} {path}" for option, path in unwritten)
    return f": the run did not finish, so nothing was written to {named}; run it to the end for them"


# The most partitions a topic is created with from a recording's count (`sentinel run` on the
# embedded stack, `sentinel replay --create-topic`): one corrupt record line naming partition
# 2,147,483,646 would otherwise create that many. A real topic with more is created by its operator.
MAX_CREATED_PARTITIONS = 1024


class TooManyPartitions(ValueError):
    """A recording names more partitions than a topic is created with (MAX_CREATED_PARTITIONS)."""


def recording_partitions(settings: Settings, file: Path, recorded: int | None | EllipsisType = ...) -> Settings:
    """A recording keeps its per-partition order only on as many partitions as it names: the
    embedded stack takes its count (up to MAX_CREATED_PARTITIONS) unless SENTINEL_PARTITIONS is
    set; a count set that differs, or past that limit, is warned about (fewer: the records go where
    their keys hash). `recorded`: recorded_partitions(file), where the caller has it."""
    from stream.tools.replay import recorded_partitions

    if recorded is ...:
        recorded = recorded_partitions(file)
    if recorded is None or recorded == settings.partitions:
        return settings
    if "partitions" not in settings.model_fields_set and not settings.kafka_broker:
        if recorded <= MAX_CREATED_PARTITIONS:
            return settings.model_copy(update={"partitions": recorded})
        err.print(f"[yellow]warning:[/yellow] {escape(str(file))} names partition {recorded - 1:,}: the embedded stack creates at "
                  f"most {MAX_CREATED_PARTITIONS:,}, so its {settings.partitions} are used and per-partition order is not kept "
                  f"(a corrupt line? set SENTINEL_PARTITIONS to choose)")
        return settings
    err.print(f"[yellow]warning:[/yellow] {escape(str(file))} was recorded from {recorded} partitions but SENTINEL_PARTITIONS is "
              f"{settings.partitions}" + (": per-partition order is not kept" if recorded > settings.partitions else ""))
    return settings


def print_run_summary(file: Path, summary: dict[str, Any], alerts: list[dict[str, Any]], *, alerts_out: Path | None,
                      summary_json: Path | None, written: list[Path] | None = None) -> None:
    """The summary table; the files asked for, each whole or not at all (a stop part-way through
    writing leaves an earlier file as it was), and each added to `written` once it is in place."""
    from stream.tools.files import replaced_when_done

    roots = incident_roots(alerts)
    # The table's `incidents (roots)` row, in full: added after the run's own fields, which other tools read.
    for path, text in ((alerts_out, lambda: "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in alerts)),
                       (summary_json, lambda: json.dumps({**summary, "incidents": sum(roots.values()), "incident_roots": roots}, indent=2) + "\n")):
        if path:
            with replaced_when_done(path) as handle:
                handle.write(text())
            if written is not None:
                written.append(path)
    table = Table(title=f"sentinel run {file.name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("consumed", "valid", "dlq", "duplicates", "late_dropped", "ahead", "processed", "capped", "text_capped", "alerts", "wall_s",
                "posts_per_s"):
        table.add_row(key, str(summary[key]))
        if key == "alerts" and (incidents := incident_summary(alerts)):
            table.add_row("incidents (roots)", inert(incidents))
    for label, count in summary["labels"].items():
        table.add_row(f"label {label}", str(count))
    out.print(table)


def incident_roots(alerts: list[dict[str, Any]]) -> dict[str, int]:
    """{root scope: incidents} of the incidents the alert records make, commonest first; empty
    without grouping (no record carries an incident)."""
    roots = {a["incident_id"]: a.get("root_scope") or a["scope"] for a in alerts if a.get("incident_id")}
    return dict(Counter(roots.values()).most_common())


def incident_summary(alerts: list[dict[str, Any]], shown: int = 3) -> str | None:
    """'1 (asset:ETH)': how many incidents the alert records make and their commonest roots; None
    without grouping (no record carries an incident)."""
    common = list(incident_roots(alerts).items())
    if not common:
        return None
    named = ", ".join(root if n == 1 else f"{root} x{n}" for root, n in common[:shown])
    rest = len(common) - shown
    more = f", {rest} more root{'s' if rest > 1 else ''}" if rest > 0 else ""
    return f"{sum(n for _, n in common)} ({named}{more})"


def run_until_stopped(main: Coroutine[Any, Any, T], said: Callable[[str], str]) -> T:
    """`run_async(main)` for a command a person or a Job may stop: Ctrl-C (exit 130) and a SIGTERM
    (`timeout`, `kill`, a deleted Job; 143) unwind `main` alike and end with one line on stderr,
    `said("interrupted")` or `said("terminated")`: what was done and how to go on."""
    from stream.tools.services import run_async

    with stops_said(said):
        result = run_async(main)
    return result


@contextlib.contextmanager
def stops_said(said: Callable[[str], str], *, unwind: bool = True) -> Iterator[None]:
    """Inside, Ctrl-C (exit 130) and SIGTERM (143) end the command with one line on stderr,
    `said("interrupted")` or `said("terminated")`, also before its event loop starts (a large file
    counted): there a SIGTERM unwinds (`sigterm_unwinds`), where Python's default ended the process at
    once, with no word and -15 for an exit. `unwind=False` leaves SIGTERM's handler as it is (the
    group's, around every command: `sentinel console` and the worker keep theirs) and says only a
    SIGTERM something else made unwind (sentinel.stops, `sigterm_unwinds`)."""
    from stream.tools.services import sigterm_unwinds

    try:
        with sigterm_unwinds() if unwind else contextlib.nullcontext():
            yield
    except KeyboardInterrupt:
        code, how = stops.INTERRUPTED, "interrupted"
    except SystemExit as exc:
        if exc.code != stops.TERMINATED:
            raise
        code, how = stops.TERMINATED, "terminated"
    else:
        return
    say_stopped(said(how))
    raise typer.Exit(code) from None


def say_stopped(line: str) -> None:
    """The command's one stop line on stderr; a later Ctrl-C or SIGTERM no longer changes its exit."""
    stops.said()
    err.print(line, soft_wrap=True, markup=False, highlight=False)


@app.command("replay")
def replay_cmd(
    file: Annotated[Path, typer.Argument(readable=False, help="JSONL of posts (or recorded records); a file, not a pipe")],
    topic: Annotated[Optional[str], typer.Option("--topic", help="default: the posts topic (created if missing; a recording of the alerts, sentiment or DLQ topic is refused without --topic); another topic must exist unless --create-topic")] = None,
    speed: Annotated[str, typer.Option("--speed", help="X divides event-time gaps by X; max sends at full speed")] = "max",
    max_gap: Annotated[float, typer.Option("--max-gap", min=0, help="with --speed: the longest wait between two lines, in seconds of replay time (a longer gap is cut to it, with a warning)")] = 60.0,
    from_line: Annotated[int, typer.Option("--from-line", min=1, help="skip the lines before this one (to resume an interrupted replay); past the file's last line + 1 is an error")] = 1,
    create_topic: Annotated[bool, typer.Option("--create-topic", help="create --topic if the broker lacks it, also for an empty file (with the recording's partition count, else SENTINEL_PARTITIONS; the posts topic always with SENTINEL_PARTITIONS)")] = False,
    repartition: Annotated[bool, typer.Option("--repartition", help="send a recording into a topic with fewer partitions than it names (by key: per-partition order is not kept)")] = False,
) -> None:
    """Produce a JSONL file of posts (or recorded records) into Kafka."""
    from stream.kafka import ensure_topics, held_logs, release_logs
    from stream.tools.replay import (PartitionMismatch, ReplayResult, UnknownTopic, broker_topics, holds_a_line, no_json_object,
                                     recorded_partitions, recorded_topic, replay_lines, warn_stderr)

    settings = model_settings()
    if not settings.kafka_broker:
        raise fail("replay needs KAFKA_BROKER (the broker to send to); `sentinel run FILE` replays a file through an embedded broker and worker instead")
    try:
        pace = None if speed == "max" else float(speed)
    except ValueError:
        raise fail(f"--speed must be a number or max, not {speed!r}") from None
    if pace is not None and not pace > 0:  # NaN too
        raise fail("--speed must be positive")
    refuse_unreadable_twice(file, "replay")
    target = topic or settings.topic_posts
    result = ReplayResult(resume_line=from_line)  # a Ctrl-C before the first send resumes where this began

    def stopped(how: str) -> str:
        return f"{how}: {result.sent} messages sent; lines before {result.resume_line} are all in {target}: resume with --from-line {result.resume_line}"

    lines = to_send = last = 0  # the lines holding something, those of them from --from-line on, the last line's number
    with stops_said(stopped), file.open("rb") as handle:  # a recording of a retained topic takes a while to count
        for last, line in enumerate(handle, start=1):
            if holds_a_line(line, last):  # as sent: a first line of only a BOM is not one
                lines += 1
                to_send += last >= from_line
    if from_line > last + 1:  # last + 1 is a resume after the last line: nothing left, said below
        raise fail(f"--from-line {from_line}: {file} has " + (f"only {last:,} line{'s' * (last != 1)}" if last else "no lines")
                   + f" (--from-line {last + 1} would send nothing)")
    if topic is None and (named := recorded_topic(file)) is not None and named[1] != target:
        # `sentinel replay rec-sentiment-alerts.jsonl`: a recording names its topic, and without
        # --topic its records went into the posts topic, where the worker dead-lettered every one.
        number, recorded_in = named
        if what := not_a_posts_topic(settings, recorded_in):
            raise fail(f"{file}:{number}: recorded from topic {recorded_in!r}, the {what} topic, not posts: without --topic replay "
                       f"sends to the posts topic {target!r}, whose worker would dead-letter every record; nothing sent. Name the "
                       f"topic to send to with --topic ({recorded_in}-replay, say; --topic {target} sends them there all the same)")
        warn_stderr(f"{file}:{number}: recorded from topic {recorded_in!r}: sent to the posts topic {target!r} (--topic names another)")
    sending = False  # past the probe and the topic: a Kafka error from here on says where to resume

    def creatable() -> bool:
        """Whether a missing target is made: the posts topic, or --topic with --create-topic."""
        return topic is None or create_topic

    async def create_target(recorded: int | None) -> int:
        """Make the target topic; its partition count."""
        # The posts topic is the workers': SENTINEL_PARTITIONS, which they check it against (a
        # recording naming more is refused unless --repartition). Another topic, asked for by
        # --create-topic, takes the recording's count.
        taken = recorded if topic is not None and topic != settings.topic_posts else None
        if taken is not None and taken > MAX_CREATED_PARTITIONS:
            raise TooManyPartitions(f"{file} names partition {taken - 1:,}: --create-topic creates at most "
                                    f"{MAX_CREATED_PARTITIONS:,} (a corrupt line?); create {target!r} yourself to replay into it")
        partitions = taken or settings.partitions
        await ensure_topics(settings.model_copy(update={"partitions": partitions}), [target])
        return partitions

    async def go() -> None:
        with held_logs("aiokafka") as held:  # a dead broker is our one error line, not aiokafka's first
            known = await broker_topics(settings)  # an unreachable broker is an error, even for an empty file
        release_logs(held)
        if not lines:
            # The topic asked for is made all the same (--create-topic, or the posts topic): a script
            # that set a topic up so, then read it, found none.
            made = "" if target in known or not creatable() else f"; created topic {target!r} ({await create_target(None)} partitions)"
            err.print(f"[yellow]warning:[/yellow] {escape(str(file))} holds no lines: nothing to send{escape(made)}", soft_wrap=True)
            return
        if not to_send:  # a resume after the last line (or its trailing blank lines)
            err.print(f"[yellow]warning:[/yellow] {escape(str(file))} has no lines from --from-line {from_line} on: nothing to send")
            return
        if wrong := not_posts(file, "replay"):  # the worker would dead-letter every line: the wrong file, refused as run refuses it
            raise NotPosts(wrong)
        if from_line > 1 and (rest := no_json_object(file, from_line)):
            # A resume sends what the whole file's replay would have sent from there: the file holds
            # posts, so its bad lines are the DLQ's. Refusing would make the line a Ctrl-C named
            # (after the last post, before trailing bad lines) impossible to resume from.
            err.print(f"[yellow]warning:[/yellow] {escape(str(file))}: no line from --from-line {from_line} on is a JSON object "
                      f"({escape(rest)}): they are sent as the whole file's replay sends them, and the worker dead-letters them",
                      soft_wrap=True)
        recorded = recorded_partitions(file)  # once: each pass reads the whole recording
        partitions = known.get(target)
        if partitions is None:
            if not creatable():
                raise UnknownTopic(target, set(known))
            partitions = await create_target(recorded)
        if repartition and recorded is not None and recorded > partitions:
            warn_repartitioned(file, target, recorded, partitions)
        nonlocal sending
        sending = True
        with progress() as bar:
            task = bar.add_task("replayed", total=to_send)

            def sent(n: int) -> None:
                bar.update(task, completed=n, detail=f"event time {shown(result.reached)}" if result.reached is not None else None)

            await replay_lines(settings, file, target, pace, sent, max_gap_s=max_gap, from_line=from_line, repartition=repartition,
                               result=result, recorded=recorded)

    try:
        # A SIGTERM (`timeout`, `kill`, a Job deleted) stops the sends as Ctrl-C does, so what was
        # queued is delivered and the line to resume from is said, not lost with the process.
        run_until_stopped(go(), stopped)
    except UnknownTopic as exc:
        raise fail(f"--topic: {exc} (--create-topic creates it)") from None
    except PartitionMismatch as exc:
        raise fail(f"{exc}: replay into a topic with at least {exc.recorded} partitions, or pass --repartition") from None
    except TooManyPartitions as exc:
        raise fail(str(exc)) from None
    except NotPosts as exc:
        raise fail(f"{exc}; nothing sent") from None
    except kafka_errors() as exc:
        # A broker lost mid-replay: the lines before resume_line were acknowledged, as after Ctrl-C.
        raise kafka_failure(exc, f"; {result.sent} messages sent, lines before {result.resume_line} are all in {target}: "
                                 f"resume with --from-line {result.resume_line}" if sending else "") from None
    except OSError as exc:
        raise os_failure(exc) from None
    out.print(f"sent {result.sent} messages to {target}")


def warn_repartitioned(file: Path, topic: str, recorded: int, partitions: int) -> None:
    """`sentinel replay --repartition`, before anything is sent: a recording of more partitions
    than the topic has goes where its keys hash (replay_lines sends it so and says nothing: each
    command says it once, `sentinel run` at start-up)."""
    from stream.tools.replay import warn_stderr

    warn_stderr(f"{file} was recorded from {recorded} partitions but topic {topic!r} has {partitions}: "
                f"records go where their keys hash, so per-partition order is not kept")


@app.command("record")
def record_cmd(
    topic: Annotated[str, typer.Option("--topic")],
    # readable=False: an existing --out is replaced, not read (typer called one without read permission "not readable")
    out_file: Annotated[Path, typer.Option("--out", readable=False, help="the JSONL file to write, whole once the read is done "
                                                                          "(a file path: not -, /dev/stdout or a pipe)")],
    max_idle: Annotated[float, typer.Option("--max-idle", min=0, help="after the end offsets taken at the start, keep reading until this many seconds pass without a message (0: stop at them)")] = 0.0,
) -> None:
    """Write every record of a topic, from the beginning up to its end offsets when reading starts, as JSONL."""
    settings = model_settings()
    if not settings.kafka_broker:
        raise fail("record needs KAFKA_BROKER (the broker whose topic it reads)")
    written: list[int] = []  # the count, once record has replaced --out

    def stopped(how: str) -> str:
        # A Ctrl-C while the finished read is merged into --out (one step, no await) takes effect
        # only after it: the file is written then, and "nothing written" would send the user to read it all again.
        if written:
            return f"{how}: wrote {written[0]} records to {out_file} (the read had finished)"
        return f"{how}: nothing written to {out_file} (it is written once the whole read is done); run record again"

    with stops_said(stopped):  # a SIGTERM before the read, too, ends as one during it
        record_topic(settings, topic, out_file, max_idle, written, stopped)


def record_topic(settings: Settings, topic: str, out_file: Path, max_idle: float, written: list[int], stopped: Callable[[str], str]) -> None:
    """`sentinel record`, past its settings: `written` gets the count once --out is replaced."""
    from stream.kafka import held_logs, release_logs
    from stream.tools.files import own_stream
    from stream.tools.replay import UnknownTopic, broker_topics, record

    writable_outputs(out_file)  # before the read, which can take a retained topic's whole length
    if str(out_file) == "-" or (out_file.exists() and not Path(os.path.realpath(out_file)).is_file()):
        # /dev/stdout, a pipe: the read spills beside --out (in /dev), the file is meant to be left
        # as it was by a stopped read, and stdout carries the closing "wrote N records" line. `-`,
        # which means stdout to most tools, was written as a file named `-`.
        raise fail(f"--out {out_file}: not a regular file: record spills the read beside --out and writes the file whole once "
                   f"the read is done; give a file path (e.g. --out incident.jsonl)")
    if stream := own_stream(out_file):
        # `--out /dev/stdout > rec.jsonl`: a regular file all the same, which record replaced by a
        # rename, so the shell's own handle went on writing ("wrote N records", all after) to the
        # unlinked old file, and the command exited 0 where the docs promise an error.
        raise fail(f"--out {out_file}: that is this command's {stream}; record writes --out whole once the read is done, which "
                   f"would cut off what the shell writes there after it: give --out a file of its own (e.g. --out incident.jsonl)")

    async def go(update: Callable[[int], None]) -> int:
        with held_logs("aiokafka") as held:  # a dead broker is our one error line, not aiokafka's first
            await broker_topics(settings)
        release_logs(held)
        written.append(await record(settings, topic, out_file, max_idle, update))
        return written[0]

    try:
        with progress() as bar:
            task = bar.add_task("read", total=None)
            # A SIGTERM unwinds as Ctrl-C does, so the spill files beside --out go too; the file is
            # written only once the read is done, so a stopped read leaves it as it was.
            count = run_until_stopped(go(lambda n: bar.update(task, completed=n)), stopped)
    except UnknownTopic as exc:  # a typo in --topic: not "wrote 0 records" and an empty file
        raise fail(f"--topic: {exc}") from None
    except ValueError as exc:  # the output path
        raise fail(str(exc)) from None
    except kafka_errors() as exc:
        raise kafka_failure(exc) from None
    except OSError as exc:
        raise os_failure(exc) from None
    out.print(f"wrote {count} records to {out_file}")


@app.command()
def windows(
    scope: Annotated[Optional[str], typer.Option("--scope", help="one scope (all, asset:BTC, channel:x, source:y) or a glob (asset:*)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the current rolling windows, ending at the newest event time seen."""
    import asyncio

    from sentinel.run import RunError, open_store, refuse_cluster_node
    from stream.timefmt import parse_duration

    settings = model_settings(stream="reader")
    if not settings.redis_url:
        raise fail("windows needs REDIS_URL (the Redis the workers use)")

    from stream.alerts.silences import scope_name
    from stream.windows import matches_scope

    wanted = None
    if scope is not None:
        try:
            wanted = scope_name(scope)  # asset:eth is asset:ETH, as the windows name it
        except ValueError:
            wanted = scope.strip()  # no scope is named so: said below, with those there are

    async def collect() -> tuple[list[dict[str, Any]], list[str]]:
        store = open_store(settings)
        try:
            await refuse_cluster_node(store)
            known = await store.scopes()
            chosen = [sc for sc in known if wanted is None or matches_scope(sc, wanted)]
            specs = [parse_duration(w) for w in settings.windows.split(",")]
            return [(await store.window(sc, w)).as_dict() for sc in chosen for w in specs], known
        finally:
            await store.close()

    try:
        rows, known = asyncio.run(collect())
    except redis_errors() as exc:
        raise redis_failure(exc) from None
    except RunError as exc:
        raise fail(str(exc)) from None
    if wanted is not None and not rows:
        # Not a table of zeros: the console's page for it is a 404 too.
        err.print(f"[red]error:[/red] {escape(no_posts_for(wanted, known))}")
        raise typer.Exit(1)
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        # An empty table (headers, no rows) read as a broken command rather than an empty store.
        out.print("no windows yet: no posts counted (the workers write them as posts arrive)")
        return
    # Up to the newest post counted, not the clock: behind a backlog, or on a replay, that is hours
    # or months ago, and the table said nothing of it.
    ends = sorted({row["end"] for row in rows})
    upto = shown(ends[-1]) if len(ends) == 1 else f"{shown(ends[0])} .. {shown(ends[-1])}" if ends else ""
    table = Table(title="rolling windows", caption=f"each window ends {upto} (event time: through the newest post counted, of any scope)" if upto else None)
    for col in ("scope", "window", "posts", "positive", "negative", "neutral", "mean score"):
        table.add_column(col, overflow="fold")  # folded, not cut to "chan…" on 80 columns
    for row in rows:
        lab = row["labels"]
        table.add_row(inert(row["scope"]), row["window"], str(row["posts"]), str(lab["positive"]), str(lab["negative"]), str(lab["neutral"]), f"{row['mean_score']:+.3f}")
    out.print(table)


def no_posts_for(scope: str, known: list[str], shown_at_most: int = 10) -> str:
    """`sentinel windows --scope` for a scope with no posts within the retention: which there are,
    names differing only in case first (channel and source names are case-sensitive)."""
    if not known:
        return f"no posts for scope {scope}: none for any scope yet (within the retention)"
    near = sorted(known, key=lambda s: (s.casefold() != scope.casefold(), s))
    more = f" and {len(known) - shown_at_most} more" if len(known) > shown_at_most else ""
    return f"no posts for scope {scope} (known scopes: {', '.join(near[:shown_at_most])}{more})"


def with_redis(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run one coroutine against the configured Redis client (for the small admin commands)."""
    settings = model_settings(redis=True)
    if not settings.redis_url:
        raise fail("this command needs REDIS_URL (the Redis the workers use)")
    return with_store(settings, lambda store: action(store.redis))


def with_store(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run one coroutine against a WindowStore on `settings`' Redis; a Redis error is one line."""
    import asyncio

    from sentinel.run import RunError, open_store, refuse_cluster_node

    async def go() -> T:
        store = open_store(settings)
        try:
            await refuse_cluster_node(store)
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except redis_errors() as exc:
        raise redis_failure(exc) from None
    except RunError as exc:
        raise fail(str(exc)) from None


def refuse_cluster_node_at_start(settings: Settings) -> None:
    """Stop in one line (exit 2) where the Redis URL names a node of a Redis Cluster and
    SENTINEL_REDIS_CLUSTER is unset, as the reading commands do: a plain client there reads its own
    slots' keys only. The check is with_store's own, on opening; nothing else is asked, so a Redis
    that is away passes (for the console, /readyz's business, not a refusal)."""
    async def nothing_more(store: Any) -> None:
        return None

    with_store(settings, nothing_more)


@app.command()
def console(
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="default: SENTINEL_CONSOLE_PORT (8080)")] = None,
) -> None:
    """Serve the risk console (web pages and a JSON API) from the Redis the workers write."""
    from sentinel.run import serve_console

    settings = model_settings(stream="reader")
    if not settings.redis_url:
        raise fail("the console needs REDIS_URL (the Redis the workers use); `sentinel run FILE --console` brings its own")
    refuse_cluster_node_at_start(settings)
    if port is not None:
        settings = settings.model_copy(update={"console_port": port})
    announce_console(settings)
    # A server: uvicorn takes SIGTERM, shuts down, and raises it again to end as the signal does
    # (operations.md), not as a stopped command (143, "terminated").
    stops.sigterm_as_the_signal()
    serve_console(settings)


def announce_console(settings: Settings) -> None:
    mode = "read-only" if not settings.console_operator_token else "operators may acknowledge and silence"
    out.print(f"console on {console_address(settings)}/ ({mode}); Ctrl-C to stop")
    if warning := open_reads(settings):
        err.print(Text.assemble(("warning:", "yellow"), " ", warning))


def open_reads(settings: Settings) -> str | None:
    """Why the console's pages are open to whoever reaches them, or None: no read token while it
    listens beyond this machine. Said, not refused: an operator may put a proxy's login in front."""
    if settings.console_read_token or loopback(settings.console_host):
        return None
    return (f"anyone who reaches port {settings.console_port} on {settings.console_host or 'every interface'} may read the console "
            "(scopes, incidents, sample posts, the audit log's names and reasons): set SENTINEL_CONSOLE_READ_TOKEN, "
            "or SENTINEL_CONSOLE_HOST=127.0.0.1 behind a proxy that signs callers in")


def loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def console_address(settings: Settings) -> str:
    """Where this machine reaches the console these settings serve (no trailing slash)."""
    host = "127.0.0.1" if settings.console_host in ("0.0.0.0", "::") else settings.console_host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.console_port}"


def run_console_settings(settings: Settings) -> Settings:
    """`sentinel run --console`'s settings: the console on loopback unless a host is asked for (a
    local look at one run; the deployed console's default is every interface), and, unless
    SENTINEL_CONSOLE_URL is set, that console's address as the run's notices' link (they carried
    none, though the run serves the pages they would link to)."""
    if "console_host" not in settings.model_fields_set or not settings.console_host:
        settings = settings.model_copy(update={"console_host": "127.0.0.1"})
    if not settings.console_url:
        settings = settings.model_copy(update={"console_url": console_address(settings)})
    return settings


@app.command()
def silence(
    scope: Annotated[str, typer.Argument(help="a scope or a pattern: asset:BTC, asset:*, channel:announcements")],
    duration: Annotated[str, typer.Option("--for", help="how long, e.g. 30m, 2h, 1d")] = "1h",
    kind: Annotated[Optional[str], typer.Option("--kind", help="sentiment_drop | sentiment_surge | volume_spike (default: all)")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why, for whoever reads `sentinel silences`")] = "",
    by: Annotated[Optional[str], typer.Option("--by", help="who, for the audit log (default: the login name)")] = None,
) -> None:
    """Record incidents of SCOPE but do not notify them, for a while."""
    from stream.alerts.detector import KINDS
    from stream.alerts.silences import add_silence, silence_request, unmatched
    from stream.timefmt import parse_duration

    if kind is not None and kind not in KINDS:
        raise fail(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    try:
        seconds = parse_duration(duration)
        pattern = silence_request(scope, seconds)  # refused before anything is stored
        reason = operator_reason(reason)
    except ValueError as exc:
        raise fail(str(exc).replace("duration:", "--for:").replace("reason:", "--reason:")) from None
    who = operator_name(by)

    async def make(store: Any) -> tuple[Any, str | None]:
        made = await add_silence(store.redis, pattern, seconds, kind, reason, by=who, via="cli")
        return made, unmatched(made.scope, await store.scopes())

    made, warning = with_store(redis_settings(), make)
    if warning:  # kept (it may be set ahead of an event), but it may be a typo
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    out.print(f"silenced {made.scope} ({made.kind or 'every kind'}) until {shown(made.until)}: id {made.id}")


@app.command()
def silences(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the silences in force."""
    from dataclasses import asdict

    from stream.alerts.silences import list_silences

    found = with_redis(list_silences)
    if as_json:
        for item in found:
            print(json.dumps(asdict(item)))
        return
    if not found:  # an empty table read as a failed query
        out.print("no silences in force: `sentinel silence SCOPE --for 1h` makes one")
        return
    table = Table(title="silences")
    # The id whole on any terminal (`sentinel unsilence` takes it); the rest folded, not cut:
    # on 80 columns the until time was cut to "2026-12-06T15:05:…".
    table.add_column("id", no_wrap=True, min_width=max((len(item.id) for item in found), default=2))
    for col in ("scope", "kind", "until (UTC)", "reason", "by"):
        table.add_column(col, overflow="fold")
    for item in found:
        table.add_row(item.id, *map(inert, (item.scope, item.kind or "*", shown(item.until), item.reason, item.by)))
    out.print(table)


@app.command()
def unsilence(
    silence_id: Annotated[str, typer.Argument(help="the id `sentinel silences` shows")],
    by: Annotated[Optional[str], typer.Option("--by", help="who, for the audit log (default: the login name)")] = None,
) -> None:
    """Lift a silence."""
    from stream.alerts.silences import remove_silence

    who = operator_name(by)
    try:
        lifted = with_redis(lambda client: remove_silence(client, silence_id, by=who, via="cli"))
    except ValueError as exc:  # it has ended: nothing lifted, nothing logged
        raise fail(str(exc)) from None
    if not lifted:
        raise fail(f"no silence with id {silence_id!r}")
    out.print(f"lifted silence {silence_id}")


@app.command("restore-silences")
def restore_silences(
    file: Annotated[Path, typer.Argument(help="what `sentinel silences --json` wrote, one silence a line")],
    by: Annotated[Optional[str], typer.Option("--by", help="who, for the audit log (default: the login name)")] = None,
) -> None:
    """Put back the silences of an export (`sentinel silences --json > silences.jsonl`) into a Redis
    that lost them: those still in force, with their ids, ends and authors; ids already there are kept."""
    from stream.alerts.silences import restorable
    from stream.alerts.silences import restore_silences as restore

    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        found, ended = restorable(lines, time.time())
    except ValueError as exc:
        raise fail(f"{file}: {exc}; nothing restored") from None
    who = operator_name(by)
    restored = with_redis(lambda client: restore(client, found, by=who, via="cli"))
    out.print(f"restored {restored} silences ({len(found) - restored} already there, {ended} had ended)")


@app.command()
def incidents(
    open_only: Annotated[bool, typer.Option("--open", help="only incidents still open")] = False,
    since: Annotated[str, typer.Option("--since", help="opened within this much event time of the newest post, e.g. 7d")] = "7d",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List incidents (SENTINEL_ALERT_GROUPING=incidents) with their root and member scopes."""
    from stream.alerts.correlator import list_incidents
    from stream.keys import STATS_KEY

    span = since_seconds(since)

    async def collect(client: Any) -> tuple[list[dict[str, Any]], bool]:
        newest = await client.hget(STATS_KEY, "watermark")
        start = float(newest) - span if newest is not None else None
        return await list_incidents(client, since=start, open_only=open_only), start is not None

    found, bounded = with_redis(collect)
    if as_json:
        for item in found:
            print(json.dumps(item, ensure_ascii=False))
        return
    if not found:  # an empty table read as a failed query
        which = f"{'open ' if open_only else ''}incidents"
        # No newest post, no span back from it: every incident stored was listed.
        out.print(f"no {which} opened in the last {since} (event time, back from the newest post)" if bounded
                  else f"no {which} at all (no posts counted yet, so --since {since} bounds nothing)")
        return
    out.print(incidents_table(found, out.width))


INCIDENTS_WIDE_AT = 160  # columns from which each incident's fields may get a column of their own
INCIDENTS_COLUMNS = ("id", "root", "state", "severity", "opened", "ended", "kinds", "members", "acknowledged", "verdict")


def incidents_table(found: Sequence[dict[str, Any]], width: int) -> Table:
    """`sentinel incidents`' table: one column per field where every column's longest word fits
    whole (`fitted_widths`, from `INCIDENTS_WIDE_AT` columns on), and otherwise two columns, the id
    and the incident's fields one a line. Nine columns on 80 left four characters to each beside
    the id, and the root scope read "asse / t:ET / H"; ten on 160-179 split a header
    ("acknowledge / d") and cells ("sentiment_d / rop", "channel:red / dit/r/Crypt / oCurrency")."""
    rows = [_incident_row(item) for item in found]
    widths = fitted_widths([INCIDENTS_COLUMNS, *rows], width) if width >= INCIDENTS_WIDE_AT else None
    table = Table(title="incidents")
    if widths is not None:
        # Set, not left to rich: it narrows the widest columns first, through their words, and
        # a minimum width instead made it crop the table's right edge.
        for col, room in zip(INCIDENTS_COLUMNS, widths):
            table.add_column(col, width=room, overflow="fold")
        for row in rows:
            table.add_row(*map(inert, row))
        return table
    # The id whole on any terminal: it is what `sentinel ack` and `sentinel verdict` take.
    beside = [(item["incident_id"], "\n".join(_incident_lines(item))) for item in found]
    headed = [("\n".join(pair),) for pair in beside]
    id_width = max((len(i["incident_id"]) for i in found), default=2)
    if fitted_widths([("id", "incident"), *beside], width) is None and (
            fitted_widths([("incident",), *headed], width) is not None or width - id_width - 7 < INCIDENT_TIME_CHARS):
        # Beside the id the fields' words would fold where above them they would not (on 40
        # columns every time read "2026-03-04T12" / ":00:00Z"), or there is no room beside it for
        # a time (under 28 rich left the fields' column out, only the ids shown): the id heads its
        # fields' lines instead, whole on any terminal wider than it.
        table.add_column("incident", overflow="fold")
        for (text,) in headed:
            table.add_row(inert(text))
        return table
    table.add_column("id", no_wrap=True, min_width=id_width)
    # Folded, not cut: on 80 columns every cell was cut to three characters and an ellipsis.
    table.add_column("incident", overflow="fold")
    for ident, text in beside:
        table.add_row(ident, inert(text))
    return table


INCIDENT_TIME_CHARS = len("2026-03-04T12:00:00Z;")  # a time as the fields show it, its semicolon too


def _incident_row(item: Mapping[str, Any]) -> tuple[str, ...]:
    """An incident's cells in `INCIDENTS_COLUMNS` order; the ended one a line per time."""
    from stream.alerts.incidents import related_scopes, root_kinds

    return (item["incident_id"], _root_of(item), item["state"], item["severity"], shown(item["opened"]), _time_lines(incident_ended(item)),
            ", ".join(root_kinds(item)), ", ".join(related_scopes(item)), item["acked"] or "", _verdict_of(item))


def _incident_lines(item: Mapping[str, Any]) -> list[str]:
    """An incident's fields one a line, for the narrow layout."""
    from stream.alerts.incidents import related_scopes, root_kinds

    members, ended, verdict = ", ".join(related_scopes(item)), incident_ended(item), _verdict_of(item)
    return [_root_of(item), f"{item['state']}, {item['severity']}, opened {shown(item['opened'])}", *([ended] if ended else []),
            f"kinds: {', '.join(root_kinds(item))}", *([f"members: {members}"] if members else []),
            *([f"acknowledged: {item['acked']}"] if item["acked"] else []), *([f"verdict: {verdict}"] if verdict else [])]


def _root_of(item: Mapping[str, Any]) -> str:
    return item["root_scope"] + (" (market-wide)" if item["market"] else "")


def _verdict_of(item: Mapping[str, Any]) -> str:
    return (item.get("verdict") or {}).get("verdict", "")


def fitted_widths(rows: Sequence[Sequence[str]], width: int) -> list[int] | None:
    """Text widths for a boxed rich table of `rows` (the header first) in `width` terminal columns,
    none splitting a word: each column gets its longest word, then the room left is shared out
    max-min fair, so a column whose longest line needs less than an even share shows it on one
    line and the long ones (members, a reason) share the rest. None when the longest words alone
    do not fit: a word folded at a column's edge ("acknowledge" over "d") is what this avoids."""
    from rich.cells import cell_len

    columns = list(zip(*rows))
    room = width - 3 * len(columns) - 1  # a rule before each column and after the last, a space each side
    least = [max((cell_len(word) for text in col for word in text.split()), default=1) for col in columns]
    most = [max((cell_len(line) for text in col for line in text.splitlines()), default=1) for col in columns]
    spare = room - sum(least)
    if spare < 0:
        return None
    widths = list(least)
    order = sorted(range(len(columns)), key=lambda i: most[i] - least[i])
    for k, i in enumerate(order):
        grow = min(most[i] - least[i], spare // (len(order) - k))
        widths[i] += grow
        spare -= grow
    return widths


def _time_lines(words: str) -> str:
    """`incident_ended`'s words with each time on a line of its own, as the ended column shows
    them: "root resolved" / "T1;" / "declared over" / "T2"."""
    return re.sub(r" (?=\d{4}-\d\d-\d\dT)", "\n", words).replace("; ", ";\n")


def incident_ended(item: Mapping[str, Any]) -> str:
    """A resolved incident's end as its resolution and console page say it ("root resolved T1;
    declared over T2"): the list said neither, and a tail clearing puts a group interval or more
    between them. Empty while open; the declaration alone for a summary from before session 48."""
    from stream.alerts.message import over_words

    at, root = item.get("at"), item.get("root_resolved")
    if item.get("state") != "resolved" or not isinstance(at, (int, float)):
        return ""
    return over_words(shown(root) if isinstance(root, (int, float)) else None, shown(at))


@app.command()
def ack(
    incident_id: Annotated[str, typer.Argument(help="the id `sentinel incidents` shows")],
    reason: Annotated[str, typer.Option("--reason", help="why, for whoever reads `sentinel incidents`")] = "",
    by: Annotated[Optional[str], typer.Option("--by", help="who, for the incident's acknowledgement log (default: the login name)")] = None,
) -> None:
    """Acknowledge an open incident: no more repeat notifications (updates and the resolution still come)."""
    from stream.alerts.correlator import acknowledge, incident_summary
    from stream.alerts.incidents import not_acknowledged

    reason = checked_reason(reason)
    who = operator_name(by)
    grouped = redis_settings().alert_grouping != "none"

    async def act(client: Any) -> tuple[str, str | None]:
        ident = await incident_id_of(client, incident_id)
        if await acknowledge(client, ident, reason, by=who, via="cli"):
            return ident, None
        return ident, not_acknowledged(incident_id, await incident_summary(client, ident), grouped=grouped)

    ident, refused = with_redis(act)
    if refused is not None:
        raise fail(refused)
    out.print(f"acknowledged incident {ident}")


@app.command()
def verdict(
    incident_id: Annotated[str, typer.Argument(help="the id `sentinel incidents` shows (open or resolved)")],
    value: Annotated[str, typer.Argument(metavar="VERDICT", help="real | false-alarm")],
    reason: Annotated[str, typer.Option("--reason", help="why, for whoever tunes the alerts")] = "",
    by: Annotated[Optional[str], typer.Option("--by", help="who, for the audit log (default: the login name)")] = None,
) -> None:
    """Say whether an incident was a real move or a false alarm: `sentinel verdicts` then measures the alerts' precision."""
    from stream.alerts.incidents import unknown_incident
    from stream.alerts.precision import VERDICTS
    from stream.alerts.verdicts import give_verdict

    if value not in VERDICTS:
        raise fail(f"VERDICT: one of {', '.join(VERDICTS)}")
    reason = checked_reason(reason)
    who = operator_name(by)

    async def act(client: Any) -> str | None:
        ident = await incident_id_of(client, incident_id)
        return ident if await give_verdict(client, ident, value, reason, by=who, via="cli") else None

    ident = with_redis(act)
    if ident is None:
        raise fail(unknown_incident(f"no incident with id {incident_id!r} in the history (SENTINEL_RETENTION)",
                                    redis_settings().alert_grouping != "none"))
    out.print(f"incident {ident}: {value}")


@app.command()
def verdicts(
    since: Annotated[str, typer.Option("--since", help="verdicts given within this much wall-clock time, e.g. 30d")] = "30d",
    per: Annotated[str, typer.Option("--per", help="kind | scope: count per root kind, or per root scope (which scopes raise false alarms)")] = "kind",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The alerts' precision as the risk team judged them: real and false alarms per root kind (or scope), each incident's latest verdict."""
    from stream.alerts import audit as audit_log
    from stream.alerts.precision import FEW_JUDGED, tally, with_interval

    if per not in ("kind", "scope"):
        raise fail("--per: kind or scope")
    span = since_seconds(since)
    rows = tally(with_redis(lambda client: audit_log.verdicts_within(client, span)), per).rows()
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    # Said under the table: what the rate counts, and that a few verdicts make a wide interval (one
    # false alarm read "precision 0.00", as if the alerts were never right).
    table = Table(title=f"verdicts of the last {since} (each incident's latest)", caption_justify="left", caption=(
        "precision: real / judged (real + false alarms)" + ("; an incident with several root kinds counts under each" if per == "kind" else "")
        + f"; in brackets its 95% interval (Wilson's). Under {FEW_JUDGED} judged ('few'), read the counts, not the rate."))
    table.add_column(f"root {per}", overflow="fold", min_width=len("all (whole market)"))  # else folded at 80 columns
    for col in ("real", "false alarms", "judged", "precision"):
        table.add_column(col, overflow="fold")
    for row in rows:
        label = "all (whole market)" if per == "scope" and row[per] == "all" else row[per]  # not the total row beside it
        shown = with_interval(row)  # as the console's precision table shows it
        judged, interval = shown["judged"], shown["interval_95"]
        table.add_row(inert(label), str(row["real"]), str(row["false_alarm"]), f"{judged}" + (" (few)" if judged < FEW_JUDGED else ""),
                      "-" if row["precision"] is None or interval is None
                      else f"{row['precision']:.2f} ({interval[0]:.2f}-{interval[1]:.2f})")
    out.print(table if rows else f"no verdicts in the last {since}: `sentinel verdict INCIDENT real|false-alarm`")


@app.command("compare-alerts")
def compare_alerts(
    baseline: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="alert records: `sentinel run --alerts-out`, or `sentinel record --topic sentiment-alerts`")],
    candidate: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the same stretch under the change being tried")],
    verdicts_file: Annotated[Optional[Path], typer.Option("--verdicts", exists=True, dir_okay=False,
                                                          help="the team's verdicts on the baseline's incidents: `sentinel audit --action verdict --json`")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="only incidents that reach into the stretch from this event time (ISO 8601): the replayed stretch, when the baseline is a recorded topic")] = None,
    end: Annotated[Optional[str], typer.Option("--until", help="... to this event time")] = None,
    max_shift: Annotated[str, typer.Option("--max-shift", help="two incidents are one event only when they first fired at most this far apart (s, m, h, d)")] = "2h",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Two runs' incidents side by side: raised by both, by one only, and first fired how much earlier or later; of those
    in both, how their severity, members and resolution moved; with --verdicts, whether the incidents a change would lose
    were real or false alarms."""
    import math

    from stream.alerts.comparison import change_row, changed, compare, episodes, grouping_differs, pair_change, spans_differ, summary
    from stream.timefmt import epoch, iso, parse_duration
    from stream.tools.alert_records import read_alert_records, read_verdicts

    def event_time(option: str, text: str | None, unset: float) -> float:
        # A bad time names its option and value: "--from 2026-13-01: month must be in 1..12", not the bare reason.
        if not text:
            return unset
        try:
            return epoch(text)
        except ValueError as exc:
            reason = "not an ISO 8601 time" if "Invalid isoformat string" in str(exc) else str(exc)
            raise fail(f"{option} {text}: {reason}") from None

    lo, hi = event_time("--from", start, -math.inf), event_time("--until", end, math.inf)
    try:
        runs = [episodes(read_alert_records(path)) for path in (baseline, candidate)]
        said = read_verdicts(verdicts_file) if verdicts_file is not None else None
        shift_s = _max_shift(max_shift, parse_duration)
    except ValueError as exc:
        raise fail(str(exc).replace("Invalid isoformat string", "--from/--until: not an ISO 8601 time")) from None
    try:
        shown = {"from": start and iso(lo), "until": end and iso(hi)}
    except (ValueError, OverflowError):  # an offset carries the time past year 9999 or before year 1
        raise fail("--from/--until: out of range (years 1 to 9999 in UTC)") from None
    if lo > hi:  # no incident reaches into it: "0 incidents in both files" read as two quiet runs
        raise fail(f"--from {start} is after --until {end}: no event time lies between them (swapped?)")
    result = compare(runs[0], runs[1], lo, hi, shift_s)
    figures = summary(result, said) | shown | {"max_shift": max_shift, "baseline_records": runs[0].records, "candidate_records": runs[1].records}
    changes = [pair_change(b, c) for b, c in result.matched]

    def row(e: Any) -> dict[str, Any]:
        return {"incident_id": e.incident_id, "root_scope": e.root_scope, "kinds": list(e.kinds), "first": iso(e.first),
                "last": iso(e.last), "verdict": (said or {}).get(e.incident_id)}

    if as_json:
        print(json.dumps({**figures, "only_baseline_incidents": [row(e) for e in result.lost],
                          "only_candidate_incidents": [row(e) for e in result.new],
                          "both_incidents": [change_row(pc) for pc in changes]}))
        return

    shown_base, shown_cand = escape(str(baseline)), escape(str(candidate))  # a path is not markup

    def n(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    for path, run in ((shown_base, runs[0]), (shown_cand, runs[1])):
        if not run.records:
            out.print(f"[yellow]{path} holds no alert records[/yellow]", soft_wrap=True)
    if grouping_differs(*runs):
        out.print("[yellow]one run grouped transitions into incidents and the other did not (SENTINEL_ALERT_GROUPING): "
                  "counts compare incidents with single alerts[/yellow]", soft_wrap=True)
    if spans_differ(runs[0], runs[1]) and not (start or end):
        out.print("[yellow]the two files cover different stretches (more than a day apart at either end): pass the replayed "
                  "stretch as --from/--until, or incidents outside it count as lost or new[/yellow]", soft_wrap=True)
    if start or end:
        out.print(f"incidents reaching into {figures['from'] or 'the start'} .. {figures['until'] or 'the end'} (event time)", soft_wrap=True)
    out.print(f"{n(figures['baseline'], 'incident')} in {shown_base}, {figures['candidate']} in {shown_cand}: {figures['both']} in both, "
              f"{figures['only_baseline']} only in {shown_base}, {figures['only_candidate']} only in {shown_cand}", soft_wrap=True)
    shift = figures["fired_later_min"]
    if shift:
        out.print(f"of those in both, the candidate's fired {figures['earlier']} earlier and {figures['later']} later: "
                  f"median {shift['median']:+.1f} min (from {shift['min']:+.1f} to {shift['max']:+.1f})", soft_wrap=True)
        sev, mem, res = figures["severity"], figures["members"], figures["resolution"]
        out.print(f"of those in both, the candidate's severity: {sev['raised']} raised, {sev['lowered']} lowered; critical: "
                  f"{sev['critical_newly']} newly, {sev['critical_no_longer']} no longer, {sev['critical_earlier']} earlier, "
                  f"{sev['critical_later']} later", soft_wrap=True)
        moved = f" (at most {mem['resolution_moved_max_min']:.0f} min)" if mem["resolution_moved_max_min"] is not None else ""
        out.print(f"of those in both, the candidate's members (scope, kind): {mem['gained']} gained, {mem['lost']} lost, in "
                  f"{n(mem['incidents_changed'], 'incident')}; {n(mem['resolution_moved'], 'member')} resolved at another time{moved}",
                  soft_wrap=True)
        out.print(f"of those in both, the candidate's resolved {res['earlier']} earlier, {res['later']} later, {res['never']} never "
                  f"(still firing at the end), {res['newly']} newly (the baseline's never did); {res['same'] + res['neither']} unchanged",
                  soft_wrap=True)
    if figures["verdicts"] is not None:
        lost, kept = figures["verdicts"]["only_baseline"], figures["verdicts"]["both"]
        out.print(f"lost (only in the baseline): {lost['real']} real, {n(lost['false-alarm'], 'false alarm')}, {lost['unjudged']} unjudged; "
                  f"kept: {kept['real']} real, {n(kept['false-alarm'], 'false alarm')}, {kept['unjudged']} unjudged", soft_wrap=True)
    shown_changes = [change_row(pc) for pc in changes if changed(pc)]
    if shown_changes:
        out.print(changes_table(shown_changes, out.width))
    for title, items in ((f"only in {shown_base}", result.lost), (f"only in {shown_cand}", result.new)):
        if items:
            table = Table(title=title)
            for col in ("incident", "root", "kinds", "first fired (event time)", "verdict"):
                table.add_column(col, overflow="fold")
            for e in items:
                r = row(e)
                table.add_row(*map(inert, (r["incident_id"], r["root_scope"], ", ".join(r["kinds"]), r["first"], r["verdict"] or "")))
            out.print(table)


def changes_table(rows: Sequence[dict[str, Any]], width: int) -> Table:
    """compare-alerts' "in both, changed" table: a column per field from `INCIDENTS_WIDE_AT` columns
    on (as `sentinel incidents`), and narrower two, the pair's ids whole and its changes one a line
    (on 80 columns the nine columns folded to a few characters a line: "asset / :BTC")."""
    wide = width >= INCIDENTS_WIDE_AT

    def moved(said: str, at: dict[str, str], later_min: float | None, gone: str) -> str:
        # When the candidate's critical or resolution came against the baseline's: newly, gone, or moved.
        if said == "newly":
            return f"newly, at {at['candidate']}"
        if said == gone:
            return f"{said} (was at {at['baseline']})"
        return f"{said} ({later_min:+.1f} min), at {at['candidate']}"

    def critical(r: dict[str, Any]) -> str:
        return "" if r["critical"] is None else moved(r["critical"], r["critical_at"], r["critical_later_min"], "no longer")

    def resolved(r: dict[str, Any]) -> str:
        return "still firing in both" if r["resolution"] == "neither" else moved(r["resolution"], r["resolved"], r["resolved_later_min"], "never")

    def member_end(m: dict[str, Any]) -> str:
        when = f"{m['later_min']:+.0f} min" if m["later_min"] is not None else "never" if m["candidate"] is None else "newly"
        return f"{m['scope']} {m['kind']}: {when}"

    table = Table(title="in both, changed (candidate against baseline; min: candidate minus baseline)")
    fields = ("root", "fired", "severity", "critical", "members gained", "members lost", "resolved", "members resolved")
    # The pair's ids whole, one a line, on any terminal: what `--json` and the other tables name
    # (side by side, two real ids folded even at 160 columns).
    table.add_column("baseline\ncandidate", no_wrap=True,
                     min_width=max(len(r[k]) for r in rows for k in ("baseline_incident", "candidate_incident")))
    # Folded, not cut (on 80 columns every id and time became "36a…").
    for col in fields if wide else ("changes",):
        table.add_column(col, overflow="fold")
    for r in rows:
        roots = r["baseline_root"] if r["baseline_root"] == r["candidate_root"] else f"{r['baseline_root']} -> {r['candidate_root']}"
        severity = r["severity"]["baseline"] if r["severity"]["baseline"] == r["severity"]["candidate"] else \
            f"{r['severity']['baseline']} -> {r['severity']['candidate']}"
        cells = (roots, f"{r['fired_later_min']:+.1f} min", severity, critical(r), "\n".join(" ".join(m) for m in r["members_gained"]),
                 "\n".join(" ".join(m) for m in r["members_lost"]), resolved(r), "\n".join(member_end(m) for m in r["member_resolutions"]))
        ids = f"{r['baseline_incident']}\n{r['candidate_incident']}"
        if wide:
            table.add_row(*map(inert, (ids, *cells)))
            continue
        # A field with nothing to say is left out; a list's items follow its name, indented.
        lines = [f"{name}: {cell}" if "\n" not in cell else f"{name}:\n  " + cell.replace("\n", "\n  ")
                 for name, cell in zip(fields, cells) if cell]
        table.add_row(inert(ids), inert("\n".join(lines)))
    return table


def _max_shift(spec: str, parse: Any) -> int:
    """compare-alerts' --max-shift in seconds: a duration, as the settings' (15m, 2h)."""
    try:
        return parse(spec)
    except ValueError as exc:
        raise ValueError(f"--max-shift: {exc}") from None


@app.command("notify-test")
def notify_test(
    severity: Annotated[str, typer.Option("--severity", help="warning | critical: the services this severity is routed to")] = "warning",
    attempts: Annotated[int, typer.Option("--attempts", min=1, help="tries per service (default 1: a quick answer)")] = 1,
) -> None:
    """Send a test notification through the configured Apprise services and say which accepted it."""
    import asyncio

    from stream.alerts.notify import Notifier, cleartext_services

    if severity not in ("warning", "critical"):
        raise fail("--severity: warning or critical")
    settings = model_settings()
    try:
        notifier = Notifier.from_settings(settings)
    except ValueError as exc:  # every bad entry, a line each: one line here too, as the worker says them
        raise fail(redact("; ".join(str(exc).splitlines()))) from None
    notifier.attempts = attempts
    for line in cleartext_services(notifier.targets):
        err.print(Text.assemble(("warning:", "yellow"), " sends in clear text: ", line))
    results = asyncio.run(notifier.test_each(severity))
    if not results:
        raise fail(f"no notification service is routed {severity} alerts: set SENTINEL_APPRISE_URLS or SENTINEL_APPRISE_CONFIG "
                   "(a URL tagged with another severity only gets that one)")
    table = Table(title=f"test notification ({severity})")
    table.add_column("#")
    table.add_column("service (as configured, secrets masked)", overflow="fold")
    table.add_column("result")
    for n, (service, ok) in enumerate(results, start=1):
        table.add_row(str(n), inert(service), "sent" if ok else "[red]failed[/red] (the warnings above say why)")
    out.print(table)
    if not all(ok for _, ok in results):
        raise typer.Exit(1)


def since_seconds(since: str) -> int:
    """A command's --since duration, or its one-line error."""
    from stream.timefmt import parse_duration

    try:
        return parse_duration(since)
    except ValueError as exc:
        raise fail(f"--since: {exc}") from None


def wall_time(option: str, text: str) -> float:
    """A command's ISO 8601 time option as epoch seconds, or its one-line error naming it."""
    from stream.timefmt import epoch

    try:
        return epoch(text)
    except ValueError as exc:
        reason = "not an ISO 8601 time" if "Invalid isoformat string" in str(exc) else str(exc)
        raise fail(f"{option} {text}: {reason}") from None


def _iso_or(ts: float | None, given: str | None) -> str:
    """How a span's end is shown: ISO in UTC, `now` when open, the text itself past year 9999."""
    from stream.timefmt import iso

    if ts is None:
        return "now"
    try:
        return iso(ts)
    except (ValueError, OverflowError, OSError):
        return given or str(ts)


def operator_name(by: str | None) -> str:
    """Who runs an operator command, for the audit log: --by, else (omitted, empty or blank) the
    login name."""
    import getpass

    if by is not None and by.strip():
        from stream.alerts.audit import author_text

        try:
            return author_text(by)
        except ValueError as exc:
            raise fail(str(exc)) from None
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return ""


def operator_reason(reason: str) -> str:
    """A --reason as stored (`audit.reason_text`: whitespace collapsed), or ValueError."""
    from stream.alerts.audit import reason_text

    return reason_text(reason)


def checked_reason(reason: str) -> str:
    try:
        return operator_reason(reason)
    except ValueError as exc:
        raise fail(str(exc).replace("reason:", "--reason:", 1)) from None


def redis_settings() -> Settings:
    settings = model_settings(redis=True)
    if not settings.redis_url:
        raise fail("this command needs REDIS_URL (the Redis the workers use)")
    return settings


async def incident_id_of(client: Any, given: str) -> str:
    """The incident `given` names in the history: its whole id or a unique start of it (the rule
    the console's URLs follow too: stream.alerts.incidents.incident_by_prefix)."""
    from stream.alerts.correlator import incident_id

    try:
        return await incident_id(client, given)
    except ValueError as exc:
        raise fail(str(exc)) from None


@app.command()
def audit(
    since: Annotated[Optional[str], typer.Option("--since", help="actions within this much wall-clock time before --until (default: now), e.g. 7d (default 7d)")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="actions from this wall-clock time on (ISO 8601, UTC unless it says otherwise; not with --since)")] = None,
    end: Annotated[Optional[str], typer.Option("--until", help="actions before this wall-clock time (ISO 8601): with --from, one past day, e.g. --from 2026-09-01 --until 2026-09-02")] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="only this person's actions")] = None,
    action: Annotated[Optional[list[str]], typer.Option("--action", help="acknowledge | verdict | silence | unsilence (repeatable; default: all)")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many, newest first")] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who acknowledged or judged an incident, silenced or lifted what, when and why: the operators' audit log, newest first."""
    import time

    from stream.alerts import audit as audit_log

    if start is not None and since is not None:
        raise fail("--from or --since, not both: --from is a time, --since counts back from --until (or now)")
    hi = wall_time("--until", end) if end is not None else None
    lo = wall_time("--from", start) if start is not None else (time.time() if hi is None else hi) - since_seconds(since or "7d")
    if hi is not None and lo > hi:  # an empty export read as a quiet day
        raise fail(f"--from {start} is after --until {end}: no time lies between them (swapped?)")
    if start is not None and lo == hi:  # `--from 2026-09-01 --until 2026-09-01` read as that day, found quiet
        raise fail(f"--from {start} is --until {end}: --until is left out, so no time lies between them; "
                   "for one day give the next one's start as --until")
    span = f"from {_iso_or(lo, start)} to {_iso_or(hi, end)}" if start is not None or end is not None else f"the last {since or '7d'}"
    unknown = sorted(set(action or ()) - set(audit_log.ACTIONS))
    if unknown:
        raise fail(f"--action: unknown {', '.join(unknown)}; use {', '.join(audit_log.ACTIONS)}")
    person = by.strip() if by and by.strip() else None  # --by "" filters nobody out, as the console's empty field
    # One more than asked: `more` says the span holds older entries than --limit let through, which
    # read as the whole span (200 entries of a busy week, or a daily --json export cut short).
    found = with_redis(lambda client: audit_log.read(client, since=lo, until=hi, by=person, actions=action or (), limit=limit + 1))
    more, found = len(found) > limit, found[:limit]
    if more:  # stderr: --json's stdout stays one entry a line
        err.print(f"only the newest {limit} shown: {escape(span)} holds older entries, from before {found[-1]['at']}; "
                  "raise --limit or narrow --since, --from, --by or --action", highlight=False, soft_wrap=True)
    if as_json:
        for item in found:
            print(json.dumps(item, ensure_ascii=False))
        return
    if not found:  # an empty table read as a failed query
        whose = f" by {person}" if person else ""
        which = f" ({', '.join(action)})" if action else ""
        out.print(f"no actions{escape(whose)}{which} in the audit log {'in ' if span.startswith('the last') else ''}{escape(span)} (wall clock)")
        return
    table = Table(title=f"audit log, newest first (wall clock, {escape(span)})")
    # Folded, not cut: on 80 columns the time was cut to "2026-12-06T14:…" and the silence's end in "what" too.
    for col in ("at (UTC)", "by", "action", "what", "reason"):
        table.add_column(col, overflow="fold")
    for item in found:
        table.add_row(item["at"], *map(inert, (f"{item['by'] or '-'} ({item['via']})", item["action"], audit_log.what(item), item["reason"])))
    out.print(table)


@app.command()
def report(
    since: Annotated[Optional[str], typer.Option("--since", help="the UTC days within this much event time of the newest post, e.g. 7d (default 7d)")] = None,
    day: Annotated[Optional[str], typer.Option("--day", help="one UTC day, YYYY-MM-DD: the same day whenever run (not with --since)")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", dir_okay=False, help="write the report here (default: stdout)")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="html | md | csv (default: from --out's suffix, else html)")] = None,
    prices: Annotated[Optional[Path], typer.Option("--prices", exists=True, dir_okay=False, help="CSV date,asset,close: adds returns and lead-lag")] = None,
    notify: Annotated[bool, typer.Option("--notify", help="send the report as an attachment through the Apprise services")] = False,
    notify_if_configured: Annotated[bool, typer.Option(
        "--notify-if-configured",
        help="as --notify where an Apprise service is configured; where none is, write the report, say it was not sent, exit 0 (the CronJob)",
    )] = False,
    resend: Annotated[bool, typer.Option(
        "--resend", help="with --notify or --notify-if-configured (an error without them): send also to the services that already accepted this report's days (a run again sends to the others only)",
    )] = False,
) -> None:
    """Daily report per asset and UTC day: posts, label shares, sentiment index, incidents; one offline file."""
    import tempfile

    from stream.reporting.prices import PriceError, parse_prices, with_prices
    from stream.reporting.render import SUFFIXES, counted, format_for, render, title

    from stream.reporting.daily import parse_day

    if day is not None and since is not None:
        raise fail("--day or --since, not both: --day is one UTC day, --since counts back from the newest post")
    if resend and not (notify or notify_if_configured):  # it only chooses whom a sent report goes to
        raise fail("--resend only with --notify or --notify-if-configured: without them the report is not sent at all")
    try:
        first_day = parse_day(day) if day is not None else None
    except ValueError as exc:
        raise fail(f"--day: {exc}") from None
    since = since if since is not None or first_day is not None else "7d"
    span = since_seconds(since) if since is not None else None
    try:
        kind = format_for(out_path.name if out_path else None, fmt)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if out_path is not None and fmt is None and out_path.suffix and out_path.suffix.lower() not in SUFFIXES:
        err.print(f"note: {out_path.name}: writing {kind} (the format follows --format, else a {', '.join(SUFFIXES)} name)",
                  markup=False, highlight=False)
    try:  # before anything connects: a bad price row is the user's to fix, named by its line
        closes = parse_prices(prices.read_text(encoding="utf-8"), str(prices)) if prices else None
    except PriceError as exc:
        raise fail(str(exc)) from None
    except UnicodeDecodeError:
        raise fail(f"{prices}: not UTF-8 text") from None
    settings = model_settings(stream="reader")
    if not settings.redis_url:
        raise fail("report needs REDIS_URL (the Redis the workers use)")
    writable_outputs(out_path)
    targets = report_targets(settings, required=notify) if notify or notify_if_configured else None
    made = load_report(settings, span, since, day=first_day)
    made = with_prices(made, closes) if closes is not None else made
    text = render(made, kind)
    if out_path is None and targets is None:
        sys.stdout.write(text)
    else:
        path = out_path or Path(tempfile.mkdtemp(prefix="sentinel-report-")) / f"forum-sentinel-report.{kind}"
        path.write_text(text, encoding="utf-8")
        err.print(f"wrote {path} ({counted(len(made.scopes), 'scope')}, {counted(made.days, 'day')})", markup=False, highlight=False)
        if targets is not None:
            try:
                send_report(settings, targets, path, title(made), made, resend=resend)
            finally:
                if out_path is None:  # our temp copy, made only to attach
                    path.unlink(missing_ok=True)
                    path.parent.rmdir()
    if targets is None and notify_if_configured:  # said once, so a quiet CronJob log is not a mystery
        err.print("note: report not sent: no Apprise service is configured (SENTINEL_APPRISE_URLS, SENTINEL_APPRISE_CONFIG)",
                  markup=False, highlight=False)


def load_report(settings: Settings, since_s: int | None, since: str | None, *, day: int | None = None) -> Any:
    """The report's data from Redis: the days within `since_s` of the newest post, the UTC day
    starting at `day`, or all of them; every asset of the alias table shown, with 0 posts too."""
    import time

    from stream.reporting.collect import collect_report

    expected = configured_assets(settings)
    return with_store(settings, lambda store: collect_report(store, since_s=since_s, since=since, now=time.time(), day=day,
                                                             expected=expected))


def configured_assets(settings: Settings) -> frozenset[str]:
    """The tickers of the alias table the workers detect assets with (SENTINEL_ALIASES_FILE, else the
    built-in one): the assets a reader of the report expects to find. A file this pod cannot read
    (mounted on the workers only) lists none, said once: the report goes out without them."""
    from stream.assets import load_aliases

    try:
        return load_aliases(settings.aliases_file).known
    except (OSError, ValueError) as exc:
        err.print(f"note: the report lists only assets with posts: SENTINEL_ALIASES_FILE: {exc}", markup=False, highlight=False)
        return frozenset()


def marks_io(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> tuple[T | None, str]:
    """`action` against Redis for the report's sent marks: (its result, '') or (None, the Redis error
    in one redacted line). Not `with_store`'s exit: the marks only spare duplicates, and the report
    itself was read from Redis already."""
    import asyncio

    from sentinel.run import open_store

    async def go() -> T:
        store = open_store(settings)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go()), ""
    except redis_errors() as exc:
        return None, redact(f"Redis: {type(exc).__name__}: {exc}")


def report_targets(settings: Settings, *, required: bool) -> list[Any] | None:
    """The Apprise services a report goes to, checked before Redis is read (a typo fails fast).
    None when no service is configured at all and sending is not `required` (--notify-if-configured);
    services that take no report, or a bad entry, are an error either way."""
    from stream.reporting.deliver import NotConfigured, report_services

    try:
        return report_services(settings)
    except NotConfigured:
        if not required:
            return None
        raise fail("--notify needs SENTINEL_APPRISE_URLS or SENTINEL_APPRISE_CONFIG (none is set; "
                   "--notify-if-configured writes the report and exits 0 without a service)") from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def send_report(settings: Settings, targets: list[Any], path: Path, head: str, made: Any, *, resend: bool = False) -> None:
    """Send the report to the services that have not accepted a report of its days yet (all with
    `resend`), and mark those that accept: a Job retrying after one service refused sent it to
    every service again, a duplicate where one had accepted (until session 56)."""
    import time

    from stream.alerts.notify import service_key, shared_keys
    from stream.reporting.deliver import deliver_report
    from stream.reporting.render import summary_text
    from stream.reporting.sent import mark_sent, sent_to

    before: set[str] = set()
    if not resend:
        found, trouble = marks_io(settings, lambda store: sent_to(store, made.first_day, made.days))
        if trouble:  # the report goes out, as before the marks: a duplicate is better than none
            err.print(f"note: sending to every service: which accepted this report's days before is unknown ({trouble})",
                      markup=False, highlight=False)
        before = found or set()
    pending = [t for t in targets if service_key(t) not in before]
    if len(pending) < len(targets):
        err.print(f"note: not sent again to {len(targets) - len(pending)} service(s) that accepted this report's days before "
                  "(--resend sends to them too)", markup=False, highlight=False)
    if not pending:
        return
    shared = shared_keys(targets)
    unmarked: list[str] = []

    def mark(key: str) -> None:
        """Marked as it accepts, not once all were tried: a pod killed during a later service's
        retries left the earlier ones unmarked, and the Job's retry sent them the report again."""
        if key in shared:  # entries of one key that differ in a credential header: the mark cannot say which accepted
            return
        # Delivered is delivered: a mark Redis refused (out of memory, a replica, a blip) is said, not a
        # failed run, whose Job retry sent the report to every service again and raised
        # SentinelDailyReportFailed for a report that went out (session 56's first take).
        _, trouble = marks_io(settings, lambda store: mark_sent(store, made.first_day, made.days, [key], time.time()))
        if trouble and not unmarked:
            err.print(f"note: not marked as sent ({trouble}): a run again for these days sends to them again",
                      markup=False, highlight=False)
        if trouble:
            unmarked.append(key)

    done = deliver_report(pending, path, head, summary_text(made), attempts=settings.notify_attempts,
                          backoff=settings.notify_backoff, backoff_max=settings.notify_backoff_max,
                          fit=lambda _text, maxlen, size: summary_text(made, maxlen, size), body_max=settings.notify_body_max,
                          on_accept=mark)
    if not done.ok:  # a non-zero exit, so a CronJob's failed run shows (and is retried: to these alone)
        raise fail(f"report not delivered to {len(done.failed)} of {done.targeted} service(s): {', '.join(done.failed)}")
    err.print(f"sent {path.name} to {done.sent} service(s)", markup=False, highlight=False)


def write_run_report(settings: Settings, path: Path) -> None:
    """`sentinel run --report`: every day in the data, read while the run's stack is still up."""
    from stream.reporting.render import format_for, render
    from stream.tools.files import replaced_when_done

    text = render(load_report(settings, None, None), format_for(path.name, None))
    with replaced_when_done(path) as handle:  # whole or not at all: a stopped run leaves an earlier one as it was
        handle.write(text)


@app.command("splits")
def splits(
    out_dir: Annotated[Path, typer.Option("--out", help="where the split CSVs and manifest.json go")],
    tfns: Annotated[Path, typer.Option("--tfns", exists=True, dir_okay=False, help="TFNS sent_train.csv")],
    export: Annotated[Path, typer.Option("--export", exists=True, dir_okay=False, help="meritcircle_cleaned_discord.csv (texts of the labelled keys)")],
    research: Annotated[Optional[Path], typer.Option("--research", exists=True, dir_okay=False, help="the research's dataset.json: also write train-research.csv without held-out or split texts")] = None,
) -> None:
    """Write the fixed train/select/test splits (TFNS, Discord, community voices) as CSVs for train and eval."""
    from training.data import DataError
    from training.indomain import write_splits

    try:
        manifest = write_splits(out_dir, tfns, export, research)
    except (DataError, ValueError) as exc:
        raise fail(str(exc)) from None
    for name, by_source in manifest["files"].items():
        out.print(f"{name}: " + ", ".join(f"{source} {sum(c.values())} ({', '.join(f'{k} {v}' for k, v in c.items())})"
                                           for source, c in by_source.items()))
    if "research_records_dropped" in manifest:
        out.print(f"research records dropped: {manifest['research_records_dropped']}")


@app.command("label-pool")
def label_pool_command(
    export: Annotated[Path, typer.Option("--export", exists=True, dir_okay=False, help="meritcircle_cleaned_discord.csv")],
    out_dir: Annotated[Path, typer.Option("--out", help="where batch.jsonl (n, text: for the annotators) and keys.csv (n, key, pool, p_neutral) go")],
    top: Annotated[int, typer.Option("--top", min=0, help="the messages the adapter finds least neutral")] = 1400,
    sample: Annotated[int, typer.Option("--random", min=0, help="plus this many drawn at random from the rest")] = 300,
    seed: Annotated[int, typer.Option("--seed")] = 20261201,
    base: BaseOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
    batch_size: BatchOpt = None,
) -> None:
    """Choose the next pre-2023 Discord messages to label (docs/labelling.md): every unlabelled one is
    scored, and the least neutral plus a random sample are written, shuffled, for two annotators."""
    import csv

    from training.indomain import label_pool, unlabelled_posts

    try:
        posts = unlabelled_posts(export)
    except ValueError as exc:
        raise fail(str(exc)) from None
    settings = model_settings(scorer=True, base=base, adapter=adapter, device=device, dtype=dtype, quantize=quantize, batch_size=batch_size)
    judgements = classify_all(load_classifier(settings), [text for _, text in posts], settings.batch_size, "scoring unlabelled messages")
    p_neutral = [j.probs["neutral"] for j in judgements]
    chosen = label_pool([key for key, _ in posts], p_neutral, top, sample, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "batch.jsonl").open("w", encoding="utf-8") as batch, (out_dir / "keys.csv").open("w", newline="", encoding="utf-8") as keys:
        writer = csv.writer(keys)
        writer.writerow(["n", "key", "pool", "p_neutral"])
        for n, (index, pool) in enumerate(chosen, start=1):
            batch.write(json.dumps({"n": n, "text": posts[index][1]}, ensure_ascii=False) + "\n")
            writer.writerow([n, posts[index][0], pool, round(p_neutral[index], 4)])
    out.print(f"{len(chosen)} of {len(posts)} unlabelled messages chosen ({out_dir}/batch.jsonl holds their texts: never commit it)")


@app.command("import-discord")
def import_discord(
    csv_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="meritcircle_cleaned_discord.csv")],
    out_file: Annotated[Path, typer.Option("--out", help="JSONL of posts, ready for sentinel run / replay")],
    channel: Annotated[str, typer.Option("--channel")] = "meritcircle",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="first N converted posts only")] = None,
) -> None:
    """Convert the research's Discord export into posts (repairs its garbled emoji and AM/PM times)."""
    from itertools import islice

    from stream.tools.files import replaced_when_done
    from training.discord import ImportReport, discord_posts

    report = ImportReport()
    try:
        with replaced_when_done(out_file, source=csv_file) as handle:
            for post in islice(discord_posts(csv_file, report, channel), limit):
                handle.write(json.dumps(post, ensure_ascii=False) + "\n")
    except UnicodeDecodeError:
        raise fail(f"{csv_file}: not UTF-8 text") from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise os_failure(exc) from None
    written = min(report.converted, limit) if limit else report.converted
    out.print(f"wrote {written} posts to {out_file}; {len(report.failed)} rows not converted")
    for reason, count in sorted(report.reasons().items()):
        out.print(f"  {reason}: {count}")
    for line, reason in report.failed[:10]:
        err.print(f"  {csv_file}:{line}: {reason}", markup=False)
    if len(report.failed) > 10:
        err.print(f"  ... and {len(report.failed) - 10} more")


@bench_app.command("pipeline")
def bench_pipeline_cmd(
    posts: Annotated[int, typer.Option("--posts", min=1, help="posts for the throughput comparison")] = 1024,
    latency_posts: Annotated[int, typer.Option("--latency-posts", min=1, help="posts replayed at a steady rate for latency")] = 200,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="pipeline rounds, each between two classifier-alone rounds")] = 2,
    words: Annotated[int, typer.Option("--words", min=1)] = 40,
    workers: Annotated[int, typer.Option("--workers", min=1, help="worker processes sharing the partitions (and the accelerator)")] = 1,
) -> None:
    """End-to-end sentinel run throughput vs the classifier alone, produce-to-window latency, worker RSS."""
    from sentinel.benchmarks import bench_pipeline
    from sentinel.synthetic import synthetic_posts

    settings = model_settings(redis=True)  # a REDIS_URL with KAFKA_BROKER: its workers connect to it
    with err.status("benchmarking the pipeline ..."):
        result = bench_pipeline(settings, synthetic_posts(posts, words=words), latency_posts, rounds=rounds, workers=workers)
    print(json.dumps(result))


@bench_app.command("store")
def bench_store_cmd(
    batches: Annotated[int, typer.Option("--batches", min=10, help="batches measured per target (after a warm-up)")] = 300,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    assets: Annotated[int, typer.Option("--assets", min=1)] = 3,
    channels: Annotated[int, typer.Option("--channels", min=1)] = 3,
    rate: Annotated[float, typer.Option("--rate", min=0.001, help="posts per second of event time")] = 100.0,
    pairs: Annotated[bool, typer.Option("--pairs", help="also write the hidden pair scopes, as a worker with incident grouping does")] = False,
    author_cap: Annotated[int, typer.Option("--author-cap", min=0, help="one server again with this SENTINEL_AUTHOR_CAP (0: not measured)")] = 3,
    authors: Annotated[int, typer.Option("--authors", min=1, help="writers the posts are spread over")] = 10_000,
    text_cap: Annotated[int, typer.Option("--text-cap", min=0, help="one server again with the author cap and this SENTINEL_TEXT_CAP (0: not measured)")] = 3,
) -> None:
    """Redis per batch on one server, a 6-node cluster, the cluster with WAIT, one server with the author cap and one with both caps: write time and the client's CPU, WAIT time, commands, memory."""
    from sentinel.bench_store import bench_store

    with err.status("benchmarking the store on one server and on a cluster ..."):
        result = bench_store(batches, batch_size, assets, channels, rate, pairs=pairs, author_cap=author_cap, authors=authors, text_cap=text_cap)
    print(json.dumps(result))


@bench_app.command("train")
def bench_train_cmd(
    steps: Annotated[int, typer.Option("--steps", min=1)] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    words: Annotated[int, typer.Option("--words", min=1)] = 40,
    base: BaseOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Training samples/s and peak memory: shared-prefix batches against the plain forward, same run."""
    from sentinel.benchmarks import bench_train

    settings = model_settings(base=base, device=device, dtype=dtype, quantize=quantize)
    with err.status("benchmarking training ..."):
        result = bench_train(settings, steps, batch_size, words)
    print(json.dumps(result))


@model_app.command("prepare")
def model_prepare() -> None:
    """Convert the bundled GGUF base into the cache once (containers run this at build time)."""
    import os

    from model.base import DEFAULT_BASE, ensure_converted_base

    settings = model_settings()
    if settings.base != DEFAULT_BASE:
        out.print(f"base is {settings.base!r}; nothing to convert")
        return
    try:  # before the conversion, not after it
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"SENTINEL_CACHE_DIR: cannot create it ({exc.strerror})") from None
    if not os.access(settings.cache_dir, os.W_OK):
        raise fail("SENTINEL_CACHE_DIR: not writable by this user")
    with err.status("converting the bundled GGUF (under a minute, once) ..."):
        path = ensure_converted_base(settings.cache_dir)
    out.print(str(path))


if __name__ == "__main__":
    # `python -m sentinel.cli` skips sentinel.main: no stop handling during these imports and none
    # after a stop line (docs/operations.md). `python -m sentinel` is the console script's entry.
    app()

"""The docs' relative links resolve: a page moved or renamed must not leave a reader at a dead link.
And what the docs name exists: every repository path (and test or function in it) they cite is there,
every `SENTINEL_*` variable is a setting, a default they state is the
setting's, every `sentinel COMMAND --option` they show is in the CLI, the README's import layers
are tests/test_layers.py's, and the README's `make demo` figures are those of the stored run
(docs/results/demo_summary.json, demo_notices_s49.json). The map of the code (docs/architecture.md)
names every package, gives every module a row of its own and names only real paths, the README's
Layout has a row for each package naming its modules, `make help` lists every target, and
operations.md's "What is kept" table states the topics' retention and the audit log's length as deployed.

Only links inside the repository are checked (no network), anchors against the target page's headings.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) or [text](target#anchor); a target with a scheme (https:, mailto:) is external.
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_pages() -> list[Path]:
    return sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("deploy/**/*.md")])


def dead_links(page: Path) -> list[str]:
    targets = (m.group(1) for m in _LINK.finditer(page.read_text(encoding="utf-8")))
    return [t for t in targets if not _EXTERNAL.match(t) and not (page.parent / t).exists()]


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = doc_pages()
    assert len(pages) > 5, pages  # the glob found the docs, so an empty result below means something
    dead = {str(p.relative_to(ROOT)): links for p in pages if (links := dead_links(p))}
    assert not dead, f"dead links: {dead}"


# `bench/scopes.py`, `docs/results/x-{a,b}.json`, `tests/test_x.py::test_y`, `stream/redis_client.open_redis`:
# a path into the repository that the docs name, in a code span, must be there (and the test or
# function it names in that file). Patterns (`*`, `<scope>`, `NAME`, `...`) are not paths.
_REPO_PATH = re.compile(r"`((?:docs|bench|tests|stream|model|training|sentinel|deploy|examples)/[^`\s]*)`")
_FILE_SUFFIX = re.compile(r"\.(?:py|json|jsonl|md|yaml|yml|csv|sh|txt|env|png|toml)$")


def expand_braces(path: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [x for alt in m.group(1).split(",") for x in expand_braces(path[: m.start()] + alt + path[m.end():])]


def missing_paths(text: str, root: Path) -> list[str]:
    missing = []
    for named in _REPO_PATH.findall(text):
        named = named.split("#")[0].rstrip(",.:;)")
        if re.search(r"[*<>]|NAME|\.\.\.|\s", named):
            continue
        for path in expand_braces(named):
            file, _, name = path.partition("::")
            if not name and not (root / file).exists() and not _FILE_SUFFIX.search(file) and "." in Path(file).name:
                file, name = file.rsplit(".", 1)[0] + ".py", file.rsplit(".", 1)[1]  # stream/redis_client.open_redis
            source = root / file
            if not source.exists():
                missing.append(path)
            elif name and not re.search(rf"^\s*(?:async )?(?:def|class) {re.escape(name)}\b|^{re.escape(name)}\s*[:=]", source.read_text(encoding="utf-8"), re.M):
                missing.append(path)
    return missing


def test_every_repository_path_the_docs_name_exists() -> None:
    wrong = {str(p.relative_to(ROOT)): found for p in doc_pages() if (found := missing_paths(p.read_text(encoding="utf-8"), ROOT))}
    assert not wrong, f"files, tests or functions the docs name that are not there: {wrong}"


def test_a_missing_path_is_found(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "a.py").write_text("def run():\n    pass\n")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "x-1.json").write_text("{}")
    text = ("`bench/a.py`, `bench/a.run`, `bench/a.py::run`, `bench/a.py::gone`, `bench/a.walk`, `bench/b.py`, "
            "`docs/results/x-{1,2}.json`, `docs/results/<name>.json`, `bench/*.py`")
    assert missing_paths(text, tmp_path) == ["bench/a.py::gone", "bench/a.walk", "bench/b.py", "docs/results/x-2.json"]


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.*)$", text, re.M)}


def dead_anchors(page: Path) -> list[str]:
    found = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text(encoding="utf-8")):
        path = page.parent / target if target else page
        if not _EXTERNAL.match(target) and path.suffix == ".md" and path.exists() and anchor not in heading_anchors(path):
            found.append(f"{target}#{anchor}")
    return found


def test_every_anchor_in_the_docs_names_a_heading() -> None:
    dead = {str(p.relative_to(ROOT)): anchors for p in doc_pages() if (anchors := dead_anchors(p))}
    assert not dead, f"links to headings that are not there (renamed?): {dead}"


def test_a_dead_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Redis Cluster\n## The edge: `SENTINEL_X=1` (a test)\n```sh\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("[a](there.md#redis-cluster) [b](there.md#the-edge-sentinel_x1-a-test) [c](there.md#not-a-heading) "
                    "[d](there.md#redis-clusters) [e](#own) [f](https://example.org/x#y)\n# Own\n")
    assert dead_anchors(page) == ["there.md#not-a-heading", "there.md#redis-clusters"]


def test_a_dead_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [anchor](there.md#a) [web](https://example.org/x) [gone](missing.md#b)")
    assert dead_links(page) == ["missing.md"]


# --- What the docs name must exist: settings, their defaults, commands and options, the layers ---
# Pure and fast: the pages are read as text, the settings and the CLI introspected (no model, no
# server). Each check has a test of its own below that feeds it a bogus name and sees it caught.

_VAR = re.compile(r"\bSENTINEL_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])(\*)?|\bSENTINEL_[A-Z0-9_]*_\*")


def setting_names() -> set[str]:
    from stream.settings import Settings

    return {f"SENTINEL_{name.upper()}" for name in Settings.model_fields}


def unknown_variables(text: str, known: set[str]) -> list[str]:
    """`SENTINEL_<NAME>`s in the text that are no setting; `SENTINEL_ALERT_*` must start one."""
    found = []
    for m in _VAR.finditer(text):
        name = m.group(0)
        if name.endswith("*"):
            ok = any(k.startswith(name.rstrip("*")) for k in known)
        else:
            ok = name in known
        if not ok:
            found.append(name)
    return found


def test_every_sentinel_variable_in_the_docs_is_a_setting() -> None:
    known = setting_names()
    wrong = {str(p.relative_to(ROOT)): names for p in doc_pages() if (names := unknown_variables(p.read_text(encoding="utf-8"), known))}
    assert not wrong, f"SENTINEL_ names in the docs that stream/settings.py does not have: {wrong}"


def test_an_unknown_variable_is_found() -> None:
    known = {"SENTINEL_ALERT_FIRE_Z", "SENTINEL_BASE"}
    text = "`SENTINEL_BASE=lexicon`, `SENTINEL_ALERT_*`, SENTINEL_<NAME>, `SENTINEL_ALERT_FIRE_ZZ`, `SENTINEL_NOTIFY_*` and SENTINEL_BOGUS."
    assert unknown_variables(text, known) == ["SENTINEL_ALERT_FIRE_ZZ", "SENTINEL_NOTIFY_*", "SENTINEL_BOGUS"]


# A default as the docs state it: `| `SENTINEL_X` | 3.5 |` (a table's default column) or `SENTINEL_X`
# (45 s) / (1h) / (10,000) right after the name. Other wordings are not read.
_DEFAULT = re.compile(r"`(SENTINEL_[A-Z0-9_]+)`(?: \| ([^|\n]+?) \|| \(([^()\n]+)\))")
_VALUE = re.compile(r"(\d[\d,]*(?:\.\d+)?) ?([smhd]?)")


def stated_default_problems(text: str, defaults: dict[str, object]) -> list[str]:
    problems = []
    for m in _DEFAULT.finditer(text):
        name, stated = m.group(1), (m.group(2) or m.group(3)).strip()
        value = _VALUE.fullmatch(stated)
        if name not in defaults or not value:
            continue  # prose, not a value; unknown names are the test above's
        number, unit = value.group(1).replace(",", ""), value.group(2)
        default = defaults[name]
        if isinstance(default, str):
            ok = f"{number}{unit}" == default
        elif isinstance(default, (int, float)) and not isinstance(default, bool) and unit in ("", "s"):
            ok = float(number) == float(default)
        else:
            continue
        if not ok:
            problems.append(f"{name}: the docs say {stated}, stream/settings.py {default!r}")
    return problems


def test_every_default_the_docs_state_is_the_settings_default() -> None:
    from stream.settings import Settings

    defaults = {f"SENTINEL_{name.upper()}": field.default for name, field in Settings.model_fields.items()}
    wrong = {str(p.relative_to(ROOT)): found for p in doc_pages() if (found := stated_default_problems(p.read_text(encoding="utf-8"), defaults))}
    assert not wrong, f"defaults the docs state that the settings do not have: {wrong}"


def test_a_wrong_default_is_found() -> None:
    defaults = {"SENTINEL_A": 3.5, "SENTINEL_B": "6h", "SENTINEL_C": 60.0, "SENTINEL_D": 10_000, "SENTINEL_E": 20}
    text = ("| `SENTINEL_A` | 3.5 | x |\n| `SENTINEL_B` | 6h | x |\n`SENTINEL_C` (60 s), `SENTINEL_D` (10,000), "
            "`SENTINEL_E` (3; off), `SENTINEL_B` (5h), `SENTINEL_A` | 4.0 |")
    assert stated_default_problems(text, defaults) == [
        "SENTINEL_B: the docs say 5h, stream/settings.py '6h'", "SENTINEL_A: the docs say 4.0, stream/settings.py 3.5"]


# `sentinel COMMAND [SUBCOMMAND] --option ...` in a shell block or a `code span`: the command and
# each long option must exist in the CLI (typer, introspected; nothing runs).
_INVOCATION = re.compile(r"(?:^|[\s/(])sentinel\s+([a-z][a-z-]*)((?:\s+[^\s;&<>]+)*)")
_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def cli_commands() -> dict[tuple[str, ...], object]:
    import typer.main

    from sentinel.cli import app

    root = typer.main.get_command(app)
    found: dict[tuple[str, ...], object] = {}
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found[(name,)] = command
        for sub, subcommand in getattr(command, "commands", {}).items():
            found[(name, sub)] = subcommand
    return found


def invocations(text: str) -> list[tuple[str, list[str]]]:
    snippets = []
    for block in _FENCE.findall(text):
        snippets += [line.split(" #")[0] for line in block.replace("\\\n", " ").splitlines()]
    # A code span may wrap onto the next line of its paragraph (`sentinel run FILE --input-ended\n  --summary-json ...`).
    for paragraph in re.split(r"\n\s*\n", _FENCE.sub("", text)):
        snippets += [" ".join(span.split()) for span in re.findall(r"`([^`]*\bsentinel\s[^`]*)`", paragraph)]
    found = []
    for snippet in snippets:
        for part in re.split(r" \| |;|&&|\$\(|\)", snippet):  # a shell pipe has spaces; `real|false-alarm` does not
            if m := _INVOCATION.search(part):
                found.append((m.group(1), m.group(2).split()))
    return found


def cli_problems(text: str, commands: dict[tuple[str, ...], object]) -> list[str]:
    problems = []
    for name, args in invocations(text):
        command = commands.get((name,))
        if command is None:
            problems.append(f"sentinel {name}: no such command")
            continue
        shown = f"sentinel {name}"
        if getattr(command, "commands", None) and args and re.fullmatch(r"[a-z][a-z-]*", args[0]):  # not `sentinel bench ...`
            command = commands.get((name, args[0]))
            shown += f" {args[0]}"
            if command is None:
                problems.append(f"{shown}: no such command")
                continue
            args = args[1:]
        options = {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}  # type: ignore[attr-defined]
        for arg in args:
            for option in re.findall(r"(?:^|/)(--[a-z][a-z0-9-]*)", arg.strip("[]").split("=")[0]):
                if option not in options:
                    problems.append(f"{shown} {option}: no such option")
    return problems


def test_every_sentinel_command_and_option_in_the_docs_exists() -> None:
    commands = cli_commands()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(invocations(readme)) > 40  # the parser finds the README's commands
    wrong = {str(p.relative_to(ROOT)): found for p in doc_pages() if (found := cli_problems(p.read_text(encoding="utf-8"), commands))}
    assert not wrong, f"commands or options the docs show that the CLI does not have: {wrong}"


def test_an_unknown_command_or_option_is_found() -> None:
    commands = cli_commands()
    text = ("```sh\n.venv/bin/sentinel replay posts.jsonl --speed 60 --bogus   # --not-read in a comment\n"
            "sentinel record --topic x \\\n  --max-idle 5 --gone\nsentinel bench nosuch\n```\n"
            "`sentinel notify-test [--severity warning|critical] [--attempts N]`, `sentinel frobnicate`, "
            "`sentinel bench store [--pairs] [--assets 300 --shards 2]`, `sentinel train --text-col/--label-kol`, "
            "`sentinel run x.jsonl --input-ended\n  --summary-jsn s.json`")
    assert cli_problems(text, commands) == [
        "sentinel replay --bogus: no such option", "sentinel record --gone: no such option", "sentinel bench nosuch: no such command",
        "sentinel frobnicate: no such command", "sentinel bench store --shards: no such option", "sentinel train --label-kol: no such option",
        "sentinel run --summary-jsn: no such option"]


def readme_layers(text: str) -> list[set[str]]:
    """The README's `worker` > `ops` | ... chain of the layers inside stream/."""
    m = re.search(r"each\s+layer imports only those below it: (.*?)\. Pure modules", text, re.S)
    assert m, "the README's sentence on the layers inside stream/ is gone"
    return [{name.strip().strip("`") for name in layer.split("|")} for layer in m.group(1).split(">")]


def test_the_readmes_layers_are_test_layers_layers() -> None:
    from test_layers import LAYERS

    assert readme_layers((ROOT / "README.md").read_text(encoding="utf-8")) == [
        {name.removeprefix("stream.") for name in layer} for layer in LAYERS]


def test_a_layer_out_of_place_is_found() -> None:
    text = "each layer imports only those below it: `worker` > `ops` | `tools` > `timefmt`. Pure modules"
    assert readme_layers(text) == [{"worker"}, {"ops", "tools"}, {"timefmt"}]


# The README's figures of `make demo`, against the stored run they come from: a change to the
# detector, grouping or delivery that moves them must store a new run and say so in the README.
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def demo_figure_drift(readme: str, summary: dict, notices: dict) -> list[str]:
    """Each README figure of `make demo` that is not what `summary` (docs/results/demo_summary.json)
    and `notices` (a bench/demo_notices.py output) hold, in words; a sentence gone is drift too."""
    found: list[str] = []
    counts, records = summary["summary"], summary["records"]
    m = re.search(r"one incident of (\d+) transitions rooted at `([^`]+)`", readme)
    if not m:
        found.append("the demo's 'one incident of N transitions rooted at' sentence is gone")
    elif (int(m.group(1)), counts["incidents"], [m.group(2)]) != (counts["alerts"], 1, list(counts["incident_roots"])):
        found.append(f"README: one incident of {m.group(1)} transitions rooted at {m.group(2)}; stored: "
                     f"{counts['incidents']} incident(s) of {counts['alerts']} rooted at {list(counts['incident_roots'])}")
    m = re.search(r"sentinel ack ([0-9a-f]{20}) .*?# make demo's", readme)
    if not m or [m.group(1)] != records["incident_ids"]:
        found.append(f"README's ack example names {m and m.group(1)}; the stored run's incident: {records['incident_ids']}")
    m = re.search(r"([\d,]+) positive, ([\d,]+) negative, ([\d,]+) neutral", readme)
    said = m and {label: int(n.replace(",", "")) for label, n in zip(("positive", "negative", "neutral"), m.groups(), strict=True)}
    if said != counts["labels"]:
        found.append(f"README's demo label counts {said}; stored: {counts['labels']}")
    m = re.search(r"`demo-stream\.jsonl:(\d+): (\w+): \.\.\.`", readme)
    first = counts["dead_lettered_lines"][0]
    if not m or (int(m.group(1)), m.group(2)) != (first["line"], first["reason"]):
        found.append(f"README's dead-lettered example {m and m.group(0)}; stored: line {first['line']}, {first['reason']}")
    m = re.search(r"makes that incident (\w+) notifications", readme)
    grouped = next(r for r in notices["results"] if r["detector"] == "sequential" and r["grouping"] == "incidents")
    if not m or _NUMBER_WORDS.get(m.group(1)) != grouped["notifications"] or grouped["records"] != counts["alerts"]:
        found.append(f"README: that incident {m and m.group(1)} notifications; stored: {grouped['notifications']} "
                     f"({grouped['records']} records)")
    return found


def demo_stored() -> tuple[dict, dict]:
    return (json.loads((ROOT / "docs" / "results" / "demo_summary.json").read_text()),
            json.loads((ROOT / "docs" / "results" / "demo_notices_s49.json").read_text()))


def test_the_readmes_demo_figures_are_the_stored_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/results/demo_summary.json" in readme and "demo_notices_s49.json" in readme
    assert demo_figure_drift(readme, *demo_stored()) == []


def test_a_demo_figure_that_drifted_is_found() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    summary, notices = demo_stored()
    drifted = (readme.replace("one incident of 36 transitions", "one incident of 46 transitions")
               .replace("that incident three notifications", "that incident four notifications")
               .replace("1,448 positive", "1,449 positive"))
    found = demo_figure_drift(drifted, summary, notices)
    assert len(found) == 3 and "46" in found[0] and "1449" in found[1] and "four" in found[2]
    other = json.loads(json.dumps(summary))
    other["records"]["incident_ids"] = ["0" * 20]
    assert any("ack example" in line for line in demo_figure_drift(readme, other, notices))


# --- The map of the code: docs/architecture.md and the README's Layout ---------------------------
# A newcomer finds each module through them, so they must name every module and package of the
# four packages, and nothing that is not there (a file moved or deleted leaves a dead entry).
MAPPED_PACKAGES = ("stream", "model", "training", "sentinel")
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def code_units(root: Path) -> dict[str, list[str]]:
    """Each package directory of the four (`stream/alerts/`, also one without an `__init__.py`)
    -> its modules' names (`engine`, not `__init__`)."""
    units: dict[str, list[str]] = {}
    for package in MAPPED_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            modules = units.setdefault(path.parent.relative_to(root).as_posix() + "/", [])
            if path.name != "__init__.py":
                modules.append(path.stem)
    return units


# A row of the map's module tables: `| `stream/store.py` | what it does |`.
_MAP_ROW = re.compile(r"^\| `([^`]+)` \|", re.M)


def map_problems(text: str, root: Path) -> list[str]:
    """What a map of the code (docs/architecture.md) gets wrong: a path it names that is not
    there, a package it names nowhere (by its path, in a code span), and a module with no row of
    its own (a module named only in passing, in the ideas' table, has no line saying what it is)."""
    named = {found.split("#")[0].rstrip(",.:;)") for found in _REPO_PATH.findall(text)}
    rows = set(_MAP_ROW.findall(text))
    problems = [f"{path}: named, not there" for path in missing_paths(text, root)]
    for package, modules in code_units(root).items():
        problems += [f"{package}: on no line"] if package not in named else []
        problems += [f"{path}: no row" for path in (f"{package}{m}.py" for m in modules) if path not in rows]
    return problems


def test_the_architecture_map_names_every_module_and_only_real_ones() -> None:
    assert len(code_units(ROOT)) >= 9 and len(code_units(ROOT)["stream/alerts/"]) > 10  # the walk finds the code
    problems = map_problems(ARCHITECTURE.read_text(encoding="utf-8"), ROOT)
    assert not problems, "docs/architecture.md, against the tree:\n" + "\n".join(problems)


def test_a_map_naming_a_missing_file_or_leaving_out_a_module_is_found(tmp_path: Path) -> None:
    for module in ("stream/__init__.py", "stream/worker.py", "stream/alerts/__init__.py", "stream/alerts/engine.py",
                   "stream/console/views.py", "model/labels.py", "training/data.py", "sentinel/cli.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("")
    modules = ("stream/worker.py", "stream/alerts/engine.py", "stream/console/views.py", "model/labels.py", "training/data.py", "sentinel/cli.py")
    whole = ("`stream/` `stream/alerts/` `stream/console/` `model/` `training/` `sentinel/`\n\n| module | what |\n| --- | --- |\n"
             + "".join(f"| `{m}` | what it does |\n" for m in modules))
    assert map_problems(whole, tmp_path) == []
    gone = whole.replace("`stream/alerts/engine.py`", "`stream/alerts/engines.py`").replace("`stream/console/` ", "")
    assert map_problems(gone, tmp_path) == [
        "stream/alerts/engines.py: named, not there", "stream/alerts/engine.py: no row", "stream/console/: on no line"]
    # Named in passing (the ideas' table, prose) is not a row of its own.
    passing = whole.replace("| `model/labels.py` | what it does |\n", "") + "\n| idea | code |\n| --- | --- |\n| labels | `model/labels.py` |\n"
    assert map_problems(passing, tmp_path) == ["model/labels.py: no row"]


def readme_layout(text: str) -> dict[str, str]:
    """The README's Layout table: a row's path (`stream/alerts/`) -> the rest of the row."""
    m = re.search(r"^## Layout\n(.*?)^## ", text, re.S | re.M)
    assert m, "the README's Layout section is gone"
    return dict(re.findall(r"^\| `([^`]+)` \| (.*) \|$", m.group(1), re.M))


def layout_problems(text: str, root: Path) -> list[str]:
    """Each package of the four the README's Layout has no row for, and each module its package's
    row does not name (as `engine`, in a code span)."""
    rows = readme_layout(text)
    problems = []
    for package, modules in code_units(root).items():
        if package not in rows:
            problems.append(f"{package}: no row")
            continue
        problems += [f"{package}{m}.py: not in its row" for m in modules if f"`{m}`" not in rows[package]]
    return problems


def test_the_readmes_layout_has_a_row_for_every_package_naming_its_modules() -> None:
    problems = layout_problems((ROOT / "README.md").read_text(encoding="utf-8"), ROOT)
    assert not problems, "the README's Layout, against the tree:\n" + "\n".join(problems)


def test_a_layout_without_a_package_or_module_is_found(tmp_path: Path) -> None:
    for module in ("stream/worker.py", "stream/keys.py", "stream/alerts/engine.py", "model/labels.py", "training/data.py", "sentinel/cli.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("")
    text = ("## Layout\n\n| path | what |\n| --- | --- |\n| `model/` | `labels` (closed set) |\n| `training/` | `data` |\n"
            "| `stream/` | `worker` (Faust) |\n| `sentinel/` | the `sentinel` CLI (`cli`) |\n\n## Data\n")
    assert layout_problems(text, tmp_path) == ["stream/alerts/: no row", "stream/keys.py: not in its row"]


def test_make_help_lists_every_target() -> None:
    """`make help` (each target's `## ` note) leaves none of the Makefile's targets out."""
    if not shutil.which("make"):
        pytest.skip("no make on PATH")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = set(re.search(r"^\.PHONY: (.*)$", makefile, re.M).group(1).split())  # type: ignore[union-attr]
    shown = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    listed = set(re.findall(r"^  make (\S+)", shown.stdout, re.M))
    assert {"setup", "demo", "test", "check", "help"} <= phony
    assert listed == phony, f"in .PHONY but not in `make help`: {sorted(phony - listed)}; listed, not phony: {sorted(listed - phony)}"


def kept_table() -> dict[str, str]:
    """docs/operations.md "What is kept, and for how long": record's `where` cell -> its `kept` cell."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").split("## What is kept, and for how long", 1)[1]
    rows = [line.split(" | ") for line in text.split("\n## ", 1)[0].splitlines() if line.startswith("| ") and "---" not in line]
    return {where: kept.rstrip(" |") for _, where, kept in rows[1:]}


def test_what_is_kept_states_the_topics_retention_and_the_audit_logs_length() -> None:
    """An auditor reads in one place how long each record survives; the figures are the manifests' and the code's."""
    from stream.alerts.audit import AUDIT_ENTRIES
    from stream.keys import AUDIT_KEY

    kept = kept_table()
    manifest = (ROOT / "deploy" / "k8s" / "base" / "kafka-topics.yaml").read_text(encoding="utf-8")
    topics = dict(re.findall(r"name: (\S+)\n(?:.*\n)*?\s+retention\.ms: \"(\d+)\"", manifest))
    assert set(topics) == {"forum-posts", "post-sentiment", "forum-posts-dlq", "sentiment-alerts"}, topics
    for topic, ms in topics.items():  # whole days, or "7 d" would pass for 7.5 days
        assert int(ms) % 86_400_000 == 0 and kept[f"topic `{topic}`"] == f"{int(ms) // 86_400_000} d", (topic, ms)
    assert kept[f"Redis stream `{AUDIT_KEY}`"].startswith(f"the latest {AUDIT_ENTRIES:,} entries"), kept


def test_what_is_kept_says_when_the_incidents_expire_with_no_grouping_round() -> None:
    """The incidents, their acknowledgements and verdicts are pruned by event time, and also expire
    (the alert keys' idle TTL, renewed by each grouping round) once no round writes: workers stopped
    for that long lose them all, which an auditor reading only "a retention behind" would not expect.
    The figures are the deployed retention's and the store's."""
    from types import SimpleNamespace

    from stream.store import WindowStore
    from stream.timefmt import parse_duration

    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").split("## What is kept, and for how long", 1)[1]
    env = (ROOT / "deploy" / "k8s" / "base" / "sentinel.env").read_text(encoding="utf-8")
    retention = re.search(r"^SENTINEL_RETENTION=(\S+)$", env, re.M).group(1)
    assert f"`SENTINEL_RETENTION` is {retention})" in " ".join(text.split()), retention
    # No Redis is reached: the store only registers its scripts on the client when made.
    idle_h = WindowStore(SimpleNamespace(register_script=lambda script: None), retention_s=parse_duration(retention)).idle_ttl_s // 3600
    incidents = next(kept for where, kept in kept_table().items() if "incidents" in where)
    assert f"{idle_h} h" in incidents and "idle TTL" in incidents, incidents


def test_what_is_kept_states_the_daily_reports_figures() -> None:
    """`sentinel report --day` for a past day reads the daily roll-ups; whether a service took that
    report, the sent marks. Their rows' figures are the code's defaults."""
    from stream.reporting.sent import SENT_TTL_S
    from stream.store import DAY_RETENTION_S

    kept = kept_table()
    rollups = next(kept for where, kept in kept.items() if "daily roll-ups" in where)
    assert rollups.startswith(f"{DAY_RETENTION_S // 86400} d of event time (`SENTINEL_REPORT_RETENTION`)"), rollups
    sent = next(kept for where, kept in kept.items() if "report:sent" in where)
    assert SENT_TTL_S % 86400 == 0 and sent.startswith(f"{SENT_TTL_S // 86400} d after its last mark"), sent

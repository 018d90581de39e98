"""deploy/k8s/: valid against the current Kubernetes schema, rendered by the real
`kubectl kustomize`, probes on real routes, resources from what `make bench`
measured, and the autoscaler and network policies aimed at the right pods."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import ConfigError
from gateway.config_load import from_mapping
from gateway.web.app import create_app

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BENCH_RESULTS = REPO / "bench" / "RESULTS.md"
MIB = 1024 * 1024
NOT_APPLIED = {"secret.example.yaml"}  # placeholders: would overwrite the real Secret


def _documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {path.name: _documents(path.read_text()) for path in sorted(K8S.glob("*.yaml"))
            if path.name != "kustomization.yaml"}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: `make system-deps` installs kubernetes-client")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return _documents(result.stdout)


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _validate(doc: dict[str, Any]) -> str:
    return str(kubernetes_validate.validate(doc, kubernetes_validate.latest_version(),
                                            strict=True))


@pytest.mark.parametrize("name", sorted(_manifests()))
def test_every_manifest_is_valid_for_the_current_kubernetes(name: str) -> None:
    docs = _manifests()[name]
    assert docs
    for doc in docs:
        try:
            version = _validate(doc)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}: {exc.message} at {list(exc.path)}")
        assert version == kubernetes_validate.latest_version().rsplit(".", 1)[0]


def test_validation_would_catch_a_broken_manifest() -> None:
    deployment = _one(_manifests()["deployment.yaml"], "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken)


def test_kustomization_applies_every_manifest(rendered: list[dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(set(_manifests()) - NOT_APPLIED)
    for doc in rendered:
        _validate(doc)
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                            "HorizontalPodAutoscaler", "NetworkPolicy", "NetworkPolicy"])
    image = _one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    new = kustomization["images"][0]
    assert image == f"{new['newName']}:{new['newTag']}"


async def test_probes_point_at_real_routes(tmp_path: Path) -> None:
    deployment = _one(_manifests()["deployment.yaml"], "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    config = from_mapping({"origin": {"kind": "local", "root": str(tmp_path)},
                           "disk": {"path": str(tmp_path / "cache")}}, {})
    app = await create_app(config)
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None}
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    configmap = _one(_manifests()["configmap.yaml"], "ConfigMap")["data"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert ("GET", get["path"]) in routes, (probe, get["path"])
        assert port_names[get["port"]] == int(configmap["GATEWAY_SERVER_PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _bench_worker_fixed_mb() -> float:
    """The fixed cost of one worker: the largest process of the gateway-disk run (its
    LRU is 1 MiB), in bench/RESULTS.md's Memory table, in MB."""
    row = next(line for line in BENCH_RESULTS.read_text().splitlines()
               if line.startswith("| gateway-disk |"))
    per_process = row.split("|")[6]
    return max(float(x) for x in re.findall(r"([\d.]+) MB", per_process))


def _bench_worker_fixed_mib() -> float:
    return _bench_worker_fixed_mb() * 1e6 / MIB


def _comments(text: str) -> str:
    """The YAML comments of a manifest as one line of words."""
    return " ".join(line.strip().lstrip("#").strip() for line in text.splitlines()
                    if line.strip().startswith("#"))


def _quantity_mib(text: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", text)
    assert match, text
    return int(match.group(1)) * units[match.group(2)]


def test_memory_request_is_the_lru_plus_what_bench_measured_for_one_worker() -> None:
    container = _one(_manifests()["deployment.yaml"], "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]
    configmap = _one(_manifests()["configmap.yaml"], "ConfigMap")["data"]
    config = from_mapping({}, {k: str(v) for k, v in configmap.items()})
    assert config.server.workers == 1
    lru_mib = config.memory.max_bytes / MIB
    need = lru_mib + _bench_worker_fixed_mib()
    request = _quantity_mib(container["resources"]["requests"]["memory"])
    limit = _quantity_mib(container["resources"]["limits"]["memory"])
    assert request == math.ceil(need / 32) * 32, (request, need)
    origin_max_mib = config.origin.max_bytes / MIB
    assert limit >= request + 4 * origin_max_mib
    # The disk cache fits its volume, and the ephemeral-storage request covers it.
    volumes = {v["name"]: v for v in _one(_manifests()["deployment.yaml"], "Deployment")[
        "spec"]["template"]["spec"]["volumes"]}
    disk_mib = config.disk.max_bytes / MIB
    assert _quantity_mib(volumes["cache"]["emptyDir"]["sizeLimit"]) > disk_mib
    assert _quantity_mib(container["resources"]["requests"]["ephemeral-storage"]) > disk_mib
    # The figure the manifest and the deploy README quote is bench/RESULTS.md's.
    figure = f"{_bench_worker_fixed_mb()} MB"
    assert figure in _comments((K8S / "deployment.yaml").read_text())
    assert figure in " ".join((REPO / "deploy" / "README.md").read_text().split())


def _bench_row_req_s(scenario: str) -> float:
    row = next(line for line in BENCH_RESULTS.read_text().splitlines()
               if line.startswith(f"| {scenario} |"))
    match = re.fullmatch(r"\s*([\d,]+) req/s\s*", row.split("|")[2])
    assert match, row
    return float(match.group(1).replace(",", ""))


def _cores(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(m?)", quantity)
    assert match, quantity
    return int(match.group(1)) / (1000 if match.group(2) else 1)


def test_cpu_is_the_one_core_a_worker_uses_as_bench_measured() -> None:
    deployment = _one(_manifests()["deployment.yaml"], "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    configmap = _one(_manifests()["configmap.yaml"], "ConfigMap")["data"]
    config = from_mapping({}, {k: str(v) for k, v in configmap.items()})
    # One process, one event loop thread: one core, requested and the limit.
    assert config.server.workers == 1
    assert _cores(str(container["resources"]["requests"]["cpu"])) == 1.0
    assert _cores(str(container["resources"]["limits"]["cpu"])) == 1.0
    # The figures the manifest's comment gives, as bench/RESULTS.md has them: runs
    # where one worker had one core to itself.
    results = BENCH_RESULTS.read_text()
    assert "wrk and the one server process get a core each" in results
    memory_hits = _bench_row_req_s("gateway, 1 worker, memory hits")
    variants = _bench_row_req_s("gateway, 1 worker, cached 64x64 variant")
    comment = _comments((K8S / "deployment.yaml").read_text())
    assert f"{memory_hits:,.0f} req/s of memory hits" in comment
    assert f"{variants:,.0f} req/s of cached 64x64 variants" in comment
    hpa = _one(_manifests()["hpa.yaml"], "HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    utilization = metric["resource"]["target"]["averageUtilization"]
    assert f"adds pods at {utilization} % of the" in comment
    per_pod = round(memory_hits * utilization / 100, -2)
    assert f"at about {per_pod:,.0f} memory hits/s per pod" in comment
    readme = " ".join((REPO / "deploy" / "README.md").read_text().split())
    for figure in (f"{memory_hits:,.0f} memory hits/s", f"{variants:,.0f} cached variants/s",
                   f"about {per_pod:,.0f} memory hits/s per pod"):
        assert figure in readme, figure


def test_autoscaler_scales_the_deployment_on_cpu() -> None:
    hpa = _one(_manifests()["hpa.yaml"], "HorizontalPodAutoscaler")
    deployment = _one(_manifests()["deployment.yaml"], "Deployment")
    pdb = _one(_manifests()["pdb.yaml"], "PodDisruptionBudget")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "cpu" in container["resources"]["requests"]  # utilization is of the request


def test_network_policies_let_only_nginx_in_and_only_the_gateway_and_redis_reach_redis() -> None:
    docs = _manifests()["networkpolicy.yaml"]
    deployment = _one(_manifests()["deployment.yaml"], "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    gateway = _one(docs, "NetworkPolicy", "image-gateway")
    selector = gateway["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert gateway["spec"]["policyTypes"] == ["Ingress"]
    [rule] = gateway["spec"]["ingress"]
    [peer] = rule["from"]
    assert peer == {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "image-gateway-nginx"}}}
    assert [p["port"] for p in rule["ports"]] == ["http"]

    redis = _one(docs, "NetworkPolicy", "image-gateway-redis")
    redis_labels = {"app.kubernetes.io/name": "redis"}
    assert redis["spec"]["podSelector"]["matchLabels"] == redis_labels
    assert redis["spec"]["policyTypes"] == ["Ingress"]
    from_gateway, from_peers = redis["spec"]["ingress"]
    [peer] = from_gateway["from"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Redis itself and Sentinel (README "HA set-ups": GATEWAY_REDIS_SENTINELS).
    assert [(p["port"], p["protocol"]) for p in from_gateway["ports"]] == [
        (6379, "TCP"), (26379, "TCP")]
    # Replication and sentinel <-> sentinel/redis traffic: Redis's pods reach each
    # other on any port (no `ports` means every port).
    assert from_peers == {"from": [{"podSelector": {"matchLabels": redis_labels}}]}
    # Nothing else: no rule admits a peer that is neither the gateway nor Redis.
    for rule in redis["spec"]["ingress"]:
        for source in rule["from"]:
            assert set(source) == {"podSelector"}, source


async def test_readiness_fails_only_while_draining(tmp_path: Path) -> None:
    """What the Deployment's readinessProbe comment says: a failing dependency check
    is reported (degraded) with 200; only a draining process answers 503."""
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.web.keys import PARTS

    deployment = _one(_manifests()["deployment.yaml"], "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    path = container["readinessProbe"]["httpGet"]["path"]
    config = from_mapping({"origin": {"kind": "local", "root": str(tmp_path)},
                           "disk": {"path": str(tmp_path / "cache")}}, {})
    app = await create_app(config)

    async def failing() -> bool:
        return False

    app[PARTS].health.checks = {name: failing for name in app[PARTS].health.checks}
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(path)
        report = await resp.json()
        assert resp.status == 200
        assert report["status"] == "degraded"
        assert set(report["checks"].values()) == {"failing"}
        await app.shutdown()  # what SIGTERM starts: the drain
        resp = await client.get(path)
        assert resp.status == 503
        assert (await resp.json())["status"] == "draining"


def test_pods_spread_over_nodes_as_the_comment_says() -> None:
    spec = _one(_manifests()["deployment.yaml"], "Deployment")["spec"]["template"]["spec"]
    by_key = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    nodes, zones = by_key["kubernetes.io/hostname"], by_key["topology.kubernetes.io/zone"]
    assert (nodes["maxSkew"], nodes["whenUnsatisfiable"]) == (1, "DoNotSchedule")
    assert (zones["maxSkew"], zones["whenUnsatisfiable"]) == (1, "ScheduleAnyway")
    comment = _comments((K8S / "deployment.yaml").read_text())
    assert "differ by at most 1" in comment
    assert "different nodes (hard)" not in comment


def test_cluster_secret_comes_from_the_secret_and_is_needed_without_static_keys() -> None:
    """With IRSA / an instance role there is no AWS_SECRET_ACCESS_KEY to derive the
    fill key from: the pod needs GATEWAY_CLUSTER_SECRET or it refuses to start."""
    deployment = _one(_manifests()["deployment.yaml"], "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    secret = _one(_manifests()["secret.example.yaml"], "Secret")
    [from_secret] = [e for e in container["env"] if e["name"] == "GATEWAY_CLUSTER_SECRET"]
    ref = from_secret["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "GATEWAY_CLUSTER_SECRET",
                   "optional": True}
    assert "GATEWAY_CLUSTER_SECRET" in secret["stringData"]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]

    environ = {k: str(v) for k, v in
               _one(_manifests()["configmap.yaml"], "ConfigMap")["data"].items()}
    environ["GATEWAY_REDIS_URL"] = "redis://redis:6379/0"
    with pytest.raises(ConfigError, match=r"cluster\.secret: required"):
        from_mapping({}, environ)  # no static keys, no cluster secret: refused
    from_mapping({}, {**environ, "GATEWAY_CLUSTER_SECRET": "x" * 32})
    from_mapping({}, {**environ, "AWS_ACCESS_KEY_ID": "id",
                      "AWS_SECRET_ACCESS_KEY": "s" * 40})  # derived: optional
    # The example's placeholder is refused until replaced, like the admin token's.
    with pytest.raises(ConfigError, match=r"cluster\.secret: must be at least 32"):
        from_mapping({}, {**environ, "GATEWAY_CLUSTER_SECRET":
                          secret["stringData"]["GATEWAY_CLUSTER_SECRET"]})

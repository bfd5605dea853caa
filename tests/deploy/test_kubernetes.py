"""deploy/kubernetes: every kustomization (the security server's base and overlays, the
registry) renders (tests/deploy/kustomize.py) to resources that pass the Kubernetes schemas
shipped by kubernetes-validate (no network), and has what the operator guide promises: workloads
that run non-root on a read-only root with probes, requests and limits, a PodDisruptionBudget,
NetworkPolicies that let one port only in from outside the namespace (the security server's
transport port, the registry's HTTP port), and for the security server a StatefulSet with its
keys from a Secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy.kustomize import KustomizeSubsetError, render, strategic_merge

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
#: The Kubernetes version whose schemas the manifests are checked against.
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
SECURITY_SERVER = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
#: Each kustomization, and the one port it opens to other namespaces.
KUSTOMIZATIONS = {**dict.fromkeys(SECURITY_SERVER, 5500), "registry": 4480}

Resource = dict[str, Any]


def _one(resources: list[Resource], kind: str, name: str = "ruta-security-server") -> Resource:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


@pytest.fixture(scope="module", params=list(KUSTOMIZATIONS))
def kustomization(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def every(kustomization: str) -> list[Resource]:
    return render(KUBERNETES / kustomization)


@pytest.fixture(scope="module", params=SECURITY_SERVER)
def rendered(request: pytest.FixtureRequest) -> list[Resource]:
    return render(KUBERNETES / request.param)


def test_there_are_overlays() -> None:
    assert {"small", "production"} <= set(OVERLAYS)
    found = {
        str(path.parent.relative_to(KUBERNETES)) for path in KUBERNETES.rglob("kustomization.yaml")
    }
    assert found == set(KUSTOMIZATIONS)  # every kustomization is checked


def test_every_resource_passes_the_kubernetes_schema(every: list[Resource]) -> None:
    for resource in every:
        # strict: unknown fields are errors too.
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _workloads(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r["kind"] in {"StatefulSet", "Deployment", "DaemonSet"}]


def test_workloads_are_locked_down(every: list[Resource]) -> None:
    assert _workloads(every)
    for workload in _workloads(every):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(container["resources"])
        for container in pod["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, (workload["metadata"]["name"], probe)
            assert container["readinessProbe"]["exec"]["command"][:2] == ["ruta", "health"]


def test_the_schema_check_catches_mistakes(rendered: list[Resource]) -> None:
    server = _one(rendered, "StatefulSet")
    wrong = strategic_merge(server, {"spec": {"replicas": "two"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSION, strict=True)
    typo = strategic_merge(server, {"spec": {"template": {"spec": {"serviceAcount": "x"}}}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


def test_security_server_pod(rendered: list[Resource]) -> None:
    server = _one(rendered, "StatefulSet")
    pod = server["spec"]["template"]["spec"]
    keys = [v for v in pod["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in keys] == ["ruta-security-server-keys"]
    assert server["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_disruption_budget(every: list[Resource]) -> None:
    budgets = [r["spec"] for r in every if r["kind"] == "PodDisruptionBudget"]
    assert [b["selector"] for b in budgets] == [w["spec"]["selector"] for w in _workloads(every)]
    for budget in budgets:
        assert len({"minAvailable", "maxUnavailable"} & set(budget)) == 1


def _port_numbers(rule: Resource, resources: list[Resource]) -> set[int]:
    named = {
        port["name"]: port["containerPort"]
        for workload in _workloads(resources)
        for container in workload["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    return {p["port"] if isinstance(p["port"], int) else named[p["port"]] for p in rule["ports"]}


def test_one_port_only_is_open_from_outside_the_namespace(
    kustomization: str, every: list[Resource]
) -> None:
    policies = [r for r in every if r["kind"] == "NetworkPolicy"]
    # Ingress is denied unless allowed: a policy selects every pod for ingress with no rule.
    assert any(
        p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]
        for p in policies
        if "Ingress" in p["spec"]["policyTypes"]
    )
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            if sources is None:
                # Open to any source: only ever the one public port.
                assert _port_numbers(rule, every) == {KUSTOMIZATIONS[kustomization]}
            else:
                # Otherwise sources are pods of this namespace only.
                assert all(set(source) == {"podSelector"} for source in sources)


def test_overlays_set_namespace_and_image() -> None:
    for overlay in OVERLAYS:
        for resource in render(KUBERNETES / "overlays" / overlay):
            assert resource["metadata"]["namespace"] == "ruta-pop"
        server = _one(render(KUBERNETES / "overlays" / overlay), "StatefulSet")
        image = server["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.example.org/ruta:0.1.0"


def test_production_overlay() -> None:
    resources = render(KUBERNETES / "overlays" / "production")
    server = _one(resources, "StatefulSet")
    assert server["spec"]["replicas"] == 2
    (container,) = server["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["RUTA_SS_LOG__URL"]["valueFrom"]["secretKeyRef"]["name"] == "ruta-security-server-db"
    assert "RUTA_HEALTH_ADDRESS" in env  # the base's entries survive the patch
    assert _one(resources, "Service")["spec"]["type"] == "LoadBalancer"
    assert _one(resources, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": server["spec"]["selector"],
    }


# -- the renderer itself ---------------------------------------------------------------------


def test_strategic_merge() -> None:
    base = {
        "a": 1,
        "b": {"c": 2, "d": 3},
        "containers": [{"name": "x", "env": [{"name": "A", "value": "1"}]}],
        "args": [1, 2],
    }
    patch = {
        "b": {"c": None, "e": 4},
        "containers": [{"name": "x", "env": [{"name": "B", "value": "2"}]}, {"name": "y"}],
        "args": [3],
    }
    assert strategic_merge(base, patch) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "containers": [
            {"name": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "y"},
        ],
        "args": [3],
    }
    assert base["b"] == {"c": 2, "d": 3}  # unchanged


@pytest.mark.parametrize(
    ("kustomization", "words"),
    [
        ("resources: [r.yaml]\ncommonLabels: {a: b}\n", "unsupported fields"),
        ("resources: [r.yaml]\npatches: [{path: p.yaml, target: {kind: X}}]\n", "by path"),
        ("resources: [r.yaml]\npatches: [{path: other.yaml}]\n", "matches no resource"),
        ("resources: [r.yaml, r.yaml]\n", "listed twice"),
    ],
)
def test_renderer_refuses_what_it_does_not_support(
    tmp_path: Path, kustomization: str, words: str
) -> None:
    (tmp_path / "r.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    (tmp_path / "p.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    (tmp_path / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n")
    (tmp_path / "kustomization.yaml").write_text(kustomization)
    with pytest.raises(KustomizeSubsetError, match=words):
        render(tmp_path)

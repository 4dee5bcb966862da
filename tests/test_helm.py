"""helm/linkedge: lints, renders with the Helm engine (helm-python-sdk, no binary) and every
rendered manifest validates against the Kubernetes schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from linkedge.serve import KILL_TIMEOUT_S
from linkedge.settings import Settings

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is a dev dependency"
)

CHART = Path(__file__).resolve().parent.parent / "helm" / "linkedge"
PRODUCTION = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas we have.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
# Custom resources: no schema in kubernetes-validate; their shape is checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
SETTINGS_ENV = {field.name.upper() for field in dataclasses.fields(Settings)}
STORE_ENV = {"REDIS_URL", "DATABASE_URL", "CLICKHOUSE_URL"}


def render(values: dict[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
    options = {"name": "linkedge", "namespace": "links", "is_install": True, **options}
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, **options)
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] in {"Deployment", "Job"}]


VALUE_SETS = {"default": None, "production": PRODUCTION}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_is_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == [], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("upgrade", [False, True], ids=["install", "upgrade"])
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_manifest_validates_strictly(
    values: dict[str, Any] | None, upgrade: bool, kube_version: str
) -> None:
    docs = render(values, is_install=not upgrade, is_upgrade=upgrade)
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_default_values_render_the_whole_application() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Secret",
            "Secret",
            "ServiceAccount",
            "Deployment",
            "Deployment",
            "Deployment",
            "Service",
            "Service",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Job",
        ]
    )


def test_migrations_job_is_a_pre_install_and_pre_upgrade_hook() -> None:
    for values in VALUE_SETS.values():
        docs = render(values)
        job = one(docs, "Job", "linkedge-migrations")
        annotations = job["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["migrate"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        # The hook runs before the release's own resources exist: whatever Secret it reads must be
        # a hook created before it, or one the user manages.
        secret_names = {
            e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
        }
        assert len(secret_names) == 1
        (secret_name,) = secret_names
        hook_secrets = find(docs, "Secret", secret_name)
        if values is None:
            (secret,) = hook_secrets
            assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
            assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
                annotations["helm.sh/hook-weight"]
            )
        else:
            assert secret_name == values["stores"]["existingSecret"]["name"] and hook_secrets == []


def _checksums(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for d in find(docs, "Deployment")
    }


def test_config_checksum_rolls_every_deployment_when_config_changes() -> None:
    before = _checksums(render())
    assert len(before) == 3
    assert _checksums(render()) == before, "the checksum is deterministic"
    after = _checksums(render({"config": {"LOG_LEVEL": "DEBUG"}}))
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in before)
    # A value that is not config (replica count) does not roll the pods.
    assert _checksums(render({"aggregator": {"replicas": 2}})) == before


def test_secret_checksum_changes_with_a_store_url() -> None:
    token = {"analytics": {"token": "fixed-token"}}  # else a random one per render

    def checksums(values: dict[str, Any]) -> set[str]:
        found = {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
            for d in find(render(values), "Deployment")
        }
        assert len(found) == 1, "every Deployment sees the same Secret"
        return found

    assert checksums(token) == checksums(token)
    assert checksums(token) != checksums({**token, "stores": {"redisUrl": "redis://other:6379/0"}})
    assert checksums(token) != checksums({"analytics": {"token": "another-token"}})


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 3},
        {"edge": {"replicass": 3}},
        {"config": {"LOG_LEVELL": "DEBUG"}},
        {"edge": {"autoscaling": {"enabled": True, "maxReplica": 3}}},
        {"stores": {"existingSecret": {"name": "x", "keys": {"redis": "REDIS"}}}},
        {"edge": {"resources": {"requests": {"cpus": "1"}}}},
        {"dashboards": {"enable": True}},
        {"alerts": {"enabled": True, "label": {"release": "x"}}},
    ],
    ids=[
        "top-level",
        "edge",
        "config",
        "autoscaling",
        "secret-keys",
        "resources",
        "dashboards",
        "alerts",
    ],
)
def test_unknown_values_key_is_rejected(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError, match="additional properties"):
        render(values)


def test_malformed_values_are_rejected() -> None:
    with pytest.raises(helm.HelmValuesError):
        render({"edge": {"workers": 0}})
    with pytest.raises(helm.HelmValuesError):
        render({"stores": {"databaseUrl": "mysql://nope"}})


def test_schema_forbids_unknown_keys_in_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{path}/{index}")

    walk(schema, "")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) == set(schema["properties"]), (
        "values.yaml and the schema list the same keys"
    )


def test_config_keys_are_linkedge_settings_and_never_secrets() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    config_keys = set(schema["properties"]["config"]["properties"])
    assert config_keys <= SETTINGS_ENV, config_keys - SETTINGS_ENV
    assert not config_keys & STORE_ENV
    for values in VALUE_SETS.values():
        configmap = one(render(values), "ConfigMap", "linkedge")
        assert set(configmap["data"]) <= SETTINGS_ENV, set(configmap["data"]) - SETTINGS_ENV
        assert not set(configmap["data"]) & STORE_ENV
        assert configmap["data"]["METRICS_HOST"] == "0.0.0.0"
        assert configmap["data"]["HOST"] == "0.0.0.0"


def test_every_setting_a_user_tunes_can_be_set_through_config() -> None:
    """A new setting the chart does not manage itself (ports, hosts, URLs, secrets, paths) must be
    settable under ``config:``, which the schema otherwise refuses as an unknown key."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    config_keys = set(schema["properties"]["config"]["properties"])
    managed = STORE_ENV | {
        "HOST", "PORT", "EDGE_WORKERS", "METRICS_HOST", "AGGREGATOR_METRICS_PORT", "ANALYTICS_PORT",
        "ANALYTICS_URL", "ANALYTICS_TOKEN", "VISITOR_SALT_SECRET", "CLICK_SPOOL_DIR",
        "PROMETHEUS_MULTIPROC_DIR",
    }  # fmt: skip
    assert SETTINGS_ENV - managed <= config_keys, sorted(SETTINGS_ENV - managed - config_keys)


def test_workers_listen_on_their_metrics_ports_and_every_container_is_probed() -> None:
    docs = render(PRODUCTION)
    ports = {}
    for deployment in find(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports[container["name"]] = container["ports"][0]["containerPort"]
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            assert container[probe]["httpGet"]["path"] == path
        assert {e["name"] for e in container["env"]} >= STORE_ENV
    assert ports == {"edge": 8000, "aggregator": 9101, "analytics": 9102}
    configmap = one(docs, "ConfigMap", "linkedge")
    assert configmap["data"]["AGGREGATOR_METRICS_PORT"] == "9101"
    assert configmap["data"]["ANALYTICS_PORT"] == "9102"
    assert configmap["data"]["ANALYTICS_URL"] == "http://linkedge-analytics:9102"


def test_pods_run_restricted_with_writable_scratch_only_where_mounted() -> None:
    for values in VALUE_SETS.values():
        for spec in pod_specs(render(values)):
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["automountServiceAccountToken"] is False
            mounted = {v["name"] for v in spec["volumes"]}
            for container in spec["containers"]:
                security = container["securityContext"]
                assert security["readOnlyRootFilesystem"] is True
                assert security["allowPrivilegeEscalation"] is False
                assert security["capabilities"]["drop"] == ["ALL"]
                assert set(container["resources"]) == {"requests", "limits"}
                assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
                assert {m["name"] for m in container["volumeMounts"]} <= mounted


def test_edge_scales_keeps_capacity_and_drains_gracefully() -> None:
    docs = render(PRODUCTION)
    edge = one(docs, "Deployment", "linkedge-edge")
    assert "replicas" not in edge["spec"], "the HPA owns the replica count"
    hpa = one(docs, "HorizontalPodAutoscaler", "linkedge-edge")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "linkedge-edge"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 30)
    pdb = one(docs, "PodDisruptionBudget", "linkedge-edge")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == edge["spec"]["selector"]["matchLabels"]
    spec = edge["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert {"name": "EDGE_WORKERS", "value": "4"} in container["env"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    # Granian kills workers still running KILL_TIMEOUT_S after SIGTERM; the kubelet must not
    # SIGKILL before that, plus a few seconds for the workers' last click flush.
    for grace in (spec["terminationGracePeriodSeconds"], _edge_grace(render())):
        assert grace >= pre_stop + KILL_TIMEOUT_S + 5
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    configmap = one(docs, "ConfigMap", "linkedge")
    assert mounts["spool"] == configmap["data"]["CLICK_SPOOL_DIR"]
    assert configmap["data"]["PROMETHEUS_MULTIPROC_DIR"].startswith(mounts["tmp"] + "/")

    fixed = render({"edge": {"autoscaling": {"enabled": False}, "replicas": 4}})
    assert one(fixed, "Deployment", "linkedge-edge")["spec"]["replicas"] == 4
    assert find(fixed, "HorizontalPodAutoscaler") == []


def _edge_grace(docs: list[dict[str, Any]]) -> int:
    return int(
        one(docs, "Deployment", "linkedge-edge")["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
    )


def _env(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    (container,) = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_visitor_salt_secret_reaches_analytics_only_through_a_secret() -> None:
    assert "VISITOR_SALT_SECRET" not in _env(render(), "linkedge-analytics")
    docs = render({"analytics": {"visitorSaltSecret": "s3cret"}})
    ref = _env(docs, "linkedge-analytics")["VISITOR_SALT_SECRET"]["valueFrom"]["secretKeyRef"]
    (secret,) = [d for d in find(docs, "Secret") if d["metadata"]["name"] == ref["name"]]
    assert secret["stringData"][ref["key"]] == "s3cret"
    assert "s3cret" not in yaml.safe_dump(one(docs, "ConfigMap", "linkedge"))
    assert "VISITOR_SALT_SECRET" not in _env(docs, "linkedge-edge")
    ref = _env(render(PRODUCTION), "linkedge-analytics")["VISITOR_SALT_SECRET"]["valueFrom"][
        "secretKeyRef"
    ]
    assert ref == {"name": "linkedge-stores", "key": "visitor-salt-secret", "optional": True}


def test_existing_secret_replaces_the_charts_secret() -> None:
    docs = render(PRODUCTION)
    assert find(docs, "Secret") == []
    (container,) = one(docs, "Deployment", "linkedge-edge")["spec"]["template"]["spec"][
        "containers"
    ]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["DATABASE_URL"] == {"name": "linkedge-stores", "key": "database-url"}
    assert refs["REDIS_URL"] == {"name": "linkedge-stores", "key": "redis-url"}


def test_scrape_annotations_or_service_monitor() -> None:
    default = render()
    for deployment in find(default, "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
    assert find(default, "ServiceMonitor") == []

    production = render(PRODUCTION)
    (monitor,) = find(production, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = find(production, "Service")
    assert len(services) == 3
    for service in services:
        assert selector.items() <= service["metadata"]["labels"].items()
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    for deployment in find(production, "Deployment"):
        assert (
            "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"]["annotations"]
        )


def test_image_by_digest() -> None:
    (container,) = one(render(PRODUCTION), "Deployment", "linkedge-edge")["spec"]["template"][
        "spec"
    ]["containers"]
    assert container["image"] == (
        "registry.example.com/platform/linkedge:0.1.0@" + PRODUCTION["image"]["digest"]
    )
    (default,) = one(render(), "Deployment", "linkedge-edge")["spec"]["template"]["spec"][
        "containers"
    ]
    assert default["image"] == "linkedge:0.1.0"


def test_analytics_token_reaches_edge_and_analytics_from_one_secret_key() -> None:
    docs = render()
    refs = {
        name: _env(docs, f"linkedge-{name}")["ANALYTICS_TOKEN"]["valueFrom"]["secretKeyRef"]
        for name in ("edge", "analytics")
    }
    assert (
        refs["edge"] == refs["analytics"] == {"name": "linkedge-stores", "key": "ANALYTICS_TOKEN"}
    )
    assert "ANALYTICS_TOKEN" not in _env(docs, "linkedge-aggregator")
    generated = one(docs, "Secret", "linkedge-stores")["stringData"]["ANALYTICS_TOKEN"]
    assert re.fullmatch(r"[A-Za-z0-9]{48}", generated)
    assert generated != one(render(), "Secret", "linkedge-stores")["stringData"]["ANALYTICS_TOKEN"]
    assert generated not in yaml.safe_dump(one(docs, "ConfigMap", "linkedge"))

    docs = render({"analytics": {"token": "t0ken-from-values"}})
    assert one(docs, "Secret", "linkedge-stores")["stringData"]["ANALYTICS_TOKEN"] == (
        "t0ken-from-values"
    )
    assert "t0ken-from-values" not in yaml.safe_dump(one(docs, "ConfigMap", "linkedge"))

    # From the user's Secret, required: analytics must not run with its data routes unguarded.
    production = render(PRODUCTION)
    for name in ("edge", "analytics"):
        ref = _env(production, f"linkedge-{name}")["ANALYTICS_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "linkedge-stores", "key": "analytics-token"}


def _dashboard_configmaps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in find(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]


def test_dashboards_ship_as_configmaps_only_when_enabled() -> None:
    assert _dashboard_configmaps(render()) == []
    files = {p.name: json.loads(p.read_text()) for p in (CHART / "dashboards").glob("*.json")}
    assert set(files) == {"linkedge-clicks.json", "linkedge-operations.json"}
    docs = render(
        {
            "dashboards": {
                "enabled": True,
                "labels": {"team": "links"},
                "annotations": {"grafana_folder": "Links"},
            }
        }
    )
    configmaps = _dashboard_configmaps(docs)
    assert len(configmaps) == len(files)
    shipped = {}
    for configmap in configmaps:
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["labels"]["team"] == "links"
        assert configmap["metadata"]["annotations"] == {"grafana_folder": "Links"}
        assert len(json.dumps(configmap)) < 1_000_000  # a ConfigMap holds at most 1 MiB
        for key, text in configmap["data"].items():
            shipped[key] = json.loads(text)
    assert shipped == files
    for kube_version in KUBE_VERSIONS:
        for configmap in configmaps:
            kubernetes_validate.validate(configmap, kube_version, strict=True)


def _rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load((CHART / "alerts" / "linkedge-rules.yaml").read_text())["groups"]  # type: ignore[no-any-return]


def test_alert_rules_ship_as_a_prometheus_rule_only_when_enabled() -> None:
    assert find(render(), "PrometheusRule") == []
    docs = render({"alerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}})
    (rule,) = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "linkedge"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(rule["spec"]) == {"groups"}
    # The file promtool tests, as it is, for a release whose names are the default ones.
    assert rule["spec"]["groups"] == _rule_groups()


def test_alert_rules_name_the_releases_own_deployments() -> None:
    docs = render({"alerts": {"enabled": True}}, name="links")
    (rule,) = find(docs, "PrometheusRule")
    deployments = {d["metadata"]["name"] for d in find(docs, "Deployment")}
    assert deployments == {
        "links-linkedge-edge",
        "links-linkedge-aggregator",
        "links-linkedge-analytics",
    }
    # The chart's ServiceMonitor gives scraped series the Service's name as job.
    services = {d["metadata"]["name"] for d in find(docs, "Service")}
    assert services == deployments
    changed = {}
    for shipped, tested in zip(rule["spec"]["groups"], _rule_groups(), strict=True):
        for shipped_rule, tested_rule in zip(shipped["rules"], tested["rules"], strict=True):
            if shipped_rule == tested_rule:
                continue
            (selector,) = re.findall(r'(?:deployment|job)=~"([^"]+)"', shipped_rule["expr"])
            changed[shipped_rule["alert"]] = selector
            assert (
                shipped_rule["expr"].replace(selector, "linkedge-(edge|aggregator|analytics)")
                == (tested_rule["expr"])
            )
    assert set(changed) == {"LinkedgeProcessNotReady", "LinkedgeMetricsDown"}
    for selector in changed.values():
        assert {d for d in deployments if re.fullmatch(selector, d)} == deployments
        assert not re.fullmatch(selector, "linkedge-edge")  # another release's

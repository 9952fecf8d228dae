"""The Kubernetes manifests (``deploy/kubernetes/``) agree with the image (``deploy/Dockerfile``) and the config
(``deploy/config.yaml``): kustomize applies every manifest, the ConfigMap is the config's text, the pod runs as the
image's user on a read-only root with somewhere to write, is probed on the routes gesso serves, migrates first and
drains within its grace period, and sets every variable the config reads. .ci/run validates the manifests' schemas
with kubernetes-validate; these tests only read files."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
FOLDER = DEPLOY / "kubernetes"
CONFIG = DEPLOY / "config.yaml"
SELECTOR = {"app.kubernetes.io/name": "gesso"}


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((FOLDER / name).read_text()) if doc is not None]


def only(name: str) -> dict:
    (doc,) = documents(name)
    return doc


def dockerfile(instruction: str) -> str:
    found = re.findall(rf"^{instruction} (.+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert found, instruction
    return found[-1].strip()


def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def pod() -> dict:
    return only("deployment.yaml")["spec"]["template"]["spec"]


def containers() -> tuple[dict, dict]:
    spec = pod()
    (serve,) = spec["containers"]
    (migrate,) = spec["initContainers"]
    return serve, migrate


def environ_names(value: object) -> set[str]:
    """The NAMEs of every ``os.environ/NAME`` the config reads."""
    if isinstance(value, dict):
        return set().union(*(environ_names(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(environ_names(item) for item in value))
    if isinstance(value, str) and value.startswith("os.environ/"):
        return {value.removeprefix("os.environ/")}
    return set()


def test_kustomization_lists_every_other_manifest_and_names_the_image():
    kustomization = only("kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    others = {path.name for path in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))
    assert set(kustomization["resources"]) == others
    assert kustomization["labels"] == [{"pairs": SELECTOR, "includeSelectors": True}]
    # the images: entry rewrites the name both containers use
    assert [entry["name"] for entry in kustomization["images"]] == ["gesso"]
    assert {each["image"] for each in containers()} == {"gesso"}
    # no Secret with values is shipped: the pods read one created by hand
    kinds = {doc["kind"] for name in others for doc in documents(name)}
    assert "Secret" not in kinds
    assert kinds == {"ServiceAccount", "PersistentVolumeClaim", "Deployment", "Service", "PodDisruptionBudget",
                     "HorizontalPodAutoscaler", "NetworkPolicy"}  # fmt: skip


def test_the_configmap_is_the_config_byte_for_byte():
    # generated from a copy of the config (kustomize reads no file outside its folder), under a name with a hash
    # of the text: a change of the config rolls the pods
    (generated,) = only("kustomization.yaml")["configMapGenerator"]
    assert generated == {"name": "gesso-config", "files": ["config.yaml=files/config.yaml"]}
    assert (FOLDER / "files" / "config.yaml").read_text() == CONFIG.read_text()
    volumes = {volume["name"]: volume for volume in pod()["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "gesso-config"


def test_each_manifest_selects_the_pods_on_its_own():
    deployment = only("deployment.yaml")
    assert deployment["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert deployment["spec"]["template"]["metadata"]["labels"] == SELECTOR
    assert only("service.yaml")["spec"]["selector"] == SELECTOR
    assert only("pdb.yaml")["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert only("networkpolicy.yaml")["spec"]["podSelector"] == {"matchLabels": SELECTOR}
    target = only("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert pod()["serviceAccountName"] == only("serviceaccount.yaml")["metadata"]["name"]


def test_the_pod_runs_as_the_image_user_on_a_read_only_root_with_a_writable_tmp():
    user, group = (int(part) for part in dockerfile("USER").split(":"))
    security = pod()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (user, group, group)
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {volume["name"]: volume for volume in pod()["volumes"]}
    for container in containers():
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert mounts["/tmp"].get("readOnly") is not True
        assert mounts["/etc/gesso"]["readOnly"] is True
        assert volumes[mounts["/etc/gesso"]["name"]]["configMap"]["name"] == "gesso-config"
    # the result store is a directory the read-only root cannot hold: it lies under a writable mount, one every
    # pod shares (a repeat reaching another pod finds the first answer)
    serve, _ = containers()
    store = PurePosixPath(config()["general_settings"]["result_store"])
    claims = {doc["metadata"]["name"]: doc for doc in documents("pvc.yaml")}
    shared = [
        PurePosixPath(mount["mountPath"])
        for mount in serve["volumeMounts"]
        if not mount.get("readOnly") and "persistentVolumeClaim" in volumes[mount["name"]]
        and claims[volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]]["spec"]["accessModes"]
        == ["ReadWriteMany"]
    ]  # fmt: skip
    assert any(store.is_relative_to(path) for path in shared), (store, shared)


def test_the_container_serves_the_image_port_with_its_probes():
    serve, _ = containers()
    port = int(dockerfile("EXPOSE"))
    entrypoint = json.loads(dockerfile("ENTRYPOINT"))
    assert entrypoint[:2] == ["gesso", "serve"] and entrypoint[entrypoint.index("--port") + 1] == str(port)
    assert "command" not in serve  # the image's entry point runs; the manifest gives its arguments
    assert serve["args"][:2] == ["--config", "/etc/gesso/config.yaml"]
    assert serve["ports"] == [{"name": "http", "containerPort": port}]
    (service_port,) = only("service.yaml")["spec"]["ports"]
    assert service_port == {"name": "http", "port": port, "targetPort": "http"}
    (rule,) = only("networkpolicy.yaml")["spec"]["ingress"]
    assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
    probes = {kind: serve[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {
        "startupProbe": {"path": "/health/liveliness", "port": "http"},
        "livenessProbe": {"path": "/health/liveliness", "port": "http"},
        "readinessProbe": {"path": "/health/readiness", "port": "http"},
    }
    assert serve["readinessProbe"]["periodSeconds"] == 5 and serve["readinessProbe"]["failureThreshold"] == 2
    resources = serve["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert resources["limits"] == {"memory": "2Gi"}  # no CPU limit
    # the limit covers what the config lets one process hold: ~200 MiB of its own, and for each call in flight
    # its request body and a few MiB of images (the arithmetic in deploy/config.yaml)
    general = config()["general_settings"]
    needed = 200 + general["max_concurrency"] * (general["max_request_size_mb"] + 4)
    assert needed <= 2 * 1024, needed


def test_the_schema_is_migrated_before_the_server_starts():
    serve, migrate = containers()
    assert migrate["name"] == "migrate"
    assert migrate["command"] == ["gesso", "db", "upgrade", "--config", "/etc/gesso/config.yaml"]
    assert migrate["image"] == serve["image"]
    assert migrate["env"] == serve["env"]


def test_a_stopping_pod_leaves_the_service_then_drains_within_its_grace_period():
    serve, _ = containers()
    command = serve["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    graceful = config()["general_settings"]["graceful_timeout"]
    assert pod()["terminationGracePeriodSeconds"] > graceful + int(command[1])
    rollout = only("deployment.yaml")["spec"]
    assert rollout["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert only("pdb.yaml")["spec"]["minAvailable"] == 1
    # the autoscaler alone sets the count: a spec.replicas beside it would reset it on every apply
    assert "replicas" not in rollout and only("hpa.yaml")["spec"]["minReplicas"] == 2


def test_the_pod_sets_every_variable_the_config_reads_from_the_secret():
    names = environ_names(config())
    assert names == {"GESSO_MASTER_KEY", "DATABASE_URL"}
    keys = {"GESSO_MASTER_KEY": "master-key", "DATABASE_URL": "database-url"}
    for container in containers():
        env = {item["name"]: item for item in container["env"]}
        assert names <= env.keys()
        for name in names:
            assert "value" not in env[name]  # never inline
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "gesso", "key": keys[name]}

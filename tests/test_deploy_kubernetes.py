"""The Kubernetes manifests (``deploy/kubernetes/``) agree with the image (``deploy/Dockerfile``) and the config
the pods read (``deploy/kubernetes/files/config.yaml``, ``deploy/config.yaml`` but for the result store and the
sizing): kustomize applies every manifest, the ConfigMap is generated from the config (a change rolls the pods),
the pod runs as the image's user on a read-only root with somewhere to write, shares one result store with every
other pod, is probed on the routes gesso serves, has a memory limit that covers what the config lets it hold,
migrates first and drains within its grace period, and sets every variable the config reads from the Secret; the
autoscaler alone sets the count. .ci/run validates the manifests' schemas with kubernetes-validate; these tests
read files, and render them with kubectl kustomize where kubectl is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gesso.proxy import config as proxy_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
FOLDER = DEPLOY / "kubernetes"
DOCS = DEPLOY.parent / "docs" / "deployment.md"
#: the config the pods read: the ConfigMap is generated from it (kustomization.yaml's configMapGenerator)
CONFIG = FOLDER / "files" / "config.yaml"
SELECTOR = {"app.kubernetes.io/name": "gesso"}
#: what the pod's config may set otherwise than deploy/config.yaml (compose's): the result store every pod shares,
#: and the two settings its memory limit is worked out from
POD_ONLY = {"result_store", "max_concurrency", "max_request_size_mb"}


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


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (``512Mi``, ``3Gi``, ``2G``) in MiB."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", quantity).groups()
    scale = {None: 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 2**20,
             "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}  # fmt: skip
    return float(number) * scale[unit]


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
    assert kinds == {"ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                     "NetworkPolicy"}  # fmt: skip
    # the image is named before an apply: gesso:latest is served by no registry (the header says how to name it)
    step = "kustomize edit set image gesso=registry.example.com/gesso:"
    assert step in (FOLDER / "kustomization.yaml").read_text() and step in DOCS.read_text()


def test_the_configmap_is_generated_from_the_config_compose_runs_but_for_the_pod_settings():
    # generated from a file in the folder (kustomize reads none outside it), under a name with a hash of the text:
    # a change of the config is a change of the pod template, so an apply rolls the pods
    (generated,) = only("kustomization.yaml")["configMapGenerator"]
    assert generated == {"name": "gesso-config", "files": ["config.yaml=files/config.yaml"]}
    assert not (FOLDER / "files" / "config.yaml").is_symlink()
    volumes = {volume["name"]: volume for volume in pod()["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "gesso-config"
    assert not (FOLDER / "configmap.yaml").exists()  # no ConfigMap of a fixed name beside the generated one
    # the same models and settings as compose's config, but for what a pod needs otherwise
    compose_config = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    pod_config = config()
    assert pod_config["model_list"] == compose_config["model_list"]
    pod_general, compose_general = pod_config["general_settings"], compose_config["general_settings"]
    assert {k: v for k, v in pod_general.items() if k not in POD_ONLY} == {
        k: v for k, v in compose_general.items() if k not in POD_ONLY
    }
    assert pod_general.keys() >= POD_ONLY  # each set explicitly: the memory limit is worked out from them


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
    # /tmp is the one volume a container writes: nothing of the pod's own holds the result store (below)
    assert [name for name, volume in volumes.items() if "configMap" not in volume] == ["tmp"]


def test_every_pod_shares_one_result_store_named_by_the_secret(monkeypatch):
    """The answers for Idempotency-Key repeats and the exact cache are kept where every pod finds them: the config
    reads the store from the Secret (an S3 prefix, or a directory on a volume every pod shares), never a directory
    of one pod's own, so a repeat that another pod takes is served from the first answer, not paid for again."""
    assert config()["general_settings"]["result_store"] == "os.environ/GESSO_RESULT_STORE"
    for container in containers():  # the init container loads the config too
        env = {item["name"]: item for item in container["env"]}
        assert env["GESSO_RESULT_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "gesso", "key": "result-store"}
        assert "/var/lib/gesso" not in {mount["mountPath"] for mount in container["volumeMounts"]}
    assert not any("emptyDir" in volume for volume in pod()["volumes"] if volume["name"] != "tmp")
    # the example the kustomization and the docs give is a store the config takes: gesso-bedrock's S3 store
    header = (FOLDER / "kustomization.yaml").read_text()
    example = re.search(r"--from-literal=result-store=(\S+)", header).group(1)
    assert example.startswith("s3://") and f"result-store={example}" in DOCS.read_text()
    monkeypatch.setenv("GESSO_MASTER_KEY", "sk-test")
    monkeypatch.setenv("DATABASE_URL", "postgresql://gesso:password@postgres:5432/gesso")
    monkeypatch.setenv("GESSO_RESULT_STORE", example)
    assert proxy_config.parse(config()).result_store == example
    monkeypatch.delenv("GESSO_RESULT_STORE")  # a Secret without it: the pod refuses to start, saying so
    with pytest.raises(proxy_config.ConfigError, match="GESSO_RESULT_STORE is not set"):
        proxy_config.parse(config())


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
    assert set(resources["limits"]) == {"memory"}  # no CPU limit


def test_the_memory_limit_covers_what_the_config_lets_the_process_hold():
    """The arithmetic of files/config.yaml: each call in flight (max_concurrency of them) holds at most its body
    (max_request_size_mb), the input images read from it (as much again), the request to Bedrock they are sent
    in (base64: 4/3) and its answer's image (4 MB); the process itself about 200 MB. One process a pod."""
    serve, _ = containers()
    general = config()["general_settings"]
    body = general["max_request_size_mb"]
    needed = 200 + general["max_concurrency"] * (body + body + body * 4 / 3 + 4)
    limit = mebibytes(serve["resources"]["limits"]["memory"])
    assert needed <= limit, (needed, limit)
    assert needed >= 0.6 * limit, (needed, limit)  # and not a limit far above what the settings can use
    assert "--workers" not in serve["args"]  # the bound is per process
    assert mebibytes(serve["resources"]["requests"]["memory"]) <= limit


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


def test_no_deployment_an_autoscaler_targets_sets_its_own_replicas():
    """A spec.replicas beside a HorizontalPodAutoscaler would put the count back at every apply; the autoscaler's
    minReplicas sets it instead."""
    found = {(doc["kind"], doc["metadata"]["name"]): doc for path in FOLDER.glob("*.yaml") for doc in documents(path.name)
             if "kind" in doc and "metadata" in doc}  # fmt: skip
    autoscalers = [doc for (kind, _), doc in found.items() if kind == "HorizontalPodAutoscaler"]
    assert autoscalers
    for autoscaler in autoscalers:
        target = autoscaler["spec"]["scaleTargetRef"]
        deployment = found[(target["kind"], target["name"])]
        assert "replicas" not in deployment["spec"], target
        assert autoscaler["spec"]["minReplicas"] >= 2  # two pods or more, for a rollout or a lost node


def test_the_pod_sets_every_variable_the_config_reads_from_the_secret():
    names = environ_names(config())
    assert names == {"GESSO_MASTER_KEY", "DATABASE_URL", "GESSO_RESULT_STORE"}
    keys = {"GESSO_MASTER_KEY": "master-key", "DATABASE_URL": "database-url", "GESSO_RESULT_STORE": "result-store"}
    header = (FOLDER / "kustomization.yaml").read_text()
    for key in keys.values():  # and the kustomization's header creates the Secret with each
        assert f"--from-literal={key}=" in header
    for container in containers():
        env = {item["name"]: item for item in container["env"]}
        assert names <= env.keys()
        for name in names:
            assert "value" not in env[name]  # never inline
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "gesso", "key": keys[name]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_named_image_and_a_configmap_that_rolls_the_pods(tmp_path):
    """What kubectl kustomize renders, after the image step of the kustomization's header (here as its images:
    entry, which kustomize edit set image writes): the pods run the named image, and the ConfigMap's name carries
    a hash of the config, referenced by the pod template, so a changed config is a changed template."""

    def render(folder: Path) -> list[dict]:
        done = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    folder = tmp_path / "kubernetes"
    shutil.copytree(FOLDER, folder)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    kustomization["images"] = [{"name": "gesso", "newName": "registry.example.com/gesso", "newTag": "0.1.0"}]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    def facts(docs: list[dict]) -> tuple[str, set[str], str]:
        (configmap,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
        (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
        spec = deployment["spec"]["template"]["spec"]
        (volume,) = [v for v in spec["volumes"] if "configMap" in v]
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        assert configmap["data"]["config.yaml"] == (folder / "files" / "config.yaml").read_text()
        images = {c["image"] for c in spec["containers"] + spec["initContainers"]}
        return configmap["metadata"]["name"], images, json.dumps(deployment["spec"]["template"], sort_keys=True)

    name, images, template = facts(render(folder))
    assert images == {"registry.example.com/gesso:0.1.0"}
    assert re.fullmatch(r"gesso-config-[a-z0-9]{10}", name)
    with (folder / "files" / "config.yaml").open("a") as file:
        file.write("  store_prompts: false\n")  # a change of the config, however small
    changed, _, changed_template = facts(render(folder))
    assert changed != name and changed_template != template

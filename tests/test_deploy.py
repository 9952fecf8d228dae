"""The deployment files hold together: ``deploy/compose.yaml``'s services, secrets and mounts match the image
(``deploy/Dockerfile``), the config (``deploy/config.yaml``) and nginx's upstreams (``deploy/nginx.conf``, which
the OS's nginx accepts as CI renders it); the replicas trust nginx's X-Forwarded-* headers; the migration is
retried and still gates the replicas; ``deploy/secrets.sh`` writes secrets the config reads, or nothing; the
image's documented ``docker run`` keeps SQLite where its user writes; the Kubernetes manifests
(``deploy/kubernetes/``) run the image as it expects; bench/rolling_restart.py's checks cannot pass on nothing.
.ci/run also checks the compose file against the Compose specification's schema and the manifests with
kubernetes-validate, and runs the whole topology under load (bench/rolling_restart.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gesso.proxy import config as proxy_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(ROOT / "bench"))
from rolling_restart import ledger_problems, render_nginx, stated_cost  # noqa: E402


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_the_replicas_run_the_image_on_the_config_and_secrets_it_reads():
    services = compose()["services"]
    replicas = sorted(name for name in services if name.startswith("gesso-"))
    assert replicas == ["gesso-1", "gesso-2"]
    config_text = (DEPLOY / "config.yaml").read_text()
    referenced = set(re.findall(r"^\s*\w+: os\.environ/(\w+)$", config_text, re.MULTILINE))
    assert referenced == {"GESSO_MASTER_KEY", "DATABASE_URL"}
    graceful = yaml.safe_load(config_text)["general_settings"]["graceful_timeout"]
    assert 'CMD ["--config", "/etc/gesso/config.yaml"]' in dockerfile()
    for name in [*replicas, "migrate"]:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert {"source": "gesso_config", "target": "/etc/gesso/config.yaml"} in service["configs"]
        env = service["environment"]
        for variable in referenced:  # each secret the config reads, from a mounted secret file
            secret = env[f"{variable}_FILE"].removeprefix("/run/secrets/")
            assert secret in service["secrets"] and secret in compose()["secrets"]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert float(service["stop_grace_period"].removesuffix("s")) > graceful
        assert "GESSO_MASTER_KEY" not in env and "DATABASE_URL" not in env  # never a secret's value inline
    assert services["migrate"]["entrypoint"] == ["gesso", "db", "upgrade"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in replicas:  # the schema is migrated once, before any replica starts
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert compose()["configs"] == {"gesso_config": {"file": "./config.yaml"}, "nginx_config": {"file": "./nginx.conf"}}
    assert services["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"] and "pgdata" in compose()["volumes"]
    result_store = yaml.safe_load(config_text)["general_settings"]["result_store"]
    for name in replicas:  # one volume for both replicas: a repeat is served by either
        assert services[name]["volumes"] == ["gesso-data:/var/lib/gesso"] and result_store.startswith("/var/lib/gesso/")


def test_postgres_is_healthy_only_when_it_answers_over_tcp_and_a_failed_migration_runs_again():
    """The image's first start runs a temporary server on the Unix socket only, so pg_isready asks over TCP. The
    migration (a one-shot) is run again when it fails (restart: on-failure), and the replicas still wait for it to
    complete: Docker takes a container it will restart from running to "restarting", never to "exited", and compose's
    service_completed_successfully waits for "exited" (with code 0 the replicas start; once the retries are spent,
    the exit code stops compose)."""
    services = compose()["services"]
    check = services["postgres"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL" and re.search(r"\bpg_isready -h 127\.0\.0\.1 -U gesso -d gesso$", check[1])
    migrate = services["migrate"]
    assert re.fullmatch(r"on-failure(:[1-9]\d*)?", migrate["restart"]), migrate["restart"]
    assert migrate["command"][-2:] == ["--wait", "60"]  # and a database not answering yet is waited for
    for name in ("gesso-1", "gesso-2"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["restart"] == "unless-stopped"


def test_the_replicas_take_the_client_address_and_scheme_from_nginx(monkeypatch):
    """uvicorn takes X-Forwarded-For and -Proto only from the addresses FORWARDED_ALLOW_IPS names (127.0.0.1 when
    unset), and gesso serve leaves that to it: with compose's value a request that nginx forwards from another
    container reaches the app with the caller's address and scheme; unset, nginx's own address stays."""
    import asyncio
    import types

    import uvicorn

    from gesso.proxy import serve

    services = compose()["services"]
    allowed = {services[name]["environment"]["FORWARDED_ALLOW_IPS"] for name in ("gesso-1", "gesso-2")}
    assert allowed == {"*"} and not any("ports" in services[name] for name in ("gesso-1", "gesso-2"))

    seen: list[tuple] = []

    async def app(scope, receive, send):
        seen.append((scope["client"], scope["scheme"]))

    options: dict = {}  # what gesso serve gives uvicorn (run here without serving)
    monkeypatch.setattr(uvicorn, "run", lambda _app, **given: options.update(given))
    monkeypatch.setattr("gesso.proxy.app.build_app", lambda *args, **kwargs: app)
    monkeypatch.setattr(serve, "tune_gc", lambda: None)
    monkeypatch.setattr(serve.signal, "signal", lambda *args: None)
    args = types.SimpleNamespace(host="0.0.0.0", port=4000, log_level="info", log_format=None, workers=1,
                                 config="config.yaml")  # fmt: skip
    config = types.SimpleNamespace(graceful_timeout=60, model_names=["stills"])
    serve._serve(args, config, {})
    assert options and "forwarded_allow_ips" not in options and options.get("proxy_headers", True)

    def forwarded(environment: str | None) -> tuple:
        if environment is None:
            monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
        else:
            monkeypatch.setenv("FORWARDED_ALLOW_IPS", environment)
        server = {k: v for k, v in options.items() if k in ("proxy_headers", "forwarded_allow_ips")}
        loaded = uvicorn.Config(app, **server)
        loaded.load()
        scope = {"type": "http", "scheme": "http", "client": ("172.18.0.5", 40000), "path": "/", "headers": [
            (b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]}  # fmt: skip
        asyncio.run(loaded.loaded_app(scope, None, None))
        return seen.pop()

    assert forwarded(allowed.pop()) == (("203.0.113.7", 0), "https")  # nginx, on the compose network
    assert forwarded(None) == (("172.18.0.5", 40000), "http")  # uvicorn's default trusts loopback only


def test_the_build_context_leaves_out_what_the_image_never_copies():
    """``.dockerignore`` keeps the repository's history, venvs, caches, databases and the secrets deploy/secrets.sh
    writes out of the build context, and none of what the Dockerfile copies."""
    ignored = [line for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]  # fmt: skip
    for needed in (".git", "**/.venv*", "**/__pycache__", "**/.mypy_cache", "**/.hypothesis", "**/*.db", "bench",
                   "site", "deploy/secrets"):  # fmt: skip
        assert needed in ignored
    copied = re.findall(r"^COPY (?!--from)(\S+) ", dockerfile(), re.MULTILINE)
    assert set(copied) == {"core", "plugins", "deploy/image.sh"}
    for source in copied:
        assert not any(source == pattern or source.startswith(pattern + "/") for pattern in ignored), source


def test_nginx_forwards_to_both_replicas_on_the_port_the_image_exposes():
    services = compose()["services"]
    nginx = (DEPLOY / "nginx.conf").read_text()
    port = re.search(r"^EXPOSE (\d+)$", dockerfile(), re.MULTILINE).group(1)
    upstreams = re.findall(r"^\s*server (\S+) ", nginx, re.MULTILINE)
    assert upstreams == [f"gesso-1:{port}", f"gesso-2:{port}"]
    listen = re.search(r"^\s*listen (\d+);", nginx, re.MULTILINE).group(1)
    assert services["nginx"]["ports"] == [f"4000:{listen}"]
    assert {"source": "nginx_config", "target": "/etc/nginx/nginx.conf"} in services["nginx"]["configs"]
    assert set(services["nginx"]["depends_on"]) == {"gesso-1", "gesso-2"}
    # a POST is never sent twice (no non_idempotent), and no keepalive to the replicas (see the file's comments)
    assert re.search(r"proxy_next_upstream error timeout;", nginx) and "non_idempotent" not in nginx
    assert not re.search(r"^\s*keepalive \d", nginx, re.MULTILINE)
    assert not re.search(r"^\s*(daemon|pid|error_log)\b", nginx, re.MULTILINE)  # the caller sets them (-g, -e)


def test_nginx_finds_replicas_again_and_skips_a_dead_one_briefly(monkeypatch):
    """The replicas' names are looked up again (a recreated container's new address; nginx starts while one is
    missing), on an nginx that has "resolve" (1.27.3); a replica that refuses is skipped for 2 s; a body gesso
    would refuse gets gesso's 413."""
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=5s", nginx, re.MULTILINE)  # Docker's embedded DNS
    assert re.search(r"^\s*zone gesso \d+k;", nginx, re.MULTILINE)
    servers = re.findall(r"^\s*server gesso-\d:4000 (.*);$", nginx, re.MULTILINE)
    assert servers == ["resolve max_fails=1 fail_timeout=2s"] * 2
    services = compose()["services"]
    version = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.(\d+))?-alpine", services["nginx"]["image"])
    assert version and tuple(int(v or 0) for v in version.groups()) >= (1, 27, 3)  # "resolve" is in 1.27.3

    # a body over gesso's limit (deploy/config.yaml's, as the replicas read it) gets gesso's JSON 413, not nginx's
    # HTML one: nginx's limit is above it, and the comment beside it names it
    body = int(re.search(r"client_max_body_size (\d+)m;", nginx).group(1))
    monkeypatch.setenv("GESSO_MASTER_KEY", "sk-test")
    monkeypatch.setenv("DATABASE_URL", "postgresql://gesso:password@postgres:5432/gesso")
    gesso_limit = proxy_config.parse(yaml.safe_load((DEPLOY / "config.yaml").read_text())).max_request_bytes
    assert gesso_limit < body * 1024 * 1024 <= gesso_limit + 1024 * 1024
    assert f"gesso answers a body over {gesso_limit // (1024 * 1024)} MB" in nginx


def test_ci_renders_nginx_conf_changing_only_the_addresses():
    original = (DEPLOY / "nginx.conf").read_text()
    rendered = render_nginx(original, [41001, 41002], 41000)
    changed = [(a, b) for a, b in zip(original.splitlines(), rendered.splitlines(), strict=True) if a != b]
    assert [b.strip() for _, b in changed] == [
        "server 127.0.0.1:41001 max_fails=1 fail_timeout=2s;",
        "server 127.0.0.1:41002 max_fails=1 fail_timeout=2s;",
        "listen 127.0.0.1:41000;",
    ]


@pytest.mark.skipif(shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx") and not os.environ.get("CI"),
                    reason="nginx is not installed (.ci/run installs it)")  # fmt: skip
def test_nginx_accepts_the_file(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx((DEPLOY / "nginx.conf").read_text(), [41001, 41002], 41000))
    checked = subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "e.log"),
                              "-g", f"pid {tmp_path / 'nginx.pid'};"], capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stderr + (tmp_path / "e.log").read_text()


def test_the_secrets_script_writes_what_the_config_reads(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets"
    subprocess.run(["sh", str(DEPLOY / "secrets.sh"), str(secrets)], check=True, capture_output=True)
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    password = (secrets / "postgres_password").read_text()
    assert re.fullmatch(r"[0-9a-f]{48}", password)
    assert (secrets / "database_url").read_text() == f"postgresql://gesso:{password}@postgres:5432/gesso"
    for variable, name in (("GESSO_MASTER_KEY", "master_key"), ("DATABASE_URL", "database_url")):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv(f"{variable}_FILE", str(secrets / name))
    data = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    config = proxy_config.parse(data)
    assert config.master_key == (secrets / "master_key").read_text() and config.master_key.startswith("sk-")
    assert config.database_url == (secrets / "database_url").read_text()
    again = subprocess.run(["sh", str(DEPLOY / "secrets.sh"), str(secrets)], capture_output=True, text=True)
    assert again.returncode == 1 and "exists: left as it is" in again.stderr  # never overwritten


def test_the_secrets_script_needs_no_python_and_writes_nothing_it_cannot_finish(tmp_path):
    """On a host with only a POSIX shell's tools, the secrets are made all the same; without a source of random
    bytes, nothing is written (never a master key of ``sk-`` alone)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("mkdir", "chmod", "od", "tr"):
        (tools / tool).symlink_to(shutil.which(tool))
    script, shell = str(DEPLOY / "secrets.sh"), shutil.which("sh")
    made = subprocess.run([shell, script, str(tmp_path / "a")], env={"PATH": str(tools)}, capture_output=True,
                          text=True)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"sk-[0-9a-f]{48}", (tmp_path / "a" / "master_key").read_text())
    (tools / "od").unlink()  # no way to read random bytes
    failed = subprocess.run([shell, script, str(tmp_path / "b")], env={"PATH": str(tools)}, capture_output=True,
                            text=True)  # fmt: skip
    assert failed.returncode != 0 and "could not read 24 random bytes" in failed.stderr
    assert not (tmp_path / "b").exists()  # not even the directory


def test_the_documented_docker_run_keeps_sqlite_where_the_image_user_writes():
    """docs/deployment.md's ``docker run`` mounts a volume at the image user's home, the config's SQLite database
    (and so the stored answers, beside it) lies in it, and flags after the image replace CMD only with --config."""
    docs = (ROOT / "docs" / "deployment.md").read_text()
    home = re.search(r"--home-dir (\S+) --create-home", dockerfile()).group(1)
    assert re.search(rf"^WORKDIR {re.escape(home)}$", dockerfile(), re.MULTILINE)
    run = re.search(r"^docker run .*?(?<!\\)$", docs, re.MULTILINE | re.DOTALL).group(0)
    assert re.search(rf" -v [\w-]+:{re.escape(home)} ", run.replace("\\\n", " "))
    url = re.search(r"database_url: (sqlite:///\S+?)`", docs).group(1)
    models = yaml.safe_load((DEPLOY / "config.yaml").read_text())["model_list"]
    parsed = proxy_config.parse({"model_list": models, "general_settings": {"database_url": url}})
    assert parsed.database_url == url
    for written in (url.removeprefix("sqlite:///"), proxy_config.default_result_store(url)):
        assert written.startswith(home + "/"), written
    assert f"`{proxy_config.default_result_store(url)}`" in docs
    # arguments after the image's name replace CMD as a whole: every documented example keeps --config
    for example in re.findall(r"docker run \.\.\. gesso (.*?)`", docs):
        assert example.startswith("--config /etc/gesso/config.yaml"), example


def test_the_rolling_restart_bench_cannot_pass_on_nothing():
    """bench/rolling_restart.py counts an answer without a finite cost as a failed request (so the spend check is
    never vacuous), and fails when a lease or a reservation is left on the key once the replicas have stopped."""
    assert stated_cost({"x-gesso-response-cost": "0.04"}) == 0.04
    for stated in (None, "nan", "inf", "-0.04", "0", "free"):
        with pytest.raises(ValueError):
            stated_cost({} if stated is None else {"x-gesso-response-cost": stated})
    results = [{"ok": True, "request_id": f"r{i}", "cost": 0.04} for i in range(3)] + [{"ok": False}]
    clean = {"rows": [(f"r{i}", "success", 0.04) for i in range(3)], "spend": 0.12, "reserved": 0.0, "leases": 0}
    assert ledger_problems(results, clean) == []
    assert ledger_problems(results, clean | {"leases": 1}) == [
        "rolling restart: 1 leases still held after the replicas stopped"
    ]
    assert ledger_problems(results, clean | {"reserved": 0.04}) != []
    assert ledger_problems(results, clean | {"rows": clean["rows"][:2], "spend": 0.08}) != []


# -- Kubernetes (deploy/kubernetes/; .ci/run validates every manifest with kubernetes-validate) --------------


def manifests() -> dict[str, dict]:
    folder = DEPLOY / "kubernetes"
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))}


def test_kustomize_applies_every_manifest_and_the_configmap_is_the_config():
    found = manifests()
    kustomization = found.pop("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(found)
    (configmap,) = kustomization["configMapGenerator"]  # generated from the pods' config (a change rolls them)
    source = yaml.safe_load((DEPLOY / "kubernetes" / configmap["files"][0].split("=", 1)[1]).read_text())
    assert source["model_list"] == yaml.safe_load((DEPLOY / "config.yaml").read_text())["model_list"]
    selector = {"app.kubernetes.io/name": "gesso"}
    assert found["service.yaml"]["spec"]["selector"] == selector
    assert found["pdb.yaml"]["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert found["hpa.yaml"]["spec"]["scaleTargetRef"]["name"] == found["deployment.yaml"]["metadata"]["name"]


def test_the_pod_runs_as_the_image_user_read_only_probed_and_migrated_first():
    deployment = manifests()["deployment.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (migrate,) = pod["initContainers"]
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile(), re.MULTILINE)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user.group(1))
    for each in (container, migrate):
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in each["volumeMounts"]
        # the secrets the config reads, from the Secret, never inline
        env = {item["name"]: item for item in each["env"]}
        assert env["GESSO_MASTER_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "gesso", "key": "master-key"}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gesso", "key": "database-url"}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert migrate["command"] == ["gesso", "db", "upgrade", "--config", "/etc/gesso/config.yaml"]
    port = int(re.search(r"^EXPOSE (\d+)$", dockerfile(), re.MULTILINE).group(1))
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveliness"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/liveliness"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    graceful = yaml.safe_load((DEPLOY / "config.yaml").read_text())["general_settings"]["graceful_timeout"]
    assert pod["terminationGracePeriodSeconds"] > sleep + graceful
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert "cpu" not in container["resources"]["limits"] and container["resources"]["limits"]["memory"]


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_migration_waits_for_a_database_that_is_not_up_yet(database_url):
    """compose's ``migrate`` runs ``gesso db upgrade --wait 60``: a database that refuses its first 1.5 s (here a
    relay to PostgreSQL that closes every connection until then) is migrated, not failed; one that never comes
    fails after the wait, saying so."""
    import socket
    import threading
    import time
    import urllib.parse

    from test_probes import Relay

    migrate = compose()["services"]["migrate"]
    assert migrate["command"][-2:] == ["--wait", "60"]
    real = urllib.parse.urlsplit(database_url)
    relay = Relay((real.hostname, real.port))
    relay.open = False  # not ready: every connection is closed at once
    threading.Timer(1.5, lambda: setattr(relay, "open", True)).start()
    late = real._replace(netloc=real.netloc.replace(f":{real.port}", f":{relay.port}")).geturl()
    began = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "gesso", "db", "upgrade", "--database-url", late, "--wait", "30"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        relay.close()
    assert done.returncode == 0 and "newest schema" in done.stdout, done.stderr
    assert time.monotonic() - began >= 1.5  # it did wait
    with socket.socket() as probe:  # a port nobody will listen on
        probe.bind(("127.0.0.1", 0))
        closed = real._replace(netloc=real.netloc.replace(f":{real.port}", f":{probe.getsockname()[1]}")).geturl()
        failed = subprocess.run([sys.executable, "-m", "gesso", "db", "upgrade", "--database-url", closed, "--wait",
                                 "1"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert failed.returncode == 1 and "tried for 1 s" in failed.stderr, failed.stderr

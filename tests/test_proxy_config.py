"""The proxy's config (litellm's ``config.yaml``) and ``gesso serve`` run as a real subprocess: the seed's two
curl commands from litellm's docs, verbatim, and the bind rules. The app itself is in ``test_proxy.py``."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from gesso import redact
from gesso.proxy import config as proxy_config

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "litellm-seed.yaml"
NOVA = "bedrock/amazon.nova-canvas-v1:0"

#: litellm's "AWS Bedrock - Image Generation" page, proxy tab, step 3 ("Test it!"): the two commands as
#: written there; only the port differs (4000 there, a free one here).
SEED_CURLS = {
    "text to image": """curl -L -X POST 'http://0.0.0.0:4000/v1/images/generations' \\
-H 'Content-Type: application/json' \\
-H 'Authorization: Bearer $LITELLM_VIRTUAL_KEY' \\
-d '{
    "model": "amazon.nova-canvas-v1:0",
    "prompt": "A cute baby sea otter"
}'""",
    "color guided generation": """curl -L -X POST 'http://0.0.0.0:4000/v1/images/generations' \\
-H 'Content-Type: application/json' \\
-H 'Authorization: Bearer $LITELLM_VIRTUAL_KEY' \\
-d '{
    "model": "amazon.nova-canvas-v1:0",
    "prompt": "A cute baby sea otter",
    "taskType": "COLOR_GUIDED_GENERATION",
    "colorGuidedGenerationParams":{"colors":["#FFFFFF"]}
}'""",
}


def entry(**params) -> dict:
    return {"model_name": "nova", "litellm_params": {"model": NOVA, "aws_region_name": "us-east-1", **params}}


def config_error(data) -> str:
    with pytest.raises(proxy_config.ConfigError) as caught:
        proxy_config.parse(data)
    return str(caught.value)


# -- parsing ---------------------------------------------------------------------------------------------------


def test_a_near_miss_names_the_field_and_what_it_meant():
    assert config_error({"model_list": [entry(aws_region_nam="us-east-1")]}) == (
        "model_list[0].litellm_params.aws_region_nam: unknown; did you mean aws_region_name?"
    )
    assert config_error({"model_list": [entry(), entry(max_retrie=2)]}) == (
        "model_list[1].litellm_params.max_retrie: unknown; did you mean max_retries?"
    )
    assert config_error({"model_lst": []}) == "model_lst: unknown top-level section; did you mean model_list?"
    assert config_error({"model_list": [{"model_name": "x", "litellm_param": {}}]}) == (
        "model_list[0].litellm_param: unknown; did you mean litellm_params?"
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "model_list: must be a non-empty list"),
        ({"model_list": [{"model_name": "x", "litellm_params": {}}]}, "model_list[0].litellm_params.model: required"),
        ({"model_list": [{"litellm_params": {"model": NOVA}}]}, "model_list[0].model_name: required"),
        (
            {"model_list": [{**entry(), "model_info": {"id": "a"}}, {**entry(), "model_info": {"id": "a"}}]},
            "model_list[1].model_info.id: 'a' is used twice",
        ),
        (
            {"model_list": [entry()], "general_settings": {"master_key": ""}},
            "general_settings.master_key: must be a non-empty",
        ),
        (
            {"model_list": [entry()], "router_settings": {"cooldown_time": -1}},
            "router_settings.cooldown_time: must be a non-negative",
        ),
        (
            {"model_list": [entry()], "general_settings": {"max_request_size_mb": "big"}},
            "general_settings.max_request_size_mb",
        ),
        (
            {"model_list": [entry(aws_secret_access_id="a", aws_access_key_id="b")]},
            "a misspelling of aws_access_key_id, which is also given",
        ),
        ([1, 2], "config: must be a mapping"),
    ],
)
def test_bad_configs_name_the_bad_field(data, message):
    assert message in config_error(data)


def test_the_documented_misspelling_is_read_with_a_warning():
    config = proxy_config.parse({"model_list": [entry(aws_secret_access_key="my-key", aws_secret_access_id="my-id")]})
    params = config.deployments[0].params
    assert params["aws_access_key_id"] == "my-id" and "aws_secret_access_id" not in params
    assert params["aws_secret_access_key"] == "my-key"
    (warning,) = config.warnings
    assert warning.startswith("model_list[0].litellm_params.aws_secret_access_id: read as aws_access_key_id (")


def test_settings_gesso_does_not_use_are_warned_about_once_each():
    config = proxy_config.parse(
        {
            "model_list": [entry()],
            "litellm_settings": {"drop_params": True, "set_verbose": False, "success_callback": ["langfuse"]},
            "router_settings": {"routing_strategy": "simple-shuffle", "cooldown_time": 12},
            "general_settings": {"alerting": ["slack"], "max_request_size_mb": 2},
        }
    )
    assert sorted(config.warnings) == [
        "general_settings.alerting: not used by gesso (ignored)",
        "litellm_settings.drop_params: not used by gesso (ignored)",
        "litellm_settings.set_verbose: not used by gesso (ignored)",
        "litellm_settings.success_callback: not used by gesso (ignored)",
        "router_settings.routing_strategy: not used by gesso (ignored)",
    ]
    assert config.cooldown == 12 and config.max_request_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    "key, meant",
    [
        ("master_kye", "master_key"),
        ("Master_Key", "master_key"),
        ("master-key", "master_key"),
        ("MASTER_KEY", "master_key"),
        ("masterkey", "master_key"),
        ("master_keys", "master_key"),
        ("database_ulr", "database_url"),
        ("Database-URL", "database_url"),
        ("metrics_requires_auth", "metrics_require_auth"),
        ("metrics-require-auth", "metrics_require_auth"),
    ],
)
def test_a_near_miss_of_a_setting_that_guards_access_refuses_to_start(key, meant):
    """Ignored with a warning, ``master_kye`` would serve without the key its author set: it is an error."""
    data = {"model_list": [entry()], "general_settings": {key: "sqlite:///x.db" if "url" in meant.lower() else True}}
    assert config_error(data) == f"general_settings.{key}: unknown; did you mean {meant}?"


def test_other_unknown_general_settings_warn_with_a_suggestion():
    config = proxy_config.parse(
        {
            "model_list": [entry()],
            "general_settings": {"store_promts": True, "max_request_size_md": 2, "banana": 1},
        }
    )
    assert sorted(config.warnings) == [
        "general_settings.banana: not used by gesso (ignored)",
        "general_settings.max_request_size_md: not used by gesso (ignored); did you mean max_request_size_mb?",
        "general_settings.store_promts: not used by gesso (ignored); did you mean store_prompts?",
    ]
    assert config.store_prompts is False and config.max_request_bytes == 50 * 1024 * 1024


def test_litellms_own_general_settings_are_warnings_even_where_they_resemble_a_guard():
    """Every general_settings key litellm has (``dangerously_permit_weak_or_unset_master_key``, ``database_type``,
    ``database_args``...) and longer names that merely contain a guard's (``master_key_rotation``) start, with one
    warning each and no suggestion."""
    theirs = sorted(proxy_config.LITELLM_GENERAL_SETTINGS - set(proxy_config.GENERAL_SETTINGS))
    resembling = ["master_key_rotation", "litellm_master_key", "database_url_replica"]
    general = {key: None for key in theirs + resembling}
    config = proxy_config.parse({"model_list": [entry()], "general_settings": {**general, "master_key": "sk-m"}})
    assert sorted(config.warnings) == sorted(f"general_settings.{key}: not used by gesso (ignored)" for key in general)
    assert {"dangerously_permit_weak_or_unset_master_key", "database_type", "database_args"} <= set(theirs)


def test_metrics_require_auth():
    def parse(general, litellm=None):
        return proxy_config.parse(
            {"model_list": [entry()], "general_settings": general, "litellm_settings": litellm or {}}
        )

    assert parse({}).metrics_require_auth is False  # open by default, as in litellm
    assert parse({"master_key": "sk-m", "metrics_require_auth": True}).metrics_require_auth is True
    assert parse({"master_key": "sk-m", "metrics_require_auth": False}).metrics_require_auth is False
    # litellm's own switch (litellm_settings.require_auth_for_metrics_endpoint) is read too, not ignored
    config = parse({"master_key": "sk-m"}, {"require_auth_for_metrics_endpoint": True})
    assert config.metrics_require_auth is True and config.warnings == ()
    assert "must be true or false" in config_error(
        {"model_list": [entry()], "general_settings": {"master_key": "sk-m", "metrics_require_auth": "yes"}}
    )
    # without a master key every caller is the admin: /metrics would stay open, so the config is refused
    for general, litellm, at in (
        ({"metrics_require_auth": True}, {}, "general_settings.metrics_require_auth"),
        ({}, {"require_auth_for_metrics_endpoint": True}, "litellm_settings.require_auth_for_metrics_endpoint"),
    ):
        message = config_error({"model_list": [entry()], "general_settings": general, "litellm_settings": litellm})
        assert message == f"{at}: needs general_settings.master_key, the key /metrics then asks for"


def test_os_environ_values():
    with mock.patch.dict(os.environ, {"PROXY_TEST_SECRET": "s3cret", "PROXY_TEST_MASTER": "sk-m"}):
        config = proxy_config.parse(
            {
                "model_list": [entry(aws_secret_access_key="os.environ/PROXY_TEST_SECRET")],
                "general_settings": {"master_key": "os.environ/PROXY_TEST_MASTER"},
                "environment_variables": {"PROXY_TEST_SET_BY_CONFIG": "yes"},
            }
        )
        assert config.deployments[0].params["aws_secret_access_key"] == "s3cret"
        assert config.master_key == "sk-m"
        assert os.environ["PROXY_TEST_SET_BY_CONFIG"] == "yes"
    with mock.patch.dict(os.environ, clear=False):
        os.environ.pop("PROXY_TEST_UNSET", None)
        assert config_error({"model_list": [entry(aws_secret_access_key="os.environ/PROXY_TEST_UNSET")]}) == (
            "model_list[0].litellm_params.aws_secret_access_key: environment variable PROXY_TEST_UNSET is not set"
        )


def test_os_environ_values_from_a_secret_file(tmp_path):
    """``os.environ/NAME`` with NAME unset reads the file ``$NAME_FILE`` names (Docker's secrets are mounted as
    files): one trailing newline dropped, the value redacted like any secret; an unreadable file is named."""
    (tmp_path / "master").write_text("sk-from-a-file\n")
    (tmp_path / "url").write_text("postgresql://gesso:hex0123@db:5432/gesso")
    env = {"PROXY_TEST_MK_FILE": str(tmp_path / "master"), "PROXY_TEST_DB_FILE": str(tmp_path / "url")}
    with mock.patch.dict(os.environ, env):
        for name in ("PROXY_TEST_MK", "PROXY_TEST_DB"):
            os.environ.pop(name, None)
        settings = {"master_key": "os.environ/PROXY_TEST_MK", "database_url": "os.environ/PROXY_TEST_DB"}
        config = proxy_config.parse({"model_list": [entry()], "general_settings": settings})
        assert config.master_key == "sk-from-a-file"
        assert config.database_url == "postgresql://gesso:hex0123@db:5432/gesso"
        assert "sk-from-a-file" not in redact.redact("the key sk-from-a-file leaked")
        os.environ["PROXY_TEST_MK"] = "sk-from-the-environment"  # the variable itself wins over the file
        again = proxy_config.parse({"model_list": [entry()], "general_settings": settings})
        assert again.master_key == "sk-from-the-environment"
        os.environ.pop("PROXY_TEST_MK")
        os.environ["PROXY_TEST_MK_FILE"] = str(tmp_path / "missing")
        assert config_error({"model_list": [entry()], "general_settings": settings}) == (
            f"general_settings.master_key: cannot read PROXY_TEST_MK_FILE ({tmp_path / 'missing'}): FileNotFoundError"
        )


def test_check_fails_at_start_on_an_unknown_model_or_a_bad_parameter():
    for params, expected in (
        ({"model": "bedrock/amazon.nova-canvas-v9:0"}, "is not one of the models"),
        ({"cfgScale": 99}, "cfgScale: must be between 1.1 and 10"),
    ):
        config = proxy_config.parse(
            {"model_list": [entry(), {"model_name": "bad", "litellm_params": {"model": NOVA, **params}}]}
        )
        with pytest.raises(proxy_config.ConfigError) as caught:
            proxy_config.check(config)
        assert str(caught.value).startswith("model_list[1] (bad): ") and expected in str(caught.value)


def test_check_leaves_to_the_request_what_it_brings_itself():
    """A model that needs an input image (an upscale) or takes no prompt (remove background) is served: the
    check asks of the deployment only what the deployment sets."""
    services = ("us.stability.stable-creative-upscale-v1:0", "us.stability.stable-image-remove-background-v1:0")
    config = proxy_config.parse(
        {"model_list": [{"model_name": name, "litellm_params": {"model": f"bedrock/{name}", "aws_region_name": "us-east-1"}}
                        for name in services]}
    )  # fmt: skip
    proxy_config.check(config)


def test_load_reads_yaml_and_names_the_file_on_errors(tmp_path):
    seed = proxy_config.load(SEED)
    assert seed.model_names == ["amazon.nova-canvas-v1:0"] and seed.master_key is None
    assert len(seed.warnings) == 1 and "aws_secret_access_id" in seed.warnings[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list: [\n")
    with pytest.raises(proxy_config.ConfigError, match=r"bad\.yaml: not valid YAML"):
        proxy_config.load(bad)
    with pytest.raises(proxy_config.ConfigError, match="cannot read the config"):
        proxy_config.load(tmp_path / "missing.yaml")


# -- gesso serve, as a subprocess --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("GESSO_PLUGINS",)}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    return env


def serve(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gesso", "serve", *args], stdout=out, stderr=subprocess.STDOUT, env=environment()
        )


def wait_until_serving(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, f"gesso serve exited {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"gesso serve did not start:\n{log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def run_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gesso", "serve", *args], capture_output=True, text=True, timeout=60, env=environment()
    )


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory):
    """``gesso serve --config examples/litellm-seed.yaml --emulator --port PORT``, as the seed is."""
    port = free_port()
    log = tmp_path_factory.mktemp("seed") / "serve.log"
    process = serve("--config", str(SEED), "--emulator", "--port", str(port), log=log)
    try:
        wait_until_serving(process, port, log)
        yield port, log
    finally:
        stop(process)


@pytest.mark.slow
def test_the_seeds_curl_commands_work_verbatim(seed_server):
    port, log = seed_server
    for name, command in SEED_CURLS.items():
        out = subprocess.run(
            ["bash", "-c", command.replace(":4000/", f":{port}/")], capture_output=True, text=True, timeout=60,
            env=environment(),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        assert "error" not in answer, (name, answer)
        assert isinstance(answer["created"], int) and len(answer["data"]) == 1, name
        assert base64.b64decode(answer["data"][0]["b64_json"]).startswith(b"\x89PNG"), name
    metrics = subprocess.run(
        ["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True, timeout=20, check=True
    ).stdout
    assert 'gesso_requests_total{model_name="amazon.nova-canvas-v1:0",route="generations",status="200"} 2' in metrics
    text = log.read_text()
    assert "aws_secret_access_id: read as aws_access_key_id" in text
    assert "Traceback" not in text and "b64_json" not in text  # no response body in a log line
    assert not re.search(r"[A-Za-z0-9+/]{100,}", text), "a base64 run in the log"


@pytest.mark.slow
def test_serve_refuses_a_bad_config_with_the_fields_path(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n  - model_name: nova\n    litellm_params:\n      model: bedrock/amazon.nova-canvas-v1:0\n"
        "      aws_region_nam: us-east-1\n"
    )
    out = run_serve("--config", str(config), "--port", str(free_port()))
    assert out.returncode == 2
    assert f"gesso: error: {config}: model_list[0].litellm_params.aws_region_nam: unknown; did you mean " \
           "aws_region_name?" in out.stderr  # fmt: skip
    config.write_text(
        "model_list:\n  - model_name: nova\n    litellm_params:\n      model: bedrock/amazon.nova-canvas-v9:0\n"
    )
    out = run_serve("--config", str(config), "--port", str(free_port()))
    assert out.returncode == 2 and "model_list[0] (nova): Model 'amazon.nova-canvas-v9:0'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_serve_refuses_a_near_miss_of_the_master_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(SEED.read_text() + "general_settings:\n  master_kye: sk-proxy-test\n")
    out = run_serve("--config", str(config), "--port", str(free_port()))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"gesso: error: {config}: general_settings.master_kye: unknown; did you mean master_key?" in out.stderr


@pytest.mark.slow
def test_serve_on_a_public_address_needs_a_master_key_or_the_flag(tmp_path):
    out = run_serve("--config", str(SEED), "--host", "0.0.0.0", "--port", str(free_port()))
    assert out.returncode == 2
    assert "0.0.0.0 is not a loopback address and the config has no general_settings.master_key" in out.stderr
    assert "--allow-unauthenticated" in out.stderr
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(SEED.read_text() + "general_settings:\n  master_key: sk-proxy-test\n")
    processes = []
    try:
        for config, flags in ((SEED, ["--allow-unauthenticated"]), (keyed, [])):
            port = free_port()
            log = tmp_path / f"serve-{port}.log"
            process = serve(
                "--config", str(config), "--host", "0.0.0.0", "--port", str(port), "--emulator", *flags, log=log
            )
            processes.append((process, port, log))
        for process, port, log in processes:
            wait_until_serving(process, port, log)
            status = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/v1/models"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout  # fmt: skip
            keyed_run = "sk-proxy-test" in Path(process.args[process.args.index("--config") + 1]).read_text()
            assert status == ("401" if keyed_run else "200")
            warned = re.search(r"WARNING gesso: serving 0\.0\.0\.0 without a master key", log.read_text())
            assert bool(warned) is not keyed_run
    finally:
        for process, _, _ in processes:
            stop(process)


@pytest.mark.parametrize("value", ["soon", -1, True, [60]])
def test_a_graceful_timeout_that_is_not_a_number_of_seconds_is_refused(value):
    data = {"model_list": [{"model_name": "nova", "litellm_params": {"model": "bedrock/amazon.nova-canvas-v1:0"}}],
            "general_settings": {"graceful_timeout": value}}  # fmt: skip
    with pytest.raises(proxy_config.ConfigError, match="general_settings.graceful_timeout: must be a non-negative"):
        proxy_config.parse(data)


def test_the_result_store_is_a_directory_or_an_installed_scheme(tmp_path):
    def parsed(where):
        return proxy_config.parse({"model_list": [entry()], "general_settings": {"result_store": where}})

    assert parsed(str(tmp_path / "answers")).result_store == str(tmp_path / "answers")
    assert parsed("s3://my-bucket/gesso/answers").result_store == "s3://my-bucket/gesso/answers"  # gesso-bedrock's
    assert config_error({"model_list": [entry()], "general_settings": {"result_store": "ftp://host/x"}}) == (
        "general_settings.result_store: scheme 'ftp://' has no installed store of answers (installed: a directory, "
        "s3://)"
    )
    assert config_error({"model_list": [entry()], "general_settings": {"idempotency_retention": "forever"}}).startswith(
        "general_settings.idempotency_retention: must be a duration"
    )
    bad_cache = {"model_list": [{**entry(), "model_info": {"cache": {"scope": "everyone"}}}]}
    assert config_error(bad_cache) == (
        "model_list[0].model_info.cache.scope: must be one of key, team, global (got 'everyone')"
    )

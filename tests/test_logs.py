"""``gesso serve``'s logs: one stream for the parent and every worker, JSON (``--log-format json``, litellm's
``JSON_LOGS=true``) or text with timestamps; one access line per request with its fields (never the key);
caller text cannot forge a line; each warning once; a start-up that says what it is doing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_store import head

from helpers import NOVA, Served, serving

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")

MASTER = "sk-master-logs-test"
DOUBLED = "bedrock/stability.stability.sd3-5-large-v1:0"  # litellm's spelling: read once, with a warning
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def call(served: Served, path: str, body: object, key: str = MASTER) -> tuple[int, dict]:
    status, text = served.call("POST", path, body, key=key)
    return status, json.loads(text)


def config(tmp_path, **general: object) -> dict:
    return {
        "model_list": [
            {"model_name": "nova", "litellm_params": {"model": NOVA}},
            {"model_name": "sd", "litellm_params": {"model": DOUBLED}},
        ],
        "general_settings": general,
        "litellm_settings": {"drop_params": True},  # not used by gesso: one warning
    }


@pytest.mark.slow  # starts gesso serve with two worker processes
def test_two_workers_write_one_json_line_per_request_to_one_stream(tmp_path):
    database = tmp_path / "gesso.db"
    settings = config(tmp_path, master_key=MASTER, database_url=f"sqlite:///{database}")
    flags = ("--workers", "2", "--emulator", "--log-format", "json", "--log-level", "info")
    with serving(tmp_path, {}, *flags, processes=3, config=settings) as served:
        status, made = call(served, "/key/generate", {"key_alias": "storefront", "models": ["nova", "sd"]})
        assert status == 200
        key = made["key"]
        forged = 'nova\n{"level": "INFO", "message": "forged"}'
        bodies = [{"model": "nova", "prompt": "a lighthouse", "size": "320x320"}] * 12
        bodies += [{"model": "sd", "prompt": "a lighthouse"}] * 4 + [{"model": forged, "prompt": "x"}]
        with ThreadPoolExecutor(8) as pool:  # concurrent, on fresh connections
            answers = list(pool.map(lambda body: call(served, "/v1/images/generations", body, key), bodies))
            assert [status for status, _ in answers] == [200] * 16 + [404]
            # the kernel hands each connection to either worker; on a busy machine one may take a whole round:
            # send more rounds (each line counted) until both have answered, as a load balancer's clients would
            for _ in range(20):
                if len(access_pids(served.log)) == 2:
                    break
                extra = [bodies[0]] * 8
                more = pool.map(lambda body: call(served, "/v1/images/generations", body, key), extra)
                assert [status for status, _ in more] == [200] * 8
                bodies += extra
        served.process.terminate()
        assert served.process.wait(30) == 0
    text = served.log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line of every process is one JSON object
    assert all(re.fullmatch(TIMESTAMP, line["timestamp"]) and line["level"] and line["logger"] for line in lines)

    access = [line for line in lines if line["logger"] == "gesso.proxy" and line.get("route") == "generations"]
    assert len(access) == len(bodies)  # one line per request, from both workers, through the parent's stream
    workers_seen = {line["process"] for line in access}
    assert len(workers_seen) == 2 and os.getpid() not in workers_seen
    served_ok = [line for line in access if line["status"] == 200]
    first = next(line for line in served_ok if line["model_name"] == "nova")
    assert first["message"] == "POST /v1/images/generations 200"
    assert first["key_alias"] == "storefront" and first["team"] is None
    assert first["deployment"] == "nova-0" and first["images"] == 1 and first["cost"] == 0.04
    assert first["error_type"] is None and first["attempts"] == 1 and first["latency_ms"] > 0
    assert len(first["request_id"]) == 32
    assert len({line["request_id"] for line in access}) == len(bodies)
    refused = next(line for line in access if line["status"] == 404)
    assert refused["model_name"] == printable_forged(forged) and refused["error_type"] == "invalid_request_error"
    assert not any(line.get("message") == "forged" for line in lines)
    assert key not in text and MASTER not in text  # never a key

    # each warning once, as a log line (no raw Python warning), though three processes loaded the config
    warned = [line["message"] for line in lines if line["level"] == "WARNING"]
    assert sum("is a Legacy model" in message for message in warned) == 1
    assert sum("names its provider twice" in message for message in warned) == 1
    assert sum("litellm_settings.drop_params: not used by gesso" in message for message in warned) == 1
    assert "Warning:" not in text and ".py:" not in text

    said = [line["message"] for line in lines if line["logger"] == "gesso" and line["level"] == "INFO"]
    assert "authentication: on (general_settings.master_key, and the virtual keys it makes)" in said
    assert "providers: emulated (--emulator): every deployment answers from a local emulator; nothing is paid" in said
    assert f"database: sqlite:///{database} (the file {database}, created now), schema migrated from none to the " \
           f"newest revision ({head()})" in said  # fmt: skip
    assert "workers: 2 processes" in said
    assert "max concurrency 4096 calls in flight per process (set by the default)" in said
    assert f"model nova: 1 deployment: nova-0 ({NOVA})" in said and f"model sd: 1 deployment: sd-1 ({DOUBLED})" in said
    # and where each deployment's model stands: Nova Canvas's end of life (2026-09-30) has passed
    assert "model nova: lifecycle: nova-0 legacy, end of life 2026-09-30 passed: tried after the others" in said


def access_pids(log) -> set[int]:
    """The processes that wrote an access line for an image request to the log so far."""
    lines = [json.loads(line) for line in log.read_text().splitlines(keepends=True) if line.endswith("}\n")]
    return {line["process"] for line in lines if line["logger"] == "gesso.proxy" and line.get("route") == "generations"}


def printable_forged(text: str) -> str:
    from gesso.boundary import printable

    return printable(text, 200)


@pytest.mark.slow  # starts gesso serve
def test_text_lines_have_timestamps_and_json_logs_true_asks_for_json(tmp_path):
    forged = "nova\n2026-12-04T00:00:00.000Z INFO gesso.proxy: forged"
    (tmp_path / "text").mkdir()
    with serving(tmp_path / "text", {}, "--emulator", "--log-level", "info", config=config(tmp_path)) as served:
        assert served.call("POST", "/v1/images/generations", {"model": "nova", "prompt": "a lighthouse"})[0] == 200
        assert served.call("POST", "/v1/images/generations", {"model": forged, "prompt": "x"})[0] == 404
        assert served.call("GET", "/v1/models")[0] == 200
        served.process.terminate()
        assert served.process.wait(30) == 0
    lines = served.log.read_text().splitlines()
    assert all(re.match(TIMESTAMP + r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ", line) for line in lines), lines
    access = [line for line in lines if re.search(" INFO gesso.proxy: (GET|POST) ", line)]
    assert len(access) == 3 and not any(line.endswith("forged") for line in lines)
    assert re.search(r" INFO gesso.proxy: POST /v1/images/generations 200 request_id=[0-9a-f]{32} route=generations "
                     r"model_name=nova deployment=nova-0 key_alias=- team=- status=200 error_type=- images=1 "
                     r"cost=0.04 latency_ms=[0-9.]+ attempts=1$", access[0])  # fmt: skip
    # escaped (the newline as \\n), then quoted as a JSON string (so its backslash doubled)
    assert r'model_name="nova\\n2026-12-04T00:00:00.000Z INFO gesso.proxy: forged"' in access[1]
    assert re.search(r" INFO gesso.proxy: GET /v1/models 200 status=200 latency_ms=[0-9.]+$", access[2])
    assert any(line.endswith("INFO gesso: authentication: off (no general_settings.master_key; 127.0.0.1 is a "
                             "loopback address: only this machine reaches it)") for line in lines)  # fmt: skip
    database = tmp_path / "text" / "gesso.db"
    assert any(line.endswith(f"INFO gesso: database: sqlite:///{database} (the file {database}, created now), the "
                             "default (no general_settings.database_url: a SQLite file beside the config), schema "
                             f"migrated from none to the newest revision ({head()})") for line in lines)  # fmt: skip

    (tmp_path / "json").mkdir()
    os.environ["JSON_LOGS"] = "true"  # litellm's switch, read when --log-format is not given
    try:
        with serving(tmp_path / "json", {}, "--emulator", "--log-level", "info", config=config(tmp_path)) as served:
            assert served.call("GET", "/v1/models")[0] == 200
            served.process.terminate()
            assert served.process.wait(30) == 0
    finally:
        del os.environ["JSON_LOGS"]
    lines = [json.loads(line) for line in served.log.read_text().splitlines()]
    assert any(line["logger"] == "gesso.proxy" and line["message"] == "GET /v1/models 200" for line in lines)


def test_a_redacted_line_keeps_its_fields():
    import logging

    from gesso import redact
    from gesso.proxy.logs import JsonFormatter, Line

    redact.remember(["sk-logs-secret-0123456789"])
    redact.install()
    record = logging.getLogger("gesso.proxy").makeRecord(
        "gesso.proxy", logging.INFO, __file__, 1, Line("POST /v1/images/generations 400", {
            "model_name": "asked sk-logs-secret-0123456789", "status": 400}), (), None,
    )  # fmt: skip
    logged = json.loads(JsonFormatter().format(record))
    assert logged["message"] == "POST /v1/images/generations 400" and logged["status"] == 400
    assert logged["model_name"] == "asked <redacted>"


def test_an_unknown_log_format_is_a_usage_error(tmp_path):
    (tmp_path / "config.yaml").write_text("model_list: []\n")
    run = subprocess.run([sys.executable, "-m", "gesso", "serve", "--config", str(tmp_path / "config.yaml"),
                          "--log-format", "xml"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--log-format: invalid choice: 'xml' (choose from" in run.stderr

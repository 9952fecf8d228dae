"""The proxy's health routes: ``GET /health`` in litellm's shape without a provider call (a deployment resting
after a failure is unhealthy), a paid check only when the config allows it and the master key asks for one
model name; ``GET /health/readiness`` checks the database and says when the proxy is stopping."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import sys
import time

import pytest
import uvicorn
import yaml

from gesso.proxy import config as proxy_config
from gesso.proxy.app import build_app
from helpers import NOVA, Served, serving, uvicorn_running

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")

MASTER = "sk-master-probes"
SD = "bedrock/stability.sd3-5-large-v1:0"


def fetch(served: Served, path: str, *, key: str | None = MASTER, body: object = None) -> tuple[int, dict]:
    status, text = served.call("POST" if body is not None else "GET", path, body, key=key)
    return status, json.loads(text)


def config(aws: dict, **general: object) -> dict:
    params = {**aws, "max_retries": 0}
    return {
        "model_list": [
            {"model_name": "nova", "litellm_params": {"model": NOVA, **params}, "model_info": {"id": "nova-a"}},
            {"model_name": "nova", "litellm_params": {"model": NOVA, **params}, "model_info": {"id": "nova-b"}},
            {"model_name": "sd", "litellm_params": {"model": SD, **params}, "model_info": {"id": "sd-a"}},
        ],
        "general_settings": {"master_key": MASTER, **general},
    }


def ids(entries: list[dict]) -> list[str]:
    return sorted(entry["model_id"] for entry in entries)


@pytest.mark.slow  # starts gesso serve
def test_health_answers_from_what_the_proxy_saw_and_pays_only_when_allowed_and_asked(tmp_path, aws, emulator):
    with serving(tmp_path, {}, "--log-level", "info", config=config(aws)) as served:
        calls = emulator.stats()["requests"]
        status, answer = fetch(served, "/health")
        assert status == 200 and answer["healthy_count"] == 3 and answer["unhealthy_count"] == 0
        assert ids(answer["healthy_endpoints"]) == ["nova-a", "nova-b", "sd-a"]
        assert answer["healthy_endpoints"][0] == {"model": NOVA, "model_name": "nova", "model_id": "nova-a"}
        text = json.dumps(answer)
        assert aws["aws_secret_access_key"] not in text and emulator.url not in text  # never a deployment's options

        emulator.inject("throttle", count=1)  # the first deployment tried is throttled: the call moves on
        assert (
            fetch(served, "/v1/images/generations", body={"model": "nova", "prompt": "x", "size": "320x320"})[0] == 200
        )
        status, answer = fetch(served, "/health?model=nova")
        assert status == 200 and answer["healthy_count"] == 1 and answer["unhealthy_count"] == 1
        (resting,) = answer["unhealthy_endpoints"]
        assert resting["model_name"] == "nova" and "after rate_limit_error" in resting["error"]

        status, answer = fetch(served, "/health?model=dall-e-3")
        assert status == 404 and "configured models: nova, sd" in answer["error"]["message"]
        assert fetch(served, "/health", key=None)[0] == 401
        status, made = fetch(served, "/key/generate", body={"key_alias": "sd-only", "models": ["sd"]})
        assert status == 200
        status, answer = fetch(served, "/health", key=made["key"])
        assert status == 200 and ids(answer["healthy_endpoints"]) == ["sd-a"]  # only what the key may use
        assert fetch(served, "/health?model=nova", key=made["key"])[0] == 404
        status, answer = fetch(served, "/health?model_id=nova-b")  # litellm's ?model_id=: one deployment
        assert status == 200 and ids(answer["healthy_endpoints"] + answer["unhealthy_endpoints"]) == ["nova-b"]
        status, answer = fetch(served, "/health?model_id=nova-a", key=made["key"])  # not one of the key's
        assert status == 404 and answer["error"]["message"] == "No deployment 'nova-a' here; deployments: sd-a"
        emulator.inject("throttle", count=1)  # sd's only deployment fails: it rests, and sd has none healthy
        assert fetch(served, "/v1/images/generations", body={"model": "sd", "prompt": "x"})[0] == 429
        status, answer = fetch(served, "/health?model=sd", key=made["key"])
        assert status == 503 and answer["healthy_count"] == 0 and ids(answer["unhealthy_endpoints"]) == ["sd-a"]
        assert fetch(served, "/health", key=made["key"])[0] == 200  # 503 only for a model name asked for
        assert emulator.stats()["requests"] == calls + 3  # the two throttled calls and a failover, nothing else

        # allowed from now on (a reload): the master key's ?model= check makes one call per deployment
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config(aws, health_check_paid=True)))
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reloaded: serving" not in served.log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = emulator.stats()["requests"]
        assert fetch(served, "/health?model=sd", key=made["key"])[0] == 200  # a virtual key: no call
        assert fetch(served, "/health")[0] == 200  # no model named: no call
        assert emulator.stats()["requests"] == before
        emulator.inject("error", count=1)
        status, answer = fetch(served, "/health?model=nova")
        assert emulator.stats()["requests"] == before + 2  # one each
        assert answer["healthy_count"] == 1 and answer["unhealthy_count"] == 1, answer
        assert answer["healthy_endpoints"][0]["cost"] > 0 and "api_error" in answer["unhealthy_endpoints"][0]["error"]
        status, answer = fetch(served, "/health?model_id=sd-a")  # one deployment, one call
        assert status == 200 and ids(answer["healthy_endpoints"]) == ["sd-a"] and answer["unhealthy_count"] == 0
        assert emulator.stats()["requests"] == before + 3
        status, answer = fetch(served, "/health/readiness", key=None)
        assert status == 200 and answer == {"status": "healthy", "models": 2, "deployments": 3, "db": "connected"}
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0
    with sqlite3.connect(tmp_path / "gesso.db") as db:
        rows = db.execute("SELECT route, status, model_name FROM gesso_spend_logs WHERE route = 'health'").fetchall()
    assert sorted(rows) == [("health", "failure", "nova"), ("health", "success", "nova"), ("health", "success", "sd")]


def test_readiness_is_503_when_the_database_does_not_answer_or_the_proxy_stops(tmp_path, emulator, aws, caplog):
    with socket.socket() as sock:  # a port nothing listens on: the database is unreachable
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = proxy_config.parse(
        {**config(aws), "general_settings": {"database_url": f"postgresql://u@127.0.0.1:{closed}/x"}}
    )
    app = build_app(down)
    served = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", log_config=None)
    with contextlib.contextmanager(uvicorn_running)(served) as port:
        status, answer = fetch(Served(None, f"http://127.0.0.1:{port}", tmp_path), "/health/readiness", key=None)  # type: ignore[arg-type]
        assert status == 503 and answer["status"] == "unhealthy" and answer["db"] == "disconnected", answer
        assert answer["error"] and "u@" not in json.dumps(answer) and str(closed) not in json.dumps(answer)
        assert fetch(Served(None, f"http://127.0.0.1:{port}", tmp_path), "/health/readiness")[0] == 503  # type: ignore[arg-type]
    told = [r.getMessage() for r in caplog.records if r.getMessage().startswith("readiness: the database")]
    assert len(told) == 1 and f"127.0.0.1:{closed}" in told[0], told  # why and where, in the log only, once

    up = proxy_config.parse({**config(aws), "general_settings": {"database_url": f"sqlite:///{tmp_path / 'g.db'}"}})
    app = build_app(up)
    served = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", log_config=None)
    with contextlib.contextmanager(uvicorn_running)(served) as port:
        probe = Served(None, f"http://127.0.0.1:{port}", tmp_path)  # type: ignore[arg-type]
        assert fetch(probe, "/health/readiness", key=None)[1]["db"] == "connected"
        app.state.proxy.stopping = True  # as a SIGTERM sets it (gesso.proxy.lifecycle)
        status, answer = fetch(probe, "/health/readiness", key=None)
        assert status == 503 and answer["status"] == "shutting_down"
        assert fetch(probe, "/health/liveliness", key=None) == (200, "I'm alive!")  # alive while it drains


def test_health_check_paid_must_be_a_boolean(aws):
    assert proxy_config.parse(config(aws, health_check_paid=True)).health_check_paid is True
    assert proxy_config.parse(config(aws)).health_check_paid is False  # off unless asked
    with pytest.raises(proxy_config.ConfigError, match=r"general_settings\.health_check_paid: must be true or false"):
        proxy_config.parse(config(aws, health_check_paid="yes"))

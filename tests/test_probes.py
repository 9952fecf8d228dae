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
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
import yaml
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

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


@contextlib.contextmanager
def in_process(data: dict, tmp_path) -> Iterator[tuple[Starlette, Served]]:
    """The proxy's app for ``data`` on loopback, in this process (its state at hand)."""
    app = build_app(proxy_config.parse(data))
    served = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", log_config=None)
    with contextlib.contextmanager(uvicorn_running)(served) as port:
        yield app, Served(None, f"http://127.0.0.1:{port}", tmp_path)  # type: ignore[arg-type]


def test_readiness_is_503_when_the_database_does_not_answer(tmp_path, aws, caplog):
    with socket.socket() as sock:  # a port nothing listens on: the database is unreachable
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = {**config(aws), "general_settings": {"database_url": f"postgresql://u:pw@127.0.0.1:{closed}/x"}}
    with in_process(down, tmp_path) as (_, served):
        status, answer = fetch(served, "/health/readiness", key=None)
        assert status == 503 and answer["status"] == "unhealthy" and answer["db"] == "disconnected", answer
        assert answer["error"] and "u:" not in json.dumps(answer) and str(closed) not in json.dumps(answer)
        assert fetch(served, "/health/readiness")[0] == 503
    told = [r.getMessage() for r in caplog.records if r.getMessage().startswith("readiness: the database")]
    # why and where, in the log only, once, its password masked (its user too, once gesso.redact is installed)
    assert len(told) == 1 and f"***@127.0.0.1:{closed}" in told[0] and "pw" not in told[0], told


def test_readiness_asks_the_database_and_says_when_the_proxy_stops(tmp_path, aws, database_url):
    with in_process({**config(aws), "general_settings": {"database_url": database_url}}, tmp_path) as (app, served):
        status, answer = fetch(served, "/health/readiness", key=None)
        assert status == 200 and answer == {"status": "healthy", "models": 2, "deployments": 3, "db": "connected"}
        app.state.proxy.stopping = True  # as a SIGTERM sets it (gesso.proxy.lifecycle)
        status, answer = fetch(served, "/health/readiness", key=None)
        assert status == 503 and answer["status"] == "shutting_down" and answer["db"] == "connected"
        assert fetch(served, "/health/liveliness", key=None) == (200, "I'm alive!")  # alive while it drains


class Relay:
    """A TCP relay on loopback to ``target`` that can be cut (its connections closed, new ones closed at once: a
    database gone away) and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.open, self.ends = target, True, list[socket.socket]()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.ends += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        for end in self.ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        self.ends.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_readiness_follows_a_postgresql_that_goes_away_and_comes_back(tmp_path, aws, database_url, caplog):
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("a network database (SQLite has no connection to lose)")
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    try:
        with in_process({**config(aws), "general_settings": {"database_url": relayed}}, tmp_path) as (_, served):
            assert fetch(served, "/health/readiness", key=None)[1]["db"] == "connected"
            relay.cut()  # the connection the pool holds is dropped, and no new one gets through
            status, answer = fetch(served, "/health/readiness", key=None)
            assert status == 503 and answer["db"] == "disconnected", answer
            relay.open = True
            status, answer = fetch(served, "/health/readiness", key=None)
            assert status == 200 and answer["db"] == "connected", answer
    finally:
        relay.close()
    told = [r.getMessage() for r in caplog.records if r.getMessage().startswith("readiness: the database")]
    assert [m.endswith("answers again") for m in told] == [False, True], told


def test_health_check_paid_must_be_a_boolean(aws):
    assert proxy_config.parse(config(aws, health_check_paid=True)).health_check_paid is True
    assert proxy_config.parse(config(aws)).health_check_paid is False  # off unless asked
    with pytest.raises(proxy_config.ConfigError, match=r"general_settings\.health_check_paid: must be true or false"):
        proxy_config.parse(config(aws, health_check_paid="yes"))

"""``gesso serve --workers 2``, a real one on loopback with its emulator: ``/metrics`` is the sum over both
workers on every scrape (whichever worker takes it), the limit on calls in flight is a setting it shows and
exports, and no worker outlives the parent, stopped (SIGTERM) or killed (SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from gesso.proxy import config as proxy_config
from gesso.proxy import metrics, workers
from helpers import NOVA, Served, alive, serving

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")

BODY = {"model": "nova", "prompt": "a lighthouse", "size": "320x320"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``gesso serve --workers 2 --emulator``, both workers answering; stopped (SIGKILL for its leftovers) after."""
    # (and the resource tracker); logging its start-up lines
    with serving(tmp_path, {}, "--workers", "2", "--emulator", "--log-level", "info", processes=3) as served:
        yield served


def requests_counted(text: str) -> float:
    """The image route's request counter, over every model name and status."""
    found = re.findall(r'^gesso_requests_total\{[^}]*route="generations"[^}]*\} (\S+)$', text, re.MULTILINE)
    return sum(float(value) for value in found)


@pytest.mark.slow  # starts gesso serve with two worker processes
def test_two_workers_report_one_sum_and_stop_with_their_parent(served):
    sent = 0
    scrapes = []
    with ThreadPoolExecutor(8) as pool:  # fresh connections, concurrent: both workers take some
        for batch in (6, 10, 8):
            statuses = list(pool.map(lambda _: served.call("POST", "/v1/images/generations", BODY)[0], range(batch)))
            assert statuses == [200] * batch
            sent += batch
            for _ in range(4):  # each scrape a new connection: either worker may answer it
                status, text = served.call("GET", "/metrics")
                assert status == 200
                scrapes.append(requests_counted(text))
                assert requests_counted(text) == sent, (scrapes, sent)
    assert "gesso_requests_in_flight 0.0" in text
    assert "gesso_max_concurrency 4096.0" in text  # the default, shown and exported
    log = served.log.read_text()
    assert "max concurrency 4096 calls in flight per process (set by the default)" in log
    shared = [_environ(pid).get(workers.ENV_METRICS_DIR) for pid in served.children()]
    directory = next(path for path in shared if path)
    assert Path(directory).is_dir() and len({p for p in shared if p}) == 1  # one private directory for both
    assert directory != str(served.log.parent / "stale") and not os.listdir(served.log.parent / "stale")
    assert len({name.rsplit("_", 1)[1] for name in os.listdir(directory) if name.startswith("gauge_livesum")}) == 2

    kids = served.children()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(30) == 0
    assert alive(kids) == [], "a process of gesso serve outlived it"
    assert not Path(directory).exists(), "the metrics directory was left behind"


@pytest.mark.slow  # starts gesso serve with two worker processes
def test_no_worker_outlives_a_parent_killed_outright(served):
    kids = served.children()
    assert len(kids) == 3
    served.process.send_signal(signal.SIGKILL)  # (SIGINT takes uvicorn's path for SIGTERM, tested above)
    served.process.wait(30)
    deadline = time.monotonic() + 5
    while alive(kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(kids) == [], "a worker still runs after its parent was killed"


@pytest.mark.slow  # starts gesso serve with two worker processes
def test_a_worker_killed_mid_call_keeps_its_counts_and_leaves_no_call_in_flight(tmp_path, aws, emulator):
    with serving(tmp_path, aws, "--workers", "2", processes=3) as served, ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(lambda _: served.call("POST", "/v1/images/generations", BODY)[0], range(8)))
        assert warm == [200] * 8 and requests_counted(served.call("GET", "/metrics")[1]) == 8
        emulator.inject("latency", seconds=1.0)
        pending = [pool.submit(_status, served) for _ in range(8)]
        deadline = time.monotonic() + 10
        while emulator.stats()["in_flight"] < 8:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        in_flight = re.search(r"^gesso_requests_in_flight (\S+)$", served.call("GET", "/metrics")[1], re.MULTILINE)
        assert in_flight is not None and float(in_flight.group(1)) == 8.0  # both workers' calls, summed
        # the worker with the most calls in flight (each worker's own gauge file, read as a scrape would)
        held = {pid: _own_in_flight(pid) for pid in served.children() if _environ(pid).get(workers.ENV_METRICS_DIR)}
        worker = max(held, key=lambda pid: held[pid])
        os.kill(worker, signal.SIGKILL)  # uvicorn starts another in its place
        answered = sum(future.result() == 200 for future in pending)
        assert answered == 8 - held[worker] < 8
        text = served.call("GET", "/metrics")[1]
        assert requests_counted(text) == 8 + answered  # the warm-up counts, the killed worker's share too, kept
        assert "gesso_requests_in_flight 0.0" in text  # its calls, cut off, no longer counted


@pytest.mark.slow  # starts gesso serve with two worker processes
def test_a_stopping_parent_refuses_new_connections_while_its_calls_in_flight_finish(tmp_path, aws, emulator):
    """A load balancer passes a refused connection to another replica; one the kernel queued on a socket no worker
    accepts any more would hang until the stop ended and then be reset (a 502 for a POST already sent)."""
    with serving(tmp_path, aws, "--workers", "2", processes=3) as served, ThreadPoolExecutor(1) as pool:
        emulator.inject("latency", seconds=3.0)
        pending = pool.submit(_status, served)
        deadline = time.monotonic() + 10
        while emulator.stats()["in_flight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        served.process.send_signal(signal.SIGTERM)
        port = int(served.url.rsplit(":", 1)[1])
        deadline, refused = time.monotonic() + 2, False
        while not refused and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                time.sleep(0.05)
            except ConnectionRefusedError:
                refused = True
        assert refused, "a stopping gesso serve still takes connections"
        assert pending.result() == 200  # the call in flight finished
        assert served.process.wait(30) == 0


def test_a_worker_ended_but_not_yet_collected_counts_as_stopped(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])  # ends at once; not collected until wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{ended.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gauge_file = tmp_path / f"gauge_livesum_{ended.pid}.db"
    gauge_file.write_bytes(b"")  # the live gauges such a worker leaves (prometheus_client removes the file)
    try:
        metrics.forget_stopped(str(tmp_path))
        assert not gauge_file.exists()  # a scrape right after a worker is killed no longer counts its calls
    finally:
        ended.wait()


def _status(served: Served) -> int:
    try:
        return served.call("POST", "/v1/images/generations", BODY)[0]
    except OSError:  # its worker was killed
        return 0


def _own_in_flight(pid: int) -> float:
    from prometheus_client.multiprocess import MultiProcessCollector

    path = Path(_environ(pid)[workers.ENV_METRICS_DIR]) / f"gauge_livesum_{pid}.db"
    for metric in MultiProcessCollector.merge([str(path)]):
        if metric.name == "gesso_requests_in_flight":
            return sum(sample.value for sample in metric.samples)
    return 0.0


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


# -- the limit on calls in flight --------------------------------------------------------------------------------


def test_the_limit_is_the_flag_else_the_environment_else_the_config_else_the_default(monkeypatch):
    monkeypatch.delenv(workers.ENV_CONCURRENCY, raising=False)
    assert workers.max_concurrency(None, None) == (workers.DEFAULT_MAX_CONCURRENCY, "the default")
    assert workers.max_concurrency(None, 300) == (300, "general_settings.max_concurrency")
    monkeypatch.setenv(workers.ENV_CONCURRENCY, "2000")
    assert workers.max_concurrency(None, 300) == (2000, "GESSO_MAX_CONCURRENCY")
    assert workers.max_concurrency(64, 300) == (64, "--max-concurrency")
    monkeypatch.setenv(workers.ENV_CONCURRENCY, "lots")
    with pytest.raises(workers.SettingError, match="GESSO_MAX_CONCURRENCY: must be a positive whole number"):
        workers.max_concurrency(None, None)


@pytest.mark.slow  # starts gesso serve
def test_the_limit_bounds_the_calls_sent_and_is_exported(tmp_path, aws, emulator):
    emulator.inject("latency", seconds=0.6)
    with (
        serving(tmp_path, aws, "--max-concurrency", "3", "--log-level", "info") as served,
        ThreadPoolExecutor(8) as pool,
    ):
        statuses = list(pool.map(lambda _: served.call("POST", "/v1/images/generations", BODY)[0], range(8)))
        assert statuses == [200] * 8
        assert emulator.stats()["max_in_flight"] == 3  # the other five waited their turn in the proxy
        assert "gesso_max_concurrency 3.0" in served.call("GET", "/metrics")[1]
        assert "max concurrency 3 calls in flight per process (set by --max-concurrency)" in served.log.read_text()


def test_a_limit_below_one_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model_list": []}))
    done = subprocess.run([sys.executable, "-m", "gesso", "serve", "--config", str(tmp_path / "config.yaml"),
                           "--max-concurrency", "0"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--max-concurrency: must be a positive whole number, not '0'" in done.stderr


@pytest.mark.parametrize("value", [0, -5, "many", 2.5, True])
def test_a_configured_limit_is_a_positive_whole_number(value):
    config = {"model_list": [{"model_name": "nova", "litellm_params": {"model": NOVA}}],
              "general_settings": {"max_concurrency": value}}  # fmt: skip
    with pytest.raises(proxy_config.ConfigError, match="general_settings.max_concurrency: must be a positive"):
        proxy_config.parse(config)
    config["general_settings"]["max_concurrency"] = 1000
    assert proxy_config.parse(config).max_concurrency == 1000

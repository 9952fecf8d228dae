"""The deployment's topology run for real, without containers: PostgreSQL, two ``gesso serve --workers 2``
replicas and nginx (the OS's, on ``deploy/nginx.conf`` as ``deploy/compose.yaml`` mounts it, only the addresses
swapped for loopback ports and the servers' ``resolve`` dropped), under continuous load from the ``openai``
client; the model is the emulator, at 2 s a call.

1. **Rolling restart** (60 s, 32 callers, the client's retries off so that any failure counts): each replica in
   turn is stopped (SIGTERM to its PID 1, as an orchestrator does), drains, and is started again once the other
   serves. Checked: no request failed; every answer states a finite cost (``x-gesso-response-cost``: an answer
   without one is a failed request, so the spend check below cannot pass on nothing); every answered request has
   exactly one spend row (by its ``x-request-id``) and no other row is a success; the key's spend is the sum of
   the answers' costs; once the replicas have stopped, nothing is left reserved and no lease is left on the key.
2. **A replica killed outright** (SIGKILL to its whole process group, as a crashed container, 30 s, 32 callers,
   the client's default retries): reported, with the answers callers saw (nginx's 502 for the calls the killed
   replica had taken) and whether the client's retry of each succeeded. Its unrecorded calls (the emulator
   answered them, no spend row holds them) are counted too.

    bash .ci/postgres.sh start   # then: GESSO_TEST_POSTGRES_URL=... .venv/bin/python bench/rolling_restart.py

It needs nginx (``apt-get install nginx-light``) and to run as root (nginx's temporary directories are the
system's); ``.ci/run`` runs it, and it exits non-zero when a check fails. ``--json FILE`` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
from gesso_bench import free_port, stop, throwaway_postgres, wait_listening

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
MASTER_KEY = "sk-gesso-rolling-restart-master"
BODY = {"model": "nova", "prompt": "a lighthouse at dusk", "size": "320x320", "response_format": "b64_json"}


def render_nginx(text: str, replicas: list[int], listen: int) -> str:
    """``deploy/nginx.conf`` with the two replicas' addresses and its listener swapped for loopback ports, and
    nothing else changed (but ``resolve``: an address needs no lookup, and the OS's nginx may predate it)."""
    swaps = {"server gesso-1:4000 resolve ": f"server 127.0.0.1:{replicas[0]} ",
             "server gesso-2:4000 resolve ": f"server 127.0.0.1:{replicas[1]} ",
             "listen 8080;": f"listen 127.0.0.1:{listen};"}  # fmt: skip
    for old, new in swaps.items():
        if text.count(old) != 1:
            raise SystemExit(f"deploy/nginx.conf: expected {old!r} once")
        text = text.replace(old, new)
    return text


def write_config(path: Path, emulator_port: int, database_url: str) -> None:
    path.write_text(
        f"""model_list:
  - model_name: nova
    litellm_params:
      model: bedrock/amazon.nova-canvas-v1:0
      aws_bedrock_runtime_endpoint: http://127.0.0.1:{emulator_port}
      aws_access_key_id: GESSOEMULATORKEY
      aws_secret_access_key: gesso-emulator-secret-key
      aws_region_name: us-east-1
general_settings:
  master_key: {MASTER_KEY}
  database_url: {database_url}
  graceful_timeout: 30
"""
    )


def get(url: str, key: str | None = None, body: dict | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, None


class Replica:
    """One ``gesso serve --workers 2``, its own process group (so SIGKILL can take all of it, as a container's
    end does); SIGTERM goes to its PID 1 only, as an orchestrator sends it."""

    def __init__(self, name: str, port: int, config: Path, work: Path) -> None:
        self.name, self.port, self.config, self.log = name, port, config, work / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; the seconds until its readiness route answers 200."""
        began = time.monotonic()
        with self.log.open("ab") as out:
            command = [sys.executable, "-m", "gesso", "serve", "--config", str(self.config), "--port", str(self.port),
                       "--workers", "2"]  # fmt: skip
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_listening(self.port, self.process, self.name, self.log, 120)
        while get(f"http://127.0.0.1:{self.port}/health/readiness")[0] != 200:
            time.sleep(0.05)
        return time.monotonic() - began

    def terminate(self) -> tuple[float, int]:
        """SIGTERM; the seconds it took to drain and exit, and its exit status."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(90)
        return time.monotonic() - began, code

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process, 60)


#: the answers one call saw (each try's status), set per call: httpx2's hooks run in the call's task
SEEN: contextvars.ContextVar[list[int]] = contextvars.ContextVar("seen")


async def record_status(response: httpx2.Response) -> None:
    with contextlib.suppress(LookupError):
        SEEN.get().append(response.status_code)


async def load(base: str, key: str, seconds: float, callers: int, retries: int,
               events: list[tuple[float, Any]]) -> list[dict]:  # fmt: skip
    """``callers`` loops, each one call after another for ``seconds``; ``events`` (seconds from the start, a
    blocking function) run on a thread meanwhile. Every call's outcome."""
    http = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=callers * 2), timeout=120,
                              event_hooks={"response": [record_status]})  # fmt: skip
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=retries, http_client=http)
    results: list[dict] = []
    start = time.monotonic()

    async def caller() -> None:
        while time.monotonic() - start < seconds:
            seen: list[int] = []
            SEEN.set(seen)
            began = time.monotonic()
            outcome: dict[str, Any] = {"start": began - start, "seen": seen}
            try:
                raw = await client.images.with_raw_response.generate(**BODY)
                image = raw.parse()
                assert image.data and image.data[0].b64_json
                cost = stated_cost(raw.headers)  # every answer states its cost, or it is a failure
                outcome.update(ok=True, request_id=raw.headers.get("x-request-id"), cost=cost)
            except Exception as exc:  # every failure is counted, whatever it is
                outcome.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:160]}")
            outcome["latency"] = time.monotonic() - began
            results.append(outcome)

    async def timeline() -> None:
        for at, action in events:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
            await asyncio.to_thread(action)

    await asyncio.gather(timeline(), *(caller() for _ in range(callers)))
    await client.close()
    return results


async def database_facts(url: str, keys: dict[str, str]) -> dict[str, Any]:
    """Per key alias: its spend and reserved, the leases still held on it, and its spend rows (request id,
    status, cost)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        facts: dict[str, Any] = {}
        for alias in keys:
            row = await conn.fetchrow("SELECT spend, reserved FROM gesso_keys WHERE key_alias = $1", alias)
            rows = await conn.fetch("SELECT request_id, status, cost FROM gesso_spend_logs WHERE key_alias = $1",
                                    alias)  # fmt: skip
            leases = await conn.fetchval("SELECT count(*) FROM gesso_reservations r JOIN gesso_keys k "
                                         "ON k.token_hash = r.token_hash WHERE k.key_alias = $1", alias)  # fmt: skip
            facts[alias] = {"spend": row["spend"], "reserved": row["reserved"], "leases": leases,
                            "rows": [(r["request_id"], r["status"], r["cost"]) for r in rows]}  # fmt: skip
        return facts
    finally:
        await conn.close()


def stated_cost(headers: Any) -> float:
    """The cost an answer states (``x-gesso-response-cost``); a ValueError when it states none, or no finite,
    positive number: such an answer counts as a failed request, so that the spend checks never pass on nothing."""
    stated = headers.get("x-gesso-response-cost")
    cost = float(stated) if stated is not None else math.nan
    if not (math.isfinite(cost) and cost > 0):
        raise ValueError(f"x-gesso-response-cost is {stated!r}, not a finite cost")
    return cost


def ledger_problems(results: list[dict], fact: dict[str, Any]) -> list[str]:
    """What the rolling restart's key shows wrong once the replicas have stopped: an answer without its one spend
    row (or a row without an answer), a row that is not a success, a spend that is not the answers' costs, a
    lease still held, or anything still reserved."""
    problems = []
    rows = fact["rows"]
    answered = {r["request_id"]: r["cost"] for r in results if r["ok"]}
    success = [request_id for request_id, status, _ in rows if status == "success"]
    cost = round(sum(answered.values()), 6)
    if sorted(success) != sorted(answered) or len(set(success)) != len(success):
        missing, extra = set(answered) - set(success), set(success) - set(answered)
        problems.append(f"rolling restart: spend rows do not match the answers ({len(missing)} answers without "
                        f"a row, {len(extra)} rows without an answer, {len(success)} for {len(answered)})")  # fmt: skip
    if len(rows) != len(success):
        problems.append(f"rolling restart: {len(rows) - len(success)} spend rows are not successes")
    if abs(fact["spend"] - cost) > 1e-6 or abs(sum(c for *_, c in rows) - cost) > 1e-6:
        problems.append(f"rolling restart: the key's spend {fact['spend']} is not the answers' {cost}")
    if fact["leases"] != 0:  # each replica stopped cleanly, giving back its leases on the key
        problems.append(f"rolling restart: {fact['leases']} leases still held after the replicas stopped")
    if abs(fact["reserved"]) > 1e-9:  # (a float column: what leases put back sums to 0 within 1e-15)
        problems.append(f"rolling restart: {fact['reserved']} still reserved after the replicas stopped")
    return problems


def summarize(results: list[dict]) -> dict[str, Any]:
    ok = [r for r in results if r["ok"]]
    latencies = sorted(r["latency"] for r in ok)
    return {
        "requests": len(results),
        "answered": len(ok),
        "failed": len(results) - len(ok),
        "p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "max_s": round(latencies[-1], 3) if latencies else None,
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:5],
    }


@contextlib.contextmanager
def topology(work: Path, database_url: str) -> Iterator[tuple[str, list[Replica], int, subprocess.Popen]]:
    """The emulator (2 s a call), the schema migrated (``gesso db upgrade``, before any replica starts), two
    replicas and nginx in front; yields nginx's URL, the replicas, the emulator's port and nginx's process."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx is needed: apt-get install nginx-light")
    emu_port, nginx_port = free_port(), free_port()
    ports = [free_port(), free_port()]
    config = work / "config.yaml"
    write_config(config, emu_port, database_url)
    subprocess.run([sys.executable, "-m", "gesso", "db", "upgrade", "--config", str(config)], check=True)
    replicas = [Replica(f"gesso-{i + 1}", port, config, work) for i, port in enumerate(ports)]
    with contextlib.ExitStack() as stack:
        emu_log = work / "emulator.log"
        with emu_log.open("ab") as out:
            emulator = subprocess.Popen([sys.executable, "-m", "gesso", "emulator", "--port", str(emu_port),
                                         "--latency", "2"], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        stack.callback(stop, emulator)
        wait_listening(emu_port, emulator, "the emulator", emu_log)
        for replica in replicas:
            stack.callback(replica.close)
            replica.start()
        conf = work / "nginx.conf"
        conf.write_text(render_nginx(NGINX_CONF.read_text(), ports, nginx_port))
        with (work / "nginx.out").open("ab") as out:
            proxy = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work), "-e", str(work / "nginx-error.log"),
                                      "-g", f"daemon off; pid {work / 'nginx.pid'};"],
                                     stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        stack.callback(lambda: (proxy.terminate(), proxy.wait(10)))
        wait_listening(nginx_port, proxy, "nginx", work / "nginx-error.log")
        yield f"http://127.0.0.1:{nginx_port}", replicas, emu_port, proxy


def emulator_calls(port: int) -> int:
    return int(get(f"http://127.0.0.1:{port}/_gesso/stats")[1]["requests"])


def run(args: argparse.Namespace, work: Path, database_url: str) -> tuple[dict[str, Any], list[str]]:
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, Python {platform.python_version()}, "
                                         f"{platform.machine()}"}  # fmt: skip
    problems: list[str] = []
    with topology(work, database_url) as (base, replicas, emu_port, _):
        keys = {}
        for alias in ("rolling", "killed"):
            status, made = get(f"{base}/key/generate", MASTER_KEY, {"key_alias": alias, "max_budget": 1000})
            assert status == 200, status
            keys[alias] = made["key"]

        # 1. the rolling restart: each replica stopped, drained and started again in turn, under load
        timings: dict[str, dict[str, float]] = {}

        def restart(replica: Replica) -> None:
            drain, code = replica.terminate()
            ready = replica.start()
            timings[replica.name] = {"drain_s": round(drain, 2), "exit_status": code, "ready_again_s": round(ready, 2)}

        third = args.seconds / 3
        results = asyncio.run(load(base, keys["rolling"], args.seconds, args.callers, 0,
                                   [(third, lambda: restart(replicas[0])),
                                    (2 * third, lambda: restart(replicas[1]))]))  # fmt: skip
        rolling = summarize(results) | {"replicas": timings}
        if rolling["failed"]:
            problems.append(f"rolling restart: {rolling['failed']} of {rolling['requests']} requests failed: "
                            f"{rolling['errors']}")  # fmt: skip
        if len(timings) != 2 or any(t["exit_status"] != 0 for t in timings.values()):
            problems.append(f"rolling restart: a replica did not stop cleanly: {timings}")
        report["rolling_restart"] = rolling

        # 2. one replica killed outright (its whole process group), then started again, under load; the client
        # retries as it does by default
        before = emulator_calls(emu_port)
        killed: dict[str, float] = {}

        def kill() -> None:
            replicas[1].kill()
            killed["killed_at_s"] = round(time.monotonic() - began, 2)

        def revive() -> None:
            killed["ready_again_s"] = round(replicas[1].start(), 2)

        began = time.monotonic()
        crash = asyncio.run(load(base, keys["killed"], args.kill_seconds, args.callers, 2,
                                 [(args.kill_seconds / 3, kill), (args.kill_seconds / 3 + 5, revive)]))  # fmt: skip
        provider_calls = emulator_calls(emu_port) - before
        saw_5xx = [r for r in crash if any(s >= 500 for s in r["seen"])]
        report["sigkill"] = (
            summarize(crash)
            | killed
            | {
                "calls_that_saw_a_5xx": len(saw_5xx),
                "statuses_seen": sorted({s for r in saw_5xx for s in r["seen"]}),
                "of_those_a_retry_succeeded": sum(r["ok"] for r in saw_5xx),
                "provider_calls": provider_calls,
            }
        )
        if not saw_5xx or not any(r["ok"] for r in saw_5xx):
            problems.append("sigkill: no caller saw the killed replica's calls fail and then succeed on a retry")
        for replica in replicas:  # a clean stop: each gives back what its leases hold
            replica.terminate()
    facts = asyncio.run(database_facts(database_url, keys))

    rows = facts["rolling"]["rows"]
    success = [request_id for request_id, status, _ in rows if status == "success"]
    report["rolling_restart"].update(
        spend_rows=len(rows), success_rows=len(success), key_spend=round(facts["rolling"]["spend"], 6),
        answers_cost=round(sum(r["cost"] for r in results if r["ok"]), 6),
        key_reserved_after_stop=round(facts["rolling"]["reserved"], 9) + 0.0,
        leases_after_stop=facts["rolling"]["leases"])  # fmt: skip
    problems += ledger_problems(results, facts["rolling"])
    crash_rows = facts["killed"]["rows"]
    crash_cost = round(sum(r["cost"] for r in crash if r["ok"]), 6)
    report["sigkill"].update(
        spend_rows=len(crash_rows), key_spend=round(facts["killed"]["spend"], 6), answers_cost=crash_cost,
        unrecorded_provider_calls=provider_calls - len(crash_rows),
        key_reserved_after_stop=round(facts["killed"]["reserved"], 6) + 0.0)  # fmt: skip
    if abs(facts["killed"]["spend"] - sum(c for *_, c in crash_rows)) > 1e-6:
        problems.append("sigkill: the key's spend is not the sum of its spend rows")
    return report, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="the rolling restart's load (default 60)")
    parser.add_argument("--kill-seconds", type=float, default=30, help="the SIGKILL run's load (default 30)")
    parser.add_argument("--callers", type=int, default=32, help="concurrent callers (default 32)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    server = os.environ.get("GESSO_TEST_POSTGRES_URL")
    if not server:
        raise SystemExit("needs GESSO_TEST_POSTGRES_URL (bash .ci/postgres.sh start)")
    with tempfile.TemporaryDirectory(prefix="gesso-rolling-") as tmp, \
            throwaway_postgres(server, "gesso_rolling") as database_url:  # fmt: skip
        work = Path(tmp)
        os.chmod(work, 0o755)  # nginx's workers (another user) read nothing here, but its master writes logs
        try:
            report, problems = run(args, work, database_url)
        except BaseException:
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            raise
        refused = (work / "nginx-error.log").read_text(errors="replace").count("Connection refused")
        report["nginx_refused_connections_passed_on"] = refused
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

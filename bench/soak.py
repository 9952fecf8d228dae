"""A soak with faults: thousands of image requests through two ``gesso serve`` replicas on one PostgreSQL
database, in front of a Bedrock emulator that throttles, fails and times out, with one replica killed mid-run.

    .venv/bin/python bench/soak.py --requests 20000 --clients 64 --seconds 600   # the larger, manual setting
    .venv/bin/python bench/soak.py                                               # the CI size (tests/test_soak.py)

The database is ``--database-url`` (an empty database, or one gesso already migrated), else a fresh database on
the server at ``$GESSO_TEST_POSTGRES_URL`` (``bash .ci/postgres.sh start`` prints one), dropped afterwards.

What runs, every part a process of its own on loopback:

- ``gesso emulator --verify-signatures`` with rate-based faults (``--fault KIND:rate=R``): ``--throttle`` (30%:
  ``ThrottlingException``), ``--errors`` (5%: ``InternalServerException``) and ``--timeouts`` (1%: half
  Bedrock's ``ModelTimeoutException``, half an answer held past the deployments' read timeout). The fractions are
  of all requests the emulator receives (each fault's rate is scaled for the ones tried before it).
- two ``gesso serve`` replicas on one database: model ``nova`` has two deployments on the emulator (so the proxy
  fails over between them), a master key, and two virtual keys made through the API: ``soak-tight``, whose
  budget covers a quarter of its requests, and ``soak-roomy``, whose budget covers all of them.
- ``--clients`` concurrent clients (raw HTTP/1.1 on keep-alive connections) send ``--requests`` generations
  (or as many as ``--seconds`` allows), round-robin over the live replicas and over the three keys. When
  ``--kill-at`` of the run is done, replica 0 is SIGKILLed; the requests it held fail at the client, which
  sends each again to a live replica (as a load balancer would). A replacement replica starts (``--no-restart``:
  none) and joins.

Checked at the end (each failure is listed in ``problems``): every request ended in a 200 with a PNG or in a
well-formed OpenAI error (408, 429 or 502: the faults; 429 ``budget_exceeded`` for the tight key), none hung;
every answered request (its ``x-request-id``) has its spend row, with the status the client saw; rows without an
answer are at most the attempts the kill cut off; no key spent more than its budget, and each key's spend is the
sum of its rows; each replica's RSS grew less than ``--max-rss-growth-mb`` between its warm-up (its first
``--warmup`` answers: 16, which a replacement joining late in a short run still reaches) and its end.
:func:`run` returns the figures; :func:`render` prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gesso_bench import (
    Conn,
    Gone,
    free_port,
    http,
    image_request,
    no_proxy_env,
    stop,
    throwaway_postgres,
    wait_listening,
)

NOVA = "bedrock/amazon.nova-canvas-v1:0"
PRICE = 0.04  # Nova Canvas, standard quality, up to 1024x1024
#: the deployments' read timeout, and how long a "hung" answer is held (past it)
READ_TIMEOUT, HANG_SECONDS = 3.0, 8.0
#: the statuses a fault (or a budget) may end a request with
FAULT_STATUSES = {408, 429, 502}


@dataclasses.dataclass
class Settings:
    requests: int = 1500
    clients: int = 64
    seconds: float = 120.0  # no request is started after this
    throttle: float = 0.30
    errors: float = 0.05
    timeouts: float = 0.01
    kill_at: float = 0.4  # the fraction of the run (requests or seconds) after which replica 0 is killed; 0: none
    restart: bool = True
    database_url: str | None = None
    max_rss_growth_mb: float = 150.0
    warmup: int = 16  # a replica's answers before its warm RSS is read
    seed: int = 1
    size: str = "320x320"
    workdir: Path | None = None  # configs and logs (default: a temporary directory)


# -- processes ----------------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """The resident set size of a process, in MB (Linux /proc), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclasses.dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path
    rss_cold: float | None = None  # when it listens
    rss_warm: float | None = None  # after its first `warmup` answers
    rss_end: float | None = None  # at the end of the run, or just before it was killed
    rss_peak: float = 0.0
    answered: int = 0
    killed: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def fault_specs(settings: Settings) -> list[str]:
    """The emulator's ``--fault`` flags: each rate scaled by what the faults before it left, so the fractions
    are of all requests (a latency fault does not stop the ones after it; an answer does)."""
    hang, timeout = settings.timeouts / 2, settings.timeouts / 2
    left = 1.0 - timeout
    error = settings.errors / left if left > 0 else 0.0
    left -= settings.errors
    throttle = settings.throttle / left if left > 0 else 0.0
    specs = []
    if hang:
        specs.append(f"latency:rate={hang:.6f},seconds={HANG_SECONDS}")
    for kind, rate in (("timeout", timeout), ("error", error), ("throttle", throttle)):
        if rate:
            specs.append(f"{kind}:rate={min(rate, 1.0):.6f}")
    return specs


def write_config(path: Path, emulator_url: str, master: str, database_url: str) -> None:
    from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY

    lines = ["model_list:"]
    for ident in ("nova-a", "nova-b"):
        lines += [
            "  - model_name: nova",
            f"    model_info: {{id: {ident}}}",
            "    litellm_params:",
            f"      model: {NOVA}",
            f"      aws_bedrock_runtime_endpoint: {emulator_url}",
            f"      aws_access_key_id: {EMULATOR_ACCESS_KEY}",
            f"      aws_secret_access_key: {EMULATOR_SECRET_KEY}",
            "      aws_region_name: us-east-1",
            f"      timeout: {READ_TIMEOUT}",
            "      max_retries: 1",
        ]
    lines += [
        "router_settings: {cooldown_time: 1}",
        "general_settings:",
        f"  master_key: {master}",
        f"  database_url: {json.dumps(database_url)}",
    ]
    path.write_text("\n".join(lines) + "\n")


# -- the load -----------------------------------------------------------------------------------------------------


def well_formed(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """What is wrong with an answer (None: a 200 with a PNG, or an OpenAI error with a fault's status)."""
    if not headers.get("x-request-id"):
        return f"HTTP {status} without x-request-id"
    try:
        data = json.loads(body)
    except ValueError:
        return f"HTTP {status}: not JSON: {body[:200]!r}"
    if status == 200:
        import base64

        try:
            image = base64.b64decode(data["data"][0]["b64_json"])
        except (KeyError, IndexError, TypeError, ValueError):
            return f"HTTP 200 without an image: {body[:200]!r}"
        return None if image.startswith(b"\x89PNG\r\n\x1a\n") else "HTTP 200: the image is not a PNG"
    error = data.get("error") if isinstance(data, dict) else None
    if not (isinstance(data, dict) and set(data) == {"error"} and isinstance(error, dict)):
        return f"HTTP {status}: not an OpenAI error: {body[:200]!r}"
    # OpenAI's four fields; a budget's or a rate limit's refusal also names the level that refused (``level``)
    extra = {"level"} if error.get("type") in ("budget_exceeded", "rate_limit_error") else set()
    if set(error) - extra != {"message", "type", "param", "code"} or not isinstance(error["message"], str):
        return f"HTTP {status}: an error without message, type, param and code: {body[:200]!r}"
    if status not in FAULT_STATUSES:
        return f"HTTP {status} is no fault's status: {body[:300]!r}"
    if "Traceback" in error["message"]:
        return f"HTTP {status}: a traceback in the message"
    return None


@dataclasses.dataclass
class Tally:
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # (status, code)
    answered: dict[str, int] = dataclasses.field(default_factory=dict)  # request id -> status
    by_key: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    attempts: int = 0
    cut_off: int = 0  # attempts the kill cut off (no answer)
    resent: int = 0  # requests sent again to another replica after the kill cut them off
    finished: int = 0
    started: int = 0


async def load(settings: Settings, replicas: list[Replica], callers: list[tuple[str, str]], spawn: Any) -> Tally:
    """Send the requests; kill replica 0 part way (``spawn()`` starts its replacement); return the tally."""
    tally = Tally()
    for alias, _ in callers:
        tally.by_key[alias] = collections.Counter()
    alive = list(replicas)
    began = time.monotonic()
    killed = asyncio.Event()

    def progress() -> float:
        by_time = (time.monotonic() - began) / settings.seconds if settings.seconds else 0.0
        return max(tally.finished / settings.requests, by_time)

    async def sample() -> None:
        while True:
            for replica in replicas:
                if not replica.killed:
                    rss = rss_mb(replica.proc.pid)
                    if rss is not None:
                        replica.rss_peak = max(replica.rss_peak, rss)
            await asyncio.sleep(0.25)

    async def killer() -> None:
        if not settings.kill_at:
            return
        while progress() < settings.kill_at:
            await asyncio.sleep(0.02)
        victim = replicas[0]
        victim.rss_end = rss_mb(victim.proc.pid)
        alive.remove(victim)
        victim.killed = True
        victim.proc.send_signal(signal.SIGKILL)
        killed.set()
        if settings.restart:
            replacement = await asyncio.to_thread(spawn)
            replicas.append(replacement)
            alive.append(replacement)

    async def client(number: int) -> None:
        conns: dict[int, Conn] = {}
        while True:
            index = tally.started
            if index >= settings.requests or (settings.seconds and time.monotonic() - began > settings.seconds):
                break
            tally.started += 1
            alias, key = callers[index % len(callers)]
            prompt = f"soak {index} from client {number}"
            for attempt in range(4):
                replica = alive[(index + attempt) % len(alive)]
                conn = conns.get(replica.port)
                if conn is not None and time.monotonic() - conn.used > 2.0:  # before the server drops it (5 s)
                    conn.close()
                    conn = None
                tally.attempts += 1
                try:
                    if conn is None:
                        conn = conns[replica.port] = await Conn.open(replica.port)
                    status, headers, body = await asyncio.wait_for(
                        conn.send(
                            image_request(replica.port, key, {"model": "nova", "prompt": prompt, "size": settings.size})
                        ),
                        60,
                    )
                except (Gone, asyncio.TimeoutError) as exc:
                    conns.pop(replica.port, None)
                    if conn is not None:
                        conn.close()
                    if replica.killed:
                        tally.cut_off += 1
                        tally.resent += 1
                        continue
                    tally.problems.append(f"request {index} to live replica {replica.name}: {exc!r}")
                    break
                replica.answered += 1
                if replica.answered == settings.warmup and replica.rss_warm is None:
                    replica.rss_warm = rss_mb(replica.proc.pid)
                if headers.get("connection", "").lower() == "close":
                    conns.pop(replica.port, None)
                    conn.close()
                wrong = well_formed(status, headers, body)
                if wrong:
                    tally.problems.append(f"request {index} via {replica.name}: {wrong}")
                request_id = headers.get("x-request-id")
                if request_id:
                    tally.answered[request_id] = status
                code = "ok" if status == 200 else _code(body)
                tally.outcomes[(status, code)] += 1
                tally.by_key[alias][(status, code)] += 1
                break
            else:
                tally.problems.append(f"request {index}: no replica answered in 4 attempts")
            tally.finished += 1
        for conn in conns.values():
            conn.close()

    sampler = asyncio.ensure_future(sample())
    kill = asyncio.ensure_future(killer())
    try:
        await asyncio.gather(*(client(n) for n in range(settings.clients)))
        if not kill.done():  # the run ended before the kill point (too few requests): kill it now
            kill.cancel()
        else:
            await kill
    finally:
        sampler.cancel()
    return tally


def _code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


# -- the run ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(url: str | None):
    """``url`` as given, or a fresh database on $GESSO_TEST_POSTGRES_URL's server (dropped afterwards)."""
    if url:
        yield url
        return
    server = os.environ.get("GESSO_TEST_POSTGRES_URL")
    if not server:
        raise SystemExit("soak: give --database-url, or set GESSO_TEST_POSTGRES_URL (bash .ci/postgres.sh start)")
    with throwaway_postgres(server, "gesso_soak") as url:
        yield url


async def read_store(url: str, hashes: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from gesso.proxy.store import Store

    store = Store(url)
    try:
        rows = await store.spend_logs(limit=10**9)
        keys = {alias: await store.get_key(token_hash) for alias, token_hash in hashes.items()}
    finally:
        await store.close()
    return rows, keys


def run(settings: Settings) -> dict[str, Any]:
    """One soak; the figures (``problems`` lists every check that failed)."""
    from gesso.proxy.store import hash_key

    with contextlib.ExitStack() as stack:
        workdir = settings.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gesso-soak-")))
        database_url = stack.enter_context(fresh_database(settings.database_url))
        procs: list[subprocess.Popen] = []

        @stack.callback
        def _stop_all() -> None:
            for proc in procs:
                stop(proc, wait=15)

        def start(name: str, args: list[str]) -> tuple[subprocess.Popen, Path, int]:
            port = free_port()
            log = workdir / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "gesso", *args, "--port", str(port)], stdout=out,
                                        stderr=subprocess.STDOUT, env=no_proxy_env())  # fmt: skip
            procs.append(proc)
            wait_listening(port, proc, log.stem, log)
            return proc, log, port

        faults = fault_specs(settings)
        fault_args = [a for spec in faults for a in ("--fault", spec)]
        _, _, emu_port = start("emulator", ["emulator", "--verify-signatures", "--fault-seed", str(settings.seed),
                                            *fault_args])  # fmt: skip
        emulator_url = f"http://127.0.0.1:{emu_port}"
        master = "sk-soak-master-" + secrets.token_urlsafe(12)
        config = workdir / "proxy.yaml"
        write_config(config, emulator_url, master, database_url)
        serve = ["serve", "--config", str(config), "--log-level", "warning"]

        def spawn(index: int = 0) -> Replica:
            name = f"replica-{index}"
            proc, log, port = start(name, serve)
            replica = Replica(name, port, proc, log)
            replica.rss_cold = rss_mb(proc.pid)
            return replica

        replicas = [spawn(0), spawn(1)]  # one after the other: the first migrates the database
        counter = iter(range(2, 100))
        per_key = max(1, settings.requests // 3)
        budgets = {"soak-tight": round(PRICE * max(3, per_key // 4), 6), "soak-roomy": round(PRICE * per_key * 2, 6)}
        callers = [("master", master)]
        hashes = {}
        for alias, budget in budgets.items():
            status, made = http("POST", replicas[0].url + "/key/generate", {"key_alias": alias, "max_budget": budget},
                                key=master)  # fmt: skip
            if status != 200:
                raise RuntimeError(f"/key/generate answered {status}: {made}")
            callers.append((alias, made["key"]))
            hashes[alias] = hash_key(made["key"])

        started = time.monotonic()
        tally = asyncio.run(load(settings, replicas, callers, lambda: spawn(next(counter))))
        wall = time.monotonic() - started
        for replica in replicas:
            if not replica.killed:
                replica.rss_end = rss_mb(replica.proc.pid)
        _, fired = http("GET", emulator_url + "/_gesso/faults")
        _, emulator_stats = http("GET", emulator_url + "/_gesso/stats")
        for replica in replicas:
            if not replica.killed:
                stop(replica.proc, wait=15)
        rows, keys = asyncio.run(read_store(database_url, hashes))
        return summarize(settings, tally, replicas, rows, keys, budgets, hashes, fired, emulator_stats, wall, faults)


def summarize(
    settings: Settings, tally: Tally, replicas: list[Replica], rows: list[dict[str, Any]], keys: dict[str, Any],
    budgets: dict[str, float], hashes: dict[str, str], fired: Any, emulator_stats: Any, wall: float,
    faults: list[str],
) -> dict[str, Any]:  # fmt: skip
    problems = list(tally.problems)
    by_id = {row["request_id"]: row for row in rows}
    missing = [rid for rid in tally.answered if rid not in by_id]
    if missing:
        problems.append(f"{len(missing)} answered requests have no spend row, e.g. {missing[:3]}")
    mismatched = [rid for rid, status in tally.answered.items() if rid in by_id and by_id[rid]["status_code"] != status]
    if mismatched:
        problems.append(f"{len(mismatched)} spend rows disagree with the status answered, e.g. {mismatched[:3]}")
    unanswered = len(rows) - (len(tally.answered) - len(missing))
    if unanswered > tally.cut_off:
        problems.append(f"{unanswered} spend rows of requests nobody was answered, more than the {tally.cut_off} "
                        "attempts the kill cut off")  # fmt: skip
    finished = tally.finished
    if finished != tally.started:
        problems.append(f"{tally.started - finished} requests never finished")
    key_figures = {}
    for alias, key in keys.items():
        costs = sum(float(r["cost"]) for r in rows if r["token_hash"] == hashes[alias])
        figures = {
            "max_budget": budgets[alias],
            "spend": round(key.spend, 6),
            "reserved": round(key.reserved, 6) + 0.0,  # not -0.0
            "rows_cost": round(costs, 6),
            "budget_exceeded": tally.by_key[alias][(429, "budget_exceeded")],
        }
        key_figures[alias] = figures
        if key.spend > budgets[alias] + 1e-9 or key.spend + key.reserved > budgets[alias] + 1e-9:
            problems.append(f"key {alias} overspent: {figures}")
        if abs(costs - key.spend) > 1e-6:
            problems.append(f"key {alias}: spend {key.spend} is not the sum of its rows' costs {costs}")
    tight_requests = sum(tally.by_key["soak-tight"].values())
    if tight_requests > 2 * (budgets["soak-tight"] / PRICE) and not key_figures["soak-tight"]["budget_exceeded"]:
        problems.append("the tight key never ran out of budget")
    memory = {}
    for replica in replicas:
        growth = None
        if replica.rss_warm is not None and replica.rss_end is not None:
            growth = round(replica.rss_end - replica.rss_warm, 1)
            if growth > settings.max_rss_growth_mb:
                problems.append(f"{replica.name}: RSS grew {growth} MB (limit {settings.max_rss_growth_mb})")
        memory[replica.name] = {
            "killed": replica.killed, "answered": replica.answered,
            **{k: None if v is None else round(v, 1) for k, v in (
                ("rss_cold_mb", replica.rss_cold), ("rss_warm_mb", replica.rss_warm),
                ("rss_end_mb", replica.rss_end), ("rss_peak_mb", replica.rss_peak or None))},
            "growth_mb": growth,
        }  # fmt: skip
    outcomes = {f"{status} {code}": count for (status, code), count in sorted(tally.outcomes.items())}
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
        "emulator_faults": faults,
        "requests": tally.started,
        "finished": finished,
        "succeeded": tally.outcomes.get((200, "ok"), 0),
        "outcomes": outcomes,
        "attempts": tally.attempts,
        "cut_off_by_kill": tally.cut_off,
        "resent_after_kill": tally.resent,
        "answered": len(tally.answered),
        "spend_rows": len(rows),
        "rows_without_answer": unanswered,
        "keys": key_figures,
        "replicas": memory,
        "emulator": {
            "requests": (emulator_stats or {}).get("requests"),
            "faults_fired": {f["kind"]: f["fired"] for f in fired or []},
        },
        "wall_s": round(wall, 1),
        "requests_per_s": round(finished / wall, 1) if wall else None,
        "problems": problems,
    }


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"soak: {result['requests']} requests, {s['clients']} clients, 2 replicas on PostgreSQL "
        f"(replica-0 SIGKILLed at {s['kill_at']:.0%}{', replaced' if s['restart'] else ''}), "
        f"{result['wall_s']} s, {result['requests_per_s']} requests/s",
        f"  emulator faults: {', '.join(result['emulator_faults'])}",
        f"  emulator: {result['emulator']['requests']} requests, fired {result['emulator']['faults_fired']}",
        f"  outcomes: {result['succeeded']} succeeded; "
        + ", ".join(f"{k}: {v}" for k, v in result["outcomes"].items() if not k.startswith("200")),
        f"  attempts {result['attempts']}: {result['cut_off_by_kill']} cut off by the kill, each sent again "
        f"({result['resent_after_kill']})",
        f"  spend rows {result['spend_rows']} = {result['answered']} answered + {result['rows_without_answer']} "
        "committed by the killed replica but not answered; every answered request's row found",
    ]
    for alias, k in result["keys"].items():
        lines.append(
            f"  key {alias}: spend {k['spend']:.2f} of {k['max_budget']:.2f} USD (+{k['reserved']:.2f} held), "
            f"rows sum {k['rows_cost']:.2f}, {k['budget_exceeded']} refused for budget"
        )
    for name, m in result["replicas"].items():
        lines.append(
            f"  {name}: {m['answered']} answered; RSS cold {m['rss_cold_mb']} MB, warm {m['rss_warm_mb']} MB, "
            f"{'at kill' if m['killed'] else 'end'} {m['rss_end_mb']} MB (growth {m['growth_mb']} MB), "
            f"peak {m['rss_peak_mb']} MB"
        )
    lines.append("  problems: " + ("none" if not result["problems"] else "\n    " + "\n    ".join(result["problems"])))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Settings()
    parser.add_argument("--requests", type=int, default=d.requests, help="requests to send (default %(default)s)")
    parser.add_argument("--clients", type=int, default=d.clients, help="concurrent clients (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=d.seconds, help="start no request after this (default "
                        "%(default)s)")  # fmt: skip
    parser.add_argument("--throttle", type=float, default=d.throttle, help="fraction throttled (default %(default)s)")
    parser.add_argument("--errors", type=float, default=d.errors, help="fraction answered 500 (default %(default)s)")
    parser.add_argument("--timeouts", type=float, default=d.timeouts, help="fraction timing out (default "
                        "%(default)s)")  # fmt: skip
    parser.add_argument("--kill-at", type=float, default=d.kill_at, help="kill replica 0 after this fraction of the "
                        "run (default %(default)s; 0: never)")  # fmt: skip
    parser.add_argument("--no-restart", action="store_true", help="do not start a replacement replica")
    parser.add_argument("--database-url", help="postgresql://... (default: a fresh database on "
                        "$GESSO_TEST_POSTGRES_URL)")  # fmt: skip
    parser.add_argument("--max-rss-growth-mb", type=float, default=d.max_rss_growth_mb)
    parser.add_argument("--warmup", type=int, default=d.warmup, help="a replica's answers before its warm RSS is "
                        "read (default %(default)s)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=d.seed, help="the emulator's fault seed")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    settings = Settings(
        requests=args.requests, clients=args.clients, seconds=args.seconds, throttle=args.throttle,
        errors=args.errors, timeouts=args.timeouts, kill_at=args.kill_at, restart=not args.no_restart,
        database_url=args.database_url, max_rss_growth_mb=args.max_rss_growth_mb, warmup=args.warmup,
        seed=args.seed, workdir=args.workdir,
    )  # fmt: skip
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result = run(settings)
    print(render(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""gesso's speed goals, measured against raw boto3 in the same run (not part of the test suite).

    .venv/bin/python bench/run.py            # prints one table; --help for the knobs

1. Per-call cost: ``gesso.image_generation`` vs a raw boto3 ``invoke_model`` of the same body (plus the
   ``read()`` and ``json.loads`` any caller needs), against the same emulator running in its own
   process. The two are interleaved in rounds so drift hits both alike. Goal: ratio <= 0.70.
2. ``import gesso`` wall time in a fresh interpreter, and whether boto3 came with it. Goal: <= 50 ms,
   no boto3.
3. Async concurrency: 2,000 ``aimage_generation`` calls against an emulator that takes 2 s per call, vs raw
   boto3 on a 2,000-thread pool, in one event loop as a proxy runs them (each side's first round, which opens
   its connections, is not timed). Goals: wall-time ratio <= 0.70, at most 32 threads in the process while
   the calls are in flight; the peak RSS growth from before the first round is reported (goal <= 300 MB),
   and so is the emulator's own capacity (the most requests it held at once).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from gesso_bench import free_port, pin, wait_listening

MODEL = "bedrock/amazon.nova-canvas-v1:0"
MODEL_ID = "amazon.nova-canvas-v1:0"
KEY, SECRET = "BENCHKEY", "bench-secret"
PROMPT = "A cute baby sea otter"


CLIENT_CPU, EMULATOR_CPU = 0, 1


@contextmanager
def emulator(*args: str):
    """``gesso emulator`` in its own process on its own core, so its CPU does not share the client's."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gesso", "emulator", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: pin(EMULATOR_CPU),
    )
    try:
        proc.stdout.readline()
        wait_listening(port, proc, "the emulator", seconds=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def aws(url: str) -> dict:
    return {
        "aws_bedrock_runtime_endpoint": url,
        "aws_access_key_id": KEY,
        "aws_secret_access_key": SECRET,
        "aws_region_name": "us-east-1",
    }


def raw_client(url: str, pool: int = 10):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=300, max_pool_connections=pool),
    )


def per_call(calls: int, rounds: int, size: str | None) -> dict:
    """``size=None`` is the seed's call: the prompt alone, so Nova's default 1024x1024."""
    import gesso

    body: dict = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": PROMPT}}
    sized: dict = {}
    if size:
        width, height = (int(v) for v in size.split("x"))
        body["imageGenerationConfig"] = {"width": width, "height": height}
        sized = {"size": size}
    with emulator() as url:
        client = raw_client(url)
        kwargs = aws(url)

        def raw() -> None:
            response = client.invoke_model(modelId=MODEL_ID, body=json.dumps(body), contentType="application/json")
            json.loads(response["body"].read())

        def ours() -> None:
            gesso.image_generation(MODEL, PROMPT, **sized, **kwargs)

        for _ in range(20):  # warm both: clients, schema validators, the emulator's image cache
            raw()
            ours()
        per_round = max(calls // rounds, 1)
        raw_times, gesso_times = [], []
        for index in range(rounds):
            order = ((raw, raw_times), (ours, gesso_times))
            for fn, sink in order if index % 2 == 0 else reversed(order):  # ABBA: drift hits both alike
                start = time.perf_counter()
                for _ in range(per_round):
                    fn()
                sink.append((time.perf_counter() - start) / per_round)
    raw_ms, gesso_ms = statistics.median(raw_times) * 1000, statistics.median(gesso_times) * 1000
    return {"raw_ms": raw_ms, "gesso_ms": gesso_ms, "ratio": gesso_ms / raw_ms, "calls": per_round * rounds}


def import_time(runs: int) -> dict:
    code = (
        "import time, sys; t = time.perf_counter(); import gesso; d = time.perf_counter() - t; "
        "print(d, 'boto3' in sys.modules)"
    )
    boto_code = "import time; t = time.perf_counter(); import boto3; print(time.perf_counter() - t)"
    samples, boto = [], []
    with_boto3 = False
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        samples.append(float(out[0]))
        with_boto3 |= out[1] == "True"
        boto.append(float(subprocess.run([sys.executable, "-c", boto_code], capture_output=True, text=True).stdout))
    return {
        "gesso_ms": statistics.median(samples) * 1000,
        "boto3_imported": with_boto3,
        "boto3_ms": statistics.median(boto) * 1000,
    }


def _threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading_count()


def threading_count() -> int:
    import threading

    return threading.active_count()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def concurrency(calls: int, latency: float, repeats: int) -> dict:
    """Median wall time over ``repeats`` runs of each side, alternating, on one emulator process; the
    process's threads while gesso's calls are in flight, and its peak RSS growth during them."""
    import resource
    import urllib.request

    import gesso
    from gesso_bedrock import transport

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * calls + 256)), hard))
    transport.MAX_CONCURRENCY = max(transport.MAX_CONCURRENCY, calls)  # GESSO_MAX_CONCURRENCY, as a proxy would set
    with emulator("--latency", str(latency)) as url:
        kwargs = aws(url)
        gesso.image_generation(MODEL, PROMPT, size="320x320", **kwargs)  # the client exists before timing
        threads: list[int] = []
        rss: list[float] = []

        async def many():
            tasks = [
                asyncio.create_task(gesso.aimage_generation(MODEL, PROMPT, size="320x320", **kwargs))
                for _ in range(calls)
            ]
            await asyncio.sleep(latency / 2)  # all are in flight by now, waiting on the emulator
            threads.append(_threads())
            rss.append(_rss_mb())
            return await asyncio.gather(*tasks)

        client = raw_client(url, pool=calls)
        body = json.dumps(
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": PROMPT},
                "imageGenerationConfig": {"width": 320, "height": 320},
            }
        )

        def raw() -> None:
            json.loads(client.invoke_model(modelId=MODEL_ID, body=body)["body"].read())

        def raw_batch() -> float:
            with concurrent.futures.ThreadPoolExecutor(calls) as pool:
                start = time.perf_counter()
                list(pool.map(lambda _: raw(), range(calls)))
                return time.perf_counter() - start

        async def rounds() -> tuple[list[float], list[float], list[float]]:
            # one event loop for every round, as a proxy runs: both sides open their connections in an
            # untimed first round and reuse them after (raw boto3 keeps its pool across rounds too)
            loop = asyncio.get_running_loop()
            before = _rss_mb()  # growth counts from before the first round, connections and all
            await many()
            growth = [max(rss[-1], _rss_mb()) - before]
            await loop.run_in_executor(None, raw_batch)
            gesso_walls, raw_walls = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                assert len(await many()) == calls
                gesso_walls.append(time.perf_counter() - start)
                growth.append(max(rss[-1], _rss_mb()) - before)
                raw_walls.append(await loop.run_in_executor(None, raw_batch))
            return gesso_walls, raw_walls, growth

        gesso_walls, raw_walls, growth = asyncio.run(rounds())
        with urllib.request.urlopen(f"{url}/_gesso/stats") as answer:
            held = json.load(answer)["max_in_flight"]
    return {
        "gesso_s": statistics.median(gesso_walls),
        "raw_s": statistics.median(raw_walls),
        "ratio": statistics.median(gesso_walls) / statistics.median(raw_walls),
        "threads": max(threads),
        "rss_growth_mb": max(growth),
        "emulator_max_in_flight": held,
        "gesso_runs": gesso_walls,
        "raw_runs": raw_walls,
        "calls": calls,
        "latency": latency,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="calls per side for the per-call ratio")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds for the per-call ratio")
    parser.add_argument(
        "--sizes",
        default="default,320x320",
        help="image sizes for the per-call ratio: 'default' is the seed's call (1024x1024), 320x320 the smallest "
        "Nova image, where gesso's fixed cost weighs most",
    )
    parser.add_argument("--imports", type=int, default=15, help="fresh interpreters for the import time")
    parser.add_argument("--concurrent", type=int, default=2000, help="async calls in flight")
    parser.add_argument("--latency", type=float, default=2.0, help="emulated seconds per call for concurrency")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side for concurrency (median)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    pin(CLIENT_CPU)

    calls = {
        size: per_call(args.calls, args.rounds, None if size == "default" else size) for size in args.sizes.split(",")
    }
    imp = import_time(args.imports)
    conc = concurrency(args.concurrent, args.latency, args.repeats)
    import gesso

    print(
        f"gesso {gesso.__version__} on Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores"
    )
    boto3_seen = imp["boto3_imported"]
    rows = [
        (
            f"per-call cost, gesso / raw boto3 ({'1024x1024, the seed call' if size == 'default' else size})",
            f"{call['gesso_ms']:.2f} ms / {call['raw_ms']:.2f} ms = {call['ratio']:.3f}",
            "<= 0.70",
            call["ratio"] <= 0.70,
        )
        for size, call in calls.items()
    ]
    rows += [
        (
            "import gesso (boto3 imported?)",
            f"{imp['gesso_ms']:.1f} ms ({'yes' if boto3_seen else 'no'}); import boto3: {imp['boto3_ms']:.0f} ms",
            "<= 50 ms, no",
            imp["gesso_ms"] <= 50 and not boto3_seen,
        ),
        (
            f"{conc['calls']} async calls, {conc['latency']:g} s each: wall / raw boto3 ({conc['calls']} threads)",
            f"{conc['gesso_s']:.2f} s / {conc['raw_s']:.2f} s = {conc['ratio']:.3f}",
            "<= 0.70",
            conc["ratio"] <= 0.70,
        ),
        (
            f"threads in the process while the {conc['calls']} calls are in flight",
            f"{conc['threads']}",
            "<= 32",
            conc["threads"] <= 32,
        ),
        (
            f"peak RSS growth during the {conc['calls']} calls",
            f"{conc['rss_growth_mb']:.0f} MB",
            "<= 300 MB",
            conc["rss_growth_mb"] <= 300,
        ),
        (
            "the emulator's capacity (most requests held at once)",
            f"{conc['emulator_max_in_flight']}",
            f">= {conc['calls']}",
            conc["emulator_max_in_flight"] >= conc["calls"],
        ),
    ]
    width = max(len(r[0]) for r in rows)
    valw = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<{valw}}  {'goal':<12}  met")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:<{valw}}  {goal:<12}  {'yes' if ok else 'NO'}")
    per_side = next(iter(calls.values()))["calls"]
    print(f"(per-call: median of {args.rounds} interleaved rounds, {per_side} calls each side;")
    print(f" concurrency: median of {args.repeats} alternating rounds per side after an untimed one, one event loop,")
    print("  the emulator in its own process)")
    if args.json:
        args.json.write_text(json.dumps({"per_call": calls, "import": imp, "concurrency": conc}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

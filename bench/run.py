"""gesso's speed goals, measured against raw boto3 in the same run (not part of the test suite).

    .venv/bin/python bench/run.py            # prints one table; --help for the knobs

1. Per-call cost: ``gesso.image_generation`` vs a raw boto3 ``invoke_model`` of the same body (plus the
   ``read()`` and ``json.loads`` any caller needs), against the same emulator running in its own
   process. The two are interleaved in rounds so drift hits both alike. Goal: ratio <= 1.10.
2. ``import gesso`` wall time in a fresh interpreter, and whether boto3 came with it. Goal: <= 50 ms,
   no boto3.
3. Async concurrency: 200 ``aimage_generation`` calls against an emulator that takes 1 s per call.
   Goal: <= 1.5 s wall. Raw boto3 on a 200-thread pool is shown beside it as the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

MODEL = "bedrock/amazon.nova-canvas-v1:0"
MODEL_ID = "amazon.nova-canvas-v1:0"
KEY, SECRET = "BENCHKEY", "bench-secret"
PROMPT = "A cute baby sea otter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLIENT_CPU, EMULATOR_CPU = 0, 1


def pin(cpu: int) -> None:
    """Keep a process on one core (where the OS allows it), so client and emulator do not compete."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


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
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
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


def concurrency(calls: int, latency: float, repeats: int) -> dict:
    """Median wall time over ``repeats`` runs of each side, alternating, on one emulator process."""
    import gesso

    with emulator("--latency", str(latency)) as url:
        kwargs = aws(url)
        gesso.image_generation(MODEL, PROMPT, size="320x320", **kwargs)  # the client exists before timing

        async def many():
            return await asyncio.gather(
                *(gesso.aimage_generation(MODEL, PROMPT, size="320x320", **kwargs) for _ in range(calls))
            )

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

        raw()
        gesso_walls, raw_walls = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            assert len(asyncio.run(many())) == calls
            gesso_walls.append(time.perf_counter() - start)
            with concurrent.futures.ThreadPoolExecutor(calls) as pool:
                start = time.perf_counter()
                list(pool.map(lambda _: raw(), range(calls)))
                raw_walls.append(time.perf_counter() - start)
    return {
        "gesso_s": statistics.median(gesso_walls),
        "raw_s": statistics.median(raw_walls),
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
    parser.add_argument("--concurrent", type=int, default=200, help="async calls in flight")
    parser.add_argument("--latency", type=float, default=1.0, help="emulated seconds per call for concurrency")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side for concurrency (median)")
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
            "<= 1.10",
            call["ratio"] <= 1.10,
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
            f"{conc['calls']} async calls, {conc['latency']:g} s each",
            f"{conc['gesso_s']:.2f} s (raw boto3, {conc['calls']} threads: {conc['raw_s']:.2f} s)",
            "<= 1.5 s",
            conc["gesso_s"] <= 1.5,
        ),
    ]
    width = max(len(r[0]) for r in rows)
    valw = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<{valw}}  {'goal':<12}  met")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:<{valw}}  {goal:<12}  {'yes' if ok else 'NO'}")
    per_side = next(iter(calls.values()))["calls"]
    print(f"(per-call: median of {args.rounds} interleaved rounds, {per_side} calls each side;")
    print(f" concurrency: median of {args.repeats} alternating runs per side, the emulator in its own process)")
    if args.json:
        args.json.write_text(json.dumps({"per_call": calls, "import": imp, "concurrency": conc}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

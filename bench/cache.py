"""The proxy's exact cache, measured (not part of the test suite):

    .venv/bin/python bench/cache.py            # --help for the knobs

One ``gesso serve`` (pinned to core 0) on a fresh SQLite store with a virtual key, its model name cached
(``model_info.cache``), in front of the emulator at 0 latency; the load generator (raw asyncio HTTP/1.1, keep-alive
connections) and the emulator share core 1.

1. **Latency, one request at a time**: ``--bodies`` distinct seeded requests (each a miss: a provider call at 0
   latency, then its answer kept), then the same bodies again (each a hit); p50 and p99 of each.
2. **Requests/s**: ``--clients`` connections back to back for ``--duration`` s, on hits (every body already
   kept) and, as the same run's baseline, on misses that are not kept (``Cache-Control: no-store``, so every
   request is a provider call at 0 latency through the same keyed path); the ratio is hits / misses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gesso_bench import Conn, free_port, pin, stop, wait_listening

MASTER = "sk-gesso-bench-cache"


def write_config(path: Path, emulator_port: int) -> None:
    path.write_text(
        f"""model_list:
  - model_name: nova
    litellm_params:
      model: bedrock/amazon.nova-canvas-v1:0
      aws_bedrock_runtime_endpoint: http://127.0.0.1:{emulator_port}
      aws_access_key_id: GESSOEMULATORKEY
      aws_secret_access_key: gesso-emulator-secret-key
      aws_region_name: us-east-1
    model_info:
      cache: {{ttl: 1d, scope: key}}
general_settings:
  master_key: {MASTER}
"""
    )


def request(port: int, key: str, prompt: str, store: bool = True) -> bytes:
    data = json.dumps({"model": "nova", "prompt": prompt, "size": "320x320"}).encode()
    extra = "" if store else "Cache-Control: no-store\r\n"
    return (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_at_a_time(port: int, requests: list[bytes], expect: str) -> list[float]:
    conn = await Conn.open(port)
    latencies = []
    for raw in requests:
        started = time.perf_counter()
        status, headers, _ = await conn.send(raw)
        latencies.append(time.perf_counter() - started)
        if status != 200 or headers.get("x-gesso-cache") != expect:
            raise SystemExit(f"expected a {expect}: {status} {headers.get('x-gesso-cache')}")
    conn.close()
    return latencies


async def throughput(port: int, requests: list[bytes], clients: int, seconds: float, expect: str) -> float:
    conns = await asyncio.gather(*(Conn.open(port) for _ in range(clients)))
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(index: int, conn: Conn) -> None:
        nonlocal done
        i = index
        while time.perf_counter() < deadline:
            status, headers, _ = await conn.send(requests[i % len(requests)])
            if status != 200 or headers.get("x-gesso-cache") != expect:
                raise SystemExit(f"expected a {expect}: {status} {headers.get('x-gesso-cache')}")
            done += 1
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    wall = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return done / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=500, help="distinct seeded requests (default 500)")
    parser.add_argument("--clients", type=int, default=64, help="connections for requests/s (default 64)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of each requests/s run (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gesso-cache-bench-") as tmp:
        work = Path(tmp)
        emu_port, port = free_port(), free_port()
        config = work / "config.yaml"
        write_config(config, emu_port)
        logs = [(work / "emulator.log").open("wb"), (work / "gesso.log").open("wb")]
        emulator = subprocess.Popen(
            [sys.executable, "-m", "gesso", "emulator", "--port", str(emu_port)], stdout=logs[0],
            stderr=logs[0], preexec_fn=lambda: pin(1))  # fmt: skip
        proxy = subprocess.Popen(
            [sys.executable, "-m", "gesso", "serve", "--config", str(config), "--port", str(port)], stdout=logs[1],
            stderr=logs[1], preexec_fn=lambda: pin(0))  # fmt: skip
        try:
            wait_listening(emu_port, emulator, "the emulator")
            wait_listening(port, proxy, "gesso serve", work / "gesso.log")
            made = urllib.request.Request(f"http://127.0.0.1:{port}/key/generate", method="POST",
                                          data=json.dumps({"key_alias": "bench"}).encode(),
                                          headers={"Authorization": f"Bearer {MASTER}",
                                                   "Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(made, timeout=30) as answer:
                key = json.load(answer)["key"]
            pin(1)  # the load generator beside the emulator
            prompts = [f"a lighthouse, number {i}" for i in range(args.bodies)]
            kept = [request(port, key, p) for p in prompts]
            unkept = [request(port, key, f"{p}, not kept", store=False) for p in prompts]
            asyncio.run(one_at_a_time(port, unkept[:20], "miss"))  # untimed warm-up
            misses = asyncio.run(one_at_a_time(port, kept, "miss"))
            hits = asyncio.run(one_at_a_time(port, kept, "hit"))
            miss_rps = asyncio.run(throughput(port, unkept, args.clients, args.duration, "miss"))
            hit_rps = asyncio.run(throughput(port, kept, args.clients, args.duration, "hit"))
        finally:
            stop(proxy)
            stop(emulator)
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    report = {
        "machine": machine,
        "bodies": args.bodies,
        "miss_p50_ms": round(pct(misses, 0.5) * 1000, 2), "miss_p99_ms": round(pct(misses, 0.99) * 1000, 2),
        "hit_p50_ms": round(pct(hits, 0.5) * 1000, 2), "hit_p99_ms": round(pct(hits, 0.99) * 1000, 2),
        "miss_rps": round(miss_rps, 1), "hit_rps": round(hit_rps, 1), "hit_over_miss_rps": round(hit_rps / miss_rps, 2),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a new identity costs: memory, time to its first call, and the event-loop stall it causes (not part of
the test suite).

    .venv/bin/python bench/identities.py                 # 1,000 identities; --help for the knobs

A multi-tenant application signs each customer's calls with that customer's credentials, and a proxy makes its
first call per deployment: each is a new identity to the Bedrock transport. With ``gesso emulator`` in its own
process on core 1 (it checks no signatures) and this process on core 0:

1. Memory: the RSS after one identity's first call (boto3 imported, its data loaded, the endpoint's client
   made), then after ``--identities`` more distinct static-key identities (``aws_access_key_id`` and
   ``aws_secret_access_key`` of their own) made their first sync call each; the growth divided by their number.
   Goal: <= 1 MB per identity. The number of identities the transport still holds is reported beside it (a
   cache that dropped most of them would make the growth look small).
2. Time to first call: the wall time of each new identity's first sync call (median and 99th percentile),
   beside a warm identity's call.
3. Event-loop stall: in one event loop, a ticker task sleeps 1 ms over and over and records how late it wakes,
   while ``--identities`` other new identities make their first ``aimage_generation`` call, one after the
   other. The largest lateness is the longest the loop was blocked. Goal: <= 5 ms. The same is reported for
   as many calls of a warm identity (the floor: the calls' own work on the loop) and for the first call of a
   new endpoint configuration (another read timeout: the transport builds a botocore client for it, as a proxy
   does on its first request per deployment).

One run each on the project's CI-sized machine (2 cores, Python 3.11.7, x86_64), before (the transport as it
was: a boto3 session and client per identity, built on the event loop, 64 of them kept) and after (one botocore
client per endpoint configuration shared by every identity, botocore's sessions sharing their loaded data, a new
identity resolved on a worker thread):

```
measure (1,000 identities)                              before                 after                 goal
RSS growth per additional identity                      0.539 MB (64 held)     0.001 MB (1001 held)  <= 1 MB
  the same with 60 identities (all held before)         8.267 MB (61 held)     0.000 MB (61 held)
first sync call of a new identity: median / p99         72.6 / 2015.7 ms       0.9 / 2.7 ms
a warm identity's call: median                          0.82 ms                0.92 ms
event-loop stall, new identities' first calls: max      2415.8 ms              4.9 ms                <= 5 ms
event-loop stall, as many calls of a warm identity: max 10.1 ms                4.3 ms
event-loop stall, 5 new endpoint configurations: max    80.1 ms                2.6 ms
```

The stall of new identities is the warm floor's (other runs, of 1,000 and of 60 identities: 3.7 and 3.5 ms,
beside floors of 1.8 and 1.5 ms). A new endpoint's client is built on a thread too, and the loop waits at most
about the interpreter's 5 ms switch interval for it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from gesso_bench import pin
from run import CLIENT_CPU, MODEL, PROMPT, _rss_mb, emulator

SIZE = "320x320"


def identity(url: str, n: int, **extra: object) -> dict:
    """The call kwargs of tenant ``n``: the emulator, and static keys of its own."""
    return {
        "aws_bedrock_runtime_endpoint": url,
        "aws_access_key_id": f"TENANT{n:07d}",
        "aws_secret_access_key": f"tenant-secret-{n}",
        "aws_region_name": "us-east-1",
        **extra,
    }


def held() -> int:
    """How many identities the transport holds."""
    from gesso_bedrock import transport

    return len(transport._routes)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memory_and_first_calls(url: str, count: int) -> dict:
    import gesso

    def call(kwargs: dict) -> float:
        start = time.perf_counter()
        gesso.image_generation(MODEL, PROMPT, size=SIZE, **kwargs)
        return time.perf_counter() - start

    warm = identity(url, 0)
    for _ in range(20):
        call(warm)
    warm_ms = statistics.median(call(warm) for _ in range(200)) * 1000
    gc.collect()
    before = _rss_mb()
    firsts = [call(identity(url, n)) for n in range(1, count + 1)]
    gc.collect()
    after = _rss_mb()
    return {
        "identities": count,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "mb_per_identity": (after - before) / count,
        "held": held(),
        "first_call_median_ms": statistics.median(firsts) * 1000,
        "first_call_p99_ms": _percentile(firsts, 0.99) * 1000,
        "warm_call_median_ms": warm_ms,
    }


async def _stall(calls: list[dict]) -> tuple[float, float]:
    """How late a 1 ms ticker woke (the most, and the 99th percentile, in ms) while ``calls`` made one
    ``aimage_generation`` each, in turn."""
    import gesso

    done = asyncio.Event()
    late: list[float] = []

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - start - 0.001)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    for kwargs in calls:
        await gesso.aimage_generation(MODEL, PROMPT, size=SIZE, **kwargs)
    await asyncio.sleep(0.01)
    done.set()
    await ticking
    return max(late) * 1000, _percentile(late, 0.99) * 1000


def stalls(url: str, count: int, first: int, endpoints: int) -> dict:
    async def run() -> dict:
        import gesso

        warm = identity(url, 0)
        for _ in range(20):  # the loop's connections and the warm identity's route exist before timing
            await gesso.aimage_generation(MODEL, PROMPT, size=SIZE, **warm)
        gc.collect()
        floor = await _stall([warm] * count)
        fresh = await _stall([identity(url, n) for n in range(first, first + count)])
        # new endpoint configurations: other read timeouts, each a botocore client to build
        configs = await _stall([identity(url, first + count, timeout=200.0 + n) for n in range(endpoints)])
        return {"warm_ms": floor, "new_identities_ms": fresh, "new_endpoints_ms": configs}

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=1000, help="new identities per measure")
    parser.add_argument("--endpoints", type=int, default=5, help="new endpoint configurations for their stall")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    pin(CLIENT_CPU)
    with emulator() as url:
        memory = memory_and_first_calls(url, args.identities)
        stall = stalls(url, args.identities, first=args.identities + 1, endpoints=args.endpoints)
    import gesso

    print(
        f"gesso {gesso.__version__} on Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores"
    )
    n = args.identities
    new, warm, configs = stall["new_identities_ms"], stall["warm_ms"], stall["new_endpoints_ms"]
    rows = [
        (
            f"RSS growth per additional identity ({n} identities)",
            f"{memory['mb_per_identity']:.3f} MB ({memory['held']} held)",
            "<= 1 MB",
            memory["mb_per_identity"] <= 1,
        ),
        (
            "first sync call of a new identity: median / p99",
            f"{memory['first_call_median_ms']:.1f} / {memory['first_call_p99_ms']:.1f} ms",
            "",
            None,
        ),
        ("a warm identity's call: median", f"{memory['warm_call_median_ms']:.2f} ms", "", None),
        (
            f"event-loop stall, {n} new identities' first calls: max / p99",
            f"{new[0]:.1f} / {new[1]:.2f} ms",
            "<= 5 ms",
            new[0] <= 5,
        ),
        (f"event-loop stall, {n} calls of a warm identity: max / p99", f"{warm[0]:.1f} / {warm[1]:.2f} ms", "", None),
        (
            f"event-loop stall, {args.endpoints} new endpoint configurations: max / p99",
            f"{configs[0]:.1f} / {configs[1]:.2f} ms",
            "",
            None,
        ),
    ]
    width = max(len(r[0]) for r in rows)
    valw = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<{valw}}  {'goal':<8}  met")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:<{valw}}  {goal:<8}  {'' if ok is None else 'yes' if ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"memory": memory, "stall": stall}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

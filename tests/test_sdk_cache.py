"""The SDK's stores of answers (``gesso.cache``), on the Bedrock emulator: ``cache=`` answers an identical seeded
call from the store (costing nothing, saying so), ``idempotency_key=`` runs a call once, ``DiskCache`` keeps its
bound and survives a new process, and ``gesso batch --cache DIR`` pays for nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

import gesso
from gesso import cache
from gesso.errors import InvalidRequestError

NOVA = "bedrock/amazon.nova-canvas-v1:0"
TITAN = "bedrock/amazon.titan-image-generator-v2:0"


def test_a_seeded_call_is_answered_from_the_cache(tmp_path, aws, emulator):
    store = cache.DiskCache(tmp_path / "answers")
    first = gesso.image_generation(NOVA, "a lighthouse", size="320x320", cache=store, **aws)
    again = gesso.image_generation(NOVA, "a lighthouse", size="320x320", cache=store, **aws)
    assert emulator.stats()["requests"] == 1
    assert again.data[0].b64_json == first.data[0].b64_json and first.cost == pytest.approx(0.04)
    assert again.cost == 0.0 and "served from the cache" in again.warnings[-1] and "0.040000 USD" in again.warnings[-1]
    other = gesso.image_generation(NOVA, "a lighthouse", size="320x320", seed=7, cache=store, **aws)
    assert emulator.stats()["requests"] == 2 and other.cost == pytest.approx(0.04)  # another seed: another call
    # Titan without a seed is not kept (gesso holds no AWS text for its default seed); with one it is
    for _ in range(2):
        gesso.image_generation(TITAN, "a lighthouse", size="512x512", cache=store, **aws)
    assert emulator.stats()["requests"] == 4
    for _ in range(2):
        gesso.image_generation(TITAN, "a lighthouse", size="512x512", seed=42, cache=store, **aws)
    assert emulator.stats()["requests"] == 5
    # a new process, the same directory: still kept
    code = (
        "import gesso, json, sys; from gesso.cache import DiskCache; "
        f"r = gesso.image_generation({NOVA!r}, 'a lighthouse', size='320x320', cache=DiskCache(sys.argv[1]), "
        f"**json.loads(sys.argv[2])); print(r.cost)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "answers"), json.dumps(aws)],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "0.0" and emulator.stats()["requests"] == 5


def test_a_configured_cache_and_the_async_form(tmp_path, aws, emulator):
    cache.configure(cache.DiskCache(tmp_path / "configured"))
    try:
        asyncio.run(gesso.aimage_generation(NOVA, "a quay", size="320x320", **aws))
        again = asyncio.run(gesso.aimage_generation(NOVA, "a quay", size="320x320", **aws))
    finally:
        cache.configure(None)
    assert emulator.stats()["requests"] == 1 and again.cost == 0.0
    gesso.image_generation(NOVA, "a quay", size="320x320", **aws)  # none configured now: a call
    assert emulator.stats()["requests"] == 2


def test_an_idempotency_key_runs_a_call_once(aws, emulator):
    # Stability without a seed picks random seeds (never cached), yet the key's repeat is the first answer
    core = "bedrock/stability.stable-image-core-v1:1"
    first = gesso.image_generation(core, "a harbour", n=2, idempotency_key="job-17-item-3", **aws)
    again = gesso.image_generation(core, "a harbour", n=2, idempotency_key="job-17-item-3", **aws)
    assert emulator.stats()["requests"] == 2  # one call of two images
    assert [d.b64_json for d in again.data] == [d.b64_json for d in first.data] and again.cost == 0.0
    with pytest.raises(InvalidRequestError) as caught:
        gesso.image_generation(core, "a harbour at night", n=2, idempotency_key="job-17-item-3", **aws)
    assert caught.value.code == "idempotency_key_reused" and "job-17-item-3" in caught.value.message
    for bad in ("", "x" * 256, "caf\u00e9"):
        with pytest.raises(InvalidRequestError, match="idempotency_key: 1 to 255 printable ASCII"):
            gesso.image_generation(core, "a harbour", idempotency_key=bad, **aws)
    with pytest.raises(InvalidRequestError, match="cache: must be a store of answers"):
        gesso.image_generation(core, "a harbour", cache=42, **aws)
    with pytest.raises(InvalidRequestError, match="cache: scheme 'ftp://' has no installed store of answers"):
        gesso.image_generation(core, "a harbour", cache="ftp://host/dir", **aws)
    assert emulator.stats()["requests"] == 2


def test_disk_cache_keeps_its_bound_least_recently_used_first(tmp_path):
    store = cache.DiskCache(tmp_path / "c", max_bytes=10_000)
    k0, k1, k2, k3 = (f"{i:064x}" for i in range(4))
    for at, key in enumerate((k0, k1, k2), start=1):
        store.put(key, b"x" * 3_000)
        os.utime(store.path / key[:2] / key, (at * 100, at * 100))  # made in this order, long ago
    assert store.get(k0) == b"x" * 3_000  # used now: k1 is the least recently used
    store.put(k3, b"y" * 3_000)  # 12,000 bytes > 10,000: the least recently used go, down to 9,000
    assert store.get(k1) is None and all(store.get(k) is not None for k in (k0, k2, k3))
    assert store.size() == 9_000
    assert store.purge(older_than=3600) == 0 and store.purge() == 3 and store.size() == 0
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")
    memory = cache.MemoryCache(max_bytes=5)
    memory.put("a" * 16, b"123")
    memory.put("b" * 16, b"456")
    assert memory.get("a" * 16) is None and memory.get("b" * 16) == b"456"


def test_batch_with_a_cache_pays_for_no_identical_line_twice(tmp_path):
    lines = tmp_path / "lines.jsonl"
    bodies = [
        json.dumps({"model": NOVA, "prompt": f"a lighthouse, number {i % 3}", "size": "320x320"}) for i in range(6)
    ]
    lines.write_text("\n".join(bodies) + "\n")
    answers = tmp_path / "answers"

    def run(out: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "gesso", "batch", str(lines), "-o", str(tmp_path / out),
                               "--emulator", "--cache", str(answers), "--json", "--concurrency", "1"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = run("one")  # three distinct bodies, each twice: three calls paid, three answered from the cache
    assert first["done"] == 6 and first["total_cost"] == pytest.approx(3 * 0.04)
    second = run("two")  # another output directory (a new batch): every line from the cache
    assert second["done"] == 6 and second["total_cost"] == 0.0

"""gesso's OpenAI-compatible proxy against litellm's, in one run on this machine (not part of the test suite).

    .venv/bin/python bench/proxy.py            # prints one table; --help for the knobs

Both proxies serve the same litellm ``config.yaml`` (one ``model_name``, ``bedrock/amazon.nova-canvas-v1:0``,
``aws_bedrock_runtime_endpoint`` pointing at the emulator, the emulator's own keys, ``us-east-1``, a master
key) in front of the same ``gesso emulator --verify-signatures`` process, so every call each proxy makes is
SigV4-signed and checked. litellm is installed by this script into its own venv (bench/.venv-litellm,
``pip install 'litellm[proxy]==VERSION'``); when it cannot be installed or run, the script says so and still
reports gesso's figures.

Cores (2 on this machine): both proxies are pinned to core 0 (``gesso serve --workers 1`` and ``litellm
--num_workers 1``, started the same way and left running; only one is sent traffic at a time, the other idles);
the emulator and this script's load generator share core 1. The load generator is raw asyncio HTTP/1.1 (uvloop
when installed), about 50 us of CPU a request, a tenth of gesso's proxy, so the proxy is what is measured: each
round reports the proxy's share of its core (1.00: the proxy was the bottleneck). Other jobs on the machine
skew every figure, so the CPU that processes outside this run used during the timed parts is printed too.

1. Throughput: ``--clients`` (64) keep-alive connections, each sending ``POST /v1/images/generations``
   (320x320 Nova image, emulator latency 0) back to back for ``--duration`` seconds. The two proxies alternate
   rounds (ABBA) after an untimed warm-up each; requests/s is the median of the rounds, p50/p99 are over every
   request of that side's rounds. Goal: gesso >= 3x litellm.
2. 200 requests at once, 2 s emulated latency, each on a fresh connection (opened inside the timed wall):
   all succeed, wall <= 2.3 s. Median of ``--repeats`` rounds after an untimed one; litellm's too.
3. 2,000 requests at once, 5 s emulated latency, the same way (gesso only, ``GESSO_MAX_CONCURRENCY`` =
   2,000): all succeed, wall <= 7 s; the proxy's RSS (VmRSS sampled every 20 ms) is reported.
The emulator's latency is set between scenarios through its ``/_gesso/faults`` control endpoint. The untimed
first burst of each scenario is the one in which the proxy opens its upstream connections; its wall is printed
in the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from gesso_bench import Conn, Gone, free_port, image_request, pin, stop, wait_listening

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".venv-litellm"
#: litellm 1.108.14 to 1.110.2 pin litellm-proxy, litellm-proxy-extras or litellm-enterprise releases that the
#: package index here does not serve, so their [proxy] extra does not install; 1.106.12's does, and serves
LITELLM_VERSION = "1.106.12"
MODEL_NAME = "nova-canvas"
MASTER_KEY = "sk-gesso-bench"
PROMPT = "A cute baby sea otter"
PROXY_CPU, EMULATOR_CPU, LOADGEN_CPU = 0, 1, 1


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, need)), hard))


@contextlib.contextmanager
def process(cmd: list[str], port: int, cpu: int, what: str, log: Path, env: dict | None = None, start_s: float = 60):
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: pin(cpu),
                                start_new_session=True)  # fmt: skip
    try:
        wait_listening(port, proc, what, log, start_s)
        yield proc
    finally:
        stop(proc)


# -- the emulator ----------------------------------------------------------------------------------------------


def control(url: str, method: str, path: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read()
    return json.loads(text) if text.strip() else None


def set_latency(url: str, seconds: float) -> None:
    control(url, "DELETE", "/_gesso/faults")
    if seconds:
        control(url, "POST", "/_gesso/faults", {"kind": "latency", "seconds": seconds})


def emulator_requests(url: str) -> int:
    stats = control(url, "GET", "/_gesso/stats")
    assert isinstance(stats, dict)
    return int(stats.get("requests", stats.get("total", 0)))


# -- the proxies -------------------------------------------------------------------------------------------------


def write_config(path: Path, emulator_url: str) -> None:
    from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY

    path.write_text(
        "# written by bench/proxy.py: one config for both proxies\n"
        "model_list:\n"
        f"  - model_name: {MODEL_NAME}\n"
        "    litellm_params:\n"
        "      model: bedrock/amazon.nova-canvas-v1:0\n"
        f"      aws_bedrock_runtime_endpoint: {emulator_url}\n"
        f"      aws_access_key_id: {EMULATOR_ACCESS_KEY}\n"
        f"      aws_secret_access_key: {EMULATOR_SECRET_KEY}\n"
        "      aws_region_name: us-east-1\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


def litellm_install(version: str, log: Path) -> tuple[Path | None, str]:
    """The litellm proxy's command in its own venv, installing it when missing; or None and why not."""
    python = LITELLM_VENV / "bin" / "python"
    binary = LITELLM_VENV / "bin" / "litellm"

    def installed() -> str | None:
        if not binary.exists():
            return None
        out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True)  # fmt: skip
        return out.stdout.strip() or None

    if installed() != version:
        print(f"installing litellm[proxy]=={version} into {LITELLM_VENV} (once) ...", file=sys.stderr, flush=True)
        with open(log, "ab") as out:
            if not python.exists():
                made = subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], stdout=out, stderr=out)
                if made.returncode:
                    return None, f"python -m venv failed (see {log})"
            done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={version}"],
                                  stdout=out, stderr=out)  # fmt: skip
        if done.returncode or installed() != version:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            return None, f"pip install 'litellm[proxy]=={version}' failed: {tail[0][:200]}"
    return binary, version


# -- the load generator: raw HTTP/1.1 on keep-alive sockets ------------------------------------------------------


class Failure(Exception):
    pass


def request_for(port: int, size: str) -> bytes:
    return image_request(port, MASTER_KEY, {"model": MODEL_NAME, "prompt": PROMPT, "size": size, "n": 1})


def check(status: int, headers: dict[str, str], body: bytes) -> None:
    if status != 200 or b'"b64_json"' not in body:
        raise Failure(f"HTTP {status}: {body[:200]!r}")


async def throughput_round(port: int, size: str, clients: int, duration: float) -> dict:
    """``clients`` connections, each sending back to back for ``duration`` s (connections opened first)."""
    request = request_for(port, size)
    conns = await asyncio.gather(*(Conn.open(port) for _ in range(clients)))
    latencies: list[float] = []
    failures: list[str] = []
    deadline = 0.0

    async def client(conn: Conn) -> None:
        clock = time.perf_counter
        while clock() < deadline:
            start = clock()
            try:
                check(*await conn.send(request))
            except (Failure, Gone) as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:200])
                return
            latencies.append(clock() - start)

    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(*(client(c) for c in conns))
    wall = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return {"requests": len(latencies), "wall": wall, "rps": len(latencies) / wall, "latencies": latencies,
            "failures": failures}  # fmt: skip


async def burst(port: int, size: str, calls: int, rss_pid: int | None = None) -> dict:
    """``calls`` requests at once, each on its own fresh connection (the connect is inside the wall)."""
    request = request_for(port, size)
    failures: list[str] = []
    ok = 0

    async def one() -> None:
        nonlocal ok
        try:
            conn = await Conn.open(port)
            try:
                check(*await conn.send(request))
                ok += 1
            finally:
                conn.close()
        except (Failure, Gone) as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:200])

    sampler = RssSampler(rss_pid) if rss_pid else None
    if sampler:
        sampler.start()
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    wall = time.perf_counter() - start
    rss = sampler.stop() if sampler else {}
    return {"calls": calls, "ok": ok, "wall": wall, "failures": failures[:5], "failed": len(failures), **rss}


# -- process figures -------------------------------------------------------------------------------------------


def proc_status(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` field in MB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How much CPU the machine spent outside the processes of this run (another job on the same machine skews
    every figure): busy time from /proc/stat less the CPU time of ``pids``, in cores, over timed phases."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.busy = 0.0
        self.wall = 0.0
        self.worst = 0.0

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    def _ours(self) -> float:
        total = cpu_seconds(os.getpid())
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    @contextlib.contextmanager
    def measure(self):
        busy, ours, start = self._busy(), self._ours(), time.perf_counter()
        yield
        wall = time.perf_counter() - start
        other = max(0.0, (self._busy() - busy) - (self._ours() - ours))
        self.busy += other
        self.wall += wall
        self.worst = max(self.worst, other / wall)

    def report(self) -> dict:
        return {"mean_cores": self.busy / self.wall if self.wall else 0.0, "worst_cores": self.worst}


OTHER = OtherLoad()


class RssSampler:
    """VmRSS of a process every 20 ms on a thread (off the load generator's loop)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples, self.done = pid, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> None:
        self.before = proc_status(self.pid, "VmRSS")
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.samples.append(proc_status(self.pid, "VmRSS"))

    def stop(self) -> dict:
        self.done.set()
        self.thread.join()
        return {"rss_before_mb": self.before, "rss_peak_mb": max(self.samples, default=self.before),
                "vmhwm_mb": proc_status(self.pid, "VmHWM")}  # fmt: skip


# -- the scenarios ---------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def throughput(sides: dict[str, tuple[int, int]], args: argparse.Namespace) -> dict:
    """ABBA rounds over the sides (name -> (port, pid)) after an untimed warm-up each."""
    for port, _ in sides.values():
        warm = await throughput_round(port, args.size, args.clients, args.warmup)
        if warm["failures"]:
            raise RuntimeError(f"warm-up failed: {warm['failures'][0]}")
    results: dict[str, dict] = {name: {"rounds": [], "latencies": [], "cpu": [], "failures": []} for name in sides}
    names = list(sides)
    for index in range(args.rounds):
        for name in names if index % 2 == 0 else reversed(names):
            port, pid = sides[name]
            cpu = cpu_seconds(pid)
            with OTHER.measure():
                got = await throughput_round(port, args.size, args.clients, args.duration)
            results[name]["cpu"].append((cpu_seconds(pid) - cpu) / got["wall"])
            results[name]["rounds"].append(got["rps"])
            results[name]["latencies"] += got["latencies"]
            results[name]["failures"] += got["failures"]
    out = {}
    for name, r in results.items():
        out[name] = {
            "rps": statistics.median(r["rounds"]),
            "rps_rounds": r["rounds"],
            "p50_ms": percentile(r["latencies"], 0.50) * 1000,
            "p99_ms": percentile(r["latencies"], 0.99) * 1000,
            "requests": len(r["latencies"]),
            "proxy_cpu": statistics.median(r["cpu"]),
            "failures": r["failures"][:5],
            "failed": len(r["failures"]),
        }
    return out


async def bursts(port: int, args: argparse.Namespace, calls: int, repeats: int, pid: int | None = None) -> dict:
    """One untimed burst (it opens the proxy's upstream connections), then ``repeats`` timed ones; the proxy's
    RSS before the first, and its peak over all."""
    before = proc_status(pid, "VmRSS") if pid else None
    cold = await burst(port, args.size, calls, pid)
    runs = []
    for _ in range(repeats):
        with OTHER.measure():
            runs.append(await burst(port, args.size, calls, pid))
    walls = [r["wall"] for r in runs]
    return {
        "calls": calls,
        "wall": statistics.median(walls),
        "walls": walls,
        "cold_wall": cold["wall"],
        "all_ok": all(r["ok"] == calls for r in runs) and cold["ok"] == calls,
        "failed": sum(r["failed"] for r in runs) + cold["failed"],
        "failures": (cold["failures"] + [f for r in runs for f in r["failures"]])[:5],
        "rss_before_mb": before,
        "rss_peak_mb": max((r.get("rss_peak_mb", 0) for r in [cold, *runs]), default=None),
        "vmhwm_mb": runs[-1].get("vmhwm_mb") if runs else None,
    }


def first_call(port: int, emulator_url: str, what: str) -> None:
    """One request through the proxy, and proof that it reached the emulator (which checked its signature)."""
    before = emulator_requests(emulator_url)

    async def go() -> tuple[int, dict[str, str], bytes]:
        conn = await Conn.open(port)
        try:
            return await conn.send(request_for(port, "320x320"))
        finally:
            conn.close()

    status, _, body = asyncio.run(go())
    if status != 200 or b'"b64_json"' not in body:
        raise RuntimeError(f"{what}'s first call answered HTTP {status}: {body[:300]!r}")
    if emulator_requests(emulator_url) <= before:
        raise RuntimeError(f"{what} answered 200 but the emulator saw no request")


# -- the run ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64, help="concurrent keep-alive clients for throughput")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput round")
    parser.add_argument("--rounds", type=int, default=4, help="throughput rounds per side (ABBA)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed warm-up per side")
    parser.add_argument("--size", default="320x320", help="image size asked for (320x320: the smallest Nova image)")
    parser.add_argument("--burst", type=int, default=200, help="requests at once for the first latency scenario")
    parser.add_argument("--burst-latency", type=float, default=2.0)
    parser.add_argument("--big", type=int, default=2000, help="requests at once for the second latency scenario")
    parser.add_argument("--big-latency", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the 200 scenario (median)")
    parser.add_argument("--big-repeats", type=int, default=3, help="timed runs of the 2,000 scenario (median)")
    parser.add_argument("--litellm-version", default=LITELLM_VERSION)
    parser.add_argument("--no-litellm", action="store_true", help="gesso's figures only")
    parser.add_argument("--litellm-big", action="store_true", help="also run litellm through the 2,000 scenario")
    parser.add_argument("--profile", type=Path, help="run gesso's proxy under cProfile, writing the stats here")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--open-loop", action="store_true", help="instead: the open-loop test (bench/openloop.py "
                        "--compare: 500 requests/s for 60 s at 1.5 s, master and virtual keys, litellm)")  # fmt: skip
    args, rest = parser.parse_known_args()
    if args.open_loop:
        import openloop

        litellm_bin = None if args.no_litellm else litellm_install(args.litellm_version, Path("/tmp/litellm.log"))[0]
        sys.argv = [sys.argv[0], "--compare", *(["--litellm", str(litellm_bin)] if litellm_bin else []), *rest]
        return openloop.main()
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    pin(LOADGEN_CPU)
    raise_fd_limit(4 * max(args.big, args.burst) + 1024)  # children inherit it
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    work = Path(tempfile.mkdtemp(prefix="gesso-bench-proxy-"))
    started = time.monotonic()

    litellm_bin, litellm_note = (None, "skipped (--no-litellm)")
    if not args.no_litellm:
        litellm_bin, litellm_note = litellm_install(args.litellm_version, work / "litellm-install.log")

    report: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                "machine": platform.machine()}, "litellm": None}  # fmt: skip
    emu_port, gesso_port, litellm_port = free_port(), free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    config = work / "config.yaml"
    write_config(config, emulator_url)
    env = {**os.environ, "GESSO_MAX_CONCURRENCY": str(max(args.big, args.burst, 2000))}
    gesso_cmd = [sys.executable, "-m", "gesso", "serve", "--config", str(config), "--port", str(gesso_port),
                 "--workers", "1"]  # fmt: skip
    if args.profile:
        gesso_cmd = [sys.executable, "-m", "cProfile", "-o", str(args.profile), *gesso_cmd[1:]]

    with contextlib.ExitStack() as stack:
        emu_cmd = [sys.executable, "-m", "gesso", "emulator", "--port", str(emu_port), "--verify-signatures"]
        emulator = stack.enter_context(process(emu_cmd, emu_port, EMULATOR_CPU, "the emulator", work / "emulator.log"))
        gesso = stack.enter_context(process(gesso_cmd, gesso_port, PROXY_CPU, "gesso serve", work / "gesso.log", env))
        first_call(gesso_port, emulator_url, "gesso serve")
        sides = {"gesso": (gesso_port, gesso.pid)}

        if litellm_bin is not None:
            cmd = [str(litellm_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(litellm_port),
                   "--num_workers", "1"]  # fmt: skip
            try:
                # no network here: litellm's documented offline switch keeps it from retrying a download of its
                # price map at start (it falls back to the copy it ships either way)
                lenv = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
                litellm = stack.enter_context(
                    process(cmd, litellm_port, PROXY_CPU, "litellm", work / "litellm.log", lenv, start_s=180)
                )
                try:
                    first_call(litellm_port, emulator_url, "litellm")
                except (RuntimeError, Gone) as exc:
                    stop(litellm)  # off core 0 before gesso is timed
                    raise RuntimeError(str(exc)) from None
                sides["litellm"] = (litellm_port, litellm.pid)
                report["litellm"] = {"version": litellm_note}
            except RuntimeError as exc:
                litellm_note = f"litellm {args.litellm_version} did not serve: {str(exc).splitlines()[0][:300]}"

        OTHER.pids = [emulator.pid, *(pid for _, pid in sides.values())]
        set_latency(emulator_url, 0)
        report["throughput"] = asyncio.run(throughput(sides, args))

        set_latency(emulator_url, args.burst_latency)
        report["burst"] = {name: asyncio.run(bursts(port, args, args.burst, args.repeats, pid))
                           for name, (port, pid) in sides.items()}  # fmt: skip
        set_latency(emulator_url, args.big_latency)
        big_sides = sides if args.litellm_big else {"gesso": sides["gesso"]}
        report["big"] = {name: asyncio.run(bursts(port, args, args.big, args.big_repeats, pid))
                         for name, (port, pid) in big_sides.items()}  # fmt: skip
        set_latency(emulator_url, 0)
        report["emulator_stats"] = control(emulator_url, "GET", "/_gesso/stats")
        report["spend_report"] = spend_report(gesso_port)
    report["seconds"] = time.monotonic() - started
    report["other_load"] = OTHER.report()
    report["args"] = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    report["litellm_note"] = litellm_note

    print_table(report, args)
    total = report["spend_report"]["total"]
    print(f"gesso's /spend/report after the run (SQLite beside the config): {json.dumps(total)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def spend_report(port: int) -> dict:
    """gesso's own account of the run: its spend rows' totals (every request the benchmark sent wrote one)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/spend/report", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def print_table(report: dict, args: argparse.Namespace) -> None:
    import gesso

    m = report["machine"]
    litellm = (
        f"litellm {report['litellm']['version']}"
        if report["litellm"]
        else f"litellm NOT MEASURED: {report['litellm_note']}"
    )
    print(f"gesso {gesso.__version__} on Python {m['python']}, {m['machine']}, {m['cores']} cores; {litellm}")
    t = report["throughput"]
    g = t["gesso"]
    rows: list[tuple[str, str, str, bool | None]] = []
    head = f"requests/s, {args.clients} clients, instant model, {args.size}"
    if "litellm" in t:
        lt = t["litellm"]
        ratio = g["rps"] / lt["rps"]
        rows.append((f"{head}: gesso / litellm", f"{g['rps']:.0f} / {lt['rps']:.0f} = {ratio:.1f}x", ">= 3x",
                     ratio >= 3 and not g["failed"]))  # fmt: skip
    else:
        rows.append((f"{head}: gesso (litellm not measured)", f"{g['rps']:.0f}", ">= 3x litellm", None))
    for name, r in t.items():
        rows.append((f"  {name}: latency p50 / p99", f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms", "", None))
    for name, r in t.items():
        rows.append((f"  {name}: share of its core busy (1.00 = saturated); failed requests",
                     f"{r['proxy_cpu']:.2f}; {r['failed']}", "", None))  # fmt: skip
    for key, latency, goal in (("burst", args.burst_latency, 2.3), ("big", args.big_latency, 7.0)):
        for name, r in report[key].items():
            ok = "all succeed" if r["all_ok"] else f"{r['failed']} FAILED"
            rows.append((f"{r['calls']} requests at once, {latency:g} s latency: {name} wall",
                         f"{r['wall']:.2f} s, {ok}", f"<= {goal:g} s, all" if name == "gesso" else "",
                         (r["all_ok"] and r["wall"] <= goal) if name == "gesso" else None))  # fmt: skip
    r = report["big"]["gesso"]
    rows.append((f"  gesso proxy RSS over the {r['calls']}: before -> peak VmRSS",
                 f"{r['rss_before_mb']:.0f} -> {r['rss_peak_mb']:.0f} MB", "reported", True))  # fmt: skip
    width = max(len(row[0]) for row in rows)
    valw = max(len(row[1]) for row in rows)
    print(f"{'measure':<{width}}  {'result':<{valw}}  {'goal':<14}  met")
    for name, value, goal, ok in rows:
        met = "" if not goal else ("n/a" if ok is None else ("yes" if ok else "NO"))
        print(f"{name:<{width}}  {value:<{valw}}  {goal:<14}  {met}".rstrip())
    cold = "; ".join(f"{name} {key} {r['cold_wall']:.2f} s" for key in ("burst", "big")
                     for name, r in report[key].items())  # fmt: skip
    other = report["other_load"]
    print(
        f"(throughput: median of {args.rounds} alternating rounds of {args.duration:g} s per side after "
        f"{args.warmup:g} s of warm-up, p50/p99 over all their requests. Bursts: median of {args.repeats} / "
        f"{args.big_repeats} runs after an untimed first one (its wall: {cold}), each request on a fresh "
        "connection opened inside the wall. The proxies on core 0, one sent traffic at a time; the emulator "
        "(--verify-signatures) and this load generator on core 1. Other processes on the machine used "
        f"{other['mean_cores']:.2f} cores on average during the timed parts (worst {other['worst_cores']:.2f}). "
        f"{report['seconds']:.0f} s in all.)"
    )
    for key in ("throughput", "burst", "big"):
        for name, r in report[key].items():
            if r["failures"]:
                print(f"{name} {key}: first failure: {r['failures'][0]}")


if __name__ == "__main__":
    sys.exit(main())

"""gesso batch: 200 lines on the emulator under throttling, interrupted with SIGINT and resumed without paying
twice, a dry run that prices exactly what the run spends, the budget, retries of failed lines, the manifest."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gesso
from gesso.bulk import BatchError
from gesso.testing import contract_image, contract_mask
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

ROOT = Path(__file__).resolve().parent.parent
NOVA = "bedrock/amazon.nova-canvas-v1:0"


def write_batch(directory: Path, count: int) -> Path:
    """``count`` lines mixing families and operations: Nova and Titan text-to-image, Stable Image Core,
    Titan inpainting (an OpenAI mask) and Nova variations, whose images are paths relative to the file."""
    pics = directory / "pics"
    pics.mkdir(parents=True, exist_ok=True)
    (pics / "photo.png").write_bytes(contract_image((512, 512)))
    (pics / "mask.png").write_bytes(contract_mask((512, 512)))
    lines = []
    for i in range(count):
        kind = i % 10
        if kind < 5:
            line = {"model": NOVA, "prompt": f"a fox, take {i}", "size": "320x320", "seed": i}
        elif kind < 7:
            line = {"model": "bedrock/amazon.titan-image-generator-v2:0", "prompt": f"a teapot {i}", "size": "512x512"}
        elif kind == 7:
            line = {"model": "bedrock/stability.stable-image-core-v1:1", "prompt": f"a greenhouse {i}", "seed": i}
        elif kind == 8:
            line = {"model": "bedrock/amazon.titan-image-generator-v2:0", "operation": "edit", "prompt": f"a hat {i}",
                    "image": "pics/photo.png", "mask": "pics/mask.png"}  # fmt: skip
        else:
            line = {"model": NOVA, "operation": "variation", "image": ["pics/photo.png"], "prompt": f"autumn {i}"}
        lines.append(json.dumps(line))
    path = directory / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(path: Path, out: Path, emulator: Emulator, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gesso", "batch", str(path), "-o", str(out), "--endpoint", emulator.url,
        "--region", "us-east-1", "--option", f"aws_access_key_id={EMULATOR_ACCESS_KEY}",
        "--option", f"aws_secret_access_key={EMULATOR_SECRET_KEY}", *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GESSO_"))}


def manifest(out: Path) -> list[dict]:
    return [json.loads(raw) for raw in (out / "manifest.jsonl").read_text().splitlines() if raw.strip()]


def finished(out: Path) -> int:
    """Entries written so far (whole lines only: the batch may be writing one)."""
    try:
        return (out / "manifest.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def paid(emulator: Emulator) -> int:
    """Calls the emulator answered with images: what Bedrock would have charged for."""
    return sum(1 for r in emulator.requests if r.status == 200)


def throttled(emulator: Emulator) -> int:
    return sum(f["fired"] for f in emulator.faults.list() if f["kind"] == "throttle")


@pytest.fixture
def throttling():
    """The emulator, throttling 10% of requests (reproducibly), with room to record every request."""
    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}, record=5000, fault_seed=18) as emu:
        emu.inject("throttle", rate=0.1)
        yield emu


def test_200_lines_under_throttling_complete_and_cost_what_the_dry_run_said(tmp_path, throttling):
    path = write_batch(tmp_path, 200)
    out = tmp_path / "out"
    dry = subprocess.run(cli(path, out, throttling, "--dry-run", "--json"), capture_output=True, text=True, env=env())
    assert dry.returncode == 0, dry.stderr
    quoted = json.loads(dry.stdout)
    assert quoted["failures"] == [] and quoted["todo"] == 200 and paid(throttling) == 0  # nothing sent
    run = subprocess.run(cli(path, out, throttling, "--concurrency", "8"), capture_output=True, text=True, env=env())
    print(f"\n$ gesso batch batch.jsonl -o out --concurrency 8  (200 lines, 10% throttled)\n{run.stdout}")
    assert run.returncode == 0, run.stderr
    entries = manifest(out)
    spent = round(sum(e["cost"] for e in entries), 6)
    print(f"dry run ${quoted['quoted']:.4f}, spent ${spent:.4f}; emulator: {throttling.stats()['requests']} "
          f"requests, {throttled(throttling)} throttled, {paid(throttling)} answered with images")  # fmt: skip
    assert "200 done, 0 failed" in run.stdout and f"spent ${spent:.4f} this run" in run.stdout
    assert spent == quoted["quoted"] > 0
    assert [e["status"] for e in entries] == ["ok"] * 200 and sorted(e["line"] for e in entries) == list(range(1, 201))
    assert throttled(throttling) > 0  # the throttled calls were retried and succeeded
    assert paid(throttling) == 200 and throttling.stats()["requests"] == 200 + throttled(throttling)
    files = [f for e in entries for f in e["files"]]
    assert len(files) == 200 and all((out / f).is_file() for f in files)
    # the lifecycle warning once per model and command, however many lines use it (Nova and Titan v2 are Legacy)
    assert run.stderr.count("is a Legacy model") == 2, run.stderr
    again = subprocess.run(cli(path, out, throttling), capture_output=True, text=True, env=env())
    assert again.returncode == 0 and "0 done, 0 failed, 200 skipped" in again.stdout
    assert paid(throttling) == 200


def test_sigint_mid_run_then_resume_pays_for_each_line_once(tmp_path, throttling):
    throttling.inject("latency", seconds=0.05)
    path = write_batch(tmp_path, 200)
    out = tmp_path / "out"
    argv = cli(path, out, throttling, "--concurrency", "6")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.monotonic() + 60
        while finished(out) < 40:
            assert proc.poll() is None and time.monotonic() < deadline, "the batch ended before it was interrupted"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "To resume: gesso batch" in stderr and "interrupted" in stdout
    first = manifest(out)
    print(f"\ninterrupted: {len(first)} lines recorded, {paid(throttling)} calls paid\n{stdout}")
    assert 40 <= len(first) < 200
    assert all(e["status"] == "ok" for e in first)
    assert paid(throttling) == len(first)  # the calls in flight finished and were recorded: none paid unrecorded
    resumed = subprocess.run(argv, capture_output=True, text=True, env=env())
    print(f"resumed:\n{resumed.stdout}")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{200 - len(first)} done, 0 failed, {len(first)} skipped" in resumed.stdout
    entries = manifest(out)
    per_line = collections.Counter(e["line"] for e in entries if e["status"] == "ok")
    assert sorted(per_line) == list(range(1, 201)) and set(per_line.values()) == {1}
    assert paid(throttling) == 200 == len(entries)  # the emulator and the manifest agree: each line paid once


def test_max_cost_stops_before_a_call_that_could_pass_the_budget(tmp_path, emulator, aws):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"fox {i}", "size": "320x320"}) + "\n" for i in range(20)))
    dry = gesso.batch(path, tmp_path / "out", model=NOVA, dry_run=True, max_cost=0.30)
    assert dry.quoted == 0.8 and dry.stopped_before == 8  # $0.04 each: 7 fit in $0.30
    result = gesso.batch(path, tmp_path / "out", model=NOVA, options=aws, max_cost=0.30, concurrency=4)
    assert (result.stopped, result.stopped_before, result.done, result.cost) == ("budget", 8, 7, 0.28)
    assert result.not_started == 13 and paid(emulator) == 7
    again = gesso.batch(path, tmp_path / "out", model=NOVA, options=aws, max_cost=0.30)  # earlier spend counts
    assert (again.stopped, again.done, paid(emulator)) == ("budget", 0, 7)
    rest = gesso.batch(path, tmp_path / "out", model=NOVA, options=aws, max_cost=1.0)
    assert (rest.stopped, rest.done, rest.skipped, rest.total_cost, paid(emulator)) == (None, 13, 7, 0.8, 20)


def test_edited_lines_are_redone_and_failed_ones_only_with_retry_failed(tmp_path, emulator, aws):
    lines = [{"model": NOVA, "prompt": f"fox {i}", "size": "320x320"} for i in range(4)]
    lines[3]["cfgScale"] = 99  # refused before sending
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    emulator.inject("throttle", count=1)
    options = {**aws, "max_retries": 0}
    first = gesso.batch(path, tmp_path / "out", options=options, concurrency=1)
    assert (first.done, first.failed, paid(emulator)) == (2, 2, 2)
    errors = {e["line"]: e for e in manifest(tmp_path / "out") if e["status"] == "error"}
    assert errors[1]["error"]["type"] == "RateLimitError" and errors[1]["sent"] is True
    assert errors[4]["error"]["type"] == "InvalidRequestError" and errors[4]["sent"] is False
    assert errors[4]["cost"] == 0.0 and "cfgScale" in errors[4]["error"]["message"]
    lines[2]["prompt"] = "an edited fox"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    edited = gesso.batch(path, tmp_path / "out", options=options)
    assert (edited.done, edited.failed, edited.skipped, paid(emulator)) == (1, 0, 3, 3)
    retried = gesso.batch(path, tmp_path / "out", options=options, retry_failed=True)
    assert (retried.done, retried.failed, retried.skipped, paid(emulator)) == (1, 1, 2, 4)
    assert retried.failures[0][0] == 4


def test_manifest_survives_a_torn_line_and_refuses_a_second_writer(tmp_path, emulator, aws):
    import fcntl

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"model": NOVA, "prompt": "fox", "size": "320x320"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"line": 1, "hash": "x", "stat')  # a process killed mid-write
    result = gesso.batch(path, out, options=aws)
    assert result.done == 1
    raw = (out / "manifest.jsonl").read_text().splitlines()
    assert len(raw) == 2 and json.loads(raw[1])["status"] == "ok"
    with open(out / "manifest.jsonl") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(BatchError, match="another gesso batch is writing"):
            gesso.batch(path, out, options=aws)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, emulator, aws, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"fox {i}", "size": "320x320"}) + "\n" for i in range(3)))
    gesso.batch(path, tmp_path / "out", model=NOVA, options=aws, progress=True)
    err = capsys.readouterr().err
    assert "gesso batch: 3 lines to do, 4 at once" in err
    assert "gesso batch: 3/3 lines, 3 images," in err and "images/s, $0.1200 spent, ETA 0 s" in err
    assert "\r" not in err  # no bar redrawn in a log


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(BatchError, match="cannot read the batch file"):
        gesso.batch(tmp_path / "missing.jsonl", tmp_path / "out")
    path = tmp_path / "in.jsonl"
    path.write_text('[1]\n{"prompt": "x"}\n{"model": "bedrock/amazon.nova-canvas-v1:0", "operation": "paint"}\n')
    result = gesso.batch(path, tmp_path / "out", dry_run=True)
    assert [n for n, _ in result.failures] == [1, 2, 3]
    assert "JSON object" in result.failures[0][1] and "names no model" in result.failures[1][1]
    assert "operation must be one of" in result.failures[2][1]
    out = subprocess.run([sys.executable, "-m", "gesso", "batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path)],
                         capture_output=True, text=True, env=env())  # fmt: skip
    assert out.returncode == 2 and "gesso: error: cannot read the batch file" in out.stderr


def test_the_example_batch_file_prices_cleanly():
    result = gesso.batch(ROOT / "examples" / "batch.jsonl", ROOT / "examples" / "unused", dry_run=True)
    assert result.failures == [] and result.todo == result.lines > 0 and result.quoted > 0
    assert not (ROOT / "examples" / "unused").exists()  # a dry run writes nothing


def test_at_paths_in_a_generation_are_files_beside_the_batch_file(tmp_path, emulator, aws):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "photo.png").write_bytes(contract_image((512, 384)))
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"model": NOVA, "taskType": "BACKGROUND_REMOVAL", "image": "@pics/photo.png"}) + "\n")
    dry = gesso.batch(path, tmp_path / "out", dry_run=True)
    assert (dry.failures, dry.quoted) == ([], 0.04)
    result = gesso.batch(path, tmp_path / "out", options=aws)
    (entry,) = manifest(tmp_path / "out")
    assert (result.done, result.cost, entry["files"], entry["operation"]) == (
        1,
        0.04,
        ["00001-generate-1.png"],
        "generate",
    )

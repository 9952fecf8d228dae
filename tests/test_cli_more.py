"""The command line at a terminal and beside it: tables on a TTY (JSON or today's lines otherwise), the
spinner of gesso generate, gesso schema, gesso cost, the progress bar of gesso batch, and silencing the
lifecycle warning. A terminal is a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time

import pytest

from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY

NOVA = "bedrock/amazon.nova-canvas-v1:0"


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GESSO_"))}
    return {**clean, **extra}


def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gesso", *args], capture_output=True, text=True, env=env(**extra), timeout=120
    )


def run_tty(*args: str, timeout: float = 120, **extra: str) -> tuple[int, str]:
    """Run gesso with stdin, stdout and stderr on a pseudo-terminal of 160 columns; (status, what it showed)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gesso", *args], stdin=slave, stdout=slave, stderr=slave, env=env(**extra)
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not data:
                break
            chunks.append(data)
        status = proc.wait(timeout=10)
    finally:
        proc.kill()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_models_is_a_table_on_a_terminal_and_unchanged_in_a_pipe():
    status, shown = run_tty("models", GESSO_PLUGINS="gesso-bedrock-nova,gesso-bedrock-stability")
    assert status == 0, shown
    header, *rows = shown.splitlines()
    assert re.match(r"MODEL +FAMILY +PLUGIN +LIFECYCLE +USD/IMAGE +TASKS$", header)
    nova = next(r for r in rows if r.startswith("amazon.nova-canvas-v1:0"))
    assert re.match(
        r"amazon\.nova-canvas-v1:0 \(\+us\. eu\. apac\.\) +amazon\.nova-canvas +gesso-bedrock-nova +"
        r"legacy \(end 2026-09-30\) +0\.04-0\.08 +TEXT_IMAGE, COLOR_GUIDED_GENERATION, IMAGE_VARIATION",
        nova,
    )
    # a model offered only through inference profiles is listed by its profile id
    inpaint = next(r for r in rows if "stable-image-inpaint" in r)
    assert inpaint.startswith("us.stability.stable-image-inpaint-v1:0 ") and "edit, edit_mask, " in inpaint
    assert all("\t" not in r for r in rows)
    piped = run("models", GESSO_PLUGINS="gesso-bedrock-nova").stdout
    assert piped.splitlines()[0] == "amazon.nova-canvas-v1:0\tgesso-bedrock-nova\tlegacy, end of life 2026-09-30"


def test_plugins_is_a_table_on_a_terminal_and_json_for_machines():
    status, shown = run_tty("plugins", "--all", GESSO_PLUGINS="gesso-bedrock-titan")
    assert status == 0, shown
    lines = shown.splitlines()
    assert re.match(r"PLUGIN +VERSION +MODEL IDS +HOOKS +STATUS$", lines[0])
    assert re.match(r"gesso-bedrock-titan +0\.1\.0 +8 +4 +ok$", lines[-1])
    status, shown = run_tty("plugins", "--json", GESSO_PLUGINS="gesso-bedrock-titan")
    assert [p["name"] for p in json.loads(shown)] == ["gesso-bedrock-titan"]
    assert [p["name"] for p in json.loads(run("plugins", GESSO_PLUGINS="gesso-bedrock-titan").stdout)] == [
        "gesso-bedrock-titan"
    ]


def test_generate_spins_with_the_seconds_elapsed_on_a_terminal_only(tmp_path):
    from gesso_bedrock.emulator import Emulator

    with Emulator(port=0) as emu:
        emu.inject("latency", seconds=0.6)
        target = ["--endpoint", emu.url, "--region", "us-east-1", "--option", f"aws_access_key_id={EMULATOR_ACCESS_KEY}",
                  "--option", f"aws_secret_access_key={EMULATOR_SECRET_KEY}", "-o", str(tmp_path)]  # fmt: skip
        status, shown = run_tty("generate", "fox", "-m", NOVA, *target)
        piped = run("generate", "fox", "-m", NOVA, *target)
    assert status == 0, shown
    spins = re.findall(r"\r[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏|/\\-] amazon\.nova-canvas-v1:0 (\d+\.\d)s", shown)
    assert len(spins) >= 3 and float(spins[-1]) >= 0.5, shown
    assert "\r\x1b[K" in shown and shown.rstrip().endswith("(1 image, amazon.nova-canvas-v1:0)")
    assert piped.returncode == 0 and "\r" not in piped.stderr and piped.stderr.count("\n") == 1  # the warning only


def test_lifecycle_warning_can_be_silenced(tmp_path):
    out = run("generate", "otter", "-m", NOVA, "--emulator", "-o", str(tmp_path), GESSO_NO_LIFECYCLE_WARNINGS="1")
    assert out.returncode == 0 and out.stderr == ""
    cost = run("cost", NOVA, GESSO_NO_LIFECYCLE_WARNINGS="1")
    assert cost.stderr == "" and cost.stdout == "$0.0400 (1 image, amazon.nova-canvas-v1:0; nothing sent)\n"


def test_schema_prints_the_provider_params_and_narrows_to_a_task():
    full = json.loads(run("schema", NOVA).stdout)
    assert "textToImageParams" in full["properties"] and "allOf" in full
    out = run("schema", NOVA, "--task", "inpainting")
    assert out.returncode == 0, out.stderr
    task = json.loads(out.stdout)
    assert task["properties"]["taskType"] == {"const": "INPAINTING"}
    assert set(task["properties"]) == {"taskType", "inPaintingParams", "imageGenerationConfig"}
    assert task["required"] == ["taskType", "inPaintingParams"] and "inPaintingParams" in task["$defs"]
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(task)
    jsonschema.validate({"taskType": "INPAINTING", "inPaintingParams": {"image": "aGk=", "maskPrompt": "hat"}}, task)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"taskType": "INPAINTING", "textToImageParams": {"text": "x"}}, task)
    bad = run("schema", NOVA, "--task", "paint")
    assert bad.returncode == 2 and "--task must be one of TEXT_IMAGE, COLOR_GUIDED_GENERATION" in bad.stderr
    untasked = run("schema", "bedrock/stability.sd3-5-large-v1:0", "--task", "x")
    assert untasked.returncode == 2 and "has no tasks" in untasked.stderr
    unknown = run("schema", "bedrock/amazon.nova-canvas-v9")
    assert unknown.returncode == 1 and "gesso: error: Model 'amazon.nova-canvas-v9'" in unknown.stderr


def test_cost_prices_a_call_without_credentials_or_region(tmp_path):
    out = run("cost", NOVA, "--size", "640x384", "-n", "2", "--quality", "hd")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "$0.1200 (2 images, amazon.nova-canvas-v1:0; nothing sent)\n"  # as generate charged it
    as_json = json.loads(run("cost", "bedrock/stability.sd3-5-large-v1:0", "-n", "3", "--json").stdout)
    assert as_json == {"model": "bedrock/stability.sd3-5-large-v1:0", "n": 3, "cost": 0.24, "pricing": "public"}
    from gesso.testing import contract_image

    (tmp_path / "a.png").write_bytes(contract_image((512, 512)))
    # a model that takes no prompt is priced without one; -p image=@FILE and --image both name files
    removal = run("cost", "bedrock/us.stability.stable-image-remove-background-v1:0", "--operation", "edit",
                  "--image", str(tmp_path / "a.png"))  # fmt: skip
    assert removal.returncode == 0 and removal.stdout.startswith("$0.0700 "), removal.stderr
    nova_task = run("cost", NOVA, "-p", "taskType=BACKGROUND_REMOVAL", "-p", f"image=@{tmp_path / 'a.png'}")
    assert nova_task.returncode == 0 and nova_task.stdout.startswith("$0.0400 "), nova_task.stderr
    bad = run("cost", NOVA, "-p", "cfgScale=99")
    assert bad.returncode == 1 and "imageGenerationConfig.cfgScale: must be between 1.1 and 10" in bad.stderr


def test_batch_shows_a_progress_bar_on_a_terminal(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"model": NOVA, "prompt": f"fox {i}", "size": "320x320"}) + "\n" for i in range(3))
    )
    status, shown = run_tty("batch", str(path), "-o", str(tmp_path / "out"), "--emulator")
    assert status == 0, shown
    assert re.search(r"100%\|█+\| 3/3 lines \[\d\d:\d\d<00:00, \d+\.\d img/s, \$0\.1200\]", shown), shown
    assert shown.count("is a Legacy model") == 1 and "3 done, 0 failed" in shown

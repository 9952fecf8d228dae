"""The gesso command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config

from gesso.imaging import inspect
from helpers import invoke


def run(*args: str, cwd=None, plugins: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "GESSO_PLUGINS"}
    if plugins is not None:
        env["GESSO_PLUGINS"] = plugins
    return subprocess.run(
        [sys.executable, "-m", "gesso", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_generate_on_the_emulator_writes_pngs_and_prints_paths_and_cost(tmp_path):
    out = run(
        "generate", "A cute baby sea otter", "-m", "bedrock/amazon.nova-canvas-v1:0", "--size", "640x384", "-n", "2",
        "--quality", "hd", "-p", "seed=7", "-p", "negativeText=blurry", "--emulator", "-o", str(tmp_path / "imgs"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    *paths, summary, emulated = out.stdout.splitlines()
    assert summary == "cost: $0.1200 (2 images, amazon.nova-canvas-v1:0)"
    assert emulated == "(emulated: no Bedrock call was made)"  # the provider's title, from its plugin
    assert len(paths) == 2
    for path in paths:
        assert path.startswith(str(tmp_path / "imgs" / "a-cute-baby-sea-otter-"))
        info = inspect(open(path, "rb").read())
        assert (info.format, info.width, info.height) == ("png", 640, 384)


def test_generate_with_an_application_profile_model_id(tmp_path):
    arn = "arn:aws:bedrock:eu-west-1:000000000000:application-inference-profile/a0a0a0a0a0a0"
    out = run(
        "generate",
        "otter",
        "-m",
        "bedrock/amazon.nova-canvas-v1:0",
        "--model-id",
        arn,
        "--emulator",
        "-o",
        str(tmp_path),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # with --json, stdout is the JSON document alone
    assert summary["model"] == "amazon.nova-canvas-v1:0" and summary["cost"] == 0.04
    assert len(summary["files"]) == 1 and summary["files"][0].startswith(str(tmp_path / "otter-1-"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "cfgScale=99"], "imageGenerationConfig.cfgScale: must be between 1.1 and 10 (got 99) [from cfgScale]"),
        (["--size", "1000x1000"], "must be a multiple of 16"),
        (["-p", "nonsense=1"], "nonsense: unknown parameter"),
    ],
)
def test_invalid_input_is_a_clear_message_and_exit_1(tmp_path, args, message):
    out = run("generate", "otter", "-m", "bedrock/amazon.nova-canvas-v1:0", *args, "--emulator", "-o", str(tmp_path))
    assert out.returncode == 1
    assert "\ngesso: error: Invalid request for model amazon.nova-canvas-v1:0" in "\n" + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_cli_usage_exits_2():
    out = run("generate", "otter", "-p", "novalue")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_without_credentials_the_error_says_how_to_configure(tmp_path):
    out = run(
        "generate",
        "otter",
        "-m",
        "bedrock/amazon.nova-canvas-v1:0",
        "--region",
        "us-east-1",
        "--endpoint",
        "http://127.0.0.1:9",
    )
    assert out.returncode == 1
    assert "No AWS credentials found" in out.stderr and "Traceback" not in out.stderr


def test_lifecycle_warning_is_one_plain_line(tmp_path):
    out = run("generate", "otter", "-m", "bedrock/amazon.nova-canvas-v1:0", "--emulator", "-o", str(tmp_path))
    assert out.returncode == 0
    assert out.stderr.startswith("gesso: warning: amazon.nova-canvas-v1:0 is a Legacy model on Bedrock")
    assert out.stderr.count("\n") == 1


def test_models_lists_every_owned_id():
    out = run("models", plugins="gesso-bedrock-nova")
    assert out.returncode == 0
    ids = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert ids == [
        "amazon.nova-canvas-v1:0",
        "us.amazon.nova-canvas-v1:0",
        "eu.amazon.nova-canvas-v1:0",
        "apac.amazon.nova-canvas-v1:0",
    ]
    detail = json.loads(run("models", "--json", plugins="gesso-bedrock-nova").stdout)
    assert detail[0]["prices"] == {
        "standard_1024": 0.04,
        "premium_1024": 0.06,
        "standard_2048": 0.06,
        "premium_2048": 0.08,
    }
    assert detail[0]["lifecycle"] == {"status": "legacy", "end_of_life": "2026-09-30"}


def test_emulator_command_serves_boto3():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gesso", "emulator", "--port", str(port), "--app-profile", "p1=amazon.nova-canvas-v1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().startswith(f"gesso Bedrock emulator on http://127.0.0.1:{port}")
        client = boto3.client(
            "bedrock-runtime", region_name="us-west-2", endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="ANYKEY", aws_secret_access_key="any", config=Config(retries={"total_max_attempts": 1}),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                out = invoke(
                    client,
                    "arn:aws:bedrock:us-west-2:111122223333:application-inference-profile/p1",
                    {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"}},
                )
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert len(out["images"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_emulator_fault_flags():
    import socket

    from botocore.exceptions import ClientError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gesso", "emulator", "--port", str(port), "--fault", "throttle:count=1", "--fault", "eol:model=us.amazon.nova-canvas-v1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        proc.stdout.readline()
        client = boto3.client(
            "bedrock-runtime", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="K", aws_secret_access_key="S", config=Config(retries={"total_max_attempts": 1}),
        )  # fmt: skip
        body = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"}}
        deadline = time.monotonic() + 10
        while True:
            try:
                invoke(client, "amazon.nova-canvas-v1:0", body)
                pytest.fail("the first request should be throttled")
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "ThrottlingException"
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert len(invoke(client, "amazon.nova-canvas-v1:0", body)["images"]) == 1
        with pytest.raises(ClientError) as info:
            invoke(client, "us.amazon.nova-canvas-v1:0", body)
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_fault_flag_is_a_usage_error():
    out = run("emulator", "--fault", "meteor:count=1")
    assert out.returncode == 2
    assert "fault kind must be one of" in out.stderr and "Traceback" not in out.stderr


def test_files_are_passed_with_at_and_the_prompt_may_be_left_out(tmp_path):
    from helpers import picture

    source = tmp_path / "product.png"
    source.write_bytes(picture(512, 384))
    out = run(
        "generate", "-m", "bedrock/amazon.nova-canvas-v1:0", "-p", "taskType=BACKGROUND_REMOVAL",
        "-p", f"image=@{source}", "--emulator", "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(tmp_path / "out" / "image-1-"))
    variation = run(
        "generate", "autumn", "-m", "bedrock/amazon.nova-canvas-v1:0", "-p", "taskType=IMAGE_VARIATION",
        "-p", f'images=["@{source}", "@{source}"]', "--emulator", "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert variation.returncode == 0, variation.stderr
    missing = run(
        "generate",
        "-m",
        "bedrock/amazon.nova-canvas-v1:0",
        "-p",
        "taskType=BACKGROUND_REMOVAL",
        "-p",
        "image=@/no/such.png",
        "--emulator",
    )
    assert missing.returncode == 1 and "cannot read image file '/no/such.png'" in missing.stderr

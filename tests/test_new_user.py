"""What a new user and a litellm user run into: each mistake is one clear gesso error (or a warning and
the right call), never a traceback, a retry storm or a paid call bound to fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import gesso
from conftest import NOVA
from gesso import plugins
from gesso.errors import InvalidRequestError, ModelIdWarning, UnknownModelError
from gesso.types import Model
from helpers import picture

TITAN = "bedrock/amazon.titan-image-generator-v2:0"
APP_PROFILE = "arn:aws:bedrock:us-east-1:000000000000:application-inference-profile/a0a0a0a0a0a0"


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "GESSO_PLUGINS"}
    return subprocess.run(
        [sys.executable, "-m", "gesso", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


# -- the endpoint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:4010", "not a url", "ftp://127.0.0.1:4010", "http://", "http://h:port"]
)
def test_an_endpoint_that_is_not_an_http_url_is_one_clear_error(aws, emulator, endpoint):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", **{**aws, "aws_bedrock_runtime_endpoint": endpoint})
    assert info.value.param == "aws_bedrock_runtime_endpoint"
    assert "must be a URL starting http:// or https://" in info.value.message and repr(endpoint) in info.value.message
    assert len(emulator.requests) == 0


def test_the_cli_endpoint_without_a_scheme_is_one_clear_error():
    out = cli("generate", "otter", "-m", NOVA, "--endpoint", "127.0.0.1:4010", "--region", "us-east-1")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "aws_bedrock_runtime_endpoint: must be a URL starting http:// or https://" in out.stderr


def test_an_endpoint_password_is_never_echoed(aws):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", **{**aws, "aws_bedrock_runtime_endpoint": "ftp://me:hunter2@host"})
    assert "hunter2" not in str(info.value) and "hunter2" not in json.dumps(info.value.to_dict())


def test_an_api_key_over_http_fails_at_once_naming_api_key_and_https(aws, emulator):
    kwargs = {"aws_bedrock_runtime_endpoint": emulator.url, "aws_region_name": "us-east-1", "max_retries": 4}
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", api_key="bedrock-api-key-123", **kwargs)
    assert info.value.param == "api_key" and "only over HTTPS" in info.value.message
    assert "bedrock-api-key-123" not in info.value.message
    assert len(emulator.requests) == 0


def test_an_api_key_from_the_environment_over_http_names_the_variable(emulator, monkeypatch):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-123")
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", aws_bedrock_runtime_endpoint=emulator.url, aws_region_name="us-east-1")
    assert info.value.param == "AWS_BEARER_TOKEN_BEDROCK" and len(emulator.requests) == 0


# -- images ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "kwargs", "path", "message"),
    [
        (NOVA, {"taskType": "INPAINTING", "image": Path("nope.png"), "maskPrompt": "a"}, "inPaintingParams.image", "cannot read image file 'nope.png'"),
        (NOVA, {"taskType": "IMAGE_VARIATION", "images": [b"hello"]}, "imageVariationParams.images[0]", "is not a readable image"),
        (TITAN, {"taskType": "INPAINTING", "image": object(), "maskPrompt": "a"}, "inPaintingParams.image", "must be an image: bytes, a pathlib.Path"),
    ],
)  # fmt: skip
def test_a_bad_image_is_one_problem_on_one_line(aws, emulator, model, kwargs, path, message):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(model, "a window", **kwargs, **aws)
    assert [v.path for v in info.value.violations] == [path]
    assert message in info.value.violations[0].message
    assert len(emulator.requests) == 0


def test_a_pil_image_object_is_one_line_too(aws):
    from PIL import Image

    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, None, taskType="BACKGROUND_REMOVAL", image=Image.new("RGB", (320, 320)), **aws)
    assert len(info.value.violations) == 1 and "(got Image)" in info.value.message


# -- other SDKs' habits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("aws_region", "use aws_region_name"),
        ("region_name", "use aws_region_name"),
        ("api_base", "use aws_bedrock_runtime_endpoint"),
        ("aws_secret_access_id", "use aws_access_key_id"),
        ("aws_regoin_name", "did you mean aws_region_name?"),
        ("extra_body", "pass provider parameters as keyword arguments themselves"),
        ("metadata", "nowhere for metadata to go"),
        ("custom_llm_provider", "model='<provider>/<model id>'"),
    ],
)
def test_litellm_call_names_say_what_to_write_instead(aws, emulator, name, advice):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", **{name: "x"}, **aws)
    assert info.value.param == name and advice in info.value.message
    assert len(emulator.requests) == 0


@pytest.mark.parametrize(
    ("model", "kwargs", "name", "suggestion"),
    [
        (NOVA, {"negative_prompt": "blurry"}, "negative_prompt", "negativeText"),
        (TITAN, {"negative_prompt": "blurry"}, "negative_prompt", "negativeText"),
        (NOVA, {"taskType": "INPAINTING", "mask": b"m"}, "mask", "maskImage"),
        (TITAN, {"taskType": "INPAINTING", "mask": b"m"}, "mask", "maskImage"),
        ("bedrock/stability.sd3-5-large-v1:0", {"negativeText": "blurry"}, "negativeText", "negative_prompt"),
        (NOVA, {"cfg_scale": 7}, "cfg_scale", "cfgScale"),
    ],
)
def test_other_families_names_suggest_this_familys(aws, model, kwargs, name, suggestion):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(model, "a window", **kwargs, **aws)
    found = [v for v in info.value.violations if v.path == name]
    assert found and f"(did you mean {suggestion}?)" in found[0].message


def test_the_cli_suggests_at_for_a_file_given_as_text(tmp_path):
    source = tmp_path / "product.png"
    source.write_bytes(picture(512, 384))
    out = cli(
        "generate",
        "-m",
        NOVA,
        "-p",
        "taskType=BACKGROUND_REMOVAL",
        "-p",
        "image=product.png",
        "--emulator",
        cwd=tmp_path,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "gesso: hint: to pass the file, write -p image=@product.png" in out.stderr


# -- model ids --------------------------------------------------------------------------------------------


def test_litellms_doubled_stability_prefix_is_read_with_a_warning(aws, emulator):
    with pytest.warns(ModelIdWarning, match="using 'stability.sd3-5-large-v1:0', the real id"):
        response = gesso.image_generation("bedrock/stability.stability.sd3-5-large-v1:0", "a lighthouse", **aws)
    assert response.model == "stability.sd3-5-large-v1:0"
    assert emulator.requests[-1].model_id == "stability.sd3-5-large-v1:0"


def test_the_seed_model_id_from_litellms_docs_resolves(aws):
    # litellm's model table spells SD3 Large "bedrock/stability.stability.sd3-large-v1:0" (reference.md 8.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, resolved = plugins.get_registry().resolve("bedrock/stability.stability.sd3-large-v1:0")
    assert (resolved.model.id, resolved.model_name) == ("stability.sd3-large-v1:0", "stability.sd3-large-v1:0")
    assert [w.category for w in caught] == [ModelIdWarning]


def test_an_unknown_id_of_an_installed_family_suggests_the_closest_and_never_pip_install(aws):
    with pytest.raises(UnknownModelError) as info:
        gesso.image_generation("bedrock/stability.sd3-5-large-v2:0", "x", **aws)
    assert "pip install" not in info.value.message and info.value.install_hint is None
    assert "the closest: stability.sd3-5-large-v1:0" in info.value.message


def test_family_membership_compares_normalised_distribution_names():
    from gesso.registry import Registry
    from gesso_bedrock.provider import BEDROCK

    model = Model(
        id="stability.sd3-5-large-v1:0", family="x", provider="bedrock", distribution="Gesso_Bedrock.Stability"
    )
    error = BEDROCK.unknown("stability.sd3-5-large-v9:0", Registry([model], {"bedrock": BEDROCK}))
    assert "pip install" not in error.message and "stability.sd3-5-large-v1:0" in error.message


def test_an_unmapped_application_profile_says_how_to_map_it_in_the_emulator(aws, emulator):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", model_id=APP_PROFILE, **aws)
    assert "The provided model identifier is invalid." in info.value.message
    assert "--app-profile a0a0a0a0a0a0=MODEL_ID" in info.value.message


# -- the CLI's output -------------------------------------------------------------------------------------


def test_output_dir_that_is_a_file_is_refused_before_the_call(tmp_path):
    existing = tmp_path / "product.png"
    existing.write_bytes(b"not a directory")
    out = cli("generate", "otter", "-m", NOVA, "--emulator", "-o", str(existing))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is a file, not a directory" in out.stderr and "cost:" not in out.stdout


def test_output_dir_that_cannot_be_made_is_refused_before_the_call(tmp_path):
    out = cli("generate", "otter", "-m", NOVA, "--emulator", "-o", "/proc/nope")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--output-dir '/proc/nope': cannot write there" in out.stderr and "cost:" not in out.stdout


def test_a_failed_call_leaves_no_directory_behind(tmp_path):
    out = cli("generate", "otter", "-m", NOVA, "-p", "cfgScale=99", "--emulator", "-o", str(tmp_path / "a" / "b"))
    assert out.returncode == 1 and not (tmp_path / "a").exists()


def test_json_output_is_one_document_on_stdout(tmp_path):
    out = cli("generate", "otter", "-m", NOVA, "-n", "2", "--emulator", "-o", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert len(summary["files"]) == 2 and all(Path(f).is_file() for f in summary["files"])
    assert summary["cost"] == 0.08 and summary["data"][0]["b64_json"].endswith("chars>")

"""Amazon Nova 2 Omni (gesso-bedrock-nova2) through Bedrock's Converse API: the bodies sent, checked against AWS's
own samples field by field; sizes as aspect-ratio instructions in the system prompt; edits; answers without an
image; token prices; the transport's retries, headers and timeout on Converse; the emulator's Converse route, read
by boto3's own ``converse``; the proxy (the openai client, a budgeted key) and ``gesso batch``.

Sources (as gesso_bedrock_nova2.models names them):
- S1: aws-samples/sample-building-intelligent-multimodal-applications-with-Nova, lab-01-nova-text-image.ipynb and
  lab-02-nova-image-editing.ipynb;
- S2: aws-samples/amazon-nova-samples, nova-omni/getting-started/02-image_generation_examples.ipynb, "Supported
  Resolutions and Aspect Ratios" and examples 1-10;
- BOTO: botocore's bedrock-runtime service model (Converse, ConverseResponse, TokenUsage, StopReason);
- GUIDE: https://docs.aws.amazon.com/nova/latest/nova2-userguide/code-library.html (Converse, read_timeout=3600).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import warnings

import openai
import pytest
import test_otel
import uvicorn
from gesso_bedrock_nova2 import emulation, request
from test_replicas import call

import gesso
from gesso import api, pricing
from gesso.errors import ContentFilteredError, InvalidRequestError, ProviderError, RateLimitError
from gesso.proxy import config as proxy_config
from gesso.proxy import store
from gesso.proxy.app import build_app
from gesso_bedrock import transport
from gesso_bedrock.emulator import faults
from helpers import picture, png_info, uvicorn_running

OMNI = "bedrock/us.amazon.nova-2-omni-v1:0"
otel = test_otel.otel  # the fixture: spans and metrics in memory
PRICES = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.00004}
MASTER = "sk-nova2-test-master"


@pytest.fixture(autouse=True)
def _no_price_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pricing.UnpricedModelWarning)
        yield


def dims(b64: str) -> tuple[int, int]:
    info = png_info(b64)
    return info.width, info.height


def sent(emulator, index: int = -1) -> dict:
    return json.loads(emulator.requests[index].body)


def test_a_generation_sends_the_converse_body_of_aws_samples(emulator, aws):
    """S2 example 1 sends ``{"messages": [{"role": "user", "content": [{"text": ...}]}]}`` and nothing else; S2's
    commented system prompt asks for a ratio: ``[{"text": "Always generate images using 1:1 aspect ratio"}]``."""
    made = gesso.image_generation(OMNI, "Create an image of a cozy campfire at night", prices=PRICES, **aws)
    recorded = emulator.requests[-1]
    assert recorded.path == "/model/us.amazon.nova-2-omni-v1%3A0/converse" and recorded.status == 200
    assert sent(emulator) == {
        "messages": [{"role": "user", "content": [{"text": "Create an image of a cozy campfire at night"}]}]
    }
    # S2: "Default aspect ratio: 16:9", made at 2704x1520; the size reported is the image's own
    assert made.size == "2704x1520" and dims(made.data[0].b64_json) == (2704, 1520)

    square = gesso.image_generation(OMNI, "A pyramid of ice cream scoops", size="2048x2048", prices=PRICES, **aws)
    assert sent(emulator) == {
        "messages": [{"role": "user", "content": [{"text": "A pyramid of ice cream scoops"}]}],
        "system": [{"text": "Always generate images using 1:1 aspect ratio"}],
    }
    assert square.size == "2048x2048" and not square.warnings


def test_an_edit_sends_the_image_block_first_then_the_instruction(emulator, aws):
    """S1 lab-02 and S2 example 6: content ``[{"image": {"format": ..., "source": {"bytes": ...}}}, {"text": ...}]``
    (BOTO: bytes is a blob, base64 in the JSON on the wire)."""
    image = picture(640, 480)
    made = gesso.image_edit(OMNI, image=image, prompt="Add a cup of tea to the scene", prices=PRICES, **aws)
    body = sent(emulator)
    assert body == {
        "messages": [{"role": "user", "content": [
            {"image": {"format": "png", "source": {"bytes": base64.b64encode(image).decode()}}},
            {"text": "Add a cup of tea to the scene"},
        ]}]
    }  # fmt: skip
    # S2: an edit's output "matches input aspect ratio", at most 1,048,576 pixels
    assert made.size == "640x480" and made.cost is not None
    big = gesso.image_edit(OMNI, image=picture(2048, 1536), prompt="Make it dusk", prices=PRICES, **aws)
    width, height = (int(side) for side in big.size.split("x"))
    assert width * height <= 1_048_576 and abs(width / height - 4 / 3) < 0.01
    jpeg = gesso.image_edit(OMNI, image=picture(320, 320, fmt="JPEG"), prompt="Restyle it", prices=PRICES, **aws)
    assert sent(emulator)["messages"][0]["content"][0]["image"]["format"] == "jpeg" and jpeg.data


@pytest.mark.parametrize(("size", "ratio", "made"), [
    ("2880x1440", "2:1", "2880x1440"), ("2704x1520", "16:9", "2704x1520"), ("2496x1664", "3:2", "2496x1664"),
    ("2352x1760", "4:3", "2352x1760"), ("2048x2048", "1:1", "2048x2048"), ("1440x2880", "1:2", "1440x2880"),
    ("1520x2704", "9:16", "1520x2704"), ("1664x2496", "2:3", "1664x2496"), ("1760x2352", "3:4", "1760x2352"),
    ("1024x1024", "1:1", "2048x2048"), ("1536x1024", "3:2", "2496x1664"), ("1024x1536", "2:3", "1664x2496"),
])  # fmt: skip
def test_each_size_asks_for_its_aspect_ratio_and_reports_the_size_made(emulator, aws, size, ratio, made):
    """S2's table: 2:1 2880x1440, 16:9 2704x1520, 3:2 2496x1664, 4:3 2352x1760, 1:1 2048x2048, and the portrait
    transposes. A size of one of those ratios asks for it; the response reports what was made, and says so when
    that is not the size asked for."""
    answer = gesso.image_generation(OMNI, "a lighthouse", size=size, prices=PRICES, **aws)
    assert sent(emulator)["system"] == [{"text": f"Always generate images using {ratio} aspect ratio"}]
    assert answer.size == made and dims(answer.data[0].b64_json) == tuple(map(int, made.split("x")))
    assert bool(answer.warnings) == (size != made)
    if size != made:
        assert answer.warnings[0] == (f"size {size}: asked for aspect ratio {ratio} in the system prompt; Amazon "
                                      f"Nova 2 Omni makes {ratio} images at {made}")  # fmt: skip


@pytest.mark.parametrize(("kwargs", "param", "says"), [
    ({"size": "1792x1024"}, "size", "is not an aspect ratio Amazon Nova 2 Omni is documented to make; the sizes it "
     "makes: 2:1 (made at 2880x1440), 16:9 (made at 2704x1520)"),
    ({"size": "1000x1000", "quality": "hd"}, "quality", "has no quality setting"),
    ({"style": "vivid"}, "style", "has no style presets"),
    ({"n": 11}, "n", "must be at most 10"),
    ({"seed": 7}, "seed", "seed"),
    ({"temperature": 2}, "temperature", "2"),
    ({"maxTokens": 0}, "maxTokens", "0"),
    ({"temperature": 0.5, "inferenceConfig": {"temperature": 0.7}}, "temperature", "inferenceConfig.temperature "
     "is given twice"),
    ({"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "extreme"}}, "reasoningConfig", "extreme"),
    ({"inferenceConfig": {"stopSequences": ["x"]}}, "stopSequences", "stopSequences"),
])  # fmt: skip
def test_what_aws_does_not_document_is_refused_before_anything_is_sent(emulator, aws, kwargs, param, says):
    with pytest.raises(InvalidRequestError) as caught:
        gesso.image_generation(OMNI, "a lighthouse", prices=PRICES, **kwargs, **aws)
    assert says in str(caught.value) and param in str(caught.value)
    assert "amazon.nova-2-omni" in str(caught.value)  # the error names the model
    assert not emulator.requests


def test_an_edit_takes_one_image_no_mask_and_no_size(emulator, aws):
    image = picture(512, 512)
    with pytest.raises(InvalidRequestError, match="mask: this model cannot do an image edit with a mask"):
        gesso.image_edit(OMNI, image=image, mask=picture(512, 512), prompt="a hat", prices=PRICES, **aws)
    with pytest.raises(InvalidRequestError, match="size: an edit's output takes its input image's aspect ratio"):
        gesso.image_edit(OMNI, image=image, prompt="a hat", size="1024x1024", prices=PRICES, **aws)
    with pytest.raises(InvalidRequestError, match="edits one image at a time"):
        gesso.image_edit(OMNI, image=[image, image], prompt="a hat", prices=PRICES, **aws)
    with pytest.raises(InvalidRequestError, match="prompt: is required"):
        gesso.image_edit(OMNI, image=image, prices=PRICES, **aws)
    with pytest.raises(InvalidRequestError):
        gesso.image_variation(OMNI, image=image, prices=PRICES, **aws)
    assert not emulator.requests


def test_the_samples_inference_settings_are_sent_where_they_go(emulator, aws):
    """S2 example 1's ``inferenceConfig`` ``{"temperature": 0, "topP": 1, "maxTokens": 10000}`` and S1 lab-01's
    ``additionalModelRequestFields`` ``{"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "high"}}``, flat
    or nested; ``n`` images are ``n`` calls."""
    gesso.image_generation(OMNI, "a fox", temperature=0, topP=1, maxTokens=10000,
                           reasoningConfig={"type": "enabled", "maxReasoningEffort": "high"}, prices=PRICES, **aws)  # fmt: skip
    body = sent(emulator)
    assert body["inferenceConfig"] == {"temperature": 0, "topP": 1, "maxTokens": 10000}
    assert body["additionalModelRequestFields"] == {
        "reasoningConfig": {"type": "enabled", "maxReasoningEffort": "high"}
    }
    emulator.requests.clear()
    three = gesso.image_generation(OMNI, "a fox", n=3, inferenceConfig={"temperature": 0.5, "maxTokens": 512},
                                   prices=PRICES, **aws)  # fmt: skip
    assert len(three.data) == 3 and len(emulator.requests) == 3
    assert {json.dumps(r.json(), sort_keys=True) for r in emulator.requests} == {json.dumps(
        {"messages": [{"role": "user", "content": [{"text": "a fox"}]}],
         "inferenceConfig": {"temperature": 0.5, "maxTokens": 512}}, sort_keys=True)}  # fmt: skip


def test_text_beside_the_image_is_the_revised_prompt_and_no_image_is_an_error(emulator, aws):
    """S1: "it can include images and text in the response". An answer without an image is never an empty
    ``data`` (litellm's 200 with no images): a filter's stop is a ContentFilteredError, any other a ProviderError
    that says what the model wrote."""
    made = gesso.image_generation(OMNI, f"a fox {emulation.WITH_TEXT}", prices=PRICES, **aws)
    assert made.data[0].revised_prompt == f"An image of: a fox {emulation.WITH_TEXT}"
    assert made.to_dict()["data"][0]["revised_prompt"] == made.data[0].revised_prompt
    with pytest.raises(ProviderError, match=r"answered without an image \(stopReason 'end_turn'\); it wrote: Here "
                       "is a description"):  # fmt: skip
        gesso.image_generation(OMNI, f"a fox {emulation.TEXT_ONLY}", prices=PRICES, **aws)
    with pytest.raises(ContentFilteredError, match=r"stopped \(content_filtered\) without an image"):
        gesso.image_generation(OMNI, "a fox emulator:block-output", prices=PRICES, **aws)


def test_cost_is_the_usage_at_your_token_prices_and_unknown_without_them(emulator, aws, monkeypatch):
    """AWS publishes no price for the preview: no price, no cost (null, never 0), warned once; with token prices the
    cost is the answer's usage (BOTO's TokenUsage inputTokens/outputTokens) at them, reported as OpenAI's
    gpt-image responses report usage."""
    monkeypatch.setattr(pricing, "_warned", set())
    with pytest.warns(pricing.UnpricedModelWarning, match="amazon.nova-2-omni-v1:0 has no public price") as seen:
        unknown = gesso.image_generation(OMNI, "a fox", **aws)
        gesso.image_generation(OMNI, "a fox", **aws)
    assert len([w for w in seen if w.category is pricing.UnpricedModelWarning]) == 1
    assert unknown.cost is None and "cost" in unknown.to_dict() and unknown.to_dict()["cost"] is None
    usage = unknown.usage  # the emulator's count: a token per 4 characters, a token per 1,024 pixels made
    assert usage == {"input_tokens": 2, "output_tokens": 4014, "total_tokens": 4016}
    priced = gesso.image_generation(OMNI, "a fox", prices=PRICES, **aws)
    expected = priced.usage["input_tokens"] * 0.000001 + priced.usage["output_tokens"] * 0.00004
    assert priced.cost == pytest.approx(expected, abs=1e-6) and priced.pricing == "deployment"
    assert priced.to_dict()["usage"] == {**priced.usage}
    assert api.quote(OMNI, "a fox", prices=PRICES, **aws) is None  # nothing counts tokens before the call


def test_the_base_id_names_the_inference_profile_to_use(aws):
    """S1 and S2 call the model only through ``us.amazon.nova-2-omni-v1:0``."""
    with pytest.raises(InvalidRequestError, match="offered only through cross-Region inference profiles: use "
                       "bedrock/us.amazon.nova-2-omni-v1:0"):  # fmt: skip
        gesso.image_generation("bedrock/amazon.nova-2-omni-v1:0", "a fox", prices=PRICES, **aws)


def test_converse_is_retried_signed_and_timed_like_invoke_model(emulator, aws):
    """The same retries (a throttle, then an answer), guardrail headers and SigV4 signature as InvokeModel; the
    model's default read timeout is S2's 300 s."""
    emulator.inject("throttle", count=2)
    made = gesso.image_generation(OMNI, "a fox", prices=PRICES, retry_budget=5, guardrailIdentifier="gr1",
                                  guardrailVersion=2, trace="ENABLED", **aws)  # fmt: skip
    assert made.data and len(emulator.requests) == 3
    last = emulator.requests[-1]
    assert last.signed_by is not None and last.signed_by.access_key_id == aws["aws_access_key_id"]
    # BOTO: Converse's guardrail is the body's guardrailConfig, never InvokeModel's headers (it would ignore them)
    assert last.json()["guardrailConfig"] == {"guardrailIdentifier": "gr1", "guardrailVersion": "2",
                                              "trace": "enabled"}  # fmt: skip
    assert not any(name.lower().startswith("x-amzn-bedrock-") for name in last.headers)
    emulator.inject("throttle", count=10)
    with pytest.raises(RateLimitError):
        gesso.image_generation(OMNI, "a fox", prices=PRICES, max_retries=1, **aws)
    emulator.faults.clear()
    prepared = api.prepare(OMNI, "a fox", prices=PRICES, **aws)
    assert prepared.request.target.timeout == 300.0
    assert transport.deadline(prepared.request.target) > 300


def test_async_converse_and_cancellation(emulator, aws):
    import asyncio

    async def main() -> None:
        made = await gesso.aimage_generation(OMNI, "a fox", prices=PRICES, **aws)
        assert made.data and emulator.requests[-1].path.endswith("/converse")
        emulator.inject("latency", seconds=5, count=1)
        task = asyncio.ensure_future(gesso.aimage_generation(OMNI, "a slow fox", prices=PRICES, **aws))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_the_emulator_answers_boto3s_own_converse(bedrock):
    """boto3 serializes the Converse request (the image's bytes as base64) and parses the emulator's answer as it
    parses Bedrock's: the image comes back as bytes in ``output.message.content[i].image.source.bytes``."""
    answer = bedrock.converse(
        modelId="us.amazon.nova-2-omni-v1:0",
        system=[{"text": "Always generate images using 1:1 aspect ratio"}],
        messages=[{"role": "user", "content": [{"text": "Create an image of a cozy campfire at night"}]}],
        inferenceConfig={"temperature": 0.5, "maxTokens": 512},
    )
    block = next(item for item in answer["output"]["message"]["content"] if "image" in item)
    assert block["image"]["format"] == "png" and block["image"]["source"]["bytes"].startswith(b"\x89PNG")
    assert answer["stopReason"] == "end_turn" and answer["usage"]["totalTokens"] > 0
    edited = bedrock.converse(modelId="us.amazon.nova-2-omni-v1:0", messages=[{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": picture(400, 300)}}}, {"text": "Add a cup of tea"}]}])  # fmt: skip
    assert any("image" in item for item in edited["output"]["message"]["content"])
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="This action doesn't support the model that you provided"):
        bedrock.converse(modelId="amazon.nova-canvas-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}])
    with pytest.raises(ClientError, match="ValidationException"):
        bedrock.converse(modelId="us.amazon.nova-2-omni-v1:0", messages=[{"role": "assistant", "content": [
            {"text": "x"}]}])  # fmt: skip


def test_the_emulator_serves_nova_2_omni_only_through_converse(bedrock):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="emulated through Converse only"):
        bedrock.invoke_model(modelId="us.amazon.nova-2-omni-v1:0", body=json.dumps({"messages": []}))


@contextlib.contextmanager
def omni_proxy(database_url: str, aws: dict, model_info: dict):
    config = proxy_config.parse({
        "model_list": [{"model_name": "omni", "litellm_params": {"model": OMNI, **aws, "max_retries": 0},
                        "model_info": {"id": "omni-a", **model_info}}],
        "general_settings": {"master_key": MASTER, "database_url": database_url},
    })  # fmt: skip
    proxy_config.check(config)
    store.upgrade(database_url)
    served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    for port in uvicorn_running(served):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _no_http_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_proxy_generates_and_edits_at_the_deployment_token_price(database_url, aws, emulator, tmp_path):
    """The openai client through the proxy: a generation and an edit, each costed from its usage at the
    deployment's model_info token prices; a budgeted key refused an unpriced deployment."""
    with omni_proxy(database_url, aws, PRICES) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER, max_retries=0, timeout=30)
        raw = client.images.with_raw_response.generate(model="omni", prompt="a lighthouse", size="1024x1024")
        made = raw.parse()
        assert made.data[0].b64_json and made.size == "2048x2048"
        assert sent(emulator)["system"] == [{"text": "Always generate images using 1:1 aspect ratio"}]
        body = json.loads(raw.http_response.text)
        expected = body["usage"]["input_tokens"] * 0.000001 + body["usage"]["output_tokens"] * 0.00004
        assert body["cost"] == pytest.approx(expected, abs=1e-6) and body["pricing"] == "deployment"
        assert float(raw.headers["x-gesso-response-cost"]) == pytest.approx(expected, abs=1e-6)
        edit = client.images.edit(model="omni", image=("room.png", picture(512, 384), "image/png"),
                                  prompt="Add bar stools")  # fmt: skip
        assert edit.data[0].b64_json and sent(emulator)["messages"][0]["content"][1] == {"text": "Add bar stools"}
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model="omni", prompt="a lighthouse", size="1792x1024")
        assert "not an aspect ratio" in str(caught.value) and caught.value.status_code == 400
        sent_before = len(emulator.requests)  # over 4 MP, and a GIF to edit: OpenAI-shaped 400s, nothing sent
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model="omni", prompt="a lighthouse", size="4096x4096")
        assert caught.value.body["param"] == "size" and "4,194,304 pixels" in caught.value.body["message"]
        gif = b"GIF89a" + (64).to_bytes(2, "little") * 2 + b"\x00" * 32
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.edit(model="omni", image=("room.gif", gif, "image/gif"), prompt="Add bar stools")
        assert caught.value.body["param"] == "image" and "a GIF image: give it as PNG" in caught.value.body["message"]
        assert len(emulator.requests) == sent_before
        # a token price is known only from the answer: a budget cannot hold it before the call, so it is refused
        key = call(url, "POST", "/key/generate", key=MASTER, body={"max_budget": 0.5})[2]["key"]
        keyed = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
        sent_before = len(emulator.requests)
        with pytest.raises(openai.BadRequestError) as caught:
            keyed.images.generate(model="omni", prompt="a fox")
        assert caught.value.code == "cost_unknown_before_call" and "output_cost_per_image" in str(caught.value)
        assert len(emulator.requests) == sent_before
    with omni_proxy(database_url, aws, {}) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER, max_retries=0, timeout=30)
        key = call(url, "POST", "/key/generate", key=MASTER, body={"max_budget": 5})[2]["key"]
        keyed = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
        with pytest.raises(openai.BadRequestError) as caught:
            keyed.images.generate(model="omni", prompt="a fox")
        assert caught.value.code == "unpriced_model"
        unbudgeted = client.images.generate(model="omni", prompt="a fox")  # the master key has no budget
        assert unbudgeted.data


def test_gesso_batch_runs_nova_2_omni_lines_at_your_price(tmp_path):
    lines = tmp_path / "batch.jsonl"
    lines.write_text("\n".join(json.dumps(line) for line in [
        {"model": OMNI, "prompt": "a fox", "size": "1024x1024"},
        {"model": OMNI, "prompt": "an owl"},
    ]) + "\n")  # fmt: skip
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "gesso", "batch", str(lines), "-o", str(out), "--emulator",
                          "--prices", json.dumps(PRICES)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 2
    assert {dims(base64.b64encode(p.read_bytes()).decode()) for p in pngs} == {(2048, 2048), (2704, 1520)}
    assert "2 done, 0 failed" in run.stdout


def test_the_size_table_is_s2s():
    assert request.ALLOWED_SIZES == (
        "2:1 (made at 2880x1440), 16:9 (made at 2704x1520), 3:2 (made at 2496x1664), 4:3 (made at 2352x1760), "
        "1:1 (made at 2048x2048), 1:2 (made at 1440x2880), 9:16 (made at 1520x2704), 2:3 (made at 1664x2496), "
        "3:4 (made at 1760x2352)"
    )


@pytest.mark.parametrize("kind", [kind for kind in sorted(faults.ANSWERS)])
def test_each_fault_is_the_same_error_through_converse_as_through_invoke_model(emulator, aws, kind):
    """The emulator's faults answer Converse as they answer InvokeModel, and gesso maps both alike (no retries)."""

    def error(model: str, **kwargs) -> tuple[type, int | None]:
        emulator.inject(kind, count=1)
        try:
            gesso.image_generation(model, "a fox", max_retries=0, **kwargs, **aws)
        except Exception as exc:
            return type(exc), getattr(exc, "status_code", None)
        finally:
            emulator.faults.clear()
        raise AssertionError(f"the {kind} fault let the call through")

    guard = {"guardrailIdentifier": "gr1", "guardrailVersion": 1} if kind == "guardrail" else {}
    canvas = error("bedrock/amazon.nova-canvas-v1:0", size="320x320", **guard)
    omni = error(OMNI, prices=PRICES, **guard)
    assert omni == canvas
    assert emulator.requests[-1].path.endswith("/converse") and emulator.requests[-2].path.endswith("/invoke")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_flat_price_an_image_lets_a_budget_hold_nova_2_omni_exactly(database_url, aws, emulator):
    """A deployment may price Nova 2 Omni per image (a team's flat rate, model_info.output_cost_per_image): known
    before the call, so a key whose budget covers 3 images gets exactly 3."""
    with omni_proxy(database_url, aws, {"output_cost_per_image": 0.05}) as url:
        key = call(url, "POST", "/key/generate", key=MASTER, body={"max_budget": 0.15})[2]["key"]
        body = {"model": "omni", "prompt": "a fox"}
        answers = [call(url, "POST", "/v1/images/generations", key=key, body=body) for _ in range(5)]
        assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
        assert all(answer["cost"] == 0.05 and answer["pricing"] == "deployment" for _, _, answer in answers[:3])
        assert answers[3][2]["error"]["code"] == "budget_exceeded"
        assert call(url, "GET", f"/key/info?key={key}", key=MASTER)[2]["info"]["spend"] == pytest.approx(0.15)
    assert api.quote(OMNI, "a fox", n=2, prices={"output_cost_per_image": 0.05}) == 0.1
    with pytest.raises(InvalidRequestError, match="has no price classes"):
        gesso.image_generation(OMNI, "a fox", prices={"output_cost_per_image": {"standard": 0.05}}, **aws)


def test_tokens_are_in_the_trace_and_the_genai_token_histogram(otel, emulator, aws):
    """OpenTelemetry's GenAI conventions: the span's gen_ai.usage.input_tokens/output_tokens, and
    gen_ai.client.token.usage measured once per gen_ai.token.type."""
    exporter, reader = otel
    made = gesso.image_generation(OMNI, "a fox", prices=PRICES, **aws)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["gen_ai.usage.input_tokens"] == made.usage["input_tokens"]
    assert span.attributes["gen_ai.usage.output_tokens"] == made.usage["output_tokens"]
    points = {
        point.attributes["gen_ai.token.type"]: point.sum
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "gen_ai.client.token.usage" and metric.unit == "{token}"
        for point in metric.data.data_points
    }
    assert points == {"input": made.usage["input_tokens"], "output": made.usage["output_tokens"]}


def test_gesso_cost_says_a_token_price_is_known_only_from_the_answer():
    def cost(prices: dict) -> str:
        run = subprocess.run([sys.executable, "-m", "gesso", "cost", OMNI, "-n", "3", "--prices", json.dumps(prices)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert cost(PRICES).startswith("unknown before the call (priced by the tokens its answer counts, at your price)")
    assert cost({"output_cost_per_image": 0.05}).startswith("$0.1500 at your price (3 images")


def test_no_nova_2_omni_body_fixes_its_image_so_none_is_cached():
    """AWS documents no seed for Nova 2 Omni: the exact cache never keeps its answers (an Idempotency-Key still
    replays them)."""
    for kwargs in ({}, {"size": "1024x1024"}, {"temperature": 0, "topP": 1}):
        call = api.prepare(OMNI, "a fox", prices=PRICES, **kwargs)
        assert not call.prepared.seeded and api.cache_key(call) is None


def test_an_answer_without_usage_says_its_cost_is_unknown():
    """BOTO's ConverseResponse requires usage; an answer without it is read, its cost unknown and said so."""
    from gesso_bedrock_nova2 import response

    from gesso.types import RawResponse

    prepared = api.prepare(OMNI, "a fox", prices=PRICES)
    png = base64.b64encode(picture(64, 32)).decode()
    body = {"output": {"message": {"role": "assistant", "content": [
        {"image": {"format": "png", "source": {"bytes": png}}}]}}, "stopReason": "end_turn"}  # fmt: skip
    parsed = response.parse(prepared.request, RawResponse(status=200, body=json.dumps(body).encode()))
    assert parsed.usage is None and parsed.size.width == 64
    assert parsed.warnings == ("the answer counted no tokens (no usage)",)
    # two images in one answer: the first is returned (one a call: what was asked for, priced and held)
    two = {**body, "output": {"message": {"role": "assistant", "content": [
        {"image": {"format": "png", "source": {"bytes": png}}}] * 2}}}  # fmt: skip
    parsed = response.parse(prepared.request, RawResponse(status=200, body=json.dumps(two).encode()))
    assert len(parsed.images) == 1 and parsed.warnings[0] == "the answer held 2 images; the first is returned"
    # bytes that are no image, or not the format the block names, are an error, never a success
    for bad in (base64.b64encode(b"hello").decode(), base64.b64encode(picture(8, 8, fmt="JPEG")).decode()):
        wrong = {**body, "output": {"message": {"role": "assistant", "content": [
            {"image": {"format": "png", "source": {"bytes": bad}}}]}}}  # fmt: skip
        with pytest.raises(ProviderError, match="not the image its block names"):
            response.parse(prepared.request, RawResponse(status=200, body=json.dumps(wrong).encode()))
    stopped = {**body, "output": {"message": {"role": "assistant", "content": [{"text": "..."}]}},
               "stopReason": "max_tokens"}  # fmt: skip
    with pytest.raises(ProviderError, match="raise maxTokens"):
        response.parse(prepared.request, RawResponse(status=200, body=json.dumps(stopped).encode()))
    # a guardrail's stop (BOTO's StopReason guardrail_intervened) is a content filter's, as content_filtered is
    guarded = {**stopped, "stopReason": "guardrail_intervened"}
    with pytest.raises(ContentFilteredError, match=r"stopped \(guardrail_intervened\) without an image; it wrote"):
        response.parse(prepared.request, RawResponse(status=200, body=json.dumps(guarded).encode()))


def test_an_edit_image_is_png_jpeg_or_webp_and_at_most_25_mb_as_the_request_carries_it(emulator, aws):
    """GUIDE: PNG, JPEG, GIF or WebP, at most 25 MB. A GIF is refused by name (gesso reads no GIF header); the bound
    is counted on the base64 the request carries: 18.75 MB of image is 25,000,000 characters of it."""
    gif = b"GIF89a" + (64).to_bytes(2, "little") * 2 + b"\x00" * 32
    with pytest.raises(InvalidRequestError, match="image: is not a readable image \\(a GIF image: give it as PNG, "
                       "JPEG or WebP\\)"):  # fmt: skip
        gesso.image_edit(OMNI, image=gif, prompt="a hat", prices=PRICES, **aws)
    image = picture(64, 64)
    at_most = image + b"\x00" * (18_750_000 - len(image))  # a PNG with trailing bytes: 25,000,000 as base64
    over = at_most + b"\x00" * 3  # 4 characters more
    with pytest.raises(InvalidRequestError, match="image: must be at most 25,000,000 bytes as base64 in the request "
                       "for Amazon Nova 2 Omni \\(got 25,000,004: 18,750,003 bytes of image\\)"):  # fmt: skip
        gesso.image_edit(OMNI, image=over, prompt="a hat", prices=PRICES, **aws)
    assert not emulator.requests
    call = api.prepare(OMNI, "a hat", operation="edit", image=at_most, prices=PRICES)  # the bound itself is taken
    assert len(call.prepared.bodies[0]["messages"][0]["content"][0]["image"]["source"]["bytes"]) == 25_000_000


def test_a_size_over_four_megapixels_is_refused_though_its_ratio_is_documented(emulator, aws):
    """S2: "Maximum output size: 4,194,304 pixels"; 4096x4096 is 1:1 but four times that."""
    with pytest.raises(InvalidRequestError, match="size: 4096x4096 is more than the 4,194,304 pixels Amazon Nova 2 "
                       "Omni makes at most"):  # fmt: skip
        gesso.image_generation(OMNI, "a fox", size="4096x4096", prices=PRICES, **aws)
    assert not emulator.requests

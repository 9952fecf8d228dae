"""Each first-party family passes the shared plugin contract (gesso.testing), as a third party's would."""

from __future__ import annotations

from gesso.testing import FamilyContract
from helpers import picture

SRC = picture(512, 512)
NOVA2_PRICES = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.00004}


class TestNovaContract(FamilyContract):
    distribution = "gesso-bedrock-nova"
    examples = [
        ("bedrock/amazon.nova-canvas-v1:0", "a fox", {"size": "512x512"}),
        ("bedrock/amazon.nova-canvas-v1:0", None, {"taskType": "BACKGROUND_REMOVAL", "image": SRC}),
    ]


class TestTitanContract(FamilyContract):
    distribution = "gesso-bedrock-titan"
    examples = [
        ("bedrock/amazon.titan-image-generator-v1", "a fox", {"size": "512x512"}),
        (
            "bedrock/amazon.titan-image-generator-v2:0",
            "a fox",
            {"taskType": "INPAINTING", "image": SRC, "maskPrompt": "the fox"},
        ),
    ]


class TestStabilityContract(FamilyContract):
    distribution = "gesso-bedrock-stability"
    examples = [
        ("bedrock/stability.stable-diffusion-xl-v1", "a fox", {}),
        ("bedrock/stability.stable-image-core-v1:1", "a fox", {"size": "1024x1024"}),
        ("bedrock/us.stability.stable-image-remove-background-v1:0", None, {"image": SRC}),
    ]
    # what each model's image_edit needs beyond an image and a prompt (the contract's defaults)
    operation_kwargs = {
        "stability.sd3-5-large-v1:0": {"strength": 0.5},
        "stability.stable-fast-upscale-v1:0": {"prompt": None},
        "stability.stable-outpaint-v1:0": {"left": 64},
        "stability.stable-image-search-recolor-v1:0": {"select_prompt": "the hat"},
        "stability.stable-image-search-replace-v1:0": {"search_prompt": "the hat"},
        "stability.stable-image-erase-object-v1:0": {"prompt": None},
        "stability.stable-image-remove-background-v1:0": {"prompt": None},
        "stability.stable-style-transfer-v1:0": {"image_count": 2},
    }


class TestNova2Contract(FamilyContract):
    # AWS publishes no price for the preview: the examples bring a deployment's token prices (gesso.pricing)
    distribution = "gesso-bedrock-nova2"
    examples = [
        ("bedrock/us.amazon.nova-2-omni-v1:0", "a fox", {"prices": NOVA2_PRICES}),
        ("bedrock/us.amazon.nova-2-omni-v1:0", "a fox", {"size": "1024x1024", "prices": NOVA2_PRICES}),
    ]
    operation_kwargs = {"amazon.nova-2-omni-v1:0": {"prices": NOVA2_PRICES}}

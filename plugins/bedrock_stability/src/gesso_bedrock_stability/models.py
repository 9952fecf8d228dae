"""The Stability registrations: SDXL, the v2 generation models (SD3, SD3.5, Ultra, Core) and the Image
Services, each with its schema, prices, capabilities and lifecycle (bedrock_wire.md sections 0, 2-4, 8)."""

from __future__ import annotations

import functools
from typing import Any

from gesso.params import load_schema
from gesso.types import Lifecycle, Model, PriceTable

SDXL = "stability.sdxl"
V2 = "stability.v2"
SERVICES = "stability.services"

RETIRED = Lifecycle(status="eol", source="the Bedrock model lifecycle page lists it as retired")

#: id -> (name, aliases, lifecycle, prices). SDXL prices by size class and steps (<= 50 or more).
SDXL_MODELS: dict[str, tuple[str, tuple[str, ...], Lifecycle, PriceTable]] = {
    "stability.stable-diffusion-xl-v0": (
        "Stable Diffusion XL 0.9",
        ("stability.stable-diffusion-xl",),
        Lifecycle(status="eol", end_of_life="2024-04-30", source="AWS customer notices"),
        PriceTable(
            {"size": ("512", "1024"), "steps": ("50", "max")},
            {"512_50": 0.018, "512_max": 0.036, "1024_50": 0.036, "1024_max": 0.072},
        ),
    ),
    "stability.stable-diffusion-xl-v1": (
        "Stable Diffusion XL 1.0",
        (),
        Lifecycle(status="eol", end_of_life="2025-05-20", source="AWS customer notice"),
        PriceTable({"size": ("1024",), "steps": ("50", "max")}, {"1024_50": 0.04, "1024_max": 0.08}),
    ),
}

#: id -> (name, schema file, USD per image, lifecycle)
V2_MODELS: dict[str, tuple[str, str, float, Lifecycle]] = {
    "stability.sd3-large-v1:0": ("Stable Diffusion 3 Large", "sd3.json", 0.08, RETIRED),
    "stability.sd3-5-large-v1:0": ("Stable Diffusion 3.5 Large", "sd3.json", 0.08, Lifecycle()),
    "stability.stable-image-ultra-v1:0": ("Stable Image Ultra 1.0", "ultra.json", 0.14, RETIRED),
    "stability.stable-image-ultra-v1:1": ("Stable Image Ultra 1.1", "ultra.json", 0.14, Lifecycle()),
    "stability.stable-image-core-v1:0": ("Stable Image Core 1.0", "core.json", 0.04, RETIRED),
    "stability.stable-image-core-v1:1": ("Stable Image Core 1.1", "core.json", 0.04, Lifecycle()),
}

#: id -> (service, name, USD per image, capability)
SERVICE_MODELS: dict[str, tuple[str, str, float, str]] = {
    "stability.stable-creative-upscale-v1:0": ("creative-upscale", "Creative Upscale", 0.60, "upscale"),
    "stability.stable-conservative-upscale-v1:0": ("conservative-upscale", "Conservative Upscale", 0.40, "upscale"),
    "stability.stable-fast-upscale-v1:0": ("fast-upscale", "Fast Upscale", 0.03, "upscale"),
    "stability.stable-image-inpaint-v1:0": ("inpaint", "Inpaint", 0.07, "inpainting"),
    "stability.stable-outpaint-v1:0": ("outpaint", "Outpaint", 0.06, "outpainting"),
    "stability.stable-image-search-recolor-v1:0": ("search-recolor", "Search and Recolor", 0.07, "recolor"),
    "stability.stable-image-search-replace-v1:0": ("search-replace", "Search and Replace", 0.07, "inpainting"),
    "stability.stable-image-erase-object-v1:0": ("erase-object", "Erase Object", 0.07, "inpainting"),
    "stability.stable-image-remove-background-v1:0": (
        "remove-background",
        "Remove Background",
        0.07,
        "background_removal",
    ),
    "stability.stable-image-control-sketch-v1:0": ("control-sketch", "Control Sketch", 0.07, "image_conditioning"),
    "stability.stable-image-control-structure-v1:0": (
        "control-structure",
        "Control Structure",
        0.07,
        "image_conditioning",
    ),
    "stability.stable-image-style-guide-v1:0": ("style-guide", "Style Guide", 0.07, "style"),
    "stability.stable-style-transfer-v1:0": ("style-transfer", "Style Transfer", 0.08, "style"),
}


#: The v2 schemas with image-to-image: SD3/SD3.5, and Ultra (AWS's Ultra page has an "Image to image" tab).
#: Their models do gesso.image_edit as image-to-image (no mask: neither body has one).
I2I_SCHEMAS = ("sd3.json", "ultra.json")
#: The SDXL models that do gesso.image_edit: v1, as image-to-image (init_image) or, with a mask, masking
#: (mask_source MASK_IMAGE_WHITE and the mask converted to white = edit). SDXL 0.9 does none (our choice).
SDXL_EDITS = {"stability.stable-diffusion-xl-v1": ("edit", "edit_mask")}


@functools.cache
def schema(filename: str) -> dict[str, Any]:
    return load_schema(__package__, f"schemas/{filename}")


@functools.cache
def service_schema(service: str) -> dict[str, Any]:
    """One service's body schema, with the shared definitions it refers to."""
    document = schema("services.json")
    return {"$schema": document["$schema"], "$defs": document["$defs"], **document["services"][service]}


def service_edits(service: str) -> tuple[str, ...]:
    """Every service takes an input image, so each does gesso.image_edit; those whose body has a ``mask``
    (Inpaint, Erase Object) also take the edit's mask."""
    return ("edit", "edit_mask") if "mask" in service_schema(service)["properties"] else ("edit",)


def _emulate(call: Any) -> Any:
    from gesso_bedrock_stability import emulation

    return emulation.emulate(call)


def registrations() -> list[Model]:
    models = [
        Model(
            id=model_id, family=SDXL, name=name, aliases=aliases, param_schema=schema("sdxl.json"), prices=prices,
            capabilities={"text_to_image", "image_to_image", "inpainting", *SDXL_EDITS.get(model_id, ())},
            lifecycle=lifecycle, emulator=_emulate, request_options=("negative_prompt",),
        )
        for model_id, (name, aliases, lifecycle, prices) in SDXL_MODELS.items()
    ]  # fmt: skip
    models += [
        Model(
            id=model_id, family=V2, name=name, param_schema=schema(filename), prices={"image": price},
            capabilities={"text_to_image", *(("image_to_image", "edit") if filename in I2I_SCHEMAS else ())},
            lifecycle=lifecycle, emulator=_emulate,
        )
        for model_id, (name, filename, price, lifecycle) in V2_MODELS.items()
    ]  # fmt: skip
    models += [
        Model(
            id=model_id, family=SERVICES, name=name, routing_prefixes=("us.",), param_schema=service_schema(service),
            prices={"image": price}, capabilities={capability, "inference_profile_only", *service_edits(service)},
            emulator=_emulate,
        )
        for model_id, (service, name, price, capability) in SERVICE_MODELS.items()
    ]  # fmt: skip
    return models

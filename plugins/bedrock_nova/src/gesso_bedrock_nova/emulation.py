"""Emulated Nova Canvas: validates bodies as Bedrock does (the same schema, Bedrock's wording) and
answers with plausible, deterministic images for all seven tasks (the shared flow is
:mod:`gesso_bedrock.emulator.tasks`; Nova adds its size rules, image rules, filter messages and virtual try-on).

- TEXT_IMAGE, COLOR_GUIDED_GENERATION: synthetic images of the requested size (colour-guided ones in
  the requested colours). IMAGE_VARIATION: the first input's size unless a size is given.
- INPAINTING: the input with only the masked area (black in ``maskImage``, or a central region for a
  ``maskPrompt``) repainted; OUTPAINTING: only the rest repainted.
- BACKGROUND_REMOVAL: the input as RGBA, with its left and right quarters transparent.
- VIRTUAL_TRY_ON: the source image with the garment area taken from the reference; ``returnMask`` adds
  the mask used.

Wording for checks whose real messages were not captured (image rules, masks) is our own.
"""

from __future__ import annotations

from typing import Any

from gesso.inputs import ImageInput, load
from gesso_bedrock.emulator import EmulatedCall, EmulatorError, edits, tasks
from gesso_bedrock_nova.request import LAYOUT, MAX_ASPECT, MAX_PIXELS, image_rules


def _check_size(width: int, height: int) -> None:
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise EmulatorError.validation(
            f"The aspect ratio of the requested image must be between 1:4 and 4:1. Given: ({width}, {height})."
        )
    if width * height >= MAX_PIXELS:
        raise EmulatorError.validation(
            f"The requested image must have fewer than {MAX_PIXELS} pixels. Given: ({width}, {height})."
        )


def _try_on(
    task: str, params: dict[str, Any], images: dict[str, ImageInput], main: ImageInput, key: tuple[Any, ...]
) -> str:
    """The garment area (black in the mask) comes from the reference image."""
    from PIL import ImageOps

    area = ImageOps.invert(_tryon_mask(main, params))
    return edits.paste_from(main, images["virtualTryOnParams.referenceImage"], area)


def _tryon_mask(source: ImageInput, params: dict[str, Any]) -> Any:
    if params["maskType"] == "IMAGE":
        mask, _ = load(params["imageBasedMask"]["maskImage"], "mask")
        assert mask is not None  # call.decode_images() refused a mask that does not decode before this runs
        return edits.pil(mask).convert("L")
    return edits.region_mask((source.info.width, source.info.height))


def _returned_mask(task: str, params: dict[str, Any], images: dict[str, ImageInput]) -> str | None:
    if task == "VIRTUAL_TRY_ON" and params.get("returnMask"):
        return edits.png_b64(_tryon_mask(images["virtualTryOnParams.sourceImage"], params))
    return None


NOVA = tasks.TaskEmulation(
    layout=LAYOUT,
    check_size=_check_size,
    image_rules=image_rules,
    blocked_input=(
        "This request has been blocked by our content filters. Please adjust your text prompt to submit a new request."
    ),
    blocked_all="All of the generated images have been blocked by our content filters.",
    blocked_some="Some of the generated images have been blocked by our content filters.",
    default_seed=12,
    render_other=_try_on,
    returned_mask=_returned_mask,
)


def emulate(call: EmulatedCall) -> dict[str, Any]:
    return tasks.emulate(call, NOVA)

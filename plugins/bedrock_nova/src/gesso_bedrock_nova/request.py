"""Build and validate the Nova Canvas request body, for all seven task types.

Callers may use Bedrock's nested form (``taskType``, ``textToImageParams={...}``,
``imageGenerationConfig={...}``), flat keys (``negativeText="blurry"``, ``cfgScale=7``) and the OpenAI
parameters (``size``, ``n``, ``quality``, ``style``), in any mix. Each flat key goes where the schema
says it lives for the chosen task; two sources that disagree are an error, never a silent override.
Nothing the caller did not ask for is added: Bedrock's own defaults apply to what is left out.

Images may be bytes, a ``pathlib.Path``, base64 text or a ``data:`` URL; they are sent as base64 and
checked first (PNG or JPEG, decodable, 8 bits per channel, opaque, the supported resolutions; masks pure
black and white and the size of the image they mask).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gesso import inputs, sizes
from gesso.errors import Violation
from gesso.types import ImageRequest, PreparedRequest, Size
from gesso_bedrock import taskbody
from gesso_bedrock_nova.models import schema

TASK_PARAMS = {
    "TEXT_IMAGE": "textToImageParams",
    "COLOR_GUIDED_GENERATION": "colorGuidedGenerationParams",
    "IMAGE_VARIATION": "imageVariationParams",
    "INPAINTING": "inPaintingParams",
    "OUTPAINTING": "outPaintingParams",
    "BACKGROUND_REMOVAL": "backgroundRemovalParams",
    "VIRTUAL_TRY_ON": "virtualTryOnParams",
}
CONFIG = "imageGenerationConfig"
#: Tasks whose output takes the input image's size: width/height must not be sent.
INPUT_SIZED_TASKS = frozenset({"INPAINTING", "OUTPAINTING", "VIRTUAL_TRY_ON", "BACKGROUND_REMOVAL"})
#: Tasks that take no imageGenerationConfig at all.
NO_CONFIG_TASKS = frozenset({"BACKGROUND_REMOVAL"})
MAX_PIXELS = 4_194_304
MAX_ASPECT = 4.0
MIN_SIDE, MAX_SIDE = 320, 4096
STEP = 16
#: Input images follow the output resolution rules (but not divisibility by 16); the first broken rule is said
LIMITS = inputs.ImageLimits(
    min_side=MIN_SIDE, max_side=MAX_SIDE, max_aspect=MAX_ASPECT, pixels_below=MAX_PIXELS, first_only=True
)

#: The input whose size an edit's output takes, per task.
MAIN_IMAGE = {
    "INPAINTING": "inPaintingParams.image",
    "OUTPAINTING": "outPaintingParams.image",
    "BACKGROUND_REMOVAL": "backgroundRemovalParams.image",
    "VIRTUAL_TRY_ON": "virtualTryOnParams.sourceImage",
    "IMAGE_VARIATION": "imageVariationParams.images[0]",
}
#: Each mask field, and the image it must match in size.
MASKED_IMAGE = {
    "inPaintingParams.maskImage": "inPaintingParams.image",
    "outPaintingParams.maskImage": "outPaintingParams.image",
    "virtualTryOnParams.imageBasedMask.maskImage": "virtualTryOnParams.sourceImage",
}
#: Flat shorthands for virtual try-on fields nested one level deeper.
VTO_SHORTHANDS = {
    "maskImage": ("imageBasedMask", "maskImage"),
    "garmentClass": ("garmentBasedMask", "garmentClass"),
    "garmentStyling": ("garmentBasedMask", "garmentStyling"),
    "maskPrompt": ("promptBasedMask", "maskPrompt"),
    "preserveBodyPose": ("maskExclusions", "preserveBodyPose"),
    "preserveHands": ("maskExclusions", "preserveHands"),
    "preserveFace": ("maskExclusions", "preserveFace"),
}
#: maskShape lives in the garment or the prompt mask, whichever maskType names.
MASK_SHAPE_HOME = {"GARMENT": "garmentBasedMask", "PROMPT": "promptBasedMask"}

LAYOUT = taskbody.TaskLayout(
    schema=schema,
    tasks=TASK_PARAMS,
    no_config=NO_CONFIG_TASKS,
    input_sized=INPUT_SIZED_TASKS,
    main_image=MAIN_IMAGE,
    shorthands={"VIRTUAL_TRY_ON": VTO_SHORTHANDS},
    # imageGenerationConfig.seed: "Default: 12" (AWS, Nova user guide, "Image generation request and response
    # structure", https://docs.aws.amazon.com/nova/latest/userguide/image-gen-req-resp-structure.html): a body
    # without a seed still fixes it, so it may be answered from a cache
    default_seed=True,
)


def prepare(request: ImageRequest) -> PreparedRequest:
    params = dict(request.params)
    try_on = params.get("taskType") == "VIRTUAL_TRY_ON"
    shape = params.pop("maskShape", None) if try_on else None
    placed = taskbody.place(request, LAYOUT, params, extra_names=("maskShape",) if try_on else ())
    if shape is not None:
        home = MASK_SHAPE_HOME.get(placed.builder.get((placed.obj, "maskType")))
        if home is None:
            placed.problems.append(Violation("maskShape", "needs maskType GARMENT or PROMPT (the mask it shapes)"))
        else:
            placed.builder.set((placed.obj, home, "maskShape"), shape, "maskShape")
    notes = taskbody.fit_size(
        request, LAYOUT, placed, refuses=refuses, near=near, what="a Nova Canvas size", allowed=ALLOWED, shown=3
    )
    body, images = taskbody.check(request, LAYOUT, placed, rules=_rules)
    return taskbody.plan(LAYOUT, placed.task, body, images, warnings=notes)


def _rules(
    body: Mapping[str, Any], images: Mapping[str, tuple[inputs.ImageInput, str]], placed: taskbody.Placed
) -> list[Violation]:
    return image_rules(images)


#: Nova Canvas's output sizes, in words (AWS's Nova Canvas request reference: imageGenerationConfig)
ALLOWED = (
    f"each side a multiple of {STEP} from {MIN_SIDE} to {MAX_SIDE}, an aspect ratio between 1:4 and 4:1, and fewer "
    f"than {MAX_PIXELS:,} pixels"
)


def refuses(size: Size) -> str | None:
    """Why Nova Canvas cannot make ``size`` (``None``: it can), the first rule it breaks."""
    width, height = size.width, size.height
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            return f"each side must be between {MIN_SIDE} and {MAX_SIDE} (got {side})"
    for side in (width, height):
        if side % STEP:
            return f"each side must be a multiple of {STEP} (got {side})"
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        return f"aspect ratio must be between 1:4 and 4:1 (got {ratio:.2f}:1)"
    if size.pixels >= MAX_PIXELS:
        return f"must have fewer than {MAX_PIXELS:,} pixels (got {size.pixels:,})"
    return None


def near(size: Size) -> list[Size]:
    return sizes.grid(
        size, step=STEP, min_side=MIN_SIDE, max_side=MAX_SIDE, max_aspect=MAX_ASPECT, pixels_below=MAX_PIXELS
    )


def image_rules(images: Mapping[str, tuple[inputs.ImageInput, str]]) -> list[Violation]:
    """Input images: PNG or JPEG, the supported resolutions, 8-bit, opaque; masks black and white and
    the size of the image they mask."""
    return taskbody.image_rules(images, masked_image=MASKED_IMAGE, limits=LIMITS.check, opaque=True)

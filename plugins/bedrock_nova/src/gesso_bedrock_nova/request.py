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

import functools
from collections.abc import Mapping

from gesso import inputs
from gesso.errors import InvalidRequestError, Violation
from gesso.params import BodyBuilder, property_names, raise_for, schema_violations, subschema
from gesso.types import ImageRequest, PreparedRequest, Size
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
BODY_OBJECTS = frozenset((*TASK_PARAMS.values(), CONFIG))
#: Tasks whose output takes the input image's size: width/height must not be sent.
INPUT_SIZED_TASKS = frozenset({"INPAINTING", "OUTPAINTING", "VIRTUAL_TRY_ON", "BACKGROUND_REMOVAL"})
#: Tasks that take no imageGenerationConfig at all.
NO_CONFIG_TASKS = frozenset({"BACKGROUND_REMOVAL"})

#: OpenAI quality values and Nova's own, mapped to Nova's two levels.
QUALITY = {
    "standard": "standard",
    "premium": "premium",
    "hd": "premium",
    "high": "premium",
    "low": "standard",
    "medium": "standard",
    "auto": "standard",
}
DEFAULT_SIZE = Size(1024, 1024)
MAX_PIXELS = 4_194_304
MAX_ASPECT = 4.0
MIN_SIDE, MAX_SIDE = 320, 4096

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


@functools.cache
def flat_routes(task: str) -> Mapping[str, tuple[str, ...]]:
    """Flat parameter name -> its path in the body for ``task``, read from the schema."""
    obj = TASK_PARAMS[task]
    routes: dict[str, tuple[str, ...]] = {name: (obj, name) for name in property_names(schema(), obj)}
    if task == "VIRTUAL_TRY_ON":
        routes.update({name: (obj, *path) for name, path in VTO_SHORTHANDS.items()})
    if task not in NO_CONFIG_TASKS:
        for name in property_names(schema(), CONFIG):
            routes.setdefault(name, (CONFIG, name))
    return routes


def prepare(request: ImageRequest) -> PreparedRequest:
    model = request.model_name
    params = dict(request.params)
    task = params.pop("taskType", "TEXT_IMAGE")
    if task not in TASK_PARAMS:
        raise InvalidRequestError(
            [Violation("taskType", f"must be one of: {', '.join(TASK_PARAMS)} (got {task!r})")], model=model
        )
    obj = TASK_PARAMS[task]
    routes = flat_routes(task)
    builder = BodyBuilder()
    builder.set(("taskType",), task, "taskType")
    problems: list[Violation] = []

    shape = params.pop("maskShape", None) if task == "VIRTUAL_TRY_ON" else None
    for key, value in params.items():
        if key in BODY_OBJECTS:
            if isinstance(value, Mapping):
                builder.merge((key,), value, key)
            else:
                builder.set((key,), value, key)
        elif key in routes:
            builder.set(routes[key], value, key)
        else:
            allowed = sorted({*routes, *(("maskShape",) if task == "VIRTUAL_TRY_ON" else ())})
            problems.append(Violation(key, f"unknown parameter for taskType {task}; allowed: {', '.join(allowed)}"))
    if shape is not None:
        home = MASK_SHAPE_HOME.get(builder.get((obj, "maskType")))
        if home is None:
            problems.append(Violation("maskShape", "needs maskType GARMENT or PROMPT (the mask it shapes)"))
        else:
            builder.set((obj, home, "maskShape"), shape, "maskShape")

    if request.prompt is not None:
        if "text" in routes and routes["text"][0] == obj:
            builder.set((obj, "text"), request.prompt, "prompt")
        else:
            problems.append(Violation("prompt", f"taskType {task} takes no prompt text; leave prompt out"))
    if request.style is not None:
        if "style" in routes:
            builder.set(routes["style"], request.style, "style")
        else:
            problems.append(Violation("style", f"taskType {task} takes no style"))
    problems += _openai_config(request, task, builder)

    # every task object has required fields, so an empty one is never sent: it only lets the schema
    # name exactly which fields are missing
    builder.body.setdefault(obj, {})
    body = {key: builder.body[key] for key in ("taskType", obj, *sorted(BODY_OBJECTS)) if key in builder.body}
    problems += builder.violations
    images, bad_images = inputs.convert_images(body, schema())
    problems += bad_images
    found = schema_violations(schema(), body, sources=builder.sources)
    if "text" in subschema(schema(), obj).get("required", ()) and builder.get((obj, "text")) is None:
        # say what the caller left out (the prompt), not where Bedrock wanted it
        problems.append(Violation("prompt", f"is required for taskType {task}"))
        found = [v for v in found if not (v.path in (obj, f"{obj}.text") and v.message == "is required")]
    problems += found
    if not problems:
        problems += _size_rules(body, builder.sources)
        problems += _image_rules(images)
    raise_for(problems, model=model)

    config = body.get(CONFIG, {})
    width, height = config.get("width"), config.get("height")
    main = images.get(MAIN_IMAGE.get(task, ""))
    if width and height:
        size = Size(width, height)
    elif main is not None:
        size = Size(main[0].info.width, main[0].info.height)
    else:
        size = DEFAULT_SIZE
    details = {
        "task": task,
        "size": size,
        "quality": config.get("quality", "standard"),
        "requested": 1 if task in NO_CONFIG_TASKS else config.get("numberOfImages", 1),
    }
    return PreparedRequest(bodies=[body], details=details)


def _openai_config(request: ImageRequest, task: str, builder: BodyBuilder) -> list[Violation]:
    """Place ``size``, ``n`` and ``quality`` in imageGenerationConfig, or say why they cannot go."""
    problems = []
    if task in NO_CONFIG_TASKS:
        for name in ("size", "n", "quality"):
            if getattr(request, name) is not None:
                problems.append(
                    Violation(name, f"taskType {task} takes no {name}: it returns one image the size of the input")
                )
        return problems
    if request.size is not None:
        if task in INPUT_SIZED_TASKS:
            problems.append(
                Violation("size", f"cannot be used with taskType {task}: the output takes the input image's size")
            )
        else:
            builder.set((CONFIG, "width"), request.size.width, "size")
            builder.set((CONFIG, "height"), request.size.height, "size")
    if request.n is not None:
        builder.set((CONFIG, "numberOfImages"), request.n, "n")
    if request.quality is not None:
        mapped = QUALITY.get(request.quality.lower())
        if mapped is None:
            problems.append(
                Violation(
                    "quality",
                    f"must be one of: standard, premium, or OpenAI's hd, high (-> premium), low, medium, auto "
                    f"(-> standard) (got {request.quality!r})",
                )
            )
        else:
            builder.set((CONFIG, "quality"), mapped, "quality")
    return problems


def _size_rules(body: Mapping, sources: Mapping[str, str]) -> list[Violation]:
    """The resolution rules a schema cannot express: aspect ratio and total pixels."""
    config = body.get(CONFIG) or {}
    width, height = config.get("width"), config.get("height")
    if not (isinstance(width, int) and isinstance(height, int)):
        return []
    where = "size" if sources.get(f"{CONFIG}.width") == "size" else f"{CONFIG}.width/height"
    found = []
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        found.append(
            Violation(where, f"aspect ratio must be between 1:4 and 4:1 (got {width}x{height}, {ratio:.2f}:1)")
        )
    if width * height >= MAX_PIXELS:
        found.append(
            Violation(where, f"must have fewer than {MAX_PIXELS:,} pixels (got {width}x{height} = {width * height:,})")
        )
    return found


def _image_rules(images: Mapping[str, tuple[inputs.ImageInput, str]]) -> list[Violation]:
    """Input images: PNG or JPEG, the supported resolutions, 8-bit, opaque; masks black and white and
    the size of the image they mask."""
    found: list[Violation] = []
    for where, (image, kind) in images.items():
        info = image.info
        if info.format not in ("png", "jpeg"):
            found.append(Violation(where, f"must be a PNG or JPEG image (got {info.format.upper()})"))
            continue
        w, h = info.width, info.height
        if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
            found.append(Violation(where, f"each side must be {MIN_SIDE} to {MAX_SIDE} pixels (got {w}x{h})"))
        elif max(w, h) / min(w, h) > MAX_ASPECT:
            found.append(Violation(where, f"aspect ratio must be between 1:4 and 4:1 (got {w}x{h})"))
        elif w * h >= MAX_PIXELS:
            found.append(Violation(where, f"must have fewer than {MAX_PIXELS:,} pixels (got {w}x{h} = {w * h:,})"))
        masked = images.get(MASKED_IMAGE.get(where, ""))
        if masked is not None and (masked[0].info.width, masked[0].info.height) != (w, h):
            other = masked[0].info
            found.append(
                Violation(
                    where, f"must be the size of {MASKED_IMAGE[where]} ({other.width}x{other.height}; got {w}x{h})"
                )
            )
        found += inputs.check_pixels(image, where, mask=kind == "mask")
    return found

"""Request bodies shaped ``{"taskType", <task object>, "imageGenerationConfig"}``, as Amazon's image
models (Nova Canvas, Titan Image Generator) take them, assembled from everything a caller may mix, and
their responses, ``{"images": [...], "error": ..., "maskImage": ...}``.

A family describes its layout once (:class:`TaskLayout`); :func:`place` puts the caller's nested objects,
flat keys, prompt and OpenAI parameters where the family's schema says they live, reporting
contradictions; :func:`check` runs gesso's family pipeline (:func:`gesso.family.check`) with the
family's own rules; :func:`plan` builds the plan the parse and cost hooks read. Between the steps a family
may add its own placements to the :class:`~gesso.params.BodyBuilder`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from gesso import family, inputs
from gesso.errors import ContentFilteredError, InvalidRequestError, ProviderError, Violation
from gesso.imaging import inspect_b64
from gesso.params import BodyBuilder, property_names, short, unknown_parameter
from gesso.types import GeneratedImage, ImageRequest, ParsedResponse, PreparedRequest, RawResponse, Size

#: OpenAI quality values and Amazon's own, mapped to Amazon's two levels.
AMAZON_QUALITY = {
    "standard": "standard",
    "premium": "premium",
    "hd": "premium",
    "high": "premium",
    "low": "standard",
    "medium": "standard",
    "auto": "standard",
}


@attrs.frozen(kw_only=True, eq=False)
class TaskLayout:
    """How one family lays out its task bodies.

    ``tasks`` maps each ``taskType`` to its params object; ``no_config`` tasks send no config object;
    ``input_sized`` tasks return the input's size, so ``size`` is refused; ``main_image`` names, per task,
    the input whose size the output takes; ``shorthands`` adds flat names for deeper fields, per task.
    """

    schema: Callable[[], Mapping[str, Any]]
    tasks: Mapping[str, str]
    config: str = "imageGenerationConfig"
    no_config: frozenset[str] = frozenset()
    input_sized: frozenset[str] = frozenset()
    main_image: Mapping[str, str] = attrs.field(factory=dict)
    shorthands: Mapping[str, Mapping[str, tuple[str, ...]]] = attrs.field(factory=dict)
    quality: Mapping[str, str] = attrs.field(factory=lambda: AMAZON_QUALITY)
    default_task: str = "TEXT_IMAGE"
    default_size: Size = attrs.field(factory=lambda: Size(1024, 1024))

    @property
    def body_objects(self) -> frozenset[str]:
        return frozenset((*self.tasks.values(), self.config))

    @functools.cache  # noqa: B019 (layouts are module-level constants)
    def routes(self, task: str) -> Mapping[str, tuple[str, ...]]:
        """Flat parameter name -> its path in the body for ``task``, read from the schema."""
        obj = self.tasks[task]
        schema = self.schema()
        found: dict[str, tuple[str, ...]] = {name: (obj, name) for name in property_names(schema, obj)}
        found.update({name: (obj, *path) for name, path in self.shorthands.get(task, {}).items()})
        if task not in self.no_config:
            for name in property_names(schema, self.config):
                found.setdefault(name, (self.config, name))
        return found


@attrs.define
class Placed:
    """The state between :func:`place` and :func:`check`."""

    task: str
    obj: str
    builder: BodyBuilder
    problems: list[Violation]


def place(
    request: ImageRequest, layout: TaskLayout, params: dict[str, Any], *, extra_names: tuple[str, ...] = ()
) -> Placed:
    """Place the caller's parameters. ``params`` are the provider kwargs the family has not taken itself;
    ``extra_names`` are flat names the family handles on its own (listed in unknown-key messages)."""
    task = params.pop("taskType", layout.default_task)
    if not isinstance(task, str) or task not in layout.tasks:
        raise InvalidRequestError(
            [Violation("taskType", f"must be one of: {', '.join(layout.tasks)} (got {short(task)})")],
            model=request.model_name,
        )
    obj = layout.tasks[task]
    routes = layout.routes(task)
    builder = BodyBuilder()
    builder.set(("taskType",), task, "taskType")
    problems: list[Violation] = []
    objects = layout.body_objects
    for key, value in params.items():
        if key in objects:
            if isinstance(value, Mapping):
                builder.merge((key,), value, key)
            else:
                builder.set((key,), value, key)
        elif key in routes:
            builder.set(routes[key], value, key)
        else:
            problems.append(unknown_parameter(key, {*routes, *extra_names}, f"taskType {task}"))

    if request.prompt is not None:
        if routes.get("text") == (obj, "text"):
            builder.set((obj, "text"), request.prompt, "prompt")
        else:
            problems.append(Violation("prompt", f"taskType {task} takes no prompt text; leave prompt out"))
    if request.style is not None:
        if "style" in routes:
            builder.set(routes["style"], request.style, "style")
        else:
            problems.append(Violation("style", f"taskType {task} takes no style"))
    problems += _openai_config(request, layout, task, builder)
    return Placed(task=task, obj=obj, builder=builder, problems=problems)


def _openai_config(request: ImageRequest, layout: TaskLayout, task: str, builder: BodyBuilder) -> list[Violation]:
    """Place ``size``, ``n`` and ``quality`` in the config object, or say why they cannot go."""
    config = layout.config
    problems = []
    if task in layout.no_config:
        for name in ("size", "n", "quality"):
            if getattr(request, name) is not None:
                problems.append(
                    Violation(name, f"taskType {task} takes no {name}: it returns one image the size of the input")
                )
        return problems
    if request.size is not None:
        if task in layout.input_sized:
            problems.append(
                Violation("size", f"cannot be used with taskType {task}: the output takes the input image's size")
            )
        else:
            builder.set((config, "width"), request.size.width, "size")
            builder.set((config, "height"), request.size.height, "size")
    if request.n is not None:
        builder.set((config, "numberOfImages"), request.n, "n")
    if request.quality is not None:
        mapped = layout.quality.get(request.quality.lower())
        if mapped is None:
            choices = sorted(set(layout.quality.values()))
            problems.append(
                Violation(
                    "quality",
                    f"must be one of: {', '.join(choices)}, or OpenAI's hd, high (-> premium), low, medium, auto "
                    f"(-> standard) (got {request.quality!r})",
                )
            )
        else:
            builder.set((config, "quality"), mapped, "quality")
    return problems


Rules = Callable[[dict[str, Any], dict[str, tuple["inputs.ImageInput", str]], Placed], list[Violation]]


def check(
    request: ImageRequest,
    layout: TaskLayout,
    placed: Placed,
    *,
    schema: Mapping[str, Any] | None = None,
    rules: Rules | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[inputs.ImageInput, str]]]:
    """Convert images, validate against ``schema`` (default: the layout's), run the family's ``rules``
    on a schema-valid body, and raise one error listing every problem. Returns (body, images)."""
    schema = schema if schema is not None else layout.schema()
    builder, obj, task = placed.builder, placed.obj, placed.task
    # every task object has required fields, so an empty one is never sent: it only lets the schema
    # name exactly which fields are missing
    builder.body.setdefault(obj, {})
    order = ("taskType", obj, *sorted(layout.body_objects))
    body = {key: builder.body[key] for key in order if key in builder.body}
    images = family.check(
        request,
        body,
        schema,
        what=f"taskType {task}",
        problems=placed.problems + builder.violations,
        sources=builder.sources,
        prompt_at=f"{obj}.text",
        rules=(lambda body, images: rules(body, images, placed)) if rules is not None else None,
    )
    return body, images


Limits = Callable[[str, "inputs.ImageInput"], list[Violation]]


def image_rules(
    images: Mapping[str, tuple[inputs.ImageInput, str]],
    *,
    masked_image: Mapping[str, str],
    limits: Limits,
    opaque: bool,
) -> list[Violation]:
    """Amazon input images: PNG or JPEG, the family's ``limits`` (sizes, bytes), decodable 8-bit pixels
    (fully opaque when ``opaque``); each mask black and white and the size of the image it masks
    (``masked_image`` maps mask paths to image paths)."""
    found: list[Violation] = []
    for where, (image, kind) in images.items():
        if image.info.format not in ("png", "jpeg"):
            found.append(Violation(where, f"must be a PNG or JPEG image (got {image.info.format.upper()})"))
            continue
        refused = limits(where, image)
        masked = images.get(masked_image.get(where, ""))
        if masked is not None:
            refused += inputs.same_size(where, image, masked_image[where], masked[0])
        # pixels are decoded only for an image whose header passed: a refused one costs no decoding
        found += refused or inputs.check_pixels(image, where, mask=kind == "mask", opaque=opaque)
    return found


def plan(
    layout: TaskLayout, task: str, body: Mapping[str, Any], images: Mapping[str, Any], warnings: Sequence[str] = ()
) -> PreparedRequest:
    """The call's plan: the body, the task, the output size (asked for, else the main input's, else the
    default), the quality and the images asked for."""
    config = body.get(layout.config, {})
    width, height = config.get("width"), config.get("height")
    main = images.get(layout.main_image.get(task, ""))
    if width and height:
        size = Size(width, height)
    elif main is not None:
        size = Size(main[0].info.width, main[0].info.height)
    else:
        size = layout.default_size
    return PreparedRequest(
        bodies=[body],
        task=task,
        size=size,
        quality=config.get("quality", "standard"),
        requested=1 if task in layout.no_config else config.get("numberOfImages", 1),
        warnings=warnings,
    )


def parse_response(request: ImageRequest, prepared: PreparedRequest, response: RawResponse) -> ParsedResponse:
    """``{"images": [...], "error": ..., "maskImage": ...}``. Output filtering is not an HTTP error on
    Bedrock: a 200 body carries ``error`` and fewer images. All withheld becomes a
    :class:`ContentFilteredError`; some withheld returns the rest and says so in ``warnings``."""
    model = request.model_name
    who = request.model.name or request.model.family
    data = family.json_answer(request, response)
    images = data.get("images")
    error = data.get("error")
    if images is None:
        images = []
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ProviderError(f"{who} answered without a list of base64 images", model=model)
    if error and not images:
        raise ContentFilteredError(f"Bedrock content filter: {error}", model=model)
    if not images:
        raise ProviderError(f"{who} answered with no images and no error", model=model)
    requested = prepared.requested
    withheld = max(requested - len(images), 0) if error else 0
    warnings = [f"{error} ({withheld} of {requested} withheld)" if withheld else str(error)] if error else []
    mask = data.get("maskImage")
    info = inspect_b64(images[0])
    return ParsedResponse(
        images=[GeneratedImage(b64=img) for img in images],
        filtered=withheld,
        warnings=warnings,
        size=Size(info.width, info.height) if info else None,
        mask=GeneratedImage(b64=mask) if isinstance(mask, str) and mask else None,
    )

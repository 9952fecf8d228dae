"""Request bodies shaped ``{"taskType", <task object>, "imageGenerationConfig"}``, as Amazon's image
models (Nova Canvas, Titan Image Generator) take them, assembled from everything a caller may mix, and
their responses, ``{"images": [...], "error": ..., "maskImage": ...}``.

A family describes its layout once (:class:`TaskLayout`); :func:`place` puts the caller's nested objects,
flat keys, prompt and OpenAI parameters where the family's schema says they live, reporting
contradictions; :func:`check` runs gesso's family pipeline (:func:`gesso.family.check`) with the
family's own rules; :func:`plan` builds the plan the parse and cost hooks read. Between the steps a family
may add its own placements to the :class:`~gesso.params.BodyBuilder`.

An edit or variation (``request.operation``, from :func:`gesso.image_edit` / :func:`gesso.image_variation`)
is mapped here, once for every Amazon family: :func:`place` picks its task and puts the caller's images and
mask where that task takes them (:data:`AMAZON_INPUTS`). An edit with a ``mask``, a ``maskPrompt`` or a
``maskImage`` is INPAINTING; without any, IMAGE_VARIATION guided by the prompt (litellm's choice); a
``taskType`` the caller gives chooses another edit task (OUTPAINTING, BACKGROUND_REMOVAL, VIRTUAL_TRY_ON
where the family has it). A variation is IMAGE_VARIATION with every image. OpenAI's mask is converted into
the task's convention (inpainting and try-on: black = edit; outpainting: white = edit). A field given both
by the operation's arguments and by a provider parameter, or a task that cannot take the inputs, is an
error, never a silent choice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from gesso import family, inputs, operations, sizes
from gesso.errors import ContentFilteredError, InvalidRequestError, ProviderError, Violation
from gesso.imaging import inspect_b64
from gesso.params import BodyBuilder, dotted, property_names, raise_for, short, subschema, unknown_parameter
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


@attrs.frozen(kw_only=True)
class TaskInputs:
    """Where an edit's or variation's inputs go in one task's params object: ``images`` one path per
    image, in order (or ``image_list``, a list taking them all, at most the schema's ``maxItems``);
    ``mask`` the path of a mask, in the ``mask_edit`` convention (which colour marks the area to edit);
    ``mask_alternative`` a field that is the mask in words (the two exclude each other); ``mask_implies`` a
    field and the value a mask means (virtual try-on's ``maskType`` IMAGE), set when the caller left it out."""

    images: tuple[tuple[str, ...], ...] = ()
    image_list: str | None = None
    mask: tuple[str, ...] | None = None
    mask_edit: str = operations.BLACK
    mask_alternative: tuple[str, ...] | None = None
    mask_implies: tuple[tuple[str, ...], str] | None = None


#: Nova Canvas's and Titan's edit tasks (a family offers those of its ``TaskLayout.tasks``). Masks: pixels
#: (0,0,0) are "inside the mask"; inpainting changes the inside, outpainting keeps it and changes the
#: outside (AWS's Titan and Nova request references), and try-on's image mask is black = edit, as inpainting.
AMAZON_INPUTS: Mapping[str, TaskInputs] = {
    "INPAINTING": TaskInputs(images=(("image",),), mask=("maskImage",), mask_alternative=("maskPrompt",)),
    "OUTPAINTING": TaskInputs(
        images=(("image",),), mask=("maskImage",), mask_edit=operations.WHITE, mask_alternative=("maskPrompt",)
    ),
    "IMAGE_VARIATION": TaskInputs(image_list="images"),
    "BACKGROUND_REMOVAL": TaskInputs(images=(("image",),)),
    "VIRTUAL_TRY_ON": TaskInputs(
        images=(("sourceImage",), ("referenceImage",)),
        mask=("imageBasedMask", "maskImage"),
        mask_implies=(("maskType",), "IMAGE"),
    ),
}
#: The task of a variation, and of an edit with no mask of any kind.
VARIATION_TASK = "IMAGE_VARIATION"
#: The task of an edit with a mask (``mask``, or the caller's ``maskPrompt``/``maskImage``).
MASKED_EDIT_TASK = "INPAINTING"


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
    #: where an edit's or variation's inputs go, per task (tasks not in ``tasks`` are ignored)
    inputs: Mapping[str, TaskInputs] = attrs.field(factory=lambda: AMAZON_INPUTS)
    #: the provider documents the seed a config without one uses (Nova Canvas: 12), so every config fixes it
    default_seed: bool = False

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
    ``extra_names`` are flat names the family handles on its own (listed in unknown-key messages).
    An edit's or variation's images and mask are placed too (:func:`operation_task`, :func:`place_inputs`)."""
    if request.operation != "generate":
        params["taskType"] = operation_task(request, layout, params)
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
    if request.operation != "generate":
        refused = place_inputs(request, layout, task, builder)
        if refused:  # said now: the body lacks what was refused, and the schema would only repeat it
            raise_for([*problems, *builder.violations, *refused], model=request.model_name)
    return Placed(task=task, obj=obj, builder=builder, problems=problems)


def operation_tasks(layout: TaskLayout, operation: str) -> list[str]:
    """The tasks that can carry ``operation`` (``"edit"`` or ``"variation"``) in this layout."""
    if operation == "variation":
        return [VARIATION_TASK] if VARIATION_TASK in layout.tasks else []
    return [task for task in layout.tasks if task in layout.inputs]


def operation_task(request: ImageRequest, layout: TaskLayout, params: Mapping[str, Any]) -> str:
    """The task of an edit or variation: the caller's ``taskType`` when it can carry the operation (any
    other is an error naming those that can), else INPAINTING for an edit with a mask of any kind (``mask``,
    or ``maskPrompt``/``maskImage`` flat or in ``inPaintingParams``), else IMAGE_VARIATION."""
    allowed = operation_tasks(layout, request.operation)
    what = "an image edit" if request.operation == "edit" else "an image variation"
    given = params.get("taskType")
    if given is not None:
        if isinstance(given, str) and given in allowed:
            return given
        raise InvalidRequestError(
            [
                Violation(
                    "taskType", f"must be one of: {', '.join(allowed)} for {what}, or left out (got {short(given)})"
                )
            ],
            model=request.model_name,
        )
    if request.operation == "edit":
        nested = params.get(layout.tasks.get(MASKED_EDIT_TASK, ""))
        named = ("maskPrompt", "maskImage")
        if (
            request.mask is not None
            or any(params.get(name) is not None for name in named)
            or (isinstance(nested, Mapping) and any(nested.get(name) is not None for name in named))
        ) and MASKED_EDIT_TASK in allowed:
            return MASKED_EDIT_TASK
    return VARIATION_TASK


def place_inputs(request: ImageRequest, layout: TaskLayout, task: str, builder: BodyBuilder) -> list[Violation]:
    """Put an edit's or variation's images and mask where ``task`` takes them; a field the caller's
    parameters already set, more images than the task takes, or a mask it cannot take is a violation."""
    spec = layout.inputs[task]
    obj = layout.tasks[task]
    problems: list[Violation] = []
    images = []
    for index, image in enumerate(request.images):  # read now, so a bad one is named as the caller gave it
        loaded, found = inputs.load(image, "image" if len(request.images) == 1 else f"image[{index}]")
        problems += found
        images.append(loaded.b64 if loaded is not None else image)
    if problems:
        return problems
    if spec.image_list is not None:
        limit = subschema(layout.schema(), obj, spec.image_list).get("maxItems")
        if limit is not None and len(images) > limit:
            problems.append(Violation("image", f"taskType {task} takes at most {limit} images (got {len(images)})"))
        else:
            _put(builder, (obj, spec.image_list), list(images), "image", problems)
    elif len(images) > len(spec.images):
        if len(spec.images) == 1:
            count = "one image"
        else:  # say what each image is for
            count = f"at most {len(spec.images)} images, in order: {', '.join(path[-1] for path in spec.images)}"
        problems.append(Violation("image", f"taskType {task} takes {count} (got {len(images)})"))
    else:
        for index, (path, image) in enumerate(zip(spec.images, images)):
            _put(builder, (obj, *path), image, "image" if len(images) == 1 else f"image[{index}]", problems)
    if request.mask is not None:
        problems += _place_mask(request.mask, layout, task, spec, builder)
    return problems


def _place_mask(mask: Any, layout: TaskLayout, task: str, spec: TaskInputs, builder: BodyBuilder) -> list[Violation]:
    obj = layout.tasks[task]
    if spec.mask is None:
        takers = [t for t in layout.tasks if t in layout.inputs and layout.inputs[t].mask is not None]
        return [Violation("mask", f"taskType {task} takes no mask (tasks that take one: {', '.join(takers)})")]
    alternative = spec.mask_alternative
    if alternative is not None and builder.get((obj, *alternative)) is not None:
        name = alternative[-1]
        return [Violation("mask", f"give either mask or {name}, not both: each marks the area to edit")]
    problems: list[Violation] = []
    if spec.mask_implies is not None:
        path, value = spec.mask_implies
        current = builder.get((obj, *path))
        if current is None:
            builder.set((obj, *path), value, "mask")  # the mask argument is the image mask the task names
        elif current != value:
            where = path[-1]
            return [
                Violation(
                    "mask", f"needs {where} {value} (an image mask), or leave mask out (got {where} {short(current)})"
                )
            ]
    converted, found = operations.family_mask(mask, edit=spec.mask_edit)
    problems += found
    if converted is not None:
        _put(builder, (obj, *spec.mask), converted.b64, "mask", problems)
    return problems


def _put(builder: BodyBuilder, path: tuple[str, ...], value: Any, source: str, problems: list[Violation]) -> None:
    """Set ``path`` from an operation argument, unless the caller's parameters already set it."""
    if builder.get(path) is not None:
        given = builder.sources.get(dotted(path), dotted(path))
        problems.append(
            Violation(
                source, f"is given twice: by the {source.split('[')[0]} argument and by {given}; leave {given} out"
            )
        )
        return
    builder.set(path, value, source)


def _openai_config(request: ImageRequest, layout: TaskLayout, task: str, builder: BodyBuilder) -> list[Violation]:
    """Place ``size``, ``n`` and ``quality`` in the config object, or say why they cannot go."""
    config = layout.config
    problems = []
    if task in layout.no_config:  # a size is checked against the input's by check(); n=1 is what it does
        for name in ("n", "quality"):
            if getattr(request, name) is not None and not (name == "n" and request.n == 1):
                problems.append(
                    Violation(name, f"taskType {task} takes no {name}: it returns one image the size of the input")
                )
        return problems
    if request.size is not None and task not in layout.input_sized:  # input-sized: checked by check()
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


def fit_size(
    request: ImageRequest,
    layout: TaskLayout,
    placed: Placed,
    *,
    refuses: Callable[[Size], str | None],
    near: Callable[[Size], Any],
    what: str,
    allowed: str = "",
    shown: int = 1,
) -> list[str]:
    """gesso's size rule (:func:`gesso.sizes.fit_body`) on the width and height placed in the config object.
    Tasks whose output takes the input's size are left to :func:`check`."""
    if placed.task in layout.input_sized or placed.task in layout.no_config:
        return []
    return sizes.fit_body(
        placed.builder, (layout.config,), placed.problems, snap=request.snap_size, refuses=refuses, near=near,
        what=what, allowed=allowed, shown=shown,
    )  # fmt: skip


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
        rules=lambda body, images: [
            *_input_size(request, layout, task, images),
            *(_named(request, rules(body, images, placed), builder.sources) if rules is not None else ()),
        ],
    )
    return body, images


def _input_size(
    request: ImageRequest, layout: TaskLayout, task: str, images: Mapping[str, tuple[inputs.ImageInput, str]]
) -> list[Violation]:
    """A task whose output takes its input's size takes a ``size`` equal to it (the caller's ``size="auto"`` is
    none), never another: no silent resize."""
    if request.size is None or (task not in layout.input_sized and task not in layout.no_config):
        return []
    main = images.get(layout.main_image.get(task, ""))
    if main is None:
        return []
    return sizes.matches_input(request.size, Size(main[0].info.width, main[0].info.height), f"taskType {task}")


def _named(request: ImageRequest, found: list[Violation], sources: Mapping[str, str]) -> list[Violation]:
    """An edit's or variation's image rules name the argument a refused image came from (``[from mask]``),
    as schema messages do: the caller wrote ``mask``, not ``inPaintingParams.maskImage``."""
    if request.operation == "generate":
        return found
    named = []
    for violation in found:
        source = sources.get(violation.path) or sources.get(violation.path.split("[")[0])
        if source in ("image", "mask") or (source or "").startswith("image["):
            violation = Violation(violation.path, f"{violation.message} [from {source}]")
        named.append(violation)
    return named


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
        seeded=task not in layout.no_config and (layout.default_seed or "seed" in config),
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

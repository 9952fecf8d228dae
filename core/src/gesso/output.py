"""What gesso does with the images after a successful response: the format the caller asked for, and, for
``response_format="url"``, the image store they are written to.

- ``output_format`` (``png``, ``jpeg``, ``webp``) is the model's own parameter when its request body has
  one (Stability's): the family sends it and the model encodes the images. Otherwise gesso takes it and
  converts the images with Pillow (imported only then) once they arrive.
- ``output_compression`` (0-100, as in OpenAI's gpt-image) is the JPEG or WebP quality gesso encodes with,
  locally, whoever chose the format (a model's own JPEG is re-encoded at that quality). Left out, it is 100,
  OpenAI's documented default (:data:`DEFAULT_COMPRESSION`). PNG is lossless: a compression for it is refused,
  as OpenAI refuses it, rather than read as a zlib level.
- ``image_store`` (or ``GESSO_IMAGE_STORE``) and ``image_url_expiry``: see :mod:`gesso.store`.

Everything is checked in :func:`plan`, before anything is sent.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import attrs

from gesso import options, store
from gesso.errors import ProviderError, Violation
from gesso.imaging import inspect_b64
from gesso.params import short
from gesso.types import GeneratedImage, Model

FORMATS: tuple[str, ...] = get_args(options.OutputFormat)
LOSSY = ("jpeg", "webp")
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
STORE_ENV = "GESSO_IMAGE_STORE"
DEFAULT_EXPIRY = 3600  # an hour, as OpenAI's image URLs
MAX_EXPIRY = 604_800  # seven days: the longest a presigned URL can live
#: The JPEG/WebP quality when the caller gives no ``output_compression``: OpenAI's API reference (Images, Create
#: image) says "output_compression ... defaults to 100" (Pillow's own default would be 75)
DEFAULT_COMPRESSION = 100


@attrs.frozen
class Output:
    """One call's plan for its images: the format gesso encodes them in (``encode``; ``None`` keeps what
    the model sent) at which ``quality``, the format the caller asked for (``requested``: the response
    then reports the format it holds), and the ``store`` that ``url`` images are written to."""

    encode: str | None = None
    quality: int | None = None
    requested: str | None = None
    store: Any = None

    @property
    def blocking(self) -> bool:
        """Whether finishing the call encodes or writes images: work that must stay off an event loop."""
        return self.encode is not None or self.store is not None


NONE = Output()


def plan(
    opts: Mapping[str, Any], kwargs: dict[str, Any], model: Model, response_format: str, problems: list[Violation]
) -> Output:
    """Check the output options and plan the images' way back. Takes ``output_format`` out of ``kwargs``
    unless the model's body has that field (then the family sends it). Appends a violation per problem."""
    own = "output_format" in (model.param_schema.get("properties") or {})
    if own:
        wanted = kwargs.get("output_format")
    else:
        wanted = kwargs.pop("output_format", None)
        if wanted is not None and wanted not in FORMATS:
            allowed = ", ".join(FORMATS)
            problems.append(Violation("output_format", f"must be one of: {allowed} (got {short(wanted)})"))
            wanted = None
    quality = opts.get("output_compression")
    options.positive("output_compression", quality, problems, integer=True, zero=True, maximum=100)
    if quality is not None and wanted not in LOSSY and (wanted is None or wanted in FORMATS):
        problems.append(
            Violation(
                "output_compression",
                f"applies to jpeg and webp output only: set output_format to jpeg or webp "
                f"(output_format is {wanted or 'not set'})",
            )
        )
    encode = wanted if wanted in FORMATS and (quality is not None or not own) else None
    if encode is not None and importlib.util.find_spec("PIL") is None:
        problems.append(Violation("output_format", f"converting images to {encode} needs Pillow: pip install pillow"))
    return Output(
        encode=encode,
        quality=quality if isinstance(quality, int) else None,
        requested=wanted if isinstance(wanted, str) else None,
        store=_open_store(opts, response_format, problems),
    )


def _open_store(opts: Mapping[str, Any], response_format: str, problems: list[Violation]) -> Any:
    url, where = opts.get("image_store"), ""
    if url is not None and response_format != "url":
        if response_format == "b64_json":
            problems.append(
                Violation("image_store", 'applies to response_format="url" only (b64_json returns the images inline)')
            )
        return None
    if url is None and response_format == "url" and os.environ.get(STORE_ENV):
        url, where = os.environ[STORE_ENV], f" (from {STORE_ENV})"
    expiry = opts.get("image_url_expiry")
    options.positive("image_url_expiry", expiry, problems, integer=True, maximum=MAX_EXPIRY)
    if expiry is not None and url is None:
        message = f"applies to URLs in an image store only: set image_store (or {STORE_ENV}) and response_format='url'"
        problems.append(Violation("image_url_expiry", message))
    if url is None:
        return None
    if not isinstance(url, str):
        problems.append(Violation("image_store", f"must be a URL string (got {type(url).__name__})"))
        return None
    try:
        return store.open_store(url, expiry if isinstance(expiry, int) and 0 < expiry <= MAX_EXPIRY else DEFAULT_EXPIRY)
    except ValueError as exc:
        problems.append(Violation("image_store", f"{exc} (got {url!r}{where})"))
        return None


def encode(output: Output, image: GeneratedImage, *, model: str) -> GeneratedImage:
    """The image in the format planned, at the quality planned (unchanged when it already is that format
    and no quality was asked for)."""
    fmt = output.encode
    if fmt is None:
        return image
    if output.quality is None:
        info = inspect_b64(image.b64)
        if info is not None and info.format == fmt:
            return image
    try:
        data = _pillow_encode(base64.b64decode(image.b64), fmt, output.quality)
    except Exception as exc:  # Pillow raises many kinds for data it cannot read or write
        raise ProviderError(f"could not convert the image to {fmt}: {type(exc).__name__}: {exc}", model=model) from exc
    return attrs.evolve(image, b64=base64.b64encode(data).decode("ascii"), mime_type=MIME_TYPES[fmt])


def _pillow_encode(data: bytes, fmt: str, quality: int | None) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        image = opened
        alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
        if fmt == "jpeg" and alpha:  # JPEG has no alpha channel: flatten onto white
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        elif fmt == "jpeg" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        elif fmt == "webp" and image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if alpha else "RGB")
        out = io.BytesIO()
        image.save(out, format=fmt.upper(), quality=DEFAULT_COMPRESSION if quality is None else quality)
        return out.getvalue()


def reported(output: Output, images: Sequence[GeneratedImage]) -> str | None:
    """The ``output_format`` the response reports, when the caller asked for one: what gesso encoded the
    images in, else what the model sent (``images``, as parsed)."""
    if output.requested is None:
        return None
    if output.encode is not None:
        return output.encode
    info = inspect_b64(images[0].b64) if images else None
    return info.format if info is not None else output.requested


def put(output: Output, image: GeneratedImage) -> str:
    """Write one image to the store; its URL."""
    info = inspect_b64(image.b64)
    fmt = info.format if info is not None else image.mime_type.rpartition("/")[2]
    name = f"{uuid.uuid4().hex}.{EXTENSIONS.get(fmt, fmt)}"
    url: str = output.store.put(base64.b64decode(image.b64), MIME_TYPES.get(fmt, image.mime_type), name)
    return url

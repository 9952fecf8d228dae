"""The data types that flow through gesso's hooks, and the one cattrs converter for their JSON forms.

Flow of one call::

    ImageRequest --gesso_transform_request--> PreparedRequest (one or more provider bodies)
    Invocation   --gesso_invoke------------>  RawResponse      (one per body)
    RawResponse  --gesso_parse_response---->  ParsedResponse
    ImageResponse (assembled by core)  --gesso_calculate_cost--> USD
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import cattrs

from gesso.errors import InvalidRequestError, Violation
from gesso.params import short

if TYPE_CHECKING:
    # The converters of the tuple and frozenset fields as mypy's attrs plugin reads them (a field takes any
    # iterable of its items). At run time they are ``tuple`` and ``frozenset`` themselves: no call per field.
    def _strings(values: Iterable[str]) -> tuple[str, ...]: ...
    def _string_set(values: Iterable[str]) -> frozenset[str]: ...
    def _objects(values: Iterable[Any]) -> tuple[Any, ...]: ...
    def _bodies(values: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]: ...
    def _generated(values: Iterable[GeneratedImage]) -> tuple[GeneratedImage, ...]: ...
    def _image_data(values: Iterable[ImageData]) -> tuple[ImageData, ...]: ...
else:
    _strings = _objects = _bodies = _generated = _image_data = tuple
    _string_set = frozenset

# --------------------------------------------------------------------------------------------------
# Model registration


@attrs.frozen(kw_only=True)
class Lifecycle:
    """Where a model stands in its provider's lifecycle: ``active``, ``legacy`` (still callable, end of life
    announced) or ``eol`` (retired). ``end_of_life`` is an ISO date when known."""

    status: str = attrs.field(default="active", validator=attrs.validators.in_(("active", "legacy", "eol")))
    end_of_life: str | None = None
    source: str | None = None


def _dimensions(dimensions: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(values) for name, values in dimensions.items()}


def _prices(prices: Mapping[str, float]) -> dict[str, float]:
    return dict(prices)


@attrs.frozen
class PriceTable(Mapping[str, float]):
    """USD per image, by named dimensions: ``PriceTable({"quality": ("standard", "premium"), "tier": ("1024",
    "2048")}, {"standard_1024": 0.04, ...})``. Every combination must be priced, each a finite, non-negative
    number: a missing tier is an error when the model is registered, never a ``None`` price at call time.
    Keys are the dimension values joined by ``_``; it reads as a mapping of those keys."""

    dimensions: Mapping[str, tuple[str, ...]] = attrs.field(converter=_dimensions)
    prices: Mapping[str, float] = attrs.field(converter=_prices)

    def __attrs_post_init__(self) -> None:
        import itertools
        import math

        wanted = {"_".join(combo) for combo in itertools.product(*self.dimensions.values())}
        missing, extra = sorted(wanted - set(self.prices)), sorted(set(self.prices) - wanted)
        if missing or extra:
            raise ValueError(f"price table: missing prices {missing}, prices of no tier {extra}")
        bad = {k: v for k, v in self.prices.items() if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"price table: prices must be non-negative USD amounts, got {bad}")

    def price(self, **tier: str) -> float:
        """The price of one image in the tier named by a value for each dimension."""
        for name, options in self.dimensions.items():
            if tier.get(name) not in options:
                raise ValueError(f"price table: {name} must be one of {options} (got {tier.get(name)!r})")
        return self.prices["_".join(tier[name] for name in self.dimensions)]

    def __getitem__(self, key: str) -> float:
        return self.prices[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.prices)

    def __len__(self) -> int:
        return len(self.prices)


@attrs.frozen(kw_only=True)
class Model:
    """What a plugin returns from ``gesso_register_models``: one model it owns.

    ``id`` is the model's id at its ``provider`` (``None``: the default provider's); the plugin also owns
    every id in ``aliases`` and ``prefix + id`` for each of ``routing_prefixes`` (the same model reached by
    another route of its provider, such as a region group's ``us.``; ``profile_prefixes``, its name in gesso
    0.1, still works for one more release, with a ``DeprecationWarning``).
    ``family`` names the request format; one plugin owns each family.
    ``param_schema`` is the JSON Schema (Draft 2020-12) of the request body; ``prices`` names the USD
    per-image price points the plugin's cost hook uses; ``capabilities`` are free-form tags
    (``text_to_image``...), of which gesso reads three: ``edit`` (the model takes :func:`gesso.image_edit`),
    ``edit_mask`` (an edit with a ``mask``) and ``variation`` (:func:`gesso.image_variation`). ``emulator``
    answers this model's calls in its provider's emulator;
    ``timeout`` is the model's default read timeout in seconds (a call's ``timeout`` overrides it).
    ``request_options`` names what the family takes besides its schema's properties that a request may carry
    (SDXL's ``negative_prompt``): with the schema's names and OpenAI's fields they are what a proxy's callers may
    send (:mod:`gesso.boundary`); anything else a family takes outside its schema (a cost cap such as
    Stability's ``max_fanout``) only a program or a proxy deployment can set.
    ``priced_per`` and ``token_prices``: a model priced by tokens rather than per image (:mod:`gesso.pricing`).
    ``distribution`` is filled in by gesso with the distribution that registered the model.
    ``example`` marks an example or test model: it works, but is never recommended as an alternative.
    """

    id: str
    family: str
    name: str = ""
    provider: str | None = None
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    routing_prefixes: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    param_schema: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    prices: Mapping[str, float] = attrs.field(factory=dict)
    #: what the cost hook prices: ``"image"`` (``prices``, USD an image by class) or ``"token"``
    #: (``token_prices``: USD a token of ``input`` and of ``output``, counted by the response's ``usage``)
    priced_per: str = attrs.field(default="image", validator=attrs.validators.in_(("image", "token")))
    token_prices: Mapping[str, float] = attrs.field(factory=dict)
    capabilities: frozenset[str] = attrs.field(factory=frozenset, converter=_string_set)
    lifecycle: Lifecycle = attrs.field(factory=Lifecycle)
    emulator: Callable[..., Any] | None = attrs.field(default=None, repr=False, eq=False)
    timeout: float | None = None
    request_options: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    distribution: str | None = None
    example: bool = False

    @property
    def ids(self) -> tuple[str, ...]:
        """Every model id this registration claims."""
        return (self.id, *self.aliases, *(prefix + self.id for prefix in self.routing_prefixes))

    @property
    def profile_prefixes(self) -> tuple[str, ...]:
        """Deprecated: :attr:`routing_prefixes`."""
        warnings.warn(_PROFILE_PREFIXES, DeprecationWarning, stacklevel=2)
        return self.routing_prefixes

    if not TYPE_CHECKING:  # type checkers see attrs' own __init__, which has no profile_prefixes

        def __init__(self, *, profile_prefixes=None, **fields):
            """attrs' ``__init__`` (``__attrs_init__``), and the deprecated ``profile_prefixes``."""
            if profile_prefixes is not None:
                if "routing_prefixes" in fields:
                    raise TypeError("Model() takes routing_prefixes only: profile_prefixes is its deprecated name")
                warnings.warn(_PROFILE_PREFIXES, DeprecationWarning, stacklevel=2)
                fields["routing_prefixes"] = profile_prefixes
            self.__attrs_init__(**fields)


_PROFILE_PREFIXES = (
    "Model.profile_prefixes is deprecated: use Model.routing_prefixes (profile_prefixes goes in the next release)"
)
if not TYPE_CHECKING:
    Model.__init__.__wrapped__ = Model.__attrs_init__  # inspect.signature(Model) shows attrs' fields


def _lower(text: str) -> str:
    return text.lower()


@attrs.frozen(kw_only=True)
class StoreScheme:
    """What a plugin returns from ``gesso_register_image_stores``: the image store for one URL scheme
    (``s3`` serves ``image_store="s3://bucket/prefix"``).

    ``open(url, expires_in)`` is called once per call, before anything is sent. It returns the store for
    ``url``: an object whose ``put(data: bytes, mime_type: str, name: str) -> str`` writes one image under
    ``name`` (``<uuid4 hex>.<ext>``) and returns its URL, raising a :class:`gesso.errors.GessoError` when it
    cannot. ``open`` raises ``ValueError`` saying what is wrong with a malformed ``url``; it must not block
    on the network. ``expires_in`` is how long, in seconds, the URLs must stay valid where they can expire.
    ``title`` names the store in messages. ``results(url)``, when given, opens the same scheme as a store of
    answers (:class:`gesso.cache.ResultStore`: ``get``/``put``/``delete`` of bytes by key), for the proxy's
    ``result_store`` and the SDK's ``cache=``; it raises ``ValueError`` for a malformed ``url``.
    """

    scheme: str = attrs.field(converter=_lower)
    open: Callable[[str, int], Any] = attrs.field(repr=False, eq=False)
    title: str = ""
    results: Callable[[str], Any] | None = attrs.field(default=None, repr=False, eq=False)


# --------------------------------------------------------------------------------------------------
# Request side

_SIZE_RE = re.compile(r"^\s*([0-9]{1,5})\s*[xX×]\s*([0-9]{1,5})\s*$")


@attrs.frozen
class Size:
    """An image size in pixels, parsed from OpenAI's ``"WxH"`` form."""

    width: int
    height: int

    @classmethod
    def parse(cls, value: Any, *, model: str | None = None) -> Size:
        if isinstance(value, Size):
            return value
        match = _SIZE_RE.match(value) if isinstance(value, str) else None
        if match is None:
            raise InvalidRequestError(
                [
                    Violation(
                        "size", f'must be "WIDTHxHEIGHT" in pixels, e.g. "1024x1024", or "auto" (got {short(value)})'
                    )
                ],
                model=model,
            )
        width, height = int(match.group(1)), int(match.group(2))
        if not (width and height):
            raise InvalidRequestError(
                [Violation("size", f"width and height must be at least 1 pixel (got {short(value)})")], model=model
            )
        return cls(width, height)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@attrs.frozen(kw_only=True)
class ImageRequest:
    """One ``image_generation`` call after gesso parsed the OpenAI and transport kwargs.

    ``params`` holds every other kwarg, unvalidated: the family plugin validates it against its schema.
    ``model_name`` is the id the caller used (without the ``<provider>/`` prefix); ``model`` its registration.
    """

    model: Model
    model_name: str
    prompt: str | None
    n: int | None = None
    size: Size | None = None
    quality: str | None = None
    response_format: str = "b64_json"
    style: str | None = None
    user: str | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)
    #: where and how to send the call: the provider's own typed object (:meth:`gesso.provider.Provider.target`)
    target: Any = None
    #: the OpenAI Images operation the call came from: ``"generate"``, ``"edit"`` or ``"variation"``. A family
    #: sees ``"edit"`` or ``"variation"`` only for models whose ``capabilities`` declare it
    operation: str = "generate"
    #: an edit's or variation's input images, as the caller gave them (bytes, ``Path``, base64 or a ``data:``
    #: URL; file objects are read by gesso): the family places them in its body and checks them
    images: tuple[Any, ...] = attrs.field(default=(), converter=_objects)
    #: an edit's mask as given, in OpenAI's convention (fully transparent pixels mark the area to edit) or
    #: already black and white; :func:`gesso.masks.convert` turns it into a family's convention
    mask: Any = None
    #: the caller's ``snap_size``: a size the model cannot make exactly is replaced by the nearest it makes
    #: (with a warning) rather than refused (:func:`gesso.sizes.fit`)
    snap_size: bool = False


@attrs.frozen(kw_only=True)
class PreparedRequest:
    """What ``gesso_transform_request`` returns: the plan of the call, which the parse and cost hooks read.

    ``bodies`` to send (usually one; several when a model returns one image per call and ``n > 1``);
    ``seeded`` whether each body fixes its seed (a cache may then answer an identical one);
    ``task`` the family's task, when it has several; ``size`` the output size asked for (or implied by an
    input image); ``quality`` the provider's own quality level; ``requested`` the images asked for over all
    bodies; ``warnings`` notes for the response (what was sent in place of what was asked, e.g. a size
    mapped to an aspect ratio), merged by gesso with the parse hook's."""

    bodies: tuple[Mapping[str, Any], ...] = attrs.field(converter=_bodies)
    task: str | None = None
    size: Size | None = None
    quality: str | None = None
    requested: int = 1
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    #: every body fixes the seed the model starts from (given, or a default the provider documents), so an
    #: identical body may be answered from a cache (``gesso.cache``); False when the provider picks a random one
    seeded: bool = False


@attrs.frozen(kw_only=True)
class Invocation:
    """One provider call for ``gesso_invoke``: the target, the serialised body, and the settings."""

    provider: str
    target: Any
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    content_type: str = "application/json"
    accept: str = "application/json"


@attrs.frozen(kw_only=True)
class RawResponse:
    """What a transport got back: the status, the body bytes and the response headers."""

    status: int
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    headers: Mapping[str, str] = attrs.field(factory=dict)
    request_id: str | None = None


@attrs.frozen(kw_only=True)
class GeneratedImage:
    """One image a provider returned, still base64-encoded."""

    b64: str = attrs.field(repr=lambda s: f"<{len(s)} base64 chars>")
    mime_type: str = "image/png"
    seed: int | None = None


@attrs.frozen(kw_only=True)
class ParsedResponse:
    """What ``gesso_parse_response`` returns: the images, how many outputs the provider's filter
    withheld (``filtered``), any notes worth showing the caller (``warnings``), the size produced, a
    mask the model returned beside the images (``mask``, e.g. Nova virtual try-on with ``returnMask``), the text
    it wrote beside them (``text``, e.g. a Converse answer's text blocks) and the tokens it counted (``usage``:
    ``input_tokens`` and ``output_tokens``, for a model priced by tokens)."""

    images: tuple[GeneratedImage, ...] = attrs.field(converter=_generated)
    filtered: int = 0
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    size: Size | None = None
    mask: GeneratedImage | None = None
    text: str | None = None
    usage: Mapping[str, int] | None = None


# --------------------------------------------------------------------------------------------------
# Response side (the OpenAI images response)


@attrs.frozen(kw_only=True)
class ImageData:
    """One item of ``ImageResponse.data``, as in OpenAI's ``Image``, plus the ``seed`` that made it when
    the provider reports one (Stability models do)."""

    b64_json: str | None = attrs.field(default=None, repr=lambda s: "None" if s is None else f"<{len(s)} chars>")
    url: str | None = attrs.field(default=None, repr=lambda s: "None" if s is None else f"<{len(s)} chars>")
    revised_prompt: str | None = None
    seed: int | None = None


@attrs.frozen(kw_only=True)
class ImageResponse:
    """The result of ``image_generation``. ``to_dict()`` gives the OpenAI images response JSON, with
    gesso's additions ``model``, ``cost`` (USD, or null when no price is known) and ``pricing`` (which price),
    ``size`` when known, ``warnings`` when there are any (e.g. some outputs withheld by the content filter), and
    ``mask`` when the model returned one. ``output_format`` (``png``, ``jpeg`` or ``webp``, as in OpenAI's gpt-image
    responses) says what the images are, when the caller asked for a format. ``usage`` (as in OpenAI's gpt-image
    responses: ``input_tokens``, ``output_tokens``, ``total_tokens``) is there when the model counts tokens."""

    created: int = attrs.field(factory=lambda: int(time.time()))
    data: tuple[ImageData, ...] = attrs.field(factory=tuple, converter=_image_data)
    model: str = ""
    cost: float | None = None
    #: which price ``cost`` is at: ``"deployment"`` (the caller's or the proxy deployment's ``prices``) or
    #: ``"public"`` (the model's own table); None when the cost is unknown
    pricing: str | None = None
    size: str | None = None
    output_format: str | None = None
    filtered: int = 0
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    mask: ImageData | None = None
    usage: Mapping[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        unstructured: dict[str, Any] = converter.unstructure(self)
        return unstructured

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageResponse:
        """Parse an images response JSON (gesso's or OpenAI's). Unknown keys are rejected."""
        try:
            return converter.structure(data, cls)
        except (cattrs.ClassValidationError, cattrs.ForbiddenExtraKeysError) as exc:
            raise InvalidRequestError(render_structure_error(exc)) from exc


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    base_image = cattrs.gen.make_dict_unstructure_fn(ImageData, conv)
    conv.register_unstructure_hook(ImageData, lambda d: _drop_none(base_image(d)))
    base_response = cattrs.gen.make_dict_unstructure_fn(ImageResponse, conv)

    def unstructure_response(resp: ImageResponse) -> dict[str, Any]:
        out = base_response(resp)
        for optional in ("pricing", "size", "output_format", "warnings", "filtered", "mask", "usage"):
            if not out.get(optional):
                out.pop(optional, None)
        return out

    conv.register_unstructure_hook(ImageResponse, unstructure_response)
    return conv


converter = _make_converter()


def render_structure_error(exc: BaseException, path: str = "") -> list[Violation]:
    """Turn a cattrs structuring error tree into readable violations (``data[0].b64: unknown key``)."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return [Violation(f"{path}.{key}" if path else key, "unknown key") for key in sorted(exc.extra_fields)]
    if isinstance(exc, cattrs.BaseValidationError):
        found: list[Violation] = []
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if isinstance(n, str)), "")
            where = path
            if "@ attribute " in note:
                name = note.split("@ attribute ", 1)[1]
                where = f"{path}.{name}" if path else name
            elif "@ index " in note:
                where = f"{path}[{note.split('@ index ', 1)[1]}]"
            found += render_structure_error(sub, where)
        return found
    return [Violation(path, str(exc) or type(exc).__name__)]

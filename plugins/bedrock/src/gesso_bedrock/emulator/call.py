"""What a family's emulation works with: the :class:`EmulatedCall` it receives, the :class:`EmulatorError`
it raises to answer with a Bedrock error, and the :class:`RecordedRequest` the emulator keeps of each call."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from gesso.types import Model
from gesso_bedrock.emulator import everit
from gesso_bedrock.emulator.images import synth_png_b64

if TYPE_CHECKING:
    from gesso.inputs import ImageInput
    from gesso_bedrock.emulator import Emulator
    from gesso_bedrock.emulator.sigv4 import SignedBy

#: Prompt markers that make the emulated content filter act: block the input (400), withhold every
#: output (200 with ``error``), or withhold some outputs.
BLOCK_INPUT = "emulator:block-input"
BLOCK_OUTPUT = "emulator:block-output"
BLOCK_SOME = "emulator:block-some"


class EmulatorError(Exception):
    """Raised by model emulators to answer with a Bedrock error: status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def validation(cls, message: str) -> EmulatorError:
        return cls(400, "ValidationException", message)


def _redacted_headers(headers: Mapping[str, str]) -> str:
    shown = {k: ("<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()}
    return repr(shown)


_SECRET_HEADERS = frozenset({"authorization", "x-amz-security-token"})


@attrs.frozen
class RecordedRequest:
    """One request the emulator received (kept for tests and debugging; its repr hides credentials)."""

    model_id: str
    path: str
    headers: Mapping[str, str] = attrs.field(repr=_redacted_headers)
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    status: int
    signed_by: SignedBy | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class EmulatedCall:
    """What a model emulator receives: the model, the id it was invoked as, the parsed body, and the operation
    (``"invoke"``: InvokeModel; ``"converse"``: Converse)."""

    model: Model
    model_id: str
    body: Any
    emulator: Emulator
    api: str = "invoke"

    def validate(self, schema: Mapping[str, Any] | None = None) -> None:
        """Raise Bedrock's ``Malformed input request`` error for any schema violation of the body."""
        found = everit.messages(schema if schema is not None else self.model.param_schema, self.body)
        if found:
            raise EmulatorError.validation(everit.malformed(found))

    def moderation(self, *texts: str | None) -> str | None:
        """``"input"``, ``"output"``, ``"some"`` or ``None``: what the emulated content filter does."""
        joined = " ".join(t for t in texts if isinstance(t, str))
        if BLOCK_INPUT in joined:
            return "input"
        if BLOCK_OUTPUT in joined:
            return "output"
        if BLOCK_SOME in joined:
            return "some"
        return None

    def decode_images(self, schema: Mapping[str, Any] | None = None) -> dict[str, tuple[ImageInput, str]]:
        """Every image in the body (the fields the schema marks ``x-image``), decoded, by dotted path,
        with its kind (``image`` or ``mask``); Bedrock's error for one that does not decode."""
        from gesso.inputs import image_fields, load, locate
        from gesso.params import dotted

        found: dict[str, tuple[ImageInput, str]] = {}
        for path, kind in image_fields(schema if schema is not None else self.model.param_schema):
            for concrete, parent, key in locate(self.body, path):
                where = dotted(concrete)
                image, _ = load(parent[key], where)
                if image is None:
                    raise EmulatorError.validation(
                        f"Unable to decode the image at {where}. Provide a base64-encoded PNG or JPEG."
                    )
                found[where] = (image, kind)
        return found

    def image(self, width: int, height: int, *key: Any, alpha: bool = False, prompt: str | None = None) -> str:
        """A deterministic base64 PNG of the given size for the given key parts, labelled as the emulator's
        (with the first words of ``prompt``, when given)."""
        return synth_png_b64(width, height, "|".join(map(str, (self.model.id, *key))), alpha, prompt)


class Headers:
    """A request's headers, looked up case-insensitively (the first of repeated names wins), listed with
    their names as sent: what ``email.message.Message`` offered the emulator, at a fraction of its cost."""

    __slots__ = ("_first", "_pairs")

    def __init__(self, pairs: Any = ()) -> None:
        self._pairs: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}
        for name, value in pairs.items() if hasattr(pairs, "items") else pairs:
            self[name] = value

    def __setitem__(self, name: str, value: str) -> None:
        self._pairs.append((name, value))
        self._first.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def keys(self) -> list[str]:
        return [name for name, _ in self._pairs]

    def __iter__(self) -> Any:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._pairs)

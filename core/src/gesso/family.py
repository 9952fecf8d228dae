"""What every model family's request building and response parsing share, so each family writes only its
own rules: one pipeline from an assembled body to a checked one (:func:`check`), and one reader of a JSON
answer (:func:`json_answer`).

The pipeline: convert the image inputs in the body to base64, validate the body against the family's JSON
Schema, name the prompt when the caller left out a required one, run the family's own rules on a body that
passed, and raise one :class:`~gesso.errors.InvalidRequestError` listing every problem found on the way
(the caller's problems found while placing parameters included). Nothing is sent unless it all passes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from gesso import inputs
from gesso.errors import ProviderError, Violation
from gesso.params import raise_for
from gesso.types import ImageRequest, RawResponse

Images = dict[str, tuple[inputs.ImageInput, str]]
#: A family's own checks of a schema-valid body: (body, images by dotted path) -> problems
Rules = Callable[[dict[str, Any], Images], list[Violation]]


def check(
    request: ImageRequest,
    body: dict[str, Any],
    schema: Mapping[str, Any],
    *,
    what: str,
    problems: list[Violation] | None = None,
    sources: Mapping[str, str] | None = None,
    prompt_at: str | None = None,
    rules: Rules | None = None,
) -> Images:
    """Check ``body`` (images converted in place) and raise one error listing ``problems`` and everything
    found; returns the images. ``what`` names the model or task in messages; ``prompt_at`` is the dotted
    path where the prompt goes, so a missing required prompt is reported as ``prompt``."""
    found = list(problems or ())
    images, violations = inputs.convert_and_validate(body, schema, sources=sources)
    missing = [v for v in violations if prompt_at and v.path == prompt_at and v.message == "is required"]
    if missing and request.prompt is None:  # say what the caller left out, not where the body wanted it
        violations = [v for v in violations if v not in missing]
        found.append(Violation("prompt", f"is required for {what}"))
    found += violations
    if not found and rules is not None:
        found += rules(body, images)
    raise_for(found, model=request.model_name)
    return images


def json_answer(request: ImageRequest, response: RawResponse) -> dict[str, Any]:
    """The JSON object a provider answered with, or a :class:`~gesso.errors.ProviderError` saying why not."""
    who = request.model.name or request.model.family
    try:
        data = json.loads(response.body)
    except ValueError as exc:
        raise ProviderError(f"{who} answered with a body that is not JSON: {exc}", model=request.model_name) from exc
    if not isinstance(data, dict):
        raise ProviderError(f"{who} answered with an unexpected body", model=request.model_name)
    return data

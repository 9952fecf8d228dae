"""gesso's hook specifications (pluggy project name ``gesso``).

A plugin is any object or module with functions marked ``@gesso.hookimpl`` whose names match these
specs. Distributions publish plugins under the entry-point group ``gesso``. An implementation may
accept any subset of a spec's arguments; specs only ever gain arguments.

One call runs the four stage hooks in order::

    gesso_transform_request -> gesso_invoke (once per body) -> gesso_parse_response -> gesso_calculate_cost

The stage hooks are ``firstresult``: gesso calls implementations (newest registered first, unless
``tryfirst``/``trylast`` say otherwise) until one returns something other than ``None``. A family
plugin therefore returns ``None`` for models it does not own, which is how several families coexist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from gesso.types import (
        ImageRequest,
        ImageResponse,
        Invocation,
        Model,
        ParsedResponse,
        PreparedRequest,
        RawResponse,
    )

PROJECT_NAME = "gesso"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def gesso_register_models() -> list[Model]:  # type: ignore[empty-body]
    """Declare the models this plugin owns.

    Called once, when gesso first needs its model registry (the first call, ``gesso models``...).

    Returns: a list of :class:`gesso.types.Model`, each with its base id, the region-prefixed ids it
    also answers to (``profile_prefixes=("us.", "eu.")``), the JSON Schema of its request body, its
    prices, capabilities, lifecycle and (optionally) its emulator. Return ``[]`` or ``None`` to declare
    nothing. Two plugins declaring the same id is an error naming both distributions.

    Example::

        @gesso.hookimpl
        def gesso_register_models():
            return [Model(id="acme.painter-v1", family="acme.painter", param_schema=SCHEMA,
                          prices={"image": 0.02}, capabilities={"text_to_image"})]
    """


@hookspec(firstresult=True)
def gesso_transform_request(request: ImageRequest) -> PreparedRequest | None:  # type: ignore[empty-body]
    """Validate one call's parameters and build the provider request bodies.

    Called once per call, before anything is sent.

    Arguments: ``request`` (:class:`gesso.types.ImageRequest`): the resolved ``request.model``, the
    prompt, the OpenAI parameters (``n``, ``size``, ``quality``, ``style``...) and ``request.params``,
    every provider-specific kwarg exactly as the caller gave it.

    Returns: a :class:`gesso.types.PreparedRequest` holding the bodies to send (one per provider call)
    and any ``details`` the parse and cost hooks need. Raise :class:`gesso.errors.InvalidRequestError`
    naming each bad parameter, its allowed values and the model; never drop or rewrite what the
    caller sent. Return ``None`` when ``request.model`` is not one of this plugin's models.

    Example::

        @gesso.hookimpl
        def gesso_transform_request(request):
            if request.model.family != "acme.painter":
                return None
            return PreparedRequest(bodies=[{"prompt": request.prompt}])
    """


@hookspec(firstresult=True)
def gesso_invoke(request: ImageRequest, invocation: Invocation) -> RawResponse | None:  # type: ignore[empty-body]
    """Send one provider call and return what came back.

    Called once per body of the prepared request (concurrently when there are several).

    Arguments: ``invocation`` (:class:`gesso.types.Invocation`): ``provider`` (``"bedrock"``), the
    ``target`` (invoke id, region, credentials, endpoint, timeout) and the serialised ``body``;
    ``request``, the call it belongs to.

    Returns: a :class:`gesso.types.RawResponse` for a successful call. Raise a
    :class:`gesso.errors.GessoError` subclass for failures (map the transport's own errors once, here).
    Return ``None`` when this plugin does not handle ``invocation.provider``. gesso's built-in
    Bedrock transport implements this hook for ``"bedrock"``; a plugin can wrap or replace it (for
    example with ``tryfirst=True``) to record, replay or reroute calls.
    """


@hookspec(firstresult=True)
def gesso_parse_response(  # type: ignore[empty-body]
    request: ImageRequest, prepared: PreparedRequest, response: RawResponse
) -> ParsedResponse | None:
    """Turn one provider response into images.

    Called once per successful provider call.

    Arguments: the ``request``, the ``prepared`` request it was built into, and the ``response``.

    Returns: a :class:`gesso.types.ParsedResponse` with the images and how many outputs the provider's
    content filter withheld. Raise :class:`gesso.errors.ContentFilteredError` when every output was
    blocked, :class:`gesso.errors.ProviderError` when the body is unusable. Return ``None`` when
    ``request.model`` is not one of this plugin's models.
    """


@hookspec(firstresult=True)
def gesso_calculate_cost(  # type: ignore[empty-body]
    request: ImageRequest, prepared: PreparedRequest, response: ImageResponse
) -> float | None:
    """Price a finished call in USD.

    Called once per successful call, after the response is assembled (``response.data`` holds the
    images actually returned, so filtered outputs are not charged).

    Returns: the cost in USD as a float. Return ``None`` when ``request.model`` is not one of this
    plugin's models, or when no price is known (the response's ``cost`` is then ``None``, never a
    guess).
    """

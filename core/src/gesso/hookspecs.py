"""gesso's hook specifications (pluggy project name ``gesso``).

A plugin is any object or module with functions marked ``@gesso.hookimpl`` whose names match these
specs. Distributions publish plugins under the entry-point group ``gesso``. An implementation may
accept any subset of a spec's arguments; specs only ever gain arguments.

One call runs the four stage hooks in order::

    gesso_transform_request -> gesso_invoke (once per body) -> gesso_parse_response -> gesso_calculate_cost

The stage hooks are ``firstresult``: gesso calls implementations (newest registered first, unless
``tryfirst``/``trylast`` say otherwise) until one returns something other than ``None``. gesso routes each
call's stages to the plugin that registered its model (and ``gesso_invoke`` to its provider's plugin), so a
family plugin never checks whether a model is its own; plugins that register no models or providers (say, a
``wrapper=True`` implementation that times, records or replays calls) see every call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable

    from gesso.provider import Provider
    from gesso.types import (
        ImageRequest,
        ImageResponse,
        Invocation,
        Model,
        ParsedResponse,
        PreparedRequest,
        RawResponse,
        StoreScheme,
    )

PROJECT_NAME = "gesso"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def gesso_register_models() -> list[Model]:  # type: ignore[empty-body]
    """Declare the models this plugin owns.

    Called once, when gesso first needs its registry (the first call, ``gesso models``...), after
    ``gesso_register_providers``.

    Arguments: none.

    Returns: a list of :class:`gesso.types.Model`, each with its id at its ``provider`` (none: the default
    provider), its ``family`` (the request format, which this plugin then owns), the ids it also answers to
    (``aliases``, ``routing_prefixes``), the JSON Schema of its request body, its prices, capabilities,
    lifecycle and (optionally) its emulator. Return ``[]`` or ``None`` to declare nothing. Two
    distributions declaring one id of a provider, or one family, is an error naming both.

    Example::

        @gesso.hookimpl
        def gesso_register_models():
            return [Model(id="painter-v1", provider="acme", family="acme.painter", name="Acme Painter",
                          param_schema=SCHEMA, prices={"image": 0.02}, capabilities={"text_to_image"})]
    """


@hookspec
def gesso_register_providers() -> list[Provider]:  # type: ignore[empty-body]
    """Declare the providers this plugin implements: where models run.

    Called once, when gesso first needs its registry, before any ``gesso_register_models``.

    Arguments: none.

    Returns: a list of :class:`gesso.provider.Provider` objects (subclass it: the provider's ``name``, the
    call options it takes, how it resolves its model strings and builds each call's target, its emulator).
    The plugin also implements ``gesso_invoke`` to send its calls. Return ``[]`` or ``None`` to declare
    nothing; a second provider of the same name is ignored.

    Example::

        class Acme(gesso.Provider):
            name, title, options = "acme", "Acme Cloud", ("acme_endpoint", "acme_token")

        @gesso.hookimpl
        def gesso_register_providers():
            return [Acme()]
    """


@hookspec
def gesso_register_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``gesso`` command line.

    Called once per ``gesso`` invocation, while its parser is built.

    Arguments: ``subcommands``, the ``argparse`` subparsers of ``gesso``. Add a parser with
    ``subcommands.add_parser(name, help=...)`` and give it a ``handler``: a function of the parsed
    arguments that returns the exit status.

    Returns: nothing (return ``None``).

    Example::

        @gesso.hookimpl
        def gesso_register_commands(subcommands):
            hello = subcommands.add_parser("hello", help="say hello")
            hello.set_defaults(handler=lambda args: print("hello") or 0)
    """


@hookspec
def gesso_register_image_stores() -> list[StoreScheme]:  # type: ignore[empty-body]
    """Declare the image stores this plugin implements: where ``response_format="url"`` writes images.

    Called once per call that names an ``image_store`` (or finds ``GESSO_IMAGE_STORE`` set), before
    anything is sent. gesso itself serves ``file://``.

    Arguments: none.

    Returns: a list of :class:`gesso.types.StoreScheme`, each a URL ``scheme`` and ``open(url, expires_in)``,
    which returns the store for one call's ``image_store`` URL (an object with ``put(data, mime_type, name)``
    returning the written image's URL) or raises ``ValueError`` naming what is wrong with the URL. Return
    ``[]`` or ``None`` to declare nothing; a second store for a scheme already served is ignored. The
    writes happen after a successful response (on a thread, in the async path); ``put`` raises a
    :class:`gesso.errors.GessoError` (``ProviderError``) when a write fails, never its library's error.

    Example::

        @gesso.hookimpl
        def gesso_register_image_stores():
            return [StoreScheme(scheme="acme", title="Acme Storage", open=AcmeStore)]
    """


@hookspec(firstresult=True)
def gesso_transform_request(request: ImageRequest) -> PreparedRequest | None:
    """Validate one call's parameters and build the request bodies: the plan of the call.

    Called once per call, before anything is sent, on the plugin that registered ``request.model`` (and on
    plugins that register no models, such as wrappers).

    Arguments: ``request`` (:class:`gesso.types.ImageRequest`): the resolved ``request.model``, the
    prompt, the OpenAI parameters (``n``, ``size``, ``quality``, ``style``...) and ``request.params``,
    every model parameter exactly as the caller gave it.

    Returns: a :class:`gesso.types.PreparedRequest`: the bodies to send (one per provider call) and what
    the parse and cost hooks need (the task, size, quality, images requested, warnings). Raise
    :class:`gesso.errors.InvalidRequestError` naming each bad parameter, its allowed values and the model;
    never drop or rewrite what the caller sent. Return ``None`` only from a plugin that does not build
    requests (a wrapper that merely observes).

    Example::

        @gesso.hookimpl
        def gesso_transform_request(request):
            body = {"prompt": request.prompt, **request.params}
            raise_for(schema_violations(SCHEMA, body), model=request.model_name)
            return PreparedRequest(bodies=[body] * (request.n or 1), requested=request.n or 1)
    """


@hookspec(firstresult=True)
def gesso_invoke(request: ImageRequest, invocation: Invocation) -> RawResponse | None:
    """Send one provider call and return what came back.

    Called once per body of the prepared request (concurrently when there are several).

    Arguments: ``invocation`` (:class:`gesso.types.Invocation`): the ``provider`` name, the provider's own
    ``target`` (where and how to send: built by :meth:`gesso.provider.Provider.target`) and the serialised
    ``body``; ``request``, the call it belongs to.

    Returns: a :class:`gesso.types.RawResponse` for a successful call. Raise a
    :class:`gesso.errors.GessoError` subclass for failures (map the transport's own errors once, here).
    Return ``None`` when this plugin does not handle ``invocation.provider``. A provider plugin implements
    it; another plugin can wrap it (``wrapper=True``) or answer first (``tryfirst=True``) to time,
    record, replay or reroute calls.

    Example::

        @gesso.hookimpl
        def gesso_invoke(request, invocation):
            answer = httpx.post(invocation.target.url, content=invocation.body)
            return RawResponse(status=answer.status_code, body=answer.content)
    """


@hookspec(firstresult=True)
def gesso_ainvoke(request: ImageRequest, invocation: Invocation) -> Awaitable[RawResponse] | None:
    """Send one provider call natively async: return an awaitable of what came back.

    Called once per body by :func:`gesso.aimage_generation` (concurrently when there are several), on
    the call's provider's plugin. A provider without it is called through ``gesso_invoke`` on a thread.

    Arguments: as ``gesso_invoke``.

    Returns: an awaitable (write the hook as ``async def``) resolving to a :class:`gesso.types.RawResponse`,
    or raising a :class:`gesso.errors.GessoError`; cancelling the awaiting task must abort the call. Return
    ``None`` when this plugin does not handle ``invocation.provider``. A ``wrapper=True`` implementation sees
    the awaitable, not its result.

    Example::

        @gesso.hookimpl
        async def gesso_ainvoke(request, invocation):
            async with session.post(invocation.target.url, data=invocation.body) as answer:
                return RawResponse(status=answer.status, body=await answer.read())
    """


@hookspec(firstresult=True)
def gesso_parse_response(
    request: ImageRequest, prepared: PreparedRequest, response: RawResponse
) -> ParsedResponse | None:
    """Turn one provider response into images.

    Called once per successful provider call, on the plugin that registered ``request.model``.

    Arguments: the ``request``, the ``prepared`` plan it was built into, and the provider's ``response``.

    Returns: a :class:`gesso.types.ParsedResponse` with the images, how many outputs the provider's
    content filter withheld and any notes (gesso adds the plan's warnings). Raise
    :class:`gesso.errors.ContentFilteredError` when every output was blocked,
    :class:`gesso.errors.ProviderError` when the body is unusable. Return ``None`` only from a plugin
    that does not parse (a wrapper that merely observes).

    Example::

        @gesso.hookimpl
        def gesso_parse_response(request, prepared, response):
            answer = gesso.family.json_answer(request, response)
            return ParsedResponse(images=[GeneratedImage(b64=answer["picture"])])
    """


@hookspec(firstresult=True)
def gesso_calculate_cost(request: ImageRequest, prepared: PreparedRequest, response: ImageResponse) -> float | None:
    """Price a finished call in USD.

    Called once per successful call, after the response is assembled, on the plugin that registered
    ``request.model`` (``response.data`` holds the images actually returned, so filtered outputs are not
    charged).

    Arguments: the ``request``, its ``prepared`` plan (size, quality...) and the assembled ``response``.

    Returns: the cost in USD as a float. Return ``None`` when no price is known (the response's ``cost``
    is then ``None``, never a guess).

    Example::

        @gesso.hookimpl
        def gesso_calculate_cost(request, prepared, response):
            return request.model.prices["image"] * len(response.data)
    """

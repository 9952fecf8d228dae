"""Providers: where models run. A provider plugin returns a :class:`Provider` from
``gesso_register_providers``; gesso hands it everything that is about the provider rather than the model.

A provider owns:

- its **model strings**: ``<name>/<model>`` (``acme/painter-v1``), and whatever else it accepts after the
  prefix (regional ids, resource names...). :meth:`Provider.resolve` turns one into a registered model;
- its **options**: the call kwargs it takes (credentials, endpoints, timeouts, retries...), checked and
  turned into the typed ``target`` of the call by :meth:`Provider.target`, before anything is sent;
- **sending**: its plugin implements ``gesso_invoke`` for ``invocation.provider == name``;
- its **emulator**, for offline runs (:meth:`Provider.emulate`, used by ``gesso generate --emulator`` and
  :class:`gesso.testing.FamilyContract`).

Models name their provider (``Model(provider="acme")``). A provider with ``default = True`` also owns models
registered without one, and model strings without a ``<name>/`` prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from gesso.errors import UnknownModelError, Violation

if TYPE_CHECKING:
    from gesso.registry import Registry
    from gesso.types import Model


@attrs.frozen
class Resolved:
    """A model string resolved: the registration, the id as the caller named it (``model_name``), and the
    id to invoke when it differs from ``model_name`` (``target_id``, e.g. a resource name in the string)."""

    model: Model
    model_name: str
    target_id: str | None = None


@attrs.frozen
class CliOption:
    """A ``gesso generate`` flag that sets one of the provider's options: ``--region`` -> ``region``."""

    flag: str
    option: str
    help: str
    type: Any = str


class Provider:
    """Subclass and set the class attributes; override what differs from the defaults.

    ``name`` is the model-string prefix and ``invocation.provider``; ``title`` names the provider in
    messages; ``options`` lists the call kwargs it takes; ``habits`` maps other SDKs' kwarg names to what
    to write instead; ``loggers`` are the loggers of its libraries, whose records gesso redacts;
    ``config_misspellings`` maps option names other tools' documentation misspells to the option meant (the
    proxy's config reads them so, with a warning); ``grantable`` names the options a proxy deployment may let
    its callers set (``model_info.caller_params``: timeouts, retries...), never credentials, endpoints or what
    is invoked; ``genai_name`` is its ``gen_ai.provider.name`` in OpenTelemetry's GenAI semantic conventions
    (:mod:`gesso.telemetry`; ``name`` when empty).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    default: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()
    cli_options: ClassVar[tuple[CliOption, ...]] = ()
    habits: ClassVar[Mapping[str, str]] = {}
    loggers: ClassVar[tuple[str, ...]] = ()
    config_misspellings: ClassVar[Mapping[str, str]] = {}
    grantable: ClassVar[tuple[str, ...]] = ()
    genai_name: ClassVar[str] = ""

    def resolve(self, name: str, registry: Registry, options: Mapping[str, Any]) -> Resolved:
        """The model a model string names (``name`` is the string without ``<provider>/``); raise
        :class:`~gesso.errors.UnknownModelError` when none does. By default: a registered id or alias."""
        found = registry.get(name, provider=self.name)
        if found is None:
            raise self.unknown(name, registry)
        return Resolved(found, name)

    def unknown(self, name: str, registry: Registry) -> UnknownModelError:
        """The error for a model string of this provider that names no registered model."""
        known = ", ".join(sorted(m.id for m in registry.models if m.provider == self.name)) or "none"
        return UnknownModelError(
            f"Model {name!r} is not provided by any installed gesso plugin. Installed {self.title or self.name} "
            f"models: {known}",
            model=name,
        )

    def habit(self, key: str) -> str | None:
        """What to write instead of ``key``, when it looks like one of this provider's options but is not."""
        return self.habits.get(key)

    def target(
        self, resolved: Resolved, options: Mapping[str, Any], *, timeout: float | None, problems: list[Violation]
    ) -> Any:
        """The typed target of one call (where and how to send it), from the caller's ``options``. Append a
        :class:`~gesso.errors.Violation` to ``problems`` for each bad option; nothing is sent if any."""
        return None

    def check(self, resolved: Resolved, options: Mapping[str, Any], registry: Registry) -> None:
        """Checks of the model and options together, once each is valid on its own (raise
        :class:`~gesso.errors.InvalidRequestError`)."""

    def deadline(self, target: Any) -> float | None:
        """The most seconds one ``gesso_invoke`` of ``target`` takes when every plugin behaves: its timeouts,
        retries and the waits between them. gesso abandons a call still running after it and fails it with a
        :class:`~gesso.errors.PluginHookError` naming the plugin that hangs. ``None`` (the default): no limit."""
        return None

    def identity(self, target: Any) -> str:
        """Where a call of ``target`` goes and as whom (an endpoint, a region, an account or credentials' id;
        never a secret): an answer stored for one identity is never served for another (:mod:`gesso.cache`). By
        default the target's ``repr``; a provider whose targets hold more than that names only what counts."""
        return "" if target is None else repr(target)

    def usable_ids(self, model: Model) -> tuple[str, ...]:
        """The ids a caller can use for ``model`` (listed by ``gesso models`` and in errors)."""
        return model.ids

    def secrets(self, options: Mapping[str, Any]) -> Iterable[str | None]:
        """The option values that must never appear in a log line or message."""
        return ()

    def lifecycle_status(self, model: Model) -> str:
        """How the lifecycle warning names where the model runs: ``is a Legacy model on <title>``."""
        return f"on {self.title or self.name}"

    def advice(self, model: Model, registry: Registry) -> str:
        """A sentence for the lifecycle warning: what to use instead of ``model`` (empty: nothing)."""
        return ""

    @contextlib.contextmanager
    def emulate(self, model: Model, options: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Run the provider's emulator for ``model`` and yield the options that point a call at it."""
        yield from ()  # a generator all the same: the error is raised as the ``with`` block is entered
        raise NotImplementedError(f"provider {self.name} has no emulator")

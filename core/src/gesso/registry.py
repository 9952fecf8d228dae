"""The registry: every model the loaded plugins registered, every provider, and model-string resolution.

Models are keyed by (provider, id): two providers may each have a model called ``painter-v1``. A model
string ``<provider>/<rest>`` goes to that provider, which resolves ``rest``; any other string goes to the
default provider, if one is installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gesso.errors import UnknownModelError
from gesso.params import short
from gesso.provider import Provider, Resolved
from gesso.types import Model


class Registry:
    """Every model id the loaded plugins own, mapped to its :class:`~gesso.types.Model`, and the providers."""

    def __init__(self, models: Iterable[Model], providers: Mapping[str, Provider] | None = None) -> None:
        self.models: list[Model] = list(models)
        self.providers: dict[str, Provider] = dict(providers or {})
        self.by_key: dict[tuple[str | None, str], Model] = {(m.provider, mid): m for m in self.models for mid in m.ids}
        self.by_id: dict[str, Model] = {}
        for model in self.models:
            for model_id in model.ids:
                self.by_id.setdefault(model_id, model)
        self.default = next((p for p in self.providers.values() if p.default), None)

    def get(self, model_id: str, provider: str | None = None) -> Model | None:
        """The model with this id (or alias), of ``provider`` when given."""
        if provider is None:
            return self.by_id.get(model_id)
        return self.by_key.get((provider, model_id))

    def provider_of(self, model: Model) -> Provider:
        found = self.providers.get(model.provider or "")
        if found is None:
            raise UnknownModelError(
                f"Model {model.id} belongs to provider {model.provider!r}, which no installed plugin provides "
                f"(installed providers: {', '.join(self.providers) or 'none'})",
                model=model.id,
            )
        return found

    def resolve(self, model: Any, options: Mapping[str, Any] | None = None) -> tuple[Provider, Resolved]:
        """The provider and registration a caller's model string names (raises ``UnknownModelError``)."""
        if not isinstance(model, str) or not model.strip():
            got = short(model)
            raise UnknownModelError(f"model must be a non-empty string (got {got})", model=got)
        provider, name = self._split(model.strip())
        if provider is None:
            raise UnknownModelError(
                f"Model {model!r}: no installed gesso provider takes it; write '<provider>/<model>' with one of: "
                f"{', '.join(self.providers) or 'none (install a provider plugin)'}",
                model=model,
            )
        return provider, provider.resolve(name, self, options or {})

    def split_provider(self, model: Any) -> Provider | None:
        """The provider a model string names (its prefix, else the default), without resolving the model."""
        return self._split(model.strip())[0] if isinstance(model, str) else self.default

    def emulate(self, model: Any, options: Mapping[str, Any]) -> Any:
        """The emulator of the provider a model string names, as a context manager yielding the options that
        point a call of that model at it (``gesso generate --emulator``, the family contract)."""
        provider, resolved = self.resolve(model, options)
        return provider.emulate(resolved.model, options)

    def _split(self, name: str) -> tuple[Provider | None, str]:
        """(the provider, the rest of the string): ``<provider>/<rest>``, else the default and the whole."""
        head, sep, rest = name.partition("/")
        if sep and head in self.providers:
            return self.providers[head], rest
        return self.default, name

"""The contract every gesso family plugin should pass, as a pytest class to subclass.

    from gesso.testing import FamilyContract

    class TestAcmeContract(FamilyContract):
        distribution = "gesso-acme"
        examples = [("acme/painter-v1", "a fox", {"steps": 3})]

pytest then checks, for the distribution's models: the registrations are well formed (a family, a name, a
valid JSON Schema, non-negative prices, an emulator); each example runs end to end on its provider's
emulator (:meth:`gesso.provider.Provider.emulate`) and comes back with images and a price; an unknown
parameter is refused, naming it, before anything is sent; and the plugin's stage hooks are reached only by
calls of its own models. Each failure names the model and the rule it broke, and what to set.

Models whose ``capabilities`` declare ``edit``, ``edit_mask`` or ``variation`` are called with
:func:`gesso.image_edit` and :func:`gesso.image_variation` on the emulator too: an image (and, for
``edit_mask``, OpenAI's RGBA mask) must come back as images with a price, and bad input (an image that is
none, a grey mask) must be refused before anything is sent. ``operation_kwargs`` adapts those calls to
models that need more (see its comment).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from gesso import plugins
from gesso.errors import InvalidRequestError
from gesso.hookspecs import hookimpl
from gesso.imaging import encode_png
from gesso.types import Model


class _Counter:
    """A wrapper plugin that records every ``gesso_invoke``: how the contract knows what was sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    @hookimpl(wrapper=True)
    def gesso_invoke(self, request: Any, invocation: Any) -> Any:
        self.sent.append(invocation)
        return (yield)


#: The operations beyond generation, and the capability each needs (``edit_mask``: an edit with a mask).
OPERATIONS = ("edit", "edit_mask", "variation")


def contract_image(size: tuple[int, int]) -> bytes:
    """An opaque RGB PNG of ``size``: a horizontal gradient, so no model takes it for a blank."""
    width, height = size
    row = b"".join(bytes((x * 255 // max(width - 1, 1), 120, 200)) for x in range(width))
    return encode_png(width, height, [row] * height)


def contract_mask(size: tuple[int, int], *, grey: bool = False) -> bytes:
    """OpenAI's mask for ``size``: RGBA, fully transparent (the area to edit) in the middle half, opaque
    elsewhere; ``grey`` gives an opaque mid-grey picture instead, which no family may take for a mask."""
    width, height = size
    if grey:
        return encode_png(width, height, [bytes((128, 128, 128)) * width] * height)
    rows = []
    for y in range(height):
        inside_y = height // 4 <= y < height - height // 4
        row = bytearray()
        for x in range(width):
            clear = inside_y and width // 4 <= x < width - width // 4
            row += bytes((0, 0, 0, 0)) if clear else bytes((10, 20, 30, 255))
        rows.append(bytes(row))
    return encode_png(width, height, rows, channels=4)


class FamilyContract:
    """Subclass with ``distribution`` (the plugin's distribution name) and ``examples``: one or more
    ``(model, prompt, kwargs)`` calls that should succeed."""

    distribution: ClassVar[str]
    examples: ClassVar[Sequence[tuple[str, str | None, dict[str, Any]]]]
    #: For models declaring ``edit``/``edit_mask``/``variation``: what their contract calls need beyond the
    #: defaults, by model id, or by ``"<model id> <operation>"`` for one operation (``edit``, ``edit_mask``,
    #: ``variation``). The defaults: ``model`` the provider's name and the model id, ``image_count`` 1,
    #: ``prompt`` ``"a red hat"`` for edits (none for variations), the mask for ``edit_mask``; any other key
    #: is a kwarg of the call. ``None`` leaves a default out (``{"prompt": None}`` for a model without one).
    operation_kwargs: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: the size of the contract's images and masks (every model declaring an operation must take it)
    operation_image_size: ClassVar[tuple[int, int]] = (512, 512)

    @pytest.fixture
    def contract_emulator(self) -> Iterator[_Counter]:
        """Records the calls sent (``.sent``); each example runs on its provider's emulator."""
        plugins.reset()
        counter = _Counter()
        plugins.register_plugin(counter, name="gesso.testing.counter")
        yield counter
        plugins.reset()

    @contextlib.contextmanager
    def _emulated(self, model: str, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with plugins.get_registry().emulate(model, kwargs) as options:
            yield {**options, **self.contract_options}

    #: options every example is called with (e.g. no retries, so a failure shows at once)
    contract_options: ClassVar[dict[str, Any]] = {}

    def _models(self) -> list[Model]:
        cls = type(self).__name__
        distribution = getattr(self, "distribution", None)
        assert distribution, f"{cls}: set distribution = '<your distribution name>' (e.g. 'gesso-acme')"
        examples = getattr(self, "examples", None)
        assert examples, f"{cls}: set examples = [(model, prompt, kwargs), ...], calls that should succeed"
        found = [m for m in plugins.get_registry().models if m.distribution == distribution]
        assert found, f"{distribution} registers no models (is it installed, and not excluded by GESSO_PLUGINS?)"
        return found

    def test_registrations_are_well_formed(self, contract_emulator: _Counter) -> None:
        import jsonschema

        for model in self._models():
            where = f"Model {model.id} (from {model.distribution})"
            assert model.family, f"{where} has no family: set Model(family=...)"
            assert model.name, f"{where} has no name: set Model(name=...), e.g. the model's display name"
            assert isinstance(model.param_schema, Mapping) and model.param_schema, (
                f"{where} has no param_schema: set Model(param_schema=...) to the JSON Schema of its request body"
            )
            cls = jsonschema.validators.validator_for(model.param_schema, default=jsonschema.Draft202012Validator)
            try:
                cls.check_schema(dict(model.param_schema))
            except jsonschema.SchemaError as exc:
                pytest.fail(f"{where}: param_schema is not a valid JSON Schema: {exc.message}")
            assert model.param_schema.get("type") == "object", (
                f'{where}: param_schema must describe an object ("type": "object"), '
                f"not {model.param_schema.get('type')!r}"
            )
            bad = {k: p for k, p in model.prices.items() if not isinstance(p, (int, float)) or p < 0}
            assert not bad, f"{where}: prices must be non-negative numbers of USD, got {bad}"
            assert model.emulator is not None, (
                f"{where} has no emulator, so it cannot be tested offline: set Model(emulator=...)"
            )

    def test_examples_run_on_the_emulator(self, contract_emulator: _Counter) -> None:
        from gesso.api import image_generation

        self._models()
        for model, prompt, kwargs in self.examples:
            before = len(contract_emulator.sent)
            with self._emulated(model, kwargs) as options:
                response = image_generation(model, prompt, **kwargs, **options)
            assert response.data, f"{model}: the example {kwargs} returned no images (see gesso_parse_response)"
            empty = [i for i, item in enumerate(response.data) if not item.b64_json]
            assert not empty, f"{model}: images {empty} of the example {kwargs} have no data (GeneratedImage(b64=...))"
            assert response.cost is not None, f"{model}: the example {kwargs} has no price (gesso_calculate_cost)"
            assert response.cost >= 0, f"{model}: the example {kwargs} costs {response.cost}, a negative price"
            assert len(contract_emulator.sent) > before, (
                f"{model}: the example {kwargs} sent nothing; bodies must go through gesso_invoke"
            )

    def test_unknown_parameters_are_refused_before_sending(self, contract_emulator: _Counter) -> None:
        from gesso.api import image_generation

        self._models()
        for model, prompt, kwargs in self.examples:
            try:
                with self._emulated(model, kwargs) as options:
                    image_generation(model, prompt, **kwargs, contract_no_such_parameter=1, **options)
            except InvalidRequestError as exc:
                assert "contract_no_such_parameter" in str(exc), (
                    f"{model}: an unknown parameter was refused without naming it; the error must name "
                    f"contract_no_such_parameter, got: {exc}"
                )
            else:
                pytest.fail(
                    f"{model}: the unknown parameter contract_no_such_parameter=1 was accepted; "
                    "gesso_transform_request must refuse it with InvalidRequestError before sending"
                )
        sent = len(contract_emulator.sent)
        assert sent == 0, f"{self.distribution}: {sent} requests were sent for calls that must be refused unsent"

    def test_stage_hooks_reach_only_own_models(self, contract_emulator: _Counter) -> None:
        """gesso routes each call's stages to the plugin that registered its model: this plugin's hooks
        are never called for a model of another plugin (so they need not check)."""
        own = self._models()
        plugin = plugins.get_plugin_manager().get_plugin(self.distribution)
        assert plugin is not None, f"{self.distribution} registers models but no plugin of that name is loaded"
        others = [m for m in plugins.get_registry().models if m.distribution != self.distribution]
        for model in others[:20]:
            for stage in ("gesso_transform_request", "gesso_parse_response", "gesso_calculate_cost"):
                reached = {impl.plugin for impl in getattr(plugins.route(model), stage).get_hookimpls()}
                assert plugin not in reached, f"{self.distribution}.{stage} would be called for {model.id}"
        for model in own:
            reached = {impl.plugin for impl in plugins.route(model).gesso_transform_request.get_hookimpls()}
            assert plugin in reached, f"{self.distribution}.gesso_transform_request is not reached for {model.id}"

    @staticmethod
    def _model_string(model: Model) -> str:
        """``<provider>/<the first id a caller can use>`` (some models answer only to a prefixed id)."""
        provider = plugins.get_registry().provider_of(model)
        return f"{provider.name}/{provider.usable_ids(model)[0]}"

    def _operation_calls(self, operation: str) -> list[tuple[Model, str, dict[str, Any]]]:
        """One call per own model declaring ``operation`` (eol models are skipped: they cannot answer):
        (model, model string, kwargs of image_edit / image_variation without the model)."""
        calls = []
        for model in self._models():
            if operation not in model.capabilities or model.lifecycle.status == "eol":
                continue
            size = self.operation_image_size
            call: dict[str, Any] = {"model": self._model_string(model), "image_count": 1}
            if operation != "variation":
                call["prompt"] = "a red hat"
            if operation == "edit_mask":
                call["mask"] = contract_mask(size)
            call.update(self.operation_kwargs.get(model.id, {}))
            call.update(self.operation_kwargs.get(f"{model.id} {operation}", {}))
            count = call.pop("image_count")
            images = [contract_image(size) for _ in range(count)]
            call["image"] = images[0] if count == 1 else images
            name = call.pop("model")
            calls.append((model, name, {key: value for key, value in call.items() if value is not None}))
        return calls

    def _skip_without_operations(self) -> None:
        if not any(op in model.capabilities for model in self._models() for op in OPERATIONS):
            pytest.skip(f"{self.distribution}: no model declares edit, edit_mask or variation")

    def _run_operation(self, operation: str, name: str, kwargs: dict[str, Any]) -> Any:
        from gesso.api import image_edit, image_variation

        run = image_variation if operation == "variation" else image_edit
        with self._emulated(name, kwargs) as options:
            return run(name, **kwargs, **options)

    def test_edits_and_variations_run_on_the_emulator(self, contract_emulator: _Counter) -> None:
        """Every model declaring ``edit``, ``edit_mask`` or ``variation`` answers that call."""
        self._skip_without_operations()
        for operation in OPERATIONS:
            for model, name, kwargs in self._operation_calls(operation):
                where = f"{model.id} ({operation}, declared in its capabilities)"
                before = len(contract_emulator.sent)
                try:
                    response = self._run_operation(operation, name, kwargs)
                except InvalidRequestError as exc:
                    pytest.fail(
                        f"{where}: the contract's call {sorted(kwargs)} was refused: {exc}. Map the operation in "
                        "gesso_transform_request (request.operation, request.images, request.mask), or give the "
                        "call what the model needs in operation_kwargs"
                    )
                assert response.data, f"{where}: returned no images"
                assert all(item.b64_json for item in response.data), f"{where}: returned images without data"
                assert response.cost is not None and response.cost >= 0, f"{where}: no price ({response.cost})"
                assert len(contract_emulator.sent) > before, f"{where}: sent nothing through gesso_invoke"

    def _refused(self, operation: str, name: str, kwargs: dict[str, Any], argument: str, what: str) -> None:
        """The call is an InvalidRequestError that names ``argument``."""
        try:
            self._run_operation(operation, name, kwargs)
        except InvalidRequestError as exc:
            assert argument in str(exc), f"{what} was refused without naming {argument}: {exc}"
        else:
            pytest.fail(f"{what} was accepted")

    def test_bad_edit_and_variation_input_is_refused_before_sending(self, contract_emulator: _Counter) -> None:
        """An image that is none, and a grey mask (neither OpenAI's nor black and white), are refused with
        an InvalidRequestError naming the argument, before anything is sent; so is an operation the model
        does not declare."""
        self._skip_without_operations()
        for operation in OPERATIONS:
            for model, name, kwargs in self._operation_calls(operation):
                where = f"{model.id} ({operation})"
                bad = {**kwargs, "image": b"this is not an image"}
                self._refused(operation, name, bad, "image", f"{where}: bytes that are no image")
                if operation == "edit_mask":
                    grey = {**kwargs, "mask": contract_mask(self.operation_image_size, grey=True)}
                    self._refused(operation, name, grey, "mask", f"{where}: a grey mask (gesso.operations)")
        for model in self._models():
            if "variation" not in model.capabilities and model.lifecycle.status != "eol":
                name = self._model_string(model)
                with pytest.raises(InvalidRequestError):
                    self._run_operation("variation", name, {"image": contract_image(self.operation_image_size)})
        sent = len(contract_emulator.sent)
        assert sent == 0, f"{self.distribution}: {sent} requests were sent for edits and variations bound to fail"

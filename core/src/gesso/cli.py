"""The ``gesso`` command line: generate images, list plugins and models; plugins add commands of their own."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from gesso import __version__
from gesso.errors import GessoError, InvalidRequestError

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, _files(value)


def _files(value: Any) -> Any:
    """``@path`` (as with curl) names a file: it is passed as a ``pathlib.Path``, which gesso reads."""
    if isinstance(value, str) and value.startswith("@") and len(value) > 1:
        return Path(value[1:])
    if isinstance(value, list):
        return [_files(v) for v in value]
    if isinstance(value, dict):
        return {k: _files(v) for k, v in value.items()}
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gesso", description="Image generation: SDK, CLI and plugin framework.")
    parser.add_argument("--version", action="version", version=f"gesso {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate images and write them as files")
    gen.add_argument("prompt", nargs="?", help="what to draw (leave out for tasks without a prompt)")
    gen.add_argument("-m", "--model", required=True, help="<provider>/<model id> (gesso models lists them)")
    gen.add_argument("--size", help='"WIDTHxHEIGHT", e.g. 1024x1024')
    gen.add_argument("-n", type=int, help="number of images")
    gen.add_argument("--quality", help="standard, premium, or OpenAI's hd/high/low/medium/auto")
    gen.add_argument(
        "--param",
        "-p",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="a model parameter; VALUE is read as JSON when it parses (seed=42, colors='[\"#FF0000\"]'), "
        "else as a string (negativeText=blurry); @FILE names a file, e.g. image=@photo.png. Repeatable.",
    )
    gen.add_argument(
        "--option",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="an option of the model's provider (credentials, endpoint, retries...), read as -p reads values. "
        "Repeatable.",
    )
    gen.add_argument("-o", "--output-dir", default=".", help="where to write the images (default: .)")
    gen.add_argument("--timeout", type=float, help="read timeout in seconds")
    gen.add_argument("--emulator", action="store_true", help="run the provider's local emulator and use it")
    gen.add_argument("--json", action="store_true", help="print the response JSON (without image data) only")
    flags: dict[str, str] = {}
    for provider in _providers():
        for option in provider.cli_options:
            if option.flag not in flags:
                flags[option.flag] = option.option
                gen.add_argument(option.flag, dest=f"option:{option.option}", type=option.type, help=option.help)

    plug = sub.add_parser("plugins", help="print the loaded plugins as JSON")
    plug.add_argument("--all", action="store_true", help="include provider plugins")

    models = sub.add_parser("models", help="list every model id the installed plugins own")
    models.add_argument("--json", action="store_true", help="print details as JSON")
    for name, handler in (("generate", _generate), ("plugins", _plugins), ("models", _models)):
        sub.choices[name].set_defaults(handler=handler)
    from gesso.proxy import admin, serve

    serve.add_command(sub)
    admin.add_commands(sub)
    from gesso import plugins

    plugins.get_plugin_manager().hook.gesso_register_commands(subcommands=sub)
    return parser


def _providers() -> list[Any]:
    """The installed providers (a broken plugin set lists none: the command that uses them says why)."""
    from gesso import plugins

    try:
        return list(plugins.get_registry().providers.values())
    except GessoError:
        return []


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    print(f"gesso: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except GessoError as exc:
        print(f"gesso: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `gesso plugins | head`
        sys.stderr.close()
        return 0


def _generate(args: argparse.Namespace) -> int:
    from gesso.api import image_generation

    kwargs: dict[str, Any] = dict(args.param)
    kwargs.update(args.option)
    given = {"size": args.size, "n": args.n, "quality": args.quality, "timeout": args.timeout}
    given.update({k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("option:")})
    kwargs.update({k: v for k, v in given.items() if v is not None})
    out_dir = Path(args.output_dir)
    made, problem = _prepare_output(out_dir)
    if problem:  # said before the paid call, not after it
        print(f"gesso: error: --output-dir {str(out_dir)!r}: {problem}", file=sys.stderr)
        return 2
    try:
        with contextlib.ExitStack() as stack:
            if args.emulator:
                kwargs.update(stack.enter_context(_emulator(args.model, kwargs)))
            response = image_generation(args.model, args.prompt, **kwargs)
    except BaseException as exc:
        _remove(made)
        if isinstance(exc, InvalidRequestError):
            _hint_at_files(exc, args.param)
        raise
    slug = re.sub(r"[^a-z0-9]+", "-", (args.prompt or "").lower()).strip("-")[:40] or "image"
    paths = []
    try:
        for index, item in enumerate(response.data, start=1):
            data = base64.b64decode(item.b64_json or "")
            ext = _EXTENSIONS.get(_mime(data), "png")
            path = out_dir / f"{slug}-{index}-{hashlib.sha256(data).hexdigest()[:8]}.{ext}"
            path.write_bytes(data)
            paths.append(str(path))
    except OSError as exc:
        print(f"gesso: error: cannot write the images to {str(out_dir)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for warning in response.warnings:
        print(f"gesso: warning: {warning}", file=sys.stderr)
    if args.json:  # stdout is one JSON document and nothing else
        summary = response.to_dict()
        summary["data"] = [
            {k: f"<{len(v)} chars>" if k == "b64_json" else v for k, v in d.items()} for d in summary["data"]
        ]
        summary["files"] = paths
        print(json.dumps(summary, indent=2))
        return 0
    for path in paths:
        print(path)
    count = len(response.data)
    cost = "unknown" if response.cost is None else f"${response.cost:.4f}"
    print(f"cost: {cost} ({count} image{'s' if count != 1 else ''}, {response.model})")
    return 0


def _prepare_output(out_dir: Path) -> tuple[list[Path], str | None]:
    """Make ``out_dir`` (and its missing parents) and prove a file can be written there, before the paid
    call. Returns (the directories made, to remove if the call fails; why it cannot be used, or None)."""
    import tempfile

    if out_dir.exists() and not out_dir.is_dir():
        return [], "is a file, not a directory; name a directory to write the images into"
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        _remove(made)
        return [], f"cannot write there: {exc.strerror or exc}"
    return made, None


def _remove(made: list[Path]) -> None:
    for directory in made:  # innermost first; only what gesso made, and only while empty
        with contextlib.suppress(OSError):
            directory.rmdir()


def _hint_at_files(error: InvalidRequestError, params: list[tuple[str, Any]]) -> None:
    """``-p image=product.png`` passes the text "product.png"; when that names a file, say to write @."""
    for key, value in params:
        named = isinstance(value, str) and any(v.path.split(".")[-1].split("[")[0] == key for v in error.violations)
        if named and (Path(value).is_file() or Path(value).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")):
            print(f"gesso: hint: to pass the file, write -p {key}=@{value}", file=sys.stderr)


def _mime(data: bytes) -> str:
    from gesso.imaging import ImageFormatError, inspect

    try:
        return f"image/{inspect(data).format}"
    except ImageFormatError:
        return "application/octet-stream"


def _emulator(model: str, kwargs: dict[str, Any]) -> Any:
    """The model's provider's emulator, running for the call (the options it yields point the call at it)."""
    from gesso import plugins

    return plugins.get_registry().emulate(model, kwargs)


def _plugins(args: argparse.Namespace) -> int:
    from gesso.plugins import list_plugins

    print(json.dumps(list_plugins(include_builtin=args.all), indent=2))
    return 0


def _models(args: argparse.Namespace) -> int:
    from gesso.plugins import get_registry

    registry = get_registry()

    def usable_ids(model: Any) -> tuple[str, ...]:
        return registry.provider_of(model).usable_ids(model) if model.provider in registry.providers else model.ids

    if args.json:
        rows = [
            {
                "id": m.id, "ids": list(usable_ids(m)), "family": m.family, "name": m.name,
                "distribution": m.distribution,
                "prices": dict(m.prices), "capabilities": sorted(m.capabilities),
                "lifecycle": {"status": m.lifecycle.status, "end_of_life": m.lifecycle.end_of_life},
            }
            for m in registry.models
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    for model in registry.models:
        note = model.lifecycle.status + (
            f", end of life {model.lifecycle.end_of_life}" if model.lifecycle.end_of_life else ""
        )
        for model_id in usable_ids(model):
            print(f"{model_id}\t{model.distribution}\t{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

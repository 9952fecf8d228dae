"""The proxy's modules import in one direction: the ASGI app (gesso.proxy.app) builds on the others (the key API,
the shared HTTP errors and responses, the store, the ledger), and only the command that serves it imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gesso.proxy

PROXY = Path(gesso.proxy.__file__).parent
APP = "gesso.proxy.app"
#: the modules that may import the app: ``gesso serve`` and its worker processes' app factory
MAY_IMPORT_APP = {"serve.py"}


def imported(path: Path, package: str | None = None) -> set[str]:
    """Every module ``path`` imports, at its top, in a function, or only for type checking, as dotted names
    (``from gesso.proxy import app`` gives ``gesso.proxy.app``); relative imports are resolved from ``package``
    (by default the package ``path`` is in)."""
    if package is None:
        package = ".".join(("gesso", "proxy", *path.relative_to(PROXY).parent.parts))
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_only_the_command_imports_the_app():
    found = {str(p.relative_to(PROXY)): imported(p) for p in sorted(PROXY.rglob("*.py"))}
    assert APP in found["serve.py"]  # the check sees an import where there is one
    importers = sorted(name for name, names in found.items() if APP in names)
    assert importers == sorted(MAY_IMPORT_APP), "a module of gesso.proxy imports the app (a cycle in the making)"


def test_the_key_api_builds_on_the_shared_http_module():
    names = imported(PROXY / "keys.py")
    assert "gesso.proxy.http" in names and APP not in names


@pytest.mark.parametrize(
    "source",
    [
        "from gesso.proxy.app import build_app",
        "from gesso.proxy import app",
        "import gesso.proxy.app as served",
        "from .app import Proxy",
        "from . import app",
        "from ..proxy import app",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gesso.proxy.app import Proxy",
        "def later():\n    from gesso.proxy.app import build_app",
    ],
)
def test_every_way_of_importing_the_app_is_seen(tmp_path, source):
    module = tmp_path / "module.py"
    module.write_text(source + "\n")
    assert APP in imported(module, "gesso.proxy")
    if source.startswith("from ."):  # resolved from the package the module is in
        assert APP not in imported(module, "elsewhere.package")

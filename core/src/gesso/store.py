"""Image stores: where ``response_format="url"`` writes each image, returning its URL instead of a
``data:`` URL.

A call's ``image_store`` (or ``GESSO_IMAGE_STORE``) is a URL whose scheme picks the store: gesso serves
``file://`` itself (:class:`FileStore`); plugins add others from ``gesso_register_image_stores`` (a provider's
plugin may serve its cloud's object storage). The store is opened before anything is sent, so a malformed URL
or a scheme no plugin serves is refused before the call is paid for.
"""

from __future__ import annotations

import logging
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from gesso.errors import PluginError, ProviderError
from gesso.types import StoreScheme

logger = logging.getLogger("gesso.store")


class ImageStore(Protocol):
    """What ``StoreScheme.open`` returns: one call's store."""

    def put(self, data: bytes, mime_type: str, name: str) -> str:
        """Write one image under ``name`` and return its URL."""


class FileStore:
    """``file:///abs/dir``: each image is written to ``dir/<name>`` (the directory is made when missing) and
    its URL is ``file:///abs/dir/<name>``. File URLs do not expire."""

    def __init__(self, url: str, expires_in: int) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file URL names a directory on this machine, not on {parts.netloc!r}")
        if parts.query or parts.fragment:
            raise ValueError("a file URL takes no query or fragment")
        directory = Path(urllib.request.url2pathname(parts.path))
        if not parts.path or not directory.is_absolute():
            raise ValueError("must name an absolute directory, e.g. file:///srv/images")
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"{str(directory)!r} is a file, not a directory")
        self.directory = directory

    def put(self, data: bytes, mime_type: str, name: str) -> str:
        path = self.directory / name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as out:
                out.write(data)
        except OSError as exc:
            raise ProviderError(f"could not write the image to {str(path)!r}: {exc.strerror or exc}") from exc
        return path.as_uri()


FILE = StoreScheme(scheme="file", title="local files", open=FileStore)


def schemes() -> dict[str, StoreScheme]:
    """Every installed store by scheme: ``file``, then the plugins' (the first plugin to claim a scheme
    serves it). A plugin whose hook fails is skipped and logged, never breaking the call."""
    from gesso import plugins

    found = {FILE.scheme: FILE}
    for plugin, caller in plugins.each("gesso_register_image_stores"):
        try:
            declared: list[Any] = [item for answer in caller() for item in answer]  # unchecked until here
        except Exception as exc:  # a broken plugin must never break the host
            logger.warning("gesso plugin %s declared no image store: %s: %s", plugin, type(exc).__name__, exc)
            continue
        for item in declared:
            if isinstance(item, StoreScheme):
                found.setdefault(item.scheme, item)
            else:
                logger.warning("gesso plugin %s declared %r, not a gesso.types.StoreScheme", plugin, item)
    return found


def open_store(url: str, expires_in: int) -> Any:
    """The store for an ``image_store`` URL. Raises ``ValueError`` saying what is wrong with it (a scheme no
    installed store serves names the ones installed)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    installed = schemes()
    entry = installed.get(scheme)
    if entry is None:
        names = ", ".join(f"{name}://" for name in installed)
        what = f"scheme {scheme + '://'!r} has no installed image store" if scheme else "must be a URL"
        raise ValueError(f"{what} (installed: {names})")
    store = entry.open(url, expires_in)
    if not callable(getattr(store, "put", None)):
        raise PluginError(f"the {entry.title or entry.scheme} image store opened {store!r}, which has no put()")
    return store

"""Stored answers, so an identical call is not paid for twice: stores of bytes by key, used by the SDK's
``cache=`` and ``idempotency_key=`` and by the proxy (its idempotency keys and exact cache).

:class:`DiskCache` keeps each entry in a file of its own under one directory (safe for several processes and
replicas sharing it: an entry is written to a temporary file and renamed into place), at most ``max_bytes`` in
all, the least recently used removed first. :class:`MemoryCache` keeps them in this process. :func:`configure`
sets the store every SDK call uses unless it passes its own ``cache=``.

In the SDK, a call with ``cache=`` (or a configured one) is answered from the store when an identical call was
made before and every body fixes its seed (:func:`gesso.api.cache_key`); a call with ``idempotency_key=`` is run
once for that key (its repeat gets the first answer, from ``cache=``, the configured store, or else a store in
this process), and a repeat with another request is an :class:`~gesso.errors.InvalidRequestError`. A response
served from a store says so in ``warnings``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

#: the default bound of a DiskCache: 1 GiB
DEFAULT_MAX_BYTES = 1 << 30
_KEY = re.compile(r"[0-9a-f]{16,128}")
_FOLDER = re.compile(r"[0-9a-f]{2}")


def digest(value: object) -> str:
    """The SHA-256 (hex) of bytes, or of a value's text (lone surrogates kept): how a request's parts are
    compared without keeping them."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


class ResultStore(Protocol):
    """Bytes by key (a key is lowercase hexadecimal, a hash): where stored answers live."""

    def get(self, key: str) -> bytes | None:
        """The entry, or None when there is none (never stored, removed, or evicted)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there."""

    def delete(self, key: str) -> None:
        """Remove the entry, if there is one."""


class MemoryCache:
    """Entries in this process (a dict), at most ``max_bytes``, the least recently used removed first."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._size = 0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._entries.pop(key, None)
            if data is not None:
                self._entries[key] = data  # used now: the last to go
            return data

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._size += len(data) - (len(old) if old is not None else 0)
            self._entries[key] = data
            while self._size > self.max_bytes and self._entries:
                oldest = next(iter(self._entries))
                self._size -= len(self._entries.pop(oldest))

    def delete(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)


def open_store(where: str, max_bytes: int | None = DEFAULT_MAX_BYTES) -> ResultStore:
    """The store of answers ``where`` names: a directory (or ``file://`` URL) is a :class:`DiskCache` (``max_bytes``
    its bound; None: unbounded); another scheme is a plugin's (``gesso_register_image_stores``: a ``StoreScheme``
    with ``results``). Raises ``ValueError`` saying what is wrong."""
    import urllib.parse

    scheme = urllib.parse.urlsplit(where).scheme.lower() if "://" in where else ""
    if scheme in ("", "file"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(where).path) if scheme else where
        return DiskCache(path, max_bytes=max_bytes)
    from gesso import store

    installed = {name: entry for name, entry in store.schemes().items() if entry.results is not None}
    entry = installed.get(scheme)
    if entry is None or entry.results is None:
        names = ", ".join(["a directory", *(f"{name}://" for name in installed if name != "file")])
        raise ValueError(f"scheme {scheme + '://'!r} has no installed store of answers (installed: {names})")
    opened: ResultStore = entry.results(where)
    return opened


def within(where: str, name: str) -> str:
    """The store ``name`` inside the store ``where`` names: a subdirectory, or a URL's sub-prefix."""
    if "://" in where:
        return f"{where.rstrip('/')}/{name}"
    return os.path.join(where, name)


_configured: ResultStore | None = None
_process = MemoryCache()


def configure(store: ResultStore | None) -> None:
    """The store every SDK call uses unless it passes its own ``cache=`` (None: no cache)."""
    global _configured
    _configured = store


def configured() -> ResultStore | None:
    """The store :func:`configure` set, if any."""
    return _configured


def process_store() -> ResultStore:
    """This process's store, for an ``idempotency_key=`` with no ``cache=`` and none configured."""
    return _process


class DiskCache:
    """A directory of entries, ``<path>/<first two characters>/<key>``; reading an entry marks it used (its
    modification time), and once the entries hold more than ``max_bytes`` the least recently used go until
    they hold at most nine tenths of it (``max_bytes=None``: none is evicted; the owner removes them). Only
    files named so count and are ever removed: nothing else in the directory is touched."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError(f"max_bytes: must be a positive whole number of bytes, or None (got {max_bytes!r})")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._size: int | None = None  # what the entries hold, counted once and then kept up to date

    def __repr__(self) -> str:
        return f"DiskCache({str(self.path)!r}, max_bytes={self.max_bytes})"

    def _file(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError("a cache key is 16 to 128 lowercase hexadecimal characters")
        return self.path / key[:2] / key

    def get(self, key: str) -> bytes | None:
        path = self._file(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the last to be evicted
        return data

    def put(self, key: str, data: bytes) -> None:
        path = self._file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            try:
                replaced = path.stat().st_size
            except FileNotFoundError:
                replaced = 0
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        with self._lock:
            if self._size is not None:
                self._size += len(data) - replaced
        if self.max_bytes is not None and self.size() > self.max_bytes:
            self._evict()

    def delete(self, key: str) -> None:
        path = self._file(key)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            if self._size is not None:
                self._size -= size

    def size(self) -> int:
        """The bytes the entries hold (counted from the directory the first time)."""
        with self._lock:
            if self._size is None:
                self._size = sum(size for _, size, _ in self._entries())
            return self._size

    def purge(self, older_than: float | None = None) -> int:
        """Remove every entry, or those not used for ``older_than`` seconds; how many were removed."""
        cutoff = None if older_than is None else time.time() - older_than
        removed = 0
        for path, _, used in self._entries():
            if cutoff is None or used < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        with self._lock:
            self._size = None  # counted again when next asked
        return removed

    def _entries(self) -> list[tuple[Path, int, float]]:
        found: list[tuple[Path, int, float]] = []
        if not self.path.is_dir():
            return found
        for folder in self.path.iterdir():
            if not _FOLDER.fullmatch(folder.name) or not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                ours = _KEY.fullmatch(entry.name) and entry.name.startswith(folder.name)
                if not ours or not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    found.append((Path(entry.path), stat.st_size, stat.st_mtime))
        return found

    def _evict(self) -> None:
        """The least recently used entries removed until the rest hold at most nine tenths of ``max_bytes``
        (counted from the directory again: other processes may share it)."""
        assert self.max_bytes is not None
        entries = sorted(self._entries(), key=lambda entry: entry[2])
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes * 0.9:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
        with self._lock:
            self._size = total

"""What ``gesso serve`` does for its processes: the limit on calls in flight, the metrics its worker processes
share, and workers that stop with their parent.

- **Calls in flight**: :func:`max_concurrency` resolves the limit (``--max-concurrency``, else
  ``GESSO_MAX_CONCURRENCY``, else ``general_settings.max_concurrency``, else :data:`DEFAULT_MAX_CONCURRENCY`) and
  :func:`apply_concurrency` exports it as ``GESSO_MAX_CONCURRENCY`` before the SDK and the providers load (they
  read it once, on import), so every worker process inherits it; the soft limit on open files is raised to the
  hard one, since each call in flight holds two sockets (the client's and the provider's).
- **Metrics over workers**: :func:`shared_metrics` gives prometheus_client's multiprocess mode a fresh private
  directory (``PROMETHEUS_MULTIPROC_DIR``) while the workers run, and removes it after.
- **Workers stop together**: :func:`follow_parent` (in each worker) asks the kernel for SIGTERM when the parent
  dies (Linux's ``PR_SET_PDEATHSIG``; elsewhere a thread watches the parent), so a parent killed outright (SIGKILL,
  a crash) leaves no worker serving; :func:`stop_helpers` waits for multiprocessing's resource tracker, so a
  parent stopped by SIGTERM or SIGINT exits after every process it started.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

ENV_CONCURRENCY = "GESSO_MAX_CONCURRENCY"
#: the directory prometheus_client's multiprocess mode keeps every process's values in
ENV_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: the pid of the ``gesso serve`` process, as its workers see it
ENV_PARENT = "GESSO_SERVE_PARENT"
#: calls in flight per process when nothing sets the limit. A proxy's calls in flight are mostly waiting on the
#: provider: holding one costs about 54 KB of memory and two sockets, no CPU. One process answers 500-700 image
#: requests/s (bench/openloop.py), so at 1.5 s of model latency it holds about 750-1,050 calls, and at the several
#: seconds image models take, thousands; 4,096 lets it reach its CPU limit first, and bounds memory near 220 MB.
DEFAULT_MAX_CONCURRENCY = 4096
#: sockets a call in flight holds (the client's and the provider's)
SOCKETS_PER_CALL = 2
_PR_SET_PDEATHSIG = 1  # prctl(2)


class SettingError(ValueError):
    """A limit that is not a positive whole number."""


def max_concurrency(flag: int | None, configured: int | None) -> tuple[int, str]:
    """The limit on calls in flight per process, and what set it."""
    if flag is not None:
        if flag < 1:
            raise SettingError(f"--max-concurrency: must be a positive whole number, not {flag}")
        return flag, "--max-concurrency"
    given = os.environ.get(ENV_CONCURRENCY, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise SettingError(f"{ENV_CONCURRENCY}: must be a positive whole number, not {given!r}")
        return int(given), ENV_CONCURRENCY
    if configured is not None:
        return configured, "general_settings.max_concurrency"
    return DEFAULT_MAX_CONCURRENCY, "the default"


def apply_concurrency(limit: int) -> str | None:
    """Export ``limit`` to the SDK, the providers and every worker, and make room for its sockets; a warning
    when the open-file limit cannot hold them."""
    os.environ[ENV_CONCURRENCY] = str(limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SOCKETS_PER_CALL * limit + 256  # and the listening socket, the database, logs, the interpreter
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return (f"the open-file limit ({soft}, ulimit -n) holds about {(soft - 256) // SOCKETS_PER_CALL} calls in "
                f"flight, not {limit}: raise it, or lower --max-concurrency")  # fmt: skip
    return None


@contextlib.contextmanager
def shared_metrics() -> Iterator[str]:
    """A fresh private directory for the workers' metrics (prometheus_client's multiprocess mode), set in the
    environment they inherit; removed when they have stopped. A directory left by another run is never reused:
    its counts would be added to this one's."""
    path = tempfile.mkdtemp(prefix="gesso-metrics-")
    previous = os.environ.get(ENV_METRICS_DIR)
    os.environ[ENV_METRICS_DIR] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(ENV_METRICS_DIR, None)
        else:
            os.environ[ENV_METRICS_DIR] = previous
        shutil.rmtree(path, ignore_errors=True)


def mark_parent() -> None:
    """Tell the workers about to start which process is their parent (:func:`follow_parent` checks it)."""
    os.environ[ENV_PARENT] = str(os.getpid())


def follow_parent() -> None:
    """In a worker: SIGTERM to this process when its parent dies (uvicorn's graceful shutdown then runs), or at
    once if the parent is already gone."""
    expected = os.environ.get(ENV_PARENT)
    if not expected or not expected.isdigit():
        return
    parent = int(expected)
    if not _ask_kernel():
        threading.Thread(target=_watch, args=(parent,), name="gesso-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before the request above was made
        os.kill(os.getpid(), signal.SIGTERM)


def _ask_kernel() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def stop_helpers() -> None:
    """Wait for multiprocessing's resource tracker (started with the workers; it would otherwise outlive the
    parent until it notices the parent's end)."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)  # private: absent, it ends on its own
    if stop is not None:
        with contextlib.suppress(Exception):
            stop()

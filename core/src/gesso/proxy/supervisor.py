"""``gesso serve --workers N``'s parent: uvicorn's supervisor of the worker processes, with gesso's reload and
stop (:class:`Supervisor`)."""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess


class Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes (it starts them, replaces one that dies, stops them on SIGTERM or
    SIGINT) with gesso's reload and stop:

    - **SIGHUP** reloads: ``reload()`` checks the config in this process (an invalid one is refused here, once);
      when it is valid each worker is told (SIGHUP) and reloads it in place, its calls in flight unhurried
      (uvicorn's own SIGHUP would restart every worker instead);
    - **a second SIGTERM or SIGINT** while the workers stop is passed on to them (they stop waiting for their
      calls in flight); uvicorn's own supervisor would keep it until they had stopped;
    - **on a stop the listening socket closes** with the workers' copies: uvicorn's supervisor keeps its copy
      until every worker has finished, so connections made meanwhile wait unanswered and are then reset."""

    def __init__(self, config: Any, *, reload: Callable[[], bool]) -> None:
        socket_ = config.bind_socket()
        if "target" in inspect.signature(super().__init__).parameters:  # older uvicorn releases took the target
            super().__init__(config, target=uvicorn.Server(config).run, sockets=[socket_])  # type: ignore[call-arg]
        else:
            super().__init__(config, sockets=[socket_])
        self.reload = reload

    def handle_hup(self) -> None:
        if self.reload():
            for process in self.processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGHUP)

    def terminate_all(self) -> None:
        """Stop: this process's copy of the listening socket is closed before the workers are told, so the socket
        is gone once they have closed theirs and a new connection is refused (a load balancer passes it to another
        replica). Held open, it would keep queueing connections no worker will take, each reset at the end."""
        for socket_ in self.sockets:
            with contextlib.suppress(OSError):
                socket_.close()
        super().terminate_all()

    def join_all(self) -> None:
        for process in self.processes:
            while process.exitcode is None and process.pid is not None:
                process.process.join(0.1)
                for number in (signal.SIGTERM, signal.SIGINT):
                    if number in self.signal_queue:
                        self.signal_queue.remove(number)
                        self._tell_all(number)

    def _tell_all(self, number: int) -> None:
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, number)

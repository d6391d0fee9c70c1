"""A TCP proxy on loopback that a test can cut: `outage(seconds)` closes every open connection and refuses new ones
(nothing listens on the port) until it ends, as a database host that drops off the network and comes back would.

Lives outside conftest.py so fault tests can `from tcp_proxy import TcpProxy`.
"""
from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:`port` (a free one) to `target` (host, port), one pair of pump threads a connection."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.listener is not None:
            # shutdown, not just close: a thread blocked in accept() keeps a closed socket listening on Linux.
            _close(self.listener)
            self.listener = None
        with self.lock:
            for sock in self.open:
                _close(sock)
            self.open.clear()

    def outage(self, seconds: float) -> None:
        """Cut every connection and refuse new ones for `seconds`, then listen on the same port again."""
        self.stop()
        try:
            time.sleep(seconds)
        finally:
            self.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: an outage, or the end
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open.discard(source)
                self.open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

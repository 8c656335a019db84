"""A TCP relay between the engine and PostgreSQL that a test can cut: a real network fault on demand.

`hold()` stops passing the server's replies on (what the server sent is lost, as on a link that
died), `cut()` closes every connection through the relay at once, as a failover or a lost network
does; new connections are relayed as before. With `hold()`, then the server finishing a statement,
then `cut()`, a COMMIT lands while its client never hears the answer: the in-doubt commit.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from psycopg import conninfo


class TcpProxy:
    """Relays 127.0.0.1:`port` to `target` (host, port), one thread per direction per connection."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._held = False
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True).start()

    def url(self, database_url: str) -> str:
        """`database_url` through this relay."""
        params = conninfo.conninfo_to_dict(database_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return conninfo.make_conninfo("", **params)

    def hold(self) -> None:
        """From now on, what the server sends is dropped (the connections stay open)."""
        with self._lock:
            self._held = True

    @contextmanager
    def cut_on_exit(self) -> Iterator[None]:
        """Cut every connection when the block ends, however it ends: inside a `zart.Worker` block, a
        failing assertion would otherwise leave the worker's stop waiting for answers held forever."""
        try:
            yield
        finally:
            self.cut()

    def cut(self) -> int:
        """Close every relayed connection at once, and pass replies again; how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self._held = False
        for client, server in pairs:
            for sock in (client, server):
                _reset(sock)
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if replies and self._held:
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _reset(sink)


def _reset(sock: socket.socket) -> None:
    """Shut the socket down and close it. The shutdown comes first: a close alone neither wakes the
    relay's thread blocked reading it nor reaches the peer until that read returns."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()


@contextmanager
def relayed(database_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A relay to `database_url`'s server, and the URL through it."""
    params = conninfo.conninfo_to_dict(database_url)
    proxy = TcpProxy((params.get("host") or "127.0.0.1", int(params.get("port") or 5432)))
    try:
        yield proxy, proxy.url(database_url)
    finally:
        proxy.close()

"""The HTTP/1.1 connection: uvicorn's httptools protocol, with what a public API needs that stock
uvicorn lacks (a deadline and a bound on a request's head, an upgrade offer declined, parse errors in
the API's error shape). See `HttpProtocol`.
"""

from __future__ import annotations

import asyncio
import contextlib

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# Longest request line and headers, as h11 (under Hypercorn) allowed: 431 beyond.
MAX_HEAD_SIZE = 16 * 1024


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, made fit for a public API.

    - A deadline for a request's headers. uvicorn's keep-alive timeout closes a connection left idle
      after a response, but not one that never sends a request, nor one that trickles a request's
      headers a byte at a time (any byte received disarms it). Here a deadline runs from the
      connection's start, and from the end of each response, until the next request's headers are
      complete; past it the connection is closed. Its length is the keep-alive timeout,
      `--client-timeout`. The body has its own deadline (`middleware.BodyDeadline`).
    - A bound on a request's line and headers, `MAX_HEAD_SIZE` bytes, as h11 had (431): httptools
      keeps a header that has not ended in memory, however long.
    - An upgrade offer is declined (RFC 9110 §7.8): curl --http2, Java's HttpClient and others send
      `Connection: Upgrade` with `Upgrade: h2c` on ordinary requests. httptools stops parsing at such
      a request's headers, so uvicorn would serve it with an empty body (uvicorn issue #2722). Here
      the request is parsed again without its `Upgrade` header, and served as HTTP/1.1.
    - A request httptools cannot parse is answered in the API's error shape (400 `bad_request`)
      rather than uvicorn's plain text, and the connection closed.
    """

    _headers_due: asyncio.TimerHandle | None = None
    _in_head = False  # a request's line and headers have begun and are not complete
    _head_size = 0  # bytes of them received so far (counted a read at a time)
    _ended = False  # a request ended in the read being parsed
    _declining = False  # the request offered an upgrade: it is parsed again without the offer

    # -- the deadline ------------------------------------------------------------------------------

    def _wait_for_headers(self) -> None:
        self._headers_due = self.loop.call_later(self.timeout_keep_alive, self._headers_late)

    def _headers_late(self) -> None:
        self._headers_due = None
        if not self.transport.is_closing():
            self.transport.close()

    def _headers_arrived(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else the next request, its headers complete, starts now
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._headers_arrived()
            self._wait_for_headers()

    # -- parsing -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the bound on a request's head, an upgrade declined, errors as JSON."""
        self._unset_keepalive_if_required()
        in_head = self._in_head
        self._ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._decline_upgrade(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self._refuse(400, "bad_request", f"malformed HTTP/1.1 request: {exc}")
            return
        # Every byte of this read belongs to a head that is not complete, unless a request began
        # here after another one ended (the end of its body, not counted).
        if self._in_head and (in_head or not self._ended):
            self._head_size += len(data)
            if self._head_size > MAX_HEAD_SIZE:
                self._refuse(
                    431,
                    "headers_too_large",
                    f"the request line and headers are larger than {MAX_HEAD_SIZE} bytes",
                )

    def on_message_begin(self) -> None:
        self._in_head, self._head_size = True, 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._headers_arrived()
        if self.parser.should_upgrade() and self.parser.get_method() != b"CONNECT":
            self._declining = True  # no request cycle: `_decline_upgrade` parses it again
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._declining:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._ended = True
        if not self._declining:
            super().on_message_complete()

    def _decline_upgrade(self, rest: bytes) -> None:
        """Parse the request again, without its `Upgrade` header, on a fresh parser, then `rest`
        (what followed its headers: its body, and maybe more requests). A CONNECT, which httptools
        takes as an upgrade too, is served as uvicorn does (no endpoint takes it)."""
        if not self._declining:
            return
        self._declining = False
        version = self.parser.get_http_version()
        lines = [b"%s %s HTTP/%s" % (self.parser.get_method(), self.url, version.encode())]
        lines += [name + b": " + value for name, value in self.headers if name != b"upgrade"]
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # as uvicorn sets its parser (httptools >= 0.6.3)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.data_received(b"\r\n".join(lines) + b"\r\n\r\n" + rest)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` with the API's error body, and close the connection."""
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": {"code": code, "message": message}})
        head = [STATUS_LINE[status]]
        head += [b"%s: %s\r\n" % header for header in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()

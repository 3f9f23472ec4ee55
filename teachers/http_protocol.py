"""The teacher server's HTTP/1.1 protocol: uvicorn's httptools protocol with a header-size limit and a header deadline.

uvicorn bounds neither with its default (httptools) parser: ``h11_max_incomplete_event_size`` applies only to the
h11 parser, and ``timeout_keep_alive`` only to the idle time *between* requests (it is cancelled by the first
byte of the next one), so a client could send megabytes of headers, or open connections and trickle a request
line, and hold a connection slot for ever (Kludex/uvicorn#157, "Further timeouts and resource limiting"; the
header-size limit for httptools was declined upstream in Kludex/uvicorn#1684 and #2019). The request *body*
is bounded by the app (``server.body_timeout_s``, ``server.max_body_mb``), where the answer can name the setting.

:func:`limited_httptools_protocol` makes the class that :func:`robot_rl.teachers.server.uvicorn_config` gives
``uvicorn.Config(http=...)``, uvicorn's documented way to choose the HTTP protocol class.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

#: Default largest request line plus headers (bytes); beyond it 431. ``server.max_header_kb``.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
#: Default longest time from a connection's open, or a request's first byte, to its last header (s); then 408.
#: ``server.header_timeout_s``.
DEFAULT_HEADER_TIMEOUT_S = 10.0

#: After a refusal, how long the connection stays open, reading and discarding what the client still sends (s):
#: closing a socket with unread data makes the kernel reset it, and the client may lose the answer (a lingering
#: close, as nginx's ``lingering_close``).
LINGER_S = 2.0

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _HeaderRefused(Exception):
    """Raised inside an httptools callback to stop parsing a request whose headers are refused."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's :class:`HttpToolsProtocol` with ``max_header_bytes`` and ``header_timeout_s`` enforced.

    - A request line plus headers longer than ``max_header_bytes`` is answered 431 and the connection closed,
      while the headers stream in: complete header lines are counted as httptools reports them, and every read
      that arrives while the headers are incomplete is counted too (httptools buffers a header line until it
      ends), so at most one socket read (256 KiB) past the limit is ever buffered.
    - A connection that has not sent a complete set of headers ``header_timeout_s`` after it opened (or after
      the first byte of its next keep-alive request) is answered 408 and closed; one that sent nothing is
      closed without an answer, as uvicorn closes an idle keep-alive connection.

    A refusal answers, half-closes and discards what still arrives for :data:`LINGER_S` s before it closes, so
    the client reads the answer. Use :func:`limited_httptools_protocol` to set the limits (class attributes).
    Refusals are logged at DEBUG; a 431 found in a complete header line also gets uvicorn's own WARNING
    ``Invalid HTTP request received.`` (the parser is stopped the way uvicorn stops it for malformed input).
    """

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0  # complete request line and header lines of the current request
        self._header_reads = 0  # bytes of the reads that arrived while its headers were incomplete
        self._in_headers = True
        self._refusal: tuple[int, str] | None = None  # set by a parser callback, answered by send_400_response
        self._header_timer: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None  # the timer that ends a refused connection

    def connection_made(self, transport) -> None:  # noqa: D102 (asyncio.Protocol)
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:  # noqa: D102
        self._disarm_header_timer()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._header_bytes == 0 and self.cycle is None:  # opened and silent: close, as an idle keep-alive
            self.transport.close()
            return
        self._refuse(408, f"request headers not received within {self.header_timeout_s} s (server.header_timeout_s)")

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            self._refusal = (431, self._too_big())
            raise _HeaderRefused  # httptools turns it into HttpParserCallbackError -> send_400_response

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self._lingering is not None:
            return  # refused: discarded
        in_headers = self._in_headers
        super().data_received(data)
        if in_headers and self._in_headers and self._lingering is None and not self.transport.is_closing():
            self._header_reads += len(data)  # the whole read was header bytes, and they are not complete yet
            if self._header_reads > self.max_header_bytes:
                self._refuse(431, self._too_big())

    def _too_big(self) -> str:
        return f"request line and headers exceed {self.max_header_bytes} bytes (server.max_header_kb)"

    def on_message_begin(self) -> None:  # noqa: D102 (httptools callback)
        super().on_message_begin()
        self._header_bytes = self._header_reads = 0
        self._in_headers = True
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:  # noqa: D102
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:  # noqa: D102
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:  # noqa: D102
        self._in_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused: uvicorn's 400, or the status of a refusal of ours."""
        if self._lingering is not None:
            return
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, text = self._refusal
        self._refusal = None
        self._refuse(status, text)

    def _refuse(self, status: int, text: str) -> None:
        log.debug("refused %s: %d %s", self.client, status, text)
        self._disarm_header_timer()
        body = text.encode("ascii")
        self.transport.write(b"".join([
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._lingering = self.loop.call_later(LINGER_S, self.transport.close)


def limited_httptools_protocol(max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                               header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> type[LimitedHttpToolsProtocol]:
    """A :class:`LimitedHttpToolsProtocol` subclass with these limits, for ``uvicorn.Config(http=...)``.

    Args:
        max_header_bytes: largest request line plus headers (bytes; each header counts its name, value and 4).
        header_timeout_s: longest wait for a request's complete headers (s).

    Raises:
        ValueError: a limit that is not positive (naming the ``server.*`` key).
    """
    if max_header_bytes < 1:
        raise ValueError(f"server.max_header_kb: must be > 0, got {max_header_bytes} bytes")
    if not header_timeout_s > 0:
        raise ValueError(f"server.header_timeout_s: must be > 0, got {header_timeout_s}")
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"max_header_bytes": int(max_header_bytes), "header_timeout_s": float(header_timeout_s)})


__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "DEFAULT_MAX_HEADER_BYTES", "LINGER_S", "LimitedHttpToolsProtocol",
           "limited_httptools_protocol"]

"""TLS on an accepted socket: `https://` and `wss://` on the same port.

TLS is a different transport, not a different session: `TLSTransport` is a
`Transport` whose socket is an `ssl.SSLSocket`, and the sessions above it
(HTTP, then the WebSocket after a 101) see the same plaintext bytes they
see on plain TCP. Python's `ssl` module does the cryptography; this module
drives it on the non-blocking loop, where three things differ from TCP:

- The handshake: `do_handshake()` raises `SSLWantReadError` or
  `SSLWantWriteError` until it is done, and each is turned into selector
  interest. It runs under the HTTP session's handshake timeout, which starts
  at the accept: a peer that opens TCP and never finishes TLS is dropped
  when that timeout ends, and counts toward `max_connections` meanwhile.
- Reading: the kernel holds records, the SSL object holds what it has
  decrypted (`pending()`). Each `recv_into` has room for a whole record
  (2**14 bytes of plaintext, RFC 8446 §5.1), so none is left half-read;
  records are read on while the kernel holds more (FIONREAD), and bytes
  left in the SSL object are read at once, not left for a select() that
  will never report them.
- Writing: `SSLSocket.send` takes all of a buffer or nothing (Python does
  not enable OpenSSL's partial writes), and a send that raised
  `SSLWantWriteError` must be repeated with the same bytes
  (SSL_write(3): "the same arguments"). The queue keeps the refused chunk
  at its head and it is sent again first. There is no `sendmsg` on an
  SSLSocket: pieces go in order, one write each; runs of small pieces (the
  frames of a backlog) are joined into one record's worth first, so a
  hundred chat lines cost one record and one syscall, not a hundred. A big
  payload is written from the very object the protocol queued, as on TCP.

Closing sends a close_notify alert (RFC 8446 §6.1), then shuts TCP's write
side and drains as the plain transport does. A peer that vanishes, in the
handshake or in the middle of a record, is an end of stream, logged at
DEBUG at most. A bad client (plain HTTP or garbage to this port, no shared
protocol version or cipher) is one INFO line and a closed socket.
"""
from __future__ import annotations

import array
import logging
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from .loop import EVENT_READ, EVENT_WRITE

try:   # how many bytes the kernel holds for a socket (Linux, the BSDs, macOS: ioctl(2))
    from fcntl import ioctl
    from termios import FIONREAD
except ImportError:   # pragma: no cover - not POSIX
    ioctl = None
from .transport import CLOSED, PEER_ENDED, Transport

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("rawws.server")

# The largest plaintext of one TLS record (RFC 8446 §5.1, RFC 5246 §6.2.1).
RECORD_SIZE = 16 * 1024
# Reads and writes per ready event at most, so one peer sending or taking
# tiny records cannot hold the loop; what is left is reported again.
MAX_READS = 64
MAX_WRITES = 64
# TLS 1.2 cipher suites: forward-secret AEAD only, as in Mozilla's
# "intermediate" server configuration (wiki.mozilla.org/Security/Server_Side_TLS).
# TLS 1.3 suites are all AEAD and are left to OpenSSL's defaults.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:@SECLEVEL=2"
ALPN_PROTOCOLS = ["http/1.1"]   # RFC 7301; WebSockets here are HTTP/1.1 upgrades (RFC 6455 §4)

# What a failed handshake's OpenSSL reason means, for the log line.
HANDSHAKE_REASONS = {
    "HTTP_REQUEST": "plain HTTP sent to the TLS port",
    "WRONG_VERSION_NUMBER": "not TLS (or an unknown version)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common",
    "VERSION_TOO_LOW": "no TLS version in common",
    "NO_SHARED_CIPHER": "no cipher in common",
    "NO_CIPHERS_AVAILABLE": "no cipher in common",
    "NO_APPLICATION_PROTOCOL": "no ALPN protocol in common",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client does not trust our certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not know our certificate's CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client refused our certificate",
}


class TLSConfigError(Exception):
    """A certificate or key that cannot be used; the message is one line for the user."""


def server_context(certfile: str | Path, keyfile: str | Path | None = None) -> ssl.SSLContext:
    """The server's default context, with the certificate chain in `certfile`
    (and its key in `keyfile`, or in `certfile` too).

    `ssl.create_default_context(Purpose.CLIENT_AUTH)` (the `ssl` module's
    secure defaults: no SSLv2/3, no compression), then: TLS 1.2 at least;
    TLS 1.2 suites forward-secret AEAD only; no renegotiation (a client that
    asks for it over and over costs the server a handshake each time);
    ALPN `http/1.1`. Raises TLSConfigError with a one-line message.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | getattr(ssl, "OP_NO_RENEGOTIATION", 0))
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    load_certificate(context, certfile, keyfile)
    return context


def load_certificate(context: ssl.SSLContext, certfile: str | Path,
                     keyfile: str | Path | None = None) -> None:
    """`context.load_cert_chain`, with its errors said in one line (TLSConfigError)."""
    for kind, path in (("certificate", certfile), ("key", keyfile)):
        if path is not None and not Path(path).is_file():
            raise TLSConfigError(f"the {kind} file {path} does not exist or is not a file")

    def no_passphrase() -> str:
        # Without this callback OpenSSL would prompt on the terminal.
        raise TLSConfigError(f"the key in {keyfile or certfile} is encrypted; "
                             "give an unencrypted key (server keys are read at start, unattended)")

    try:
        context.load_cert_chain(certfile, keyfile, password=no_passphrase)
    except TLSConfigError:
        raise
    except ssl.SSLError as error:
        raise TLSConfigError(describe_load_error(error, certfile, keyfile)) from None
    except OSError as error:
        raise TLSConfigError(f"cannot read {error.filename or certfile}: "
                             f"{error.strerror or error}") from None


def describe_load_error(error: ssl.SSLError, certfile: str | Path,
                        keyfile: str | Path | None) -> str:
    """One line on what load_cert_chain refused. OpenSSL says "PEM lib" for a
    missing certificate and a missing key alike, so the certificate file is
    read again alone to tell which one it was."""
    if error.reason == "KEY_VALUES_MISMATCH":
        return f"the key in {keyfile or certfile} does not match the certificate in {certfile}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=str(certfile))
    except (ssl.SSLError, OSError, ValueError):
        return f"no PEM certificate (BEGIN CERTIFICATE) in {certfile}"
    if error.reason is None or "PEM" in (error.reason or ""):
        where = keyfile if keyfile is not None else f"{certfile} (and no --keyfile given)"
        return f"no PEM private key (BEGIN PRIVATE KEY) in {where}"
    return f"cannot use the certificate {certfile}: {error.reason}"


def client_context(cafile: str | Path | None = None) -> ssl.SSLContext:
    """A client's context: the certificate and host name are verified
    (`ssl.create_default_context()`), against the system's CAs, or `cafile`'s."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def describe_handshake_error(error: ssl.SSLError) -> str:
    reason = getattr(error, "reason", None)
    return HANDSHAKE_REASONS.get(reason or "", reason or str(error))


class TLSTransport(Transport):
    """A `Transport` over `ssl.SSLSocket`: handshake first, then plaintext to the session."""

    def __init__(self, server: Server, sock: socket.socket, remote: tuple) -> None:
        self.handshaking = True
        self.read_wants_write = False   # a read needs the socket writable (TLS 1.3 KeyUpdate)
        self.write_wants_read = False   # a write needs the socket readable
        self.unfinished: bytes | bytearray | memoryview | None = None   # refused: send again first
        self.read_soon = False          # a read is scheduled for bytes the SSL object holds
        self.fileno = sock.fileno()
        self.unread = array.array("i", [0])   # FIONREAD's answer
        assert server.ssl_context is not None
        wrapped = server.ssl_context.wrap_socket(sock, server_side=True,
                                                 do_handshake_on_connect=False)
        super().__init__(server, wrapped, remote)

    # ---- the handshake --------------------------------------------------------

    def on_ready(self, mask: int) -> None:
        if self.handshaking:
            self.handshake()
            return
        if mask & EVENT_WRITE or (self.write_wants_read and mask & EVENT_READ):
            self.write_out()
        if self.state is CLOSED:
            return
        if mask & EVENT_READ or (self.read_wants_write and mask & EVENT_WRITE):
            self.read_in()

    def handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(EVENT_WRITE)
            return
        except ssl.SSLEOFError:
            log.debug("%s:%s closed during the TLS handshake", *self.remote[:2])
            self.teardown()
            return
        except ssl.SSLError as error:
            log.info("%s:%s TLS handshake failed: %s", *self.remote[:2],
                     describe_handshake_error(error))
            self.teardown()
            return
        except OSError as error:   # a reset, a peer gone
            log.debug("%s:%s TLS handshake: %s", *self.remote[:2], error)
            self.teardown()
            return
        self.handshaking = False
        version, cipher = self.sock.version(), self.sock.cipher()
        alpn = self.sock.selected_alpn_protocol()
        log.debug("%s:%s TLS %s %s", *self.remote[:2], version, cipher[0] if cipher else "")
        if self.tap is not None:
            self.tap.tracer.write(f"[{self.tap.name} ==]", [
                f"TLS handshake done: {version}, cipher {cipher[0] if cipher else '?'}"
                f"{', ALPN ' + alpn if alpn else ''}; decrypted bytes from here on"])
        self.update_interest()
        self.read_in()   # the request may have come with the handshake's last flight

    def _want(self, events: int) -> None:
        if events != self.events and self.state is not CLOSED:
            self.events = events
            self.loop.modify(self.sock, events, self.on_ready)

    # ---- reading ----------------------------------------------------------------

    def read_in(self) -> None:
        if self.handshaking:
            self.handshake()
            return
        self.read_soon = False
        if self.state is CLOSED or self.state is PEER_ENDED:
            return   # (a read scheduled for pending bytes, after the end)
        self.read_wants_write = False
        sock = self.sock
        view = self.server.read_view
        room = len(view)
        count = 0
        ended = False
        # Whole records (each read has room for a full one, so none is left
        # half-read in the SSL object) while the kernel holds more: several
        # messages of a burst are then handled in one turn (a broadcast of
        # each then leaves in one write per peer). The kernel is asked
        # (FIONREAD) rather than the SSL object: an SSLWantReadError costs
        # about as much as a read.
        reads = 0
        while room - count >= RECORD_SIZE and reads < MAX_READS:
            reads += 1
            try:
                got = sock.recv_into(view[count:])
            except ssl.SSLWantReadError:
                break
            except ssl.SSLWantWriteError:
                self.read_wants_write = True
                break
            except ssl.SSLZeroReturnError:   # the peer's close_notify after ours
                ended = True
                break
            except (ssl.SSLEOFError, ConnectionError):   # gone mid-record, or reset
                ended = True
                break
            except OSError as error:   # a corrupt record (bad MAC), an alert
                log.debug("%s:%s TLS read failed: %s", *self.remote[:2], error)
                ended = True
                break
            if not got:   # close_notify, or TCP's EOF
                ended = True
                break
            count += got
            if not self._kernel_has_bytes():
                break
        if count:
            self.received(view[:count])
        if ended:
            if self.state is not CLOSED:
                self.received(view[:0])
            return
        if self.read_wants_write:
            self.update_interest()
        self._read_pending()

    def _kernel_has_bytes(self) -> bool:
        if ioctl is None:
            return True   # then ask the SSL object, and take its SSLWantReadError
        try:
            ioctl(self.fileno, FIONREAD, self.unread)
        except OSError:
            return True
        return self.unread[0] > 0

    def _read_pending(self) -> None:
        """Plaintext the SSL object holds is never reported by select(): read it soon.
        (With a whole record's room in every read there is none; this is the
        guard for when that stops being so.)"""
        if (not self.read_soon and self.state is not CLOSED
                and self.sock.pending()):
            self.read_soon = True
            self.loop.call_later(0, self.read_in)

    def update_interest(self) -> None:
        if self.handshaking or self.state is CLOSED:
            return
        super().update_interest()
        extra = ((EVENT_WRITE if self.read_wants_write else 0)
                 | (EVENT_READ if self.write_wants_read else 0))
        if extra and self.events | extra != self.events:
            self.events |= extra
            self.loop.modify(self.sock, self.events, self.on_ready)

    # ---- writing ----------------------------------------------------------------

    def send_some(self, pieces: list[bytes | bytearray | memoryview]) -> int:
        """Write `pieces` in order, one SSL write each, until one is refused:
        the count of bytes taken, or -1 when the connection broke (torn down).
        A refused piece stays `unfinished`, to be sent again as it is."""
        sent = 0
        sock = self.sock
        for data in pieces:
            try:
                taken = sock.send(data)   # all of it, or an exception
            except ssl.SSLWantWriteError:
                self.unfinished = data
                break
            except ssl.SSLWantReadError:
                self.unfinished = data
                self.write_wants_read = True
                break
            except OSError:   # SSLError included: a reset, a peer gone
                self.teardown()
                return -1
            self.unfinished = None
            self.write_wants_read = False
            if self.tap is not None:
                self.tap.outgoing(data[:taken])
            sent += taken
            if taken < len(data):
                break
        return sent

    def write_out(self) -> None:
        """Send what is queued: the refused chunk first, then chunks of at most
        a record's worth of small pieces, or one big piece as it is."""
        out = self.out
        for _ in range(MAX_WRITES):
            if not out.size:
                break
            chunk = self.unfinished if self.unfinished is not None else self._next_chunk()
            sent = self.send_some([chunk])
            if sent < 0:
                return
            out.consume(sent)
            if self.unfinished is not None:
                break
        self.after_write()

    def _next_chunk(self) -> bytes | bytearray | memoryview:
        """The head piece, or the run of small pieces at the head joined (one copy
        of small frames, for one record and one syscall instead of many)."""
        pieces = self.out.head()
        first = pieces[0]
        size = len(first)
        if size >= RECORD_SIZE or len(pieces) == 1:
            return first
        run = 1
        for data in pieces[1:]:
            if size + len(data) > RECORD_SIZE:
                break
            size += len(data)
            run += 1
        return first if run == 1 else b"".join(pieces[:run])

    # ---- the end ----------------------------------------------------------------

    def _finish(self) -> None:
        if self.state is PEER_ENDED:
            self.close_notify()   # the peer has ended; ours still goes before TCP closes
        super()._finish()

    def shut_write(self) -> None:
        """close_notify (RFC 8446 §6.1), then TCP's FIN. Best effort: what the
        kernel does not take now is not waited for."""
        self.close_notify()
        # socket.socket's shutdown, not SSLSocket's: that one would drop the
        # SSL object, and the peer's last records (its Close frame, its
        # close_notify) could no longer be read while draining.
        socket.socket.shutdown(self.sock, socket.SHUT_WR)

    def close_notify(self) -> None:
        if self.handshaking:
            return
        try:
            self.sock.unwrap()   # non-blocking: sends ours, raises until the peer's comes
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (OSError, ValueError):
            pass   # the peer is gone: nothing to notify

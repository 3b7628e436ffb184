"""A structure-aware fuzzer of whole DICOM sessions against a running server.

Real clients (DCMTK's tools, pynetdicom) talk to the server through a recording proxy
(:class:`Recorder`): what a client sent is a :class:`Session`, a list of PDUs. :class:`Mutator` changes a
session at every level a peer can get wrong — PDUs (type, length field, order, repetition, truncation),
A-ASSOCIATE-RQ items, PDVs (control header, context, length, fragmentation), command elements (values
with bytes outside ASCII, lengths, repetitions, missing ones, unknown command fields), data-set elements
(VRs, lengths, values, character sets, nesting) and plain bytes — and how it is sent (byte by byte, with
pauses). :func:`replay` sends a mutant on a fresh connection and reads what comes back until the server
ends the connection or falls silent; a connection the server neither answers nor ends while we wait is
closed by us.

Everything is deterministic for a seed. The checks that make this a test (the server still serves, holds
what it acknowledged, logs no internal error, stays flat in memory and descriptors, leaves no connection
hanging) are in ``test_session_fuzzer``.
"""
from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qrscp.net import dimse, pdu

_HEADER = struct.Struct(">BBL")


@dataclass
class PDU:
    """One PDU as a client sent it; ``length`` overrides the length field (a lie about the body)."""

    type: int
    body: bytes
    length: int | None = None
    #: the first ``reserved`` byte of the header (0 in every honest PDU)
    reserved: int = 0

    def encode(self) -> bytes:
        return _HEADER.pack(self.type & 0xFF, self.reserved, len(self.body) if self.length is None else self.length) \
            + self.body


@dataclass
class Session:
    """What one client sent on one connection, PDU by PDU, and how to send it."""

    name: str
    pdus: list[PDU]
    #: bytes after which to stop sending (None: everything)
    cut: int | None = None
    #: send this many first bytes one by one
    byte_by_byte: int = 0
    #: (offset, seconds): pause once the offset is sent
    pause: tuple[int, float] | None = None

    def encode(self) -> bytes:
        data = b"".join(pdu_.encode() for pdu_ in self.pdus)
        return data if self.cut is None else data[:self.cut]

    def copy(self) -> Session:
        return Session(self.name, [PDU(p.type, p.body, p.length, p.reserved) for p in self.pdus], self.cut,
                       self.byte_by_byte, self.pause)


def split_pdus(data: bytes) -> list[PDU]:
    """The PDUs of a byte stream (an incomplete tail is kept as a PDU whose length field lies)."""
    pdus, offset = [], 0
    while offset + 6 <= len(data):
        pdu_type, reserved, length = _HEADER.unpack_from(data, offset)
        body = data[offset + 6:offset + 6 + length]
        pdus.append(PDU(pdu_type, body, None if len(body) == length else length, reserved))
        offset += 6 + length
    return pdus


# --- recording ----------------------------------------------------------------------------------------------------

class Recorder:
    """A TCP proxy in front of ``port``: every connection made to :attr:`port` is forwarded to the server,
    and what each client sent, and what the server answered, are recorded."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._forward, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _forward(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.target))
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent, received = bytearray(), bytearray()
        self.sent.append(b"")
        index = len(self.sent) - 1
        self.received.append(b"")

        def pump(source: socket.socket, sink: socket.socket, into: bytearray) -> None:
            try:
                while chunk := source.recv(1 << 16):
                    into += chunk
                    sink.sendall(chunk)
            except OSError:
                pass
            finally:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        back = threading.Thread(target=pump, args=(server, client, received), daemon=True)
        back.start()
        pump(client, server, sent)
        back.join(30)
        client.close()
        server.close()
        self.sent[index], self.received[index] = bytes(sent), bytes(received)

    def sessions(self, name: str) -> list[Session]:
        """What the clients sent since the last call, one session per connection (waits for them to end)."""
        for thread in self._threads:
            thread.join(30)
        recorded = [Session(f"{name}#{n}", split_pdus(data)) for n, data in enumerate(self.sent) if data]
        self.sent.clear()
        self.received.clear()
        self._threads.clear()
        return recorded

    def close(self) -> None:
        self.listener.close()


# --- mutating -----------------------------------------------------------------------------------------------------

#: Values that break assumptions: bytes outside ASCII, NULs, escapes, delimiters, padding, nothing.
_NASTY_VALUES = [b"", b"\x80", b"\xff\xff", b"1.2.840.10008.1.1\x80", b"\x00" * 7, b"\x1b$B;3ED\x1b(B", b"\\\\\\",
                 b"^^==", b"*?*", b" " * 65, b"9" * 70, b"\r\n", b"\xc3\x28", b"ISO 2022 IR 87", b"ISO_IR 192",
                 b"../../etc/passwd", b"%s%n", bytes(range(256))]
_LENGTHS = [0, 1, 2, 3, 5, 0x7F, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF]
_COMMAND_FIELDS = [0x0000, 0x0001, 0x0010, 0x0020, 0x0021, 0x0030, 0x0FFF, 0x0100, 0x8001, 0x8030, 0x0FFE, 0xFFFF]
_VRS = [b"UN", b"SQ", b"OB", b"UT", b"XX", b"\x00\x00", b"UI", b"US", b"AT", b"PN"]


def _elements(data: bytes, explicit: bool) -> list[tuple[int, int, int]]:
    """(offset, header length, value length) of the top-level elements of a data set or command set,
    as far as they parse (little endian)."""
    found, offset = [], 0
    while offset + 8 <= len(data):
        if explicit:
            vr = data[offset + 4:offset + 6]
            if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"):
                if offset + 12 > len(data):
                    break
                header, length = 12, struct.unpack_from("<L", data, offset + 8)[0]
            else:
                header, length = 8, struct.unpack_from("<H", data, offset + 6)[0]
        else:
            header, length = 8, struct.unpack_from("<L", data, offset + 4)[0]
        if length == 0xFFFFFFFF or offset + header + length > len(data):
            found.append((offset, header, 0))
            break
        found.append((offset, header, length))
        offset += header + length
    return found


@dataclass
class _Message:
    """Where a DIMSE message's fragments are: (PDU index, PDV offset in the body, PDV length) each."""

    command: bool
    fragments: list[tuple[int, int, int]] = field(default_factory=list)


def _messages(session: Session) -> list[_Message]:
    messages, current = [], None
    for index, pdu_ in enumerate(session.pdus):
        if pdu_.type != pdu.P_DATA_TF or pdu_.length is not None:
            continue
        offset = 0
        while offset + 6 <= len(pdu_.body):
            length, _context, control = struct.unpack_from(">LBB", pdu_.body, offset)
            if current is None or current.command != bool(control & 1):
                current = _Message(bool(control & 1))
                messages.append(current)
            current.fragments.append((index, offset, length))
            if control & 2:
                current = None
            offset += 4 + length
    return messages


def with_command_value(session: Session, tag: int, value: bytes) -> Session:
    """A copy of ``session`` whose first command holding ``tag`` has ``value`` there (padded to even length)."""
    mutant = session.copy()
    value += b"\0" if len(value) % 2 else b""
    for message in _messages(mutant):
        if not message.command or len(message.fragments) != 1:
            continue
        index, offset, length = message.fragments[0]
        body = mutant.pdus[index].body
        data = body[offset + 6:offset + 4 + length]
        for start, header, size in _elements(data, explicit=False):
            if struct.unpack_from("<HH", data, start) == (tag >> 16, tag & 0xFFFF):
                data = data[:start + 4] + struct.pack("<L", len(value)) + value + data[start + header + size:]
                _replace_pdv(mutant, (index, offset, length), data)
                return mutant
    raise ValueError(f"no command of {session.name} holds ({tag >> 16:04X},{tag & 0xFFFF:04X})")


def _replace_pdv(session: Session, where: tuple[int, int, int], data: bytes) -> None:
    """Put ``data`` in the PDV at (PDU index, PDV offset, PDV length), keeping its context and control byte."""
    index, offset, length = where
    body = session.pdus[index].body
    header = struct.pack(">L", len(data) + 2) + body[offset + 4:offset + 6]
    session.pdus[index].body = body[:offset] + header + data + body[offset + 4 + length:]


def responses(answer: bytes) -> list[dict]:
    """The command sets the server sent in ``answer`` (the bytes of one replay), as far as they parse."""
    found, offset, command = [], 0, bytearray()
    while offset + 6 <= len(answer):
        pdu_type, _, length = struct.unpack_from(">BBL", answer, offset)
        body = answer[offset + 6:offset + 6 + length]
        offset += 6 + length
        if pdu_type != pdu.P_DATA_TF or len(body) < length:
            continue
        try:
            for _context, control, data in pdu.decode_p_data(body):
                if control & 1:
                    command += data
                    if control & 2:
                        found.append(dimse.decode_command(bytes(command)))
                        command.clear()
        except (pdu.PDUError, dimse.DIMSEError):
            command.clear()
    return found


class Mutator:
    """Changes sessions, one operator at a time, deterministically for its random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.operators: list[Callable[[Session], str]] = [
            self.pdu_type, self.pdu_length, self.pdu_order, self.truncate, self.associate_item,
            self.pdv_header, self.pdv_fragments, self.command_element, self.command_field, self.dataset_element,
            self.dataset_nesting, self.bytes, self.pacing]

    def mutate(self, session: Session, rounds: int = 1) -> tuple[Session, list[str]]:
        """A mutant of ``session`` and what was done to it."""
        mutant, done = session.copy(), []
        for _ in range(rounds):
            done.append(self.rng.choice(self.operators)(mutant))
        return mutant, done

    def _pick(self, session: Session, kind: int | None = None) -> PDU | None:
        candidates = [p for p in session.pdus if kind is None or p.type == kind]
        return self.rng.choice(candidates) if candidates else None

    # PDUs
    def pdu_type(self, session: Session) -> str:
        target = self._pick(session)
        if target is None:
            return "no pdu"
        target.type = self.rng.choice([1, 2, 3, 4, 5, 6, 7, 0, 8, 0x16, 0x47, 0xFF])
        if self.rng.random() < 0.2:
            target.reserved = self.rng.randrange(256)
        return f"pdu type {target.type:#x}"

    def pdu_length(self, session: Session) -> str:
        target = self._pick(session)
        if target is None:
            return "no pdu"
        target.length = self.rng.choice(_LENGTHS + [len(target.body) + self.rng.choice([-7, -1, 1, 7])]) & 0xFFFFFFFF
        return f"pdu length {target.length}"

    def pdu_order(self, session: Session) -> str:
        pdus, choice = session.pdus, self.rng.randrange(3)
        if not pdus:
            return "no pdu"
        index = self.rng.randrange(len(pdus))
        if choice == 0:
            del pdus[index]
            return "pdu dropped"
        if choice == 1:
            pdus.insert(index, PDU(pdus[index].type, pdus[index].body, pdus[index].length))
            return "pdu repeated"
        other = self.rng.randrange(len(pdus))
        pdus[index], pdus[other] = pdus[other], pdus[index]
        return "pdus swapped"

    def truncate(self, session: Session) -> str:
        total = len(session.encode())
        session.cut = self.rng.randrange(total + 1) if total else 0
        return f"cut at {session.cut}"

    # A-ASSOCIATE-RQ
    def associate_item(self, session: Session) -> str:
        target = self._pick(session, pdu.A_ASSOCIATE_RQ)
        if target is None or len(target.body) < 68:
            return self.bytes(session)
        body = bytearray(target.body)
        choice = self.rng.randrange(6)
        if choice == 0:                                   # AE titles
            offset = self.rng.choice([4, 20])
            body[offset:offset + 16] = (self.rng.choice(_NASTY_VALUES) + b" " * 16)[:16]
            what = "ae title"
        elif choice == 1:                                 # protocol version
            body[0:2] = struct.pack(">H", self.rng.choice([0, 2, 0xFFFF]))
            what = "protocol version"
        else:                                             # an item or sub-item: its type, length or value
            offset = 68 + self.rng.randrange(max(1, len(body) - 68))
            if choice == 2:
                body[offset] = self.rng.choice([0x10, 0x20, 0x21, 0x30, 0x40, 0x50, 0x51, 0x52, 0x54, 0x55, 0x56, 0xFF])
                what = "item type"
            elif choice == 3 and offset + 4 <= len(body):
                body[offset + 2:offset + 4] = struct.pack(">H", self.rng.choice([0, 1, 0x7FFF, 0xFFFF]))
                what = "item length"
            elif choice == 4:
                value = self.rng.choice(_NASTY_VALUES)
                body[offset:offset] = value
                what = "item bytes inserted"
            else:
                start = 68 + self.rng.randrange(max(1, len(body) - 68))
                body += body[start:start + self.rng.randrange(1, 200)] * self.rng.randrange(1, 50)
                what = "items repeated"
        target.body = bytes(body)
        return f"a-associate-rq {what}"

    # PDVs
    def _fragment(self, session: Session) -> tuple[int, int, int] | None:
        """A PDV of one of the session's DIMSE messages: (PDU index, offset, length); None without any."""
        messages = _messages(session)
        return self.rng.choice(self.rng.choice(messages).fragments) if messages else None

    def pdv_header(self, session: Session) -> str:
        fragment = self._fragment(session)
        if fragment is None:
            return self.bytes(session)
        index, offset, length = fragment
        body = bytearray(session.pdus[index].body)
        choice = self.rng.randrange(3)
        if choice == 0:
            body[offset + 5] = self.rng.choice([0, 1, 2, 3, 4, 0xFF])
            what = "control"
        elif choice == 1:
            body[offset + 4] = self.rng.choice([0, 2, 4, 99, 255, 1, 3, 5])
            what = "context"
        else:
            body[offset:offset + 4] = struct.pack(">L", self.rng.choice(_LENGTHS) & 0xFFFFFFFF)
            what = "length"
        session.pdus[index].body = bytes(body)
        return f"pdv {what}"

    def pdv_fragments(self, session: Session) -> str:
        """Split a message's PDVs into many small ones (each in its own PDU), as a slow peer would."""
        fragment = self._fragment(session)
        if fragment is None:
            return self.bytes(session)
        index, offset, length = fragment
        body = session.pdus[index].body
        context, control = body[offset + 4], body[offset + 5]
        data = body[offset + 6:offset + 4 + length]
        size = self.rng.choice([1, 2, 3, 7, 64])
        pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        new = [PDU(pdu.P_DATA_TF, struct.pack(">LBB", len(piece) + 2, context,
                                              control if number == len(pieces) - 1 else control & ~2) + piece)
               for number, piece in enumerate(pieces)]
        rest = body[:offset] + body[offset + 4 + length:]
        session.pdus[index:index + 1] = ([PDU(pdu.P_DATA_TF, rest)] if rest else []) + new[:2000]
        return f"pdv split in {min(len(new), 2000)}"

    # command sets and data sets
    def _message_data(self, session: Session, command: bool) -> tuple[int, int, int, bytes] | None:
        """A message of the kind whose data sits in one PDV: (PDU index, PDV offset, PDV length, data)."""
        messages = [m for m in _messages(session) if m.command == command and len(m.fragments) == 1]
        if not messages:
            return None
        index, offset, length = self.rng.choice(messages).fragments[0]
        return index, offset, length, session.pdus[index].body[offset + 6:offset + 4 + length]

    def _replace_message_data(self, session: Session, where: tuple[int, int, int, bytes], data: bytes) -> None:
        _replace_pdv(session, where[:3], data)

    def command_element(self, session: Session) -> str:
        where = self._message_data(session, True)
        if where is None:
            return self.bytes(session)
        data = where[3]
        elements = _elements(data, explicit=False)
        if not elements:
            return self.bytes(session)
        offset, header, length = self.rng.choice(elements)
        choice = self.rng.randrange(5)
        if choice == 0:                                  # a nasty value, its length told
            value = self.rng.choice(_NASTY_VALUES)
            data = data[:offset + 4] + struct.pack("<L", len(value)) + value + data[offset + header + length:]
            what = "value"
        elif choice == 1:                                # the length field lies
            data = data[:offset + 4] + struct.pack("<L", self.rng.choice(_LENGTHS)) + data[offset + 8:]
            what = "length"
        elif choice == 2:                                # repeated
            element = data[offset:offset + header + length]
            data = data[:offset] + element + element + data[offset + header + length:]
            what = "repeated"
        elif choice == 3:                                # dropped
            data = data[:offset] + data[offset + header + length:]
            what = "dropped"
        else:                                            # a byte outside ASCII appended to a UID or AE
            value = data[offset + header:offset + header + length].rstrip(b"\0 ") + b"\x80"
            value += b"\0" if len(value) % 2 else b""
            data = data[:offset + 4] + struct.pack("<L", len(value)) + value + data[offset + header + length:]
            what = "byte outside ascii"
        self._replace_message_data(session, where, data)
        return f"command element {what}"

    def command_field(self, session: Session) -> str:
        where = self._message_data(session, True)
        if where is None:
            return self.bytes(session)
        try:
            command = dimse.decode_command(where[3])
        except dimse.DIMSEError:
            return "command does not parse"
        command["CommandField"] = self.rng.choice(_COMMAND_FIELDS)
        if self.rng.random() < 0.3:
            command["MessageID"] = self.rng.choice([0, 1, 0xFFFF])
        self._replace_message_data(session, where, dimse.encode_command(command))
        return f"command field {command['CommandField']:#x}"

    def dataset_element(self, session: Session) -> str:
        where = self._message_data(session, False)
        if where is None:
            return self.bytes(session)
        data = where[3]
        explicit = data[4:6].isalpha()
        elements = _elements(data, explicit)
        if not elements:
            return self.bytes(session)
        offset, header, length = self.rng.choice(elements)
        choice = self.rng.randrange(5)
        if choice == 0 and explicit:
            data = data[:offset + 4] + self.rng.choice(_VRS) + data[offset + 6:]
            what = "vr"
        elif choice == 1:
            field_at, field_size = (offset + 8, 4) if header == 12 else (offset + 6, 2) if explicit else (offset + 4, 4)
            value = self.rng.choice(_LENGTHS) & ((1 << (8 * field_size)) - 1)
            data = data[:field_at] + value.to_bytes(field_size, "little") + data[field_at + field_size:]
            what = "length"
        elif choice == 2 and header == 8:
            value = self.rng.choice(_NASTY_VALUES)[:0xFFFF]
            value += b" " if len(value) % 2 else b""
            size = struct.pack("<H", len(value)) if explicit else struct.pack("<L", len(value))
            start = offset + (6 if explicit else 4)
            data = data[:start] + size + value + data[offset + header + length:]
            what = "value"
        elif choice == 3:                                # a Specific Character Set of another kind in front
            charset = self.rng.choice([b"ISO_IR 192", b"\\ISO 2022 IR 87", b"ISO_IR 999", b"ISO 2022 IR 6\\",
                                       b"ISO_IR 100\\ISO_IR 192"])
            charset += b" " if len(charset) % 2 else b""
            element = struct.pack("<HH2sH", 8, 5, b"CS", len(charset)) + charset if explicit \
                else struct.pack("<HHL", 8, 5, len(charset)) + charset
            data = element + data
            what = "character set"
        else:
            data = data[:offset] + data[offset + header + length:]
            what = "dropped"
        self._replace_message_data(session, where, data)
        return f"data set element {what}"

    def dataset_nesting(self, session: Session) -> str:
        """A deeply nested or item-littered sequence in front of a data set."""
        where = self._message_data(session, False)
        if where is None:
            return self.bytes(session)
        depth = self.rng.choice([1, 10, 300, 500, 2000])
        explicit = where[3][4:6].isalpha()
        head = (struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF) if explicit
                else struct.pack("<HHL", 0x0008, 0x1140, 0xFFFFFFFF)) + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        tail = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        self._replace_message_data(session, where, head * depth + tail * depth + where[3])
        return f"nested {depth} deep"

    # bytes and pacing
    def bytes(self, session: Session) -> str:
        target = self._pick(session)
        if target is None or not target.body:
            return "no bytes"
        body = bytearray(target.body)
        for _ in range(self.rng.randrange(1, 5)):
            position = self.rng.randrange(len(body)) if body else 0
            choice = self.rng.randrange(3)
            if choice == 0 and body:
                body[position] ^= 1 << self.rng.randrange(8)
            elif choice == 1:
                body[position:position] = bytes([self.rng.randrange(256)])
            elif body:
                del body[position]
        target.body = bytes(body)
        return "bytes"

    def pacing(self, session: Session) -> str:
        total = len(session.encode())
        if self.rng.random() < 0.5:
            session.byte_by_byte = min(total, self.rng.choice([10, 100, 400]))
            return f"{session.byte_by_byte} bytes one by one"
        session.pause = (self.rng.randrange(total + 1) if total else 0, self.rng.choice([0.2, 0.5, 1.0]))
        return f"pause {session.pause[1]} s"


# --- replaying ----------------------------------------------------------------------------------------------------

@dataclass
class Replay:
    """What became of a mutant: the server's answer, and how the connection ended."""

    answer: bytes
    ending: str        # "closed", "reset", or "silent" (we closed after waiting in vain)
    seconds: float


def replay(port: int, session: Session, patience: float) -> Replay:
    """Send ``session`` on a fresh connection to ``port``; read until the server ends the connection or
    stays silent for ``patience`` seconds after we finished sending."""
    started = time.monotonic()
    data = session.encode()
    answer = bytearray()
    ending = "silent"
    with socket.create_connection(("127.0.0.1", port), timeout=patience) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def drain() -> bool:
            """Read what is there; False once the server ended the connection."""
            nonlocal ending
            sock.setblocking(False)
            try:
                while chunk := sock.recv(1 << 16):
                    answer.extend(chunk)
                ending = "closed"
                return False
            except BlockingIOError:
                return True
            except ConnectionResetError:
                ending = "reset"
                return False
            finally:
                sock.setblocking(True)

        try:
            position = 0
            while position < len(data):
                step = 1 if position < session.byte_by_byte else len(data) - position
                if session.pause and position <= session.pause[0] < position + step:
                    step = max(1, session.pause[0] - position)
                sock.sendall(data[position:position + step])
                position += step
                if session.pause and position == session.pause[0]:
                    time.sleep(session.pause[1])
                if step == 1 and not drain():
                    break
            else:
                sock.settimeout(patience)
                while True:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        ending = "closed"
                        break
                    answer.extend(chunk)
        except TimeoutError:
            ending = "silent"
        except (ConnectionResetError, BrokenPipeError):
            ending = "reset"
        except OSError:
            ending = "reset"
    return Replay(bytes(answer), ending, time.monotonic() - started)

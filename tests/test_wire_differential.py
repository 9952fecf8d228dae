"""gesso_bedrock.wire's response reader against h11's, on the same bytes: each stream (hand-written framings,
valid and invalid, and hypothesis-generated ones) is fed whole, split in two at every byte boundary, and (the
hand-written ones) byte by byte, to ``wire.Parser`` and to an ``h11.Connection`` acting as a client that sent a
POST. Their verdicts must match: both reject, or both accept with the same status, headers, body and whether the
connection may carry another request.

wire refuses a few shapes h11 accepts; each is named in ``STRICTER`` with the rule that lets a recipient refuse
it, and is found in the bytes by this file's own reading of the heads, chunk lines and trailers (not by wire's).
Where one applies and h11 accepts, wire must reject; wire never accepts what h11 rejects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import attrs
import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gesso_bedrock import wire


@attrs.frozen
class Accept:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    reusable: bool  # the connection may carry the next request


REJECT = "reject"
Verdict = Accept | str


def _headers(pairs: Iterator[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    joined: dict[str, str] = {}
    for name, value in pairs:
        if name == "transfer-encoding":  # h11 lower-cases its value
            value = value.lower()
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return tuple(sorted(joined.items()))


def wire_verdict(pieces: list[bytes]) -> Verdict:
    parser = wire.Parser()
    try:
        for index, piece in enumerate(pieces):
            reply = parser.feed(piece)
            if reply is not None:
                rest = any(pieces[index + 1 :])  # bytes after the answer: left unread on the socket
                return Accept(
                    reply.status, _headers(iter(reply.headers.items())), reply.body, reply.keep_alive and not rest
                )
        reply = parser.eof()
    except wire.WireError:
        return REJECT
    return Accept(reply.status, _headers(iter(reply.headers.items())), reply.body, reply.keep_alive)


REQUEST = h11.Request(method="POST", target="/model/m/invoke", headers=[("Host", "h"), ("Content-Length", "2")])


def h11_verdict(pieces: list[bytes]) -> Verdict:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=wire.MAX_HEAD)
    for event in (REQUEST, h11.Data(data=b"{}"), h11.EndOfMessage()):
        conn.send(event)
    status, headers, body = 0, (), []
    fed = [*pieces, b""]  # b"": the server closed
    try:
        for index, piece in enumerate(fed):
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    headers = _headers((n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers)
                elif isinstance(event, h11.Data):
                    body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    rest = bool(conn.trailing_data[0]) or any(fed[index + 1 :])
                    closed = index == len(fed) - 1
                    reusable = conn.their_state is h11.DONE and not rest and not closed
                    return Accept(status, headers, b"".join(body), reusable)
                else:  # ConnectionClosed before the answer, or PAUSED
                    return REJECT
    except h11.RemoteProtocolError:
        return REJECT
    return REJECT


# -- wire's stricter refusals, read from the bytes ---------------------------------------------------------


def _heads(data: bytes) -> tuple[list[bytes], int]:
    """Each head in ``data`` with its terminating blank line (the interim answers' and the final one's), and where
    the final one ends."""
    heads, end = [], 0
    while (blank := re.search(rb"\n\r?\n", data[end:])) is not None:
        heads.append(data[end : end + blank.end()])
        start, end = end, end + blank.end()
        if not re.match(rb"HTTP/\d\.\d 1\d\d\b", data[start:]):
            break
    return heads, end


def _chunked(data: bytes, at: int) -> tuple[list[bytes], bytes]:
    """The chunk lines and the trailer section of the chunked body starting at ``at``, as h11 (which accepted it)
    read them: each chunk line ends with CRLF, then come the data and its CRLF; after the last chunk, the trailers
    run to the end."""
    lines = []
    while (line := re.match(rb"([0-9A-Fa-f]+)[^\r\n]*\r\n", data[at:])) is not None:
        lines.append(line[0])
        at += line.end()
        if int(line[1], 16) == 0:
            return lines, data[at:]
        at += int(line[1], 16) + 2
    return lines, b""


Section = tuple[str, bytes]  # ("head", "chunk line" or "trailers", its bytes: a first line, then field lines)


def sections(data: bytes) -> list[Section]:
    """The heads in ``data``, and the final answer's chunk lines and trailer section if its body is chunked."""
    heads, end = _heads(data)
    found = [("head", head) for head in heads]
    bodiless = heads and re.match(rb"HTTP/\d\.\d (1\d\d|204|304)\b", heads[-1])
    if heads and not bodiless and _named(heads[-1], b"transfer-encoding"):
        lines, trailers = _chunked(data, end)
        found += [("chunk line", line) for line in lines] + [("trailers", b"\r\n" + trailers)]
    return found


def _fields(section: bytes) -> list[bytes]:
    return re.split(rb"\r?\n", section)[1:]


def _named(section: bytes, name: bytes) -> list[bytes]:
    return [line.split(b":", 1)[1] for line in _fields(section) if line.lower().startswith(name + b":")]


TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
QUOTED = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
#: a chunk line as llhttp reads it: RFC 9112 7.1.1's ;name=value extensions (tokens, or a quoted string for a
#: value), except that a name or a value may be empty, a quoted string may follow a token, and no line ends with ";"
CHUNK_LINE = re.compile(rb"[0-9A-Fa-f]+(?:;(?:%s)?(?:=(?:%s)?(?:%s)?)?)*(?<!;)\r\n" % (TOKEN, TOKEN, QUOTED))

#: (what, the rule that lets a recipient refuse it, whether a section of that kind has it)
STRICTER: list[tuple[str, str, Callable[[str, bytes], bool]]] = [
    (
        "a line ended by a bare LF",
        "RFC 9112 2.2: a recipient MAY recognize a bare LF as a line terminator (llhttp does not)",
        lambda kind, section: re.search(rb"(?<!\r)\n", section) is not None,
    ),
    (
        "a folded header line (obs-fold)",
        "RFC 9112 5.2: obs-fold is deprecated outside message/http; llhttp 9 refuses it",
        lambda kind, section: any(line[:1] in (b" ", b"\t") for line in _fields(section)),
    ),
    (
        "Content-Length repeated or a list",
        "RFC 9110 8.6: a recipient MAY reject a repeated or list-valued Content-Length as invalid",
        lambda kind, section: len(values := _named(section, b"content-length")) > 1 or any(b"," in v for v in values),
    ),
    (
        "Transfer-Encoding with Content-Length",
        "RFC 9112 6.3: ought to be handled as an error (the shape of response smuggling)",
        lambda kind, section: bool(_named(section, b"transfer-encoding")) and bool(_named(section, b"content-length")),
    ),
    (
        "a Content-Length among the trailers",
        "RFC 9110 6.5.1: framing fields cannot be trailers; llhttp reads it as a second framing",
        lambda kind, section: kind == "trailers" and bool(_named(section, b"content-length")),
    ),
    (
        "a chunk extension that is not ;name=value (as llhttp reads them)",
        'RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), names and values '
        'tokens or quoted strings; h11 takes anything after ";"',
        lambda kind, section: kind == "chunk line" and CHUNK_LINE.fullmatch(section) is None,
    ),
    (
        "an HTTP version other than 1.0 and 1.1",
        "RFC 9112 2.3: HTTP/2's syntax is not this one; a higher 1.x SHOULD (not MUST) be read as 1.1, llhttp refuses",
        lambda kind, section: kind == "head" and re.match(rb"HTTP/1\.[01] ", section) is None,
    ),
    (
        "a control character in the status line, a header, a chunk line or a trailer",
        "RFC 9110 5.5: field values with CTLs are invalid (llhttp refuses them); RFC 9112 4 and 7.1: nor have a "
        "reason phrase or a chunk extension",
        lambda kind, section: re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", section) is not None,
    ),
]


def expected(pieces: list[bytes]) -> tuple[Verdict, str | None]:
    """h11's verdict, made a refusal where one of wire's stricter rules applies (named)."""
    verdict = h11_verdict(pieces)
    if verdict == REJECT:
        return verdict, None
    for kind, section in sections(b"".join(pieces)):
        for what, _, applies in STRICTER:
            if applies(kind, section):
                return REJECT, what
    return verdict, None


def splits(data: bytes, *, bytewise: bool = False) -> Iterator[list[bytes]]:
    yield [data]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    if bytewise:
        yield [data[i : i + 1] for i in range(len(data))]


def check(data: bytes, *, bytewise: bool = False) -> int:
    """Compare the two readers on every split of ``data``; the number of splits fed."""
    fed = 0
    for pieces in splits(data, bytewise=bytewise):
        want, why = expected(pieces)
        got = wire_verdict(pieces)
        assert got == want, f"{data!r} split {[len(p) for p in pieces]}: wire {got}, h11 {want} ({why or 'no rule'})"
        fed += 1
    return fed


# -- hand-written streams ----------------------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"
CASES = {
    "sized": OK + b"Content-Length: 5\r\nX-Amzn-RequestId: r1\r\n\r\nhello",
    "sized, empty": OK + b"Content-Length: 0\r\n\r\n",
    "sized, leading zeros": OK + b"Content-Length: 005\r\n\r\nhello",
    "repeated headers": OK + b"A: 1\r\nContent-Length: 2\r\na: 2\r\n\r\nhi",
    "padded values": OK + b"A:   x y \t\r\nContent-Length:  2 \r\n\r\nhi",
    "an empty value": OK + b"A:\r\nContent-Length: 0\r\n\r\n",
    "no reason phrase": b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
    "empty reason phrase": b"HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n",
    "latin-1 reason and value": b"HTTP/1.1 200 \xc9t\xe9\r\nA: \xe9\r\nContent-Length: 0\r\n\r\n",
    "chunked with extensions and trailers": CHUNKED + b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n",
    "chunked, upper-case hex": CHUNKED + b"A\r\n0123456789\r\n0\r\n\r\n",
    "chunked, no data": CHUNKED + b"0\r\n\r\n",
    "Chunked, any case": OK + b"Transfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "100 Continue first": b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"Content-Length: 2\r\n\r\nhi",
    "two interim answers": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: <a>\r\n\r\n"
    + CHUNKED
    + b"0\r\n\r\n",
    "until the close": OK + b"A: 1\r\n\r\nall of it",
    "HTTP/1.0 until the close": b"HTTP/1.0 200 OK\r\n\r\nall of it",
    "HTTP/1.0 keep-alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    "HTTP/1.0 sized": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "HTTP/1.0 chunked": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "Connection: close": OK + b"Connection: close\r\nContent-Length: 2\r\n\r\nhi",
    "204 with a length": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    "Connection: close among the trailers": CHUNKED + b"2\r\nhi\r\n0\r\nConnection: close\r\n\r\n",
    "a stray CRLF after the answer": OK + b"Content-Length: 2\r\n\r\nhi\r\n",
    "a stray CR after a chunked answer": CHUNKED + b"0\r\n\r\n\r",
    "bytes after the answer": OK + b"Content-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n",
    "an error answer": b"HTTP/1.1 429 Too Many\r\nx-amzn-ErrorType: ThrottlingException\r\nContent-Length: 2\r\n\r\n{}",
    # refused
    "Content-Length 1_0": OK + b"Content-Length: 1_0\r\n\r\n0123456789",
    "Content-Length -1": OK + b"Content-Length: -1\r\n\r\nx",
    "Content-Length +5": OK + b"Content-Length: +5\r\n\r\nhello",
    "Content-Length in hex": OK + b"Content-Length: 0x5\r\n\r\nhello",
    "Content-Length empty": OK + b"Content-Length: \r\n\r\n",
    "Content-Length twice": OK + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "Content-Length list": OK + b"Content-Length: 5, 5\r\n\r\nhello",
    "Content-Length conflicting": OK + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "a body cut short": OK + b"Content-Length: 10\r\n\r\nshort",
    "Transfer-Encoding and Content-Length": OK
    + b"Content-Length: 5\r\n"
    + CHUNKED[len(OK) :]
    + b"5\r\nhello\r\n0\r\n\r\n",
    "Content-Length after Transfer-Encoding": CHUNKED[:-2] + b"Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "gzip, chunked": OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "chunked, gzip": OK + b"Transfer-Encoding: chunked, gzip\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "identity": OK + b"Transfer-Encoding: identity\r\n\r\nhi",
    "no CRLF after a chunk": CHUNKED + b"5\r\nhelloX0\r\n\r\n",
    "LF after a chunk": CHUNKED + b"5\r\nhello\n0\r\n\r\n",
    "chunk size 0x3": CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk size zz": CHUNKED + b"zz\r\n",
    "chunk size -1": CHUNKED + b"-1\r\nx\r\n0\r\n\r\n",
    "chunk too short": CHUNKED + b"5\r\nhi\r\n0\r\n\r\n",
    "chunked cut short": CHUNKED + b"5\r\nhello\r\n",
    "a Content-Length trailer": CHUNKED + b"0\r\nContent-Length: 5\r\n\r\n",
    "a chunk extension without a name": CHUNKED + b"1;\r\nx\r\n0\r\n\r\n",
    "a chunk extension with a quoted value": CHUNKED + b'1;a="b c"\r\nx\r\n0;z\r\n\r\n',
    "a trailer ended by LF": CHUNKED + b"0\r\nT: 1\n\r\n",
    "a bad trailer": CHUNKED + b"0\r\nno colon\r\n\r\n",
    "not HTTP": b"SSH-2.0-OpenSSH\r\n\r\n",
    "HTTP/2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.9": b"HTTP/1.9 200 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 lower case": b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "a two-digit status": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "a status below 100": b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    "a four-digit status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "101 unasked": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
    "no colon": OK + b"no colon here\r\nContent-Length: 0\r\n\r\n",
    "space before the colon": OK + b"A : 1\r\nContent-Length: 0\r\n\r\n",
    "an empty name": OK + b": x\r\nContent-Length: 0\r\n\r\n",
    "a NUL in a value": OK + b"A: x\x00y\r\nContent-Length: 0\r\n\r\n",
    "a CTL in a value": OK + b"A: x\x01y\r\nContent-Length: 0\r\n\r\n",
    "a CTL in the reason phrase": b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
    "a NUL in the reason phrase": b"HTTP/1.1 200 \x00OK\r\n\r\n",
    "a folded header": OK + b"A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
    "bare LF lines": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
    "nothing": b"",
    "a head cut short": OK + b"Content-Le",
}


@pytest.mark.parametrize("name", list(CASES))
def test_hand_written_streams_get_h11s_verdict(name):
    assert check(CASES[name], bytewise=True) >= len(CASES[name])


def test_the_issues_probes_are_refused():
    for name in ("Content-Length 1_0", "Content-Length -1", "Content-Length +5", "Transfer-Encoding and Content-Length",
                 "no CRLF after a chunk", "chunk size 0x3"):  # fmt: skip
        assert wire_verdict([CASES[name]]) == REJECT, name


def test_each_stricter_rule_is_met_by_a_hand_written_stream_h11_accepts():
    """Every named refusal is exercised by a hand-written stream that h11 accepts and wire refuses."""
    for what, _, applies in STRICTER:
        streams = [data for data in CASES.values() if any(applies(*section) for section in sections(data))]
        assert any(h11_verdict([data]) != REJECT and wire_verdict([data]) == REJECT for data in streams), what


# -- generated streams -------------------------------------------------------------------------------------


#: each part of a generated stream: (valid choices, odd choices)
PARTS: dict[str, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = {
    "line end": ((b"\r\n",), (b"\n", b"\r", b"")),
    "header": (
        (
            b"X-Amzn-RequestId: r1",
            b"x-a: 1",
            b"X-A: 2",
            b"X-A:b",
            b"X-A:   pad  ",
            b"X-B: \xe9",
            b"X-C:",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Connection: Close",
            b"Connection: upgrade",
            b"Upgrade: h2c",
            b"Trailer: T",
        ),
        (
            b"X A: b",
            b"X-A : b",
            b": x",
            b"X-B: a\x01b",
            b"X-B: a\x7fb",
            b"\xe9: v",
            b" folded",
            b"\tfolded",
            b"X-D: a\x00b",
            b"NoColon",
        ),
    ),
    "version": ((b"HTTP/1.1", b"HTTP/1.0"), (b"HTTP/1.9", b"HTTP/2.0", b"HTTP/1", b"http/1.1", b"HTTP/1.1 ")),
    "status": ((b"200", b"201", b"204", b"304", b"404", b"429", b"500", b"999"), (b"099", b"20", b"2000", b"2x0")),
    "reason": ((b" OK", b" ", b"", b" Not Found", b" \xc9t\xe9"), (b" a\x01b", b"  OK", b" \x00")),
    "interim": (
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
        (b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n", b"HTTP/1.1 100 Continue\n\n", b"\r\n"),
    ),
    "length": (
        (b"{n}", b"0{n}", b" {n}"),
        (b"+{n}", b"-{n}", b"{n}, {n}", b"{n},{m}", b"{m}", b"{k}", b"0x{n:x}", b"1_0", b"", b"9" * 23, b"{n}.0"),
    ),
    "chunk size": (
        (b"{:x}", b"{:X}", b"{:03x}", b"{:x};ext=1", b'{:x};a="b"'),
        (b"0x{:x}", b"{:x} ;a", b"{:x};", b" {:x}", b"{:x}\t", b"-{:x}", b"{:x} "),
    ),
    "chunk error": ((b"0",), (b"1", b"-1")),
    "coding": (
        (b"chunked", b"Chunked", b"CHUNKED"),
        (b"chunked ", b"gzip, chunked", b"chunked, gzip", b"identity", b"chunked, chunked", b"chunked;x=1", b""),
    ),
    "after data": ((b"\r\n",), (b"", b"\n", b"X\r\n", b"\r\n\r\n")),
    "trailer": ((b"T: 1", b"X-Checksum: abc"), (b"Bad trailer", b"Content-Length: 5", b"X: \x01", b" fold")),
    "last line": ((b"\r\n",), (b"", b"\n", b"\r\n\r\n")),
    "both lengths": ((b"",), (b"yes",)),
    "a byte changed": ((b"",), (b"", b"\r", b"\n", b" ", b":", b";", b"0", b"a", b"x", b"-", b"\t", b"\x00")),
}


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A response: valid but for at most two parts (see ``PARTS``), each of which may then be odd wherever it is
    drawn."""
    odd = draw(st.sets(st.sampled_from(sorted(PARTS)), max_size=2))

    def pick(part: str) -> bytes:
        valid, strange = PARTS[part]
        return draw(st.sampled_from(strange if part in odd and draw(st.booleans()) else valid))

    payload = draw(st.binary(max_size=20))
    n = len(payload)
    framing = draw(st.sampled_from(("sized", "chunked", "none")))
    fields, body = [], payload
    if framing != "none":
        length = pick("length").decode().format(n=n, m=n + 1, k=max(n - 1, 0)).encode()
        fields = [b"Content-Length: " + length]
    if framing == "chunked":
        fields = fields if pick("both lengths") else []
        fields.append(b"Transfer-Encoding: " + pick("coding"))
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        body = b""
        for piece in [payload[a:b] for a, b in zip([0, *cuts], [*cuts, n]) if b > a] + [b""]:
            size = max(len(piece) + int(pick("chunk error")), 0)
            body += pick("chunk size").decode().format(size).encode() + pick("line end") + piece
            body += pick("after data") if piece else b""
        body += b"".join(t + b"\r\n" for t in [pick("trailer") for _ in range(draw(st.integers(0, 2)))])
        body += pick("last line")
    fields = draw(st.permutations(fields + [pick("header") for _ in range(draw(st.integers(0, 3)))]))
    head = pick("version") + b" " + pick("status") + pick("reason") + pick("line end")
    head += b"".join(field + pick("line end") for field in fields) + pick("line end")
    data = pick("interim") + head + body
    if "a byte changed" in odd:  # changed, dropped or added
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + pick("a byte changed") + data[at + draw(st.integers(0, 1)) :]
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_generated_streams_get_h11s_verdict_at_every_split(data):
    check(data)

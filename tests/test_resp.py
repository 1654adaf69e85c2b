"""rawws.resp: RESP2 commands byte for byte, and the incremental reply parser.

Every reply is checked whole, cut in two at every byte boundary, and fed one
byte at a time: how the bytes arrive must not change what comes out.
"""
from __future__ import annotations

import pytest

from rawws.resp import NEED_DATA, ReplyError, RespParser, RespProtocolError, encode_command


def plain(reply):
    """A reply with each ReplyError as ("error", message), so replies compare with ==."""
    if isinstance(reply, ReplyError):
        return ("error", reply.message)
    if isinstance(reply, list):
        return [plain(item) for item in reply]
    return reply


def parse_all(chunks, **limits) -> list:
    """Every reply in `chunks`, fed one after another; the bytes must all be used."""
    parser = RespParser(**limits)
    replies = []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not NEED_DATA:
            replies.append(plain(reply))
    assert parser.buffered == 0
    return replies


def every_cut(data: bytes) -> list[list[bytes]]:
    """`data` whole, in two pieces at every boundary, and byte by byte."""
    cuts = [[data]]
    cuts += [[data[:index], data[index:]] for index in range(1, len(data))]
    cuts.append([data[index:index + 1] for index in range(len(data))])
    return cuts


# ---- encoding ------------------------------------------------------------------

def test_encode_command_is_an_array_of_bulk_strings():
    # The example of the protocol's specification (redis.io/docs/reference/protocol-spec).
    assert encode_command("LLEN", "mylist") == b"*2\r\n$4\r\nLLEN\r\n$6\r\nmylist\r\n"


def test_encode_command_spells_str_as_utf8_int_in_decimal_and_bytes_as_they_are():
    assert encode_command("SET", "cl\u00e9", b"\x00\r\n\xff", 42, -7) == (
        b"*5\r\n$3\r\nSET\r\n$4\r\ncl\xc3\xa9\r\n$4\r\n\x00\r\n\xff\r\n"
        b"$2\r\n42\r\n$2\r\n-7\r\n")
    assert encode_command("ECHO", "") == b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"
    assert encode_command(bytearray(b"PING")) == b"*1\r\n$4\r\nPING\r\n"
    assert encode_command(memoryview(b"GET"), "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


@pytest.mark.parametrize("bad", [1.5, True, None, ["a"]], ids=repr)
def test_encode_command_refuses_what_has_no_single_spelling(bad):
    with pytest.raises(TypeError):
        encode_command("SET", "k", bad)


def test_encode_command_needs_a_name():
    with pytest.raises(ValueError):
        encode_command()


# ---- each reply type, cut everywhere ------------------------------------------

REPLIES = [
    pytest.param(b"+OK\r\n", "OK", id="simple string"),
    pytest.param(b"+\r\n", "", id="empty simple string"),
    pytest.param(b"-ERR unknown command 'FOO'\r\n", ("error", "ERR unknown command 'FOO'"),
                 id="error"),
    pytest.param(b":0\r\n", 0, id="integer zero"),
    pytest.param(b":1000\r\n", 1000, id="integer"),
    pytest.param(b":-42\r\n", -42, id="negative integer"),
    pytest.param(b":9223372036854775807\r\n", 2 ** 63 - 1, id="largest integer"),
    pytest.param(b":-9223372036854775808\r\n", -2 ** 63, id="smallest integer"),
    pytest.param(b"$5\r\nhello\r\n", b"hello", id="bulk string"),
    pytest.param(b"$0\r\n\r\n", b"", id="empty bulk string"),
    pytest.param(b"$6\r\na\r\nb\r\n\r\n", b"a\r\nb\r\n", id="bulk string holding CRLF"),
    pytest.param(b"$3\r\n\x00\xff\x80\r\n", b"\x00\xff\x80", id="binary bulk string"),
    pytest.param(b"$-1\r\n", None, id="null bulk string"),
    pytest.param(b"*0\r\n", [], id="empty array"),
    pytest.param(b"*-1\r\n", None, id="null array"),
    pytest.param(b"*2\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", [b"foo", b"bar"], id="array"),
    pytest.param(b"*3\r\n$5\r\nhello\r\n$-1\r\n$5\r\nworld\r\n", [b"hello", None, b"world"],
                 id="array with a null"),
    pytest.param(b"*5\r\n:1\r\n+two\r\n-ERR three\r\n$4\r\nfour\r\n*0\r\n",
                 [1, "two", ("error", "ERR three"), b"four", []], id="array of every type"),
    pytest.param(b"*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n",
                 [[1, 2, 3], ["Hello", ("error", "World")]], id="nested arrays"),
    pytest.param(b"*1\r\n*1\r\n*1\r\n*0\r\n", [[[[]]]], id="deep nesting"),
    pytest.param(b"*2\r\n*-1\r\n*1\r\n$-1\r\n", [None, [None]], id="null array inside"),
    # What XREAD answers: [[stream, [[id, [field, value, ...]], ...]]]
    pytest.param(b"*1\r\n*2\r\n$4\r\nchat\r\n*1\r\n*2\r\n$15\r\n1700000000000-0\r\n"
                 b"*2\r\n$4\r\ntext\r\n$2\r\nhi\r\n",
                 [[b"chat", [[b"1700000000000-0", [b"text", b"hi"]]]]], id="XREAD reply"),
]


@pytest.mark.parametrize(("data", "expected"), REPLIES)
def test_each_reply_type_however_it_is_cut(data, expected):
    for chunks in every_cut(data):
        assert parse_all(chunks) == [expected], chunks


def test_simple_strings_are_str_and_bulk_strings_bytes():
    parser = RespParser()
    parser.feed(b"+PONG\r\n$4\r\nPONG\r\n")
    assert type(parser.next_reply()) is str
    assert type(parser.next_reply()) is bytes


def test_an_error_reply_is_returned_not_raised_and_knows_its_code():
    parser = RespParser()
    parser.feed(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n+OK\r\n")
    error = parser.next_reply()
    assert isinstance(error, ReplyError)
    assert error.code == "WRONGTYPE"
    assert str(error) == "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert parser.next_reply() == "OK"   # the stream goes on


def test_a_pipeline_of_replies_however_it_is_cut():
    data = b"".join(value.values[0] for value in REPLIES)
    expected = [value.values[1] for value in REPLIES]
    for chunks in every_cut(data)[::7] + [every_cut(data)[-1]]:
        assert parse_all(chunks) == expected


def test_need_data_until_the_last_byte_of_a_reply():
    data = b"*2\r\n$3\r\nfoo\r\n:7\r\n"
    parser = RespParser()
    for byte in data[:-1]:
        parser.feed(bytes((byte,)))
        assert parser.next_reply() is NEED_DATA
    parser.feed(data[-1:])
    assert parser.next_reply() == [b"foo", 7]
    assert parser.next_reply() is NEED_DATA


def test_null_is_a_reply_not_a_lack_of_one():
    parser = RespParser()
    parser.feed(b"$-1\r\n")
    assert parser.next_reply() is None
    assert parser.next_reply() is NEED_DATA


def test_a_big_bulk_string_fed_byte_by_byte_is_not_parsed_again_per_byte():
    # The header is read once; each byte after it only appends to the buffer.
    payload = bytes(range(256)) * 64
    data = b"$%d\r\n" % len(payload) + payload + b"\r\n"
    assert parse_all([data[index:index + 1] for index in range(len(data))]) == [payload]


# ---- broken and hostile servers -------------------------------------------------

BROKEN = [
    pytest.param(b"?what\r\n", id="unknown type byte"),
    pytest.param(b"\r\n", id="empty line"),
    pytest.param(b"%1\r\n+a\r\n+b\r\n", id="RESP3 map"),
    pytest.param(b"_\r\n", id="RESP3 null"),
    pytest.param(b">2\r\n+a\r\n+b\r\n", id="RESP3 push"),
    pytest.param(b":\r\n", id="integer with no digits"),
    pytest.param(b":12a\r\n", id="integer with a letter"),
    pytest.param(b": 12\r\n", id="integer with a space"),
    pytest.param(b":+12\r\n", id="integer with a plus"),
    pytest.param(b":1_000\r\n", id="integer with an underscore"),
    pytest.param(b":9223372036854775808\r\n", id="integer over 64 bits"),
    pytest.param(b":12345678901234567890\r\n", id="integer of 20 digits"),
    pytest.param(b"$-2\r\n", id="bulk length -2"),
    pytest.param(b"$abc\r\n", id="bulk length not a number"),
    pytest.param(b"$\r\n", id="bulk length missing"),
    pytest.param(b"$3\r\nabcd\r\n", id="bulk string longer than said"),
    pytest.param(b"$3\r\nab\r\n+x", id="bulk string shorter than said"),
    pytest.param(b"$3\r\nabc\n\n", id="bulk string ended by LF LF"),
    pytest.param(b"*-2\r\n", id="array length -2"),
    pytest.param(b"*1x\r\n", id="array length not a number"),
    pytest.param(b"*2\r\n+a\r\n?\r\n", id="bad item in an array"),
]


@pytest.mark.parametrize("data", BROKEN)
def test_bytes_that_are_not_resp_raise_a_protocol_error_however_cut(data):
    for chunks in every_cut(data):
        with pytest.raises(RespProtocolError):
            parse_all(chunks)


def test_the_parser_stays_failed_and_drops_what_follows():
    parser = RespParser()
    parser.feed(b"+OK\r\n?bad\r\n+OK\r\n")
    assert parser.next_reply() == "OK"
    with pytest.raises(RespProtocolError) as first:
        parser.next_reply()
    parser.feed(b"+OK\r\n")
    with pytest.raises(RespProtocolError) as again:
        parser.next_reply()
    assert again.value is first.value
    assert parser.buffered == 0


def test_a_bulk_string_over_the_limit_is_refused_from_its_header():
    parser = RespParser(max_bulk_length=1000)
    parser.feed(b"$1000\r\n" + b"x" * 1000 + b"\r\n")
    assert parser.next_reply() == b"x" * 1000
    parser.feed(b"$1001\r\n")   # nothing of its body has come
    with pytest.raises(RespProtocolError, match="bulk string of 1001 over the limit of 1000"):
        parser.next_reply()


def test_a_huge_bulk_length_is_refused_at_once():
    parser = RespParser()
    parser.feed(b"$9223372036854775807\r\n")
    with pytest.raises(RespProtocolError, match="over the limit"):
        parser.next_reply()


def test_an_array_over_the_limit_is_refused_from_its_header():
    parser = RespParser(max_array_length=3)
    parser.feed(b"*3\r\n:1\r\n:2\r\n:3\r\n")
    assert parser.next_reply() == [1, 2, 3]
    parser.feed(b"*4\r\n")
    with pytest.raises(RespProtocolError, match="array of 4 over the limit of 3"):
        parser.next_reply()


def test_arrays_nested_past_the_limit_are_refused():
    assert parse_all([b"*1\r\n" * 3 + b"*0\r\n"], max_depth=4) == [[[[[]]]]]
    with pytest.raises(RespProtocolError, match="nested more than 4 deep"):
        parse_all([b"*1\r\n" * 4 + b"*0\r\n"], max_depth=4)
    with pytest.raises(RespProtocolError, match="nested more than 4 deep"):
        parse_all([b"*1\r\n" * 4 + b"*-1\r\n"], max_depth=4)


def test_deep_nesting_needs_no_recursion():
    depth = 100_000   # far past Python's recursion limit
    parser = RespParser(max_depth=depth)
    parser.feed(b"*1\r\n" * depth + b":1\r\n")
    reply = parser.next_reply()
    for _ in range(depth):
        (reply,) = reply
    assert reply == 1


def test_a_line_over_the_limit_is_refused_before_its_end_arrives():
    parser = RespParser(max_line_length=10)
    parser.feed(b"+123456789\r\n")          # 10 bytes before CRLF: the limit
    assert parser.next_reply() == "123456789"
    parser.feed(b"+1234567890\r")           # 11 bytes, and a CR that may yet be a line end
    with pytest.raises(RespProtocolError, match="a line over 10 bytes"):
        parser.next_reply()
    parser = RespParser(max_line_length=10)
    parser.feed(b"+123456789\r")            # could still be a 10-byte line
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"\n")
    assert parser.next_reply() == "123456789"
    parser.feed(b"-" + b"e" * 100)          # no CRLF at all: refused without waiting for one
    with pytest.raises(RespProtocolError, match="a line over 10 bytes"):
        parser.next_reply()


def test_a_long_line_arriving_byte_by_byte_is_searched_once():
    # The CRLF search resumes where it stopped: 60,000 one-byte feeds stay quick.
    line = b"+" + b"a" * 60_000 + b"\r\n"
    assert parse_all([line[index:index + 1] for index in range(len(line))]) == ["a" * 60_000]


def test_simple_strings_that_are_not_utf8_do_not_raise():
    assert parse_all([b"+\xff\xfe\r\n-ERR \xc3\r\n"]) == ["\ufffd\ufffd", ("error", "ERR \ufffd")]

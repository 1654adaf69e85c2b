"""rawws.extensions: the Sec-WebSocket-Extensions grammar (RFC 6455 §9.1)."""
from __future__ import annotations

import pytest

from rawws.extensions import Extension, ExtensionHeaderError, format_extension, parse_extensions


def test_a_bare_extension_name_has_no_parameters():
    assert parse_extensions(["permessage-deflate"]) == [Extension("permessage-deflate")]


def test_parameters_keep_their_order_and_a_flag_has_value_none():
    (ext,) = parse_extensions(["permessage-deflate; client_max_window_bits; server_max_window_bits=10"])
    assert ext.params == (("client_max_window_bits", None), ("server_max_window_bits", "10"))


def test_several_offers_in_one_value_come_in_order():
    # RFC 7692 §5.1's example of two offers, the first preferred.
    offers = parse_extensions(["permessage-deflate; client_max_window_bits=10, permessage-deflate"])
    assert offers == [Extension("permessage-deflate", (("client_max_window_bits", "10"),)),
                      Extension("permessage-deflate")]


def test_offers_in_several_header_lines_are_one_list():
    offers = parse_extensions(["foo", "permessage-deflate; server_no_context_takeover"])
    assert [offer.name for offer in offers] == ["foo", "permessage-deflate"]


def test_a_quoted_value_is_unquoted():
    (ext,) = parse_extensions(['permessage-deflate; client_max_window_bits="10"'])
    assert ext.params == (("client_max_window_bits", "10"),)


def test_white_space_around_separators_is_ignored():
    (ext,) = parse_extensions(["  permessage-deflate ;server_max_window_bits = 12 ; x "])
    assert ext.params == (("server_max_window_bits", "12"), ("x", None))


def test_empty_list_elements_are_skipped():
    assert parse_extensions([", a ,, b,"]) == [Extension("a"), Extension("b")]


@pytest.mark.parametrize("value", [
    "permessage-deflate; client_max_window_bits=\"1 0\"",   # §9.1: unquoted value must be a token
    "permessage-deflate; client_max_window_bits=\"10",      # unterminated quote
    "permessage-deflate; =10",                               # no parameter name
    "permessage-deflate; a=",                                # no value after '='
    "permessage deflate",                                    # two tokens, no separator
    "; a",                                                   # no extension name
    "permessage-deflate; a=b=c",
])
def test_values_that_break_the_grammar_are_refused(value):
    with pytest.raises(ExtensionHeaderError):
        parse_extensions([value])


def test_format_writes_name_then_parameters():
    ext = Extension("permessage-deflate", (("server_no_context_takeover", None),
                                           ("server_max_window_bits", "10")))
    assert format_extension(ext) == "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
    assert parse_extensions([format_extension(ext)]) == [ext]

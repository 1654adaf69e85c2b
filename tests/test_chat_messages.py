"""chat.messages: the JSON envelope, field checks, name and message rules, and
the exact text of every server message (docs/protocol.md)."""
import json

import pytest

from chat import messages as m
from chat.messages import ChatError


def code_of(fn, *args):
    with pytest.raises(ChatError) as info:
        fn(*args)
    return info.value.code


# --- the envelope ------------------------------------------------------------------

def test_parse_envelope_returns_type_and_payload():
    env = m.parse_envelope('{"type": "chat-join", "payload": {"username": "Beej"}}')
    assert env == m.Envelope("chat-join", {"username": "Beej"})


@pytest.mark.parametrize("text", [
    "", "   ", "not json", "{", '{"type": "chat-join",}', "[1, 2]", "1", "null", '"chat-join"',
    "true",
])
def test_text_that_is_not_a_json_object_is_bad_json(text):
    assert code_of(m.parse_envelope, text) == m.BAD_JSON


@pytest.mark.parametrize("text", [
    "NaN", '{"type": "chat-message", "payload": {"message": NaN}}',
    '{"type": "chat-message", "payload": {"message": Infinity}}',
    '{"type": "chat-message", "payload": {"message": -Infinity}}',
])
def test_nan_and_infinity_are_bad_json(text):
    assert code_of(m.parse_envelope, text) == m.BAD_JSON


def test_deep_nesting_is_bad_json_not_a_crash():
    text = '{"type": "chat-message", "payload": {"message": ' + "[" * 200_000 + "]" * 200_000 + "}}"
    assert code_of(m.parse_envelope, text) == m.BAD_JSON


def test_an_integer_too_long_to_convert_is_bad_json():
    text = '{"type": "chat-message", "payload": {"message": ' + "9" * 10_000 + "}}"
    assert code_of(m.parse_envelope, text) == m.BAD_JSON


@pytest.mark.parametrize("text", [
    "{}", '{"payload": {}}', '{"type": 5, "payload": {}}', '{"type": null, "payload": {}}',
    '{"type": ["chat-join"], "payload": {}}',
])
def test_a_type_that_is_not_a_string_is_bad_envelope_with_no_type_echoed(text):
    with pytest.raises(ChatError) as info:
        m.parse_envelope(text)
    assert (info.value.code, info.value.type) == (m.BAD_ENVELOPE, None)


@pytest.mark.parametrize("payload", ['"hi"', "5", "null", "[]", "true"])
def test_a_payload_that_is_not_an_object_is_bad_envelope_echoing_the_type(payload):
    with pytest.raises(ChatError) as info:
        m.parse_envelope('{"type": "chat-join", "payload": %s}' % payload)
    assert (info.value.code, info.value.type) == (m.BAD_ENVELOPE, "chat-join")


def test_a_missing_payload_is_bad_envelope():
    assert code_of(m.parse_envelope, '{"type": "chat-join"}') == m.BAD_ENVELOPE


def test_a_lone_surrogate_in_the_type_is_scrubbed_so_it_can_be_echoed():
    env = m.parse_envelope('{"type": "x\\ud800", "payload": {}}')
    assert env.type == "x\ufffd"


# --- fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [5, None, [], {}, True, 1.5])
def test_a_field_of_the_wrong_type_counts_as_missing(value):
    env = m.Envelope("chat-message", {"message": value})
    assert m.get_str(env, "message") is None


def test_require_str_refuses_a_missing_field_with_bad_field_and_the_type():
    with pytest.raises(ChatError) as info:
        m.require_str(m.Envelope("chat-join", {}), "username")
    assert (info.value.code, info.value.type) == (m.BAD_FIELD, "chat-join")
    assert "username" in info.value.text


# --- names --------------------------------------------------------------------------------

def test_username_is_trimmed():
    assert m.clean_username("  Beej \t", 32) == "Beej"


@pytest.mark.parametrize("raw", ["", "   ", "\t\n", "\u00a0"])
def test_an_empty_username_is_name_invalid(raw):
    assert code_of(m.clean_username, raw, 32) == m.NAME_INVALID


def test_a_username_of_exactly_the_limit_is_accepted_one_more_is_not():
    assert m.clean_username("x" * 32, 32) == "x" * 32
    assert code_of(m.clean_username, "x" * 33, 32) == m.NAME_INVALID


@pytest.mark.parametrize("raw", [
    "Be\x00ej", "Be\nej", "Be\x1bej", "Be\x7fej", "Be\x85ej",   # C0, C1 controls
    "Be\u202eej", "Be\u200bej",                                   # bidi override, zero width space
    "Be\u2028ej", "Be\ud800ej",                                   # line separator, lone surrogate
])
def test_a_username_with_control_characters_is_name_invalid(raw):
    assert code_of(m.clean_username, raw, 32) == m.NAME_INVALID


def test_a_username_may_hold_non_ascii_and_zero_width_joiners():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert m.clean_username(f"Zoë {family}", 32) == f"Zoë {family}"


def test_v1_username_over_the_limit_is_cut_to_fit():
    assert m.clean_username_v1("  " + "y" * 40, 32) == "y" * 32


@pytest.mark.parametrize("raw", ["", "  ", "Be\x00ej"])
def test_v1_username_empty_or_with_controls_is_none(raw):
    assert m.clean_username_v1(raw, 32) is None


def test_name_key_ignores_case_and_compatibility_forms():
    assert m.name_key("Beej") == m.name_key("BEEJ") == m.name_key("\uff22\uff45\uff45\uff4a")
    assert m.name_key("Beej") != m.name_key("Beej2")


# --- messages -------------------------------------------------------------------------------

def test_message_is_trimmed_but_keeps_inner_newlines():
    assert m.clean_message("  line one\nline two \n", 100) == "line one\nline two"


@pytest.mark.parametrize("raw", ["", "   ", "\n\t"])
def test_an_empty_message_is_message_empty(raw):
    assert code_of(m.clean_message, raw, 100) == m.MESSAGE_EMPTY


def test_a_message_of_exactly_the_limit_is_accepted_one_more_is_not():
    assert m.clean_message("z" * 100, 100) == "z" * 100
    assert code_of(m.clean_message, "z" * 101, 100) == m.MESSAGE_TOO_LONG


def test_lone_surrogates_in_a_message_become_replacement_characters():
    text = m.clean_message("a\ud800b\udfffc", 100)
    assert text == "a\ufffdb\ufffdc"
    text.encode("utf-8")   # does not raise


# --- building server messages ---------------------------------------------------------------

def test_v1_messages_are_exactly_the_original_shapes():
    assert json.loads(m.v1_join("Beej")) == {"type": "chat-join", "payload": {"username": "Beej"}}
    assert json.loads(m.v1_message(m.message_fields("Beej", "Hi"))) == {
        "type": "chat-message", "payload": {"username": "Beej", "message": "Hi"}}
    assert json.loads(m.v1_leave("Beej")) == {"type": "chat-leave", "payload": {"username": "Beej"}}


def test_server_json_is_compact_and_keeps_non_ascii_as_itself():
    assert m.v1_join("Zoë") == '{"type":"chat-join","payload":{"username":"Zoë"}}'


def test_v2_message_wraps_an_already_serialized_payload():
    payload = m.v2_message_payload(7, m.message_fields("Beej", "Hi"), 1234)
    assert json.loads(m.v2_message(payload)) == {
        "type": "chat-message",
        "payload": {"id": 7, "username": "Beej", "message": "Hi", "time": 1234}}


@pytest.mark.parametrize("name, text", [
    ("Beej", "Hello, Goats!"),
    ("Zoë \"q\"", 'line 1\nline 2 \\ } ] " \u2028 \x00 😀'),
])
def test_chat_messages_built_from_shared_fields_are_exactly_the_compact_json(name, text):
    """Both versions' chat-message reuse one serialization of the text: the
    result is byte for byte what serializing each whole message would give."""
    fields = m.message_fields(name, text)
    assert m.v1_message(fields) == m.envelope(m.MESSAGE, {"username": name, "message": text})
    assert m.v2_message(m.v2_message_payload(3, fields, 99)) == m.envelope(
        m.MESSAGE, {"id": 3, "username": name, "message": text, "time": 99})


def test_v2_rename_leave_and_join_carry_time():
    assert json.loads(m.v2_rename("a", "b", 5)) == {
        "type": "chat-rename", "payload": {"from": "a", "to": "b", "time": 5}}
    assert json.loads(m.v2_leave("a", 5)) == {"type": "chat-leave",
                                               "payload": {"username": "a", "time": 5}}
    assert json.loads(m.v2_join("a", 5)) == {"type": "chat-join",
                                              "payload": {"username": "a", "time": 5}}


def test_v2_error_carries_code_message_type_and_time():
    err = ChatError(m.NAME_TAKEN, type="chat-join")
    assert json.loads(m.v2_error(err, 9)) == {"type": "chat-error", "payload": {
        "code": "name-taken", "message": m.ERROR_TEXT[m.NAME_TAKEN], "type": "chat-join",
        "time": 9}}


@pytest.mark.parametrize("history", [
    [],
    [{"id": 1, "username": "a", "message": "x", "time": 1},
     {"id": 2, "username": "b", "message": "}]\"", "time": 2}],
])
def test_v2_welcome_splices_history_into_valid_json(history):
    limits = {"maxMessageLength": 10, "maxUsernameLength": 5, "ratePerSecond": 1.0, "burst": 2}
    text = m.v2_welcome("a", ["a", "b"], [m.dumps(p) for p in history], limits, 3)
    assert json.loads(text) == {"type": "chat-welcome", "payload": {
        "username": "a", "users": ["a", "b"], "limits": limits, "time": 3, "history": history}}


def test_every_error_code_has_a_text_for_people():
    codes = {value for name, value in vars(m).items()
             if name.isupper() and isinstance(value, str) and value.islower()
             and "-" in value and not value.startswith(("beej", "chat"))}
    assert codes == set(m.ERROR_TEXT)

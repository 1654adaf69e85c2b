"""Close status codes (RFC 6455 §7.4) and which of them may appear on the wire."""
from __future__ import annotations

CLOSE_NORMAL = 1000            # §7.4.1: purpose fulfilled
CLOSE_GOING_AWAY = 1001        # server going down, browser leaving the page
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003  # e.g. binary to a text-only endpoint
CLOSE_NO_STATUS = 1005         # reserved: "no code was present"; never sent
CLOSE_ABNORMAL = 1006          # reserved: "closed without a Close frame"; never sent
CLOSE_INVALID_PAYLOAD = 1007   # e.g. text that is not UTF-8
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TLS_HANDSHAKE = 1015     # reserved: never sent

# §7.4.1 defines these for use in Close frames; 1004, 1005, 1006 and 1015 are
# reserved and must never be sent. §7.4.2: 3000-3999 are registered with IANA
# for libraries and frameworks, 4000-4999 are private use. All else is invalid.
# (1012-1014 were registered with IANA after the RFC; like Autobahn's strict
# cases 7.9.x, we treat them as unassigned.)
_SENDABLE_DEFINED_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})


def is_valid_close_code(code: int) -> bool:
    """True when `code` may appear in a Close frame on the wire."""
    return code in _SENDABLE_DEFINED_CODES or 3000 <= code <= 4999

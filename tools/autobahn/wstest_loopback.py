# Python 2.7: runs inside the Autobahn|Testsuite virtualenv, not the project's.
"""`wstest`, with its fuzzing server listening on 127.0.0.1 only.

wstest's fuzzingserver binds every interface and has no option to choose
one; this wrapper narrows it to loopback, then runs wstest unchanged with
the same command-line arguments.
"""
import sys

from autobahntestsuite import wstest  # first: importing it picks the Twisted reactor
from autobahntestsuite import fuzzing

LOOPBACK = "127.0.0.1"

_listen_ws = fuzzing.listenWS


def listen_on_loopback(factory, contextFactory=None, backlog=50, interface=""):
    """Listen like wstest would, but on the loopback interface only."""
    return _listen_ws(factory, contextFactory, backlog, LOOPBACK)


fuzzing.listenWS = listen_on_loopback

if __name__ == "__main__":
    sys.argv[0] = "wstest"
    sys.exit(wstest.run())

"""The I/O layer: a `selectors` event loop, the server, the client, the file server.

Everything here moves bytes between sockets and the sans-IO state machines
of the package above; no protocol rule is decided here.
"""

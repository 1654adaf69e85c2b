"""Teaching tools: the wire tracer (`--trace`), `python -m rawws.tools.decode`
and `python -m rawws.tools.encode`."""

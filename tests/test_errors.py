"""rawws.errors: the tree drawn in the module's docstring is its class tree."""
from __future__ import annotations

import inspect
import re

import rawws.errors as errors

# A line of the tree: its drawing (indentation, then "├── " or "└── " at each level), a class name.
TREE_LINE = re.compile(r"^    (?P<drawing>(?:[│ ]   )*(?:[├└]── )?)(?P<name>[A-Z]\w+)\s")


def drawn_tree() -> dict[str, str | None]:
    """Each class the docstring draws, mapped to the class drawn as its parent."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in errors.__doc__.splitlines():
        match = TREE_LINE.match(line)
        if match is None:
            continue
        depth = len(match["drawing"]) // 4
        del path[depth:]
        parents[match["name"]] = path[-1] if path else None
        path.append(match["name"])
    return parents


def test_the_docstring_draws_every_error_class_under_its_base():
    roots = (errors.WebSocketError, errors.RedisError)
    classes = {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, roots) and cls.__module__ == errors.__name__}
    actual = {name: (None if cls in roots else cls.__bases__[0].__name__)
              for name, cls in classes.items()}
    assert drawn_tree() == actual

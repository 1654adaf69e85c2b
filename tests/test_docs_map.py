"""docs/rfc6455-map.md and docs/walkthrough.md point at real code and real tests.

The map names, for each section of RFC 6455, files (`rawws/frames.py`),
the functions in them (`rawws/frames.py`: `mask`, `FrameParser.next_frame`)
and tests (`tests/test_frames.py::test_mask_rfc_example`). Code moves; these
tests fail when a name in the docs no longer exists, so the docs move too.
Names are found by reading the source (ast), not by importing it.
"""
from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "rfc6455-map.md"
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"

# `path` or `path`: `name`, `name` -- names run on while separated by commas.
CODE_REF = re.compile(r"`(?P<path>(?:rawws|chat|tests|www|docs|bench)/[\w./-]+)`"
                      r"(?::\s*(?P<names>`[^`]+`(?:,\s*`[^`]+`)*))?")
TEST_REF = re.compile(r"`(?P<path>tests/[\w/]+\.py)::(?P<test>\w+)`")
NAME = re.compile(r"`([^`]+)`")

# Every section of RFC 6455 down to the second level (and the third in §4.2,
# §5.5, §7.1, §7.4, where the rules are); §11's subsections are one row.
RFC_SECTIONS = (
    "1.1 1.2 1.3 1.4 1.5 1.6 1.7 1.8 1.9 2 2.1 3 4.1 4.2.1 4.2.2 4.3 4.4 "
    "5.1 5.2 5.3 5.4 5.5 5.5.1 5.5.2 5.5.3 5.6 5.7 5.8 6.1 6.2 "
    "7.1.1 7.1.2 7.1.3 7.1.4 7.1.5 7.1.6 7.1.7 7.2.1 7.2.2 7.2.3 7.3 7.4 7.4.1 7.4.2 "
    "8.1 9.1 9.2 10.1 10.2 10.3 10.4 10.5 10.6 10.7 10.8 11.1 12 13 14").split()


@cache
def names_in(path: Path) -> frozenset[str]:
    """The names a Python file defines: functions, classes, module constants,
    and `Class.member` for methods, class attributes and `self.x = ...` in methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for member in ast.walk(node):
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}.{member.name}")
                for name in targets(member):
                    names.add(f"{node.name}.{name}")
                if isinstance(member, (ast.Assign, ast.AnnAssign)):
                    for target in (member.targets if isinstance(member, ast.Assign)
                                   else [member.target]):
                        if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                                and target.value.id == "self"):
                            names.add(f"{node.name}.{target.attr}")
        else:
            names.update(targets(node))
    return frozenset(names)


def references(doc: Path) -> tuple[set[str], set[tuple[str, str]], set[tuple[str, str]]]:
    """(paths, (path, name) pairs, (test file, test name) pairs) that `doc` cites."""
    text = doc.read_text(encoding="utf-8")
    paths: set[str] = set()
    names: set[tuple[str, str]] = set()
    for match in CODE_REF.finditer(text):
        path = match.group("path")
        paths.add(path)
        if match.group("names") and path.endswith(".py"):
            for name in NAME.findall(match.group("names")):
                names.add((path, name.split("(")[0].strip()))
    tests = {(m.group("path"), m.group("test")) for m in TEST_REF.finditer(text)}
    paths.update(path for path, _ in tests)
    return paths, names, tests


DOCS = [MAP, WALKTHROUGH]


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_file_named_exists(doc):
    paths, _, _ = references(doc)
    assert paths, f"{doc.name} names no files"
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_function_named_exists_in_its_file(doc):
    _, names, _ = references(doc)
    missing = sorted(f"{path}: {name}" for path, name in names
                     if (ROOT / path).exists() and name not in names_in(ROOT / path))
    assert not missing, f"{doc.name} names what its file does not define: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_test_named_exists(doc):
    _, _, tests = references(doc)
    missing = sorted(f"{path}::{test}" for path, test in tests
                     if not (ROOT / path).exists() or test not in names_in(ROOT / path))
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"


def test_the_map_cites_functions_and_tests_for_most_sections():
    _, names, tests = references(MAP)
    assert len(names) > 80
    assert len(tests) > 80


def test_the_map_has_a_row_for_every_section_of_the_rfc():
    first_column = [line.split("|")[1] for line in MAP.read_text(encoding="utf-8").splitlines()
                    if line.startswith("| §")]
    cited = {section for cell in first_column for section in re.findall(r"§(\d+(?:\.\d+)*)", cell)}
    missing = [section for section in RFC_SECTIONS if section not in cited]
    assert not missing, f"sections with no row in the map: {missing}"


def test_a_section_left_out_says_why():
    for line in MAP.read_text(encoding="utf-8").splitlines():
        if "not implemented" in line or "not applicable" in line:
            code_cell = line.split("|")[3]
            assert ":" in code_cell, f"no reason given: {line}"


def test_the_old_map_is_gone_and_nothing_links_to_it():
    assert not (ROOT / "docs" / "rfc-map.md").exists()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "rfc-map.md" not in doc.read_text(encoding="utf-8"), doc.name


def test_the_readme_links_both_teaching_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/rfc6455-map.md)" in readme
    assert "(docs/walkthrough.md)" in readme

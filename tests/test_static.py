"""rawws.net.static: serving a web root, and never anything outside it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urljoin

import pytest

from rawws.http import Headers, Request
from rawws.net.static import StaticFiles, content_type

WWW = Path(__file__).resolve().parent.parent / "www"
INDEX = b"<!doctype html><title>chat</title>\n"
NOT_FOUND = (
    404,
    [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "14")],
    b"404 Not Found\n",
)


def request(target: str, method: str = "GET", headers: list[tuple[str, str]] = ()) -> Request:
    return Request(method, target, "HTTP/1.1", Headers([("Host", "h"), *headers]))


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [value for key, value in headers if key.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A web root inside tmp_path, with a secret next to it, outside."""
    web = tmp_path / "www"
    web.mkdir()
    (web / "index.html").write_bytes(INDEX)
    (web / "app.js").write_bytes(b"console.log(1);\n")
    (web / "style.css").write_bytes(b"body{}\n")
    (web / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (web / "data.bin.unknownext").write_bytes(b"\x00\x01")
    (web / "with space.txt").write_bytes(b"spaced\n")
    (web / "sub").mkdir()
    (web / "sub" / "index.html").write_bytes(b"sub index\n")
    (web / "sub" / "page.html").write_bytes(b"sub page\n")
    (web / "empty").mkdir()
    (tmp_path / "secret").write_bytes(b"top secret\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "index.html").write_bytes(b"outside index\n")
    return web


@pytest.fixture
def files(root: Path) -> StaticFiles:
    return StaticFiles(root)


# --- serving --------------------------------------------------------------


def test_root_serves_index_html(files: StaticFiles) -> None:
    status, headers, body = files.respond(request("/"))
    assert (status, body) == (200, INDEX)


def test_index_html_by_name(files: StaticFiles) -> None:
    assert files.respond(request("/index.html"))[2] == INDEX


def test_response_headers_of_a_file(files: StaticFiles, root: Path) -> None:
    status, headers, body = files.respond(request("/index.html"))
    stat = (root / "index.html").stat()
    assert headers == [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(INDEX))),
        ("ETag", f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'),
        ("Last-Modified", header(headers, "Last-Modified")),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
    ]


def test_last_modified_is_an_imf_fixdate(files: StaticFiles, root: Path) -> None:
    os.utime(root / "index.html", (0, 784111777))
    headers = files.respond(request("/index.html"))[1]
    assert header(headers, "Last-Modified") == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_subdirectory_with_slash_serves_its_index(files: StaticFiles) -> None:
    assert files.respond(request("/sub/"))[:3:2] == (200, b"sub index\n")


def test_subdirectory_without_slash_serves_its_index(files: StaticFiles) -> None:
    assert files.respond(request("/sub"))[:3:2] == (200, b"sub index\n")


def test_file_in_subdirectory(files: StaticFiles) -> None:
    assert files.respond(request("/sub/page.html"))[:3:2] == (200, b"sub page\n")


def test_query_string_is_ignored(files: StaticFiles) -> None:
    assert files.respond(request("/sub/page.html?v=2#top"))[:3:2] == (200, b"sub page\n")


def test_percent_encoded_name_is_decoded(files: StaticFiles) -> None:
    assert files.respond(request("/with%20space.txt"))[:3:2] == (200, b"spaced\n")


def test_utf8_file_name(files: StaticFiles, root: Path) -> None:
    (root / "caf\u00e9.txt").write_bytes(b"coffee\n")
    assert files.respond(request("/caf%C3%A9.txt"))[:3:2] == (200, b"coffee\n")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("logo.png", "image/png"),
        ("data.bin.unknownext", "application/octet-stream"),
    ],
)
def test_content_type_of_served_file(files: StaticFiles, name: str, expected: str) -> None:
    assert header(files.respond(request("/" + name))[1], "Content-Type") == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.json", "application/json"),
        ("a.svg", "image/svg+xml"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.tar.gz", "application/octet-stream"),
        ("A.HTML", "text/html; charset=utf-8"),
    ],
)
def test_content_type_by_extension(name: str, expected: str) -> None:
    assert content_type(name) == expected


def test_head_has_no_body_and_the_get_length(files: StaticFiles) -> None:
    get = files.respond(request("/index.html"))
    head = files.respond(request("/index.html", "HEAD"))
    assert head == (200, get[1], b"")
    assert header(head[1], "Content-Length") == str(len(INDEX))


def test_head_of_missing_file_has_no_body(files: StaticFiles) -> None:
    assert files.respond(request("/nope", "HEAD")) == (404, NOT_FOUND[1], b"")


# The module specifier of an `import ... from '...'`, `export ... from '...'`
# or `import '...'` at the start of a line.
MODULE_IMPORT = re.compile(r"""^\s*(?:import|export)\b(?:[^'";]*?\bfrom)?\s*['"]([^'"]+)['"]""", re.M)


def test_the_chat_page_and_every_module_it_imports_are_served_as_javascript() -> None:
    # The page in www/ is ES modules: browsers refuse a module script served
    # with a type that is not JavaScript's. Follow its module graph from "/"
    # as a browser resolves it, relative import by relative import.
    files = StaticFiles(WWW)
    status, _, page = files.respond(request("/"))
    assert status == 200
    scripts = re.findall(r'<script\b[^>]*\btype="module"[^>]*\bsrc="([^"]+)"', page.decode("utf-8"))
    assert scripts, "the page loads no module script"
    pending = [urljoin("/", src) for src in scripts]
    served: set[str] = set()
    while pending:
        url = pending.pop()
        if url in served:
            continue
        status, headers, body = files.respond(request(url))
        assert status == 200, url
        assert header(headers, "Content-Type") == "text/javascript; charset=utf-8", url
        served.add(url)
        for specifier in MODULE_IMPORT.findall(body.decode("utf-8")):
            # A bare specifier ('chat/view.js') needs an import map: there is none.
            assert specifier.startswith(("./", "../")), (url, specifier)
            pending.append(urljoin(url, specifier))
    # ...and no script in www/ is left out of the page.
    assert served == {"/" + path.relative_to(WWW).as_posix() for path in WWW.rglob("*.js")}


# --- conditional requests -------------------------------------------------


def test_matching_if_none_match_is_304(files: StaticFiles) -> None:
    etag = header(files.respond(request("/index.html"))[1], "ETag")
    status, headers, body = files.respond(request("/index.html", headers=[("If-None-Match", etag)]))
    assert (status, body) == (304, b"")
    assert [name for name, _ in headers] == ["ETag", "Last-Modified", "Cache-Control"]


def test_if_none_match_list_and_weak_tag_is_304(files: StaticFiles) -> None:
    etag = header(files.respond(request("/index.html"))[1], "ETag")
    conditional = request("/index.html", headers=[("If-None-Match", f'"other", W/{etag}')])
    assert files.respond(conditional)[0] == 304


def test_if_none_match_star_is_304(files: StaticFiles) -> None:
    assert files.respond(request("/", headers=[("If-None-Match", "*")]))[0] == 304


def test_other_etag_is_200(files: StaticFiles) -> None:
    assert files.respond(request("/", headers=[("If-None-Match", '"stale"')]))[:3:2] == (200, INDEX)


def test_etag_changes_when_the_file_changes(files: StaticFiles, root: Path) -> None:
    before = header(files.respond(request("/app.js"))[1], "ETag")
    (root / "app.js").write_bytes(b"console.log(22);\n")
    assert header(files.respond(request("/app.js"))[1], "ETag") != before


def test_if_modified_since_last_modified_is_304(files: StaticFiles) -> None:
    last_modified = header(files.respond(request("/"))[1], "Last-Modified")
    conditional = request("/", headers=[("If-Modified-Since", last_modified)])
    assert files.respond(conditional)[:3:2] == (304, b"")


def test_if_modified_since_before_last_modified_is_200(files: StaticFiles, root: Path) -> None:
    os.utime(root / "index.html", (0, 784111777))
    conditional = request("/", headers=[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:36 GMT")])
    assert files.respond(conditional)[0] == 200


def test_invalid_if_modified_since_is_ignored(files: StaticFiles) -> None:
    assert files.respond(request("/", headers=[("If-Modified-Since", "yesterday")]))[0] == 200


def test_if_none_match_wins_over_if_modified_since(files: StaticFiles) -> None:
    last_modified = header(files.respond(request("/"))[1], "Last-Modified")
    conditional = request(
        "/", headers=[("If-None-Match", '"stale"'), ("If-Modified-Since", last_modified)]
    )
    assert files.respond(conditional)[0] == 200


# --- methods and errors ---------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "get"])
def test_other_methods_are_405_with_allow(files: StaticFiles, method: str) -> None:
    assert files.respond(request("/", method)) == (
        405,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", "23"),
            ("Allow", "GET, HEAD"),
        ],
        b"405 Method Not Allowed\n",
    )


def test_missing_file_is_404(files: StaticFiles) -> None:
    assert files.respond(request("/nope.html")) == NOT_FOUND


def test_directory_without_index_is_404(files: StaticFiles) -> None:
    assert files.respond(request("/empty/")) == NOT_FOUND


def test_trailing_slash_after_a_file_is_404(files: StaticFiles) -> None:
    assert files.respond(request("/index.html/")) == NOT_FOUND


def test_fifo_is_not_served(files: StaticFiles, root: Path) -> None:
    os.mkfifo(root / "pipe")
    assert files.respond(request("/pipe")) == NOT_FOUND


def test_file_over_the_size_cap_is_500(root: Path) -> None:
    small = StaticFiles(root, max_file_size=10)
    assert small.respond(request("/index.html")) == (
        500,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "26")],
        b"500 Internal Server Error\n",
    )


def test_file_at_the_size_cap_is_served(root: Path) -> None:
    exact = StaticFiles(root, max_file_size=len(INDEX))
    assert exact.respond(request("/index.html"))[:3:2] == (200, INDEX)


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        StaticFiles(tmp_path / "missing")


# --- path safety ----------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/../secret",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e/secret",
        "/..%2fsecret",
        "/..%2Fsecret",
        "/sub%2f..%2f..%2fsecret",
        "/%2E%2E/",
        "/%2E%2E",
        "/.%2e/secret",
        "//etc/passwd",
        "/a/../../x",
        "/sub/../index.html",
        "/./index.html",
        "/..\\secret",
        "/%5c..%5csecret",
        "/index.html%00.png",
        "/%00",
    ],
)
def test_traversal_attempt_is_404(files: StaticFiles, target: str) -> None:
    assert files.respond(request(target)) == NOT_FOUND


@pytest.mark.parametrize("target", ["http://h/index.html", "HTTP://h:80/index.html?q=1"])
def test_absolute_form_target_serves_its_path(files: StaticFiles, target: str) -> None:
    # RFC 9112 section 3.2.2: a server must accept the absolute-form.
    status, _, body = files.respond(request(target))
    assert status == 200 and body == files.respond(request("/index.html"))[2]


@pytest.mark.parametrize(
    "target",
    [
        "h:80",  # authority-form
        "*",  # asterisk-form
        "",
        "index.html",
        "/index.html\x00",  # a raw NUL
        "/%zz",  # broken escape
        "/%2",
        "/%ff%fe",  # not UTF-8
        "/caf\u00e9",  # not ASCII
    ],
)
def test_malformed_target_is_400(files: StaticFiles, target: str) -> None:
    assert files.respond(request(target)) == (
        400,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "16")],
        b"400 Bad Request\n",
    )


def test_symlink_to_a_file_outside_root_is_404(files: StaticFiles, root: Path) -> None:
    (root / "leak").symlink_to(root.parent / "secret")
    assert files.respond(request("/leak")) == NOT_FOUND


def test_symlink_to_a_directory_outside_root_is_404(files: StaticFiles, root: Path) -> None:
    (root / "out").symlink_to(root.parent / "outside")
    assert files.respond(request("/out/")) == NOT_FOUND
    assert files.respond(request("/out/index.html")) == NOT_FOUND


def test_index_html_symlinked_outside_root_is_404(files: StaticFiles, root: Path) -> None:
    (root / "empty" / "index.html").symlink_to(root.parent / "secret")
    assert files.respond(request("/empty/")) == NOT_FOUND


def test_symlink_inside_root_is_served(files: StaticFiles, root: Path) -> None:
    (root / "alias.html").symlink_to(root / "sub" / "page.html")
    assert files.respond(request("/alias.html"))[:3:2] == (200, b"sub page\n")


def test_relative_symlink_inside_root_is_served(files: StaticFiles, root: Path) -> None:
    (root / "sub" / "up.html").symlink_to(Path("..") / "index.html")
    assert files.respond(request("/sub/up.html"))[:3:2] == (200, INDEX)


def test_root_reached_through_a_symlink_still_serves(tmp_path: Path, root: Path) -> None:
    (tmp_path / "link-to-www").symlink_to(root)
    assert StaticFiles(tmp_path / "link-to-www").respond(request("/"))[:3:2] == (200, INDEX)


def test_sibling_with_root_name_as_prefix_is_not_inside(tmp_path: Path, root: Path) -> None:
    # Beej's bug: a string-prefix test lets /www-private pass for root /www.
    (tmp_path / "www-private").mkdir()
    (tmp_path / "www-private" / "key").write_bytes(b"key\n")
    (root / "key").symlink_to(tmp_path / "www-private" / "key")
    assert StaticFiles(root).respond(request("/key")) == NOT_FOUND

#!/usr/bin/env bash
# Install Autobahn|Testsuite (`wstest`, a Python 2.7 program) for `make conformance`.
#
# Idempotent: when the pinned suite is already installed it only says so.
# Where: $AUTOBAHN_HOME (default: <project>/.autobahn, git-ignored); the
# suite lives in $AUTOBAHN_HOME/venv, a Python 2.7 virtualenv.
#
# Python 2.7 is found, in order: $AUTOBAHN_PYTHON2, python2.7/python2 on
# PATH, pyenv's versions, /usr/bin/python2.7. Failing that, and only as root
# on Debian, python2.7 comes from Debian 11 (bullseye) through an extra apt
# source pinned below every other one, so nothing already installed changes.
# Output is one line on success; details of a failure are in install.log.
set -euo pipefail

SUITE_VERSION=25.10.1
VIRTUALENV_VERSION=20.21.1   # the last virtualenv release that can create a Python 2.7 env
BULLSEYE_SOURCE=/etc/apt/sources.list.d/rawws-bullseye.sources
BULLSEYE_PIN=/etc/apt/preferences.d/rawws-bullseye
BULLSEYE_PRIORITY=50         # < 100: never replaces an installed package, never wins a tie

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(cd "$here/../.." && pwd)"
home="${AUTOBAHN_HOME:-$project/.autobahn}"
venv="$home/venv"
stamp="$venv/.autobahntestsuite-$SUITE_VERSION"
log="$home/install.log"

say() { printf 'autobahn install: %s\n' "$*" >&2; }
die() {
    say "$*"
    if [ -s "$log" ]; then say "last lines of $log:"; tail -n 20 "$log" >&2; fi
    exit 1
}

if [ -f "$stamp" ] && "$venv/bin/wstest" --help >/dev/null 2>&1; then
    say "wstest $SUITE_VERSION already installed in $venv"
    exit 0
fi

mkdir -p "$home"
: >"$log"

# ---- a Python 2.7 interpreter ------------------------------------------

is_python27() {  # prints the real interpreter path when "$1" runs as Python 2.7
    "$1" -c 'import sys; assert sys.version_info[:2] == (2, 7); print(sys.executable)' 2>/dev/null
}

find_python27() {
    local candidates=() name path root
    if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then candidates+=("$AUTOBAHN_PYTHON2"); fi
    for name in python2.7 python2; do
        if path="$(command -v "$name")"; then candidates+=("$path"); fi
    done
    root="${PYENV_ROOT:-$HOME/.pyenv}"
    if command -v pyenv >/dev/null 2>&1; then root="$(pyenv root 2>/dev/null || echo "$root")"; fi
    for path in "$root"/versions/2.7*/bin/python2.7; do candidates+=("$path"); done
    candidates+=(/usr/bin/python2.7 /usr/local/bin/python2.7)
    for path in "${candidates[@]}"; do
        if [ -x "$path" ] && is_python27 "$path"; then return 0; fi
    done
    return 1
}

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1
}

add_bullseye_source() {
    if [ ! -f "$BULLSEYE_SOURCE" ]; then
        cat >"$BULLSEYE_SOURCE" <<EOF
# Added by rawws tools/autobahn/install.sh: Python 2.7 for Autobahn|Testsuite.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    if [ ! -f "$BULLSEYE_PIN" ]; then
        cat >"$BULLSEYE_PIN" <<EOF
# Added by rawws tools/autobahn/install.sh: bullseye only for packages no other source has.
Package: *
Pin: release n=bullseye
Pin-Priority: $BULLSEYE_PRIORITY
EOF
    fi
}

install_python27_from_debian() {
    can_apt || return 1
    say "no Python 2.7 found; installing python2.7 from Debian 11 (bullseye), pinned at priority $BULLSEYE_PRIORITY"
    add_bullseye_source
    apt-get update -qq >>"$log" 2>&1 || return 1
    # libpython2.7-dev: Python.h, to build wsaccel (autobahn[accelerate]).
    apt_install python2.7 libpython2.7-dev || return 1
}

if ! python2="$(find_python27)"; then
    install_python27_from_debian || die "no Python 2.7 interpreter, and it could not be installed.
  Autobahn|Testsuite $SUITE_VERSION needs Python 2.7. Either:
  - set AUTOBAHN_PYTHON2=/path/to/python2.7, or
  - pyenv install 2.7.18, or
  - as root on Debian/Ubuntu, run this script again (it adds Debian 11's python2.7), or
  - on Debian 11 / Ubuntu 20.04: apt-get install python2.7 libpython2.7-dev."
    python2="$(find_python27)" || die "python2.7 was installed but does not run"
fi

# wsaccel (a dependency of the suite) is compiled: it needs a C compiler and Python.h.
include="$("$python2" -c 'from distutils import sysconfig; print(sysconfig.get_python_inc())')"
if ! command -v gcc >/dev/null 2>&1 || [ ! -f "$include/Python.h" ]; then
    if can_apt; then
        packages=()
        command -v gcc >/dev/null 2>&1 || packages+=(gcc libc6-dev)
        if [ ! -f "$include/Python.h" ] && [ "$python2" = /usr/bin/python2.7 ]; then
            add_bullseye_source
            packages+=(libpython2.7-dev)
        fi
        if [ "${#packages[@]}" -gt 0 ]; then
            say "installing ${packages[*]} (to compile wsaccel)"
            { apt-get update -qq >>"$log" 2>&1 && apt_install "${packages[@]}"; } \
                || die "could not install ${packages[*]}"
        fi
    fi
    command -v gcc >/dev/null 2>&1 || die "wsaccel needs a C compiler (gcc); install one"
    [ -f "$include/Python.h" ] || die "wsaccel needs $include/Python.h (libpython2.7-dev)"
fi

# ---- virtualenv (in a throwaway Python 3 venv), then the suite ------------

python3="${PYTHON3:-python3}"
bootstrap="$(mktemp -d "${TMPDIR:-/tmp}/rawws-autobahn-bootstrap.XXXXXX")"
trap 'rm -rf "$bootstrap"' EXIT

"$python3" -m venv "$bootstrap" >>"$log" 2>&1 || die "could not create a Python 3 venv with $python3"
"$bootstrap/bin/python" -m pip install -q "virtualenv==$VIRTUALENV_VERSION" >>"$log" 2>&1 \
    || die "could not install virtualenv $VIRTUALENV_VERSION"
rm -rf "$venv"
"$bootstrap/bin/python" -m virtualenv -q -p "$python2" "$venv" >>"$log" 2>&1 \
    || die "could not create a Python 2.7 virtualenv from $python2"

# The suite pins its direct requirements; constraints.txt pins the rest, so
# every install resolves to the same set that was tested.
"$venv/bin/python" -m pip install -q -c "$here/constraints.txt" \
    "autobahntestsuite==$SUITE_VERSION" >>"$log" 2>&1 \
    || die "pip could not install autobahntestsuite==$SUITE_VERSION"

"$venv/bin/wstest" --help >>"$log" 2>&1 || die "wstest was installed but does not run"
touch "$stamp"
say "wstest $SUITE_VERSION installed in $venv (Python 2.7 from $python2)"

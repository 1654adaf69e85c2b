"""A throwaway certificate authority for the TLS tests, made with the `openssl` command.

`make_certificates(folder)` writes, with fresh P-256 keys valid for two days:

- `ca.pem`: a CA certificate (basicConstraints CA:TRUE, keyCertSign),
- `server.pem` + `server.key`: signed by it, for `localhost` and `127.0.0.1`
  (subjectAltName: browsers and Python check names there only, RFC 6125),
- `server-full.pem`: the certificate and its key in one file (no --keyfile),
- `wrong-host.pem` + `wrong-host.key`: signed by the same CA for a name this
  machine is not (`not-this-host.invalid`),
- `untrusted.pem` + `untrusted.key`: for 127.0.0.1, signed by a second CA
  that no test trusts.

and returns their paths with the SHA-256 of the server's public key
(base64), which Chromium's `--ignore-certificate-errors-spki-list` takes.
"""
from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


@dataclass(frozen=True)
class Certificates:
    folder: Path
    ca: Path
    cert: Path
    key: Path
    combined: Path          # cert and key in one PEM file
    wrong_host_cert: Path
    wrong_host_key: Path
    untrusted_cert: Path
    untrusted_key: Path
    spki_sha256: str        # base64 of the SHA-256 of server.pem's SubjectPublicKeyInfo


def _openssl(*args: str, cwd: Path, data: bytes | None = None) -> bytes:
    completed = subprocess.run(["openssl", *args], cwd=cwd, input=data, capture_output=True,
                               timeout=60)
    if completed.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: "
                           f"{completed.stderr.decode(errors='replace')}")
    return completed.stdout


def _make_ca(folder: Path, name: str, subject: str) -> None:
    _openssl("req", "-x509", *CURVE, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", DAYS, "-subj", subject,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)


def _make_leaf(folder: Path, name: str, ca: str, names: str) -> None:
    (folder / f"{name}.ext").write_text(
        f"subjectAltName={names}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n")
    _openssl("req", *CURVE, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-set_serial", str(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")),
             "-days", DAYS, "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=folder)


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    _make_ca(folder, "ca", "/CN=rawws test CA")
    _make_ca(folder, "other-ca", "/CN=rawws untrusted CA")
    _make_leaf(folder, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    _make_leaf(folder, "wrong-host", "ca", "DNS:not-this-host.invalid")
    _make_leaf(folder, "untrusted", "other-ca", "DNS:localhost,IP:127.0.0.1")
    combined = folder / "server-full.pem"
    combined.write_bytes((folder / "server.pem").read_bytes() + (folder / "server.key").read_bytes())
    public_key = _openssl("x509", "-in", "server.pem", "-noout", "-pubkey", cwd=folder)
    spki = _openssl("pkey", "-pubin", "-outform", "DER", cwd=folder, data=public_key)
    return Certificates(
        folder=folder, ca=folder / "ca.pem", cert=folder / "server.pem",
        key=folder / "server.key", combined=combined,
        wrong_host_cert=folder / "wrong-host.pem", wrong_host_key=folder / "wrong-host.key",
        untrusted_cert=folder / "untrusted.pem", untrusted_key=folder / "untrusted.key",
        spki_sha256=base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii"))

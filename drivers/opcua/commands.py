"""``mine-agent opcua cert`` and ``mine-agent opcua trust``: the gateway's OPC UA certificates.

Typical first secured connection on site:

    mine-agent opcua cert                      # once per gateway; give own/cert.der to the SCADA admin
    mine-agent run ...                         # logs "server certificate not trusted, saved to <file>"
    mine-agent opcua trust <file>              # after checking the thumbprint with the SCADA admin

The running agent picks the trusted certificate up at its next reconnect attempt; no restart needed.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from drivers.opcua.config import DEFAULT_PKI_DIR
from drivers.opcua.pki import Pki, certificate_summary, create_client_certificate, load_certificate_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    cert = sub.add_parser("cert", help="create this gateway's client certificate (own/cert.der, own/key.pem)")
    cert.add_argument("--pki-dir", type=Path, default=DEFAULT_PKI_DIR, help=f"default: {DEFAULT_PKI_DIR}")
    cert.add_argument("--uri", help="application URI (default: urn:<hostname>:mine-agent)")
    cert.add_argument("--hostname", help="DNS name put in the certificate (default: this host's name)")
    cert.add_argument("--days", type=int, default=3650, help="validity in days (default: 3650)")
    cert.add_argument("--force", action="store_true", help="replace an existing certificate")
    trust = sub.add_parser("trust", help="trust a server certificate file (e.g. one from <pki-dir>/rejected)")
    trust.add_argument(
        "file", type=Path, nargs="?", help="certificate, DER or PEM; omit to list rejected ones"
    )
    trust.add_argument("--pki-dir", type=Path, default=DEFAULT_PKI_DIR, help=f"default: {DEFAULT_PKI_DIR}")


def main(args: argparse.Namespace) -> int:
    pki = Pki(args.pki_dir)
    if args.action == "cert":
        host = args.hostname or socket.gethostname()
        uri = args.uri or f"urn:{host}:mine-agent"
        cert = create_client_certificate(pki, uri, hostname=host, days=args.days, overwrite=args.force)
        print(f"certificate: {pki.own_cert}")
        print(f"key:         {pki.own_key} (mode 0600, keep it on the gateway)")
        print(certificate_summary(cert))
        print("Give the certificate file to the OPC UA server's administrator to trust.")
        return 0
    if args.file is None:
        rejected = sorted(pki.rejected.glob("*")) if pki.rejected.is_dir() else []
        if not rejected:
            print(f"no rejected server certificates in {pki.rejected}")
        for path in rejected:
            print(f"{path}\n{certificate_summary(load_certificate_file(path))}\n")
        return 0
    cert = load_certificate_file(args.file)
    target = pki.trust(args.file)
    print(f"trusted: {target}")
    print(certificate_summary(cert))
    return 0

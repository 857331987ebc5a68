"""Run the IMS emulator as a process: `python -m emulator --port 9000 --latency 0.8`.

It serves Tencent Cloud IMS (TC3 signatures, the default) or a private deployment of it: HTTPS with
`--tls-cert`/`--tls-key`, client certificates required with `--tls-client-ca`, a bearer token or no
authentication with `--auth`, and another request path with `--path`.

The secrets may come from IMS_EMULATOR_SECRET_ID / IMS_EMULATOR_SECRET_KEY / IMS_EMULATOR_BEARER_TOKEN
instead of the command line, which other users of the machine can read. The one line on stdout
announces readiness (`ims-emulator listening on <http|https>://host:port`); logs go to stderr and never
show a secret.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from types import FrameType

from .config import ARRIVAL_STAMPS, AUTH_MODES, EmulatorConfig
from .faults import FAULT_KINDS, Faults
from .server import ImsEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Emulate Tencent Cloud IMS ImageModeration (or a private deployment of it) on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--secret-id", default=os.environ.get("IMS_EMULATOR_SECRET_ID"))
    parser.add_argument("--secret-key", default=os.environ.get("IMS_EMULATOR_SECRET_KEY"))
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every moderation")
    parser.add_argument("--latency-jitter", type=float, default=0.0, help="up to this many more seconds")
    parser.add_argument("--qps", type=int, default=None, help="per-SecretId requests per second")
    parser.add_argument(
        "--arrival-jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="each request reaches the rate limit after a varying 0..SECONDS network delay",
    )
    parser.add_argument(
        "--arrival-stamp",
        default="request-line",
        choices=ARRIVAL_STAMPS,
        help="when an arrival is stamped for the rate limit: as the request line is read (default), or "
        "after the body is read, in the handler thread, as a loaded front end does",
    )
    for kind in FAULT_KINDS:
        flag = "--fault-" + kind.replace("_", "-")
        parser.add_argument(flag, dest=kind, type=float, default=0.0, metavar="P", help="probability 0..1")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    parser.add_argument(
        "--read-ink",
        action="store_true",
        help="magenta ink in an image's pixels reads as ad text (emulator.ink)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    private = parser.add_argument_group("a private deployment")
    private.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    private.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    private.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA"
    )
    private.add_argument(
        "--auth", default="tc3", choices=sorted(AUTH_MODES), help="how requests authenticate (default tc3)"
    )
    private.add_argument(
        "--bearer-token", help="the token --auth bearer accepts (default: IMS_EMULATOR_BEARER_TOKEN)"
    )
    private.add_argument("--path", default="/", help="the one request path served (default /)")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse contradictory or incomplete flags before anything starts; parser.error exits 2."""
    if args.auth == "tc3" and not (args.secret_id and args.secret_key):
        parser.error("--auth tc3 needs --secret-id and --secret-key (or IMS_EMULATOR_SECRET_ID/_KEY)")
    if args.bearer_token is not None and args.auth != "bearer":
        parser.error("--bearer-token is only used with --auth bearer")
    if args.auth == "bearer" and not args.bearer_token:
        parser.error("--auth bearer needs --bearer-token (or IMS_EMULATOR_BEARER_TOKEN)")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key (client certificates need HTTPS)")
    if not args.path.startswith("/") or any(char in args.path for char in "?# "):
        parser.error(f"--path must be an absolute path without query or fragment, not {args.path!r}")
    if args.latency < 0 or args.latency_jitter < 0 or args.arrival_jitter < 0:
        parser.error("--latency, --latency-jitter and --arrival-jitter must not be negative")
    if args.qps is not None and args.qps <= 0:
        parser.error("--qps must be positive (leave it out for no limit)")


def _tls_context(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca is not None:
            context.load_verify_locations(cafile=args.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        # Names the files and OpenSSL's reason, never their contents.
        parser.error(f"cannot load the TLS files: {error}")
    return context


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.bearer_token is None and args.auth == "bearer":
        args.bearer_token = os.environ.get("IMS_EMULATOR_BEARER_TOKEN")
    _check(parser, args)
    ssl_context = _tls_context(parser, args)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        faults = Faults(seed=args.seed, **{kind: getattr(args, kind) for kind in FAULT_KINDS})
    except ValueError as error:
        parser.error(str(error))
    config = EmulatorConfig(
        secret_id=args.secret_id or "",
        secret_key=args.secret_key or "",
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        qps_limit=args.qps,
        arrival_jitter=args.arrival_jitter,
        arrival_stamp=args.arrival_stamp,
        faults=faults,
        auth=args.auth,
        bearer_token=args.bearer_token or "",
        path=args.path,
        read_ink=args.read_ink,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    emulator = ImsEmulator(config, host=args.host, port=args.port, ssl_context=ssl_context).start()
    # No credential is logged: log scans in tests treat the key pair and the token as secrets.
    logging.info(
        "auth %s, path %s, client certificates %s; latency %.3f s (+%.3f), arrival jitter %.3f s, "
        "arrival stamp %s, qps limit %s, faults %s",
        config.auth,
        config.path,
        "required" if args.tls_client_ca else "not asked for",
        config.latency,
        config.latency_jitter,
        config.arrival_jitter,
        config.arrival_stamp,
        config.qps_limit,
        faults,
    )
    print(f"ims-emulator listening on {emulator.url}", flush=True)
    try:
        stop.wait()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the IMS emulator as a process: `python -m emulator --port 9000 --latency 0.8`.

The credentials may come from IMS_EMULATOR_SECRET_ID / IMS_EMULATOR_SECRET_KEY instead of the
command line, which other users of the machine can read. The one line on stdout announces readiness;
logs go to stderr and never show the secret key.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from .config import EmulatorConfig
from .faults import FAULT_KINDS, Faults
from .server import ImsEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Emulate Tencent Cloud IMS ImageModeration on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--secret-id", default=os.environ.get("IMS_EMULATOR_SECRET_ID"))
    parser.add_argument("--secret-key", default=os.environ.get("IMS_EMULATOR_SECRET_KEY"))
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every moderation")
    parser.add_argument("--latency-jitter", type=float, default=0.0, help="up to this many more seconds")
    parser.add_argument("--qps", type=int, default=None, help="per-SecretId requests per second")
    for kind in FAULT_KINDS:
        flag = "--fault-" + kind.replace("_", "-")
        parser.add_argument(flag, dest=kind, type=float, default=0.0, metavar="P", help="probability 0..1")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.secret_id or not args.secret_key:
        parser.error("--secret-id and --secret-key (or IMS_EMULATOR_SECRET_ID/_KEY) are required")
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        faults = Faults(seed=args.seed, **{kind: getattr(args, kind) for kind in FAULT_KINDS})
    except ValueError as error:
        parser.error(str(error))
    config = EmulatorConfig(
        secret_id=args.secret_id,
        secret_key=args.secret_key,
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        qps_limit=args.qps,
        faults=faults,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    emulator = ImsEmulator(config, host=args.host, port=args.port).start()
    # Neither credential is logged: log scans in tests treat both as secrets.
    logging.info(
        "latency %.3f s (+%.3f), qps limit %s, faults %s",
        config.latency,
        config.latency_jitter,
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

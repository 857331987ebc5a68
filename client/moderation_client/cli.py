"""Moderate images from the command line through a running moderation gateway.

Each TARGET is an image file (one ModerateImage call with its bytes), an http(s) URL (one ModerateImage
call; the backend downloads it) or a folder: every image file in it, recursively and in sorted order
(hidden files and folders skipped; extensions jpg jpeg png gif webp bmp tif tiff ico avif heic heif
svg), sent through one StreamModerateImages call that reads the files only as the server asks for them.

stdout gets a table with one row per image once all are answered (columns that no image fills are
left out; SCORE is the label's score, or for a PASS the highest score any model gave; CACHED marks an
answer from the gateway's cache, whose REQUEST_ID is that of the call that first produced it), or with
--json one JSON object per line as each image is answered, either {"target", "suggestion", "label",
"sub_label", "score", "backend", "request_id", "attempts", "cached", "result"} (result: the whole
response, zero values included) or {"target", "error": {"code", "message", "reason"}}. Suggestions are
the proto's names (SUGGESTION_PASS, SUGGESTION_REVIEW, SUGGESTION_BLOCK), as the library prints them.
The error code is the gRPC status name (FILE_UNREADABLE when the file could not be read here) and
reason the google.rpc.ErrorInfo reason, or null. An image the server never answered is an error row.
stderr gets the progress bar (when it is a terminal, or with --progress) and, for more than one
image, a summary by suggestion, label and error code. Control characters are shown escaped.

`moderate health` checks the server instead (grpc.health.v1; see `moderate health --help`); a file or
folder named `health` is `./health`.

exit status (the most severe outcome wins: BLOCK, then an error, then REVIEW):
  0  every image SUGGESTION_PASS (or there was nothing to moderate)
  1  some image SUGGESTION_REVIEW (or a verdict this client does not know), none BLOCK, no error
  2  some image SUGGESTION_BLOCK
  3  some image could not be moderated (per-image error, failed call, or a server that broke the
     protocol), none BLOCK; also any failure of this program itself
  4  usage error, or the server could not be reached
  130, 141  interrupted (Ctrl-C), or stdout closed before every row was written (`| head`)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from moderation_client.aio import ModerationClient
from moderation_client.base import DEFAULT_TIMEOUT, HEALTH_TIMEOUT
from moderation_client.errors import ModerationError, ServerUnreachable
from moderation_client.health import SERVING
from moderation_client.images import read_image
from moderation_client.output import BLOCK, ERROR, PASS, Failure, Outcome, printable, summary
from moderation_client.stream import StreamResult

if TYPE_CHECKING:
    from moderation_client.report import Report

Number = TypeVar("Number", int, float)

EXIT_PASS = 0
EXIT_REVIEW = 1
EXIT_BLOCK = 2
EXIT_ERROR = 3
EXIT_CANNOT_RUN = 4
# The shell's statuses for a process killed by SIGINT and by SIGPIPE, which these exits stand in for.
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 141

DEFAULT_SERVER = "localhost:50051"
DEFAULT_CALL_TIMEOUT = DEFAULT_TIMEOUT
# A live server connects within milliseconds; this bounds the wait on an address that drops packets.
CONNECT_TIMEOUT = 5.0
# A health check failing with these never reached a server's health service.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".ico",
        ".avif",
        ".heic",
        ".heif",
        ".svg",
    }
)


class UsageError(Exception):
    """A target that names nothing that can be moderated."""


@dataclass(frozen=True)
class Options:
    server: str
    json_lines: bool
    call_timeout: float
    stream_timeout: float | None
    biz_type: str
    concurrency: int
    progress: bool


@dataclass(frozen=True)
class Plan:
    """The work, split by how it travels."""

    singles: list[str]  # files and URLs: one ModerateImage call each
    streamed: list[Path]  # images found in folders: all in one StreamModerateImages call


# --- command line ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2 on usage errors, which would read as BLOCK to a script.
        self.print_usage(sys.stderr)
        self.exit(EXIT_CANNOT_RUN, f"{self.prog}: error: {message}\n")


def _positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    def parse(text: str) -> Number:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    # argparse names the type in its message for unparsable values ("invalid float value: 'x'").
    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


def _add_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("MODERATION_SERVER", DEFAULT_SERVER),
        metavar="HOST:PORT",
        help=f"gateway address (default: $MODERATION_SERVER, else {DEFAULT_SERVER})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="moderate",
        usage="%(prog)s [options] TARGET [TARGET ...]\n       %(prog)s health [options]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="+", metavar="TARGET", help="image file, http(s) URL or folder")
    _add_server(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        metavar="SECONDS",
        help=f"deadline of each file or URL call (default {DEFAULT_CALL_TIMEOUT:g}) and of the whole "
        "folder stream (default: none, as a large folder may take long)",
    )
    parser.add_argument("--biz-type", default="", metavar="X", help="moderation policy (IMS BizType)")
    parser.add_argument(
        "--concurrency",
        type=_positive(int),
        default=8,
        metavar="N",
        help="file and URL calls in flight at once (default 8; a folder's pace is set by the server)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        server=args.server,
        json_lines=args.json,
        call_timeout=args.timeout or DEFAULT_CALL_TIMEOUT,
        stream_timeout=args.timeout,
        biz_type=args.biz_type,
        concurrency=args.concurrency,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )


# --- target discovery -----------------------------------------------------------------------------


def is_url(target: str) -> bool:
    return target.lower().startswith(("http://", "https://"))


def find_images(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        # Pruning in place keeps the walk out of hidden folders (.git, caches) altogether.
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        found.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


def plan_targets(targets: list[str]) -> Plan:
    singles: list[str] = []
    streamed: list[Path] = []
    for target in targets:
        path = Path(target)
        if is_url(target) or path.is_file():
            singles.append(target)
        elif path.is_dir():
            streamed.extend(find_images(path))
        else:
            raise UsageError(f"{target}: no such file or folder, nor an http(s) URL")
    return Plan(singles, streamed)


# --- answers and errors ---------------------------------------------------------------------------


def unreadable(target: str, error: OSError) -> Outcome:
    return Outcome(target, Failure("FILE_UNREADABLE", str(error), None))


def stream_answer(answer: StreamResult) -> ModerateImageResponse | Failure:
    if answer.error is not None:
        return Failure.of(answer.error)
    assert answer.result is not None, "a stream answer has a result or an error"
    return answer.result


# --- exit status ----------------------------------------------------------------------------------


def exit_status(verdicts: Set[str]) -> int:
    if BLOCK in verdicts:
        return EXIT_BLOCK
    if ERROR in verdicts:
        return EXIT_ERROR
    if verdicts <= {PASS}:
        return EXIT_PASS
    # REVIEW, or a suggestion newer than this client: either way a person should look.
    return EXIT_REVIEW


# --- calls ----------------------------------------------------------------------------------------


async def wait_until_reachable(client: ModerationClient) -> None:
    """Fails before any file is read when nothing answers, rather than once per image."""
    try:
        await client.wait_until_ready(CONNECT_TIMEOUT)
    except ServerUnreachable as exc:
        raise ServerUnreachable(
            f"cannot connect to the moderation server at {client.target} "
            f"(set --server or MODERATION_SERVER): {exc}"
        ) from None


async def single_request(target: str, biz_type: str) -> ModerateImageRequest:
    if is_url(target):
        return ModerateImageRequest(url=target, biz_type=biz_type)
    content = await asyncio.to_thread(read_image, Path(target))
    return ModerateImageRequest(content=content, biz_type=biz_type)


async def moderate_single(
    client: ModerationClient, target: str, options: Options, limit: asyncio.Semaphore, report: Report
) -> None:
    async with limit:
        try:
            request = await single_request(target, options.biz_type)
        except OSError as exc:
            report.add(unreadable(target, exc))
            return
        try:
            result = await client.moderate(request)
        except ModerationError as exc:
            report.add(Outcome(target, Failure.of(exc)))
            return
        report.add(Outcome(target, result))


async def moderate_folder_images(
    client: ModerationClient, paths: list[Path], options: Options, report: Report
) -> None:
    if not paths:
        return
    unanswered = {position: str(path) for position, path in enumerate(paths)}
    sent: list[int] = []  # stream item index -> position in `paths`, as unreadable files are not sent

    async def requests() -> AsyncIterator[tuple[str, ModerateImageRequest]]:
        for position, path in enumerate(paths):
            target = unanswered[position]
            try:
                content = await asyncio.to_thread(read_image, path)
            except OSError as exc:
                del unanswered[position]
                report.add(unreadable(target, exc))
                continue
            sent.append(position)
            yield target, ModerateImageRequest(content=content, biz_type=options.biz_type)

    try:
        async for answer in client.moderate_stream(requests()):
            report.add(Outcome(unanswered.pop(sent[answer.index]), stream_answer(answer)))
    except ModerationError as exc:
        # The stream failed as a whole (deadline, server gone): every image it left unanswered gets
        # that status, so each image is still reported exactly once.
        for target in unanswered.values():
            report.add(Outcome(target, Failure.of(exc)))


async def run(options: Options, plan: Plan) -> int:
    # Imported here: the progress bar is the [cli] extra's, and `moderate health` must not need it.
    from moderation_client.report import Report

    async with ModerationClient(
        options.server, timeout=options.call_timeout, stream_timeout=options.stream_timeout
    ) as client:
        await wait_until_reachable(client)
        targets = [*plan.singles, *map(str, plan.streamed)]
        report = Report(targets, json_lines=options.json_lines, progress=options.progress)
        limit = asyncio.Semaphore(options.concurrency)
        try:
            await asyncio.gather(
                *(moderate_single(client, target, options, limit, report) for target in plan.singles),
                moderate_folder_images(client, plan.streamed, options, report),
            )
        finally:
            report.close()
    if report.tally.verdicts.total() > 1:
        print(summary(report.tally), file=sys.stderr)
    return exit_status(set(report.tally.verdicts))


# --- health ---------------------------------------------------------------------------------------


HEALTH_DESCRIPTION = """\
Asks the gateway's standard gRPC health service (grpc.health.v1) whether it serves, and prints its
answer: SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN. Quick (no wait for a connection, no
progress bar, no [cli] extra needed), for a container's or Kubernetes exec probe.

exit status:
  0  SERVING
  3  the server answered, but not SERVING (or the check failed there)
  4  usage error, or the server could not be reached within the timeout
"""


def build_health_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="moderate health",
        description=HEALTH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_server(parser)
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        default=HEALTH_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of the check, connection included (default {HEALTH_TIMEOUT:g})",
    )
    parser.add_argument(
        "--service", default="", metavar="NAME", help='the service to ask about (default "": the server)'
    )
    return parser


async def check_health(server: str, service: str, timeout: float) -> int:
    async with ModerationClient(server) as client:
        try:
            status = await client.health(service, timeout=timeout)
        except ModerationError as exc:
            print(f"moderate health: {server}: {printable(str(exc))}", file=sys.stderr)
            return EXIT_CANNOT_RUN if exc.code in UNREACHABLE else EXIT_ERROR
    print(status)
    return EXIT_PASS if status == SERVING else EXIT_ERROR


def health_main(argv: list[str]) -> int:
    args = build_health_parser().parse_args(argv)
    return asyncio.run(check_health(args.server, args.service, args.timeout))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "moderate"
    try:
        if argv[:1] == ["health"]:
            return health_main(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            plan = plan_targets(args.targets)
        except UsageError as exc:
            parser.error(str(exc))
        return asyncio.run(run(options_from(args), plan))
    except ServerUnreachable as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (`| head`) has seen enough. Pointing stdout at /dev/null keeps the flush at exit
        # from failing again and printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_STDOUT_CLOSED
    except Exception as exc:
        # Whatever went wrong (a bug here, a server breaking the protocol in a way not foreseen), it
        # must not read as an exit status that means a verdict.
        print(f"{prog}: error: {type(exc).__name__}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""``pubsub`` (or ``python -m tornado_pubsub.client.cli``): the command line for a tornado-pubsub server.

    pubsub create orders
    pubsub sub orders audit --last-n 10    # one JSON document per event
    pubsub pub orders '{"id": 1}'
    pubsub pub orders --json '{"id": 1}'   # refuse anything that is not JSON
    seq 1000 | pubsub pub orders           # one message per line
    pubsub topics | stats | health | delete orders | bench
    pubsub token --sub 42 --allow subscribe:user.42 --ttl 1h   # mint a user token (offline)

Results go to stdout as JSON, in one style for every command: one compact
document per line when stdout is a pipe or a file, indented on a terminal.
Progress, notices and errors go to stderr, errors as one line.

Exit codes (also in ``--help``): 0 ok, 1 refused by the server, 2 bad usage
or bad input, 3 server unreachable or connection lost, 4 unauthorized or
forbidden, 5 topic not found, 6 server unavailable (it answered, but cannot
serve now: its Redis is down, it is draining, or it failed internally; retry
later), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any, AsyncIterator

from tornado_pubsub.client import (
    CLOSED,
    CONNECTION_LOST,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    TIMEOUT,
    UNREACHABLE,
    ClientError,
    Gap,
    Message,
    PublishAck,
    PubSubClient,
)
from tornado_pubsub import __version__
from tornado_pubsub.client.token_cli import add_token_arguments, mint_token
from tornado_pubsub.client.fanout import measure_fanout
from tornado_pubsub.client.publishing import Progress, count_lines, publish_windowed, read_lines
from tornado_pubsub.core.errors import FORBIDDEN, INTERNAL, SHUTTING_DOWN, TOPIC_NOT_FOUND, UNAUTHORIZED

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_UNAUTHORIZED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4, 5
EXIT_UNAVAILABLE = 6
EXIT_CODES = (
    "exit codes: 0 ok, 1 refused by the server, 2 bad usage or input, 3 unreachable or connection lost, "
    "4 unauthorized or forbidden, 5 topic not found, 6 server unavailable (retry later), 130 interrupted"
)
_EXIT_FOR_CODE = {
    UNREACHABLE: EXIT_UNREACHABLE,
    CONNECTION_LOST: EXIT_UNREACHABLE,
    TIMEOUT: EXIT_UNREACHABLE,
    CLOSED: EXIT_UNREACHABLE,
    UNAUTHORIZED: EXIT_UNAUTHORIZED,
    FORBIDDEN: EXIT_UNAUTHORIZED,
    TOPIC_NOT_FOUND: EXIT_NOT_FOUND,
    # The server answered but cannot serve now: a Redis outage (INTERNAL with
    # HTTP 503 on REST, INTERNAL on the WebSocket), a draining server, a fault.
    INTERNAL: EXIT_UNAVAILABLE,
    SHUTTING_DOWN: EXIT_UNAVAILABLE,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
}


def exit_code_for(error: ClientError) -> int:
    """The exit code for a failed command: by protocol code, and any HTTP 503 is "unavailable"."""
    if error.status == 503:
        return EXIT_UNAVAILABLE
    return _EXIT_FOR_CODE.get(error.code, EXIT_REFUSED)
_HINT = {
    UNREACHABLE: " (is the server running? set --url or PUBSUB_URL)",
    UNAUTHORIZED: " (set --api-key or PUBSUB_API_KEY)",
}


class Output:
    """stdout for results, stderr for people.

    Every JSON document (a REST result, an event, an ack) is written the same
    way: compact on one line when stdout is a pipe or a file (so ``jq`` and
    ``while read`` work), indented when it is a terminal.
    """

    def __init__(self) -> None:
        self.pretty = sys.stdout.isatty()
        self.progress = sys.stderr.isatty()
        self.closed = False  # the reader of stdout went away (e.g. `| head -1`)

    def _write(self, text: str) -> None:
        if self.closed:
            return
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            self.closed = True
            # Point stdout at /dev/null so the interpreter's final flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def result(self, obj: Any) -> None:
        if self.pretty:
            self._write(json.dumps(obj, indent=2, ensure_ascii=False))
        else:
            self._write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    def text(self, text: str) -> None:
        """One line of plain text (a token)."""
        self._write(text)

    def note(self, text: str) -> None:
        print(f"pubsub: {text}", file=sys.stderr, flush=True)


def parse_payload(text: str, strict: bool = False) -> Any:
    """A JSON value when ``text`` is JSON, else the text itself as a string;
    with ``strict`` (``pub --json``) anything that is not JSON is a ``UsageError``."""
    try:
        return json.loads(text)
    except ValueError as exc:
        if strict:
            raise UsageError(f"not JSON ({exc}): {text[:60]!r}") from None
        return text


# -- REST subcommands ------------------------------------------------------------------


async def cmd_topics(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    out.result({"topics": await client.topics()})
    return EXIT_OK


async def cmd_create(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    await client.create_topic(args.name)
    out.result({"status": "created", "topic": args.name})
    return EXIT_OK


async def cmd_delete(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    await client.delete_topic(args.name)
    out.result({"status": "deleted", "topic": args.name})
    return EXIT_OK


async def cmd_stats(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    out.result(await client.stats())
    return EXIT_OK


async def cmd_health(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    body = await client.health()
    out.result(body)
    return EXIT_OK if body.get("status", "ok") == "ok" else EXIT_UNAVAILABLE


# -- sub ------------------------------------------------------------------------------------


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def cmd_sub(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    """Subscribe to every topic given; the command ends with the first subscription
    that ends (a topic deleted, a resume refused), so none ends unnoticed."""
    if args.epoch is not None and args.since is None:
        raise UsageError("--epoch goes with --since")
    if args.since is not None and len(args.topics) > 1:
        raise UsageError("--since resumes one topic: give a single TOPIC")
    if len(set(args.topics)) != len(args.topics):
        raise UsageError("a TOPIC is given twice")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    received = 0

    def on_message(message: Message) -> None:
        nonlocal received
        if args.count is not None and received >= args.count:
            return
        received += 1
        out.result(
            {
                "topic": message.topic,
                "seq": message.seq,
                "id": message.id,
                "payload": message.payload,
                "ts": message.ts,
                "epoch": message.epoch,
            }
        )
        if out.closed or (args.count is not None and received >= args.count):
            stop.set()

    def on_gap(gap: Gap) -> None:
        if gap.reason == "epoch_changed":
            out.note(f"{gap.topic}: topic recreated or server restarted; seq starts again at {gap.first_seq}")
        else:
            first_lost = gap.after_seq + 1 if gap.after_seq is not None else "?"
            out.note(f"{gap.topic}: messages {first_lost}..{gap.first_seq - 1} were lost ({gap.reason})")

    await client.connect()
    subs = [
        await client.subscribe(
            topic,
            on_message,
            last_n=args.last_n,
            on_gap=on_gap,
            since_seq=args.since,
            epoch=args.epoch,
            wait_for_topic=args.wait_for_topic,
        )
        for topic in args.topics
    ]
    out.note(f"subscribed to {', '.join(args.topics)}")
    if args.count == 0:
        return EXIT_OK
    ends = {asyncio.ensure_future(sub.wait()): sub.topic for sub in subs}
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([*ends, stopped], return_when=asyncio.FIRST_COMPLETED)
    for future in [*ends, stopped]:
        future.cancel()
    if stop.is_set():
        return EXIT_OK
    ended = next(f for f in ends if f in done)
    topic, reason = ends[ended], ended.result()
    if reason in ("topic_deleted", "topic_not_found"):
        out.note(f"topic {topic!r} no longer exists ({reason})")
        return EXIT_NOT_FOUND
    if reason == "unauthorized":
        out.note("unauthorized on reconnect" + _HINT[UNAUTHORIZED])
        return EXIT_UNAUTHORIZED
    out.note(f"subscription to {topic} ended: {reason}")
    return EXIT_UNREACHABLE


# -- pub ------------------------------------------------------------------------------------


async def cmd_pub(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    if args.payload is not None:
        if args.file is not None:
            raise UsageError("give a PAYLOAD or --file, not both")
        payload = parse_payload(args.payload, args.json)  # refused before connecting
        await client.connect()
        ack = await client.publish(args.topic, payload, id=args.id)
        out.result(dataclasses.asdict(ack))
        return EXIT_OK
    if args.id is not None:
        raise UsageError("--id applies to a single PAYLOAD")
    if args.file in (None, "-"):
        source, total = sys.stdin.buffer, None
        if sys.stdin.isatty():
            out.note("reading messages from stdin, one per line (Ctrl-D to finish)")
    else:
        try:
            source = open(args.file, "rb")
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        total = count_lines(args.file) if out.progress else None  # only the drawn bar shows it
    await client.connect()
    progress = Progress(out, total)

    async def payloads() -> AsyncIterator[Any]:
        number = 0
        async for raw in read_lines(source):
            number += 1
            text = raw.decode("utf-8", "replace").strip()
            if text:
                try:
                    yield parse_payload(text, args.json)
                except UsageError as exc:  # stop here, naming the line; some before it may have been sent
                    raise UsageError(f"line {number}: {exc}; stopped there") from None

    def on_ack(ack: PublishAck) -> None:
        progress.tick()
        if args.acks:
            out.result(dataclasses.asdict(ack))

    try:
        await publish_windowed(client, args.topic, payloads(), on_ack)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    progress.finish(args.topic)
    return EXIT_OK


# -- bench ----------------------------------------------------------------------------------


async def cmd_bench(client: PubSubClient, args: argparse.Namespace, out: Output) -> int:
    """Fan-out: one publisher, N subscribers on their own connections, all in this process."""
    result = await measure_fanout(client, args.topic, args.subscribers, args.messages, args.size, args.wait)
    out.result(result)
    out.note(
        f"{args.messages} messages x {args.subscribers} subscribers: {result['delivery_rate']:,.0f} deliveries/s, "
        f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms"
        + ("" if result["complete"] else f" (INCOMPLETE: {result['deliveries']} deliveries)")
    )
    return EXIT_OK if result["complete"] else EXIT_REFUSED


# -- wiring ---------------------------------------------------------------------------------


class UsageError(Exception):
    """A bad combination of arguments argparse cannot express."""


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def cmd_token(args: argparse.Namespace, out: Output) -> int:
    """Mint a token offline (see ``token_cli``); only the token goes to stdout."""
    try:
        token = mint_token(args)
    except ValueError as exc:  # their messages never quote the key
        raise UsageError(str(exc)) from None
    out.text(token)  # bare, for TOKEN=$(pubsub token ...)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; connection options are accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given after the subcommand must not be reset by the main parser's default.
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"server base URL (env PUBSUB_URL; default {DEFAULT_URL})")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (env PUBSUB_API_KEY)")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help=f"seconds to wait for a reply (default {DEFAULT_TIMEOUT:g})")

    parser = argparse.ArgumentParser(
        prog="pubsub",
        parents=[common],
        description="Command line for a tornado-pubsub server.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"pubsub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, parents=[common], help=help_text, description=help_text, epilog=EXIT_CODES)
        p.set_defaults(handler=handler, parser=p)  # a UsageError shows this command's usage
        return p

    command("topics", cmd_topics, "list topics and their subscriber counts")
    command("create", cmd_create, "create a topic").add_argument("name")
    command("delete", cmd_delete, "delete a topic (its subscribers are told)").add_argument("name")
    command("stats", cmd_stats, "per-topic message, subscriber and drop counters")
    command("health", cmd_health, "server health (exit 6 while draining)")

    sub = command("sub", cmd_sub, "subscribe to one or more topics and print one JSON document per event")
    sub.add_argument("topics", nargs="+", metavar="TOPIC")
    start = sub.add_mutually_exclusive_group()
    start.add_argument("--last-n", type=_non_negative, help="replay up to N retained messages first")
    start.add_argument("--since", type=_non_negative, metavar="SEQ", help="resume after seq SEQ")
    sub.add_argument("--epoch", help="the epoch SEQ belongs to (from a printed event); a different one is reported")
    sub.add_argument("--count", type=_non_negative, help="exit after N events (all topics together)")
    sub.add_argument(
        "--wait-for-topic",
        action="store_true",
        help="when a topic is deleted or lost in a server restart, wait for it to exist again instead of exiting",
    )

    pub = command("pub", cmd_pub, "publish PAYLOAD, or one message per line of --file or stdin")
    pub.add_argument("topic")
    pub.add_argument("payload", nargs="?", help="JSON value (anything else is sent as a string, unless --json)")
    pub.add_argument("--json", action="store_true", help="refuse (exit 2) a payload or line that is not JSON")
    pub.add_argument("--file", "-f", help="file with one message per line ('-': stdin)")
    pub.add_argument("--id", help="message id (UUID) for an idempotent single publish")
    pub.add_argument("--acks", action="store_true", help="print every ack when publishing many")

    bench = command("bench", cmd_bench, "measure fan-out: one publisher, N subscribers")
    bench.add_argument("--subscribers", type=_positive, default=10, help="subscriber connections (default 10)")
    bench.add_argument("--messages", type=_positive, default=2000, help="messages to publish (default 2000)")
    bench.add_argument("--size", type=_non_negative, default=100, help="payload padding in bytes (default 100)")
    bench.add_argument("--topic", help="topic to create for the run (default: a random bench-* name)")
    bench.add_argument("--wait", type=float, default=30.0, help="seconds to wait for every delivery (default 30)")

    token = command("token", None, "mint a user token (JWT) offline, e.g. for a test page or a script")
    add_token_arguments(token)
    return parser


async def run(args: argparse.Namespace, out: Output) -> int:
    """Run the chosen subcommand; ``ClientError`` becomes one line and an exit code."""
    url = getattr(args, "url", None) or os.environ.get("PUBSUB_URL") or DEFAULT_URL
    api_key = getattr(args, "api_key", None) or os.environ.get("PUBSUB_API_KEY") or None
    try:
        client = PubSubClient(url, api_key=api_key, request_timeout=getattr(args, "timeout", DEFAULT_TIMEOUT))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        return await args.handler(client, args, out)
    except ClientError as exc:
        code = exit_code_for(exc)
        hint = " (the server cannot serve now; retry later)" if code == EXIT_UNAVAILABLE else _HINT.get(exc.code, "")
        out.note(f"{exc.code.lower().replace('_', ' ')}: {exc.message}{hint}")
        return code
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pubsub`` and ``python -m tornado_pubsub.client.cli``; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "pub" and args.payload is None and len(extra) == 1 and not extra[0].startswith("-"):
        # argparse matches an optional positional too early: `pub t --json '{..}'` leaves the payload over.
        args.payload, extra = extra[0], []
    if extra:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING, format="pubsub: %(message)s", stream=sys.stderr)
    if args.command == "sub":  # say so when a subscription reconnects
        logging.getLogger("tornado_pubsub.client").setLevel(logging.INFO)
    out = Output()
    try:
        if args.command == "token":  # offline: no server, no connection options
            return cmd_token(args, out)
        return asyncio.run(run(args, out))
    except UsageError as exc:
        getattr(args, "parser", parser).error(str(exc))  # the command's usage, then exit 2
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

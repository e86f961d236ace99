"""Structured logging: one JSON line per operation, a text format for people,
and redaction of the API key whoever logs it."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tornado_pubsub.logs import configure_logging, log_op

from tests.kit.support import TS_RE

SECRET = "top-secret-key-99"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_json_format_one_line_per_operation_with_context(restore_logging, capsys):
    configure_logging("info", "json")
    log_op("subscribe", conn_id="c1", client_id="cli", topic="orders", request_id="r1", remote="127.0.0.1", outcome="ok")
    (line,) = lines(capsys)
    record = json.loads(line)
    assert record["event"] == "subscribe" and record["level"] == "INFO" and TS_RE.match(record["ts"])
    assert (record["client_id"], record["topic"], record["request_id"], record["remote"]) == ("cli", "orders", "r1", "127.0.0.1")


def test_json_format_none_context_left_out(restore_logging, capsys):
    configure_logging("info", "json")
    log_op("publish", topic="t", request_id=None)
    record = json.loads(lines(capsys)[0])
    assert "request_id" not in record and record["topic"] == "t"


def test_json_format_exception_stays_on_one_line(restore_logging, capsys):
    configure_logging("info", "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log_op("internal", logging.ERROR, exc_info=True, conn_id="c1")
    (line,) = lines(capsys)
    record = json.loads(line)
    assert record["level"] == "ERROR" and "RuntimeError: boom" in record["exc_info"]


def test_json_format_hostile_client_id_stays_one_line(restore_logging, capsys):
    configure_logging("info", "json")
    log_op("subscribe", client_id='evil\n{"event": "forged"}\u2028')
    (line,) = lines(capsys)
    assert json.loads(line)["client_id"].startswith("evil\n")


def test_text_format_one_readable_line_and_newlines_escaped(restore_logging, capsys):
    configure_logging("info", "text")
    log_op("subscribe", client_id="a\nforged line", topic="orders")
    (line,) = lines(capsys)
    assert "subscribe" in line and "topic='orders'" in line and "\\n" in line


def test_log_level_filters_lower_records(restore_logging, capsys):
    configure_logging("warning", "json")
    log_op("publish", topic="t")
    log_op("slow_consumer", logging.WARNING, topic="t")
    assert [json.loads(line)["event"] for line in lines(capsys)] == ["slow_consumer"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_api_key_query_and_configured_secret_redacted_in_any_logger(restore_logging, capsys, fmt):
    configure_logging("debug", fmt, SECRET)
    log_op("http", path=f"/ws?api_key={SECRET}&x=1")
    log_op("http", path="/ws?x=1&API_KEY=guessed-wrong")
    logging.getLogger("tornado.general").warning("odd request /ws?api_key=%s", SECRET)
    logging.getLogger("anything").info("the key is %s", SECRET)
    output = lines(capsys)
    assert len(output) == 4
    text = "\n".join(output)
    assert SECRET not in text and "guessed-wrong" not in text and text.count("[REDACTED]") >= 4


def test_tornado_loggers_use_the_same_json_format(restore_logging, capsys):
    configure_logging("info", "json")
    logging.getLogger("tornado.access").info("GET /")
    record = json.loads(lines(capsys)[0])
    assert record["logger"] == "tornado.access" and TS_RE.match(record["ts"])


def test_json_fields_match_python_json_logger_own_add_fields(restore_logging):
    # The one-pass add_fields must give exactly what the library's would
    # (same keys, same order), for plain, extra-laden and exception records,
    # and for the records log_op makes itself (OpRecord).
    from pythonjsonlogger.json import JsonFormatter

    from tornado_pubsub import logs
    from tornado_pubsub.logs import Redactor, _RedactingJson

    ours = _RedactingJson(Redactor())
    try:
        raise ValueError("x")
    except ValueError:
        import sys

        exc = sys.exc_info()
    configure_logging("info", "json")  # what log_op's own records are made from
    logger = logging.getLogger("tornado_pubsub")
    made = [
        logger.makeRecord("tornado_pubsub", logging.INFO, "f", 1, "msg %s", ("x",), exc_info, extra=extra)
        for extra, exc_info in (({}, None), ({"event": "publish", "topic": "t", "seq": 3, "_hidden": 1}, None), ({"a": 1}, exc))
    ]
    made.append(logs._op_record(logs.OpRecord.template or {}, logging.INFO, "publish", {"topic": "t", "_hidden": 1, "event": "publish"}))
    for record in made:
        exc_info = record.exc_info
        record.worker = 2  # what the worker filter adds after the record is made
        record.message = record.getMessage()
        record.asctime = "t"
        message_dict = {"exc_info": "tb"} if exc_info else {}
        mine: dict = {}
        theirs: dict = {}
        ours.add_fields(mine, record, message_dict)
        JsonFormatter.add_fields(ours, theirs, record, message_dict)
        assert list(mine.items()) == list(theirs.items())


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_operation_records_are_the_records_logger_would_make(restore_logging):
    # Once configure_logging owns logging, log_op makes its records directly;
    # a handler or formatter must find every attribute Logger.info would
    # have set, in the same order, with the same values (time aside).
    configure_logging("info", "json")
    keep = _Keep()
    logging.getLogger().addHandler(keep)
    log_op("publish", topic="t", seq=3, request_id=None)
    logging.getLogger("tornado_pubsub").info("publish", extra={"topic": "t", "seq": 3, "event": "publish"})
    direct, made = (vars(record) for record in keep.records)
    assert list(direct) == list(made)
    assert {key for key in made if direct[key] != made[key]} <= {"created", "msecs", "relativeCreated", "asctime"}
    assert abs(direct["relativeCreated"] - made["relativeCreated"]) < 1000  # counted from the same start, in ms
    host = logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(pathname)s %(filename)s %(module)s %(lineno)d %(funcName)s "
        "%(created)f %(msecs)d %(relativeCreated)d %(thread)s %(threadName)s %(process)s %(processName)s %(message)s"
    )
    assert " tornado_pubsub INFO (unknown file) (unknown file) (unknown file) 0 (unknown function) " in host.format(keep.records[0])


@pytest.mark.parametrize("clash", ["name", "msg", "message", "asctime"])
def test_a_context_key_naming_a_record_attribute_is_refused_as_logger_log_refuses_it(restore_logging, clash):
    # Made directly, the record would silently take the context's value
    # (a forged logger name, say); Logger.log refuses the key instead.
    configure_logging("info", "json")
    with pytest.raises(KeyError, match="overwrite"):
        log_op("publish", **{clash: "forged"})


def test_a_record_factory_set_by_the_host_still_makes_operation_records(restore_logging, capsys):
    configure_logging("info", "json")
    previous = logging.getLogRecordFactory()

    def tagged(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.tenant = "acme"
        return record

    logging.setLogRecordFactory(tagged)
    try:
        log_op("publish", topic="t")
    finally:
        logging.setLogRecordFactory(previous)
    (line,) = lines(capsys)
    assert json.loads(line)["tenant"] == "acme"


async def test_records_in_one_loop_pass_are_written_together_at_its_end(restore_logging, capsys):
    configure_logging("info", "json")
    log_op("publish", topic="a")
    log_op("publish", topic="b")
    assert lines(capsys) == []  # held until the end of this pass...
    await asyncio.sleep(0)
    assert [json.loads(line)["topic"] for line in lines(capsys)] == ["a", "b"]  # ...then written, in order
    log_op("publish", topic="c")
    log_op("internal", logging.ERROR, topic="d")  # an error goes out at once, with what was held before it
    assert [json.loads(line)["topic"] for line in lines(capsys)] == ["c", "d"]


async def test_held_records_are_bounded_and_flushed_on_demand(restore_logging, capsys):
    from tornado_pubsub.logs import MAX_PENDING, flush_logs

    configure_logging("info", "json")
    for i in range(MAX_PENDING + 3):
        log_op("publish", seq=i)
    assert len(lines(capsys)) == MAX_PENDING  # a flood within one pass is written early
    flush_logs()  # what a worker does before os._exit
    assert [json.loads(line)["seq"] for line in lines(capsys)] == [MAX_PENDING, MAX_PENDING + 1, MAX_PENDING + 2]

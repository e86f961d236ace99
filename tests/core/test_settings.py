"""Settings: every setting from flag, PUBSUB_* variable and config file, with
flag > env > file precedence; invalid values stop start-up with one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tornado_pubsub import settings as settings_module
from tornado_pubsub.settings import Settings, SettingsError, load_settings

# A non-default value for every setting, as the config file / flag / env spell it.
NON_DEFAULTS = {
    "port": ("9191", 9191),
    "address": ("0.0.0.0", "0.0.0.0"),
    "queue_size": ("7", 7),
    "queue_max_bytes": ("2048", 2048),
    "overflow_policy": ("disconnect", "disconnect"),
    "history_size": ("3", 3),
    "history_max_bytes": ("4096", 4096),
    "max_retained_bytes": ("65536", 65536),
    "heartbeat_interval": ("1.5", 1.5),
    "heartbeat_timeout": ("2.5", 2.5),
    "max_message_size": ("4096", 4096),
    "max_subscriptions_per_connection": ("9", 9),
    "max_connections": ("11", 11),
    "max_topics": ("12", 12),
    "shutdown_timeout": ("0.5", 0.5),
    "api_key": ("k3y", "k3y"),
    "allowed_origins": ("http://a.example,http://b.example", ("http://a.example", "http://b.example")),
    "behind_proxy": ("true", True),
    "log_level": ("debug", "debug"),
    "log_format": ("text", "text"),
}
CONTRACT_SETTINGS = [
    "port", "address", "queue_size", "queue_max_bytes", "overflow_policy", "history_size",
    "heartbeat_interval", "heartbeat_timeout", "max_message_size", "max_subscriptions_per_connection",
    "shutdown_timeout", "api_key", "allowed_origins", "log_level", "log_format",
]  # fmt: skip


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
    # load_settings reads conf/pubsub.conf relative to the working directory.
    monkeypatch.chdir(tmp_path)


def config_file(tmp_path: Path, lines: dict[str, str], raw: str = "") -> str:
    path = tmp_path / "test.conf"
    body = "".join(f"{name} = {value}\n" for name, value in lines.items()) + raw
    path.write_text(body)
    return str(path)


def file_literal(name: str, text: str) -> str:
    # tornado.options config files are Python: strings quoted, numbers and bools bare.
    kind = type(getattr(Settings(), name))
    if kind is bool:
        return "True" if text == "true" else "False"
    if kind in (int, float):
        return text
    return repr(text)


def test_load_settings_nothing_given_equals_defaults():
    assert load_settings([], {}) == Settings()


def test_settings_defaults_match_contract():
    s = Settings()
    assert (s.port, s.address, s.queue_size, s.queue_max_bytes) == (8080, "127.0.0.1", 1000, 1048576)
    assert (s.overflow_policy, s.history_size, s.heartbeat_interval, s.heartbeat_timeout) == ("drop_oldest", 100, 30, 60)
    assert (s.max_message_size, s.max_subscriptions_per_connection, s.shutdown_timeout) == (65536, 1000, 5)
    assert (s.api_key, s.allowed_origins, s.log_level, s.log_format) == (None, (), "info", "json")


def test_every_contract_setting_is_a_settings_field():
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(CONTRACT_SETTINGS) <= names and set(NON_DEFAULTS) <= names


@pytest.mark.parametrize("name", list(NON_DEFAULTS))
def test_setting_from_flag_applied(name):
    text, expected = NON_DEFAULTS[name]
    assert getattr(load_settings([f"--{name}={text}"], {}), name) == expected


@pytest.mark.parametrize("name", list(NON_DEFAULTS))
def test_setting_from_dashed_flag_applied(name):
    text, expected = NON_DEFAULTS[name]
    assert getattr(load_settings([f"--{name.replace('_', '-')}={text}"], {}), name) == expected


@pytest.mark.parametrize("name", list(NON_DEFAULTS))
def test_setting_from_env_applied(name):
    text, expected = NON_DEFAULTS[name]
    assert getattr(load_settings([], {f"PUBSUB_{name.upper()}": text}), name) == expected


def test_every_setting_from_config_file_applied(tmp_path):
    path = config_file(tmp_path, {name: file_literal(name, text) for name, (text, _) in NON_DEFAULTS.items()})
    settings = load_settings([f"--config={path}"], {})
    for name, (_, expected) in NON_DEFAULTS.items():
        assert getattr(settings, name) == expected, name


def test_default_config_file_in_conf_dir_read(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pubsub.conf").write_text("# comment\nhistory_size = 42\n")
    assert load_settings([], {}).history_size == 42


def test_packaged_config_file_read_when_the_working_directory_has_none(tmp_path, monkeypatch):
    # An installed server started from any folder still reads a config file:
    # the one shipped in the package. Flags and PUBSUB_* still win over it.
    packaged = tmp_path / "packaged.conf"
    packaged.write_text("history_size = 41\nqueue_size = 7\n")
    monkeypatch.setattr(settings_module, "PACKAGED_CONFIG", str(packaged))
    assert not (tmp_path / "conf").exists()
    s = load_settings(["--queue_size=9"], {"PUBSUB_HISTORY_SIZE": "40"})
    assert (s.history_size, s.queue_size) == (40, 9)
    assert load_settings([], {}).history_size == 41
    # A conf/pubsub.conf in the working directory replaces it entirely.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pubsub.conf").write_text("history_size = 42\n")
    s = load_settings([], {})
    assert (s.history_size, s.queue_size) == (42, Settings().queue_size)


def test_packaged_config_file_ships_inside_the_package():
    assert Path(settings_module.PACKAGED_CONFIG).is_file()
    assert load_settings([f"--config={settings_module.PACKAGED_CONFIG}"], {}) == Settings()


def test_config_file_from_env_variable_read(tmp_path):
    path = config_file(tmp_path, {"history_size": "43"})
    assert load_settings([], {"PUBSUB_CONFIG": path}).history_size == 43


def test_precedence_flag_over_env_over_file(tmp_path):
    path = config_file(tmp_path, {"queue_size": "10", "history_size": "10", "max_topics": "10"})
    env = {"PUBSUB_QUEUE_SIZE": "20", "PUBSUB_HISTORY_SIZE": "20"}
    s = load_settings([f"--config={path}", "--queue-size=30"], env)
    assert (s.queue_size, s.history_size, s.max_topics) == (30, 20, 10)


def test_precedence_env_over_file_for_strings(tmp_path):
    path = config_file(tmp_path, {"overflow_policy": "'disconnect'", "log_format": "'text'"})
    s = load_settings([f"--config={path}"], {"PUBSUB_OVERFLOW_POLICY": "drop_oldest"})
    assert (s.overflow_policy, s.log_format) == ("drop_oldest", "text")


def test_allowed_origins_list_normalized():
    s = load_settings(["--allowed-origins= HTTP://A.example/ ,http://b.example"], {})
    assert s.allowed_origins == ("http://a.example", "http://b.example")


@pytest.mark.parametrize(
    "argv, env, words",
    [
        (["--queue-size=0"], {}, ["queue_size"]),
        (["--queue-max-bytes=0"], {}, ["queue_max_bytes"]),
        (["--overflow-policy=never"], {}, ["overflow_policy"]),
        (["--port=abc"], {}, ["port"]),
        (["--port=70000"], {}, ["port"]),
        (["--history-size=-1"], {}, ["history_size"]),
        (["--heartbeat-interval=0"], {}, ["heartbeat_interval"]),
        (["--heartbeat-timeout=-1"], {}, ["heartbeat_timeout"]),
        (["--max-message-size=10"], {}, ["max_message_size"]),
        (["--max-subscriptions-per-connection=0"], {}, ["max_subscriptions_per_connection"]),
        (["--shutdown-timeout=-1"], {}, ["shutdown_timeout"]),
        (["--api-key="], {}, ["api_key"]),
        (["--log-level=loud"], {}, ["log_level"]),
        (["--log-format=xml"], {}, ["log_format"]),
        (["--no-such-setting=1"], {}, ["no_such_setting"]),
        (["stray"], {}, ["stray"]),
        ([], {"PUBSUB_QUEUE_SIZE": "lots"}, ["queue_size", "PUBSUB_QUEUE_SIZE"]),
        ([], {"PUBSUB_HEARTBEAT_INTERVAL": "0"}, ["heartbeat_interval"]),
        (["--config=/nonexistent/pubsub.conf"], {}, ["/nonexistent/pubsub.conf"]),
    ],
)
def test_invalid_setting_settings_error_one_line_naming_it(argv, env, words):
    with pytest.raises(SettingsError) as err:
        load_settings(argv, env)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "lines, raw, words",
    [
        ({"queue_size": "'many'"}, "", ["queue_size"]),
        ({"bogus_setting": "1"}, "", ["bogus_setting"]),
        ({}, "queue_size = = 3\n", ["config file"]),
        ({"queue_size": "0"}, "", ["queue_size"]),
    ],
    ids=["wrong_type", "unknown", "syntax", "out_of_range"],
)
def test_invalid_config_file_settings_error_one_line(tmp_path, lines, raw, words):
    path = config_file(tmp_path, lines, raw)
    with pytest.raises(SettingsError) as err:
        load_settings([f"--config={path}"], {})
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)

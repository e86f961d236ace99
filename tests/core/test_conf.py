"""The shipped config file documents every setting with its default."""

import dataclasses
import re

from tests.kit.procs import ROOT
from tornado_pubsub.settings import Settings, load_settings

CONF = ROOT / "conf" / "pubsub.conf"


def test_conf_file_names_every_setting():
    text = CONF.read_text()
    for field in dataclasses.fields(Settings):
        assert re.search(rf"^#? ?{field.name} = ", text, re.MULTILINE), f"{field.name} missing from {CONF}"


def test_conf_file_holds_the_defaults():
    assert load_settings([f"--config={CONF}"], {}) == Settings()

"""Loads the test kit (tests/kit/plugin.py) as a pytest plugin for every test
folder: core/, handlers/ and system/ share one set of fixtures and helpers."""

pytest_plugins = ["tests.kit.plugin"]

"""The test kit: fixtures (plugin.py, loaded for every test by the root
conftest.py), subprocess servers, WebSocket and REST clients, and polling."""

"""Tornado request handlers: they translate HTTP and WebSocket traffic into
broker calls and render the results; all state lives in the broker."""

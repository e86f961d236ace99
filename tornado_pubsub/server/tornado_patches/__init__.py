"""Every use of Tornado's private internals, in this package.

Each patch names the gain that pays for it and sits behind a check of what
it relies on (the attribute exists, the signature matches), made once at
import against the installed Tornado (``checks``).  When a check fails the
patch is left out and Tornado's public behaviour is used instead: on another
Tornado version the server may be slower or use more memory, never wrong.
``ENABLED`` records each check's result (the tests flip it to run the
fallbacks); the ``startup`` log record lists what was left out.

``queue``: the outbound queue's members; ``protocol``: the WebSocket
protocol (reading frames, refusing bad ones, closing); ``http``: the
handshake and requests too large to read.

Checked against Tornado 6.2 and 6.6.1.
"""

from tornado_pubsub.server.tornado_patches.checks import ENABLED, disabled
from tornado_pubsub.server.tornado_patches.http import AnsweringStream, release_handshake_state
from tornado_pubsub.server.tornado_patches.protocol import patched_protocol
from tornado_pubsub.server.tornado_patches.queue import slim_queue

__all__ = [
    "ENABLED",
    "AnsweringStream",
    "disabled",
    "patched_protocol",
    "release_handshake_state",
    "slim_queue",
]

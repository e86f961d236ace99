"""The process around the core: the Tornado application (``app``,
``context``, ``embed``), the server and its workers (``run``, ``workers``,
``accept``) and ``/metrics`` (``metrics``)."""

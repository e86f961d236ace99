"""Broker backends: ``memory`` (one process, the default) and ``redis``
(several processes acting as one)."""

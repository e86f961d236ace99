"""Hypothesis profiles: ``ci`` (default, a few hundred examples), ``brief``
(a sample, for a second pass over code the first already fuzzed: CI's
Tornado 6.2 pass) and ``long`` (thousands, for a local soak:
``pytest --hypothesis-profile=long``)."""

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,  # a real server on a shared 2-core machine has no stable latency
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    derandomize=False,
    print_blob=True,
)
settings.register_profile("ci", max_examples=300, **_COMMON)
settings.register_profile("brief", max_examples=60, **_COMMON)
settings.register_profile("long", max_examples=5000, **_COMMON)
settings.load_profile("ci")

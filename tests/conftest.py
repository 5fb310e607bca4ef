"""Hypothesis profiles: ``ci`` (the default: tests/test_properties.py in well under 40 s) and
``thorough`` (many more examples, for local runs: ``pytest --hypothesis-profile thorough``).
No deadline: an example may wait for a numba compile."""
from __future__ import annotations

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test extra brings it; without it only test_properties.py is skipped
    pass
else:
    _slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_slow_ok,
                              print_blob=True)
    settings.register_profile("thorough", max_examples=400, deadline=None,
                              suppress_health_check=_slow_ok, print_blob=True)
    settings.load_profile("ci")

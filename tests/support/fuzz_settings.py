"""The hypothesis settings the property tests share (test_fuzz.py, test_safetensors.py)."""

import os

from hypothesis import HealthCheck

# PTH_FUZZ_SCALE=N runs N times the examples, randomized, for a longer local hunt.
SCALE = max(1, int(os.environ.get("PTH_FUZZ_SCALE", "1")))
FUZZ_SETTINGS = {
    "derandomize": SCALE == 1,  # by default the same examples on every run: CI is reproducible
    "database": None,  # no example database: every run starts from the same examples
    # Work is bounded per scan in test_fuzz.scan_measured by counting calls; no clock decides a test.
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

"""Names of the models in the A1111 tests' model folder (see conftest.py)."""

EMBEDDED = "tiny-sd15-embedded"
SECOND = "tiny-sd15"

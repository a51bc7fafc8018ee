"""Names of the models in the A1111 tests' model folder (see conftest.py)."""

EMBEDDED = "tiny-sd15-embedded"
SECOND = "tiny-sd15"
UPSCALER = "4x-tiny"  # a tiny ESRGAN in models/ESRGAN (modelkit/upscalers.py)

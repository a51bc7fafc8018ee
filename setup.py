"""Installs the Krita Diffusers server (`kd_server`) and its console script.

torch is pinned: on a CPU-only machine of the project's kind pip then takes the local
CPU wheel, and on a user's GPU machine the same pin resolves to the CUDA build (the
installer can override it). The shipped `resources/` folder (model configs, tokenizer)
is installed as the `kd_resources` package so loading never needs the hub.

spandrel (upscaler models) is not listed: it declares torchvision, which pip would
install from PyPI, replacing a CPU torch with a CUDA build. `tests/run.sh` and the
installer add it with `pip install --no-deps` (SPANDREL_PIN below; docs/upscale.md).
"""

from setuptools import setup

#: Installed after the server with --no-deps (tests/run.sh, installer/server_env.py).
SPANDREL_PIN = "spandrel==0.4.2"

setup(
    name="krita-diffusers",
    version="0.1.0",
    description="Stable Diffusion for Krita: a diffusers inference server and a Krita plugin",
    python_requires=">=3.10",
    package_dir={"": "backend", "kd_resources": "resources"},
    packages=[
        "kd_server",
        "kd_server.tasks",
        "kd_server.control",
        "kd_server.upscale",
        "kd_server.executors",
        "kd_server.api",
        "kd_server.api.v1",
        "kd_server.api.a1111",
        "kd_resources",
    ],
    package_data={"kd_resources": ["*.json", "*.txt", "**/*.json", "**/*.txt"]},
    install_requires=[
        "torch==2.13.0",
        "diffusers==0.42.1",
        "transformers>=5,<6",
        "safetensors>=0.4",
        "accelerate>=1.0",
        "peft==0.21.2",
        "numpy",
        "pillow",
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "websockets>=12",
        "requests>=2.31",
        # spandrel (upscaler architectures) is installed after this, with --no-deps:
        # its declared torchvision would replace the CPU torch (docs/upscale.md).
        # einops is the one dependency of its upscalers that it needs.
        "einops>=0.7",
        # GGUF files of Flux / SD 3.5 transformers (diffusers' GGUF loader needs it).
        "gguf>=0.10",
    ],
    extras_require={
        # Jobs on GPU machines of a Ray cluster (docs/scale-out.md); not needed on one
        # machine, with one GPU or several.
        "ray": ["ray[serve]==2.60.0"],
        "test": [
            "pytest>=8",
            "pytest-qt>=4",
            "PyQt5>=5.15",
            "httpx",
            "ruff",
            "webuiapi==0.9.17",  # a real third-party A1111 client for tests/a1111
            "schemathesis==4.32.5",  # property-based fuzzing of our OpenAPI schema
            "psutil",  # memory figures in tests/hardening
            "jsonschema>=4.18",  # events checked against the published OpenAPI schemas
            "mypy>=1.10",  # the type checker run by tests/run.sh
            "ray[serve]==2.60.0",  # the Ray executor's tests (tests/api/test_ray.py)
        ],
    },
    entry_points={"console_scripts": ["krita-diffusers-server=kd_server.cli:main"]},
)

"""Krita Diffusers inference server: model library, diffusion engine and HTTP API."""

__version__ = "0.1.0"

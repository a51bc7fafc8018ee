"""Tiny stand-ins of real model files, for the tests and the benchmarks.

`ldm_layout`: tiny pipelines of every family written as single-file checkpoints in
the original (A1111 / LDM) key layout. `loras`: LoRA files that visibly change the
embedded model's pictures. Neither is part of the server: they make the files an
artist would download, small enough for a CPU.
"""

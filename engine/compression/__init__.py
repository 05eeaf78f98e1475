"""Compression: half precision, int8, pruning and distillation, and the evaluation that judges
them. Importing this package is cheap; torch is imported by the submodules that need it.

Versions are loaded and saved through engine.modelio (the one loader; the int8 format lives
there too, so the server reads it without importing compression).
"""

from __future__ import annotations

METHODS = ("bf16", "fp16", "int8", "prune", "distill")

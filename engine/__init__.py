"""modeldeck's engine: everything that is not UI.

Importing this package must stay cheap: no torch, transformers, textual or rich here. Heavy
libraries are imported inside the functions that need them (a test enforces it).
"""

__version__ = "0.1.0"
SCHEMA = "modeldeck/v1"

"""Reading and writing model weights: the one loader serving, training and compression call.

engine.modelio.devices: the device and dtype policy; engine.modelio.loader: GGUF (converted once to safetensors and cached
under the deck home), and loading any stored version; engine.modelio.storage: saving, and the
int8 format (engine.modelio.int8). It sits below serving, training and compression and above the
registry (pyproject's import-linter layers). Importing this package is cheap: torch and
transformers are imported inside the functions that need them.
"""

"""Incremental detokenization: each new token costs work for that token, not for the whole text.

With a fast tokenizer this is the `tokenizers` library's DecodeStream (it buffers a token that
ends inside a UTF-8 character until the character completes). Otherwise the prefix-offset method
vLLM uses: decode a short window of recent tokens, and emit what it adds past the previous window.
Stop strings are searched in the text not yet sent only, which a holdback keeps short.
"""

from __future__ import annotations

from typing import Any


class Detokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream: Any = None
        if self._backend is not None:
            try:
                from tokenizers.decoders import DecodeStream

                self._stream = DecodeStream(skip_special_tokens=True)
            except ImportError:  # an older tokenizers: the generic method below
                self._stream = None
        self._ids: list[int] = []
        self._prefix = 0   # start of the window the previous text came from
        self._read = 0     # where the new tokens start

    def step(self, token: int) -> str:
        """The text this token adds (may be empty: half a character, a special token)."""
        if self._stream is not None:
            return self._stream.step(self._backend, token) or ""
        return self._prefix_offset_step(token)

    def _prefix_offset_step(self, token: int) -> str:
        self._ids.append(token)
        decode = self.tokenizer.decode
        before = decode(self._ids[self._prefix:self._read], skip_special_tokens=True)
        after = decode(self._ids[self._prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""


class StopMatcher:
    """Finds stop strings in streamed text; returns what is safe to send now."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""  # decoded, not yet sent: the only text searched

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text to send now, whether a stop string was hit). After a hit, stop feeding."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[:min(hits)], ""
            return out, True
        keep = self._holdback()
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _holdback(self) -> int:
        """Characters at the end that could begin a stop string (at most max(len(stop)) - 1)."""
        text = self.pending
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The token ids that end a sequence: the generation config's, the model config's and the
    tokenizer's."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)

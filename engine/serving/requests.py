"""OpenAI request bodies -> (prompt token ids, sampling parameters), and the response shapes.

Validation errors become ApiError (400 in OpenAI's error shape) naming the offending field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.config import ServeSettings
from engine.errors import BadInput, brief
from engine.serving.work import SamplingParams, TokenEvent
from engine.validate import MAX_INT64, parse_int

MAX_STOP_SEQUENCES = 4
DEFAULT_MAX_TOKENS = 16
# torch seeds a generator from a signed or unsigned 64-bit integer; beyond, it raises (and used
# to take the whole batch down with it). OpenAI documents seed as an integer; keep it int64.
MIN_SEED, MAX_SEED = -MAX_INT64 - 1, MAX_INT64


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error")


def sampling_params(body: dict[str, Any], settings: ServeSettings,
                    default_max_tokens: int = DEFAULT_MAX_TOKENS) -> SamplingParams:
    """Every field is checked for its JSON type and range here, before anything is queued: a
    value the scheduler or torch would choke on (a seed past 64 bits, NaN) is the client's 400,
    never a failed batch."""
    check_common(body)
    limit = settings.max_tokens_limit
    for key in ("max_tokens", "max_completion_tokens"):
        _integer(body, key, 1, limit, f"{key} must be an integer from 1 to {limit}")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise _invalid("top_p must be greater than 0")
    for key in ("presence_penalty", "frequency_penalty"):  # accepted, not applied
        _number(body, key, 0.0, -2.0, 2.0)
    seed = _integer(body, "seed", MIN_SEED, MAX_SEED,
                    f"seed must be an integer from {MIN_SEED} to {MAX_SEED}")
    for key in ("n", "best_of"):
        if _integer(body, key, 1, 1, f"only {key}=1 is supported") not in (None, 1):
            raise _invalid(f"only {key}=1 is supported")
    ignore_eos = _flag(body, "ignore_eos")
    return SamplingParams(max_tokens, temperature, top_p, _stops(body.get("stop")), seed, ignore_eos)


def check_common(body: dict[str, Any]) -> None:
    """Fields the server does not use but a client may send: the right type, or 400."""
    for key in ("model", "user"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _invalid(f"{key} must be a string")
    stream_flags(body)


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage), checked: stream a boolean, stream_options an object."""
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise _invalid("stream_options must be an object")
    return stream, _flag(options, "include_usage", "stream_options.include_usage")


def parse_completion(body: dict[str, Any], tokenizer: Any,
                     settings: ServeSettings) -> tuple[list[int], SamplingParams]:
    """Blocking (tokenizes): the server calls it in a worker thread."""
    params = sampling_params(body, settings)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        if any(t < 0 or t >= len(tokenizer) for t in prompt):
            raise _invalid("prompt contains token ids outside the vocabulary")
        return list(prompt), params
    if not isinstance(prompt, str) or not prompt:
        raise _invalid("prompt must be a non-empty string (or one string, or a list of token ids)")
    return _encode(tokenizer, prompt, "prompt"), params


def parse_chat(body: dict[str, Any], tokenizer: Any,
               settings: ServeSettings) -> tuple[list[int], SamplingParams]:
    """Blocking (renders the template, tokenizes): the server calls it in a worker thread."""
    params = sampling_params(body, settings, default_max_tokens=256)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list")
    cleaned = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _invalid(f"messages[{index}] must be an object with a role")
        _text(message["role"], f"messages[{index}].role")
        cleaned.append({"role": message["role"], "content": _content_text(message.get("content"), index)})
    if not getattr(tokenizer, "chat_template", None):
        raise _invalid("the served model has no chat template; use /v1/completions")
    try:
        text = tokenizer.apply_chat_template(cleaned, add_generation_prompt=True, tokenize=False)
    except Exception as error:  # noqa: BLE001 - templates raise what they like (jinja errors)
        raise _invalid(f"the model's chat template refused these messages: {brief(error)}") from None
    return _encode(tokenizer, text, "messages", add_special_tokens=False), params


def _encode(tokenizer: Any, text: str, what: str, **options: Any) -> list[int]:
    try:
        return tokenizer(text, **options).input_ids
    except Exception as error:  # noqa: BLE001 - the tokenizer's own refusal is the client's 400
        raise _invalid(f"{what} could not be tokenized: {brief(error)}") from None


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return _text(content, f"messages[{index}].content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = [part.get("text") for part in content
                 if isinstance(part, dict) and part.get("type") == "text"]
        texts = [part for part in parts if isinstance(part, str)]
        if parts and len(texts) == len(parts):
            return _text("".join(texts), f"messages[{index}].content")
    raise _invalid(f"messages[{index}].content must be text")


def _text(value: str, what: str) -> str:
    """A string that is real text: a lone surrogate (JSON's \ud800) is not, and breaks the
    tokenizer. The server refuses such bodies earlier too; this guards direct callers."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(f"{what} is not valid Unicode text (a lone surrogate)") from None
    return value


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if (not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in stop)):
        raise _invalid(f"stop must be a string or a list of up to {MAX_STOP_SEQUENCES} strings")
    return tuple(_text(s, "stop") for s in stop)


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not low <= value <= high):
        raise _invalid(f"{key} must be a number from {low} to {high}")
    return float(value)


def _integer(body: dict[str, Any], key: str, low: int, high: int, message: str) -> int | None:
    """A JSON integer (not a bool, not 2.0, not "2") in [low, high], or None when absent."""
    value = body.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise _invalid(message)
    try:
        return parse_int(key, value, low, high)
    except BadInput:
        raise _invalid(message) from None


def _flag(body: dict[str, Any], key: str, name: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(f"{name or key} must be true or false")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CompletionJob:
    """Builds the response objects of one request, completions or chat."""

    chat: bool
    version_ref: str
    created: int
    request_id: str

    def _envelope(self, chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.request_id, "object": kind + (".chunk" if chunk and self.chat else ""),
                "created": self.created, "model": self.version_ref}

    def full_response(self, text: str, end: TokenEvent) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": end.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": end.finish_reason}
        return {**self._envelope(False), "choices": [choice], "usage": _usage(end)}

    def chunk(self, text: str | None, finish_reason: str | None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope(True), "choices": [choice]}

    def usage_chunk(self, end: TokenEvent) -> dict[str, Any]:
        return {**self._envelope(True), "choices": [], "usage": _usage(end)}


def _usage(end: TokenEvent) -> dict[str, int]:
    return {"prompt_tokens": end.prompt_tokens, "completion_tokens": end.completion_tokens,
            "total_tokens": end.prompt_tokens + end.completion_tokens}

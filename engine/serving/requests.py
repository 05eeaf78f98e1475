"""OpenAI request bodies -> (prompt token ids, sampling parameters), and the response shapes.

Validation errors become ApiError (400 in OpenAI's error shape) naming the offending field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config import ServeSettings
from engine.serving.scheduler import SamplingParams, TokenEvent

MAX_STOP_SEQUENCES = 4
DEFAULT_MAX_TOKENS = 16


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error")


def sampling_params(body: dict[str, Any], settings: ServeSettings,
                    default_max_tokens: int = DEFAULT_MAX_TOKENS) -> SamplingParams:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    if not _is_int(max_tokens) or not 1 <= max_tokens <= settings.max_tokens_limit:
        raise _invalid(f"max_tokens must be an integer from 1 to {settings.max_tokens_limit}")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise _invalid("top_p must be greater than 0")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _invalid("seed must be an integer")
    n = body.get("n", 1)
    if n != 1:
        raise _invalid("only n=1 is supported")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise _invalid("ignore_eos must be true or false")
    return SamplingParams(max_tokens, temperature, top_p, _stops(body.get("stop")), seed, ignore_eos)


def parse_completion(body: dict[str, Any], tokenizer: Any,
                     settings: ServeSettings) -> tuple[list[int], SamplingParams]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        if any(t < 0 or t >= len(tokenizer) for t in prompt):
            raise _invalid("prompt contains token ids outside the vocabulary")
        return list(prompt), sampling_params(body, settings)
    if not isinstance(prompt, str) or not prompt:
        raise _invalid("prompt must be a non-empty string (or one string, or a list of token ids)")
    return tokenizer(prompt).input_ids, sampling_params(body, settings)


def parse_chat(body: dict[str, Any], tokenizer: Any,
               settings: ServeSettings) -> tuple[list[int], SamplingParams]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list")
    cleaned = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _invalid(f"messages[{index}] must be an object with a role")
        cleaned.append({"role": message["role"], "content": _content_text(message.get("content"), index)})
    if not getattr(tokenizer, "chat_template", None):
        raise _invalid("the served model has no chat template; use /v1/completions")
    text = tokenizer.apply_chat_template(cleaned, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return ids, sampling_params(body, settings, default_max_tokens=256)


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = [part.get("text") for part in content
                 if isinstance(part, dict) and part.get("type") == "text"]
        if parts and all(isinstance(part, str) for part in parts):
            return "".join(parts)
    raise _invalid(f"messages[{index}].content must be text")


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if (not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in stop)):
        raise _invalid(f"stop must be a string or a list of up to {MAX_STOP_SEQUENCES} strings")
    return tuple(stop)


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _invalid(f"{key} must be a number from {low} to {high}")
    return float(value)


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

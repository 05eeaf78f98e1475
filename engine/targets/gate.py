"""Health gates over HTTP: a health URL that must answer 200, and prompts that must produce
non-empty text within an optional latency bound (OpenAI-compatible /v1/completions)."""

from __future__ import annotations

import time
from typing import Any

from engine.config import GateSettings
from engine.targets.base import GateCheck, GateReport


def probe_health(client: Any, url: str, settle_s: float, timeout_s: float) -> GateCheck:
    """Poll url until it answers 200 or settle time plus timeout runs out."""
    import httpx

    deadline = time.monotonic() + max(settle_s, 0.0) + timeout_s
    last = GateCheck(url, False, detail="no answer")
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            response = client.get(url, timeout=timeout_s)
            last = GateCheck(url, response.status_code == 200, response.status_code,
                             time.monotonic() - started, "" if response.status_code == 200 else "not healthy")
            if last.ok:
                return last
        except httpx.HTTPError as error:
            last = GateCheck(url, False, None, None, f"{type(error).__name__}")
        time.sleep(0.2)
    return last


def probe_prompts(client: Any, base_url: str, model_name: str, gate: GateSettings,
                  timeout_s: float) -> tuple[GateCheck, ...]:
    import httpx

    checks = []
    for prompt in gate.prompts:
        started = time.monotonic()
        try:
            response = client.post(f"{base_url}/v1/completions", timeout=timeout_s, json={
                "model": model_name, "prompt": prompt, "max_tokens": gate.max_tokens,
                "temperature": 0})
        except httpx.HTTPError as error:
            checks.append(GateCheck(prompt, False, None, None, type(error).__name__))
            break
        latency = time.monotonic() - started
        checks.append(_judge(prompt, response, latency, gate.max_latency_s))
        if not checks[-1].ok:
            break
    return tuple(checks)


def _judge(prompt: str, response: Any, latency_s: float, bound_s: float | None) -> GateCheck:
    if response.status_code != 200:
        return GateCheck(prompt, False, response.status_code, latency_s, "error response")
    try:
        text = response.json()["choices"][0]["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        return GateCheck(prompt, False, 200, latency_s, "malformed completion")
    detail = judge_text(text, latency_s, bound_s)
    return GateCheck(prompt, not detail, 200, latency_s, detail)


def judge_text(text: str, latency_s: float, bound_s: float | None) -> str:
    """Why a gate prompt's answer fails ("" when it passes): empty, or slower than the bound."""
    if not text.strip():
        return "empty completion"
    if bound_s is not None and latency_s > bound_s:
        return f"took {latency_s:.3f}s, slower than the {bound_s}s bound"
    return ""


def combine(*groups: tuple[GateCheck, ...] | GateCheck | None) -> GateReport:
    checks: list[GateCheck] = []
    for group in groups:
        if group is None:
            continue
        checks.extend(group if isinstance(group, tuple) else (group,))
    return GateReport(all(check.ok for check in checks), tuple(checks))

"""Health gates over HTTP: a health URL that must answer 200, and prompts that must produce
non-empty text within an optional latency bound (OpenAI-compatible /v1/completions)."""

from __future__ import annotations

import time
from typing import Any

from engine.config import GateSettings
from engine.serving.probes import judge_text
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


VERSION_HEADER = "X-Modeldeck-Version"  # what a modeldeck server says answered a request


def probe_prompts(client: Any, base_url: str, model_name: str, gate: GateSettings,
                  timeout_s: float, expect_version: str | None = None) -> tuple[GateCheck, ...]:
    """Each prompt must answer non-empty text within the bound; with expect_version, from that
    version (a modeldeck server names it in a header), not from the one it replaced."""
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
        answered_by = response.headers.get(VERSION_HEADER)
        if checks[-1].ok and expect_version and answered_by != expect_version:
            checks[-1] = GateCheck(prompt, False, response.status_code, latency,
                                   f"answered by {answered_by}, expected {expect_version}")
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


def combine(*groups: tuple[GateCheck, ...] | GateCheck | None) -> GateReport:
    """One report from the probes that ran. A gate that ran none fails: passing a version on
    no evidence is what the gate exists to prevent."""
    checks: list[GateCheck] = []
    for group in groups:
        if group is None:
            continue
        checks.extend(group if isinstance(group, tuple) else (group,))
    if not checks:
        return GateReport(False, (GateCheck("gate", False, detail="no check ran (configure a "
                                            "health_url or gate prompts)"),))
    return GateReport(all(check.ok for check in checks), tuple(checks))


# ---- does the target serve the version we just deployed? -------------------------------------

# Headers servers commonly use to say which model version answered (ours is the second).
DEFAULT_VERSION_HEADERS = ("X-Model-Version", "X-Modeldeck-Version")
VERSION_FIELDS = ("version", "model_version")


def version_evidence(response: Any, header: str | None) -> list[str]:
    """What an answer says it serves: the configured header only when one is named; otherwise
    the usual headers, a JSON body's version fields and /v1/models ids, or a plain-text body."""
    if header:
        return [response.headers[header]] if header in response.headers else []
    found = [response.headers[name] for name in DEFAULT_VERSION_HEADERS if name in response.headers]
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return found + ([text[:200]] if text else [])
    if isinstance(body, dict):
        found += [str(body[name]) for name in VERSION_FIELDS if body.get(name) is not None]
        data = body.get("data")
        found += [str(entry["id"]) for entry in data if isinstance(entry, dict) and "id" in entry] \
            if isinstance(data, list) else []
    return found


def names_version(value: str, model: str, version: int) -> bool:
    """`3`, or `tiny@3` standing alone (so tiny@3 does not match tiny@31 or other-tiny@3)."""
    import re

    value = value.strip()
    if value == str(version):
        return True
    return re.search(rf"(?<![\w.@-]){re.escape(f'{model}@{version}')}(?![\w.])", value) is not None


def probe_version(client: Any, url: str, model: str, version: int, header: str | None,
                  settle_s: float, timeout_s: float) -> GateCheck:
    """Poll url until its answer names model@version; a rolling restart may answer with the old
    version for a while, so the check waits (settle time plus timeout) before failing."""
    import httpx

    expected = f"{model}@{version}"
    deadline = time.monotonic() + max(settle_s, 0.0) + timeout_s
    last = GateCheck(f"version {url}", False, detail="no answer")
    while True:
        started = time.monotonic()
        try:
            response = client.get(url, timeout=timeout_s)
            seen = version_evidence(response, header)
            ok = response.status_code == 200 and any(names_version(v, model, version) for v in seen)
            if ok:
                detail = ""
            elif response.status_code != 200:
                detail = "not healthy"
            elif seen:
                detail = f"serving {', '.join(seen)[:120]}, expected {expected}"
            else:
                where = f"header {header}" if header else "answer"
                detail = (f"its {where} names no version, cannot confirm {expected} serves "
                          "(set version_header or version_url, or version_check = false)")
            last = GateCheck(f"version {url}", ok, response.status_code,
                             time.monotonic() - started, detail)
        except httpx.HTTPError as error:
            last = GateCheck(f"version {url}", False, None, None, type(error).__name__)
        if last.ok or time.monotonic() >= deadline:
            return last
        time.sleep(0.2)

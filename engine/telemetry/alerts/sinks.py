"""Where an announced alert goes besides the log: a webhook (JSON POST) and a command hook.

Both run on background threads fed by bounded queues, so a webhook that is down or slow, or a
command that hangs, never delays the sampling tick that announced the alert: the tick only puts
the alert on a queue. One thread per kind keeps a rule's fire before its resolve.
- webhook: httpx POST of the record, `webhook_timeout_s` per try, `webhook_retries` more tries
  with doubling pauses; the bearer token (webhook_secret_env / webhook_secret_file) is read
  when sent and appears in nothing logged or shown. Failure reasons name the scheme, host and
  port only (a token may hide in a URL's path or query).
- command: the argument list (never a shell), the alert in MODELDECK_ALERT_* variables,
  killed after `command_timeout_s`.
A sink that gives up is recorded in the alert log as `undelivered`.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine.config import SecretSource
from engine.errors import BadInput

QUEUE_LIMIT = 1000  # deliveries waiting per sink kind; beyond it the newest is dropped, counted
FIRST_RETRY_PAUSE_S = 0.5

Failure = Callable[[str, str, dict[str, Any]], None]  # (sink, reason, record) -> None


class DeliveryQueue:
    """A daemon thread running deliveries in order."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.Queue[Callable[[], object] | None] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name=f"modeldeck-alert-{name}",
                                       daemon=True)
        self.thread.start()

    def put(self, job: Callable[[], object]) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a sink's own bug must not end the thread; failures are logged by it
                pass

    def close(self, wait_s: float) -> None:
        """Let queued deliveries finish for at most `wait_s` seconds (the thread is a daemon:
        what is left dies with the process)."""
        try:
            self.jobs.put(None, timeout=max(wait_s, 0.01))
        except queue.Full:
            return
        self.thread.join(wait_s)


def shown_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def post_webhook(rule: Any, record: dict[str, Any], failed: Failure,
                 sleep: Callable[[float], None] = time.sleep) -> bool:
    import httpx

    headers = {"Content-Type": "application/json", "User-Agent": "modeldeck-alerts"}
    try:
        secret = webhook_secret(rule)
    except BadInput as error:  # an unreadable secret file: said in the log, never raised here
        failed("webhook", f"{shown_url(rule.webhook)}: {error}", record)
        return False
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    body = json.dumps(record, default=str).encode()
    reason = "not sent"
    for attempt in range(rule.webhook_retries + 1):
        if attempt:
            sleep(FIRST_RETRY_PAUSE_S * 2 ** (attempt - 1))
        try:
            answer = httpx.post(rule.webhook, content=body, headers=headers,
                                timeout=rule.webhook_timeout_s)
        except httpx.HTTPError as error:
            reason = _http_reason(error)
            continue
        if answer.status_code < 300:
            return True
        reason = f"http {answer.status_code}"
        if answer.status_code < 500 and answer.status_code != 429:
            break  # the receiver refuses this request: trying again will not change that
    failed("webhook", f"{shown_url(rule.webhook)}: {reason} after {attempt + 1} tries", record)
    return False


def webhook_secret(rule: Any) -> str | None:
    """The bearer token, from deck.toml's variable or file as every secret is (SecretSource),
    read when sent and never kept."""
    return SecretSource(api_key_env=rule.webhook_secret_env,
                        api_key_file=rule.webhook_secret_file).resolve_secret()


def _http_reason(error: Exception) -> str:
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "refused" if "refused" in str(error).lower() else "cannot connect"
    return type(error).__name__


def alert_environment(record: dict[str, Any]) -> dict[str, str]:
    """The alert as MODELDECK_ALERT_* variables (and the whole record as JSON)."""
    names = ("state", "rule", "subject", "kind", "severity", "message", "at")
    variables = {f"MODELDECK_ALERT_{name.upper()}": str(record.get(name) or "") for name in names}
    variables["MODELDECK_ALERT_JSON"] = json.dumps(record, default=str)
    return variables


def run_command(rule: Any, record: dict[str, Any], failed: Failure) -> bool:
    try:
        completed = subprocess.run(list(rule.command), env={**os.environ, **alert_environment(record)},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, timeout=rule.command_timeout_s,
                                   start_new_session=True)
    except subprocess.TimeoutExpired:
        failed("command", f"{rule.command[0]}: still running after {rule.command_timeout_s:g} s; "
                          "killed", record)
        return False
    except OSError as error:
        failed("command", f"{rule.command[0]}: {error.strerror or error}", record)
        return False
    if completed.returncode != 0:
        last = (completed.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        failed("command", f"{rule.command[0]}: exit {completed.returncode}"
                          f"{': ' + last[0][:200] if last else ''}", record)
        return False
    return True


class Sinks:
    """The webhook and command queues of one evaluating process."""

    def __init__(self, failed: Failure) -> None:
        self.failed = failed
        self.webhooks = DeliveryQueue("webhook")
        self.commands = DeliveryQueue("command")

    def deliver(self, rule: Any, record: dict[str, Any]) -> None:
        if rule.webhook:
            self.webhooks.put(lambda: post_webhook(rule, record, self.failed))
        if rule.command:
            self.commands.put(lambda: run_command(rule, record, self.failed))

    def close(self, wait_s: float = 5.0) -> None:
        deadline = time.monotonic() + wait_s
        self.webhooks.close(wait_s)
        self.commands.close(max(0.0, deadline - time.monotonic()))

"""Compression jobs: quantize, prune or distill a version into a new one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.deck import Deck
from engine.registry.records import VersionInfo


@dataclass(frozen=True)
class CompressRequest:
    reference: str
    method: str | None = None  # None: deck.toml [compress] method
    options: dict[str, Any] = field(default_factory=dict)  # CompressSpec field names
    wait: bool = False
    device: str | None = None  # None: deck.toml [serve] device (measure where it will serve)


@dataclass(frozen=True)
class CompressResult:
    job: Any  # engine.jobs.JobInfo
    version: VersionInfo | None  # set once the job finished (always with wait=True)
    report: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job.to_dict(), "version": self.version.to_dict() if self.version else None,
                "report": self.report}


def compress(deck: Deck, request: CompressRequest, on_event: Any = None) -> CompressResult:
    """Start a compression job (validated first: nothing is written on bad input); with wait,
    follow its events (passed to on_event) until the new version is registered."""
    from dataclasses import replace

    from engine import jobs
    from engine.compression.spec import parent_layer_count, spec_for
    from engine.errors import ActionFailed
    from engine.validate import parse_device

    parent = deck.registry.resolve(request.reference)
    defaults = deck.config.compress  # deck.toml [compress]; the request's own options win
    options = {"max_ppl_increase": defaults.max_ppl_increase,
               **({"eval_file": str(defaults.eval_file)} if defaults.eval_file else {}),
               **request.options}
    config = next((deck.registry.blobs.path_of(f.sha256) for f in parent.files
                   if f.name == "config.json"), None)
    layers = parent_layer_count(config)
    spec = spec_for(parent.ref, parent.kind, parent.architecture,
                    request.method or defaults.method, options, layers)
    # where the result will serve is where it is compressed and measured; a device this machine
    # lacks is refused here, before the job exists
    device = parse_device(request.device or deck.config.serve.device)
    spec = replace(spec, device=device)
    job = jobs.start_job(deck, "compress", spec.to_dict(), device=device)
    if not request.wait:
        return CompressResult(job, None, None)
    for event in jobs.follow_events(deck, job.id, poll_s=0.2):
        if on_event is not None:
            on_event(event)
    job = jobs.get_job(deck, job.id)
    if job.state != "finished" or not job.result:
        raise ActionFailed(f"compress job {job.id} {job.state}: {job.reason}")
    return CompressResult(job, deck.registry.resolve(job.result["version"]), job.result["report"])

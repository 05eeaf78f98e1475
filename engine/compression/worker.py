"""The `compress` job kind: engine.jobs runs `run_compress` in a detached worker process."""

from __future__ import annotations

from typing import Any


def run_compress(context) -> dict[str, Any]:
    from engine.compression.runner import compress_version
    from engine.compression.spec import CompressSpec

    spec = CompressSpec.from_dict(context.spec)
    deck = context.deck()
    try:
        # context.device: a cuda:N job sees only GPU N (engine.jobs pins it), as "cuda"
        device = context.device if context.requested_device else None
        return compress_version(deck, spec, context.checkpoints, context.emit, context.cancelled,
                                device, context.take_requests, context.tensorboard)
    finally:
        deck.close()

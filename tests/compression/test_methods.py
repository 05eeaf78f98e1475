"""Each method, run in-process on the tiny model, registers the next version with lineage and an
honest report (the numbers are measured, so the tests check their consistency, not values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.compression.runner import compress_version
from engine.compression.spec import spec_for

REPORT_METRICS = {"perplexity", "decode_tokens_per_s", "ttft_s", "size_bytes", "peak_memory_bytes",
                  "weights_memory_bytes", "param_count", "linear_weight_bytes"}


def run(deck, tmp_path: Path, method: str, **options):
    events: list[tuple[str, dict]] = []
    options = {"decode_tokens": 8, **options}  # short decode runs keep the suite fast
    spec = spec_for("tiny@1", "model", "LlamaForCausalLM", method, options)
    outcome = compress_version(deck, spec, tmp_path / "work",
                               lambda kind, **fields: events.append((kind, fields)))
    return deck.registry.resolve(outcome["version"]), outcome["report"], events


def check_common(version, report, method: str) -> None:
    assert (version.version, version.parent_version, version.produced_by) == (2, 1, "compress")
    assert version.lineage["method"] == method and version.lineage["parent"] == "tiny@1"
    assert version.weight_format == "safetensors"
    assert not [f.name for f in version.files if f.name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert set(report["parent"]) == REPORT_METRICS == set(report["result"])
    assert version.metrics["compression"]["result"] == report["result"]
    assert version.param_count == report["result"]["param_count"]
    parent, result = report["parent"], report["result"]
    expected_change = 100 * (result["perplexity"] - parent["perplexity"]) / parent["perplexity"]
    assert report["change"]["perplexity_pct"] == pytest.approx(expected_change, abs=0.01)
    assert report["change"]["size_ratio"] == pytest.approx(result["size_bytes"] / parent["size_bytes"], rel=1e-3)


@pytest.mark.parametrize("method", ["bf16", "fp16"])
def test_half_precision_halves_the_weights(tiny_deck, tmp_path, method):
    version, report, _ = run(tiny_deck, tmp_path, method)
    check_common(version, report, method)
    assert report["change"]["linear_weight_ratio"] == 0.5
    assert abs(report["change"]["perplexity_pct"]) < 1.0
    assert version.status == "ready" and report["verdict"] == "accepted"


def test_int8_stores_int8_weights_with_a_marker(tiny_deck, tmp_path):
    version, report, _ = run(tiny_deck, tmp_path, "int8")
    check_common(version, report, "int8")
    directory = tiny_deck.registry.materialize(version)
    config = json.loads((directory / "config.json").read_text())
    marker = config["modeldeck_compression"]
    assert marker["format"] == "int8-weight-only-per-channel" and marker["linear_modules"]
    header = _safetensors_header(directory / "model.safetensors")
    quantized = {name: info for name, info in header.items() if name.endswith(".qweight")}
    assert quantized and all(info["dtype"] == "I8" for info in quantized.values())
    assert report["change"]["linear_weight_ratio"] <= 0.3
    assert abs(report["change"]["perplexity_pct"]) < 3.0


def test_int8_keep_leaves_named_modules_unquantized(tiny_deck, tmp_path):
    version, report, _ = run(tiny_deck, tmp_path, "int8", keep=["down_proj"])
    marker = json.loads((tiny_deck.registry.materialize(version) / "config.json").read_text())[
        "modeldeck_compression"]
    assert marker["linear_modules"] and not [m for m in marker["linear_modules"] if "down_proj" in m]
    assert version.lineage["settings"] == {"keep": ["down_proj"]}


def test_unstructured_prune_with_recovery_streams_loss(tiny_deck, tmp_path):
    version, report, events = run(tiny_deck, tmp_path, "prune", sparsity=0.5, recover_steps=3)
    check_common(version, report, "prune")
    progress = [fields for kind, fields in events if kind == "progress"]
    assert [p["step"] for p in progress] == [1, 2, 3] and all(p["phase"] == "recover" for p in progress)
    assert version.lineage["settings"]["sparsity"] == 0.5
    assert report["result"]["param_count"] == report["parent"]["param_count"]  # stored dense
    state = _load_state(tiny_deck.registry.materialize(version))
    down = state["model.layers.0.mlp.down_proj.weight"]
    assert (down == 0).float().mean().item() >= 0.49  # recovery kept the pruned weights at zero


@pytest.mark.parametrize("structured", ["mlp", "heads"])
def test_structured_prune_really_shrinks_the_model(tiny_deck, tmp_path, structured):
    version, report, _ = run(tiny_deck, tmp_path, "prune", sparsity=0.5, structured=structured)
    check_common(version, report, "prune")
    assert report["result"]["param_count"] < report["parent"]["param_count"]
    assert report["result"]["size_bytes"] < report["parent"]["size_bytes"]
    config = json.loads((tiny_deck.registry.materialize(version) / "config.json").read_text())
    if structured == "mlp":
        assert config["intermediate_size"] == 64
    else:
        assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 1)
    assert report["notes"]["removed"] == {"mlp": "mlp-channels", "heads": "attention-heads"}[structured]


def test_distill_drops_layers_and_streams_loss(tiny_deck, tmp_path):
    version, report, events = run(tiny_deck, tmp_path, "distill", steps=4, student_layers=1)
    check_common(version, report, "distill")
    losses = [fields["loss"] for kind, fields in events if kind == "progress"]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    config = json.loads((tiny_deck.registry.materialize(version) / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert version.lineage["settings"]["student_layers"] == 1


def test_too_much_quality_loss_is_rejected_and_deploy_refuses_it(tiny_deck, tmp_path):
    from engine import actions
    from engine.errors import BadInput

    version, report, _ = run(tiny_deck, tmp_path, "prune", sparsity=0.8, max_ppl_increase=5.0)
    assert report["change"]["perplexity_pct"] > 5.0
    assert (report["verdict"], version.status) == ("rejected", "rejected")
    with pytest.raises(BadInput, match="rejected"):
        actions.plan_deploy(tiny_deck, actions.DeployRequest(version.ref))
    plan = actions.plan_deploy(tiny_deck, actions.DeployRequest(version.ref, force=True))
    assert plan.chosen.ref == version.ref


def _safetensors_header(path: Path) -> dict:
    import struct

    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(size))


def _load_state(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_training_phases_use_the_trainer_stack(tiny_deck, tmp_path):
    """Distillation on the fine-tuning stack: a stop request ends it after the current step
    (saved there, then measured and registered as usual), and TensorBoard has its losses."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events: list[tuple[str, dict]] = []
    requests = iter([set(), {"stop"}])  # taken after step 1, then after step 2: stop
    spec = spec_for("tiny@1", "model", "LlamaForCausalLM", "distill",
                    {"steps": 50, "student_layers": 1, "decode_tokens": 8})
    outcome = compress_version(tiny_deck, spec, tmp_path / "work",
                               lambda kind, **fields: events.append((kind, fields)),
                               take_requests=lambda: next(requests, set()))
    progress = [fields for kind, fields in events if kind == "progress"]
    assert [p["step"] for p in progress] == [1, 2] and outcome["version"] == "tiny@2"
    assert all(p["phase"] == "distill" and p["step_time_s"] > 0 for p in progress[1:])
    assert (tmp_path / "work" / "distill" / "checkpoint-2" / "model.safetensors").exists()
    board = EventAccumulator(str(tmp_path / "work" / "tensorboard"))
    board.Reload()
    losses = {s.step: s.value for s in board.Scalars("train/loss")}
    assert losses == pytest.approx({p["step"]: p["loss"] for p in progress}, rel=1e-5)

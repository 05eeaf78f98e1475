"""The batched, padded, chunked, join-and-leave path computes what a lone unpadded forward
computes: per-step logits compared at fp32 tolerances, on a *trained* tiny model (on a random
one, a broken mask or broken positions still give the same greedy text)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest

from engine.serving.scheduler import BatchScheduler, SamplingParams, TokenEvent, generate_blocking
from tests.serving.trained_tiny import build_trained_tiny


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = build_trained_tiny(tmp_path_factory.mktemp("trained") / "tiny-llama")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(directory)


class LogitsLog:
    """The scheduler's logits hook: every next-token distribution, per sequence, in order."""

    def __init__(self) -> None:
        self.by_sequence: dict[int, list] = {}
        self.kinds: list[str] = []

    def __call__(self, kind: str, sequences, logits) -> None:
        self.kinds.append(kind)
        for sequence, row in zip(sequences, logits):
            self.by_sequence.setdefault(sequence.sequence_id, []).append(row.clone())


def wait_tokens(events: queue.Queue, count: int) -> None:
    """Block until `count` text events arrived (the sequence is decoding), putting none back."""
    for _ in range(count):
        assert events.get(timeout=60).finish_reason is None


def drain(events: queue.Queue) -> TokenEvent:
    while (event := events.get(timeout=120)).finish_reason is None:
        pass
    return event


def unbatched_logits(model, sequence):
    """Each generated token's distribution from one plain forward over prompt + generated."""
    import torch

    ids = sequence.prompt_ids + sequence.generated_ids[:-1]
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0]
    return logits[len(sequence.prompt_ids) - 1:]


# (step, dtype, rtol, atol): fp32 noise from a different reduction order is ~1e-5 and bf16's is
# a few hundredths on these logits; a mask or position bug moves them by ~1 (seen: see the note).
# On a CPU with AVX512-BF16, "fused" bf16 and int8 run modeldeck's own kernels
# (engine/serving/cpukernels.py) and "fused-onednn" the oneDNN GEMMs they replace; int8 is the
# model quantized by the int8 format, whose own forward is torch's `_weight_int8pack_mm`; on a
# CPU with AVX2 only, "fused" bf16 and int8 run modeldeck's AVX2 GEMMs, "fused-onednn" bf16 runs
# oneDNN or plain `F.linear` and "fused-torch" int8 torch's int8 GEMM.
# "eager-legacy": the model's forward takes its cache as `past_key_values`, as transformers
# before 5.2x names it (5.17 on the GPU image this was seen failing on).
PATHS = [("fused", "float32", 1e-4, 1e-4), ("eager", "float32", 1e-4, 1e-4),
         ("eager-legacy", "float32", 1e-4, 1e-4),
         ("fused", "bfloat16", 3e-2, 6e-2), ("fused-onednn", "bfloat16", 3e-2, 6e-2),
         ("fused", "int8", 3e-2, 6e-2), ("fused-torch", "int8", 3e-2, 6e-2),
         ("fused", "cuda-bfloat16", 3e-2, 6e-2),
         ("fused", "cuda-int8", 3e-2, 6e-2),
         ("fused", "cuda-float32", 1e-3, 1e-3)]  # CUDA: TF32-free fp32 still reorders sums


def legacy_forward(forward):
    """The forward as transformers 5.17 spells it: the cache comes as `past_key_values`; a
    `cache` keyword falls into **kwargs and is ignored, as that release ignores it. (Under 5.17
    itself the wrapped forward is already that one: the cache goes on under its own name.)"""
    import inspect

    own_name = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"

    def forward_with_past_key_values(input_ids=None, attention_mask=None, position_ids=None,
                                     past_key_values=None, use_cache=None, logits_to_keep=0,
                                     **kwargs):
        kwargs.pop("cache", None)
        return forward(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids, use_cache=use_cache,
                       logits_to_keep=logits_to_keep, **{own_name: past_key_values}, **kwargs)

    return forward_with_past_key_values


def _onednn_bf16() -> bool:
    import torch

    from engine.serving.linears import _onednn_usable

    return _onednn_usable(torch.bfloat16)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_one_wave(scheduler, tokenizer, plans):
    """Submit (prompt text or ids, max_tokens) greedy requests as one wave (admitted in this
    order, so into slots 0, 1, ...), wait for all to finish, close the scheduler."""
    try:
        queues = [queue.Queue() for _ in plans]
        with scheduler._lock:
            sequences = [scheduler.submit(p if isinstance(p, list) else tokenizer(p).input_ids,
                                          SamplingParams(max_tokens=n, temperature=0,
                                                         ignore_eos=True), q.put)
                         for (p, n), q in zip(plans, queues)]
        for events in queues:
            assert drain(events).finish_reason == "length"
    finally:
        assert scheduler.close(timeout=30)
    return sequences


def assert_logits_match(model, log: LogitsLog, sequences, rtol: float = 1e-4,
                        atol: float = 1e-4) -> None:
    """Every token each sequence got came from the logits a lone unpadded forward computes."""
    import torch

    for sequence in sequences:
        captured = torch.stack(log.by_sequence[sequence.sequence_id])
        assert captured.shape[0] == len(sequence.generated_ids)
        torch.testing.assert_close(captured, unbatched_logits(model, sequence), rtol=rtol,
                                   atol=atol, msg=lambda m, s=sequence: f"{s.prompt_ids[:4]}...: {m}")


@pytest.mark.parametrize("path,dtype,rtol,atol", PATHS, ids=[f"{p}-{d}" for p, d, *_ in PATHS])
def test_logits_match_unbatched_forwards_across_joins_leaves_and_chunks(trained, path, dtype,
                                                                        rtol, atol, monkeypatch):
    import copy

    import torch

    from engine.modelio.int8 import quantize_int8
    from engine.serving import cpukernels
    from engine.serving.modelstep import EagerStep

    model, tokenizer = trained
    device, _, dtype = dtype.rpartition("-")
    path, _, kernels = path.partition("-")
    if device == "cuda" and not _has_cuda():
        pytest.skip("no CUDA")
    if dtype == "int8":
        model = copy.deepcopy(model).to(device or "cpu", torch.bfloat16)
        quantize_int8(model)
    elif dtype != "float32" or device:
        model = copy.deepcopy(model).to(device or "cpu", getattr(torch, dtype))
    if kernels in ("onednn", "torch"):  # oneDNN's bf16 or torch's int8 GEMM instead of ours
        for loader in ("kernels", "gemm"):
            monkeypatch.setitem(cpukernels._LOADED, loader, (None, "turned off by the test"))
    if kernels == "legacy":
        model = copy.deepcopy(model)
        model.forward = legacy_forward(model.forward)
    log = LogitsLog()
    # A small prefill chunk: the long prompts below take several chunks, between decode steps.
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=256,
                               prefill_chunk=16)
    if path == "eager":
        scheduler.step = EagerStep(model, "forced by the test")
    assert scheduler.step.path == path  # the tiny model is a Llama: the fused path must take it
    if path == "fused" and not device and dtype != "float32" and cpukernels.load()[0] is not None:
        expected = ("oneDNN prepacked" if kernels == "onednn"
                    else f"modeldeck {'int8' if dtype == 'int8' else 'bf16'} kernels")
        assert expected in scheduler.step.reason
        # modeldeck's decode attention with its kernels, SDPA with oneDNN's GEMMs
        assert ("modeldeck attention" in scheduler.step.reason) == (kernels != "onednn")
    if path == "fused" and not device and dtype != "float32" and cpukernels.load()[0] is None:
        ours = kernels not in ("onednn", "torch") and cpukernels.load_gemm()[0] is not None
        expected = (f"modeldeck {dtype if dtype == 'int8' else 'bf16'} kernels" if ours  # AVX2's
                    else "torch int8 GEMMs" if dtype == "int8"  # the weights stay int8
                    else "oneDNN prepacked" if _onednn_bf16() else "fused GEMMs")
        assert expected in scheduler.step.reason
    scheduler.logits_hook = log
    greedy = dict(temperature=0, ignore_eos=True)
    long_prompt = tokenizer("Once upon a time there was a model that learned to serve many "
                            "requests at once, and it was").input_ids
    try:
        first_events: queue.Queue = queue.Queue()
        first = scheduler.submit(tokenizer("The cat").input_ids,
                                 SamplingParams(max_tokens=40, **greedy), first_events.put)
        wait_tokens(first_events, 3)
        # Two prompts of different lengths join mid-decode; the short-lived one leaves early.
        short_events: queue.Queue = queue.Queue()
        mid_events: queue.Queue = queue.Queue()
        short = scheduler.submit(tokenizer("Hello").input_ids,
                                 SamplingParams(max_tokens=4, **greedy), short_events.put)
        mid = scheduler.submit(tokenizer("A long road to the sea").input_ids,
                               SamplingParams(max_tokens=25, **greedy), mid_events.put)
        drain(short_events)
        # A long prompt (chunked prefill) joins after the leave, into the compacted slots.
        late_events: queue.Queue = queue.Queue()
        late = scheduler.submit(long_prompt, SamplingParams(max_tokens=8, **greedy),
                                late_events.put)
        for events in (late_events, mid_events, first_events):
            assert drain(events).finish_reason == "length"
    finally:
        assert scheduler.close(timeout=30)

    assert short.admitted_step > first.admitted_step and short.finished_step < mid.finished_step
    assert late.admitted_step >= short.finished_step and late.finished_step < first.finished_step
    assert len(long_prompt) > 16 and "prefill" in log.kinds and "decode" in log.kinds
    assert_logits_match(model, log, (first, short, mid, late), rtol, atol)


def test_a_seed_gives_the_same_text_alone_and_in_a_batch(trained):
    model, tokenizer = trained
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=256)
    prompt = tokenizer("Once upon a time").input_ids
    params = SamplingParams(max_tokens=24, temperature=0.9, top_p=0.95, seed=1234, ignore_eos=True)
    try:
        alone = generate_blocking(scheduler, prompt, params)[0]
        results: dict[str, str] = {}

        def ask(name: str, prompt_ids: list[int], sampling: SamplingParams) -> None:
            results[name] = generate_blocking(scheduler, prompt_ids, sampling)[0]

        others = [("other-a", tokenizer("The cat").input_ids, SamplingParams(
                      max_tokens=30, temperature=1.0, seed=5, ignore_eos=True)),
                  ("other-b", tokenizer("Hello").input_ids, SamplingParams(
                      max_tokens=10, temperature=0, ignore_eos=True)),
                  ("again", prompt, params)]
        threads = [threading.Thread(target=ask, args=job) for job in others]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        assert scheduler.close(timeout=30)
    assert results["again"] == alone
    # And the seed matters: a different one gives a different text on this peaked model.
    assert alone != results["other-a"]


def test_requests_arriving_within_one_step_are_prefilled_in_one_forward(trained):
    model, tokenizer = trained
    log = LogitsLog()
    prefills: list[int] = []
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=256)
    scheduler.logits_hook = lambda kind, seqs, logits: (
        prefills.append(len(seqs)) if kind == "prefill" else None, log(kind, seqs, logits))
    greedy = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    try:
        events = [queue.Queue() for _ in range(3)]
        # Holding the scheduler's lock: all three are queued before it can admit any.
        with scheduler._lock:
            sequences = [scheduler.submit(tokenizer(p).input_ids, greedy, e.put)
                         for p, e in zip(("Hello", "The cat sat", "Once upon a time"), events)]
        for queue_ in events:
            assert drain(queue_).finish_reason == "length"
    finally:
        assert scheduler.close(timeout=30)
    assert prefills == [3]
    assert len({s.admitted_step for s in sequences}) == 1


def test_a_prompt_still_prefilling_when_compaction_moves_it_among_decoding_rows(trained):
    """A wave A, S, M, L (slots 0-3): S leaves after two tokens while L's long prompt is still
    being prefilled, so compaction moves L into slot 1, among the decode rows. L's last prefill
    chunk then shares a forward with the decode rows of A and M: its first token and every later
    one must still be what a lone forward computes (seen failing with the decode rows' results
    applied after the prefill's, which marked L as decoding a step early)."""
    import torch

    model, tokenizer = trained
    log = LogitsLog()
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=256,
                               prefill_chunk=16)
    scheduler.logits_hook = log
    long_prompt = tokenizer(" ".join(["the model learned to serve many requests at once"] * 6)
                            ).input_ids
    plans = [("The cat", 12), ("Hello", 2), ("A long road", 12), (long_prompt, 6)]
    sequences = run_one_wave(scheduler, tokenizer, plans)
    short, late = sequences[1], sequences[3]
    assert len(long_prompt) > 4 * 16 and short.finished_step < 4  # S left mid-prefill of L
    assert_logits_match(model, log, sequences)
    assert late.generated_ids and len(late.generated_ids) == 6


def test_a_decoding_row_inside_a_prefilling_wave_keeps_its_own_next_token(trained):
    """A wave A, X, M, B, C (slots 0-4): X leaves after two tokens while B and C are still
    being prefilled, so compaction moves C into slot 1 and the prefill rows span slots 1-3 with
    M (decoding) at slot 2 inside. When B and C finish their prompts, M's next input must stay
    the token M was given (seen failing: the prefill's bookkeeping wrote its own padding row's
    token over every decoding row of its span, so M went on from a token it never produced)."""
    import torch

    model, tokenizer = trained
    log = LogitsLog()
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=5, context_length=256,
                               prefill_chunk=16)
    scheduler.logits_hook = log
    long_a = tokenizer(" ".join(["the model learned to serve many requests"] * 7)).input_ids
    long_b = tokenizer(" ".join(["a long road to the sea and back again"] * 6)).input_ids
    plans = [("The cat", 20), ("Hello", 2), ("A long road", 20), (long_a, 4), (long_b, 4)]
    sequences = run_one_wave(scheduler, tokenizer, plans)
    assert min(len(long_a), len(long_b)) > 3 * 16 and sequences[1].finished_step < 3
    assert_logits_match(model, log, sequences)


def test_a_forward_that_names_no_cache_is_refused_not_served_without_one():
    """A forward with only **kwargs would swallow the cache and attend to the new tokens alone."""
    from engine.serving.modelstep import EagerStep

    class NoCacheModel:
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="takes no KV cache"):
        EagerStep(NoCacheModel(), "forced by the test")

"""Continuous batching at the granularity of one decode step.

One thread owns the model. Each loop iteration it (1) drops sequences whose client went away,
(2) admits every request that arrived since the last iteration (up to the free cache slots),
(3) takes the next piece of every prompt being prefilled (one unpadded part each, at most
`prefill_chunk` tokens in all, so a long prompt stalls running streams for one chunk at a time)
and (4) one decode step for every running sequence, (3) and (4) in one forward (the fused model
step flattens their tokens for every GEMM, so the weights are read once for all). A request
that arrives while others decode therefore gets its first token from the next forward, and a
finished sequence leaves at once.

The KV cache (kvcache.SlotKVCache) is allocated once: one slot per batch place, written in place;
nothing is concatenated per step and nothing is copied when a sequence joins. Each forward gets
an explicit 4-D mask built from per-row positions, so rows of different lengths share it
without left padding in the cache. Sampling (sampling.py) runs on the model's device over the
whole batch; text is detokenized incrementally (detok.py).

Why not transformers' own continuous batching (`generate_batch` with paged attention)? Measured
on this machine's CPU it gave 34 tok/s where a static batch with `generate` gave 109 (DESIGN.md):
the step loop below runs the same model forward as `generate`, over the slot cache.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import BadInput, brief
from engine.serving.arrivals import Arrival, Arrivals
from engine.serving.detok import Detokenizer, StopMatcher, eos_ids
from engine.serving.kvcache import ForwardPart, SlotKVCache, bytes_per_token
from engine.serving.modelstep import ModelStep, choose_step
from engine.serving.sampling import choose_tokens, make_generator
from engine.serving.work import (NullObserver, Observer, QueueFull, SamplingParams,
                                 SchedulerClosed, TokenEvent)


# A logits hook sees every forward's next-token logits: (kind, sequences, logits (n, vocab)),
# kind "prefill" or "decode". Tests use it to compare against unbatched forwards.
LogitsHook = Callable[[str, list["Sequence"], Any], None]

DEFAULT_KV_CACHE_BYTES = 512 * 2**20
PREFILL_CHUNK_TOKENS = 256
_sequence_ids = itertools.count(1)


@dataclass(eq=False)
class Sequence:
    """One request's life in the scheduler; only the scheduler thread mutates it."""

    prompt_ids: list[int]
    params: SamplingParams
    deliver: Callable[[TokenEvent], None]
    sequence_id: int = field(default_factory=lambda: next(_sequence_ids))
    submitted_at: float = field(default_factory=time.monotonic)
    generated_ids: list[int] = field(default_factory=list)
    last_token_at: float = 0.0
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: Any = None
    admitted_step: int | None = None
    finished_step: int | None = None
    slot: int | None = None     # its place in the KV cache while it holds one
    filled: int = 0             # tokens of it in the cache
    decoding: bool = False      # False while its prompt is being prefilled
    detokenizer: Any = None
    stops: Any = None
    client: str | None = None   # its connection, when known (arrivals.py: clients that loop)

    def cancel(self) -> None:
        """Safe from any thread: the slot is freed before the next decode step."""
        self.cancelled.set()

    @property
    def held_slot(self) -> int:
        """The slot of a sequence being prefilled or decoded (it always holds one then)."""
        assert self.slot is not None, "a running sequence holds a slot"
        return self.slot


# A sequence that ended in an iteration: (it, its finish reason or None for an error, the error).
Ended = tuple[Sequence, str | None, str]


class BatchScheduler:
    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, max_queue: int = 64,
                 context_length: int = 2048, observer: Observer | None = None,
                 kv_cache_bytes: int | None = None,
                 prefill_chunk: int = PREFILL_CHUNK_TOKENS, release_unfused: bool = False,
                 arrivals: Arrivals | None = None) -> None:
        import torch

        self.model, self.tokenizer = model, tokenizer
        # The forward each step runs (modelstep.py): fused for Llama-family models, else eager.
        self.step: ModelStep = choose_step(model, release_unfused)
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.observer: Observer = observer or NullObserver()
        self._kv_gauge = getattr(self.observer, "kv_cache_usage", None)
        self.logits_hook: LogitsHook | None = None
        self.eos_ids = eos_ids(model, tokenizer)
        self.vocabulary = model.get_input_embeddings().num_embeddings
        parameter = next(model.parameters())
        self.device = parameter.device
        self.pad_id = tokenizer.pad_token_id or 0
        self.prefill_chunk = max(prefill_chunk, 1)
        # Memory bounds admission: every slot can hold a whole sequence, so the slot length (the
        # context a request may use) is what the cache budget allows per slot.
        per_token = bytes_per_token(model.config, parameter.dtype)
        budget = kv_cache_bytes or DEFAULT_KV_CACHE_BYTES
        self.context_length = max(2, min(context_length, budget // (max_batch_size * per_token)))
        with torch.inference_mode():
            self.cache = SlotKVCache(model.config, max_batch_size, self.context_length,
                                     parameter.dtype, self.device)
            slots, device = max_batch_size, self.device
            # Per-slot state on the device, so a decode step builds its inputs without a copy
            # from the host: the token to feed next, its position, which slots are decoding.
            self._next = torch.full((slots,), self.pad_id, dtype=torch.long, device=device)
            self._position = torch.zeros(slots, dtype=torch.long, device=device)
            self._decoding = torch.zeros(slots, dtype=torch.bool, device=device)
            self._temperature = torch.zeros(slots, dtype=torch.float32, device=device)
            self._top_p = torch.ones(slots, dtype=torch.float32, device=device)
            self._columns = torch.arange(self.context_length + 1, device=device)
        self._mask_min = torch.finfo(parameter.dtype if parameter.dtype.is_floating_point
                                     else torch.float32).min
        self._slots: list[Sequence | None] = [None] * max_batch_size
        self._prefilling: list[Sequence] = []  # the wave being prefilled, chunk by chunk
        self._waiting: deque[Sequence] = deque()
        self._lock = threading.Condition()
        self.arrivals = arrivals or Arrivals()  # requests being read: see _iteration
        self._accepting = True
        self._stopping = False
        self.steps = 0  # decode steps run so far; tests read admitted/finished step numbers
        self._thread = threading.Thread(target=self._run, name="modeldeck-scheduler", daemon=True)
        self._thread.start()

    # ---- any thread ----------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams,
               deliver: Callable[[TokenEvent], None], arrived_at: float | None = None,
               arrival: Arrival | None = None) -> Sequence:
        """Queue a request. `arrived_at` (time.monotonic() when the HTTP request came in) starts
        its latency clock there, so TTFT and e2e count reading and tokenizing the prompt too, as
        the client sees them; `arrival`: its count in `arrivals`, settled as it is queued."""
        if not prompt_ids:
            raise BadInput("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise BadInput(f"the prompt has {len(prompt_ids)} tokens; this model's context is "
                           f"{self.context_length} tokens")
        budget = self.context_length - len(prompt_ids)
        params = replace(params, max_tokens=min(params.max_tokens, budget))
        sequence = Sequence(list(prompt_ids), params, deliver,
                            client=arrival.client if arrival is not None else None)
        if arrived_at is not None:
            sequence.submitted_at = arrived_at
        with self._lock:
            if not self._accepting:
                raise SchedulerClosed("this version is being retired")
            # Free slots take requests at the next step; only the rest count as queued.
            free_slots = self._slots.count(None)
            if len(self._waiting) >= self.max_queue + free_slots:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit {self.max_queue})")
            self._waiting.append(sequence)
            self.arrivals.settle(arrival)
            self._lock.notify()
        return sequence

    @property
    def load(self) -> tuple[int, int]:
        """(running, waiting) right now."""
        with self._lock:
            return self.max_batch_size - self._slots.count(None), len(self._waiting)

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting, let in-flight work finish, then end the thread. True when drained."""
        with self._lock:
            self._accepting = False
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the scheduler thread ------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while self._wait_for_work():
                try:
                    self._iteration()
                except Exception as error:  # a model failure must end requests, not hang them
                    self._fail_everything(brief(error, 200, named=True))

    def _wait_for_work(self) -> bool:
        with self._lock:
            while not self._waiting and self._slots.count(None) == self.max_batch_size:
                if self._stopping:
                    return False
                self._lock.wait()
            return True

    def _iteration(self) -> None:
        self._drop_cancelled()
        idle = self._slots.count(None) == self.max_batch_size
        if idle and self.arrivals.pending():  # let a burst of arrivals start in one forward
            self.arrivals.gather()
        # Requests admitted at every iteration join the prompts being prefilled.
        self._prefilling += self._set_up(self._admit())
        # One forward per iteration: a prefill piece of every prompt being prefilled (a part
        # each, unpadded) and one decode step for every running sequence share it, so the
        # weights are read once for all.
        prefill = self._prefill_inputs() if self._prefilling else None
        decode = (self._decode_inputs()
                  if any(s is not None and s.decoding for s in self._slots) else None)
        parts = (prefill[0] if prefill else []) + (list(decode) if decode else [])
        decoded, ended = 0, list[Ended]()
        if parts:
            logits = self.step.run(parts, self.cache)
            # Decode rows first: finishing a prefill marks its slot as decoding, which the
            # decode rows' bookkeeping must not see. Slots are freed only after both (a free
            # compacts slots, which would shift the other part's rows).
            if decode is not None:
                decoded, ended = self._after_decode(logits[-1], decode[0].ids.shape[0])
            if prefill is not None:
                ended += self._after_prefill(logits[:len(prefill[0])], *prefill)
        self._settle(ended)
        if ended:
            self.arrivals.finished([sequence.client for sequence, _, _ in ended])
        running, waiting = self.load
        self.observer.step(decoded, running, waiting)
        if self._kv_gauge is not None:
            used = sum(s.filled for s in self._slots if s is not None)
            self._kv_gauge(used / (self.max_batch_size * self.context_length))

    def _admit(self) -> list[Sequence]:
        """The wave: every waiting request that fits in a free slot."""
        with self._lock:
            free = self._slots.count(None)
            admitted: list[Sequence] = []
            while self._waiting and len(admitted) < free:
                sequence = self._waiting.popleft()
                if sequence.cancelled.is_set():
                    self._finish(sequence, "cancelled")
                    continue
                admitted.append(sequence)
            for sequence in admitted:  # in the slots before the lock is released: load is exact
                self._take_slot(sequence)
            return admitted

    def _set_up(self, admitted: list[Sequence]) -> list[Sequence]:
        """Each sequence's own state (its seeded generator on the model's device, its text
        decoder). One that cannot be set up (a seed torch refuses, a token id out of range)
        fails alone."""
        ready = []
        for sequence in admitted:
            try:
                params = sequence.params
                if params.temperature > 0:
                    sequence.generator = make_generator(params.seed, self.device)
                if min(sequence.prompt_ids) < 0 or max(sequence.prompt_ids) >= self.vocabulary:
                    raise ValueError("a prompt token id is outside the vocabulary")
                sequence.detokenizer = Detokenizer(self.tokenizer)
                sequence.stops = StopMatcher(params.stop)
                self._temperature[sequence.slot] = max(params.temperature, 0.0)
                self._top_p[sequence.slot] = params.top_p
            except Exception as error:  # noqa: BLE001 - any failure here is this request's alone
                self._fail(sequence, brief(error, 200, named=True))
                continue
            sequence.admitted_step = self.steps
            self.observer.prompt_tokens(len(sequence.prompt_ids))
            ready.append(sequence)
        return ready

    def _take_slot(self, sequence: Sequence) -> None:
        slot = self._slots.index(None)  # slots in use stay contiguous from 0 (see _free_slot)
        self._slots[slot], sequence.slot, sequence.filled = sequence, slot, 0

    def _free_slot(self, sequence: Sequence) -> None:
        """Give the slot back; the last occupied slot moves into the hole (one sequence's
        cache copied), so a decode step's rows are always slots [0, n)."""
        slot = sequence.slot
        if slot is None:
            return
        sequence.slot = None
        self._decoding[slot] = False
        last = max(i for i, s in enumerate(self._slots) if s is not None)
        moved = self._slots[last]
        self._slots[slot], self._slots[last] = moved, None
        if last != slot and moved is not None:
            self.cache.move(last, slot, moved.filled)
            for state in (self._next, self._position, self._decoding, self._temperature, self._top_p):
                state[slot] = state[last]
            self._decoding[last] = False
            moved.slot = slot

    def _prefill_inputs(self) -> tuple[list[ForwardPart], list[Sequence]]:
        """The next prompt piece of each sequence being prefilled, one part each (no padding),
        at most `prefill_chunk` tokens in all (at least 16 each)."""
        import torch

        wave = list(self._prefilling)
        width_per_row = max(self.prefill_chunk // len(wave), 16)
        parts = []
        for sequence in wave:
            start = sequence.filled
            piece = sequence.prompt_ids[start:start + width_per_row]
            ids = torch.tensor([piece], dtype=torch.long, device=self.device)
            positions = torch.arange(start, start + len(piece), device=self.device)[None]
            parts.append(self._part(sequence.held_slot, ids, positions, positions,
                                    start + len(piece)))
        return parts, wave

    def _after_prefill(self, logits: list[Any], parts: list[ForwardPart],
                       wave: list[Sequence]) -> list[Ended]:
        import torch

        done, done_logits = [], []
        for sequence, part, row_logits in zip(wave, parts, logits):
            sequence.filled += part.ids.shape[1]
            if sequence.filled == len(sequence.prompt_ids):
                done.append(sequence)
                done_logits.append(row_logits)
        self._prefilling = [s for s in self._prefilling if s not in done]
        if not done:
            return []
        slots = torch.tensor([s.held_slot for s in done], device=self.device)
        rows_logits = torch.cat(done_logits)
        tokens, failed = self._choose(rows_logits, list[Sequence | None](done), slots, done)
        for sequence in done:
            self._decoding[sequence.held_slot] = True
            sequence.decoding = True
        self._next[slots] = tokens
        self._position[slots] = torch.tensor([s.filled for s in done], device=self.device)
        if self.logits_hook is not None:
            self.logits_hook("prefill", done, rows_logits)
        return self._emit([(s, row) for row, s in enumerate(done)], tokens, failed)

    def _decode_inputs(self) -> tuple[ForwardPart]:
        import torch

        rows = max(i for i, s in enumerate(self._slots) if s is not None and s.decoding) + 1
        decoding = self._decoding[:rows]
        positions = self._position[:rows]
        kv_len = max(s.filled for s in self._slots[:rows] if s is not None and s.decoding) + 1
        # Rows still prefilling (or free) ride along: they see column 0 and write to scratch.
        return (self._part(0, self._next[:rows, None], torch.where(decoding, positions, 0)[:, None],
                           torch.where(decoding, positions, self.cache.scratch)[:, None], kv_len),)

    def _after_decode(self, logits: Any, rows: int) -> tuple[int, list[Ended]]:
        import torch

        decoding = self._decoding[:rows]
        self.steps += 1
        span = self._slots[:rows]
        active = [(s, row) for row, s in enumerate(span) if s is not None and s.decoding]
        tokens, failed = self._choose(logits, span, slice(0, rows), [s for s, _ in active])
        self._next[:rows] = torch.where(decoding, tokens, self._next[:rows])
        self._position[:rows] += decoding.long()
        for sequence, _ in active:
            sequence.filled += 1
        if self.logits_hook is not None:
            self.logits_hook("decode", [s for s, _ in active], logits[[r for _, r in active]])
        return len(active), self._emit(active, tokens, failed)

    def _part(self, first: int, ids: Any, positions: Any, write: Any, kv_len: int) -> ForwardPart:
        """A forward part over slots [first, first + rows). A query sees the cache columns up to
        its own position: causal within a chunk, and nothing past a row's own length (padding
        and other rows' lengths never leak in)."""
        import torch

        visible = self._columns[:kv_len] <= positions[:, :, None]  # (rows, q, kv)
        mask = (~visible[:, None]).to(self.cache.keys[0].dtype) * self._mask_min
        slots = torch.arange(first, first + ids.shape[0], device=ids.device)[:, None]
        return ForwardPart(first, ids, positions, write, kv_len, mask, slots)

    def _choose(self, logits: Any, row_sequences: list[Sequence | None], slots: Any,
                chosen_for: list[Sequence]) -> tuple[Any, Any]:
        """Tokens for logits rows whose sequences (None: an idle row) hold `slots` (a slice or
        an index tensor into the per-slot sampling state); only `chosen_for` rows matter."""
        wanted = {s.sequence_id for s in chosen_for}
        generators = [s.generator if s is not None and s.sequence_id in wanted else None
                      for s in row_sequences]
        sampled = [s.params for s in chosen_for if s.params.temperature > 0]
        return choose_tokens(logits, self._temperature[slots], self._top_p[slots], generators,
                             bool(sampled), any(p.top_p < 1.0 for p in sampled))

    def _emit(self, rows: list[tuple[Sequence, int]], tokens: Any, failed: Any) -> list[Ended]:
        """Deliver each row's new text; return the sequences that ended (see _settle)."""
        import torch

        # One copy to the host per step: the tokens, and which rows' sampling failed.
        if failed is None:
            host_tokens, host_failed = tokens.tolist(), None
        else:
            host_tokens, host_failed = torch.stack([tokens, failed.long()]).tolist()
        now = time.monotonic()
        finished: list[Ended] = []
        for sequence, row in rows:
            if host_failed is not None and host_failed[row]:
                finished.append((sequence, None, "sampling failed: the distribution has no mass "
                                 "(check temperature and top_p)"))
                continue
            try:
                first = not sequence.generated_ids
                sequence.generated_ids.append(host_tokens[row])
                self.observer.token(first, now - (sequence.last_token_at or sequence.submitted_at))
                sequence.last_token_at = now
                reason = self._deliver_text(sequence, host_tokens[row])
            except Exception as error:  # noqa: BLE001 - decoding one sequence's text failed
                finished.append((sequence, None, brief(error, 200, named=True)))
                continue
            if reason:
                finished.append((sequence, reason, ""))
        return finished

    def _settle(self, ended: list[Ended]) -> None:
        """Free the slots of the sequences that ended this iteration and tell their clients."""
        for sequence, reason, detail in ended:
            if reason is None:
                self._fail(sequence, detail)
            else:
                self._free_slot(sequence)
                self._finish(sequence, reason)

    def _deliver_text(self, sequence: Sequence, token: int) -> str | None:
        """Send the new text; return the finish reason when the sequence is done."""
        params = sequence.params
        at_eos = token in self.eos_ids and not params.ignore_eos
        piece = "" if at_eos else sequence.detokenizer.step(token)
        text, stopped = sequence.stops.feed(piece)
        if stopped or at_eos:
            reason: str | None = "stop"
        elif len(sequence.generated_ids) >= params.max_tokens:
            reason = "length"
        else:
            reason = None
        if reason and not stopped:
            text += sequence.stops.flush()
        # An event per generated token, even one that adds no text yet (a special token, half a
        # character, text held back for a stop string), as vLLM streams a chunk per token: a
        # client sees the first token when it is made, not one step later.
        if text or reason is None:
            sequence.deliver(TokenEvent(text))
        return reason

    def _finish(self, sequence: Sequence, reason: str, text: str = "") -> None:
        sequence.finished_step = self.steps
        completion = len(sequence.generated_ids)
        try:
            sequence.deliver(TokenEvent(text, reason, len(sequence.prompt_ids), completion))
        except Exception:  # noqa: BLE001 - its consumer is gone (a closed loop): nobody to tell
            pass
        self.observer.finished(reason, time.monotonic() - sequence.submitted_at, completion)

    def _fail(self, sequence: Sequence, detail: str) -> None:
        """End one sequence with an error; the rest of the batch carries on."""
        self._free_slot(sequence)
        self._prefilling = [s for s in self._prefilling if s is not sequence]
        self._finish(sequence, "error", detail)

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._slots if s is not None and s.cancelled.is_set()]:
            self._free_slot(sequence)
            self._prefilling = [s for s in self._prefilling if s is not sequence]
            self._finish(sequence, "cancelled")

    def _fail_everything(self, detail: str) -> None:
        """A failure of the batch itself (the model's forward): every sequence it held ends,
        including those being prefilled and those still waiting."""
        with self._lock:
            victims = [s for s in self._slots if s is not None] + list(self._waiting)
            self._waiting.clear()
            self._slots = [None] * self.max_batch_size
        self._prefilling = []
        self._decoding.zero_()
        for sequence in victims:
            sequence.slot = None
            self._finish(sequence, "error", detail)


def generate_blocking(scheduler: BatchScheduler, prompt_ids: list[int], params: SamplingParams,
                      timeout: float = 600) -> tuple[str, str]:
    """(text, finish_reason) for one prompt: what the health gate and tests use."""
    events: queue.Queue[TokenEvent] = queue.Queue()
    scheduler.submit(prompt_ids, params, events.put)
    pieces: list[str] = []
    while True:
        event = events.get(timeout=timeout)
        if event.finish_reason is not None:
            if event.finish_reason == "error":
                raise RuntimeError(event.text)
            return "".join(pieces), event.finish_reason
        pieces.append(event.text)

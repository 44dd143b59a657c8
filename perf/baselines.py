"""The two in-process candidates of the comparison, text in and results out, like the served ensembles.

(a) `HfEager`: what a user would pick instead - Hugging Face transformers on PyTorch eager FP32.
    fill_mask: `transformers.pipeline("fill-mask")` (top 5 per mask, each with its decoded sequence).
    text_classification: `transformers.pipeline("text-classification")`, the best label per text.
    question_answering: transformers 5 removed the question-answering pipeline, so this is
    `MobileBertForQuestionAnswering` + the fast tokenizer + the pipeline's span decoding (softmax over the context
    tokens and [CLS], best p_start * p_end with end >= start and at most 15 tokens; character offsets). Best answer
    only (the pipeline's default top_k=1).
(b) `OrtInt8`: the ceiling for serving - onnxruntime in-process on the INT8-dynamic graph the server runs, our
    tokenizer (MobileBertTokenizer, padding to the longest row of each batch) and the server's post-processing
    decoding itself (deploy/python_models: mask_filling for fill_mask, top 5 per mask; span_decoding for QA;
    probabilities for text classification, the best label).

Both take a batch of rows (perf.inputs) and return one result per row. `measure_round` runs a candidate over the rows
in batches for a given time and reports sequences/s; `warm_up` runs it once over every distinct batch first.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from client.tasks import NO_ANSWER
from deploy.python_models.mask_filling import fill_mask_row
from deploy.python_models.probabilities import best_label, labels
from deploy.python_models.span_decoding import best_spans

from .batch_timing import batches_of, time_batches
from .environment import ForeignCpu
from .inputs import Row

TOP_K = 5  # fill-mask candidates per mask (the HF pipeline's default; the client's fill_mask default)
MAX_ANSWER_LEN = 15  # tokens, the HF pipeline's default and the server's setting


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, context: np.ndarray, offsets: np.ndarray, text: str
) -> dict:
    """The best span of one row (context: bool mask of context tokens), decoded as the server decodes it."""
    spans = best_spans(start_logits, end_logits, context, offsets, text, top_k=1, max_answer_len=MAX_ANSWER_LEN)
    return spans[0] if spans else dict(NO_ANSWER)


class HfEager:
    """(a) transformers on PyTorch eager FP32, `threads` intra-op threads."""

    name = "transformers eager FP32"

    def __init__(self, task: str, checkpoint: Path, threads: int) -> None:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        torch.set_num_threads(threads)
        self.task = task
        self.torch = torch
        checkpoint = str(checkpoint)
        if task == "fill_mask":
            self.pipe = transformers.pipeline("fill-mask", model=checkpoint, tokenizer=checkpoint, device="cpu")
            self.how = "transformers.pipeline('fill-mask'), top_k=5"
        elif task == "text_classification":
            self.pipe = transformers.pipeline(
                "text-classification", model=checkpoint, tokenizer=checkpoint, device="cpu"
            )
            self.how = "transformers.pipeline('text-classification'), top_k=1"
        elif task == "question_answering":
            self.model = transformers.MobileBertForQuestionAnswering.from_pretrained(checkpoint).eval()
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
            self.how = (
                "MobileBertForQuestionAnswering + AutoTokenizer + the QA pipeline's span decoding "
                "(transformers 5 has no question-answering pipeline)"
            )
        else:
            raise ValueError(f"no transformers baseline for task {task!r}")

    def __call__(self, rows: list[Row]) -> list[Any]:
        if self.task == "fill_mask":
            out = self.pipe([r["TEXT"] for r in rows], batch_size=len(rows), top_k=TOP_K)
            return out if len(rows) > 1 else [out]
        if self.task == "text_classification":
            return self.pipe([r["TEXT"] for r in rows], batch_size=len(rows), top_k=1)
        questions, contexts = [r["QUESTION"] for r in rows], [r["CONTEXT"] for r in rows]
        enc = self.tokenizer(
            questions,
            contexts,
            padding=True,
            truncation="only_second",
            max_length=384,  # the pipeline's max_seq_len
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping").numpy()
        with self.torch.inference_mode():
            out = self.model(**enc)
        starts, ends = out.start_logits.numpy(), out.end_logits.numpy()
        results = []
        for i, context in enumerate(contexts):
            is_context = np.array([s == 1 for s in enc.sequence_ids(i)])
            results.append(best_span(starts[i], ends[i], is_context, offsets[i], context))
        return results


class OrtInt8:
    """(b) onnxruntime in-process on the served INT8 graph, our tokenizer, the server's decoding."""

    name = "onnxruntime INT8 in-process"

    def __init__(self, task: str, graph: Path, checkpoint: Path, threads: int, sessions: int = 1) -> None:
        from export.pipeline import session
        from model_def import MobileBertTokenizer

        if task not in ("fill_mask", "question_answering", "text_classification"):
            raise ValueError(f"no in-process onnxruntime baseline for task {task!r}")
        if sessions < 1 or threads % sessions:
            raise ValueError(f"{threads} threads do not split over {sessions} sessions")
        self.task = task
        # `sessions` sessions of threads/sessions intra-op threads each, each batch split across worker threads
        # (onnxruntime releases the GIL while it runs): the in-process twin of N runner instances x M threads.
        self.sessions = [session(Path(graph), threads // sessions) for _ in range(sessions)]
        self.session = self.sessions[0]
        self.pool = ThreadPoolExecutor(sessions) if sessions > 1 else None
        self.layout = f"{sessions} x {threads // sessions} thread{'s' if threads // sessions > 1 else ''}"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizers = [MobileBertTokenizer.from_pretrained(checkpoint) for _ in range(sessions)]
        self.decoder = self.tokenizers[0].backend  # tokenizers.Tokenizer, as the post-processing model uses
        self.mask_id = self.tokenizers[0].mask_token_id
        config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
        self.labels = labels(config.get("id2label"))  # as the classification post model reads them
        self.how = f"{Path(graph).name}, MobileBertTokenizer (dynamic padding per batch), server decoding"

    def __call__(self, rows: list[Row]) -> list[Any]:
        if self.pool is None or len(rows) < 2:
            return self._one_session(rows, 0)
        # each worker tokenizes, runs and decodes its share, so one share's Python work overlaps another's compute
        bounds = np.linspace(0, len(rows), len(self.sessions) + 1).astype(int)
        shares = [rows[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        done = self.pool.map(self._one_session, shares, range(len(self.sessions)))
        return [result for share in done for result in share]

    def _one_session(self, rows: list[Row], worker: int) -> list[Any]:
        # one tokenizer per worker: the fast tokenizer's padding/truncation state is set per call, not thread-safe
        sess, tokenizer = self.sessions[worker], self.tokenizers[worker]
        if self.task == "fill_mask":
            enc = tokenizer([r["TEXT"] for r in rows], padding=True, return_tensors="np")
            positions, valid, top_ids, top_probs = sess.run(
                None, {n: enc[n].astype(np.int64) for n in self.input_names}
            )
            return [self._fill_mask_row(enc, r, positions, valid, top_ids, top_probs) for r in range(len(rows))]
        if self.task == "text_classification":
            enc = tokenizer([r["TEXT"] for r in rows], padding=True, truncation=True, return_tensors="np")
            (logits,) = sess.run(None, {n: enc[n].astype(np.int64) for n in self.input_names})
            return [best_label(row, self.labels) for row in logits]
        contexts = [r["CONTEXT"] for r in rows]
        enc = tokenizer(
            [r["QUESTION"] for r in rows],
            contexts,
            padding=True,
            truncation="only_second",
            max_length=512,
            return_offsets_mapping=True,
            return_tensors="np",
        )
        starts, ends = sess.run(None, {n: enc[n].astype(np.int64) for n in self.input_names})
        offsets, types, mask = enc["offset_mapping"], enc["token_type_ids"], enc["attention_mask"]
        results = []
        for i, context in enumerate(contexts):
            is_context = (types[i] == 1) & (mask[i] == 1) & (offsets[i, :, 1] > offsets[i, :, 0])
            results.append(best_span(starts[i], ends[i], is_context, offsets[i], context))
        return results

    def _fill_mask_row(self, enc, r, positions, valid, top_ids, top_probs) -> list:
        tokens = enc["input_ids"][r][enc["attention_mask"][r] > 0]
        count = int((tokens == self.mask_id).sum())
        per_mask = fill_mask_row(tokens, positions[r], valid[r], top_ids[r], top_probs[r], self.decoder, count, TOP_K)
        return per_mask[0] if len(per_mask) == 1 else per_mask  # the pipeline's shape: one mask, one flat list


def warm_up(candidate, rows: list[Row], batch: int) -> None:
    """One untimed pass over every distinct batch: PyTorch pays a large one-off cost (seconds) the first time it
    meets a new input shape, and dynamic padding makes several shapes."""
    for chunk in batches_of(rows, batch):
        candidate(chunk)


def measure_round(candidate, rows: list[Row], batch: int, seconds: float) -> dict:
    """sequences/s of `candidate` over `rows` in batches of `batch` (cycled) for `seconds` (at least one batch);
    `foreign_cpu` is the share of the machine other processes used meanwhile (perf.environment.ForeignCpu)."""
    with ForeignCpu() as foreign:
        figures = time_batches(candidate, candidate.name, rows, batch, seconds)
    return {**figures, "foreign_cpu": foreign.share, "steal_cpu": foreign.steal}

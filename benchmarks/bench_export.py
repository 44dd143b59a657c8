"""Speed of the exported graphs against transformers' PyTorch eager FP32, side by side in one run.

Full-size config, sequence 128 (real corpus text, two [MASK]s per row for fill-mask), batch 1 and 8, 2 threads.
For each head: transformers eager (masked LM with full logits, as a user would run it; QA), our ONNX FP32, INT8
dynamic and INT8 QDQ on ONNX Runtime CPU. Prints median latency, sequences/s, the ratio to eager and file sizes.
Rounds are interleaved so machine noise hits every candidate alike; within a round each candidate runs back to back
for `--seconds` (one untimed call first), so no runtime is timed while the previous one's threads still spin.

    python benchmarks/bench_export.py --onnx artifacts/onnx --checkpoints artifacts/demo-checkpoints
(export first: python -m export --demo --task fill_mask --task question_answering)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers

from export.heads import INPUT_NAMES
from export.pipeline import graph_paths, session
from model_def import MobileBertTokenizer
from model_def.corpus import corpus_lines, qa_examples

HEADS = {  # task -> (transformers class, checkpoint kind)
    "fill_mask": ("MobileBertForMaskedLM", "pretraining"),
    "question_answering": ("MobileBertForQuestionAnswering", "question-answering"),
}
FLAVOURS = ("fp32", "int8-dynamic", "int8-qdq")


def make_inputs(task: str, tok: MobileBertTokenizer, batch: int, seq: int) -> dict[str, np.ndarray]:
    lines = corpus_lines()
    if task == "question_answering":
        examples = qa_examples()
        pairs = [(examples[i]["question"], " ".join(lines[i * 5 : i * 5 + 6])) for i in range(batch)]
        enc = tok(
            [q for q, _ in pairs],
            [c for _, c in pairs],
            truncation="only_second",
            max_length=seq,
            padding="max_length",
            return_tensors="np",
        )
    else:
        texts = []
        for i in range(batch):
            words = " ".join(lines[i * 5 : i * 5 + 6]).split()
            words[3] = words[9] = tok.mask_token
            texts.append(" ".join(words))
        enc = tok(texts, truncation=True, max_length=seq, padding="max_length", return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in INPUT_NAMES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=Path("artifacts/onnx"))
    parser.add_argument("--checkpoints", type=Path, default=Path("artifacts/demo-checkpoints"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="back-to-back calls per candidate and round")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, seq {args.seq}, "
        f"median of {args.rounds} interleaved rounds"
    )
    results = []
    header = f"{'head':19s} {'batch':>5s} {'candidate':22s} {'ms':>8s} {'seq/s':>8s} {'x eager':>8s} {'MB':>7s}"
    print(header)
    for task, (hf_class, kind) in HEADS.items():
        checkpoint = args.checkpoints / kind
        tok = MobileBertTokenizer.from_pretrained(checkpoint)
        hf_model = getattr(transformers, hf_class).from_pretrained(checkpoint).eval()
        candidates = {"transformers eager": None}
        sizes = {"transformers eager": None}
        for flavour in FLAVOURS:
            path = graph_paths(args.onnx, task, flavour)[0]
            if path.is_file():
                candidates[f"onnx {flavour}"] = session(path, args.threads)
                sizes[f"onnx {flavour}"] = path.stat().st_size / 1e6
        for batch in args.batches:
            feed = make_inputs(task, tok, batch, args.seq)
            torch_feed = {k: torch.from_numpy(v) for k, v in feed.items()}

            def run(name: str, feed=feed, torch_feed=torch_feed, candidates=candidates, hf_model=hf_model) -> float:
                start = time.perf_counter()
                if candidates[name] is None:
                    with torch.inference_mode():
                        hf_model(**torch_feed)
                else:
                    candidates[name].run(None, feed)
                return time.perf_counter() - start

            def block(name: str, run=run) -> float:
                """Mean time per call over `--seconds` of back-to-back calls, after one untimed call: a single call
                right after another runtime's would pay for that runtime's spinning threads (torch's OpenMP pool
                keeps spinning for a while after each call) and for waking its own."""
                run(name)
                calls, total = 0, 0.0
                while calls == 0 or total < args.seconds:
                    total += run(name)
                    calls += 1
                return total / calls

            for name in candidates:  # warm-up
                run(name)
            times: dict[str, list[float]] = {name: [] for name in candidates}
            for _ in range(args.rounds):
                for name in candidates:
                    times[name].append(block(name))
            eager = statistics.median(times["transformers eager"])
            for name, samples in times.items():
                t = statistics.median(samples)
                size = sizes[name]
                row = {
                    "head": task,
                    "batch": batch,
                    "candidate": name,
                    "ms": t * 1e3,
                    "seq_per_s": batch / t,
                    "x_eager": eager / t,
                    "MB": size,
                }
                results.append(row)
                print(
                    f"{task:19s} {batch:5d} {name:22s} {t * 1e3:8.1f} {batch / t:8.1f} {eager / t:8.2f} "
                    f"{'' if size is None else f'{size:7.1f}'}"
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

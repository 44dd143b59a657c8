"""How batch size and sequence length move onnxruntime INT8 throughput: the measurements behind the batching config.

For the full-size INT8-dynamic graphs (fill_mask, question_answering), one onnxruntime session with 1 and with 2
intra-op threads, sequences/s at batch 1, 2, 4, 8, 16, 32 for each length bucket 32 and 128, rounds
interleaved. The README's "Batching choices" section quotes this table: it decides max_batch_size, the preferred
batch sizes, the queue delay and the instances x threads split.

    python benchmarks/bench_batching.py --onnx artifacts/onnx
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from export.pipeline import graph_paths, session

BATCHES = (1, 2, 4, 8, 16, 32)
LENGTHS = (32, 128)


def inputs(batch: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = rng.integers(1000, 20000, size=(batch, length), dtype=np.int64)
    ids[:, 0], ids[:, -1], ids[:, length // 2] = 101, 102, 103  # [CLS] ... [MASK] ... [SEP]
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=Path("artifacts/onnx"))
    parser.add_argument("--tasks", nargs="+", default=["fill_mask", "question_answering"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts to compare")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench_batching.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for task in args.tasks:
        sessions = {t: session(graph_paths(args.onnx, task, "int8-dynamic")[0], t) for t in args.threads}
        feeds = {(b, n): inputs(b, n, rng) for b in BATCHES for n in LENGTHS}
        samples = {(t, f"{b}x{n}"): [] for t in sessions for b, n in feeds}
        for _ in range(args.rounds):
            for threads, sess in sessions.items():
                for (b, n), feed in feeds.items():
                    sess.run(None, feed)
                    count, start = 0, time.perf_counter()
                    while time.perf_counter() - start < args.seconds:
                        sess.run(None, feed)
                        count += 1
                    samples[threads, f"{b}x{n}"].append(count * b / (time.perf_counter() - start))
        results[task] = {
            f"{t}t": {k: statistics.median(v) for (tt, k), v in samples.items() if tt == t} for t in sessions
        }
    print(f"sequences/s of one session, INT8-dynamic (median of {args.rounds} interleaved rounds)")
    for task, by_threads in results.items():
        head = " ".join(f"{f'{t} seq {n}':>12s}" for t in by_threads for n in LENGTHS)
        print(f"\n{task}\n{'batch':>6s} {head}")
        for b in BATCHES:
            print(f"{b:6d} " + " ".join(f"{fig[f'{b}x{n}']:12.1f}" for fig in by_threads.values() for n in LENGTHS))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

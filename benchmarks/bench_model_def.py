"""Our PyTorch forward vs transformers' on the same weights: batch 8, sequence 128, 2 threads, full-size config.

Prints a table of median latency per head and the ratio transformers_time / our_time (>= 1.0 means ours is no
slower). Timings interleave the two models round by round so machine noise hits both alike.

    python benchmarks/bench_model_def.py [--heads MobileBertModel MobileBertForMaskedLM] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

import model_def

DEFAULT_HEADS = ("MobileBertModel", "MobileBertForMaskedLM", "MobileBertForQuestionAnswering")


def _inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[batch // 2 :, seq * 3 // 4 :] = 0  # some padding, as real batches have
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _time(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(**inputs)
    return time.perf_counter() - start


def bench_head(head: str, directory: Path, batch: int, seq: int, rounds: int) -> tuple[float, float]:
    torch.manual_seed(0)
    hf_model = getattr(transformers, head)(transformers.MobileBertConfig()).eval()
    hf_model.save_pretrained(directory)
    ours = getattr(model_def, head).from_pretrained(directory)
    inputs = _inputs(batch, seq)
    for model in (hf_model, ours):  # warm-up
        _time(model, inputs)
    theirs_t, ours_t = [], []
    for _ in range(rounds):
        theirs_t.append(_time(hf_model, inputs))
        ours_t.append(_time(ours, inputs))
    return statistics.median(theirs_t), statistics.median(ours_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=list(DEFAULT_HEADS), choices=sorted(model_def.HEADS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
        f"batch {args.batch}, seq {args.seq}, median of {args.rounds} interleaved rounds"
    )
    print(f"{'head':40s} {'transformers ms':>16s} {'ours ms':>10s} {'ratio':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for head in args.heads:
            theirs, ours = bench_head(head, Path(tmp) / head, args.batch, args.seq, args.rounds)
            print(f"{head:40s} {theirs * 1e3:16.1f} {ours * 1e3:10.1f} {theirs / ours:7.2f}")


if __name__ == "__main__":
    main()

"""Which engine, graph, precision and layout runs the full-size graphs fastest on this CPU: the table behind the
README's "CPU engines" section and the build's automatic choice (deploy/engine_choice.py, whose measurement this
reuses: same synthetic batch, rounds interleaved, best round counts).

Candidates: onnxruntime on the INT8-dynamic and FP32 graphs; OpenVINO on the FP32 and INT8-QDQ graphs at f32 and,
where the CPU computes bf16 natively, bf16. Each in two layouts of the same 2-core budget: one inference on 2
threads (1x2) and two parallel 1-thread inferences sharing one copy of the weights (2x1, what serves).

    python benchmarks/bench_engines.py --onnx artifacts/onnx
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from deploy.engine_choice import EngineTrial, choose, trial_feed, trial_feeds
from deploy.model_configs import CpuSettings
from export.cpu import cpu_signature
from export.engine_validation import openvino_precisions
from export.graph_engines import EngineSpec
from export.pipeline import graph_paths


def specs(threads: int) -> list[EngineSpec]:
    layouts = [(1, threads), (threads, 1)]  # (streams, threads per stream)
    out = []
    for streams, per in layouts:
        out.append(EngineSpec("onnxruntime", "model.int8-dynamic.onnx", threads=per, streams=streams))
        out.append(EngineSpec("onnxruntime", "model.fp32.onnx", threads=per, streams=streams))
        for graph in ("model.fp32.onnx", "model.int8-qdq.onnx"):
            for precision in openvino_precisions():
                out.append(EngineSpec("openvino", graph, precision, threads=per, streams=streams))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=Path("artifacts/onnx"))
    parser.add_argument("--tasks", nargs="+", default=["question_answering", "fill_mask"])
    parser.add_argument("--threads", type=int, default=2, help="the core budget")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0, help="per candidate and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench_engines.json"))
    args = parser.parse_args()
    trial = EngineTrial(seconds=args.seconds, rounds=args.rounds, batch=args.batch, length=args.length)
    cpu = cpu_signature()
    print(f"CPU: {cpu['model']} ({', '.join(cpu['isa'])}); batch {args.batch} x {args.length}, {args.threads} cores")
    results = {"cpu": cpu, "trial": asdict(trial), "tasks": {}}
    for task in args.tasks:
        folder = graph_paths(args.onnx, task, "fp32")[0].parent
        dims = {"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}
        results["tasks"][task] = {}
        # the build's serving-like mix of batch sizes and lengths, and one full batch alone (what in-process
        # benchmarks usually report)
        for mix, feeds in (("mix", trial_feeds(dims, trial, 30522)), ("full", [trial_feed(dims, trial, 30522)])):
            choice = choose(folder, specs(args.threads), feeds, trial, CpuSettings.max_run_tokens)
            base = next(
                m["seq_per_s"] for m in choice.measured if m["label"].startswith("onnxruntime int8-dynamic 2x1")
            )
            shapes = trial.shapes() if mix == "mix" else [(trial.batch, trial.length)]
            print(f"\n{task}, batches (rows x tokens) {', '.join(f'{b}x{n}' for b, n in shapes)}")
            print("| engine, graph, precision, streams x threads | rows/s (best) | rounds | vs ORT INT8 2x1 |")
            print("|---|---:|---|---:|")
            for m in sorted(choice.measured, key=lambda m: -m["seq_per_s"]):
                rounds = ", ".join(f"{r:.1f}" for r in m["rounds"])
                print(f"| {m['label']} | {m['seq_per_s']:.1f} | {rounds} | {m['seq_per_s'] / base:.2f} |")
            results["tasks"][task][mix] = choice.to_dict()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()

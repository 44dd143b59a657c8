"""How fast can any INT8 MobileBERT run on this CPU? The INT8 matrix-multiply rate of onnxruntime and OpenVINO on
MobileBERT's own layer shapes, and the sequences per second it bounds: the ceiling behind issue 15's speed targets.

A MobileBERT forward pass is almost all MatMul: per 128-token sequence (`macs_per_sequence`, counted from the model's
dimensions) 2.57 GMAC in the 24 layers' projections and feed-forward networks, 0.10 in attention scores and mixing,
0.03 in the embedding projection. This builds a float graph of the layers' MatMuls alone (24 layers' worth of
distinct weights, wired as the layer wires them, Adds standing in for attention and norms), quantizes it as
the repository does (onnxruntime dynamic INT8, and static U8S8 QDQ, which OpenVINO runs with INT8 kernels as it runs
NNCF's INT8 models), and runs 8 x 128 tokens through it: one stream of 1 thread, and 2 streams of 1 thread each from
two threads (the runner's layout on 2 cores). GMAC/s over the layer MACs is each engine's INT8 GEMM rate on exactly
this work, with nothing else in the graph; dividing by the MACs of a whole sequence bounds the sequences per second
a complete model can reach with that engine on this CPU. Where the CPU computes bf16 (AMX, AVX512-BF16), the float
graph at OpenVINO's bf16 precision runs beside them: the rate INT8 has to beat there.

    python benchmarks/bench_int8_roofline.py [--seconds 3] [--out artifacts/perf/int8-roofline.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from transformers import MobileBertConfig

from export.cpu import cpu_signature

TOKENS = 8 * 128  # rows of every MatMul: a batch of 8 sequences of 128 tokens


def layer_shapes(config: MobileBertConfig) -> list[tuple[int, int]]:
    """(K, N) of the MatMuls one MobileBERT layer runs per token, in the order it runs them."""
    hidden, inner, ffn = config.hidden_size, config.intra_bottleneck_size, config.intermediate_size
    shapes = [(hidden, inner), (hidden, inner)]  # input and shared query/key bottlenecks
    shapes += [(inner, inner), (inner, inner), (hidden, inner)]  # query, key, value (value reads the wide input)
    shapes += [(inner, inner)]  # attention output
    shapes += [(inner, ffn), (ffn, inner)] * config.num_feedforward_networks
    shapes += [(inner, hidden)]  # output bottleneck back to the wide residual
    return shapes


def macs_per_sequence(config: MobileBertConfig, length: int = 128) -> dict[str, float]:
    """Multiply-accumulates of one forward pass over `length` tokens, by part (heads excluded: a few per sequence)."""
    layers = sum(k * n for k, n in layer_shapes(config)) * length * config.num_hidden_layers
    attention = 2 * length * length * config.true_hidden_size * config.num_hidden_layers  # scores and mixing
    embedding = 3 * config.embedding_size * config.hidden_size * length  # trigram input projection
    return {"layers": layers, "attention": attention, "embedding": embedding, "total": layers + attention + embedding}


def layer_graph(config: MobileBertConfig, path: Path) -> int:
    """A float ONNX graph with every MatMul of the model's layers (distinct weights per layer), wired as a layer
    wires them, with Adds where the layer has attention, norms and residuals; returns its MACs at TOKENS rows."""
    rng = np.random.default_rng(0)
    hidden, inner, ffn = config.hidden_size, config.intra_bottleneck_size, config.intermediate_size
    nodes: list = []
    weights: list = []
    macs = 0

    def matmul(x: str, k: int, n: int) -> str:
        nonlocal macs
        name = f"w{len(weights)}"
        weights.append(numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), name))
        nodes.append(helper.make_node("MatMul", [x, name], [f"{name}_out"]))
        macs += TOKENS * k * n
        return f"{name}_out"

    def add(a: str, b: str) -> str:
        out = f"add{len(nodes)}"
        nodes.append(helper.make_node("Add", [a, b], [out]))
        return out

    x = "x"
    for _ in range(config.num_hidden_layers):
        inputs = matmul(x, hidden, inner)  # input bottleneck
        shared = matmul(x, hidden, inner)  # shared query/key bottleneck
        value = matmul(x, hidden, inner)  # value reads the wide input
        mixed = add(add(matmul(shared, inner, inner), matmul(shared, inner, inner)), value)  # stands in for attention
        t = add(matmul(mixed, inner, inner), inputs)  # attention output + residual
        for _ in range(config.num_feedforward_networks):
            t = add(matmul(matmul(t, inner, ffn), ffn, inner), t)
        x = add(matmul(t, inner, hidden), x)  # output bottleneck back to the wide residual
    graph = helper.make_graph(
        nodes,
        "mobilebert_layer_matmuls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", hidden])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["rows", hidden])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return macs


def quantized(float_path: Path, folder: Path, width: int) -> dict[str, Path]:
    """The dynamic INT8 graph (what the repository serves with onnxruntime) and a static U8S8 QDQ graph."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.batches = iter([{"x": rng.standard_normal((64, width)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    dynamic, qdq = folder / "dynamic.onnx", folder / "qdq.onnx"
    quantize_dynamic(float_path, dynamic, weight_type=QuantType.QInt8)
    quantize_static(
        float_path,
        qdq,
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return {"onnxruntime int8-dynamic": dynamic, "onnxruntime int8-qdq": qdq, "openvino int8-qdq": qdq}


def runner(engine: str, path: Path, streams: int):
    """run(x, stream) for `engine` on `path`: 1 thread per stream, streams share one copy of the weights."""
    if engine.startswith("onnxruntime"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x, stream: session.run(None, {"x": x})
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": streams, "NUM_STREAMS": streams, "ENABLE_CPU_PINNING": False}
    # INT8 where the graph says so and no bf16 elsewhere, unless the row is the bf16 one
    config["INFERENCE_PRECISION_HINT"] = "bf16" if engine.endswith("bf16") else "f32"
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    requests = [compiled.create_infer_request() for _ in range(streams)]
    return lambda x, stream: requests[stream].infer({0: x})


def _openvino_bf16() -> bool:
    """Whether OpenVINO computes bf16 on this CPU (else a bf16 hint would silently run f32)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def rate(run, x: np.ndarray, streams: int, seconds: float) -> float:
    """Runs per second with `streams` threads each running back to back for `seconds` (after one warm-up each)."""
    for stream in range(streams):
        run(x, stream)

    def loop(stream: int, started: float) -> int:
        done = 0
        while time.perf_counter() - started < seconds:
            run(x, stream)
            done += 1
        return done

    with ThreadPoolExecutor(streams) as pool:
        started = time.perf_counter()
        done = sum(pool.map(loop, range(streams), [started] * streams))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per engine and layout")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved; the best counts")
    parser.add_argument("--out", type=Path, default=Path("artifacts/perf/int8-roofline.json"))
    args = parser.parse_args()
    config = MobileBertConfig()  # google/mobilebert-uncased's dimensions
    sequence = macs_per_sequence(config)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        macs = layer_graph(config, folder / "float.onnx")
        graphs = quantized(folder / "float.onnx", folder, config.hidden_size)
        x = np.random.default_rng(2).standard_normal((TOKENS, config.hidden_size)).astype(np.float32)
        if _openvino_bf16():
            graphs["openvino fp32 bf16"] = folder / "float.onnx"
        runs = {(e, s): runner(e, p, s) for e, p in graphs.items() for s in (1, 2)}
        best: dict[tuple[str, int], float] = {}
        for _ in range(args.rounds):
            for (engine, streams), run in runs.items():
                best[(engine, streams)] = max(best.get((engine, streams), 0.0), rate(run, x, streams, args.seconds))
    print(f"CPU: {cpu_signature()}")
    print(
        f"MobileBERT per 128-token sequence: {sequence['total'] / 1e9:.2f} GMAC "
        f"(layers {sequence['layers'] / 1e9:.2f}, attention {sequence['attention'] / 1e9:.2f}, "
        f"embedding {sequence['embedding'] / 1e9:.2f}); the layer MatMul graph: {macs / 1e9:.2f} GMAC per 8 x 128"
    )
    print("| engine | streams x threads | GEMM GMAC/s | bound: sequences/s of a whole model at this rate |")
    print("|---|---|---:|---:|")
    rows = []
    for (engine, streams), per_second in best.items():
        gmacs = per_second * macs / 1e9
        bound = gmacs * 1e9 / sequence["total"]
        rows.append(
            {"engine": engine, "streams": streams, "gmac_per_s": round(gmacs, 1), "seq_per_s_bound": round(bound, 1)}
        )
        print(f"| {engine} | {streams}x1 | {gmacs:.0f} | {bound:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"cpu": cpu_signature(), "macs_per_sequence": sequence, "rows": rows}, indent=2) + "\n"
    )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

"""The exported graphs under the other CPU engine: OpenVINO, at each precision this CPU offers, held to the gates.

onnxruntime is what the export validates every flavour with. A CPU may serve a graph faster with OpenVINO (bf16 on
AMX, or its own INT8 kernels on the QDQ graph), but only what passed the same validation, on the same inputs,
at the precision that would serve, may be served: these figures go into the graph's manifest (`engines`), and
`deploy build` chooses among the candidates that passed (deploy/engine_choice.py). Engines are run through
export/graph_engines.py, the module the Triton runner itself uses (the build ships it beside the runner).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .cpu import cpu_signature
from .errors import GateFailure
from .graph_engines import EngineSpec, open_engine
from .heads import INPUT_NAMES, HeadSpec
from .sample_inputs import Batch
from .validate import Gates, apply_gates, compare

logger = logging.getLogger(__name__)

# Graph flavours OpenVINO can run: the int8-dynamic graph is written in onnxruntime's own contrib ops (QAttention,
# DynamicQuantizeLinear + MatMulInteger), which are onnxruntime's alone.
OPENVINO_FLAVOURS = ("fp32", "int8-qdq")


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


def openvino_precisions(cpu: dict | None = None) -> tuple[str, ...]:
    """f32 always; bf16 where the CPU computes it natively (AVX512-BF16 or AMX), as OpenVINO's default would."""
    isa = set((cpu or cpu_signature())["isa"])
    return ("f32", "bf16") if isa & {"avx512_bf16", "amx_bf16"} else ("f32",)


def engine_candidates(flavour: str, cpu: dict | None = None) -> list[EngineSpec]:
    """The non-onnxruntime engines worth validating for `flavour` on this CPU (none when OpenVINO is missing)."""
    if flavour not in OPENVINO_FLAVOURS or openvino_version() is None:
        return []
    graph = f"model.{flavour}.onnx"
    return [EngineSpec("openvino", graph, precision) for precision in openvino_precisions(cpu)]


def validate_engines(
    spec: HeadSpec,
    flavour: str,
    graph_path: Path,
    batches: list[Batch],
    reference: list[list[np.ndarray]],
    gates: Gates,
    threads: int,
) -> dict[str, dict]:
    """label -> figures (with `passed`) of each candidate engine on `graph_path`, against the PyTorch reference.

    Every candidate is held to the serving gates (cosine, prediction inside FP32's top-5), whatever the graph's
    flavour: bf16 or INT8 arithmetic is what would serve. A miss is recorded, not raised: the engine is then not a
    candidate, and onnxruntime still serves the graph.
    """
    out: dict[str, dict] = {}
    cpu = cpu_signature()
    for candidate in engine_candidates(flavour, cpu):
        candidate = EngineSpec(candidate.engine, graph_path.name, candidate.precision, threads=threads)
        label = f"{candidate.engine}-{candidate.precision}"
        try:
            engine = open_engine(graph_path.parent, candidate, cache=False)  # validation layout is not served
            outputs = [
                dict(zip(engine.output_names, engine.run({n: b.arrays[n] for n in INPUT_NAMES}), strict=True))
                for b in batches
            ]
        except Exception as exc:  # an engine that cannot load or run the graph is no candidate; say why
            logger.warning("%s/%s: %s cannot run the graph: %s", spec.name, flavour, label, exc)
            out[label] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"[:300], "cpu": cpu}
            continue
        candidate_outputs = [[o[name] for name in spec.output_names] for o in outputs]
        figures = compare(spec, batches, reference, candidate_outputs)
        try:
            apply_gates(spec, label, figures, gates)
        except GateFailure as exc:
            logger.warning("%s", exc)
        out[label] = {**figures.to_dict(), "engine": candidate.engine, "precision": candidate.precision, "cpu": cpu}
    return out

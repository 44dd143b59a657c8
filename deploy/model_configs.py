"""Triton model configurations built and checked with Triton's own protobuf (tritonclient's model_config_pb2).

Writing config.pbtxt by hand means a typo surfaces at deployment; building the ModelConfig message and printing it
with protobuf's text_format means it surfaces here, and `parse_config` checks any config.pbtxt the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.graph_engines import EngineSpec

DEFAULT_LENGTH_BUCKETS = (32, 64, 128, 256, 512)


def parse_config(path: str | Path) -> mc.ModelConfig:
    """Parse a config.pbtxt into ModelConfig; raises ValueError naming the file and the problem."""
    path = Path(path)
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path} is not a valid Triton ModelConfig: {exc}") from exc


def write_config(config: mc.ModelConfig, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path


def tokenizer_config(
    *,
    name: str = "tokenizer",
    length_buckets: tuple[int, ...] = DEFAULT_LENGTH_BUCKETS,
    truncation: str = "longest_first",
    max_batch_size: int = 64,
    instances: int = 1,
    max_queue_delay_us: int = 500,
    max_text_bytes: int = 256 * 1024,
) -> mc.ModelConfig:
    if not length_buckets or any(b <= 2 for b in length_buckets):
        raise ValueError(f"length buckets must be > 2 tokens each, got {length_buckets}")
    if truncation not in ("longest_first", "only_first", "only_second"):
        raise ValueError(f"truncation must be longest_first, only_first or only_second, got {truncation!r}")
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.input.append(mc.ModelInput(name="TEXT", data_type=mc.TYPE_STRING, dims=[1]))
    config.input.append(mc.ModelInput(name="TEXT_PAIR", data_type=mc.TYPE_STRING, dims=[1], optional=True))
    for out in ("input_ids", "attention_mask", "token_type_ids"):
        config.output.append(mc.ModelOutput(name=out, data_type=mc.TYPE_INT64, dims=[-1]))
    config.output.append(mc.ModelOutput(name="offsets", data_type=mc.TYPE_INT64, dims=[-1, 2]))
    config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances))
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.parameters["length_buckets"].string_value = ",".join(str(b) for b in sorted(length_buckets))
    config.parameters["truncation"].string_value = truncation
    config.parameters["max_text_bytes"].string_value = str(max_text_bytes)
    return config


# ---------------------------------------------------------------------------------------------- serving settings


@dataclass(frozen=True)
class BatchingSettings:
    """Batch sizes and the dynamic batcher of the ONNX model step (see README: how these were chosen)."""

    max_batch_size: int = 64
    # 4/8 rather than 8/16: with two runner streams (or instances) a batch of 4 goes to the idle one instead of
    # waiting to grow (faster end to end: figures in README "Tuning"); 1-thread sessions gain little beyond batch 8
    # (benchmarks/bench_batching.py).
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred batch sizes {bad} are outside 1..max_batch_size={self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")


@dataclass(frozen=True)
class CpuSettings:
    """The default profile: the pip-installed server, graphs run inside a Python-backend runner by onnxruntime or
    OpenVINO, whichever serves faster on this CPU among the graphs validated here (deploy/engine_choice.py)."""

    graph_flavour: str = "int8-dynamic"  # onnxruntime's graph (and the stock-cpu profile's)
    # instances x streams x threads = cores. One instance running two single-thread inferences at once (one batch in
    # flight per stream, onnx_runner.py) serves as fast as two single-thread instances on 2 cores with one copy of
    # the weights and runtime instead of two (~1 GB less for the repository), and both beat one two-thread inference
    # (figures in README "Tuning"): a 1-thread inference never waits at a thread-pool barrier for a core the
    # tokenizer, post-processing or gRPC took, and one batch's Python work overlaps the other's compute.
    intra_op_threads: int = 1
    instances: int = 1
    # Parallel inferences inside one instance, sharing its one copy of the weights (export/graph_engines.py).
    streams: int = 2
    # Run each batch at its real length, not the bucket's (onnx_runner.py): fewer wasted columns, same results.
    trim_padding: bool = True
    # Tokens one engine run holds at most: a batch beyond it runs as consecutive slices (bounded_runs.py). 4 rows of
    # 128 tokens kept each runner's working memory from growing with the batches sustained load forms, and ran as fast
    # as 8-16 rows (figures in bounded_runs.py and README "Memory").
    max_run_tokens: int = 512
    # Rows of similar real length share a run (bounded_runs.plan_runs): less padding computed, +3% on 4-row batches
    # and +15% on 8-16-row batches of 65..127-token texts on a Zen 4; False runs them in arrival order.
    pack_runs: bool = True
    # "auto": measured at build among onnxruntime and the engines validated on this CPU; or force one.
    engine: str = "auto"

    def __post_init__(self) -> None:
        if min(self.intra_op_threads, self.instances, self.streams, self.max_run_tokens) < 1:
            raise ValueError(f"threads, instances, streams and max_run_tokens must be >= 1 (got {self})")
        if self.engine not in ("auto", "onnxruntime", "openvino"):
            raise ValueError(f"engine must be auto, onnxruntime or openvino, not {self.engine!r}")


@dataclass(frozen=True)
class GpuSettings:
    """The `gpu` profile: the official Triton container's onnxruntime backend with TensorRT INT8 on the QDQ graph."""

    graph_flavour: str = "int8-qdq"
    instances: int = 1
    workspace_bytes: int = 4 << 30
    engine_cache_path: str = "/tmp/mobilebert-trt-cache"
    opt_batch: int = 8
    opt_length: int = 128
    max_length: int = 512


@dataclass(frozen=True)
class GraphTensor:
    name: str
    data_type: int
    dims: tuple[int, ...]  # without the batch dimension when the model batches


_ONNX_TO_TRITON = {1: mc.TYPE_FP32, 6: mc.TYPE_INT32, 7: mc.TYPE_INT64, 9: mc.TYPE_BOOL, 10: mc.TYPE_FP16}


def graph_signature(path: Path, batched: bool) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """Inputs and outputs of an ONNX graph as Triton tensors: symbolic dims become -1; the batch dim is dropped."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def convert(value: onnx.ValueInfoProto) -> GraphTensor:
        elem = value.type.tensor_type.elem_type
        if elem not in _ONNX_TO_TRITON:
            raise ValueError(f"{path}: tensor {value.name} has ONNX element type {elem}, which is not mapped")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
        return GraphTensor(value.name, _ONNX_TO_TRITON[elem], dims[1:] if batched else dims)

    return [convert(v) for v in graph.input], [convert(v) for v in graph.output]


def _add_io(config: mc.ModelConfig, inputs: list[GraphTensor], outputs: list[GraphTensor]) -> None:
    for t in inputs:
        config.input.append(mc.ModelInput(name=t.name, data_type=t.data_type, dims=list(t.dims)))
    for t in outputs:
        config.output.append(mc.ModelOutput(name=t.name, data_type=t.data_type, dims=list(t.dims)))


def _dynamic_batching(config: mc.ModelConfig, batching: BatchingSettings) -> None:
    config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us


CPU, GPU = mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_GPU


def _graph_config(
    name: str,
    signature: tuple[list[GraphTensor], list[GraphTensor]],
    batched: bool,
    batching: BatchingSettings,
    *,
    backend: str,
    kind: int,
    count: int,
    graph_file: str = "",
) -> mc.ModelConfig:
    """What every profile of a graph model shares: its I/O, one instance group, dynamic batching when batched."""
    config = mc.ModelConfig(
        name=name,
        backend=backend,
        default_model_filename=graph_file,  # native backends load it; the Python runner reads its parameter
        max_batch_size=batching.max_batch_size if batched else 0,
    )
    _add_io(config, *signature)
    config.instance_group.append(mc.ModelInstanceGroup(kind=kind, count=count))
    if batched:
        _dynamic_batching(config, batching)
    return config


def onnx_cpu_config(
    name: str,
    engine: EngineSpec,
    signature: tuple[list[GraphTensor], list[GraphTensor]],
    *,
    batched: bool,
    batching: BatchingSettings,
    cpu: CpuSettings,
    output_axes: dict[str, list[int | str]],
    limits: dict[str, int] | None = None,
) -> mc.ModelConfig:
    """Default profile: the Python-backend runner hosting `engine` (graph, engine, precision, threads, streams).

    `output_axes`: each output's dimensions as the ONNX file names them (the runner finds the sequence axes there;
    OpenVINO does not keep the names)."""
    config = _graph_config(name, signature, batched, batching, backend="python", kind=CPU, count=cpu.instances)
    for key, value in engine.to_parameters().items():
        config.parameters[key].string_value = value
    config.parameters["trim_padding"].string_value = "true" if cpu.trim_padding else "false"
    config.parameters["max_run_tokens"].string_value = str(cpu.max_run_tokens)
    config.parameters["pack_runs"].string_value = "true" if cpu.pack_runs else "false"
    config.parameters["output_axes"].string_value = json.dumps(output_axes, separators=(",", ":"))
    for key, value in (limits or {}).items():  # input ranges the runner checks (vocab_size, ...)
        config.parameters[key].string_value = str(value)
    return config


def output_axes(path: Path) -> dict[str, list[int | str]]:
    """Each output's dimensions as the ONNX graph writes them: a size, or the symbolic name ("sequence", ...)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        o.name: [d.dim_param if d.dim_param else d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in graph.output
    }


def onnx_stock_cpu_config(
    name: str,
    graph_file: str,
    signature: tuple[list[GraphTensor], list[GraphTensor]],
    *,
    batched: bool,
    batching: BatchingSettings,
    cpu: CpuSettings,
) -> mc.ModelConfig:
    """`stock-cpu` profile: the official Triton image's native onnxruntime backend on KIND_CPU, `graph_file` (the
    INT8-dynamic graph). Same I/O as the default profile; what the Python runner adds (cutting padding columns,
    input range checks with clear errors) is not there, so per-token outputs come back at the bucket length."""
    # The native backend has no streams: as many instances as the runner runs inferences in parallel, each with the
    # runner's threads (instances x streams x threads = cores).
    config = _graph_config(
        name,
        signature,
        batched,
        batching,
        backend="onnxruntime",
        kind=CPU,
        count=cpu.instances * cpu.streams,
        graph_file=graph_file,
    )
    config.parameters["intra_op_thread_count"].string_value = str(cpu.intra_op_threads)
    config.parameters["inter_op_thread_count"].string_value = "1"
    return config


def onnx_stock_openvino_config(
    name: str,
    engine: EngineSpec,
    signature: tuple[list[GraphTensor], list[GraphTensor]],
    *,
    batched: bool,
    batching: BatchingSettings,
) -> mc.ModelConfig:
    """`stock-openvino` profile: the official Triton image's native openvino backend, which reads the ONNX file
    itself, on `engine`'s graph with its streams and threads: one instance, `streams` parallel infer requests, one
    copy of the weights. The backend's own parameter names; its precision is OpenVINO's default for the CPU."""
    config = _graph_config(
        name, signature, batched, batching, backend="openvino", kind=CPU, count=1, graph_file=engine.graph
    )
    config.parameters["NUM_STREAMS"].string_value = str(engine.streams)
    config.parameters["INFERENCE_NUM_THREADS"].string_value = str(engine.streams * engine.threads)
    config.parameters["PERFORMANCE_HINT"].string_value = "LATENCY" if engine.streams == 1 else "THROUGHPUT"
    return config


def onnx_gpu_config(
    name: str,
    graph_file: str,
    signature: tuple[list[GraphTensor], list[GraphTensor]],
    *,
    batched: bool,
    batching: BatchingSettings,
    gpu: GpuSettings,
) -> mc.ModelConfig:
    """`gpu` profile: native onnxruntime backend on KIND_GPU, TensorRT INT8 (explicit QDQ) with an engine cache."""
    config = _graph_config(
        name, signature, batched, batching, backend="onnxruntime", kind=GPU, count=gpu.instances, graph_file=graph_file
    )
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
    trt.name = "tensorrt"
    # One optimization profile covering every batch the dynamic batcher forms and every length bucket, so TensorRT
    # builds one engine (cached across restarts) instead of one per new shape.
    inputs = signature[0]
    lead_max = (batching.max_batch_size,) if batched else (1, 32)
    lead_opt = (gpu.opt_batch,) if batched else (1, 4)
    shapes = {
        "trt_profile_min_shapes": ",".join(f"{t.name}:" + "x".join(["1"] * (len(t.dims) + batched)) for t in inputs),
        "trt_profile_opt_shapes": ",".join(
            f"{t.name}:" + "x".join(map(str, (*lead_opt, gpu.opt_length))) for t in inputs
        ),
        "trt_profile_max_shapes": ",".join(
            f"{t.name}:" + "x".join(map(str, (*lead_max, gpu.max_length))) for t in inputs
        ),
    }
    values = {
        "precision_mode": "INT8",
        "max_workspace_size_bytes": str(gpu.workspace_bytes),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": f"{gpu.engine_cache_path}/{name}",
        **shapes,
    }
    for key, value in values.items():
        trt.parameters[key] = value
    return config


def choices_tokenizer_config(
    *, name: str, length_buckets: tuple[int, ...], truncation: str, max_choices: int = 32
) -> mc.ModelConfig:
    """The multiple-choice tokenizer: one PROMPT and its CHOICES in, [1, choices, length] tensors out."""
    config = tokenizer_config(name=name, length_buckets=length_buckets, truncation=truncation)
    config.max_batch_size = 0
    config.ClearField("dynamic_batching")
    del config.input[:]
    config.input.append(mc.ModelInput(name="PROMPT", data_type=mc.TYPE_STRING, dims=[1]))
    config.input.append(mc.ModelInput(name="CHOICES", data_type=mc.TYPE_STRING, dims=[-1]))
    for out in config.output:
        out.dims[:] = [-1, -1, *out.dims]
    config.parameters["mode"].string_value = "choices"
    config.parameters["max_choices"].string_value = str(max_choices)
    return config

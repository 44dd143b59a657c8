"""The engines that run an exported graph on CPU: onnxruntime or OpenVINO, behind one small interface.

Shipped beside the Triton runner (deploy/python_models/onnx_runner.py) by the build, and used by the export's engine
validation and the build's engine trial (deploy/engine_choice.py), so what was validated and measured is run exactly
as the server runs it. Needs numpy and the runtime alone (serving imports no torch or onnx).
Each engine imports its runtime only when asked for: a repository served by onnxruntime needs no OpenVINO.

`EngineSpec` is what the build chose and wrote into the runner's config: the engine, the graph file, the inference
precision (OpenVINO: "f32" or "bf16"; onnxruntime: what the graph is), the threads per inference and the number of
parallel inferences (`streams`) one instance runs. Several streams share one copy of the weights (one OpenVINO
compiled model with one infer request per stream; one onnxruntime session run from several threads at once): the
runner keeps one batch in flight per stream, which is how one instance per task replaces two instances' two copies.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from dataclasses import dataclass

import numpy as np

ENGINES = ("onnxruntime", "openvino")
OPENVINO_PRECISIONS = ("f32", "bf16")
OPENVINO_CACHE = "openvino-cache"  # inside the model's version folder: per CPU kind, then per precision and layout
# The runner trims a batch's padding to its longest text, rounded up to this many tokens. OpenVINO compiles kernels
# and allocates buffers for every new input shape (measured on a full-size QA graph on an AMD EPYC Zen 4: ~0.3-0.5 s
# the first time a shape comes, and RSS from 0.35 to 1.4 GB over 24 shapes), so its lengths come in steps of 32;
# onnxruntime has no per-shape cost and runs the exact length.
LENGTH_STEP = {"onnxruntime": 1, "openvino": 32}


@dataclass(frozen=True)
class EngineSpec:
    engine: str
    graph: str  # file name inside the model's version folder
    precision: str = "graph"  # onnxruntime runs the graph as written; OpenVINO: "f32" or "bf16"
    threads: int = 1  # per inference
    streams: int = 1  # parallel inferences sharing one copy of the weights

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r} is not one of {ENGINES}")
        if self.engine == "openvino" and self.precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"OpenVINO precision {self.precision!r} is not one of {OPENVINO_PRECISIONS}")
        if self.engine == "onnxruntime" and self.precision != "graph":
            raise ValueError(f"onnxruntime runs the graph's own precision, not {self.precision!r}")
        if self.threads < 1 or self.streams < 1:
            raise ValueError(f"threads and streams must be >= 1 (got {self.threads}, {self.streams})")

    @property
    def label(self) -> str:
        """Short name for tables: engine, graph flavour, precision, layout."""
        flavour = self.graph.removeprefix("model.").removesuffix(".onnx")
        precision = "" if self.precision == "graph" else f" {self.precision}"
        return f"{self.engine} {flavour}{precision} {self.streams}x{self.threads}"

    @property
    def cache_layout(self) -> str:
        """The compiled-model cache's subfolder for this engine: what it is compiled with besides graph and CPU."""
        return f"{self.precision}-{self.streams}x{self.threads}"

    def to_parameters(self) -> dict[str, str]:
        """The runner's config parameters (deploy.model_configs writes them; the runner reads them back)."""
        return {
            "engine": self.engine,
            "graph": self.graph,
            "precision": self.precision,
            "intra_op_threads": str(self.threads),
            "streams": str(self.streams),
        }

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> EngineSpec:
        return cls(
            engine=params["engine"],
            graph=params["graph"],
            precision=params["precision"],
            threads=int(params["intra_op_threads"]),
            streams=int(params["streams"]),
        )


class OrtEngine:
    """One onnxruntime session (one copy of the weights); several streams call it from as many threads at once
    (its run() is thread-safe, releases the GIL, and with one intra-op thread computes on the calling thread). With
    `threads` > 1 the streams share one intra-op pool of `threads` (each calling thread computes too), unlike
    OpenVINO's `threads` per stream: the layouts that serve and are compared use 1 thread per stream."""

    def __init__(self, path: str, spec: EngineSpec) -> None:
        import onnxruntime as ort

        self.spec = spec
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray], stream: int = 0) -> list[np.ndarray]:
        """One inference; streams 0..streams-1 may run at once, each from its own thread."""
        _check_stream(self.spec, stream)
        return self.session.run(self.output_names, feed)


class OpenVinoEngine:
    """One OpenVINO compiled model (one copy of the weights) with one infer request per stream."""

    def __init__(self, path: str, spec: EngineSpec, cache_dir: str | None = None) -> None:
        import openvino as ov

        self.spec = spec
        core = ov.Core()
        if cache_dir:
            # compiling takes seconds to a minute per graph; with a cache the build's engine trial compiles once and
            # every server start after it imports the blob (OpenVINO keys it by graph, config and its own version)
            core.set_property({"CACHE_DIR": cache_dir})
        config = {
            "INFERENCE_NUM_THREADS": spec.threads * spec.streams,
            "NUM_STREAMS": spec.streams,
            "INFERENCE_PRECISION_HINT": spec.precision,
            # several Triton instances and the tokenizer share the cores: no pinning to cores others use
            "ENABLE_CPU_PINNING": False,
        }
        # from the path, not a read model: on a cache hit OpenVINO then skips reading and transforming the graph
        self.compiled = core.compile_model(path, "CPU", config)
        # Compiling reads every weight of the memory-mapped graph data (or cached blob), and the compiled model keeps
        # the mapping although it computes on its own repacked copy: on a full-size QA graph at bf16 (AMX) 96 MB of
        # the runner's RSS were those pages, of which inference touches back ~19 MB (embeddings, biases).
        self.paged_out_mb = page_out_mapped_files(os.path.dirname(os.path.abspath(path)))
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]
        self.requests = [self.compiled.create_infer_request() for _ in range(spec.streams)]

    def _outputs(self, request) -> list[np.ndarray]:
        # copies: the request's output buffers are reused by its next inference
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]

    def run(self, feed: dict[str, np.ndarray], stream: int = 0) -> list[np.ndarray]:
        """One inference on `stream`'s infer request (infer() releases the GIL); streams 0..streams-1 may run at
        once, each from its own thread, never two on one stream."""
        _check_stream(self.spec, stream)
        request = self.requests[stream]
        request.infer(feed)
        return self._outputs(request)


MADV_PAGEOUT = 21  # Linux 5.4+: reclaim the pages now; clean file pages are dropped, nothing is ever discarded


def page_out_mapped_files(folder: str, maps: str = "/proc/self/maps") -> float:
    """Ask the kernel to reclaim this process's resident pages of the files mapped from inside `folder`; returns the
    MB of mappings advised, not what was freed (0 where /proc or madvise is absent; the kernel skips pages other
    processes share, and files on tmpfs without swap keep theirs). Safe for any mapping: MADV_PAGEOUT drops clean file
    pages, which fault back in from the file when touched, and leaves written (private) pages alone without swap,
    unlike MADV_DONTNEED, which would discard them."""
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0.0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prefix = os.path.join(os.path.realpath(folder), "")
    advised = 0
    for line in lines:
        fields = line.split(maxsplit=5)
        path = fields[5].strip().removesuffix(" (deleted)") if len(fields) == 6 else ""
        # "[heap]", "[stack]", "[anon:...]" are no files (and would resolve against the working directory)
        if not path.startswith("/") or not os.path.realpath(path).startswith(prefix):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    return advised / 2**20


def _check_stream(spec: EngineSpec, stream: int) -> None:
    if not 0 <= stream < spec.streams:  # the runner's bug, never the caller's: not a ValueError (INVALID_ARG)
        raise RuntimeError(f"stream {stream} does not exist: this engine runs {spec.streams} stream(s)")


def openvino_cache_dir(folder: str | os.PathLike, cpuinfo: str | None = None, layout: str = "") -> str | None:
    """`folder`/openvino-cache/<CPU kind>[/<layout>], created; None where it cannot be written (a read-only
    repository: OpenVINO then compiles at every load). Keyed by the CPU's flags because a compiled model holds the
    kernels and precisions chosen for the CPU it was compiled on, and by `layout` (the engine's precision, streams
    and threads: `EngineSpec.cache_layout`) because OpenVINO's own cache key leaves the precision hint out: on an
    Intel Xeon with AMX (openvino 2026.4) a bf16 engine imported the f32 engine's blob of the same graph and crashed
    in its first inferences (SIGSEGV, SIGFPE, abort)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    lines = cpuinfo.splitlines()
    flags = next((line.partition(":")[2] for line in lines if line.startswith(("flags", "Features"))), "")
    key = hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:16]
    path = os.path.join(folder, OPENVINO_CACHE, key, layout) if layout else os.path.join(folder, OPENVINO_CACHE, key)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def open_engine(folder: str | os.PathLike, spec: EngineSpec, cache: bool = True) -> OrtEngine | OpenVinoEngine:
    """The engine of `spec` on the graph file `spec.graph` inside `folder` (OpenVINO: compiled models cached in
    `folder` unless `cache` is False)."""
    path = os.path.join(folder, spec.graph)
    if spec.engine == "openvino":
        return OpenVinoEngine(path, spec, openvino_cache_dir(folder, layout=spec.cache_layout) if cache else None)
    return OrtEngine(path, spec)

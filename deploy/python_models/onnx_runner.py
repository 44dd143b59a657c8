"""Triton Python-backend host for one exported ONNX graph on CPU, run by onnxruntime or OpenVINO.

The pip-installed tritonserver has no onnxruntime backend, so this small model stands in for it. The engine, graph
file, precision, threads and parallel streams come from config parameters written by `python -m deploy build`, which
picks them per CPU by measurement (deploy/engine_choice.py); graph_engines.py, shipped beside this file, runs them.
Requests the dynamic batcher hands over together are grouped by shape (the tokenizer pads to length buckets, so
similar texts share a shape) and each group runs as engine calls of at most `max_run_tokens` tokens, rows of similar
real length together (bounded_runs.py).
A group that fails is retried request by request, so one bad request gets its own error and the others their results.

With several streams, one instance keeps one batch in flight per stream on one copy of the weights: execute() hands
the batch to a stream's thread and returns once a stream is free, and that thread answers through the requests'
response senders. Triton gives an instance its next batch only when execute() returns, so while every stream is
busy the dynamic batcher keeps gathering requests; a stream never waits for the other's Python work (feeding,
padding back, responses) as it would if one batch were split across them.
"""

import json
import os
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from bounded_runs import row_lengths, run_bounded
from graph_engines import LENGTH_STEP, EngineSpec, open_engine


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        # the engine's settings, trim_padding and output_axes are always in the config (deploy.model_configs): no
        # defaults here that could drift from the build's
        self.spec = EngineSpec.from_parameters(params)
        self.engine = open_engine(folder, self.spec)
        self.input_names = self.engine.input_names
        self.output_names = self.engine.output_names
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.max_batch = int(config.get("max_batch_size", 0))
        self.limits = {
            "input_ids": int(params.get("vocab_size", "0")) or None,
            "token_type_ids": int(params.get("type_vocab_size", "0")) or None,
            "attention_mask": 2,
        }
        self.limits = {k: v for k, v in self.limits.items() if v}
        self.max_length = int(params.get("max_position_embeddings", "512"))
        # every engine run holds at most this many tokens, or one row where a row is longer (bounded_runs.py: bounded
        # working memory, no speed lost); multiple choice (one unbatched [1, choices, length] request) runs whole
        self.max_run_tokens = int(params["max_run_tokens"])
        # rows of similar length share a run (less padding computed); "false" keeps arrival order (perf tune's A/B)
        self.pack_runs = params.get("pack_runs", "true") == "true"
        # Output axes whose size follows the input's sequence length (export names that axis "sequence"), as
        # functions of the length: trimmed runs are padded back to what the untrimmed run would return. The
        # fill-mask graph's slot axis ("Min(8, masks)") holds only as many slots as the run's rows have [MASK]s;
        # every run is padded to min(8, length) slots (invalid ones), so runs join and every batch answers alike.
        # An axis of any other form turns trimming off. The names come from the ONNX file via the build: OpenVINO
        # does not keep symbolic dimension names.
        self.trim_padding = params["trim_padding"] == "true" and "attention_mask" in self.input_names
        self.sequence_axes = {}
        for name, dims in json.loads(params["output_axes"]).items():
            axes = {}
            for axis, dim in enumerate(dims):
                if isinstance(dim, str) and ("sequence" in dim or "masks" in dim):
                    size = _sequence_size(dim)
                    if size is None:
                        self.trim_padding = False
                    else:
                        axes[axis] = size
            self.sequence_axes[name] = axes
        self._timing = _RunnerTiming(args["model_name"], args["model_version"])
        self._idle_streams = queue.SimpleQueue()
        for stream in range(self.spec.streams):
            self._idle_streams.put(stream)
        self._workers = None
        if self.spec.streams > 1:
            self._workers = ThreadPoolExecutor(self.spec.streams, thread_name_prefix="stream")

    def execute(self, requests):
        parsed = []
        for request in requests:
            try:
                parsed.append(self._feed(request))
            except Exception as exc:  # a malformed request fails alone
                parsed.append(exc)
        if self._workers is None:
            started = time.perf_counter()
            responses = self._responses(parsed, stream=0)
            self._timing.add(len(requests), time.perf_counter() - started)  # never raises
            return responses
        stream = self._idle_streams.get()  # blocks while every stream runs a batch: the batcher keeps batching
        try:
            senders = [request.get_response_sender() for request in requests]
            job = self._workers.submit(self._serve, requests, parsed, senders, stream)
        except BaseException:
            self._idle_streams.put(stream)  # a stream that never ran must not be lost
            raise
        job.add_done_callback(_log_failure)
        return None

    def _serve(self, requests, parsed, senders, stream):
        """One batch on `stream`'s thread; every request gets exactly one final response, whatever happens.
        `requests` rides along so the request objects (whose input tensors `parsed` views) live until answered."""
        started = time.perf_counter()
        try:
            try:
                responses = self._responses(parsed, stream)
            except Exception as exc:
                responses = [_error(exc, self.spec.engine) for _ in senders]
            elapsed = time.perf_counter() - started
            for sender, response in zip(senders, responses, strict=True):
                _send_final(sender, response, self.spec.engine)
            self._timing.add(len(senders), elapsed)  # after the answers: timing never holds one back
        finally:
            self._idle_streams.put(stream)

    def finalize(self):
        if self._workers is not None:
            self._workers.shutdown(wait=True)  # batches in flight are answered before the instance goes
        self._timing.close()

    def _responses(self, parsed, stream):
        responses = [None] * len(parsed)
        groups = {}
        for index, feed in enumerate(parsed):
            if isinstance(feed, Exception):
                responses[index] = _error(feed, self.spec.engine)
                continue
            key = tuple((name, array.shape[1:], array.dtype.str) for name, array in feed.items())
            groups.setdefault(key, []).append((index, feed))
        for members in groups.values():
            for chunk in _chunks(members, self.max_batch if self.batched else 1):
                self._run_group(chunk, responses, stream)
        return responses

    def _feed(self, request):
        feed = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            feed[name] = tensor.as_numpy()
        # Checked here because onnxruntime either fails with an opaque Gather error or, for negative ids, silently
        # wraps around (ONNX Gather accepts negative indices) and answers for the wrong token.
        for name, upper in self.limits.items():
            values = feed.get(name)
            if values is not None and values.size and (values.min() < 0 or values.max() >= upper):
                bad = values[(values < 0) | (values >= upper)].reshape(-1)[0]
                raise ValueError(f"{name} holds {bad}, outside the valid range [0, {upper})")
        ids = feed.get("input_ids")
        if ids is not None and ids.shape[-1] > self.max_length:
            raise ValueError(f"sequence length {ids.shape[-1]} exceeds the model's maximum {self.max_length}")
        return feed

    def _run_group(self, members, responses, stream):
        if len(members) > 1:
            try:
                merged = {n: np.concatenate([feed[n] for _, feed in members]) for n in self.input_names}
                outputs = self._run_bounded(merged, stream)
            except Exception:
                outputs = None  # retry one by one so only the offending request fails
            if outputs is not None:
                start = 0
                for index, feed in members:
                    rows = feed[self.input_names[0]].shape[0]
                    responses[index] = self._response([o[start : start + rows] for o in outputs])
                    start += rows
                return
        for index, feed in members:
            try:
                responses[index] = self._response(self._run_bounded(feed, stream))
            except Exception as exc:
                responses[index] = _error(exc, self.spec.engine)

    def _run_bounded(self, feed, stream):
        """The batch as engine runs of at most max_run_tokens tokens, counted at the rows' real lengths (not their
        bucket's); with pack_runs, rows of similar length run together (bounded_runs.plan_runs), else in arrival
        order. Each run is trimmed to its own longest text."""
        lengths = self._row_lengths(feed)
        if lengths is not None and not self.pack_runs:
            lengths = np.full_like(lengths, lengths.max(initial=1))  # consecutive slices at the batch's real length
        return run_bounded(lambda part: self._run(part, stream), feed, self.max_run_tokens, lengths)

    def _row_lengths(self, feed):
        """Each row's columns a run needs (None without trimming: every row needs its whole padded length)."""
        if not self.trim_padding or "input_ids" not in feed:
            return None
        # OpenVINO: few distinct shapes (see graph_engines)
        return row_lengths(feed["attention_mask"], LENGTH_STEP[self.spec.engine])

    def _run(self, feed, stream):
        """One engine call at the batch's real length.

        The tokenizer pads every text to its length bucket so Triton can batch requests of one shape; the columns no
        text of this batch reaches are cut before the run (all but one) and given back as zeros after it. Masked keys
        get zero attention weight, so the real positions' results do not change.
        """
        length = feed["input_ids"].shape[-1] if "input_ids" in feed else 0
        lengths = self._row_lengths(feed)
        used = int(lengths.max(initial=1)) if lengths is not None else length
        trimmed = feed if used == length else {name: array[..., :used] for name, array in feed.items()}
        outputs = self.engine.run(trimmed, stream)
        if not length:
            return outputs
        padded = []
        for name, output in zip(self.output_names, outputs, strict=True):
            axes = self.sequence_axes[name]
            widths = [(0, axes[a](length) - output.shape[a] if a in axes else 0) for a in range(output.ndim)]
            padded.append(np.pad(output, widths) if any(w for _, w in widths) else output)
        return padded

    def _response(self, outputs):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.output_names, outputs, strict=True)
            ]
        )


class _RunnerTiming:
    """How long each request's batch took to compute (inputs to responses, on its stream), as two counters on
    Triton's metrics endpoint: `mobilebert_runner_requests_total` and `mobilebert_runner_request_compute_us_total`
    (the batch's time, counted once per request in it). Triton's own statistics cannot say this once streams are
    pipelined: its compute_infer times execute(), which then returns at the hand-over to a stream, so it measures the
    wait for a free stream. perf reads these counters (perf/stats.py) as the runner's "onnx infer ms"."""

    def __init__(self, model, version):
        # the process in the labels: a reload or a second instance starts another stub of the same model, and Triton
        # shares one Prometheus counter between Metrics of equal labels while counting their references per
        # process, so one stub's exit would free the counter the other still increments (Triton issue #8663)
        labels = {"model": model, "version": str(version), "pid": str(os.getpid())}
        counter = pb_utils.MetricFamily.COUNTER
        self._families, self._metrics = (), ()
        self._lock = threading.Lock()
        try:
            requests = pb_utils.MetricFamily(
                name="mobilebert_runner_requests_total", description="requests the ONNX runner answered", kind=counter
            )
            compute = pb_utils.MetricFamily(
                name="mobilebert_runner_request_compute_us_total",
                description="per request, microseconds its batch computed (inputs to responses, on its stream)",
                kind=counter,
            )
            self._families = (requests, compute)
            self._metrics = (requests.Metric(labels=labels), compute.Metric(labels=labels))
        except Exception as exc:  # a server started with metrics off: serving goes on untimed
            pb_utils.Logger.log_warn(f"{model}: runner timing not on the metrics endpoint: {exc}")

    def add(self, requests, seconds):
        """Count `requests` answered (errors included) whose batch took `seconds`; a failure only stops the timing."""
        # one at a time: the Python backend's metric calls are not safe from several threads at once (two streams
        # incrementing together crashed tritonserver 2.51 with SIGSEGV in libtriton_python.so)
        with self._lock:
            if not self._metrics:
                return
            try:
                self._metrics[0].increment(requests)
                self._metrics[1].increment(requests * seconds * 1e6)
            except Exception as exc:
                self._metrics = ()
                pb_utils.Logger.log_warn(f"runner timing stopped: {exc}")

    def close(self):
        with self._lock:
            self._metrics = ()
            self._families = ()


def _sequence_size(dim):
    """The size of an output axis named `dim` as a function of the sequence length, or None if not understood."""
    if dim == "sequence":
        return lambda length: length
    masks = re.fullmatch(r"Min\((\d+), ?masks\)", dim)
    if masks is not None:  # fill-mask slots: as many as the rows' [MASK]s, at most the bound and the length
        bound = int(masks.group(1))
        return lambda length: min(bound, length)
    match = re.fullmatch(r"(Min|Max)\((?:(\d+), sequence|sequence, (\d+))\)", dim.replace(" ", "").replace(",", ", "))
    if match is None:
        return None
    bound = int(match.group(2) or match.group(3))
    pick = min if match.group(1) == "Min" else max
    return lambda length: pick(bound, length)


def _chunks(items, size):
    if size <= 0:
        size = 1
    out, rows = [], 0
    for item in items:
        n = next(iter(item[1].values())).shape[0] if size > 1 else 1
        if out and rows + n > size:
            yield out
            out, rows = [], 0
        out.append(item)
        rows += n
    if out:
        yield out


def _send_final(sender, response, engine):
    """Send `response` as the request's one final response; if that fails (e.g. its outputs do not fit the shared
    memory), send an error naming why instead, so the caller never waits for an answer that cannot come."""
    flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    try:
        sender.send(response, flags=flags)
    except Exception as exc:
        try:
            sender.send(_error(RuntimeError(f"the response could not be sent: {exc}"), engine), flags=flags)
        except Exception as again:  # the request is gone (cancelled): nothing is waiting for it
            pb_utils.Logger.log_error(f"{engine} runner: no response could be sent: {exc}; {again}")


def _log_failure(job):
    exc = job.exception()
    if exc is not None:  # _serve answers every request itself; this only shows what escaped it
        pb_utils.Logger.log_error(f"runner stream worker failed: {type(exc).__name__}: {exc}")


def _error(exc, engine):
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{engine}: {message}", _error_code(exc)))


def _error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    bad_input = isinstance(exc, ValueError) or type(exc).__name__ == "InvalidArgument"  # onnxruntime's shape/type
    return pb_utils.TritonError.INVALID_ARG if bad_input else pb_utils.TritonError.INTERNAL

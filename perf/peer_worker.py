"""A peer of the comparison, run inside its own venv (perf/peer_env.py) as `<venv>/bin/python perf/peer_worker.py`.

Never imported by the project's process: this file imports the peer's libraries (optimum-onnx, optimum-intel,
OpenVINO, their transformers), which conflict with ours. It talks JSON lines: the first line on stdin is the job
({peer, task, checkpoint, workdir, threads, rows, calibration_texts}); the worker converts the checkpoint (export,
quantization), measures each variant's fidelity against PyTorch FP32 on the job's rows, and answers one "ready" line
with the variants. Then every {"op": "measure", "variant", "batch", "seconds"} line is answered with one measurement,
until {"op": "exit"} or end of input. Everything the libraries print goes to stderr: stdout carries only answers.

Equal work to (a) and (b): text in, decoded results out, per batch: the checkpoint's fast tokenizer (padding to the
batch's longest row), the peer's model, and decoding - fill-mask: softmax at the [MASK] positions, top 5 tokens and
their decoded strings (the peers compute the logits of every position; that is how their models come); QA: the
server's span decoding (deploy/python_models/span_decoding.py, plain numpy, imported from there by path).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "python_models"))
from batch_timing import batches_of, time_batches  # this file's folder (sys.path[0]): stdlib only
from probabilities import best_label  # plain numpy too: the classification post model's scores
from probabilities import labels as label_names
from span_decoding import best_spans  # plain numpy, shared with the server's post-processing

TOP_K = 5
# The transformers head of each task (AutoModelFor<head>, ORTModelFor<head>, OVModelFor<head>)
HEADS = {
    "fill_mask": "MaskedLM",
    "question_answering": "QuestionAnswering",
    "text_classification": "SequenceClassification",
}
MAX_ANSWER_LEN = 15
NO_ANSWER = {"answer": "", "score": 0.0, "start": 0, "end": 0}
CALIBRATION_SAMPLES = 64  # NNCF's static INT8: rows of the project's corpus text run through the model


def _classes(task: str, peer: str):
    if peer == "optimum":
        import optimum.onnxruntime as library

        prefix = "ORTModelFor"
    else:
        import optimum.intel as library

        prefix = "OVModelFor"
    return getattr(library, prefix + HEADS[task])


class Encoder:
    """The checkpoint's fast tokenizer, as (a) uses it: dynamic padding, QA pairs truncating the context."""

    def __init__(self, checkpoint: str, task: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.task = task
        config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
        self.labels = label_names(config.get("id2label"))

    def __call__(self, rows: list[dict]) -> dict:
        if self.task == "fill_mask":
            return dict(self.tokenizer([r["TEXT"] for r in rows], padding=True, return_tensors="np"))
        if self.task == "text_classification":  # the pipeline truncates to the model's length
            return dict(self.tokenizer([r["TEXT"] for r in rows], padding=True, truncation=True, return_tensors="np"))
        enc = self.tokenizer(
            [r["QUESTION"] for r in rows],
            [r["CONTEXT"] for r in rows],
            padding=True,
            truncation="only_second",
            max_length=384,
            return_offsets_mapping=True,
            return_tensors="np",
        )
        out = dict(enc)
        out["context"] = np.array([[s == 1 for s in enc.sequence_ids(i)] for i in range(len(rows))])
        return out


def model_inputs(enc: dict, names: list[str]) -> dict:
    return {n: enc[n].astype(np.int64) for n in names if n in enc}


def logits_of(task: str, output) -> list[np.ndarray]:
    """fill-mask and classification: [logits]; QA: [start_logits, end_logits]; numpy whatever the peer returned."""
    fields = ["start_logits", "end_logits"] if task == "question_answering" else ["logits"]
    return [np.asarray(getattr(output, f) if hasattr(output, f) else output[f], dtype=np.float32) for f in fields]


def decode(task: str, rows: list[dict], enc: dict, logits: list[np.ndarray], tokenizer, labels: list[str]) -> list:
    if task == "fill_mask":
        return [_fill_mask_row(enc, logits[0], i, tokenizer) for i in range(len(rows))]
    if task == "text_classification":  # the best label (softmax; one logit: sigmoid), as the server returns it
        return [best_label(row, labels) for row in logits[0]]
    out = []
    for i, row in enumerate(rows):
        spans = best_spans(
            logits[0][i],
            logits[1][i],
            enc["context"][i],
            enc["offset_mapping"][i],
            row["CONTEXT"],
            top_k=1,
            max_answer_len=MAX_ANSWER_LEN,
        )
        out.append(spans[0] if spans else dict(NO_ANSWER))
    return out


def _fill_mask_row(enc: dict, logits: np.ndarray, i: int, tokenizer) -> list:
    ids = enc["input_ids"][i]
    per_mask = []
    for pos in np.flatnonzero(ids == tokenizer.mask_token_id):
        z = logits[i, pos] - logits[i, pos].max()
        p = np.exp(z) / np.exp(z).sum()
        top = np.argsort(-p)[:TOP_K]
        per_mask.append([{"score": float(p[t]), "token": int(t), "token_str": tokenizer.decode([int(t)])} for t in top])
    return per_mask[0] if len(per_mask) == 1 else per_mask


class Variant:
    """One way a peer runs the model: `run(enc)` -> logits; `how` says what it is."""

    def __init__(self, name: str, how: str, run, input_names: list[str]) -> None:
        self.name, self.how, self.run, self.input_names = name, how, run, input_names


def optimum_variants(job: dict, work: Path) -> list[Variant]:
    """(d) optimum-onnx export, ORTQuantizer avx512_vnni dynamic per-channel INT8, onnxruntime with `threads`."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    cls = _classes(job["task"], "optimum")
    fp32_dir, int8_dir = work / "onnx-fp32", work / "onnx-int8"
    cls.from_pretrained(job["checkpoint"], export=True).save_pretrained(fp32_dir)
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
    ORTQuantizer.from_pretrained(fp32_dir).quantize(save_dir=int8_dir, quantization_config=qconfig)
    options = ort.SessionOptions()
    options.intra_op_num_threads = job["threads"]
    options.inter_op_num_threads = 1
    files = sorted(p.name for p in int8_dir.glob("*.onnx"))
    model = cls.from_pretrained(
        int8_dir, file_name=files[0], session_options=options, provider="CPUExecutionProvider", use_io_binding=False
    )
    names = [i.name for i in model.model.get_inputs()]
    how = (
        f"optimum-onnx export + ORTQuantizer AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True) "
        f"({files[0]}), {type(model).__name__} on onnxruntime, {job['threads']} intra-op threads"
    )
    return [Variant("int8-dynamic", how, lambda enc: model(**model_inputs(enc, names)), names)]


def openvino_variants(job: dict, work: Path, encoder: Encoder) -> list[Variant]:
    """(e) optimum-intel export compiled at OpenVINO's default precision, and NNCF static INT8 of the same export
    (OVQuantizer, model type transformer, calibrated on the job's corpus texts); INFERENCE_NUM_THREADS = threads."""
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

    cls = _classes(job["task"], "openvino")
    ov_config = {"INFERENCE_NUM_THREADS": str(job["threads"])}
    fp_dir, int8_dir = work / "ov-default", work / "ov-int8"
    exported = cls.from_pretrained(job["checkpoint"], export=True, compile=False)
    exported.save_pretrained(fp_dir)
    default = cls.from_pretrained(fp_dir, ov_config=ov_config)
    calibration = [encoder([row]) for row in job["calibration_rows"][:CALIBRATION_SAMPLES]]
    names = list(default.input_names)
    quantizer = OVQuantizer.from_pretrained(cls.from_pretrained(fp_dir, compile=False))
    dataset = _nncf_dataset([model_inputs(e, names) for e in calibration])
    quantizer.quantize(
        calibration_dataset=dataset,
        save_directory=int8_dir,
        ov_config=OVConfig(
            quantization_config=OVQuantizationConfig(model_type="transformer", num_samples=len(calibration))
        ),
    )
    int8 = cls.from_pretrained(int8_dir, ov_config=ov_config)
    precision = _inference_precision(default)
    return [
        Variant(
            "default",
            f"optimum-intel {cls.__name__} export, OpenVINO's default precision ({precision}), "
            f"INFERENCE_NUM_THREADS={job['threads']}",
            lambda enc: default(**model_inputs(enc, names)),
            names,
        ),
        Variant(
            "nncf-int8",
            f"the same export, NNCF static INT8 (OVQuantizer, OVQuantizationConfig(model_type='transformer'), "
            f"{len(calibration)} corpus rows), INFERENCE_NUM_THREADS={job['threads']}",
            lambda enc: int8(**model_inputs(enc, names)),
            names,
        ),
    ]


def pytorch_variants(job: dict) -> list[Variant]:
    """The protocol's self-check: PyTorch FP32 eager through the same worker (runs in any venv with transformers and
    torch, ours included, so the tests exercise this file without creating a peer venv). Fidelity 1 by definition."""
    import torch

    model = _reference_model(job)
    names = ["input_ids", "attention_mask", "token_type_ids"]

    def run(enc: dict):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in model_inputs(enc, names).items()})

    return [Variant("fp32-eager", f"transformers {type(model).__name__}, PyTorch eager FP32", run, names)]


def _inference_precision(model) -> str:
    """The precision OpenVINO chose for the compiled model (f32, bf16 on AMX, ...), for the report."""
    compiled = getattr(model, "request", None)
    compiled = compiled.get_compiled_model() if hasattr(compiled, "get_compiled_model") else compiled
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    except Exception as exc:  # only a label: never fail the peer over it
        return f"unknown: {type(exc).__name__}"


def _nncf_dataset(items: list[dict]):
    import nncf

    return nncf.Dataset(items)


def reference_logits(job: dict, encs: list[dict]) -> list[list[np.ndarray]]:
    """PyTorch FP32 (the peer's transformers, eager) on the same encoded batches: what fidelity is measured against."""
    import torch

    model = _reference_model(job)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out = []
    with torch.inference_mode():
        for enc in encs:
            out.append(
                logits_of(job["task"], model(**{k: torch.from_numpy(v) for k, v in model_inputs(enc, names).items()}))
            )
    return out


def _reference_model(job: dict):
    import torch
    import transformers

    torch.set_num_threads(job["threads"])
    auto = getattr(transformers, "AutoModelFor" + HEADS[job["task"]])
    return auto.from_pretrained(job["checkpoint"]).eval()


def fidelity(
    task: str, encs: list[dict], ours: list[list[np.ndarray]], ref: list[list[np.ndarray]], mask_id: int
) -> dict:
    """Cosine of the logits and top-1 agreement against PyTorch FP32, over the positions that are decoded:
    fill-mask the [MASK] positions (a vocabulary-sized vector each), QA the real tokens of each row (start and end
    logits; top-1 = the same argmax start and argmax end), classification each row's label logits."""
    cosines, agree, total = [], 0, 0
    for enc, x, y in zip(encs, ours, ref, strict=True):
        for i in range(enc["input_ids"].shape[0]):
            if task == "fill_mask":
                for pos in np.flatnonzero(enc["input_ids"][i] == mask_id):
                    cosines.append(_cosine(x[0][i, pos], y[0][i, pos]))
                    agree += int(np.argmax(x[0][i, pos]) == np.argmax(y[0][i, pos]))
                    total += 1
            elif task == "text_classification":
                cosines.append(_cosine(x[0][i], y[0][i]))
                agree += int(np.argmax(x[0][i]) == np.argmax(y[0][i]))
                total += 1
            else:
                real = enc["attention_mask"][i] > 0
                pairs = [(a[i][real], b[i][real]) for a, b in zip(x, y, strict=True)]
                cosines.append(_cosine(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])))
                agree += int(all(np.argmax(a) == np.argmax(b) for a, b in pairs))
                total += 1
    return {
        "cosine_min": round(float(min(cosines)), 6),
        "cosine_mean": round(float(np.mean(cosines)), 6),
        "top1_agreement": round(agree / total, 4),
        "compared": total,
        "reference": "PyTorch FP32 eager (the peer venv's transformers) on the same tokenized rows",
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


class Runner:
    """Text in, decoded results out, for one variant; `measure` is perf.baselines.measure_round's loop."""

    def __init__(self, task: str, encoder: Encoder, variant: Variant) -> None:
        self.task, self.encoder, self.variant = task, encoder, variant

    def __call__(self, rows: list[dict]) -> list:
        enc = self.encoder(rows)
        logits = logits_of(self.task, self.variant.run(enc))
        return decode(self.task, rows, enc, logits, self.encoder.tokenizer, self.encoder.labels)

    def measure(self, rows: list[dict], batch: int, seconds: float) -> dict:
        return time_batches(self, self.variant.name, rows, batch, seconds)


def _versions(peer: str) -> dict:
    import importlib.metadata as md

    names = ["transformers", "torch", "numpy"]
    names += {
        "optimum": ["optimum", "optimum-onnx", "onnxruntime"],
        "openvino": ["optimum-intel", "openvino", "nncf"],
    }.get(peer, [])
    return {n: md.version(n) for n in names}


def prepare(job: dict) -> tuple[dict, dict]:
    """(runners by variant name, the "ready" answer)."""
    started = time.time()
    task, peer = job["task"], job["peer"]
    work = Path(job["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(job["checkpoint"], task)
    if peer == "optimum":
        variants = optimum_variants(job, work)
    elif peer == "openvino":
        variants = openvino_variants(job, work, encoder)
    elif peer == "pytorch":
        variants = pytorch_variants(job)
    else:
        raise ValueError(f"unknown peer {peer!r}")
    rows = job["rows"]
    encs = [encoder(chunk) for chunk in batches_of(rows, job.get("fidelity_batch", 8))]
    ref = reference_logits(job, encs)
    answer = {"event": "ready", "peer": peer, "task": task, "versions": _versions(peer), "variants": []}
    runners = {}
    for v in variants:
        ours = [logits_of(task, v.run(e)) for e in encs]
        runners[v.name] = Runner(task, encoder, v)
        sample = runners[v.name](rows[:2])  # decoded results: shape check and a look for the report
        answer["variants"].append(
            {
                "name": v.name,
                "how": v.how,
                "fidelity": fidelity(task, encs, ours, ref, encoder.tokenizer.mask_token_id),
                "sample": sample,
            }
        )
    answer["prepare_s"] = round(time.time() - started, 1)
    return runners, answer


def main() -> int:
    # stdout is the answer channel: keep a private copy of it and point fd 1 (C libraries too) at stderr
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(obj: dict) -> None:
        answers.write(json.dumps(obj) + "\n")
        answers.flush()

    job = json.loads(sys.stdin.readline())
    try:
        runners, ready = prepare(job)
    except Exception as exc:  # reported to the parent, which fails the peer with this message
        say({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        raise
    say(ready)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("op") == "exit":
            break
        try:
            runner = runners[command["variant"]]
            if command["batch"] < 1:
                raise ValueError(f"batch {command['batch']}")
            if command.get("op") == "warm_up":
                for chunk in batches_of(job["rows"], command["batch"]):
                    runner(chunk)
                say({"event": "warm"})
            else:
                say({"event": "measured", **runner.measure(job["rows"], command["batch"], command["seconds"])})
        except Exception as exc:  # answered, so the parent fails this request with the reason; the worker lives on
            say({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`mobilebert-triton`: call the served tasks from a shell, print readable results or JSON.

    mobilebert-triton infer fill-mask "The capital of France is [MASK]." --top-k 3
    mobilebert-triton infer answer "Where is the tower?" "The tower is in Paris." --json
    mobilebert-triton tasks --url triton:8001

Exit status: 0 on success, 1 when the call failed (the typed error's message goes to stderr), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import MobileBertClientError
from .options import DEFAULT_URL, ConnectionOptions
from .sync_client import MobileBertClient


def _connection_args() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help="gRPC host:port; several comma-separated for failover")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    common.add_argument("--retries", type=int, default=3, help="retry rounds on transient failures (default 3)")
    common.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gRPC metadata for every call, e.g. an auth token or triton-grpc-protocol-admin-key=KEY (repeatable)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of readable text")
    return common


def _headers(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--header {pair!r}: expected KEY=VALUE")
        headers[key.strip().lower()] = value  # gRPC metadata keys are lowercase
    return headers


def build_parser() -> argparse.ArgumentParser:
    common = _connection_args()
    parser = argparse.ArgumentParser(prog="mobilebert-triton", description="Call MobileBERT tasks served by Triton.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tasks", parents=[common], help="list the tasks the server offers")
    commands.add_parser("ready", parents=[common], help="exit 0 if the server is ready, 1 if not")
    metadata = commands.add_parser("metadata", parents=[common], help="a model's inputs and outputs")
    metadata.add_argument("model")

    infer = commands.add_parser("infer", help="run one task").add_subparsers(dest="task", required=True)
    p = infer.add_parser("fill-mask", parents=[common], help="tokens for [MASK]")
    p.add_argument("text", nargs="+")
    p.add_argument("--top-k", type=int, default=5)
    p = infer.add_parser("classify", parents=[common], help="text classification")
    p.add_argument("text", nargs="+")
    p.add_argument("--text-pair", help="second text of a pair (for every text)")
    p.add_argument("--top-k", type=int, default=1, help="labels to show; 0 shows every label")
    p = infer.add_parser("next-sentence", parents=[common], help="does text B follow text A?")
    p.add_argument("text_a")
    p.add_argument("text_b")
    p = infer.add_parser("multiple-choice", parents=[common], help="pick the best choice for a prompt")
    p.add_argument("prompt")
    p.add_argument("choices", nargs="+")
    p = infer.add_parser("tag", parents=[common], help="named entities (token classification)")
    p.add_argument("text", nargs="+")
    p = infer.add_parser("answer", parents=[common], help="extractive question answering")
    p.add_argument("question")
    p.add_argument("context")
    p.add_argument("--top-k", type=int, default=1)
    p = infer.add_parser("embed", parents=[common], help="sentence embeddings")
    p.add_argument("text", nargs="+")
    p.add_argument("--pooling", choices=("mean", "cls", "pooler", "none"), default="mean")
    return parser


def _one_or_many(texts: list[str]) -> str | list[str]:
    return texts[0] if len(texts) == 1 else texts


def _call(client: MobileBertClient, args: argparse.Namespace) -> Any:
    """The task method for the parsed command, called."""
    if args.task == "fill-mask":
        return client.fill_mask(_one_or_many(args.text), top_k=args.top_k)
    if args.task == "classify":
        pair = None if args.text_pair is None else [args.text_pair] * len(args.text)
        text = args.text
        if len(text) == 1:
            text, pair = text[0], args.text_pair
        return client.classify(text, pair, top_k=args.top_k or None)
    if args.task == "next-sentence":
        return client.next_sentence(args.text_a, args.text_b)
    if args.task == "multiple-choice":
        return client.multiple_choice(args.prompt, args.choices)
    if args.task == "tag":
        return client.tag(_one_or_many(args.text))
    if args.task == "answer":
        return client.answer(args.question, args.context, top_k=args.top_k)
    return client.embed(_one_or_many(args.text), pooling=args.pooling)


# -- readable output ------------------------------------------------------------------------------------------------


def _fill_mask_lines(result: list) -> list[str]:
    groups = result if result and isinstance(result[0], list) else [result]
    lines = []
    for m, candidates in enumerate(groups):
        if len(groups) > 1:
            lines.append(f"[MASK] #{m + 1}:")
        lines += [f"  {c['score']:.4f}  {c['token_str']!r:<16} {c['sequence']}" for c in candidates]
    return lines


def _classify_lines(result: list) -> list[str]:
    return [f"  {r['label']:<20} {r['score']:.4f}" for r in result]


def _rounded(scores: list[float]) -> list[float]:
    return [round(s, 4) for s in scores]


def _tag_lines(result: list) -> list[str]:
    if not result:
        return ["  (no entities)"]
    return [f"  {e['entity_group']:<8} {e['score']:.4f}  {e['word']!r} [{e['start']}:{e['end']}]" for e in result]


def _answer_lines(result: Any) -> list[str]:
    spans = result if isinstance(result, list) else [result]
    return [f"  {a['score']:.4f}  {a['answer']!r} [{a['start']}:{a['end']}]" for a in spans]


def _embed_lines(result: Any) -> list[str]:
    arrays = result if isinstance(result, list) else list(result) if result.ndim == 2 else [result]
    lines = []
    for vector in arrays:
        head = ", ".join(f"{v:.4f}" for v in np.ravel(vector)[:6])
        lines.append(f"  shape {tuple(vector.shape)}  [{head}, ...]")
    return lines


READABLE: dict[str, Callable[[Any], list[str]]] = {
    "fill-mask": _fill_mask_lines,
    "classify": _classify_lines,
    "next-sentence": lambda r: [f"  is_next={r['is_next']}  score={r['score']:.4f}"],
    "multiple-choice": lambda r: [f"  choice {r['index']}: {r['choice']!r}  scores {_rounded(r['scores'])}"],
    "tag": _tag_lines,
    "answer": _answer_lines,
    "embed": _embed_lines,
}


def _readable(task: str, inputs: list[str], result: Any) -> str:
    format_one = READABLE[task]
    if len(inputs) <= 1 or task not in ("fill-mask", "classify", "tag"):
        return "\n".join(format_one(result))
    lines = []
    for text, one in zip(inputs, result, strict=True):
        lines.append(text)
        lines += format_one(one)
    return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = ConnectionOptions(
            urls=args.url, timeout_s=args.timeout, retries=args.retries, headers=_headers(args.header)
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with MobileBertClient(options=options) as client:
        try:
            if args.command == "ready":
                ready = client.is_ready()
                print(json.dumps({"ready": ready}) if args.json else ("ready" if ready else "not ready"))
                return 0 if ready else 1
            if args.command == "tasks":
                offered = client.tasks()
                print(json.dumps(offered) if args.json else "\n".join(offered))
                return 0
            if args.command == "metadata":
                print(json.dumps(client.model_metadata(args.model), indent=2))
                return 0
            result = _call(client, args)
        except MobileBertClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(to_jsonable(result), ensure_ascii=False))
    else:
        print(_readable(args.task, getattr(args, "text", []), result))
    return 0

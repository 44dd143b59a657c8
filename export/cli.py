"""`python -m export`: export MobileBERT heads to FP32 and INT8 ONNX graphs with manifests.

Examples:
    python -m export --demo                                   # demo checkpoints, every task
    python -m export --checkpoint ~/mobilebert-uncased         # the tasks its architecture serves
    python -m export --checkpoint ckpt --task fill_mask --task-checkpoint question_answering=~/mobilebert-squad
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from .checkpoints import DEMO_CHECKPOINTS, demo_checkpoints, resolve_checkpoints
from .errors import ExportError
from .heads import HEAD_SPECS
from .pipeline import FLAVOURS, ExportSettings, Manifest, export_head

logger = logging.getLogger("export")


def _parse_override(text: str) -> tuple[str, Path]:
    task, sep, path = text.partition("=")
    if not sep or task not in HEAD_SPECS:
        raise argparse.ArgumentTypeError(f"expected TASK=DIR with TASK one of {sorted(HEAD_SPECS)}, got {text!r}")
    return task, Path(path).expanduser()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a Hugging Face checkpoint dir, or a set of per-kind dirs")
    source.add_argument("--demo", action="store_true", help=f"use (and create if needed) {DEMO_CHECKPOINTS}")
    parser.add_argument("--task", action="append", choices=sorted(HEAD_SPECS), help="task(s) to export")
    parser.add_argument("--task-checkpoint", action="append", type=_parse_override, default=[], metavar="TASK=DIR")
    parser.add_argument("--out", type=Path, default=Path("artifacts/onnx"))
    parser.add_argument("--flavour", action="append", choices=FLAVOURS, help="default: all three")
    parser.add_argument("--force", action="store_true", help="export heads whose weights the checkpoint lacks")
    parser.add_argument("--calibration-file", type=Path, help="text file, one example per line (default: corpus)")
    parser.add_argument("--validation-examples", type=int, default=64)
    parser.add_argument("--calibration-examples", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per validation/calibration example")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the manifests' key figures as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    try:
        checkpoint = demo_checkpoints() if args.demo else args.checkpoint.expanduser()
        plan = resolve_checkpoints(checkpoint, args.task, dict(args.task_checkpoint))
        settings = ExportSettings(
            flavours=tuple(args.flavour or FLAVOURS),
            force=args.force,
            calibration_file=str(args.calibration_file) if args.calibration_file else None,
            validation_examples=args.validation_examples,
            calibration_examples=args.calibration_examples,
            max_length=args.max_length,
            threads=args.threads,
        )
        summary = {}
        with tqdm(plan.items(), desc="export", unit="head") as bar:
            for task, directory in bar:
                manifests = export_head(task, directory, args.out, settings, progress=bar)
                summary[task] = {f: _key_figures(m) for f, m in manifests.items()}
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"\n{'task':22s} {'flavour':13s} {'MB':>7s} {'nodes':>6s} {'cosine':>8s} {'top-1':>6s} {'in top-5':>8s}")
        for task, flavours in summary.items():
            for flavour, f in flavours.items():
                print(
                    f"{task:22s} {flavour:13s} {f['MB']:7.1f} {f['nodes']:6d} {f['cosine']:8.5f} "
                    f"{_pct(f['top1'])} {_pct(f['in_top5']):>8s}"
                )
        print(f"\ngraphs and manifests under {args.out}/<task>/")
    return 0


def _pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def _key_figures(manifest: Manifest) -> dict:
    v = manifest.validation
    return {
        "MB": manifest.file_bytes / 1e6,
        "nodes": manifest.nodes,
        "cosine": v["cosine_mean"],
        "top1": v["top1_agreement"],
        "in_top5": v["in_top5"],
        "passed": v["passed"],
    }


if __name__ == "__main__":
    sys.exit(main())

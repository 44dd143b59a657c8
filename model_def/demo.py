"""`make demo` until the Triton pipeline lands: demo checkpoints -> PyTorch fill-mask and QA -> a throughput figure.

python -m model_def.demo [--checkpoints artifacts/demo-checkpoints]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .demo_checkpoint import DEMO_NOTICE, write_demo_checkpoints
from .modeling_mobilebert import MobileBertForMaskedLM, MobileBertForQuestionAnswering
from .tokenization_mobilebert import MobileBertTokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="artifacts/demo-checkpoints")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.checkpoints)
    if not (root / "question-answering" / "model.safetensors").is_file():
        print(f"writing demo checkpoints to {root}")
        write_demo_checkpoints(root)
    print(DEMO_NOTICE)

    tokenizer = MobileBertTokenizer.from_pretrained(root / "pretraining")
    mlm = MobileBertForMaskedLM.from_pretrained(root / "pretraining")
    text = f"The capital of France is {tokenizer.mask_token}."
    enc = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        logits = mlm(**enc).logits
    position = int((enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0])
    probs = logits[0, position].softmax(-1)
    top = probs.topk(5)
    print(f"\nfill-mask: {text}")
    for score, token_id in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        print(f"  {tokenizer.convert_ids_to_tokens(token_id):15s} {score:.4f}")

    qa = MobileBertForQuestionAnswering.from_pretrained(root / "question-answering")
    question, context = "Where is the Eiffel Tower?", "The Eiffel Tower stands in Paris, on the Champ de Mars."
    enc = tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0]
    with torch.inference_mode():
        out = qa(**enc)
    context_mask = torch.tensor([s == 1 for s in enc.sequence_ids(0)])
    start = int(out.start_logits[0].masked_fill(~context_mask, -1e9).argmax())
    end_scores = out.end_logits[0].masked_fill(~context_mask, -1e9)
    end_scores[:start] = -1e9
    end = int(end_scores.argmax())
    print(f"\nquestion answering: {question}\n  answer: {context[int(offsets[start][0]) : int(offsets[end][1])]!r}")

    batch = tokenizer([text] * 8, padding="max_length", max_length=128, return_tensors="pt")
    with torch.inference_mode():
        qa(**batch)
        start_t = time.perf_counter()
        for _ in range(3):
            qa(**batch)
        elapsed = (time.perf_counter() - start_t) / 3
    print(f"\nPyTorch eager FP32, QA head, batch 8 x 128 tokens, {args.threads} threads: {8 / elapsed:.1f} sequences/s")


if __name__ == "__main__":
    main()

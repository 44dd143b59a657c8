"""The files the build writes beside a Python model (serving.json, tokenizer.json), found from Triton's `args`.

Shipped by the build beside each tokenizer and post-processing model.
"""

import json
from pathlib import Path


def version_file(args, name):
    """`name` in the model's version folder (Triton's initialize args name the repository and the version)."""
    return Path(args["model_repository"]) / args["model_version"] / name


def serving_settings(args):
    """serving.json: what the build recorded for the post-processing (labels, mask id, top_k, ...)."""
    return json.loads(version_file(args, "serving.json").read_text(encoding="utf-8"))

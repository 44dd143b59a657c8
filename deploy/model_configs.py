"""Triton model configurations built and checked with Triton's own protobuf (tritonclient's model_config_pb2).

Writing config.pbtxt by hand means a typo surfaces at deployment; building the ModelConfig message and printing it
with protobuf's text_format means it surfaces here, and `parse_config` checks any config.pbtxt the same way.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

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
    return config

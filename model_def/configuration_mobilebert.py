"""MobileBERT configuration: every field of the transformers config, read from and written to config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"

ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "silu", "swish", "tanh")
NORMALIZATION_TYPES = ("no_norm", "layer_norm")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
_RUNTIME_ONLY = ("extra", "attn_implementation")
# Fields transformers writes that carry no model semantics; kept so a round trip does not drop them.
_DERIVED_KEYS = ("true_hidden_size", "num_labels")


class ConfigError(ValueError):
    """A config.json that cannot describe a MobileBERT model."""


@dataclass
class MobileBertConfig:
    """Hyper-parameters of MobileBERT. Defaults equal google/mobilebert-uncased."""

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 512
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    add_pooling_layer: bool = True
    trigram_input: bool = True
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    num_feedforward_networks: int = 4
    normalization_type: str = "no_norm"
    classifier_activation: bool = True
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    label2id: dict[str, int] = field(default_factory=lambda: {"LABEL_0": 0, "LABEL_1": 1})
    problem_type: str | None = None
    architectures: list[str] | None = None
    # Runtime choice, not saved: "sdpa" (fused kernel, fastest in eager PyTorch) or "eager" (explicit
    # MatMul/Softmax, the pattern ONNX Runtime's attention fusion recognises).
    attn_implementation: str = "sdpa"
    # Anything else found in config.json (e.g. transformers_version, dtype), written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.validate()

    # ----------------------------------------------------------------------------------------------- derived values
    @property
    def true_hidden_size(self) -> int:
        """Width inside a layer: the bottleneck size when bottlenecks are used, else hidden_size."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if n < 1:
            raise ConfigError(f"num_labels must be >= 1, got {n}")
        if n != len(self.id2label):
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    # --------------------------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot build a model."""
        positive = (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "intra_bottleneck_size",
            "num_feedforward_networks",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported; choose one of {ACTIVATIONS}")
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ConfigError(
                f"normalization_type {self.normalization_type!r} is not supported; choose one of {NORMALIZATION_TYPES}"
            )
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"attn_implementation {self.attn_implementation!r} is not supported; "
                f"choose one of {ATTN_IMPLEMENTATIONS}"
            )
        if self.true_hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"the attention width {self.true_hidden_size} (true_hidden_size) is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if (
            self.use_bottleneck
            and not self.use_bottleneck_attention
            and not self.key_query_shared_bottleneck
            and self.hidden_size != self.intra_bottleneck_size
        ):
            # Query and key would then read hidden_size-wide states into intra_bottleneck_size-wide projections.
            raise ConfigError(
                "key_query_shared_bottleneck=false with use_bottleneck=true needs use_bottleneck_attention=true "
                f"(or hidden_size == intra_bottleneck_size); got hidden_size={self.hidden_size}, "
                f"intra_bottleneck_size={self.intra_bottleneck_size}"
            )
        if self.hidden_size < self.embedding_size:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be >= embedding_size ({self.embedding_size}): the MLM decoder "
                "projects hidden states onto [embedding, extra] weights"
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ConfigError(f"id2label keys must be 0..n-1, got {sorted(self.id2label)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= float(p) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {p!r}")

    # -------------------------------------------------------------------------------------------------- (de)serialise
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MobileBertConfig:
        data = dict(data)
        model_type = data.get("model_type", "mobilebert")
        if model_type != "mobilebert":
            raise ConfigError(f"config.json describes model_type {model_type!r}, not 'mobilebert'")
        names = {f.name for f in dataclasses.fields(cls)} - set(_RUNTIME_ONLY)
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        num_labels = data.pop("num_labels", None)
        for key in (*_DERIVED_KEYS, "model_type", "_attn_implementation"):
            data.pop(key, None)
        if num_labels is not None and "id2label" not in kwargs:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
        if "id2label" in kwargs and "label2id" not in kwargs:
            kwargs["label2id"] = {str(v): int(k) for k, v in kwargs["id2label"].items()}
        try:
            config = cls(**kwargs, extra=data)
        except TypeError as exc:  # a field of the wrong type, e.g. a list where an int belongs
            raise ConfigError(f"invalid config: {exc}") from exc
        return config

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in _RUNTIME_ONLY:
                out[f.name] = getattr(self, f.name)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["model_type"] = "mobilebert"
        out["true_hidden_size"] = self.true_hidden_size
        if out["architectures"] is None:
            del out["architectures"]
        return dict(sorted(out.items()))

    @classmethod
    def from_json_file(cls, path: str | Path) -> MobileBertConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no config file at {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MobileBertConfig:
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(f"checkpoint directory {directory} does not exist")
        return cls.from_json_file(directory / CONFIG_NAME)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(self.to_json_string(), encoding="utf-8")
        return path

"""MobileBERT ("MobileBERT: a Compact Task-Agnostic BERT for Resource-Limited Devices", Sun et al. 2020) in PyTorch.

One readable file in the spirit of transformers' single-file models: the building blocks (NoNorm, the trigram
embedding, the bottlenecks, the stacked feed-forward networks), the encoder, and one class per task head. Parameter
names equal those of transformers' implementation, so Hugging Face checkpoints load unchanged (see checkpoint_io).

Numerics follow transformers exactly, including its quirks (two LayerNorms use PyTorch's default eps rather than
config.layer_norm_eps), because the tests compare against it to 1e-4. forward() has no data-dependent Python control
flow on the traced path, so every head exports to ONNX with dynamic batch and sequence axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mobilebert import ConfigError, MobileBertConfig

# ---------------------------------------------------------------------------------------------------------- errors


class InvalidInputError(ValueError):
    """A tensor given to forward() that the model cannot run on (dtype, shape, or value range)."""


def _is_tracing() -> bool:
    """True while an exporter or compiler traces forward(): value checks must not enter the graph then."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


# ----------------------------------------------------------------------------------------------------- activations


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    # transformers' NewGELUActivation, written out so results match it bit for bit.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACT2FN = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": _gelu_new,
    "gelu_fast": _gelu_fast,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def additive_attention_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[batch, seq] 1/0 mask -> additive [batch, 1, 1, seq] mask: 0 where attended, dtype-min where padded."""
    if attention_mask is None:
        return None
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


# ------------------------------------------------------------------------------------------------- building blocks


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an element-wise affine map, no statistics (cheap on device)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(size))
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)


def make_norm(config: MobileBertConfig, size: int, eps: float | None) -> nn.Module:
    """The normalisation the config asks for. eps=None keeps PyTorch's default, as transformers does in two places."""
    if config.normalization_type == "no_norm":
        return NoNorm(size)
    return nn.LayerNorm(size) if eps is None else nn.LayerNorm(size, eps=eps)


class TrigramConcat(nn.Module):
    """Concatenates each token's embedding with its right and left neighbours' (zero at the edges).

    Followed by a linear map this is the kernel-3 1-D convolution of the paper, which lets the word embedding table
    stay 128 wide while the model works at 512.
    """

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        next_tokens = F.pad(embeds[:, 1:], [0, 0, 0, 1, 0, 0], value=0.0)
        previous_tokens = F.pad(embeds[:, :-1], [0, 0, 1, 0, 0, 0], value=0.0)
        return torch.cat([next_tokens, embeds, previous_tokens], dim=2)


class MobileBertEmbeddings(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.trigram_input = config.trigram_input
        self.project = config.trigram_input or config.embedding_size != config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.trigram = TrigramConcat() if config.trigram_input else None
        width = config.embedding_size * (3 if config.trigram_input else 1)
        self.embedding_transformation = nn.Linear(width, config.hidden_size)
        self.LayerNorm = make_norm(config, config.hidden_size, eps=None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.position_ids[:, : input_ids.shape[1]]
        embeds = self.word_embeddings(input_ids)
        if self.trigram is not None:
            embeds = self.trigram(embeds)
        if self.project:
            embeds = self.embedding_transformation(embeds)
        embeds = embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeds))


class MobileBertSelfAttention(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.true_hidden_size // config.num_attention_heads
        self.scaling = self.head_size**-0.5
        self.dropout_p = config.attention_probs_dropout_prob
        self.use_sdpa = config.attn_implementation == "sdpa"
        width = self.num_heads * self.head_size
        self.query = nn.Linear(config.true_hidden_size, width)
        self.key = nn.Linear(config.true_hidden_size, width)
        value_in = config.true_hidden_size if config.use_bottleneck_attention else config.hidden_size
        self.value = nn.Linear(value_in, width)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_size).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        q, k, v = self._heads(self.query(query)), self._heads(self.key(key)), self._heads(self.value(value))
        if self.use_sdpa:
            dropout = self.dropout_p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scaling)
        else:  # explicit math: the graph ONNX Runtime's attention fusion recognises
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling
            if mask is not None:
                scores = scores + mask
            context = torch.matmul(self.dropout(torch.softmax(scores, dim=-1)), v)
        context = context.transpose(1, 2)
        return context.reshape(context.shape[0], context.shape[1], -1)


class MobileBertSelfOutput(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.true_hidden_size)
        self.LayerNorm = make_norm(config, config.true_hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Identity() if config.use_bottleneck else nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class MobileBertAttention(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.self = MobileBertSelfAttention(config)
        self.output = MobileBertSelfOutput(config)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        layer_input: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        return self.output(self.self(query, key, value, mask), layer_input)


class MobileBertIntermediate(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class OutputBottleneck(nn.Module):
    """Projects the layer's narrow output back up to hidden_size and adds the layer's input."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.hidden_size)
        self.LayerNorm = make_norm(config, config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class MobileBertOutput(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.use_bottleneck = config.use_bottleneck
        self.dense = nn.Linear(config.intermediate_size, config.true_hidden_size)
        self.LayerNorm = make_norm(config, config.true_hidden_size, eps=None)
        if self.use_bottleneck:
            self.bottleneck = OutputBottleneck(config)
        else:
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, intermediate: torch.Tensor, residual: torch.Tensor, layer_input: torch.Tensor) -> torch.Tensor:
        out = self.dense(intermediate)
        if not self.use_bottleneck:
            return self.LayerNorm(self.dropout(out) + residual)
        return self.bottleneck(self.LayerNorm(out + residual), layer_input)


class BottleneckLayer(nn.Module):
    """Linear projection from hidden_size down to the bottleneck width, then normalisation."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intra_bottleneck_size)
        self.LayerNorm = make_norm(config, config.intra_bottleneck_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden))


class Bottleneck(nn.Module):
    """Makes a layer's (query, key, value, residual) inputs from the wide hidden state.

    - use_bottleneck_attention: all four are the bottlenecked input;
    - key_query_shared_bottleneck: query and key share a second bottleneck, value reads the wide state;
    - otherwise query, key and value read the wide state and only the residual is bottlenecked.
    """

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.use_bottleneck_attention = config.use_bottleneck_attention
        self.key_query_shared_bottleneck = config.key_query_shared_bottleneck
        self.input = BottleneckLayer(config)
        if self.key_query_shared_bottleneck:
            self.attention = BottleneckLayer(config)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        narrow = self.input(hidden)
        if self.use_bottleneck_attention:
            return narrow, narrow, narrow, narrow
        if self.key_query_shared_bottleneck:
            shared = self.attention(hidden)
            return shared, shared, hidden, narrow
        return hidden, hidden, hidden, narrow


class FFNOutput(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.true_hidden_size)
        self.LayerNorm = make_norm(config, config.true_hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class FFNLayer(nn.Module):
    """One of the extra stacked feed-forward networks (num_feedforward_networks - 1 per layer) of MobileBERT."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.intermediate = MobileBertIntermediate(config)
        self.output = FFNOutput(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)


class MobileBertLayer(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.use_bottleneck = config.use_bottleneck
        self.attention = MobileBertAttention(config)
        self.intermediate = MobileBertIntermediate(config)
        self.output = MobileBertOutput(config)
        if self.use_bottleneck:
            self.bottleneck = Bottleneck(config)
        if config.num_feedforward_networks > 1:
            self.ffn = nn.ModuleList(FFNLayer(config) for _ in range(config.num_feedforward_networks - 1))
        else:
            self.ffn = nn.ModuleList()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.use_bottleneck:
            query, key, value, layer_input = self.bottleneck(hidden)
        else:
            query = key = value = layer_input = hidden
        out = self.attention(query, key, value, layer_input, mask)
        for ffn in self.ffn:
            out = ffn(out)
        return self.output(self.intermediate(out), out, hidden)


class MobileBertEncoder(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(MobileBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        all_hidden = [hidden] if output_hidden_states else None
        for layer in self.layer:
            hidden = layer(hidden, mask)
            if all_hidden is not None:
                all_hidden.append(hidden)
        return hidden, tuple(all_hidden) if all_hidden is not None else None


class MobileBertPooler(nn.Module):
    """The [CLS] token's state, through dense + tanh when classifier_activation is set."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.do_activate = config.classifier_activation
        if self.do_activate:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        first = hidden[:, 0]
        return torch.tanh(self.dense(first)) if self.do_activate else first


class MobileBertPredictionHeadTransform(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        # Always a real LayerNorm here, whatever normalization_type says (as in the reference implementation).
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class MobileBertLMPredictionHead(nn.Module):
    """Vocabulary logits. The decoder reuses the 128-wide word embeddings (tied); `dense` holds the extra
    hidden_size - embedding_size rows, so logits = h[:, :E] @ E^T + h[:, E:] @ dense + bias."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.embedding_size = config.embedding_size
        self.transform = MobileBertPredictionHeadTransform(config)
        self.dense = nn.Linear(config.vocab_size, config.hidden_size - config.embedding_size, bias=False)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one parameter under both names, as in transformers' checkpoints

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.transform(hidden)
        # Two GEMMs instead of concatenating [E^T; dense] (a 62 MB copy per call at full size): the second
        # accumulates into the first's output.
        logits = F.linear(hidden[..., : self.embedding_size], self.decoder.weight, self.decoder.bias)
        extra = hidden[..., self.embedding_size :]
        if extra.shape[-1] > 0:
            flat = logits.view(-1, logits.shape[-1])
            flat.addmm_(extra.reshape(-1, extra.shape[-1]), self.dense.weight)
        return logits


class MobileBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


class MobileBertOnlyNSPHead(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.seq_relationship(pooled)


class MobileBertPreTrainingHeads(nn.Module):
    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, hidden: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictions(hidden), self.seq_relationship(pooled)


# --------------------------------------------------------------------------------------------------------- outputs


@dataclass
class ModelOutput:
    """Named outputs with the transformers field names; also indexable by name or position (None fields skipped)."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: int | str) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MobileBertForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class NextSentencePredictorOutput(MaskedLMOutput):
    pass


@dataclass
class SequenceClassifierOutput(MaskedLMOutput):
    pass


@dataclass
class MultipleChoiceModelOutput(MaskedLMOutput):
    pass


@dataclass
class TokenClassifierOutput(MaskedLMOutput):
    pass


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------- base classes


class MobileBertPreTrainedModel(nn.Module):
    """Weight initialisation, checkpoint loading and saving shared by every MobileBERT class."""

    base_model_prefix: ClassVar[str] = "mobilebert"
    # Parameter names that alias another parameter (saved once, under the name on the right).
    tied_weights: ClassVar[dict[str, str]] = {}
    # Dimensionality of input_ids: [batch, seq], or [batch, choices, seq] for multiple choice.
    input_rank: ClassVar[int] = 2

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__()
        self.config = config

    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, (nn.LayerNorm, NoNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MobileBertLMPredictionHead):
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """Point the MLM decoder at the word embeddings (when the config ties them)."""
        head = getattr(getattr(self, "cls", None), "predictions", None)
        if head is not None and self.config.tie_word_embeddings:
            head.decoder.weight = self.get_input_embeddings().weight
        if head is not None:
            head.decoder.bias = head.bias

    def get_input_embeddings(self) -> nn.Embedding:
        base = getattr(self, self.base_model_prefix, self)
        return base.embeddings.word_embeddings

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        strict: bool = True,
        attn_implementation: str | None = None,
        **config_overrides: Any,
    ) -> MobileBertPreTrainedModel:
        """Load a Hugging Face checkpoint directory (config.json + model.safetensors or pytorch_model.bin).

        strict=True (the default) refuses a checkpoint that lacks weights this head needs, naming them, instead of
        initialising them randomly; strict=False initialises them randomly and records them in `load_report`.
        Weights of other MobileBERT heads (e.g. the NSP head of a pre-training checkpoint) are skipped and recorded.
        config_overrides set config fields, e.g. num_labels=3 for a new classifier.
        """
        from .checkpoint_io import load_pretrained

        return load_pretrained(
            cls, directory, strict=strict, attn_implementation=attn_implementation, overrides=config_overrides
        )

    def save_pretrained(self, directory: str | Path, *, safe_serialization: bool = True) -> Path:
        """Write config.json and model.safetensors (or pytorch_model.bin) in the layout transformers loads."""
        from .checkpoint_io import save_pretrained

        return save_pretrained(self, directory, safe_serialization=safe_serialization)

    # Input checks run in eager mode only (never traced): an exported graph has no Python control flow.
    def _check_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> None:
        if _is_tracing():
            return
        config = self.config
        if not isinstance(input_ids, torch.Tensor):
            raise InvalidInputError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise InvalidInputError(f"input_ids must be int64 or int32 token ids, got dtype {input_ids.dtype}")
        shape_name = "[batch, choices, sequence]" if self.input_rank == 3 else "[batch, sequence]"
        if input_ids.dim() != self.input_rank:
            raise InvalidInputError(
                f"input_ids must have shape {shape_name}, got {tuple(input_ids.shape)} ({input_ids.dim()} dims)"
            )
        if input_ids.numel() == 0:
            raise InvalidInputError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
        seq_len = input_ids.shape[-1]
        if seq_len > config.max_position_embeddings:
            raise InvalidInputError(
                f"sequence length {seq_len} exceeds max_position_embeddings={config.max_position_embeddings}; "
                "truncate the input (tokenizer truncation=True)"
            )
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= config.vocab_size:
            bad = low if low < 0 else high
            raise InvalidInputError(
                f"input_ids contains token id {bad}, outside the vocabulary [0, {config.vocab_size})"
            )
        for name, tensor in (
            ("attention_mask", attention_mask),
            ("token_type_ids", token_type_ids),
            ("position_ids", position_ids),
        ):
            if tensor is None:
                continue
            if not isinstance(tensor, torch.Tensor):
                raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.dtype.is_floating_point and name != "attention_mask":
                raise InvalidInputError(f"{name} must hold integers, got dtype {tensor.dtype}")
            if tuple(tensor.shape) != tuple(input_ids.shape):
                raise InvalidInputError(
                    f"{name} has shape {tuple(tensor.shape)} but input_ids has shape {tuple(input_ids.shape)}"
                )
        if token_type_ids is not None:
            low, high = int(token_type_ids.min()), int(token_type_ids.max())
            if low < 0 or high >= config.type_vocab_size:
                raise InvalidInputError(
                    f"token_type_ids must be in [0, {config.type_vocab_size}), found {low if low < 0 else high}"
                )
        if position_ids is not None:
            low, high = int(position_ids.min()), int(position_ids.max())
            if low < 0 or high >= config.max_position_embeddings:
                raise InvalidInputError(
                    f"position_ids must be in [0, {config.max_position_embeddings}), found {low if low < 0 else high}"
                )


# ------------------------------------------------------------------------------------------------------- the model


class MobileBertModel(MobileBertPreTrainedModel):
    """The bare encoder: last_hidden_state [batch, seq, hidden] and pooler_output [batch, hidden]."""

    def __init__(self, config: MobileBertConfig, add_pooling_layer: bool | None = None) -> None:
        super().__init__(config)
        if add_pooling_layer is None:
            add_pooling_layer = config.add_pooling_layer
        self.embeddings = MobileBertEmbeddings(config)
        self.encoder = MobileBertEncoder(config)
        self.pooler = MobileBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPooling:
        self._check_inputs(input_ids, attention_mask, token_type_ids, position_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = additive_attention_mask(attention_mask, hidden.dtype)
        hidden, all_hidden = self.encoder(hidden, mask, output_hidden_states)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, hidden_states=all_hidden)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index)


class MobileBertForPreTraining(MobileBertPreTrainedModel):
    """Masked-LM and next-sentence heads together, as pre-trained (google/mobilebert-uncased)."""

    tied_weights: ClassVar[dict[str, str]] = {
        "cls.predictions.decoder.weight": "mobilebert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=True)
        self.cls = MobileBertPreTrainingHeads(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MobileBertForPreTrainingOutput:
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        prediction_logits, seq_relationship_logits = self.cls(out.last_hidden_state, out.pooler_output)
        loss = None
        if labels is not None and next_sentence_label is not None:
            loss = _cross_entropy(prediction_logits, labels) + _cross_entropy(
                seq_relationship_logits, next_sentence_label
            )
        return MobileBertForPreTrainingOutput(loss, prediction_logits, seq_relationship_logits, out.hidden_states)


class MobileBertForMaskedLM(MobileBertPreTrainedModel):
    """Vocabulary logits at every position (fill-mask)."""

    tied_weights: ClassVar[dict[str, str]] = MobileBertForPreTraining.tied_weights

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.cls = MobileBertOnlyMLMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MaskedLMOutput:
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.cls(out.last_hidden_state)
        loss = _cross_entropy(logits, labels) if labels is not None else None
        return MaskedLMOutput(loss, logits, out.hidden_states)


class MobileBertForNextSentencePrediction(MobileBertPreTrainedModel):
    """Logits [batch, 2]: index 0 means sentence B continues sentence A, index 1 that it is random."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=True)
        self.cls = MobileBertOnlyNSPHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> NextSentencePredictorOutput:
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.cls(out.pooler_output)
        loss = _cross_entropy(logits, labels) if labels is not None else None
        return NextSentencePredictorOutput(loss, logits, out.hidden_states)


def _classifier_dropout(config: MobileBertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


class MobileBertForSequenceClassification(MobileBertPreTrainedModel):
    """Logits [batch, num_labels] from the pooled [CLS] state (regression when num_labels == 1)."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config, add_pooling_layer=True)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.int64, torch.int32):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            return _cross_entropy(logits, labels)
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> SequenceClassifierOutput:
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = self._loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss, logits, out.hidden_states)


class MobileBertForMultipleChoice(MobileBertPreTrainedModel):
    """Inputs [batch, choices, seq] -> logits [batch, choices], one score per (prompt, choice) pair."""

    input_rank: ClassVar[int] = 3

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=True)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MultipleChoiceModelOutput:
        self._check_inputs(input_ids, attention_mask, token_type_ids, position_ids)
        num_choices, seq_len = input_ids.shape[1], input_ids.shape[2]

        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, seq_len)

        out = self.mobilebert(
            flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids), output_hidden_states
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(-1, num_choices)
        loss = _cross_entropy(logits, labels) if labels is not None else None
        return MultipleChoiceModelOutput(loss, logits, out.hidden_states)


class MobileBertForTokenClassification(MobileBertPreTrainedModel):
    """Logits [batch, seq, num_labels]: one tag distribution per token (NER, POS)."""

    def __init__(self, config: MobileBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> TokenClassifierOutput:
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = _cross_entropy(logits, labels) if labels is not None else None
        return TokenClassifierOutput(loss, logits, out.hidden_states)


class MobileBertForQuestionAnswering(MobileBertPreTrainedModel):
    """Extractive QA: start_logits and end_logits [batch, seq] over the context tokens."""

    def __init__(self, config: MobileBertConfig) -> None:
        if config.num_labels != 2:
            raise ConfigError(f"question answering needs num_labels=2 (start, end), the config has {config.num_labels}")
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> QuestionAnsweringModelOutput:
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits, end_logits = logits[..., 0].contiguous(), logits[..., 1].contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored, as in transformers.
            ignored = start_logits.shape[1]
            start = start_positions.reshape(-1).clamp(0, ignored)
            end = end_positions.reshape(-1).clamp(0, ignored)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=ignored)
                + F.cross_entropy(end_logits, end, ignore_index=ignored)
            ) / 2
        return QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states)


HEADS: dict[str, type[MobileBertPreTrainedModel]] = {
    "MobileBertModel": MobileBertModel,
    "MobileBertForPreTraining": MobileBertForPreTraining,
    "MobileBertForMaskedLM": MobileBertForMaskedLM,
    "MobileBertForNextSentencePrediction": MobileBertForNextSentencePrediction,
    "MobileBertForSequenceClassification": MobileBertForSequenceClassification,
    "MobileBertForMultipleChoice": MobileBertForMultipleChoice,
    "MobileBertForTokenClassification": MobileBertForTokenClassification,
    "MobileBertForQuestionAnswering": MobileBertForQuestionAnswering,
}

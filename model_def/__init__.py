"""MobileBERT in PyTorch: configuration, every task head, checkpoint I/O and the tokenizer."""

from .checkpoint_io import (
    CheckpointError,
    LoadReport,
    MissingWeightsError,
    ShapeMismatchError,
    UnexpectedWeightsError,
)
from .configuration_mobilebert import ConfigError, MobileBertConfig
from .modeling_mobilebert import (
    HEADS,
    InvalidInputError,
    MobileBertForMaskedLM,
    MobileBertForMultipleChoice,
    MobileBertForNextSentencePrediction,
    MobileBertForPreTraining,
    MobileBertForQuestionAnswering,
    MobileBertForSequenceClassification,
    MobileBertForTokenClassification,
    MobileBertModel,
    MobileBertPreTrainedModel,
)
from .tokenization_mobilebert import MobileBertTokenizer

__all__ = [
    "HEADS",
    "CheckpointError",
    "ConfigError",
    "InvalidInputError",
    "LoadReport",
    "MissingWeightsError",
    "MobileBertConfig",
    "MobileBertForMaskedLM",
    "MobileBertForMultipleChoice",
    "MobileBertForNextSentencePrediction",
    "MobileBertForPreTraining",
    "MobileBertForQuestionAnswering",
    "MobileBertForSequenceClassification",
    "MobileBertForTokenClassification",
    "MobileBertModel",
    "MobileBertPreTrainedModel",
    "MobileBertTokenizer",
    "ShapeMismatchError",
    "UnexpectedWeightsError",
]

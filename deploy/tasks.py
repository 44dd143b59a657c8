"""What each task's ensemble looks like: its request and response tensors and how its three steps are wired.

Every task is served as an ensemble `<task>` = tokenizer -> `<task>_onnx` (the exported graph) ->
`<task>_post` (Python post-processing). This module is the single description of that wiring; configs, the
README's tensor tables and the client all follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonclient.grpc import model_config_pb2 as mc

TOKENIZER = "tokenizer"
CHOICES_TOKENIZER = "tokenizer_choices"
TOKENIZER_OUTPUTS = {
    "input_ids": (mc.TYPE_INT64, (-1,)),
    "attention_mask": (mc.TYPE_INT64, (-1,)),
    "token_type_ids": (mc.TYPE_INT64, (-1,)),
    "offsets": (mc.TYPE_INT64, (-1, 2)),
}

# deploy/python_models/ modules every tokenizer / post-processing model may import (shipped beside its model.py)
POST_MODULES = ("triton_responses.py", "version_files.py", "probabilities.py")


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: int  # model_config_pb2.DataType
    dims: tuple[int, ...]
    optional: bool = False
    description: str = ""


def text(name: str, description: str, optional: bool = False, dims: tuple[int, ...] = (1,)) -> Tensor:
    return Tensor(name, mc.TYPE_STRING, dims, optional, description)


@dataclass(frozen=True)
class TaskDeployment:
    task: str  # ensemble name, and the export task whose graph it serves
    inputs: tuple[Tensor, ...]  # the ensemble's request tensors
    outputs: tuple[Tensor, ...]  # the ensemble's response tensors (the post-processing model's outputs)
    tokenizer_inputs: dict[str, str]  # tokenizer input -> ensemble input
    post_text_inputs: tuple[str, ...] = ()  # ensemble inputs the post-processing also reads
    post_token_inputs: tuple[str, ...] = ()  # tokenizer outputs the post-processing also reads
    post_files: tuple[str, ...] = ("serving.json",)  # files the post-processing model loads
    # modules of deploy/python_models/ the post-processing model imports from its version folder
    post_modules: tuple[str, ...] = POST_MODULES
    serving_defaults: dict = field(default_factory=dict)  # extra post-processing settings (serving.json)
    batched: bool = True  # False: one request = one set (multiple choice), no batch dimension

    @property
    def tokenizer(self) -> str:
        return TOKENIZER if self.batched else CHOICES_TOKENIZER

    @property
    def onnx_model(self) -> str:
        return f"{self.task}_onnx"

    @property
    def post_model(self) -> str:
        return f"{self.task}_post"

    @property
    def models(self) -> tuple[str, ...]:
        return (self.onnx_model, self.post_model, self.task)


RESULT = Tensor("RESULT", mc.TYPE_STRING, (1,), description="JSON, one per input row")
TEXT = text("TEXT", "the input text, one per row")

DEPLOYMENTS: dict[str, TaskDeployment] = {
    d.task: d
    for d in (
        TaskDeployment(
            "fill_mask",
            inputs=(text("TEXT", "text with one or more [MASK] tokens"),),
            outputs=(
                Tensor(
                    "RESULT",
                    mc.TYPE_STRING,
                    (1,),
                    description="JSON: per mask, top-k {score, token, token_str, sequence}",
                ),
            ),
            tokenizer_inputs={"TEXT": "TEXT"},
            post_token_inputs=("input_ids", "attention_mask"),
            post_files=("serving.json", "tokenizer.json"),
            post_modules=(*POST_MODULES, "mask_filling.py"),
        ),
        TaskDeployment(
            "text_classification",
            inputs=(TEXT, text("TEXT_PAIR", "optional second text of a pair", optional=True)),
            outputs=(Tensor("RESULT", mc.TYPE_STRING, (1,), description="JSON: every {label, score}, best first"),),
            tokenizer_inputs={"TEXT": "TEXT", "TEXT_PAIR": "TEXT_PAIR"},
        ),
        TaskDeployment(
            "next_sentence",
            inputs=(text("TEXT", "sentence A"), text("TEXT_PAIR", "sentence B")),
            outputs=(Tensor("RESULT", mc.TYPE_STRING, (1,), description="JSON: {is_next, score = P(B follows A)}"),),
            tokenizer_inputs={"TEXT": "TEXT", "TEXT_PAIR": "TEXT_PAIR"},
            post_files=(),
        ),
        TaskDeployment(
            "multiple_choice",
            inputs=(text("PROMPT", "the question or context"), text("CHOICES", "the candidate answers", dims=(-1,))),
            outputs=(Tensor("RESULT", mc.TYPE_STRING, (1,), description="JSON: {index, choice, scores}"),),
            tokenizer_inputs={"PROMPT": "PROMPT", "CHOICES": "CHOICES"},
            post_text_inputs=("CHOICES",),
            post_files=(),
            batched=False,
        ),
        TaskDeployment(
            "token_classification",
            inputs=(TEXT,),
            outputs=(
                Tensor("RESULT", mc.TYPE_STRING, (1,), description="JSON: [{entity_group, score, word, start, end}]"),
            ),
            tokenizer_inputs={"TEXT": "TEXT"},
            post_text_inputs=("TEXT",),
            post_token_inputs=("input_ids", "attention_mask", "offsets"),
            post_files=("serving.json", "tokenizer.json"),
        ),
        TaskDeployment(
            "question_answering",
            inputs=(text("QUESTION", "the question"), text("CONTEXT", "the text holding the answer")),
            outputs=(Tensor("RESULT", mc.TYPE_STRING, (1,), description="JSON: top-k {answer, score, start, end}"),),
            tokenizer_inputs={"TEXT": "QUESTION", "TEXT_PAIR": "CONTEXT"},
            post_text_inputs=("CONTEXT",),
            post_token_inputs=("token_type_ids", "attention_mask", "offsets"),
            post_modules=(*POST_MODULES, "span_decoding.py"),
            serving_defaults={"top_k": 5, "max_answer_len": 15},
        ),
        TaskDeployment(
            "feature_extraction",
            inputs=(TEXT,),
            outputs=(
                Tensor("MEAN_POOLED", mc.TYPE_FP32, (-1,), description="mean of token vectors over the mask"),
                Tensor("CLS", mc.TYPE_FP32, (-1,), description="the [CLS] token vector"),
                Tensor("POOLER_OUTPUT", mc.TYPE_FP32, (-1,), description="the model's pooler output"),
                Tensor("LAST_HIDDEN_STATE", mc.TYPE_FP32, (-1, -1), description="token vectors, padded"),
                Tensor("ATTENTION_MASK", mc.TYPE_INT64, (-1,), description="1 for real tokens"),
            ),
            tokenizer_inputs={"TEXT": "TEXT"},
            post_token_inputs=("attention_mask",),
            post_files=(),
        ),
        TaskDeployment(
            "pretraining",
            inputs=(TEXT, text("TEXT_PAIR", "optional second segment", optional=True)),
            outputs=(
                Tensor("INPUT_IDS", mc.TYPE_INT64, (-1,), description="token ids, padded"),
                Tensor("TOKEN_TOP_IDS", mc.TYPE_INT64, (-1, -1), description="top-k token ids per position"),
                Tensor("TOKEN_TOP_PROBS", mc.TYPE_FP32, (-1, -1), description="their probabilities"),
                Tensor("NSP_PROBS", mc.TYPE_FP32, (2,), description="[P(B follows A), P(B is random)]"),
            ),
            tokenizer_inputs={"TEXT": "TEXT", "TEXT_PAIR": "TEXT_PAIR"},
            post_token_inputs=("input_ids",),
            serving_defaults={"top_k": 5},
        ),
    )
}

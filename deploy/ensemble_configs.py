"""Configs of each task's post-processing model and ensemble, derived from deploy.tasks and the graph signature."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from .model_configs import GraphTensor
from .tasks import TOKENIZER_OUTPUTS, TaskDeployment


def _token_dims(deployment: TaskDeployment, name: str) -> tuple[int, ...]:
    dims = TOKENIZER_OUTPUTS[name][1]
    return dims if deployment.batched else (-1, -1, *dims)


def post_config(deployment: TaskDeployment, graph_outputs: list[GraphTensor], max_batch_size: int) -> mc.ModelConfig:
    """The post-processing model: graph outputs + the tokenizer outputs and texts it reads -> the task's results."""
    config = mc.ModelConfig(
        name=deployment.post_model, backend="python", max_batch_size=max_batch_size if deployment.batched else 0
    )
    for t in graph_outputs:
        config.input.append(mc.ModelInput(name=t.name, data_type=t.data_type, dims=list(t.dims)))
    for name in deployment.post_token_inputs:
        if any(t.name == name for t in graph_outputs):
            continue
        config.input.append(
            mc.ModelInput(name=name, data_type=TOKENIZER_OUTPUTS[name][0], dims=list(_token_dims(deployment, name)))
        )
    by_name = {t.name: t for t in deployment.inputs}
    for name in deployment.post_text_inputs:
        t = by_name[name]
        config.input.append(mc.ModelInput(name=name, data_type=t.data_type, dims=list(t.dims)))
    for t in deployment.outputs:
        config.output.append(mc.ModelOutput(name=t.name, data_type=t.data_type, dims=list(t.dims)))
    config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1))
    return config


def ensemble_config(
    deployment: TaskDeployment, graph_inputs: list[GraphTensor], graph_outputs: list[GraphTensor], max_batch_size: int
) -> mc.ModelConfig:
    """tokenizer -> <task>_onnx -> <task>_post, with the task's request and response tensors."""
    config = mc.ModelConfig(
        name=deployment.task, platform="ensemble", max_batch_size=max_batch_size if deployment.batched else 0
    )
    for t in deployment.inputs:
        config.input.append(mc.ModelInput(name=t.name, data_type=t.data_type, dims=list(t.dims), optional=t.optional))
    for t in deployment.outputs:
        config.output.append(mc.ModelOutput(name=t.name, data_type=t.data_type, dims=list(t.dims)))
    steps = config.ensemble_scheduling.step

    tokens = {t.name for t in graph_inputs} | set(deployment.post_token_inputs)
    tokenize = steps.add(model_name=deployment.tokenizer, model_version=-1)
    for model_input, ensemble_input in deployment.tokenizer_inputs.items():
        tokenize.input_map[model_input] = ensemble_input
    for name in sorted(tokens):
        tokenize.output_map[name] = f"_tokens_{name}"

    run = steps.add(model_name=deployment.onnx_model, model_version=-1)
    for t in graph_inputs:
        run.input_map[t.name] = f"_tokens_{t.name}"
    for t in graph_outputs:
        run.output_map[t.name] = f"_graph_{t.name}"

    post = steps.add(model_name=deployment.post_model, model_version=-1)
    for t in graph_outputs:
        post.input_map[t.name] = f"_graph_{t.name}"
    for name in deployment.post_token_inputs:
        if not any(t.name == name for t in graph_outputs):
            post.input_map[name] = f"_tokens_{name}"
    for name in deployment.post_text_inputs:
        post.input_map[name] = name
    for t in deployment.outputs:
        post.output_map[t.name] = t.name
    return config

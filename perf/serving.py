"""The server under test: a built repository served by the pip-installed tritonserver on free ports.

Only the models of the measured tasks are loaded (explicit model control), so idle Python-backend stubs of other
tasks take no memory or CPU from the measurement. Nothing is built here: a repository without build.json is an error
that says how to build one.
"""

from __future__ import annotations

from pathlib import Path

from deploy.build import read_build_record
from deploy.server import TritonServer, start_on_free_ports
from deploy.tasks import DEPLOYMENTS


class RepositoryNotBuilt(RuntimeError):
    """The repository has no build record, or lacks a task to measure."""


def build_record(repository: Path) -> dict:
    record = read_build_record(repository)
    if record is None:
        raise RepositoryNotBuilt(
            f"{repository} is not a built model repository (no build.json). Build one first: "
            f"python -m deploy build --demo --repository {repository}   (or make build)"
        )
    return record


def models_for(tasks: list[str], record: dict, repository: Path) -> list[str]:
    missing = [t for t in tasks if t not in record.get("tasks", [])]
    if missing:
        raise RepositoryNotBuilt(
            f"{repository} was built without task(s) {missing} (it has {record.get('tasks')}); rebuild with them"
        )
    models = [DEPLOYMENTS[t].tokenizer for t in tasks] + [m for t in tasks for m in DEPLOYMENTS[t].models]
    return list(dict.fromkeys(models))


def server_for(repository: Path, tasks: list[str], log_file: Path | None = None) -> TritonServer:
    """A started TritonServer on free ports loading only what `tasks` need (a lost port race is retried, a crash
    raises with the log tail: deploy.server.start_on_free_ports); use it as a context manager to stop it."""
    repository = Path(repository)
    record = build_record(repository)
    return start_on_free_ports(repository, models=models_for(tasks, record, repository), log_file=log_file)


def ensemble_models(task: str) -> list[str]:
    """The ensemble and its composing models, in pipeline order (for the server breakdown)."""
    d = DEPLOYMENTS[task]
    return [d.tokenizer, d.onnx_model, d.post_model, d.task]


def onnx_runner_settings(repository: Path, task: str) -> dict:
    """The settings of `<task>_onnx` as built: engine, graph file, precision, threads, streams, instances, batching."""
    from deploy.model_configs import parse_config

    config = parse_config(Path(repository) / DEPLOYMENTS[task].onnx_model / "config.pbtxt")
    params = {k: v.string_value for k, v in config.parameters.items()}
    return {
        "engine": params.get("engine"),
        "precision": params.get("precision"),
        "streams": int(params.get("streams", "1")),
        "graph": params.get("graph"),
        "graph_path": str(Path(repository) / DEPLOYMENTS[task].onnx_model / "1" / params.get("graph", "")),
        "intra_op_threads": int(params.get("intra_op_threads", "0")),
        "instances": sum(g.count for g in config.instance_group) or 1,
        "max_batch_size": config.max_batch_size,
        "preferred_batch_sizes": list(config.dynamic_batching.preferred_batch_size),
        "max_queue_delay_us": config.dynamic_batching.max_queue_delay_microseconds,
    }

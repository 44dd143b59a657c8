"""MobileBertClient: the blocking client, one method per task, over tritonclient's gRPC client.

Every server call goes through `_call`, which applies the retry loop (backoff, round-robin, failover) and turns
tritonclient exceptions into the typed errors. Task methods plan a `Job` (client/tasks.py), send its requests one
after another and shape the answers; a list longer than the task's max_batch_size becomes several requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from . import tasks
from .codec import infer_inputs, requested_outputs, result_arrays
from .errors import AccessDeniedError, InvalidInputError, ServerUnavailableError
from .options import ConnectionOptions, resolve_options
from .retry import RetryLoop, UrlRotation

T = TypeVar("T")
HEALTH_TIMEOUT_S = 5.0  # health probes answer in milliseconds; do not let a hung server stall is_ready()
DEFAULT_MAX_BATCH_SIZE = 64  # what the repository's task ensembles allow when the config does not say


class MobileBertClient:
    """Blocking client for the MobileBERT tasks served by Triton.

    `MobileBertClient("localhost:8001")`, or several URLs (list or comma-separated) for round-robin and failover;
    `options` (ConnectionOptions) and keyword overrides of its fields (timeout_s=5, retries=0, headers=...) configure
    the connection. Thread-safe; use as a context manager or call close().
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        options: ConnectionOptions | None = None,
        **overrides: Any,
    ) -> None:
        self.options = resolve_options(url, options, overrides)
        self._rotation = UrlRotation(self.options.urls, self.options.failover_cooldown_s)
        self._clients: dict[str, grpcclient.InferenceServerClient] = {}
        self._max_batch: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def urls(self) -> tuple[str, ...]:
        return self.options.urls

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _client(self, url: str) -> grpcclient.InferenceServerClient:
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                client = grpcclient.InferenceServerClient(url, **self.options.grpc_client_kwargs())
                self._clients[url] = client
            return client

    def _call(self, action: str, model: str | None, fn: Callable[[grpcclient.InferenceServerClient], T]) -> T:
        """Run `fn` against a server, with retries and failover; raise typed errors."""
        loop = RetryLoop(self.options, self._rotation, model, action)
        for attempt in loop:
            if attempt.delay_s:
                time.sleep(attempt.delay_s)
            try:
                value = fn(self._client(attempt.url))
            except InferenceServerException as exc:
                loop.failed(attempt.url, exc)
                continue
            loop.succeeded(attempt.url)
            return value
        raise loop.exhausted()

    def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, Any]:
        tensors = infer_inputs(inputs)
        requested = requested_outputs(list(outputs) if outputs is not None else None)
        result = self._call(
            f"infer {model}",
            model,
            lambda c: c.infer(
                model,
                tensors,
                outputs=requested,
                client_timeout=self.options.timeout_s,
                headers=self.options.headers or None,
                compression_algorithm=self.options.compression,
            ),
        )
        return result_arrays(result, outputs)

    def max_batch_size(self, model: str) -> int:
        """Rows per request for `model`: the server's max_batch_size (cached), capped by the options."""
        if model not in self._max_batch:
            config = self.model_config(model)
            self._max_batch[model] = int(config.get("max_batch_size", 0)) or DEFAULT_MAX_BATCH_SIZE
        limit = self._max_batch[model]
        return min(limit, self.options.max_batch_size) if self.options.max_batch_size else limit

    def _run(self, job: tasks.Job) -> Any:
        # One row needs no batching decision, so single calls cost exactly one RPC.
        batch = self.max_batch_size(job.model) if job.batched and job.rows > 1 else 1
        rows: list[Any] = []
        for inputs in job.requests(batch):
            rows.extend(job.decode(self._infer(job.model, inputs, job.outputs)))
        return job.finish(rows)

    # -- tasks ----------------------------------------------------------------------------------------------------

    def fill_mask(self, text: str | Sequence[str], top_k: int = 5) -> Any:
        """Top-k tokens for each [MASK]: [{score, token, token_str, sequence}] (a list per mask if several)."""
        return self._run(tasks.fill_mask(text, top_k))

    def classify(
        self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, top_k: int | None = 1
    ) -> Any:
        """Labels best first: [{label, score}] (top_k=None: every label)."""
        return self._run(tasks.classify(text, text_pair, top_k))

    def next_sentence(self, text_a: str | Sequence[str], text_b: str | Sequence[str]) -> Any:
        """Whether text_b follows text_a: {is_next, score} with score = P(text_b follows text_a)."""
        return self._run(tasks.next_sentence(text_a, text_b))

    def multiple_choice(self, prompt: str | Sequence[str], choices: Sequence[str] | Sequence[Sequence[str]]) -> Any:
        """The best choice for the prompt: {index, choice, scores} (scores in the order of `choices`)."""
        return self._run(tasks.multiple_choice(prompt, choices))

    def tag(self, text: str | Sequence[str]) -> Any:
        """Entities: [{entity_group, score, word, start, end}] with character offsets into the text."""
        return self._run(tasks.tag(text))

    def answer(self, question: str | Sequence[str], context: str | Sequence[str], top_k: int = 1) -> Any:
        """The answer span in the context: {answer, score, start, end} (top_k > 1: a list of them)."""
        return self._run(tasks.answer(question, context, top_k))

    def embed(self, text: str | Sequence[str], pooling: str = "mean") -> Any:
        """Sentence embeddings: [hidden] for one text, [n, hidden] for a list; pooling="none": token vectors."""
        return self._run(tasks.embed(text, pooling))

    def infer_tensors(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Raw access: send these tensors to any model, get its outputs (all of them unless named) as numpy."""
        if not isinstance(inputs, dict) or not inputs:
            raise InvalidInputError("infer_tensors: inputs must be a non-empty dict of name -> numpy array")
        return self._infer(model, inputs, outputs)

    # -- health and introspection ---------------------------------------------------------------------------------

    def is_ready(self, task: str | None = None) -> bool:
        """Whether some server is ready (and, if given, has `task` READY). Never raises, never retries."""
        timeout = min(self.options.timeout_s or HEALTH_TIMEOUT_S, HEALTH_TIMEOUT_S)
        headers = self.options.headers or None
        for url in self.options.urls:
            try:
                client = self._client(url)
                if task is None and client.is_server_ready(headers=headers, client_timeout=timeout):
                    return True
                if task is not None and client.is_model_ready(task, headers=headers, client_timeout=timeout):
                    return True
            except InferenceServerException:
                continue
        return False

    def wait_until_ready(self, timeout: float = 60.0, task: str | None = None, poll_s: float = 0.5) -> None:
        """Block until is_ready(task); ServerUnavailableError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.is_ready(task):
            if time.monotonic() >= deadline:
                what = f"task '{task}' on " if task else ""
                raise ServerUnavailableError(
                    f"{what}the Triton server at {', '.join(self.urls)} not ready after {timeout:.0f}s",
                    url=self.urls[0],
                    model=task,
                )
            time.sleep(poll_s)

    def repository_index(self) -> list[dict[str, Any]]:
        """Every model in the server's repository with its state ({name, version, state, reason}).

        Servers started by deploy/ restrict the model-repository protocol to clients sending the admin key
        (AccessDeniedError names the header to send).
        """
        index = self._call(
            "repository index",
            None,
            lambda c: c.get_model_repository_index(
                headers=self.options.headers or None, as_json=True, client_timeout=self.options.timeout_s
            ),
        )
        return list(index.get("models", []))

    def tasks(self) -> list[str]:
        """The tasks the server offers: task ensembles in its repository index that are READY."""
        try:
            return offered_tasks(self.repository_index())
        except AccessDeniedError:
            # The index is admin-only on this server, but model readiness is open to every client: ask per task.
            headers, timeout = self.options.headers or None, self.options.timeout_s
            return [
                task
                for task in tasks.TASKS
                if self._call(
                    "model ready",
                    task,
                    lambda c, task=task: c.is_model_ready(task, headers=headers, client_timeout=timeout),
                )
            ]

    def model_metadata(self, model: str) -> dict[str, Any]:
        """The model's inputs and outputs (names, datatypes, shapes) as the server reports them."""
        return self._call(
            "model metadata",
            model,
            lambda c: c.get_model_metadata(
                model, headers=self.options.headers or None, as_json=True, client_timeout=self.options.timeout_s
            ),
        )

    def model_config(self, model: str) -> dict[str, Any]:
        """The model's configuration (max_batch_size, inputs, ensemble steps...) as a dict."""
        answer = self._call(
            "model config",
            model,
            lambda c: c.get_model_config(
                model, headers=self.options.headers or None, as_json=True, client_timeout=self.options.timeout_s
            ),
        )
        return answer.get("config", answer)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> MobileBertClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MobileBertClient(urls={list(self.urls)!r})"


def offered_tasks(models: list[dict[str, Any]]) -> list[str]:
    """Task names among the READY models of a repository index, in the order of tasks.TASKS."""
    ready = {m.get("name") for m in models if m.get("state") == "READY"}
    return [task for task in tasks.TASKS if task in ready]

"""AsyncMobileBertClient: the asyncio twin of MobileBertClient, over tritonclient.grpc.aio.

Same methods (awaitable), same options, retries and errors. What asyncio adds: the requests of a long list (and the
prompts of multiple_choice) are sent concurrently, and `map` runs any task method over an iterable with bounded
concurrency and a progress bar - the tool for bulk work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc.aio as aioclient
from tqdm import tqdm
from tritonclient.utils import InferenceServerException

from . import tasks
from .codec import infer_inputs, requested_outputs, result_arrays
from .errors import AccessDeniedError, InvalidInputError, ServerUnavailableError
from .options import ConnectionOptions, resolve_options
from .retry import RetryLoop, UrlRotation
from .sync_client import DEFAULT_MAX_BATCH_SIZE, HEALTH_TIMEOUT_S, offered_tasks

T = TypeVar("T")
# Methods `map` accepts by name: the task methods (not health checks or lifecycle).
MAPPABLE = frozenset(
    {"fill_mask", "classify", "next_sentence", "multiple_choice", "tag", "answer", "embed", "infer_tensors"}
)


class AsyncMobileBertClient:
    """Asyncio client for the MobileBERT tasks served by Triton; see MobileBertClient for the arguments.

    Use `async with AsyncMobileBertClient(url) as client:` or `await client.close()`. gRPC channels are created
    on first use, inside the running event loop.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        options: ConnectionOptions | None = None,
        **overrides: Any,
    ) -> None:
        self.options = resolve_options(url, options, overrides)
        self._rotation = UrlRotation(self.options.urls, self.options.failover_cooldown_s)
        self._clients: dict[str, aioclient.InferenceServerClient] = {}
        self._max_batch: dict[str, int] = {}

    @property
    def urls(self) -> tuple[str, ...]:
        return self.options.urls

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _client(self, url: str) -> aioclient.InferenceServerClient:
        client = self._clients.get(url)
        if client is None:
            client = aioclient.InferenceServerClient(url, **self.options.grpc_client_kwargs())
            self._clients[url] = client
        return client

    async def _call(
        self, action: str, model: str | None, fn: Callable[[aioclient.InferenceServerClient], Awaitable[T]]
    ) -> T:
        loop = RetryLoop(self.options, self._rotation, model, action)
        for attempt in loop:
            if attempt.delay_s:
                await asyncio.sleep(attempt.delay_s)
            try:
                value = await fn(self._client(attempt.url))
            except InferenceServerException as exc:
                loop.failed(attempt.url, exc)
                continue
            loop.succeeded(attempt.url)
            return value
        raise loop.exhausted()

    async def _infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        tensors = infer_inputs(inputs)
        requested = requested_outputs(list(outputs) if outputs is not None else None)
        result = await self._call(
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

    async def max_batch_size(self, model: str) -> int:
        if model not in self._max_batch:
            config = await self.model_config(model)
            self._max_batch[model] = int(config.get("max_batch_size", 0)) or DEFAULT_MAX_BATCH_SIZE
        limit = self._max_batch[model]
        return min(limit, self.options.max_batch_size) if self.options.max_batch_size else limit

    async def _run(self, job: tasks.Job) -> Any:
        batch = await self.max_batch_size(job.model) if job.batched and job.rows > 1 else 1
        answers = await asyncio.gather(*(self._infer(job.model, inputs, job.outputs) for inputs in job.requests(batch)))
        return job.finish([row for answer in answers for row in job.decode(answer)])

    # -- tasks (see MobileBertClient for what each returns) -------------------------------------------------------

    async def fill_mask(self, text: str | Sequence[str], top_k: int = 5) -> Any:
        return await self._run(tasks.fill_mask(text, top_k))

    async def classify(
        self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, top_k: int | None = 1
    ) -> Any:
        return await self._run(tasks.classify(text, text_pair, top_k))

    async def next_sentence(self, text_a: str | Sequence[str], text_b: str | Sequence[str]) -> Any:
        return await self._run(tasks.next_sentence(text_a, text_b))

    async def multiple_choice(
        self, prompt: str | Sequence[str], choices: Sequence[str] | Sequence[Sequence[str]]
    ) -> Any:
        return await self._run(tasks.multiple_choice(prompt, choices))

    async def tag(self, text: str | Sequence[str]) -> Any:
        return await self._run(tasks.tag(text))

    async def answer(self, question: str | Sequence[str], context: str | Sequence[str], top_k: int = 1) -> Any:
        return await self._run(tasks.answer(question, context, top_k))

    async def embed(self, text: str | Sequence[str], pooling: str = "mean") -> Any:
        return await self._run(tasks.embed(text, pooling))

    async def infer_tensors(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        if not isinstance(inputs, dict) or not inputs:
            raise InvalidInputError("infer_tensors: inputs must be a non-empty dict of name -> numpy array")
        return await self._infer(model, inputs, outputs)

    # -- bulk -----------------------------------------------------------------------------------------------------

    async def map(
        self,
        method: str | Callable[..., Awaitable[Any]],
        iterable: Iterable[Any],
        concurrency: int = 8,
        progress: bool = True,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Call `method` on every item, at most `concurrency` calls in flight; results in the items' order.

        `method` is a task method's name ("fill_mask", "answer"...) or any coroutine function. Each item is passed
        as the single argument, or unpacked if it is a tuple (positional) or a dict (keywords); `kwargs` go to
        every call (e.g. top_k=3). On the first error the remaining calls are cancelled and it is raised, unless
        `return_exceptions` (then the exception takes that item's place).
        """
        fn = self._mapped(method)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInputError(f"map: concurrency must be a positive integer, got {concurrency!r}")
        items = list(iterable)
        results: list[Any] = [None] * len(items)
        pending = iter(enumerate(items))  # shared by the workers; next() never yields to the loop, so no lock
        name = method if isinstance(method, str) else getattr(method, "__name__", "map")
        bar = tqdm(total=len(items), desc=name, unit="item", disable=not progress)

        async def worker() -> None:
            for index, item in pending:
                try:
                    results[index] = await _apply(fn, item, kwargs)
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    results[index] = exc
                bar.update(1)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(items)))]
        try:
            if workers:
                done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()
                await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            bar.close()
        return results

    def _mapped(self, method: str | Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if callable(method):
            return method
        if method not in MAPPABLE:
            raise InvalidInputError(f"map: unknown method {method!r}; use one of {sorted(MAPPABLE)} or a callable")
        return getattr(self, method)

    # -- health and introspection ---------------------------------------------------------------------------------

    async def is_ready(self, task: str | None = None) -> bool:
        timeout = min(self.options.timeout_s or HEALTH_TIMEOUT_S, HEALTH_TIMEOUT_S)
        headers = self.options.headers or None
        for url in self.options.urls:
            client = self._client(url)
            try:
                if task is None and await client.is_server_ready(headers=headers, client_timeout=timeout):
                    return True
                if task is not None and await client.is_model_ready(task, headers=headers, client_timeout=timeout):
                    return True
            except InferenceServerException:
                continue
        return False

    async def wait_until_ready(self, timeout: float = 60.0, task: str | None = None, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not await self.is_ready(task):
            if time.monotonic() >= deadline:
                what = f"task '{task}' on " if task else ""
                raise ServerUnavailableError(
                    f"{what}the Triton server at {', '.join(self.urls)} not ready after {timeout:.0f}s",
                    url=self.urls[0],
                    model=task,
                )
            await asyncio.sleep(poll_s)

    async def repository_index(self) -> list[dict[str, Any]]:
        index = await self._call(
            "repository index",
            None,
            lambda c: c.get_model_repository_index(
                headers=self.options.headers or None, as_json=True, client_timeout=self.options.timeout_s
            ),
        )
        return list(index.get("models", []))

    async def tasks(self) -> list[str]:
        try:
            return offered_tasks(await self.repository_index())
        except AccessDeniedError:
            # The index is admin-only on this server; readiness is open: ask for every task at once.
            headers, timeout = self.options.headers or None, self.options.timeout_s
            ready = await asyncio.gather(
                *(
                    self._call(
                        "model ready",
                        task,
                        lambda c, task=task: c.is_model_ready(task, headers=headers, client_timeout=timeout),
                    )
                    for task in tasks.TASKS
                )
            )
            return [task for task, is_ready in zip(tasks.TASKS, ready, strict=True) if is_ready]

    async def model_metadata(self, model: str) -> dict[str, Any]:
        return await self._call(
            "model metadata",
            model,
            lambda c: c.get_model_metadata(
                model, headers=self.options.headers or None, as_json=True, client_timeout=self.options.timeout_s
            ),
        )

    async def model_config(self, model: str) -> dict[str, Any]:
        answer = await self._call(
            "model config",
            model,
            lambda c: c.get_model_config(
                model, headers=self.options.headers or None, as_json=True, client_timeout=self.options.timeout_s
            ),
        )
        return answer.get("config", answer)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def __aenter__(self) -> AsyncMobileBertClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncMobileBertClient(urls={list(self.urls)!r})"


async def _apply(fn: Callable[..., Awaitable[Any]], item: Any, kwargs: dict[str, Any]) -> Any:
    if isinstance(item, tuple):
        return await fn(*item, **kwargs)
    if isinstance(item, dict):
        return await fn(**item, **kwargs)
    return await fn(item, **kwargs)

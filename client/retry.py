"""Retries with exponential backoff and jitter, over several server URLs with round-robin and failover.

Both clients drive the same loop: iterate `RetryLoop` to get the URL to try and the pause before it, report each
failure with `failed` (which raises at once for errors that retrying cannot fix), and raise `exhausted()` when the
attempts run out. Keeping the policy here means the sync and async clients cannot drift apart.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tritonclient.utils import InferenceServerException

from .errors import MobileBertClientError, ServerUnavailableError, is_transient, status_name, translate
from .options import ConnectionOptions

logger = logging.getLogger("client")
# A library does not configure logging: retries are logged only where the application has set up handlers.
logger.addHandler(logging.NullHandler())


class UrlRotation:
    """Round-robin over the server URLs; a URL that just failed moves to the back for `cooldown_s`.

    Thread-safe: the sync client may be shared between threads.
    """

    def __init__(self, urls: tuple[str, ...], cooldown_s: float) -> None:
        self.urls = urls
        self.cooldown_s = cooldown_s
        self._next = 0
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        """Every URL once, starting at the next in turn, recently failed ones last."""
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.urls)
            now = time.monotonic()
            rotated = [self.urls[(start + i) % len(self.urls)] for i in range(len(self.urls))]
            healthy = [u for u in rotated if now - self._failed_at.get(u, -1e18) >= self.cooldown_s]
            return healthy + [u for u in rotated if u not in healthy]

    def failed(self, url: str) -> None:
        with self._lock:
            self._failed_at[url] = time.monotonic()

    def succeeded(self, url: str) -> None:
        with self._lock:
            self._failed_at.pop(url, None)


def backoff_delay(options: ConnectionOptions, retry_round: int, rng: random.Random | None = None) -> float:
    """Pause before retry round `retry_round` (0 = first retry): exponential, capped, minus random jitter."""
    delay = min(options.backoff_max_s, options.backoff_initial_s * options.backoff_multiplier**retry_round)
    return delay * (1.0 - options.jitter * (rng or random).random())


@dataclass(frozen=True)
class Attempt:
    url: str
    delay_s: float  # sleep this long before sending


class RetryLoop:
    """The attempts of one call: (retries + 1) rounds, each trying every URL once, with backoff between rounds."""

    def __init__(self, options: ConnectionOptions, rotation: UrlRotation, model: str | None, action: str) -> None:
        self.options = options
        self.rotation = rotation
        self.model = model
        self.action = action  # for log lines: "infer fill_mask", "get_model_config"...
        self.attempts = 0
        self._last: tuple[str, InferenceServerException] | None = None
        self._tried: list[str] = []

    def __iter__(self) -> Iterator[Attempt]:
        for retry_round in range(self.options.retries + 1):
            delay = backoff_delay(self.options, retry_round - 1) if retry_round else 0.0
            for i, url in enumerate(self.rotation.order()):
                self.attempts += 1
                yield Attempt(url, delay if i == 0 else 0.0)

    def succeeded(self, url: str) -> None:
        self.rotation.succeeded(url)

    def failed(self, url: str, exc: InferenceServerException) -> None:
        """Record a failed attempt; raises the typed error unless the failure is worth retrying."""
        if not is_transient(exc):
            raise translate(exc, url=url, model=self.model, attempts=self.attempts) from exc
        self.rotation.failed(url)
        self._last = (url, exc)
        if url not in self._tried:
            self._tried.append(url)
        logger.warning(
            "%s: attempt %d at %s failed with %s (%s), a transient failure",
            self.action,
            self.attempts,
            url,
            status_name(exc) or "error",
            exc.message(),
        )

    def exhausted(self) -> MobileBertClientError:
        """The error to raise once every attempt failed transiently."""
        if self._last is None:  # cannot happen: the loop yields at least one attempt per URL
            return ServerUnavailableError(f"{self.action}: no attempt was made", model=self.model)
        url, exc = self._last
        where = url if len(self._tried) == 1 else ", ".join(self._tried)
        error = translate(exc, url=where, model=self.model, attempts=self.attempts)
        error.url = url
        return error

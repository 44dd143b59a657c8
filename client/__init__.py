"""gRPC client library for the MobileBERT tasks served by Triton - no torch, no transformers.

    from client import MobileBertClient
    with MobileBertClient("localhost:8001") as bert:
        bert.fill_mask("The capital of France is [MASK].")   # [{score, token, token_str, sequence}, ...]

Results follow the Hugging Face pipeline outputs; `AsyncMobileBertClient` is the asyncio twin with `map` for bulk
work; `ConnectionOptions` configures timeouts, retries, failover over several URLs, TLS, headers and compression.
"""

from .async_client import AsyncMobileBertClient
from .errors import (
    AccessDeniedError,
    InvalidInputError,
    MobileBertClientError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    TaskNotDeployedError,
)
from .options import ConnectionOptions, TlsOptions
from .sync_client import MobileBertClient
from .tasks import TASKS

__all__ = [
    "TASKS",
    "AccessDeniedError",
    "AsyncMobileBertClient",
    "ConnectionOptions",
    "InvalidInputError",
    "MobileBertClient",
    "MobileBertClientError",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "TaskNotDeployedError",
    "TlsOptions",
]

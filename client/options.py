"""Connection options as data: where the servers are and how to talk to them (timeouts, retries, TLS, headers...).

One frozen dataclass holds everything a deployment tunes, so it can be built from a config file or environment and
shared between the sync and the async client. `grpc_client_kwargs` turns it into tritonclient's constructor
arguments; the channel arguments are spelled out here (rather than left to tritonclient) because the client's own
retries only work well if gRPC reconnects quickly once a restarted server is back: gRPC's default reconnect backoff
grows to two minutes, during which every call would fail fast without trying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

DEFAULT_URL = "localhost:8001"
COMPRESSIONS = (None, "gzip", "deflate")


@dataclass(frozen=True)
class TlsOptions:
    """TLS for the gRPC channel (tritonclient's ssl options). Paths to PEM files.

    With no root certificates gRPC uses the system's trust store. `private_key` and `certificate_chain` are the
    client's own key and certificate, for servers that require mutual TLS (`--grpc-use-ssl-mutual`).
    `server_name` overrides the host name checked against the server certificate (e.g. a certificate issued for
    "triton.internal" reached through an IP address).
    """

    root_certificates: str | Path | None = None
    private_key: str | Path | None = None
    certificate_chain: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("TlsOptions: mutual TLS needs both private_key and certificate_chain")
        for name in ("root_certificates", "private_key", "certificate_chain"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TlsOptions.{name}: {path} is not a file")


@dataclass(frozen=True)
class ConnectionOptions:
    """How the client reaches Triton. Every field has a production-sensible default.

    urls: one or more gRPC endpoints ("host:port"); calls go round-robin over them and fail over to the next one when
        a server is unreachable.
    timeout_s: per-call deadline (each attempt); None waits forever.
    retries: extra rounds over the URLs after a transient failure (UNAVAILABLE, DEADLINE_EXCEEDED, connection
        refused); a round tries every URL once, so a call makes at most (retries + 1) * len(urls) attempts. Rejected
        requests (INVALID_ARGUMENT, unknown task...) are never retried.
    backoff_initial_s, backoff_multiplier, backoff_max_s, jitter: the sleep before retry round n is
        min(backoff_max_s, backoff_initial_s * backoff_multiplier**n), reduced by a random fraction up to `jitter`
        so that many clients do not retry in lock-step.
    failover_cooldown_s: a URL that just failed goes to the back of the rotation for this long.
    tls: TLS settings, or None for a plaintext channel.
    headers: sent with every call as gRPC metadata (e.g. {"authorization": "Bearer ..."}).
    keepalive: gRPC keep-alive pings (tritonclient.grpc.KeepAliveOptions); None uses tritonclient's defaults.
    compression: "gzip" or "deflate" to compress inference requests, None for none.
    max_reconnect_backoff_s: the longest gRPC waits between reconnection attempts to a server that went away.
    max_batch_size: cap on rows per request below the server's own limit (None: the server's max_batch_size).
    """

    urls: tuple[str, ...] = (DEFAULT_URL,)
    timeout_s: float | None = 60.0
    retries: int = 3
    backoff_initial_s: float = 0.1
    backoff_multiplier: float = 2.0
    backoff_max_s: float = 5.0
    jitter: float = 0.5
    failover_cooldown_s: float = 5.0
    tls: TlsOptions | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    keepalive: KeepAliveOptions | None = None
    compression: str | None = None
    max_reconnect_backoff_s: float = 2.0
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        # Accept a single URL or any sequence; store a tuple so the options stay hashable-ish and immutable.
        urls = parse_urls(self.urls)
        object.__setattr__(self, "urls", urls)
        object.__setattr__(self, "headers", dict(self.headers))
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"ConnectionOptions.timeout_s must be > 0 or None, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"ConnectionOptions.retries must be >= 0, got {self.retries}")
        if self.backoff_initial_s < 0 or self.backoff_max_s < 0 or self.backoff_multiplier < 1:
            raise ValueError("ConnectionOptions: backoff times must be >= 0 and backoff_multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"ConnectionOptions.jitter must be in [0, 1], got {self.jitter}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"ConnectionOptions.compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ValueError(f"ConnectionOptions.max_batch_size must be >= 1, got {self.max_batch_size}")

    def with_overrides(self, **overrides: Any) -> ConnectionOptions:
        return replace(self, **overrides) if overrides else self

    def channel_args(self) -> list[tuple[str, Any]]:
        keepalive = self.keepalive or KeepAliveOptions()
        reconnect_ms = max(1, int(self.max_reconnect_backoff_s * 1000))
        args: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", min(100, reconnect_ms)),
            ("grpc.min_reconnect_backoff_ms", min(100, reconnect_ms)),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms),
        ]
        if self.tls is not None and self.tls.server_name:
            args.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return args

    def grpc_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for tritonclient.grpc(.aio).InferenceServerClient, except the URL."""
        kwargs: dict[str, Any] = {"channel_args": self.channel_args()}
        if self.tls is not None:
            kwargs["ssl"] = True
            for name in ("root_certificates", "private_key", "certificate_chain"):
                path = getattr(self.tls, name)
                kwargs[name] = None if path is None else str(path)
        return kwargs


def parse_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """'a:8001' or 'a:8001,b:8001' or ['a:8001', 'b:8001'] -> ('a:8001', 'b:8001'); scheme prefixes dropped."""
    items = urls.split(",") if isinstance(urls, str) else [part for url in urls for part in str(url).split(",")]
    cleaned = []
    for item in items:
        url = item.strip()
        for prefix in ("grpc://", "grpcs://", "http://", "https://"):
            if url.startswith(prefix):  # gRPC targets are host:port; a scheme would make the channel fail oddly
                url = url[len(prefix) :]
        if url:
            cleaned.append(url)
    if not cleaned:
        raise ValueError("ConnectionOptions.urls: at least one server URL (host:port) is needed")
    return tuple(cleaned)


def resolve_options(
    url: str | Sequence[str] | None, options: ConnectionOptions | None, overrides: Mapping[str, Any]
) -> ConnectionOptions:
    """The options a client constructor was given: `url` and keyword overrides win over `options`."""
    base = options or ConnectionOptions()
    changes = dict(overrides)
    if url is not None:
        changes["urls"] = url
    return base.with_overrides(**changes)

"""Typed errors: one base class, one subclass per thing an application can do something about.

tritonclient raises a single `InferenceServerException` carrying a gRPC status string; applications should not have
to parse it. `translate` turns it into the class that says what went wrong (server unreachable, task not deployed,
bad input, timeout) with a message naming the server URL, the task or model, and the server's own words.
`is_transient` decides what the retry loop may try again: only failures where the same request can succeed later
or on another replica (the server is unreachable or restarting, the deadline passed) - never a rejected request.
"""

from __future__ import annotations

import re

from tritonclient.utils import InferenceServerException


class MobileBertClientError(Exception):
    """Base class of every error the client raises.

    Attributes: `url` (the server that answered last, if any), `model` (the task or model called), `status` (the
    gRPC status name, e.g. "INVALID_ARGUMENT", when the error came from the server), `server_message` (the server's
    own text) and `attempts` (how many requests were sent before giving up).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        model: str | None = None,
        status: str | None = None,
        server_message: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.model = model
        self.status = status
        self.server_message = server_message
        self.attempts = attempts


class ServerUnavailableError(MobileBertClientError):
    """No server could be reached (connection refused, server stopping, network down), even after retries."""


class TaskNotDeployedError(MobileBertClientError):
    """The server runs, but the task (model) is not in its repository or not loaded and READY."""


class InvalidInputError(MobileBertClientError):
    """The request was rejected: bad arguments caught client-side, or the server's message saying why."""


class RequestTimeoutError(MobileBertClientError):
    """The server did not answer within the per-call timeout (after retries)."""


class ServerError(MobileBertClientError):
    """The server failed while processing a valid request (a bug or a broken deployment: see the server log)."""


class AccessDeniedError(MobileBertClientError):
    """The server (or a proxy in front of it) refused the call: missing or wrong credentials in the headers."""


# gRPC status codes as tritonclient reports them ("StatusCode.UNAVAILABLE").
TRANSIENT_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


def status_name(exc: InferenceServerException) -> str:
    """'StatusCode.UNAVAILABLE' -> 'UNAVAILABLE'; '' when tritonclient raised without a status (client-side)."""
    status = exc.status() or ""
    return status.rsplit(".", 1)[-1]


def _mentions_model(message: str) -> bool:
    # Triton answers NOT_FOUND for unknown/unloaded models, but some paths (a model being unloaded mid-request,
    # older servers) say UNAVAILABLE with one of these phrases; that is a deployment problem, not a transient one.
    lowered = message.lower()
    return "unknown model" in lowered or "is not ready" in lowered or "no available versions" in lowered


def _tls_hint(message: str) -> str:
    # A connection the server closes at once, or a failed handshake, is what a TLS mismatch looks like from here.
    lowered = message.lower()
    if "socket closed" in lowered or "handshake" in lowered or "ssl" in lowered:
        return (
            "; a connection closed right away usually means a TLS mismatch: compare TlsOptions (root certificates, "
            "client certificate for mutual TLS) with the server's --grpc-use-ssl settings."
        )
    return "."


def _restricted(message: str) -> str | None:
    # Triton answers UNAVAILABLE for an endpoint limited with --grpc-restricted-protocol, naming the header it
    # expects ("This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"): not transient.
    match = re.search(r"protocol is restricted, expecting header '([^']+)'", message)
    return match.group(1) if match else None


def is_transient(exc: InferenceServerException) -> bool:
    """True when the same request may succeed if retried (possibly on another server URL)."""
    message = exc.message() or ""
    return status_name(exc) in TRANSIENT_STATUSES and not _mentions_model(message) and _restricted(message) is None


def translate(exc: InferenceServerException, *, url: str, model: str | None, attempts: int) -> MobileBertClientError:
    """The typed error for a tritonclient exception raised while calling `model` at `url`."""
    status = status_name(exc)
    server_message = exc.message() or str(exc)
    context = {"url": url, "model": model, "status": status, "server_message": server_message, "attempts": attempts}
    what = f"'{model}'" if model else "the call"  # the task or model: what the person asked for
    to = f" to '{model}'" if model else ""
    tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts > 1 else ""
    header = _restricted(server_message)
    if status in ("PERMISSION_DENIED", "UNAUTHENTICATED") or header is not None:
        fix = (
            f"send the header {header!r} with the server's key, e.g. ConnectionOptions(headers={{{header!r}: KEY}})"
            if header
            else "check the credentials sent in ConnectionOptions.headers"
        )
        return AccessDeniedError(
            f"the Triton server at {url} refused the call{to}: {server_message}; {fix}.", **context
        )
    if status == "NOT_FOUND" or (status in TRANSIENT_STATUSES and _mentions_model(server_message)):
        return TaskNotDeployedError(
            f"{what} is not deployed on the Triton server at {url}: {server_message}. "
            "Build it into the repository (python -m deploy build --task ...) and load it, "
            "or list what this server offers with `mobilebert-triton tasks --url " + url + "`.",
            **context,
        )
    if status == "DEADLINE_EXCEEDED":
        return RequestTimeoutError(
            f"the call{to} at {url} timed out{tries} ({server_message}); raise the timeout "
            "(ConnectionOptions.timeout_s / --timeout) or send smaller batches.",
            **context,
        )
    if status == "UNAVAILABLE" or (not status and "connect" in server_message.lower()):
        return ServerUnavailableError(
            f"cannot reach the Triton server at {url}{tries}: {server_message}. "
            "Check that tritonserver is running (python -m deploy serve) and that the URL is its gRPC port"
            + _tls_hint(server_message),
            **context,
        )
    if status in ("INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"):
        # The repository's models answer INVALID_ARG for input they cannot process (a fill-mask text without
        # [MASK], too many choices, text over the size limit), with a message naming the problem.
        return InvalidInputError(f"the Triton server at {url} rejected the request{to}: {server_message}", **context)
    if status == "INTERNAL":
        return ServerError(
            f"the Triton server at {url} failed while processing the request{to}: {server_message} "
            "(a server-side problem, not your input: the server log has the details)",
            **context,
        )
    return MobileBertClientError(
        f"the call{to} failed at the Triton server at {url}: [{status or 'no status'}] {server_message}", **context
    )

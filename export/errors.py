"""Errors of the export pipeline; each message names the head and the problem."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export step failed (exporter, simplifier, quantizer, or bad input to the pipeline)."""


class GateFailure(ExportError):
    """A graph missed a validation gate (FP32 parity, INT8 cosine or top-k agreement)."""

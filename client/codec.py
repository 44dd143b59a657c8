"""numpy <-> Triton tensors: building InferInputs, reading InferResults, and the JSON rows of RESULT outputs.

The sync and async tritonclient modules share the same InferInput/InferRequestedOutput/InferResult classes, so one
codec serves both clients.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from .errors import InvalidInputError


def text_array(values: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """UTF-8 BYTES tensor of the given shape (Triton's TYPE_STRING travels as bytes)."""
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_).reshape(shape)


def triton_dtype(array: np.ndarray) -> str:
    # Strings of any numpy flavour (object, unicode, bytes) are Triton BYTES; np_to_triton_dtype knows the rest.
    if array.dtype.kind in ("O", "U", "S"):
        return "BYTES"
    dtype = np_to_triton_dtype(array.dtype)
    if dtype is None:
        raise InvalidInputError(f"numpy dtype {array.dtype} has no Triton equivalent")
    return dtype


def infer_inputs(inputs: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    tensors = []
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind == "U":  # tritonclient serialises object arrays of bytes/str; unicode arrays need this
            array = array.astype(np.object_)
        tensor = grpcclient.InferInput(name, list(array.shape), triton_dtype(array))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def requested_outputs(names: tuple[str, ...] | list[str] | None) -> list[grpcclient.InferRequestedOutput] | None:
    return None if names is None else [grpcclient.InferRequestedOutput(name) for name in names]


def result_arrays(result: grpcclient.InferResult, names: tuple[str, ...] | list[str] | None) -> dict[str, np.ndarray]:
    """Every requested output (or every output the server sent) as numpy arrays."""
    if names is None:
        names = [output.name for output in result.get_response().outputs]
    return {name: result.as_numpy(name) for name in names}


def json_rows(array: np.ndarray) -> list[Any]:
    """A RESULT tensor ([n, 1] or [1] of JSON bytes) -> one decoded value per row."""
    return [json.loads(value.decode("utf-8") if isinstance(value, bytes) else value) for value in array.reshape(-1)]

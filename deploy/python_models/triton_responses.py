"""What every Python-backend model of the repository does with requests: one response each, errors per request.

Shipped by the build beside each tokenizer and post-processing model.
"""

import triton_python_backend_utils as pb_utils


def input_array(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


def error_code(exc):
    """Bad input (ValueError) is the caller's to fix: INVALID_ARG; anything else is the server's: INTERNAL."""
    return pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL


def respond_each(requests, model, respond):
    """`respond(request)` for each request; one that raises gets an error response naming `model`, and the
    instance lives on (one bad request must not take it down)."""
    responses = []
    for request in requests:
        try:
            responses.append(respond(request))
        except Exception as exc:
            error = pb_utils.TritonError(f"{model}: {exc}", error_code(exc))
            responses.append(pb_utils.InferenceResponse(error=error))
    return responses

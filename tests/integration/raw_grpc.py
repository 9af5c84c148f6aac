"""Raw KServe requests for tests that must send what the client library would refuse to build."""

import numpy as np
import tritonclient.grpc as grpcclient


def infer_raw(
    url: str, model: str, tensors: dict[str, tuple[np.ndarray, str]], timeout_s: float = 30.0
) -> grpcclient.InferResult:
    """Send ``tensors`` (name -> (array, KServe dtype)) to ``model``; raises InferenceServerException."""
    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, (array, dtype) in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer(model, inputs, client_timeout=timeout_s)


def bytes_tensor(*items: bytes) -> tuple[np.ndarray, str]:
    """A BYTES tensor of shape [len(items), 1]."""
    array = np.empty((len(items), 1), dtype=np.object_)
    array[:, 0] = list(items)
    return array, "BYTES"

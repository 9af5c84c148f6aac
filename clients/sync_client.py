r"""Minimal synchronous gRPC client of the `multimodal` ensemble, with only tritonclient + numpy.

Copy this file into your project:  pip install 'tritonclient[grpc]' numpy
    python clients/sync_client.py --text "one" \
        --image clients/samples/sample0_one.png --audio clients/samples/sample0_one.wav
Any modality may be left out: it is sent as an empty element, which the server treats as absent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def bytes_tensor(name: str, payload: bytes) -> grpcclient.InferInput:
    """One BYTES element with shape [1, 1] (batch of one)."""
    array = np.array([[payload]], dtype=np.object_)
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def main() -> int:
    """Classify one sample and print the top labels."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TRIMODAL_URL", "127.0.0.1:8001"), help="gRPC host:port")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--text", default="")
    parser.add_argument("--audio", type=Path)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    args = parser.parse_args()

    inputs = [
        bytes_tensor("IMAGE", args.image.read_bytes() if args.image else b""),
        bytes_tensor("TEXT", args.text.encode("utf-8")),
        bytes_tensor("AUDIO", args.audio.read_bytes() if args.audio else b""),
    ]
    outputs = [
        grpcclient.InferRequestedOutput("PROBABILITIES"),
        grpcclient.InferRequestedOutput("LABEL", class_count=args.top_k),  # "score:index:label" strings
    ]
    client = grpcclient.InferenceServerClient(args.url)
    try:
        result = client.infer("multimodal", inputs, outputs=outputs, client_timeout=args.timeout)
    except InferenceServerException as exc:
        print(f"{exc.status()}: {exc.message()}", file=sys.stderr)
        return 1
    probabilities = result.as_numpy("PROBABILITIES")[0]
    for entry in result.as_numpy("LABEL")[0]:
        score, index, label = entry.decode().split(":", 2)
        print(f"{label:<8} {float(score):.4f} (class {index})")
    print(f"sum of probabilities: {probabilities.sum():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

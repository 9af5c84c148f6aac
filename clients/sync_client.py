r"""Minimal synchronous gRPC client of the `multimodal` ensemble, with only tritonclient + numpy.

Copy this file into your project:  pip install 'tritonclient[grpc]' numpy
    python clients/sync_client.py --text "one" \
        --image clients/samples/sample0_one.png --audio clients/samples/sample0_one.wav
Any modality may be left out: it is sent as an empty element, which the server treats as absent.
With --modalities it also asks what each present modality says and whether they conflict.
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
    parser.add_argument("--modalities", action="store_true", help="also print each modality's vote")
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
    if args.modalities:
        outputs += [grpcclient.InferRequestedOutput(name) for name in AGREEMENT_OUTPUTS]
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
    if args.modalities:
        print_votes(result)
    return 0


AGREEMENT_OUTPUTS = ("MODALITY_PROBABILITIES", "MODALITY_LABELS", "AGREEMENT", "CONFLICT_SCORE", "CONFLICT")


def print_votes(result: grpcclient.InferResult) -> None:
    """What each present modality says (absent ones are NaN rows / empty labels) and whether they conflict."""
    rows = result.as_numpy("MODALITY_PROBABILITIES")[0]
    labels = result.as_numpy("MODALITY_LABELS")[0]
    votes = [
        f"{name} says {label.decode()} ({row.max():.2f})"
        for name, row, label in zip(("image", "text", "audio"), rows, labels, strict=True)
        if not np.isnan(row).any()
    ]
    conflict = bool(result.as_numpy("CONFLICT")[0, 0])
    verdict = "conflict" if conflict else ("agree" if result.as_numpy("AGREEMENT")[0, 0] else "no conflict")
    print(f"{', '.join(votes)}: {verdict} (score {result.as_numpy('CONFLICT_SCORE')[0, 0]:.2f})")


if __name__ == "__main__":
    sys.exit(main())

"""Bidirectional gRPC streaming client: one stream, many requests, responses matched by request id.

Useful behind load balancers that pin a connection, or to pipeline requests without a thread each.
    python clients/streaming_client.py --samples clients/samples
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def _tensor(name: str, payload: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[payload]], dtype=np.object_))
    return tensor


def _first_error(responses: queue.Queue) -> str:
    """The first error the stream's callback reported (why the stream ended)."""
    while True:
        try:
            _, error = responses.get_nowait()
        except queue.Empty:
            return "the stream ended"
        if error is not None:
            return str(error)


def main() -> int:
    """Send every bundled sample over one stream and print the labels as they arrive."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TRIMODAL_URL", "127.0.0.1:8001"), help="gRPC host:port")
    parser.add_argument("--samples", type=Path, default=Path(__file__).parent / "samples")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of the whole stream, seconds")
    args = parser.parse_args()

    metas = sorted(args.samples.glob("*.json"))
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(args.url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)), stream_timeout=args.timeout)
    expected = {}
    try:
        for n, meta in enumerate(metas):
            info = json.loads(meta.read_text())
            expected[str(n)] = info["label"]
            inputs = [
                _tensor("IMAGE", (args.samples / info["image"]).read_bytes()),
                _tensor("TEXT", (args.samples / info["text"]).read_bytes()),
                _tensor("AUDIO", (args.samples / info["audio"]).read_bytes()),
            ]
            outputs = [grpcclient.InferRequestedOutput("LABEL", class_count=1)]
            try:
                client.async_stream_infer("multimodal", inputs, outputs=outputs, request_id=str(n))
            except InferenceServerException:  # the stream ended (its deadline, the server): the callback says why
                print(f"error: {_first_error(responses)} (after {n} of {len(metas)} requests were sent)",
                      file=sys.stderr)  # fmt: skip
                return 1
        failures = 0
        until = time.monotonic() + args.timeout  # one deadline for the whole stream, as the stream has
        for answered in range(len(metas)):
            try:
                result, error = responses.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                print(f"error: {len(metas) - answered} of {len(metas)} responses missing after {args.timeout:g} s",
                      file=sys.stderr)  # fmt: skip
                return 1
            if error is not None:
                print(f"error: {error}", file=sys.stderr)
                failures += 1
                continue
            request_id = result.get_response().id
            label = result.as_numpy("LABEL")[0][0].decode().split(":", 2)[2]
            print(f"request {request_id}: {label} (expected {expected[request_id]})")
            failures += label != expected[request_id]
    finally:
        client.stop_stream()
        client.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

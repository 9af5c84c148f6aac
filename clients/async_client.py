"""Asynchronous gRPC client: many samples, bounded concurrency, one deadline per request.

Triton's dynamic batcher merges the concurrent requests into batches on the server.
    python clients/async_client.py --samples clients/samples --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException


def _tensor(name: str, payload: bytes) -> aioclient.InferInput:
    tensor = aioclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[payload]], dtype=np.object_))
    return tensor


async def classify(client, gate: asyncio.Semaphore, sample: dict[str, bytes], timeout: float) -> str:
    """Classify one sample; returns the top label or the error."""
    async with gate:
        inputs = [_tensor(name, sample.get(name, b"")) for name in ("IMAGE", "TEXT", "AUDIO")]
        outputs = [aioclient.InferRequestedOutput("LABEL", class_count=1)]
        try:
            result = await client.infer("multimodal", inputs, outputs=outputs, client_timeout=timeout)
        except InferenceServerException as exc:
            return f"error {exc.status()}: {exc.message()}"
        return result.as_numpy("LABEL")[0][0].decode().split(":", 2)[2]


def load_samples(folder: Path) -> list[tuple[str, dict[str, bytes]]]:
    """Read the bundled samples (one JSON file per sample naming its image/text/audio files)."""
    samples = []
    for meta in sorted(folder.glob("*.json")):
        info = json.loads(meta.read_text())
        sample = {
            "IMAGE": (folder / info["image"]).read_bytes(),
            "TEXT": (folder / info["text"]).read_bytes(),
            "AUDIO": (folder / info["audio"]).read_bytes(),
        }
        samples.append((info["label"], sample))
    return samples


async def main() -> int:
    """Classify every bundled sample `--repeat` times with bounded concurrency."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TRIMODAL_URL", "127.0.0.1:8001"), help="gRPC host:port")
    parser.add_argument("--samples", type=Path, default=Path(__file__).parent / "samples")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    samples = load_samples(args.samples) * args.repeat
    gate = asyncio.Semaphore(args.concurrency)
    client = aioclient.InferenceServerClient(args.url)
    started = time.perf_counter()
    try:
        labels = await asyncio.gather(*(classify(client, gate, s, args.timeout) for _, s in samples))
    finally:
        await client.close()
    seconds = time.perf_counter() - started
    correct = sum(label == want for label, (want, _) in zip(labels, samples, strict=True))
    print(f"{len(samples)} requests in {seconds:.2f} s ({len(samples) / seconds:.1f} req/s), {correct} correct")
    return 0 if correct == len(samples) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

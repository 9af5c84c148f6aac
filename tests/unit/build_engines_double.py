"""Test double of ``trimodal build-engines`` for the deployment rehearsal (TensorRT cannot run here).

It keeps the command's file-system contract, as the deployment relies on it, and nothing else:
- options ``--repository`` (default ``$TRIMODAL_REPOSITORY``), ``--cache-dir`` (the timing cache's folder),
  ``--build-dir`` (graphs from a mounted build folder), ``--precision``, ``--workspace``, ``--force``;
- reads ``<repository>/<model>/1/model.onnx`` of every model whose ``config.pbtxt`` says
  ``platform: "tensorrt_plan"`` (fails like the real command when one is missing);
- writes ``model.plan`` and ``model.plan.json`` next to it and a timing cache under ``--cache-dir``;
- never writes a config (the real command never renders) and never trains.
Each call appends one JSON line (argv, uid, gid, cwd) to ``$REHEARSAL_LOG`` when that is set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="trimodal build-engines")
    parser.add_argument("--repository", type=Path, default=os.environ.get("TRIMODAL_REPOSITORY"))
    parser.add_argument("--build-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--workspace", type=int)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    log = os.environ.get("REHEARSAL_LOG")
    if log:
        with open(log, "a") as out:
            entry = {"argv": argv, "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd()}
            out.write(json.dumps(entry) + "\n")
    if args.repository is None or args.cache_dir is None:
        print("error: --repository (or TRIMODAL_REPOSITORY) and --cache-dir are required here")
        return 2
    models = sorted(
        p.parent for p in args.repository.glob("*/config.pbtxt") if 'platform: "tensorrt_plan"' in p.read_text()
    )
    if not models:
        print(f"error: no tensorrt_plan model in {args.repository}", file=sys.stderr)
        return 1
    cache = args.cache_dir / "timing-trt0.0.0-sm00.cache"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"timing cache")
    for model in models:
        onnx = model / "1" / "model.onnx"
        if not onnx.is_file():
            print(f"error: {model.name}: no ONNX graph at {onnx}", file=sys.stderr)
            return 1
        digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
        plan = onnx.with_name("model.plan")
        plan.write_bytes(b"plan of " + digest.encode())
        meta = {"onnx_sha256": digest, "precision": args.precision or "fp16", "double": True}
        plan.with_name("model.plan.json").write_text(json.dumps(meta))
        print(f"{model.name}: wrote {plan}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

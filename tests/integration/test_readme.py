"""Every README block marked runnable, run against a real tritonserver (the doc-test runner).

A fenced block whose info string holds the word ``runnable`` (```` ```bash runnable ````) is run by bash
(``set -euo pipefail``) from the repository root, with the test server's addresses in ``TRITON_HTTP``,
``TRITON_GRPC`` (the variables the README documents) and ``TRIMODAL_URL`` (what ``trimodal`` and the Python
clients read). It must exit 0. When a ```` ```text output ```` block follows it, every line of that block must
appear in the output, in order, ``...`` standing for any text.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One runnable README block and the output it promises."""

    line: int
    body: str
    expected: tuple[str, ...]

    @property
    def name(self) -> str:
        """A test id: the README line and the block's first command."""
        return f"README.md:{self.line}:{self.body.strip().splitlines()[0][:40]}"


def runnable_blocks(text: str) -> list[Block]:
    """The blocks marked runnable, each with the lines of the ``text output`` block right after it."""
    fences = list(FENCE.finditer(text))
    blocks = []
    for index, fence in enumerate(fences):
        if "runnable" not in fence.group("info").split():
            continue
        expected: tuple[str, ...] = ()
        following = fences[index + 1] if index + 1 < len(fences) else None
        adjacent = following is not None and not text[fence.end() : following.start()].strip()
        if adjacent and following.group("info").split() == ["text", "output"]:
            expected = tuple(line.strip() for line in following.group("body").splitlines() if line.strip())
        blocks.append(Block(text.count("\n", 0, fence.start()) + 1, fence.group("body"), expected))
    return blocks


def _pattern(expected_line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected_line.split("...")))


def missing_lines(expected: tuple[str, ...], output: str) -> list[str]:
    """Expected lines not found in ``output`` in order (``...`` matches anything); empty when all are there."""
    lines = [line.strip() for line in output.splitlines()]
    position = 0
    for number, want in enumerate(expected):
        pattern = _pattern(want)
        for offset, line in enumerate(lines[position:]):
            if pattern.fullmatch(line):
                position += offset + 1
                break
        else:
            return list(expected[number:])
    return []


BLOCKS = runnable_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_marks_its_examples_runnable() -> None:
    """The runner sees the quick start and every 'call it without our client' example (curl, binary, gRPC)."""
    bodies = "\n".join(block.body for block in BLOCKS)
    for needle in ("trimodal infer", "/v2/health/ready", '"classification": 3', "Inference-Header-Content-Length",
                   "node clients/node/infer.js"):  # fmt: skip
        assert needle in bodies, f"no runnable README block contains {needle!r}"
    assert sum(bool(block.expected) for block in BLOCKS) >= 4


def test_the_matcher_can_fail() -> None:
    assert missing_lines(("a ... c", "d"), "x\na b c\nd\n") == []
    assert missing_lines(("d", "a ... c"), "a b c\nd\n") == ["a ... c"], "order matters"
    assert missing_lines(("...:7:seven",), '"0.9:3:three"') == ["...:7:seven"]


def test_the_protoset_is_tritons_api() -> None:
    """clients/node/triton.protoset equals a fresh descriptor set from the installed tritonclient wheel."""
    from google.protobuf import descriptor_pb2

    from trimodal.protoset import triton_descriptor_set

    committed, fresh = descriptor_pb2.FileDescriptorSet(), descriptor_pb2.FileDescriptorSet()
    committed.ParseFromString((ROOT / "clients/node/triton.protoset").read_bytes())
    fresh.ParseFromString(triton_descriptor_set())
    assert [file.name for file in fresh.file] == ["model_config.proto", "grpc_service.proto"]
    assert committed == fresh, "run `trimodal protoset clients/node/triton.protoset`"


@pytest.mark.integration
@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_readme_block_runs(server, block: Block) -> None:
    env = dict(os.environ, TRITON_HTTP=f"127.0.0.1:{server.config.http_port}",
               TRITON_GRPC=server.config.grpc_url, TRIMODAL_URL=server.config.grpc_url)  # fmt: skip
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block.body], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{output[-3000:]}"
    missing = missing_lines(block.expected, done.stdout)
    assert not missing, f"expected {missing[0]!r} in:\n{done.stdout[-3000:]}"

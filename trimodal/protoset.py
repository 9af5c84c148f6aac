"""Triton's gRPC API as a protobuf descriptor set, for gRPC clients that are not Python.

The ``tritonclient`` wheel carries Triton's ``grpc_service.proto`` and ``model_config.proto`` compiled into
``service_pb2`` / ``model_config_pb2``, not as ``.proto`` files. Their descriptors, written as a
``FileDescriptorSet`` (``protoc --descriptor_set_out`` format), are what other stacks load instead of
``.proto`` sources: grpcurl's ``-protoset``, Node's ``@grpc/proto-loader``
(``loadFileDescriptorSetFromBuffer``), Go's ``protodesc``. ``clients/node/infer.js`` uses it.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor


def _with_dependencies(root: FileDescriptor) -> list[FileDescriptor]:
    """The file and everything it imports, dependencies first (the order protoc writes them)."""
    ordered: list[FileDescriptor] = []

    def visit(file: FileDescriptor) -> None:
        for dependency in file.dependencies:
            visit(dependency)
        if file.name not in {seen.name for seen in ordered}:
            ordered.append(file)

    visit(root)
    return ordered


def triton_descriptor_set() -> bytes:
    """Serialize Triton's gRPC service (package ``inference``) and its imports as a FileDescriptorSet.

    Returns:
        The serialized ``google.protobuf.FileDescriptorSet``.
    """
    from tritonclient.grpc import service_pb2

    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for file in _with_dependencies(service_pb2.DESCRIPTOR):
        file.CopyToProto(descriptor_set.file.add())
    return descriptor_set.SerializeToString()


def write_descriptor_set(path: Path) -> Path:
    """Write :func:`triton_descriptor_set` to ``path`` (folders created).

    Args:
        path: Output file, conventionally ``*.protoset``.

    Returns:
        The path written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(triton_descriptor_set())
    return path

"""Helpers shared by the unit tests."""

from trimodal.spec import PipelineSpec


def with_changes(spec: PipelineSpec, **changes: object) -> PipelineSpec:
    """A copy of ``spec`` with fields replaced, nested keys joined by ``__`` (``engines__workspace_mib=1``)."""
    data = spec.model_dump()
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return type(spec).model_validate(data)

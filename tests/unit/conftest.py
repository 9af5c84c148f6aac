"""Shared fixtures of the unit tests."""

import pytest

from trimodal.spec import PipelineSpec, load_spec


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec()

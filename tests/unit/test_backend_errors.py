"""A bad or unlucky request fails alone: every other request of the dynamic batch is answered.

``triton_python_backend_utils`` exists only inside Triton's stub; :class:`StubUtils` stands in for the four names
:class:`trimodal.runtime.backends.base.BatchedModel` uses (the same calls the real module offers). The real
server's answers to bad input are tested in ``tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest

from trimodal.errors import PreprocessError
from trimodal.runtime.backends.base import BatchedModel


@dataclass
class _Tensor:
    name: str
    array: np.ndarray

    def as_numpy(self) -> np.ndarray:
        return self.array


@dataclass
class _Request:
    inputs: dict[str, np.ndarray]


@dataclass
class _Error:
    message: str
    code: str | None = None


@dataclass
class _Response:
    output_tensors: list[_Tensor] = field(default_factory=list)
    error: _Error | None = None


class _ErrorCodes:
    INVALID_ARG = "INVALID_ARG"
    INTERNAL = "INTERNAL"

    def __new__(cls, message: str, code: str | None = None) -> _Error:  # TritonError(message, code)
        return _Error(message, code)


@pytest.fixture
def stub_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.get_input_tensor_by_name = lambda request, name: _Tensor(name, request.inputs[name])
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = _ErrorCodes
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


class _Doubler(BatchedModel):
    """X -> Y = 2X; a value of -1 is bad input, -2 runs out of memory, -3 hits a defect."""

    input_names = ("X",)
    output_names = ("Y",)

    def __init__(self, concatenate: bool) -> None:
        self.concatenate = concatenate
        self.model_name = "doubler"
        self.output_dtypes = {"Y": np.float32}
        self.compute_calls = 0

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.compute_calls += 1
        x = inputs["X"]
        if (x == -1).any():
            raise PreprocessError("X[0]: -1 is not allowed (expected a value >= 0)")
        if (x == -2).any():
            raise MemoryError("Unable to allocate 7.69 PiB")
        if (x == -3).any():
            raise KeyError("a defect")
        return {"Y": 2 * x}


def _request(value: float) -> _Request:
    return _Request({"X": np.array([[value]], dtype=np.float32)})


@pytest.mark.parametrize("concatenate", [False, True])
def test_each_failure_is_its_requests_own_and_the_others_are_answered(stub_utils, concatenate: bool) -> None:
    model = _Doubler(concatenate)
    responses = model.execute([_request(1.0), _request(-1), _request(2.0), _request(-2), _request(-3), _request(3.0)])
    assert len(responses) == 6
    for position, value in ((0, 1.0), (2, 2.0), (5, 3.0)):
        assert responses[position].error is None
        ((tensor,),) = [responses[position].output_tensors]
        assert tensor.name == "Y" and tensor.array.tolist() == [[2 * value]]
    bad, memory, defect = responses[1].error, responses[3].error, responses[4].error
    assert (bad.code, bad.message) == ("INVALID_ARG", "X[0]: -1 is not allowed (expected a value >= 0)")
    assert memory.code == "INVALID_ARG" and memory.message.startswith("doubler: the request's inputs need more memory")
    assert defect.code == "INTERNAL" and defect.message == "doubler: KeyError: 'a defect'"
    # the merged batch failed once, then each of its 6 requests ran alone
    assert model.compute_calls == (1 + 6 if concatenate else 6)


def test_a_merged_batch_that_succeeds_runs_once(stub_utils) -> None:
    model = _Doubler(concatenate=True)
    responses = model.execute([_request(1.0), _request(4.0)])
    assert model.compute_calls == 1
    assert [r.output_tensors[0].array.tolist() for r in responses] == [[[2.0]], [[8.0]]]

import random

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from trimodal import contract
from trimodal.client import RetryPolicy, Sample, TrimodalClient, build_inputs
from trimodal.errors import ClientError
from trimodal.triton.server import free_port


def test_inputs_are_one_bytes_element_per_sample_and_empty_means_absent() -> None:
    inputs = build_inputs([Sample(image=b"png", text="sieben"), Sample(audio=b"wav")], grpcclient)
    assert [t.name() for t in inputs] == [contract.IMAGE, contract.TEXT, contract.AUDIO]
    assert all(t.shape() == [2, 1] and t.datatype() == "BYTES" for t in inputs)


def test_no_samples_is_a_clear_error() -> None:
    with pytest.raises(ClientError, match="no samples"):
        build_inputs([], grpcclient)


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(attempts=5, initial_backoff_s=0.1, max_backoff_s=0.5, jitter=0.5)
    rng = random.Random(0)
    samples = np.array([[policy.backoff(n, rng) for n in range(1, 6)] for _ in range(200)])
    bases = np.array([0.1, 0.2, 0.4, 0.5, 0.5])
    assert (samples >= bases * 0.5 - 1e-9).all() and (samples <= bases * 1.5 + 1e-9).all()
    assert samples.std(axis=0).min() > 0  # jittered


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"jitter": 1.5}])
def test_invalid_policy(kwargs) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


def test_unavailable_is_retried_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="trimodal.client")
    policy = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    client = TrimodalClient(f"127.0.0.1:{free_port()}", timeout_s=2, retry=policy)  # nothing listens there
    with client, pytest.raises(ClientError) as info:
        client.classify(Sample(text="seven"))
    assert info.value.status == "UNAVAILABLE"
    assert sum("retrying" in record.message for record in caplog.records) == 2


def test_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        TrimodalClient("127.0.0.1:1", timeout_s=0)

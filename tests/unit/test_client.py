import random

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import deserialize_bytes_tensor

from trimodal import contract
from trimodal.client import RetryPolicy, Sample, TrimodalClient, build_inputs, build_outputs, parse_result
from trimodal.errors import ClientError
from trimodal.triton.server import free_port


def test_inputs_are_one_bytes_element_per_sample_and_empty_means_absent() -> None:
    inputs = build_inputs([Sample(image=b"png", text="sieben"), Sample(audio=b"wav")], grpcclient)
    assert [t.name() for t in inputs] == [contract.IMAGE, contract.TEXT, contract.AUDIO]
    assert all(t.shape() == [2, 1] and t.datatype() == "BYTES" for t in inputs)
    # what goes on the wire, decoded as Triton decodes a BYTES tensor: in sample order, b"" where absent
    contents = [deserialize_bytes_tensor(t._get_content()).tolist() for t in inputs]
    assert contents == [[b"png", b""], [b"sieben", b""], [b"", b"wav"]]


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


class _Result:
    """What tritonclient's InferResult offers the parser: ``as_numpy(name)`` (None for an output not answered)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)


def _answer() -> dict[str, np.ndarray]:
    probs = np.array([[0.1, 0.7, 0.2], [0.05, 0.05, 0.9]], np.float32)
    heads = np.full((2, 3, 3), np.nan, np.float32)
    heads[0, 0] = [0.02, 0.96, 0.02]  # image says one
    heads[0, 2] = [0.03, 0.03, 0.94]  # audio says two
    heads[1, 1] = [0.1, 0.1, 0.8]  # text only
    return {
        contract.PROBABILITIES: probs,
        contract.LABEL: np.array([[b"0.7:1:one"], [b"0.9:2:two"]], dtype=object),
        contract.MODALITY_PROBABILITIES: heads,
        contract.MODALITY_LABELS: np.array([[b"one", b"", b"two"], [b"", b"two", b""]], dtype=object),
        contract.AGREEMENT: np.array([[False], [True]]),
        contract.CONFLICT_SCORE: np.array([[0.94], [0.0]], np.float32),
        contract.CONFLICT: np.array([[True], [False]]),
    }


def test_result_carries_what_each_present_modality_says() -> None:
    first, second = parse_result(_Result(_answer()))
    assert (first.label, first.index) == ("one", 1) and first.probability == pytest.approx(0.7)
    assert list(first.modalities) == ["image", "audio"]  # text was absent (NaN row): left out, not guessed
    assert (first.modalities["audio"].label, first.modalities["audio"].index) == ("two", 2)
    assert first.modalities["image"].probability == pytest.approx(0.96)
    assert first.conflict and not first.agreement and first.conflict_score == pytest.approx(0.94)
    assert first.explain() == "image says one (0.96), audio says two (0.94): conflict (score 0.94)"
    assert list(second.modalities) == ["text"] and not second.conflict
    assert second.explain() == "text says two (0.80)"


def test_agreeing_and_unsure_modalities_are_explained() -> None:
    answer = _answer()
    answer[contract.MODALITY_PROBABILITIES][0, 2] = [0.02, 0.9, 0.08]
    answer[contract.MODALITY_LABELS][0, 2] = b"one"
    answer[contract.AGREEMENT][0, 0] = True
    answer[contract.CONFLICT][0, 0] = False
    answer[contract.CONFLICT_SCORE][0, 0] = 0.0
    assert parse_result(_Result(answer))[0].explain() == "image says one (0.96), audio says one (0.90): agree"
    answer[contract.AGREEMENT][0, 0] = False
    answer[contract.CONFLICT_SCORE][0, 0] = 0.3
    assert parse_result(_Result(answer))[0].explain().endswith(": no conflict (score 0.30)")


def test_old_answers_without_the_agreement_outputs_still_parse() -> None:
    answer = {name: value for name, value in _answer().items() if name in (contract.PROBABILITIES, contract.LABEL)}
    result = parse_result(_Result(answer))[0]
    assert result.label == "one" and result.modalities == {} and not result.conflict


def test_requested_outputs_cover_the_ensemble_outputs() -> None:
    from trimodal.spec import load_spec

    names = {output.name() for output in build_outputs(grpcclient, 3)}
    assert names == {t.name for t in contract.model_io(load_spec())[contract.ENSEMBLE].outputs}

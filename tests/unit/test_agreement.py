"""The postprocess step (runtime/agreement.py) and its Triton model code, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from trimodal import contract
from trimodal.errors import PreprocessError
from trimodal.runtime.agreement import agreement, conflict_scores, postprocess
from trimodal.runtime.backends.postprocess import Postprocess

CLASSES = ["zero", "one", "two", "three"]


def _onehot(index: int, confidence: float) -> np.ndarray:
    row = np.full(len(CLASSES), (1.0 - confidence) / (len(CLASSES) - 1), dtype=np.float32)
    row[index] = confidence
    return row


def _batch(rows: list[tuple[list[tuple[int, float] | None], int]]) -> dict[str, np.ndarray]:
    """One sample per row: per modality (class, confidence) or None (absent), and the fused top class."""
    heads = np.zeros((len(rows), 3, len(CLASSES)), dtype=np.float32)
    masks = np.zeros((len(rows), 3), dtype=np.float32)
    fused = np.zeros((len(rows), len(CLASSES)), dtype=np.float32)
    for i, (votes, top) in enumerate(rows):
        fused[i] = _onehot(top, 0.9)
        for m, vote in enumerate(votes):
            heads[i, m] = _onehot(*vote) if vote else _onehot(0, 0.99)  # absent rows hold junk
            masks[i, m] = 1.0 if vote else 0.0
    tensors = {name: masks[:, m : m + 1] for m, name in enumerate(contract.MASKS)}
    return {**tensors, contract.FUSED_PROBABILITIES: fused, contract.HEAD_PROBABILITIES: heads}


ROWS = [
    ([(3, 0.95), None, (3, 0.9)], 3),  # image and audio agree on "three"
    ([(3, 0.95), None, (1, 0.9)], 1),  # confident disagreement: conflict 0.9
    ([(3, 0.95), (2, 0.3), None], 3),  # disagreement, but the text head shrugs: no conflict
    ([None, (1, 0.8), None], 1),  # one modality: agreement trivially, no conflict
    ([(0, 0.6), (1, 0.7), (2, 0.99)], 2),  # three-way: the largest pair minimum is 0.7
]


def test_answer_marks_absent_modalities_and_keeps_the_fused_probabilities() -> None:
    batch = _batch(ROWS)
    out = postprocess(batch, CLASSES, threshold=0.5)
    assert set(out) == {t.name for t in contract.model_io(_spec())[contract.POSTPROCESS].outputs}
    np.testing.assert_array_equal(out[contract.PROBABILITIES], batch[contract.FUSED_PROBABILITIES])
    np.testing.assert_array_equal(out[contract.LABEL], out[contract.PROBABILITIES])
    present = np.concatenate([batch[name] for name in contract.MASKS], axis=1) > 0.5
    modality = out[contract.MODALITY_PROBABILITIES]
    assert modality.shape == (5, 3, len(CLASSES))
    assert np.isnan(modality[~present]).all()
    np.testing.assert_array_equal(modality[present], batch[contract.HEAD_PROBABILITIES][present])
    assert out[contract.MODALITY_LABELS].tolist() == [
        [b"three", b"", b"three"], [b"three", b"", b"one"], [b"three", b"two", b""], [b"", b"one", b""],
        [b"zero", b"one", b"two"],
    ]  # fmt: skip


def test_agreement_conflict_score_and_flag() -> None:
    out = postprocess(_batch(ROWS), CLASSES, threshold=0.5)
    assert out[contract.AGREEMENT][:, 0].tolist() == [True, False, False, True, False]
    np.testing.assert_allclose(out[contract.CONFLICT_SCORE][:, 0], [0.0, 0.9, 0.3, 0.0, 0.7], atol=1e-6)
    assert out[contract.CONFLICT][:, 0].tolist() == [False, True, False, False, True]
    strict = postprocess(_batch(ROWS), CLASSES, threshold=0.8)
    assert strict[contract.CONFLICT][:, 0].tolist() == [False, True, False, False, False]
    assert out[contract.AGREEMENT].dtype == bool and out[contract.CONFLICT_SCORE].dtype == np.float32


def test_absent_modalities_never_count_however_confident_their_junk_row() -> None:
    heads = np.stack([np.stack([_onehot(1, 0.99), _onehot(2, 0.99), _onehot(3, 0.99)])])
    present = np.array([[True, False, False]])
    assert conflict_scores(heads, present).tolist() == [0.0]
    assert agreement(heads, present).tolist() == [True]


def test_rows_are_independent_of_the_rest_of_the_batch() -> None:
    whole = postprocess(_batch(ROWS), CLASSES, threshold=0.5)
    for i, row in enumerate(ROWS):
        single = postprocess(_batch([row]), CLASSES, threshold=0.5)
        for name, value in single.items():
            np.testing.assert_array_equal(value[0], whole[name][i], err_msg=name)


def test_all_empty_sample_is_refused_with_its_index() -> None:
    batch = _batch([ROWS[0], ([None, None, None], 0), ROWS[1]])
    with pytest.raises(PreprocessError, match=r"sample\(s\) \[1\] have every modality empty"):
        postprocess(batch, CLASSES, threshold=0.5)


def _model() -> Postprocess:
    model = Postprocess()
    model.model_name = contract.POSTPROCESS
    model.parameters = {"classes": '["zero", "one", "two", "three"]', "conflict_threshold": "0.5"}
    model.input_names = tuple(t.name for t in contract.model_io(_spec())[contract.POSTPROCESS].inputs)
    model.setup()
    return model


def test_backend_refuses_only_the_request_with_an_all_empty_sample() -> None:
    requests = [_batch(ROWS[:2]), _batch([([None, None, None], 0)]), _batch(ROWS[2:])]
    results = _model()._compute_concatenated(requests)
    assert isinstance(results[1], PreprocessError) and "every modality empty" in str(results[1])
    for request, result in ((requests[0], results[0]), (requests[2], results[2])):
        expected = postprocess(request, CLASSES, threshold=0.5)
        assert not isinstance(result, Exception)
        for name, value in expected.items():
            np.testing.assert_array_equal(result[name], value, err_msg=name)


def _spec():
    from trimodal.spec import load_spec

    return load_spec()

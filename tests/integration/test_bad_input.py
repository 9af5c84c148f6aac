"""The bad-input matrix: the ensemble and every model called directly.

Each bad request must get INVALID_ARGUMENT quickly with a message naming the input; no stub may crash; the
next valid request must succeed. Conversions with a documented rule (other sample rates are resampled,
stereo is downmixed) must succeed instead.
"""

import asyncio
import io
import struct
import time
import zlib

import numpy as np
import pytest
import soundfile
from PIL import Image
from raw_grpc import bytes_tensor, infer_raw
from tritonclient.utils import InferenceServerException

from trimodal import contract
from trimodal.client import Sample, TrimodalClient
from trimodal.errors import ClientError

pytestmark = pytest.mark.integration
QUICK_S = 5.0  # "quickly": well under any client deadline


def _expect_invalid(url: str, model: str, tensors: dict, named: str) -> str:
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as info:
        infer_raw(url, model, tensors)
    assert time.monotonic() - started < QUICK_S
    assert str(info.value.status()).endswith("INVALID_ARGUMENT"), info.value
    assert named in info.value.message(), info.value.message()
    return info.value.message()


def _numpy_dtype(dtype: str):
    return {"FP32": np.float32, "INT64": np.int64}[dtype]


def _valid_inputs(spec, model: str, batch: int = 1) -> dict[str, tuple[np.ndarray, str]]:
    """A well-formed request for ``model`` (zeros / an absent element)."""
    tensors = {}
    for tensor in contract.model_io(spec)[model].inputs:
        if tensor.dtype == "BYTES":
            tensors[tensor.name] = bytes_tensor(*([b""] * batch))
            continue
        dims = [spec.modalities.text.max_tokens if d == -1 else d for d in tensor.dims]
        value = np.ones((batch, *dims), dtype=_numpy_dtype(tensor.dtype))
        tensors[tensor.name] = (value, tensor.dtype)
    return tensors


MODELS = [*contract.MODEL_NAMES, contract.ENSEMBLE]


@pytest.fixture(scope="module")
def stubs_before(server):
    return server.stub_instances()


@pytest.mark.parametrize("model", MODELS)
def test_structural_errors_for_every_model(server, spec, stubs_before, model: str) -> None:
    url = server.config.grpc_url
    good = _valid_inputs(spec, model)
    first, (array, dtype) = next(iter(good.items()))
    wrong_dtype = (np.zeros(array.shape, dtype=np.int32), "INT32")
    _expect_invalid(url, model, {**good, first: wrong_dtype}, first)
    wrong_rank = (array.reshape(*array.shape, 1), dtype) if dtype != "BYTES" else (array.reshape(1, 1, 1), dtype)
    _expect_invalid(url, model, {**good, first: wrong_rank}, first)
    missing = {k: v for k, v in good.items() if k != first}
    if missing:
        _expect_invalid(url, model, missing, first)
    _expect_invalid(url, model, {**good, "NOT_AN_INPUT": bytes_tensor(b"x")}, "NOT_AN_INPUT")
    too_big = _valid_inputs(spec, model, batch=spec.serving.ensemble_max_batch_size + 1)
    if model != contract.ENSEMBLE:
        too_big = _valid_inputs(spec, model, batch=spec.serving.resolved(model).max_batch_size + 1)
    _expect_invalid(url, model, too_big, "batch")
    empty_batch = {name: (value[:0], kind) for name, (value, kind) in good.items()}
    with pytest.raises(InferenceServerException) as info:
        infer_raw(url, model, empty_batch)
    assert str(info.value.status()).endswith("INVALID_ARGUMENT"), info.value
    if model != contract.ENSEMBLE:  # the valid request still works (the ensemble's needs real content)
        infer_raw(url, model, good)
    assert server.stub_instances() == stubs_before, "a stub crashed"


def _png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _content_cases(test_split) -> dict[str, tuple[dict[str, bytes], str]]:
    image, audio = test_split.images[0], test_split.audio[0]
    jpeg = _jpeg()
    tone = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * 0.1
    nan_audio = tone.copy()
    nan_audio[100] = np.nan
    inf_audio = tone.copy()
    inf_audio[5] = np.inf
    return {
        "corrupt png": ({"IMAGE": image[:16] + b"\x00" * 64 + image[80:]}, "IMAGE"),
        "truncated png": ({"IMAGE": image[: len(image) // 2]}, "IMAGE"),
        "corrupt jpeg": ({"IMAGE": jpeg[:20] + b"\xff" * 200 + jpeg[220:]}, "IMAGE"),
        "truncated jpeg": ({"IMAGE": jpeg[: len(jpeg) // 3]}, "IMAGE"),
        "non-image bytes": ({"IMAGE": b"GIF89a not what we accept"}, "IMAGE"),
        "decompression bomb": ({"IMAGE": _png(100_000, 100_000)}, "IMAGE"),
        "oversized image file": ({"IMAGE": b"\x89PNG" + b"\x00" * (9 * 1024 * 1024)}, "IMAGE"),
        "non-utf8 text": ({"TEXT": b"\xc3\x28 seven"}, "TEXT"),
        "oversized text": ({"TEXT": b"seven " * 1000}, "TEXT"),
        "truncated wav": ({"AUDIO": audio[: len(audio) // 3]}, "AUDIO"),
        "not a wav": ({"AUDIO": b"ID3\x03" + b"\x00" * 512}, "AUDIO"),
        "nan audio": ({"AUDIO": _wav(nan_audio, 16000)}, "AUDIO"),
        "inf audio": ({"AUDIO": _wav(inf_audio, 16000)}, "AUDIO"),
    }


CONTENT = ["corrupt png", "truncated png", "corrupt jpeg", "truncated jpeg", "non-image bytes", "decompression bomb",
           "oversized image file", "non-utf8 text", "oversized text", "truncated wav", "not a wav", "nan audio",
           "inf audio"]  # fmt: skip


@pytest.mark.parametrize("case", CONTENT)
def test_content_errors_through_the_ensemble(server, test_split, stubs_before, case: str) -> None:
    cases = _content_cases(test_split)
    payload, named = cases[case]
    good = {"IMAGE": test_split.images[0], "TEXT": test_split.texts[0].encode(), "AUDIO": test_split.audio[0]}
    tensors = {name: bytes_tensor(value) for name, value in {**good, **payload}.items()}
    _expect_invalid(server.config.grpc_url, contract.ENSEMBLE, tensors, f"{named}[0]")
    preprocessor = f"preprocess_{named.lower()}"
    direct = {named: bytes_tensor(payload[named])}
    _expect_invalid(server.config.grpc_url, preprocessor, direct, f"{named}[0]")
    with TrimodalClient(server.config.grpc_url, timeout_s=30) as client:
        assert client.classify(Sample(**{k.lower(): v for k, v in good.items()})).probabilities.shape == (10,)
    assert server.stub_instances() == stubs_before, "a stub crashed"


def test_other_sample_rates_and_stereo_are_converted(server, test_split) -> None:
    """Documented rule: any sample rate is resampled to 16 kHz, any channel count is averaged to mono."""
    clip, _ = soundfile.read(io.BytesIO(test_split.audio[0]), dtype="float32")
    stereo_44k = np.stack([np.interp(np.linspace(0, len(clip) - 1, int(len(clip) * 44100 / 16000)),
                                     np.arange(len(clip)), clip)] * 2, axis=1).astype(np.float32)  # fmt: skip
    with TrimodalClient(server.config.grpc_url, timeout_s=30) as client:
        reference = client.classify(Sample(audio=test_split.audio[0]))
        converted = client.classify(Sample(audio=_wav(stereo_44k, 44100)))
        narrow = client.classify(Sample(audio=_wav(clip[::2].copy(), 8000)))
    assert converted.label == reference.label
    assert np.abs(converted.probabilities - reference.probabilities).max() < 0.05
    assert narrow.probabilities.shape == (10,)


def test_oversized_message_is_refused_by_the_client(server) -> None:
    client = TrimodalClient(server.config.grpc_url, timeout_s=30, max_request_bytes=1024 * 1024)
    with client, pytest.raises(ClientError) as info:
        client.classify(Sample(image=b"\x89PNG" + b"\x00" * (2 * 1024 * 1024)))
    assert info.value.status == "INVALID_ARGUMENT" and "max_request_bytes" in str(info.value)


# --- samples with every modality empty: refused by the postprocess step, whatever runs the fusion head --------


def test_an_all_empty_sample_in_a_batch_is_named(server, test_split) -> None:
    image, text = test_split.images[0], test_split.texts[0].encode()
    tensors = {"IMAGE": bytes_tensor(image, b"", b""), "TEXT": bytes_tensor(b"", b"", text),
               "AUDIO": bytes_tensor(b"", b"", b"")}  # fmt: skip
    message = _expect_invalid(server.config.grpc_url, contract.ENSEMBLE, tensors, "every modality empty")
    assert "sample(s) [1]" in message


def _postprocess_inputs(spec, masks: list[float]) -> dict[str, tuple[np.ndarray, str]]:
    tensors = _valid_inputs(spec, contract.POSTPROCESS, batch=len(masks))
    for name in contract.MASKS:
        tensors[name] = (np.array(masks, dtype=np.float32).reshape(-1, 1), "FP32")
    return tensors


def test_postprocess_refuses_all_empty_samples_and_the_fusion_head_does_not(server, spec) -> None:
    """The refusal lives in the postprocess model, so it holds on GPUs too, where the fusion head is an engine."""
    url = server.config.grpc_url
    _expect_invalid(url, contract.POSTPROCESS, _postprocess_inputs(spec, [1.0, 0.0]), "every modality empty")
    answer = infer_raw(url, contract.POSTPROCESS, _postprocess_inputs(spec, [1.0, 1.0]))
    assert answer.as_numpy(contract.PROBABILITIES).shape == (2, spec.num_classes)
    fusion = _valid_inputs(spec, contract.FUSION)
    for name in contract.MASKS:
        fusion[name] = (np.zeros((1, 1), np.float32), "FP32")
    assert infer_raw(url, contract.FUSION, fusion).as_numpy(contract.FUSED_PROBABILITIES).shape == (1, 10)


def test_an_all_empty_request_does_not_fail_the_requests_batched_with_it(server, test_split) -> None:
    """Concurrent requests share a postprocess execution; only the all-empty one is refused."""
    import tritonclient.grpc.aio as aioclient

    from trimodal.client import build_inputs, build_outputs

    samples = [Sample(image=test_split.images[i], text=test_split.texts[i]) for i in range(15)]
    samples.insert(7, Sample())

    async def burst() -> list:
        client = aioclient.InferenceServerClient(server.config.grpc_url)
        try:
            calls = [client.infer(contract.ENSEMBLE, build_inputs([s], aioclient), outputs=build_outputs(aioclient, 1),
                                  client_timeout=30) for s in samples]  # fmt: skip
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(burst())
    failed = [i for i, result in enumerate(results) if isinstance(result, Exception)]
    assert failed == [7], results
    assert "INVALID_ARGUMENT" in str(results[7].status()) and "every modality empty" in results[7].message()
    assert all(r.as_numpy(contract.PROBABILITIES).shape == (1, 10) for i, r in enumerate(results) if i != 7)

"""Unit tests of trimodal.runtime.preprocess (no server, no torch needed except the optional HF parity test)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from trimodal.errors import PreprocessError
from trimodal.layout import tokenizer_source
from trimodal.runtime import preprocess as pre
from trimodal.spec import load_spec
from trimodal.training.data.speech import encode_wav

SPEC = load_spec()
IMAGE = SPEC.modalities.image
TEXT = SPEC.modalities.text
AUDIO = SPEC.modalities.audio


def _image_bytes(fmt: str, size: int = 40, mode: str = "L") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="L")
    if mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming width x height, with a tiny IDAT (never a full image)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def _tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)).astype(np.float32)


def _float_wav(samples: np.ndarray, rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


# --- image -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "L"), ("JPEG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB")])
def test_decode_image_shape_and_range(fmt: str, mode: str) -> None:
    out = pre.decode_image(_image_bytes(fmt, mode=mode), IMAGE)
    assert out.shape == (1, IMAGE.size, IMAGE.size)
    assert out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_decode_image_normalisation_white_is_one() -> None:
    buffer = io.BytesIO()
    Image.new("L", (IMAGE.size, IMAGE.size), 255).save(buffer, format="PNG")
    np.testing.assert_allclose(pre.decode_image(buffer.getvalue(), IMAGE), 1.0)


def test_preprocess_images_absent_and_batch_equals_items() -> None:
    items = [_image_bytes("PNG"), b"", _image_bytes("JPEG", size=64)]
    tensor, mask = pre.preprocess_images(items, IMAGE)
    assert tensor.shape == (3, 1, IMAGE.size, IMAGE.size) and tensor.dtype == np.float32
    np.testing.assert_array_equal(mask, [[1.0], [0.0], [1.0]])
    assert not tensor[1].any()
    np.testing.assert_array_equal(tensor[0], pre.decode_image(items[0], IMAGE))
    np.testing.assert_array_equal(tensor[2], pre.decode_image(items[2], IMAGE))


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"this is not an image at all", "cannot decode"),
        (_image_bytes("PNG")[:60], "IMAGE[1]"),
        (_image_bytes("GIF"), "PNG or JPEG"),
        (_png_header_only(100_000, 100_000), "too large"),
    ],
    ids=["garbage", "truncated-png", "gif", "huge-dimensions"],
)
def test_image_errors_name_the_input(payload: bytes, needle: str) -> None:
    with pytest.raises(PreprocessError) as info:
        pre.preprocess_images([_image_bytes("PNG"), payload], IMAGE)
    assert str(info.value).startswith("IMAGE[1]: ")
    assert needle in str(info.value)


def test_huge_png_just_above_cap_is_refused_before_decoding() -> None:
    with pytest.raises(PreprocessError, match=r"^IMAGE\[0\]: image too large"):
        pre.decode_image(_png_header_only(4097, 4096), IMAGE, index=0)


# --- text ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_pre() -> pre.TextPreprocessor:
    return pre.TextPreprocessor(TEXT, tokenizer_source())


def test_tokenizer_path_explicit_folder(tmp_path) -> None:
    found = tokenizer_source()
    assert found.name == "tokenizer.json" and found.is_file()
    (tmp_path / "tokenizer.json").write_bytes(found.read_bytes())
    assert tokenizer_source(tmp_path) == tmp_path / "tokenizer.json"
    with pytest.raises(PreprocessError, match="TEXT"):
        tokenizer_source(tmp_path / "missing.json")


def test_text_shapes_absent_and_padding(text_pre: pre.TextPreprocessor) -> None:
    ids, attention, mask = text_pre([b"the answer is seven", b"", "number 3"])
    assert ids.shape == attention.shape == (3, TEXT.max_tokens)
    assert ids.dtype == attention.dtype == np.int64
    np.testing.assert_array_equal(mask, [[1.0], [0.0], [1.0]])
    assert attention[1].sum() == 2  # [CLS] [SEP]
    assert (ids[:, 0] == 101).all()


def test_text_truncates_long_input(text_pre: pre.TextPreprocessor) -> None:
    ids, attention, _ = text_pre(["seven " * 100])
    assert ids.shape == (1, TEXT.max_tokens) and attention.all()
    assert ids[0, -1] == 102  # [SEP]


def test_text_matches_hf_autotokenizer(text_pre: pre.TextPreprocessor) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tokenizer_source().parent))
    sentences = ["the answer is seven", "c'est huit, bitte fünf", "#7 apples please!", "", "nine " * 50]
    ref = hf(sentences, padding="max_length", truncation=True, max_length=TEXT.max_tokens, return_tensors="np")
    ids, attention, _ = text_pre(sentences)
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(attention, ref["attention_mask"])


def test_text_batch_equals_items(text_pre: pre.TextPreprocessor) -> None:
    items = [b"hello there", "zwei", b"label: 9"]
    ids, attention, mask = text_pre(items)
    for i, item in enumerate(items):
        one = text_pre([item])
        np.testing.assert_array_equal(ids[i], one[0][0])
        np.testing.assert_array_equal(attention[i], one[1][0])
        np.testing.assert_array_equal(mask[i], one[2][0])


def test_text_errors_name_the_input(text_pre: pre.TextPreprocessor) -> None:
    with pytest.raises(PreprocessError, match=r"^TEXT\[1\]: not valid UTF-8"):
        text_pre([b"ok", b"\xff\xfe bad"])
    with pytest.raises(PreprocessError, match=rf"^TEXT\[0\]: .*{TEXT.max_bytes}"):
        text_pre([b"a" * (TEXT.max_bytes + 1)])


# --- audio -----------------------------------------------------------------------------------------------


def test_decode_audio_shape_and_pad() -> None:
    wave = pre.decode_audio(encode_wav(_tone(AUDIO.sample_rate, 0.5), AUDIO.sample_rate), AUDIO)
    assert wave.shape == (AUDIO.clip_samples,) and wave.dtype == np.float32
    quarter = AUDIO.clip_samples // 4
    assert not wave[: quarter - 1].any() and not wave[-quarter + 1 :].any()  # centre zero-padded


def test_stereo_44k_equals_mono_16k() -> None:
    mono = pre.decode_audio(_float_wav(_tone(AUDIO.sample_rate), AUDIO.sample_rate), AUDIO)
    tone = _tone(44100)
    stereo = pre.decode_audio(_float_wav(np.stack([tone * 1.2, tone * 0.8], axis=1), 44100), AUDIO)
    inner = slice(200, -200)  # resampling edge effects
    np.testing.assert_allclose(stereo[inner], mono[inner], atol=2e-3)
    np.testing.assert_allclose(pre.log_mel(stereo, AUDIO)[..., 3:-3], pre.log_mel(mono, AUDIO)[..., 3:-3], atol=0.05)


def test_log_mel_shape_and_batch_equals_items() -> None:
    rng = np.random.default_rng(0)
    waves = rng.standard_normal((4, AUDIO.clip_samples)).astype(np.float32) * 0.1
    batch = pre.log_mel(waves, AUDIO)
    assert batch.shape == (4, 1, AUDIO.n_mels, AUDIO.n_frames) and batch.dtype == np.float32
    for i in range(4):
        np.testing.assert_allclose(batch[i], pre.log_mel(waves[i], AUDIO), rtol=1e-6, atol=1e-6)


def test_preprocess_audio_absent_and_batch_equals_items() -> None:
    items = [encode_wav(_tone(AUDIO.sample_rate), AUDIO.sample_rate), b"", encode_wav(_tone(8000, 0.7), 8000)]
    tensor, mask = pre.preprocess_audio(items, AUDIO)
    assert tensor.shape == (3, 1, AUDIO.n_mels, AUDIO.n_frames)
    np.testing.assert_array_equal(mask, [[1.0], [0.0], [1.0]])
    assert not tensor[1].any()
    for i in (0, 2):
        single = pre.log_mel(pre.decode_audio(items[i], AUDIO), AUDIO)
        np.testing.assert_allclose(tensor[i], single, rtol=1e-6, atol=1e-6)


def _nan_wav() -> bytes:
    samples = _tone(AUDIO.sample_rate)
    samples[100] = np.nan
    return _float_wav(samples, AUDIO.sample_rate)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"definitely not a wav file", "not a WAV"),
        (_image_bytes("PNG"), "not a WAV"),
        (encode_wav(_tone(16000), 16000)[:5000], "truncated"),
        (_nan_wav(), "NaN"),
        (encode_wav(np.zeros(0, dtype=np.float32), 16000), "empty"),
        (encode_wav(np.zeros(8000 * 31, dtype=np.float32), 8000), "exceeds"),
    ],
    ids=["garbage", "png", "truncated", "nan", "empty", "too-long"],
)
def test_audio_errors_name_the_input(payload: bytes, needle: str) -> None:
    good = encode_wav(_tone(AUDIO.sample_rate), AUDIO.sample_rate)
    with pytest.raises(PreprocessError) as info:
        pre.preprocess_audio([good, payload], AUDIO)
    assert str(info.value).startswith("AUDIO[1]: ")
    assert needle in str(info.value)


def _encoded(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _false_block_align(samples: np.ndarray, rate: int) -> bytes:
    """PCM whose fmt chunk claims 65535-byte frames: the data chunk seems to hold a few (libsndfile ignores it)."""
    data = bytearray(encode_wav(samples, rate))
    fmt = data.find(b"fmt ")
    struct.pack_into("<H", data, fmt + 8 + 12, 65535)
    return bytes(data)


@pytest.mark.parametrize(
    "payload",
    [
        _encoded(_tone(8000, 300.0), 8000, "IMA_ADPCM"),
        _encoded(_tone(8000, 300.0), 8000, "GSM610"),
        _encoded(_tone(8000, 120.0), 8000, "G721_32"),
        _false_block_align(np.zeros(1000 * 1000, dtype=np.float32), 1000),
    ],
    ids=["ima-adpcm-300s", "gsm-300s", "g721-120s", "pcm-1000s-false-block-align"],
)
def test_long_clips_are_refused_whatever_their_header_says(payload: bytes) -> None:
    """The data chunk's size / block_align undercounts compressed WAVs (and a false header), so 30 s was a check
    that a 0.5 MB GSM file of 40 minutes passed; libsndfile's own frame count is checked too."""
    assert len(payload) <= AUDIO.max_bytes
    with pytest.raises(PreprocessError, match=r"^AUDIO\[0\]: audio clip of \d+\.\d s exceeds the limit of 30 s$"):
        pre.decode_audio(payload, AUDIO, index=0)


def test_short_compressed_clips_still_decode() -> None:
    wave = pre.decode_audio(_encoded(_tone(8000, 1.0), 8000, "IMA_ADPCM"), AUDIO, index=0)
    assert wave.shape == (AUDIO.clip_samples,) and np.abs(wave).max() > 0.1


@pytest.mark.parametrize("peak", [1e10, 1e20, 3e38])
def test_out_of_range_float_samples_are_refused_not_classified_from_nan(peak: float) -> None:
    payload = _float_wav(np.full(AUDIO.sample_rate, peak, dtype=np.float32), AUDIO.sample_rate)
    with pytest.raises(PreprocessError, match=r"^AUDIO\[0\]: sample values up to .* are out of range"):
        pre.preprocess_audio([payload], AUDIO)
    loud = _float_wav(np.full(AUDIO.sample_rate, 1e3, dtype=np.float32), AUDIO.sample_rate)  # loud, in range
    assert np.isfinite(pre.preprocess_audio([loud], AUDIO)[0]).all()


def test_decoder_messages_carry_no_object_addresses() -> None:
    with pytest.raises(PreprocessError) as image:
        pre.decode_image(b"not an image at all", IMAGE, index=0)
    assert (
        str(image.value)
        == "IMAGE[0]: cannot decode image bytes (expected a PNG or JPEG file): cannot identify image file"
    )
    assert "0x" not in str(image.value)


@pytest.mark.parametrize("blank", [b"   ", b"\t\n", b"\x00\x00"])
def test_text_of_only_whitespace_or_control_characters_is_absent(text_pre: pre.TextPreprocessor, blank: bytes) -> None:
    ids, _, mask = text_pre([b"seven", blank, b""])
    np.testing.assert_array_equal(mask, [[1.0], [0.0], [0.0]])
    np.testing.assert_array_equal(ids[1], ids[2])  # tokenized exactly like an absent text


# --- image normalisation (polarity, alpha, crop and centre) ------------------------------------------------


def _digit_ink(size: int = 64, offset: tuple[int, int] = (0, 0), width: int = 5) -> np.ndarray:
    """Ink map (1 = ink) of a "7"-like stroke drawn at ``size`` px, moved by ``offset``."""
    from PIL import ImageDraw

    image = Image.new("L", (size, size), 0)
    scale = size / 64
    points = [(18, 14), (46, 14), (30, 52)]
    moved = [(x * scale + offset[0], y * scale + offset[1]) for x, y in points]
    ImageDraw.Draw(image).line(moved, fill=255, width=max(1, round(width * scale)))
    return np.asarray(image, dtype=np.float32) / 255.0


def _png(pixels: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _dark_on_light(ink: np.ndarray, paper: float = 0.92, pen: float = 0.1) -> bytes:
    return _png(paper + (pen - paper) * ink, "L")


def _decoded(data: bytes) -> np.ndarray:
    return pre.decode_image(data, IMAGE)[0]


def test_polarity_is_taken_from_the_border() -> None:
    ink = _digit_ink()
    reference = _decoded(_dark_on_light(ink))
    np.testing.assert_allclose(_decoded(_png(0.1 + 0.82 * ink, "L")), reference, atol=1e-5)  # light on dark
    assert reference.max() == pytest.approx(1.0) and reference.min() == pytest.approx(-1.0, abs=0.05)
    assert (reference > 0.9).mean() > 0.6  # white background


@pytest.mark.parametrize("colour", [0.0, 1.0], ids=["black-ink", "white-ink"])
def test_transparent_background_is_flattened_behind_the_ink(colour: float) -> None:
    ink = _digit_ink()
    rgba = np.zeros((*ink.shape, 4), dtype=np.float32)
    rgba[..., :3] = colour
    rgba[..., 3] = ink
    reference = _decoded(_dark_on_light(ink, paper=1.0, pen=0.0))
    assert np.abs(_decoded(_png(rgba, "RGBA")) - reference).max() < 0.05


def test_coloured_ink_on_coloured_paper_matches_gray() -> None:
    ink = _digit_ink()[..., None]
    rgb = np.array([0.95, 0.9, 0.6]) * (1 - ink) + np.array([0.1, 0.1, 0.4]) * ink
    assert np.abs(_decoded(_png(rgb, "RGB")) - _decoded(_dark_on_light(ink[..., 0]))).mean() < 0.03


@pytest.mark.parametrize("offset", [(-14, -8), (15, 10), (12, -9)])
def test_content_is_centred_wherever_it_is_drawn(offset: tuple[int, int]) -> None:
    centred = _decoded(_dark_on_light(_digit_ink()))
    moved = _decoded(_dark_on_light(_digit_ink(offset=offset)))
    assert np.abs(moved - centred).mean() < 0.02


@pytest.mark.parametrize("size", [20, 48, 160])
def test_other_sizes_give_the_same_tensor(size: int) -> None:
    ink = _digit_ink(64)
    reference = _decoded(_dark_on_light(ink))
    resized = np.asarray(Image.fromarray(ink, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    out = _decoded(_dark_on_light(np.clip(resized, 0, 1)))
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.9  # same shape (a thumbnail is blurrier)
    for axis in (0, 1):  # same place: the ink's centre of mass within one pixel
        weights = [(1 - image).sum(axis=axis) for image in (out, reference)]
        centres = [np.average(np.arange(IMAGE.size), weights=w) for w in weights]
        assert abs(centres[0] - centres[1]) < 1.0


def test_aspect_ratio_is_kept_and_content_fills_the_frame() -> None:
    pixels = np.ones((60, 200), dtype=np.float32)
    pixels[10:50, 95:103] = 0.0  # a tall, thin bar in a wide image
    out = _decoded(_png(pixels, "L"))
    rows, cols = np.nonzero(out < 0.0)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert height == pytest.approx(0.8 * IMAGE.size, abs=2)  # the longer side fills 80% of the frame
    assert height / width == pytest.approx(40 / 8, rel=0.35)  # not stretched to a square
    assert abs((rows.min() + rows.max()) / 2 - (IMAGE.size - 1) / 2) <= 1  # centred
    assert abs((cols.min() + cols.max()) / 2 - (IMAGE.size - 1) / 2) <= 1


def test_a_stray_speck_does_not_move_or_shrink_the_digit() -> None:
    ink = _digit_ink()
    reference = _decoded(_dark_on_light(ink))
    ink[1, 1] = 1.0
    assert np.abs(_decoded(_dark_on_light(ink)) - reference).mean() < 0.01


@pytest.mark.parametrize("level", [0, 128, 255])
def test_blank_images_are_all_background(level: int) -> None:
    buffer = io.BytesIO()
    Image.new("L", (40, 30), level).save(buffer, format="PNG")
    np.testing.assert_array_equal(_decoded(buffer.getvalue()), 1.0)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 1)])
def test_tiny_images_decode(shape: tuple[int, int]) -> None:
    pixels = np.zeros(shape, dtype=np.float32)
    pixels.flat[0] = 1.0
    out = _decoded(_png(pixels, "L"))
    assert out.shape == (IMAGE.size, IMAGE.size) and np.isfinite(out).all()


def test_large_images_are_reduced_before_the_analysis_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from trimodal.runtime import normalize

    big = 12 * normalize.ANALYSIS_SIDE_FACTOR * IMAGE.size // 8  # above the reduction threshold
    reference = _decoded(_dark_on_light(_digit_ink(200)))
    reduce_large, sides = normalize.reduce_large, []

    def recording(image, size):
        reduced = reduce_large(image, size)
        sides.append((min(image.size), min(reduced.size)))
        return reduced

    monkeypatch.setattr(normalize, "reduce_large", recording)
    assert np.abs(_decoded(_dark_on_light(_digit_ink(big))) - reference).mean() < 0.05
    ((before, after),) = sides
    assert before > normalize.ANALYSIS_SIDE_FACTOR * IMAGE.size  # the test image is above the threshold ...
    # ... and was reduced, to no less than half the analysis side
    assert normalize.ANALYSIS_SIDE_FACTOR // 2 * IMAGE.size <= after < before


def _strip_png(width: int) -> bytes:
    """A white strip one pixel high with a black pixel every 50: about 100 bytes of PNG for any width."""
    pixels = np.full((1, width), 255, dtype=np.uint8)
    pixels[0, ::50] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _sixteen_bit_png(side: int) -> bytes:
    pixels = np.full((side, side), 65535, dtype=np.uint16)
    pixels[side // 3 : side // 2, side // 3 : side // 2] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "inked"),  # a one-pixel line in a square of its length's side is averaged away at 32 x 32
    [(_strip_png(3000), False), (_strip_png(4096 * 4096), False), (_sixteen_bit_png(2048), True)],
    ids=["3000x1", "16777216x1", "2048x2048-16bit"],
)
def test_small_files_of_large_images_decode_in_bounded_memory(data: bytes, inked: bool) -> None:
    """A ~100-byte PNG of a 16-million-pixel strip once asked numpy for 7.69 PiB (MemoryError) and a 3000-pixel one
    for 315 MB: the crop was padded by its own side over the whole image, and only the shorter side was reduced."""
    import tracemalloc

    tracemalloc.start()  # numpy's buffers are traced (Pillow's own are not: they are bounded by the pixel limit)
    try:
        out = pre.decode_image(data, IMAGE, index=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (1, IMAGE.size, IMAGE.size) and np.isfinite(out).all()
    assert (out.min() < 0.0) == inked
    assert peak < 32 * 2**20, f"numpy peak {peak / 2**20:.0f} MiB"


def test_normalisation_is_deterministic_and_batch_equals_items() -> None:
    items = [_dark_on_light(_digit_ink()), _png(0.1 + 0.8 * _digit_ink(40, (5, 3)), "L")]
    tensor, _ = pre.preprocess_images(items, IMAGE)
    again, _ = pre.preprocess_images(items[::-1], IMAGE)
    np.testing.assert_array_equal(tensor, again[::-1])

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.errors import RepositoryError
from trimodal.layout import Layout
from trimodal.spec import load_spec
from trimodal.triton.config import cpu_config, ensemble_config, gpu_config, postprocess_config, preprocess_config
from trimodal.triton.repository import render, render_files, stale_files
from trimodal.triton.validate import check_ensemble, load_config

REPOSITORY = Layout.default().repository.root


@pytest.fixture(scope="module")
def spec():
    return load_spec()


def _models(spec, target: str) -> dict[str, mc.ModelConfig]:
    ios = contract.model_io(spec)
    make = gpu_config if target == "gpu" else cpu_config
    models = {m: preprocess_config(spec, m, ios[m]) for m in contract.PREPROCESSORS}
    models.update({m: make(spec, m, ios[m]) for m in contract.ENCODERS})
    models[contract.POSTPROCESS] = postprocess_config(spec, ios[contract.POSTPROCESS])
    return models


def test_committed_repository_equals_fresh_render(spec) -> None:
    assert stale_files(spec, REPOSITORY) == [], "run `trimodal render` and commit the result"


def test_committed_configs_parse_and_ensemble_maps_name_real_tensors(spec) -> None:
    models = {}
    for model in contract.MODEL_NAMES:
        models[model] = load_config(REPOSITORY / model / "config.pbtxt")
    ensemble = load_config(REPOSITORY / contract.ENSEMBLE / "config.pbtxt")
    assert check_ensemble(ensemble, models) == []
    cpu = {m: load_config(REPOSITORY / m / "configs" / "cpu.pbtxt") for m in contract.ENCODERS}
    assert check_ensemble(ensemble, {**models, **cpu}) == []


@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_every_model_batches_dynamically(spec, target: str) -> None:
    ensemble = ensemble_config(spec, contract.model_io(spec))
    for name, config in _models(spec, target).items():
        assert config.max_batch_size >= ensemble.max_batch_size > 0, name
        assert config.HasField("dynamic_batching"), name
        assert list(config.dynamic_batching.preferred_batch_size), name


def test_targets_share_tensors_but_differ_in_runtime(spec) -> None:
    gpu, cpu = _models(spec, "gpu"), _models(spec, "cpu")
    for model in contract.ENCODERS:
        assert gpu[model].platform == "tensorrt_plan"
        assert gpu[model].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert gpu[model].default_model_filename == "model.plan"
        assert len(gpu[model].model_warmup) == 2
        assert cpu[model].backend == "python"
        assert cpu[model].instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert list(gpu[model].input) == list(cpu[model].input)
        assert list(gpu[model].output) == list(cpu[model].output)


def test_per_architecture_plans(spec) -> None:
    engines = spec.engines.model_copy(update={"compute_capabilities": ["8.6", "9.0"]})
    multi = spec.model_copy(update={"engines": engines})
    config = gpu_config(multi, "image_encoder", contract.model_io(multi)["image_encoder"])
    assert dict(config.cc_model_filenames) == {"8.6": "model_sm86.plan", "9.0": "model_sm90.plan"}
    assert not config.default_model_filename


def test_labels_file_attached_to_label_output(spec) -> None:
    ensemble = ensemble_config(spec, contract.model_io(spec))
    outputs = {o.name: o for o in ensemble.output}
    assert outputs[contract.LABEL].label_filename == contract.LABELS_FILE
    assert not outputs[contract.PROBABILITIES].label_filename
    for model in (contract.ENSEMBLE, contract.POSTPROCESS):  # the model that produces LABEL needs the file too
        labels = (REPOSITORY / model / contract.LABELS_FILE).read_text().split()
        assert labels == spec.classes


def test_postprocess_is_the_last_step_and_produces_every_ensemble_output(spec) -> None:
    ensemble = ensemble_config(spec, contract.model_io(spec))
    steps = list(ensemble.ensemble_scheduling.step)
    assert [s.model_name for s in steps][-2:] == [contract.FUSION, contract.POSTPROCESS]
    assert set(steps[-1].output_map.values()) == {o.name for o in ensemble.output}
    assert set(steps[-1].input_map) == {*contract.MASKS, contract.FUSED_PROBABILITIES, contract.HEAD_PROBABILITIES}
    produced_by_fusion = set(steps[-2].output_map.values())
    assert produced_by_fusion == {contract.FUSED_PROBABILITIES, contract.HEAD_PROBABILITIES}
    assert not produced_by_fusion & {o.name for o in ensemble.output}  # old clients read postprocess's answer
    dtypes = {o.name: mc.DataType.Name(o.data_type) for o in ensemble.output}
    assert dtypes == {"PROBABILITIES": "TYPE_FP32", "LABEL": "TYPE_FP32", "MODALITY_PROBABILITIES": "TYPE_FP32",
                      "MODALITY_LABELS": "TYPE_STRING", "AGREEMENT": "TYPE_BOOL", "CONFLICT_SCORE": "TYPE_FP32",
                      "CONFLICT": "TYPE_BOOL"}  # fmt: skip
    assert list({o.name: o for o in ensemble.output}[contract.PROBABILITIES].dims) == [spec.num_classes]


@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_postprocess_runs_on_cpu_on_both_targets_and_refuses_all_empty(spec, target: str) -> None:
    config = _models(spec, target)[contract.POSTPROCESS]
    assert config.backend == "python"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.parameters["conflict_threshold"].string_value == repr(spec.multitask.conflict_threshold)
    fusion = _models(spec, target)[contract.FUSION]
    assert "require_any_of" not in fusion.parameters  # refusing all-empty samples is postprocess's job
    committed = load_config(REPOSITORY / contract.POSTPROCESS / "config.pbtxt")
    assert committed == config


def test_check_ensemble_reports_each_problem(spec) -> None:
    models = _models(spec, "cpu")
    ensemble = ensemble_config(spec, contract.model_io(spec))
    step = ensemble.ensemble_scheduling.step[3]  # image_encoder
    step.input_map["NOT_A_TENSOR"] = contract.IMAGE_TENSOR
    models["text_encoder"].input[0].data_type = mc.TYPE_INT32
    del models["audio_encoder"]
    ensemble.output.add(name="EXTRA", data_type=mc.TYPE_FP32, dims=[1])
    problems = "\n".join(check_ensemble(ensemble, models))
    assert "'NOT_A_TENSOR' is not an input of the model" in problems
    assert "'INPUT_IDS' is INT64[-1] but input 'INPUT_IDS' expects INT32[-1]" in problems
    assert "step audio_encoder: no such model" in problems
    assert "ensemble output 'EXTRA' is produced by no step" in problems


def test_render_writes_only_changes(tmp_path: Path, spec) -> None:
    written = render(spec, tmp_path)
    assert len(written) == len(render_files(spec))
    assert render(spec, tmp_path) == []
    (tmp_path / "multimodal" / "config.pbtxt").write_text("max_batch_size: 1\n")
    assert stale_files(spec, tmp_path) == [Path("multimodal/config.pbtxt")]


def test_broken_repository_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "config.pbtxt"
    bad.write_text("max_batch_size: banana\n")
    with pytest.raises(RepositoryError, match="cannot parse model config"):
        load_config(bad)

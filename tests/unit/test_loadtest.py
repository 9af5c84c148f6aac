"""locust is installed apart from the server, with one pin shared by `make loadtest` and the locust image."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _extras() -> dict[str, list[str]]:
    """pyproject's optional dependencies (read by hand: tomllib is 3.11+, the project supports 3.10)."""
    block = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras: dict[str, list[str]] = {}
    name = None
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        opened = re.match(r"(\w+) = \[(.*)", line)
        if opened:
            name, line = opened.group(1), opened.group(2)
            extras[name] = []
        if name is not None:
            extras[name] += re.findall(r'"([^"]+)"', line)
    return extras


def test_locust_is_only_in_the_loadtest_extra_and_pinned_exactly() -> None:
    extras = _extras()
    locust = [r for r in extras["loadtest"] if r.startswith("locust")]
    assert len(locust) == 1 and re.fullmatch(r"locust==2\.\d+\.\d+", locust[0]), locust
    assert int(locust[0].split(".")[1]) >= 40, "a locust of this decade"
    for name, requirements in extras.items():
        if name != "loadtest":
            assert not any(r.startswith("locust") for r in requirements), f"locust in the {name} extra"
    assert not any("pytriton" in r or "tritonclient[http]" in r or "trimodal[" in r for r in extras["loadtest"])
    assert "loadtest" not in " ".join(extras["dev"]), "the dev venv holds nvidia-pytriton: locust stays out"


def test_the_locust_image_installs_the_same_extra() -> None:
    dockerfile = (ROOT / "build/Dockerfile.triton").read_text()
    stage = dockerfile.split("AS locust", 1)[1]
    installs = re.findall(r"pip install (.+)", stage)
    assert installs == ['".[loadtest]"'], installs
    assert "locust==" not in stage, "the pin lives in pyproject.toml only"
    assert "COPY clients/samples" in stage and "TRIMODAL_SAMPLES_DIR" in stage, "the workload ships in the image"
    assert "!clients/samples/" in (ROOT / "build/Dockerfile.triton.dockerignore").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    assert compose.count("target: locust") == 1 and "dockerfile: build/Dockerfile.triton" in compose


def test_make_test_installs_the_load_venv() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\bloadtest\b", makefile, re.MULTILINE)
    assert "pip install -q -e '.[loadtest]'" in makefile


def test_the_samples_folder_is_a_workload() -> None:
    from trimodal.bench.workload import build_workload, load_sample_folder, parse_mix
    from trimodal.spec import load_spec

    folder = load_sample_folder(ROOT / "clients/samples", load_spec().classes)
    assert len(folder) == 3 and all(folder.images) and all(folder.audio) and all(folder.texts)
    items = build_workload(folder, parse_mix("image+text+audio=1,text=1"), 20)
    assert {item.subset for item in items} == {"image+text+audio", "text"}
    assert {item.label for item in items} <= set(folder.labels)

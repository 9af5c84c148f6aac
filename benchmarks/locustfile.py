"""Locust load test of the ``multimodal`` ensemble over Triton gRPC.

Every request sends one test-split sample with a subset of its modalities, drawn from a weighted mix
(all three, each pair, each single modality); every answer is validated (PROBABILITIES of shape [1, classes],
finite, summing to 1 +- 1e-3; the top LABEL one of the classes) and anything else is reported to locust as a
failure WITH the exception. Each call has a deadline.

Settings (flag, then environment, then default):

    --host / TRIMODAL_URL          Triton gRPC host:port (a grpc:// prefix is accepted)  127.0.0.1:8001
    --mix / TRIMODAL_MIX           subset weights, e.g. "image+text+audio=4,text=1"        see workload.py
    --deadline-s / TRIMODAL_DEADLINE_S  deadline of every call, seconds                    5
    --samples / TRIMODAL_SAMPLES   distinct requests drawn from the test split               512
    TRIMODAL_BUILD_DIR             folder holding data/test.npz                              <project>/build
    --samples-dir / TRIMODAL_SAMPLES_DIR  used when there is no test split (a remote server, no local build):
                                   the bundled samples (clients/samples, shipped in the locust image)
    TRIMODAL_SPEC                  pipeline.yaml (class names)                               <project>/pipeline.yaml

    locust -f benchmarks/locustfile.py --headless -u 16 -r 16 -t 60s --host 127.0.0.1:8001
    locust -f benchmarks/locustfile.py --master --host 127.0.0.1:8001      # + N x `--worker`

grpc must be gevent-patched before any channel exists, otherwise the users are silently serialized.
"""

from __future__ import annotations

# gevent first: locust has monkey-patched the stdlib; grpc's own patch must precede every channel.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import weakref  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from locust import User, between, events, task  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from trimodal import contract  # noqa: E402
from trimodal.bench.workload import (  # noqa: E402
    DEFAULT_MIX,
    build_workload,
    check_label,
    check_probabilities,
    load_sample_folder,
    load_workload,
    parse_label_entry,
    parse_mix,
)
from trimodal.client import build_inputs, build_outputs, server_timeout_us  # noqa: E402
from trimodal.errors import ClientError  # noqa: E402
from trimodal.layout import Layout  # noqa: E402
from trimodal.spec import load_spec  # noqa: E402

LOGGER = logging.getLogger("trimodal.locust")
DEFAULT_URL = "127.0.0.1:8001"


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument(
        "--mix", type=str, env_var="TRIMODAL_MIX", default=DEFAULT_MIX, include_in_web_ui=True,
        help="Weighted modality subsets, e.g. 'image+text+audio=4,image+text=1,text=1'.",
    )  # fmt: skip
    parser.add_argument(
        "--deadline-s", type=float, env_var="TRIMODAL_DEADLINE_S", default=5.0, include_in_web_ui=True,
        help="Deadline of every gRPC call in seconds.",
    )  # fmt: skip
    parser.add_argument(
        "--samples", type=int, env_var="TRIMODAL_SAMPLES", default=512, help="Distinct requests to draw."
    )
    parser.add_argument(
        "--samples-dir", type=str, env_var="TRIMODAL_SAMPLES_DIR", default=str(Layout.default().samples),
        help="Bundled samples used when there is no local build (its test split) to draw from.",
    )  # fmt: skip


_CACHE: dict[tuple[str, int], list] = {}
_CLASSES: list[str] = []


def _workload(mix_text: str, count: int, samples_dir: str) -> list:
    """Requests for this mix (built once per process, deterministic, shared by every user).

    From the test split of the local build when there is one, else from the bundled samples (a remote server).
    """
    key = (mix_text, count)
    if key not in _CACHE:
        build_dir = Layout.default().build.root  # TRIMODAL_BUILD_DIR, else <project>/build
        mix = parse_mix(mix_text)
        if (build_dir / "data").is_dir():
            _CACHE[key] = load_workload(build_dir, mix, count, seed=0)
        else:
            LOGGER.warning("no test split in %s: drawing the workload from the samples in %s", build_dir, samples_dir)
            folder = load_sample_folder(Path(samples_dir), load_spec().classes)
            _CACHE[key] = build_workload(folder, mix, count, seed=0)
    return _CACHE[key]


class _Client(grpcclient.InferenceServerClient):
    """tritonclient's gRPC client whose channel is closed once, while gevent's hub still runs.

    tritonclient closes the channel again in ``__del__``. Under grpc's gevent integration that second close takes a
    mutex which a suspended greenlet may hold; when it runs from the interpreter's final garbage collection the
    process deadlocks after printing its summary (seen in CI: ``locust`` never exited, SIGTERM ignored). So each
    channel is closed exactly once: in ``on_stop``, or on locust's ``quit`` event for any user not stopped.
    """

    _closed = False

    def close(self) -> None:
        """Close the channel the first time; later calls (``__del__`` among them) do nothing."""
        if not self._closed:
            self._closed = True
            super().close()


_CLIENTS: weakref.WeakSet[_Client] = weakref.WeakSet()


@events.quit.add_listener
def _close_clients(**_kwargs) -> None:
    """Close every channel still open before the interpreter finalizes (see :class:`_Client`)."""
    for client in list(_CLIENTS):
        client.close()


def _url(host: str | None) -> str:
    url = host or os.environ.get("TRIMODAL_URL") or DEFAULT_URL
    for prefix in ("grpc://", "http://", "https://"):
        url = url.removeprefix(prefix)
    return url.rstrip("/")


class TritonUser(User):
    """One client of the ensemble: a request of a weighted-random modality subset, validated, per iteration."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        """Read the settings, load the workload and open a (gevent-friendly) gRPC channel."""
        options = self.environment.parsed_options
        mix_text = getattr(options, "mix", None) or os.environ.get("TRIMODAL_MIX", DEFAULT_MIX)
        self.deadline_s = float(getattr(options, "deadline_s", None) or os.environ.get("TRIMODAL_DEADLINE_S", 5.0))
        count = int(getattr(options, "samples", None) or os.environ.get("TRIMODAL_SAMPLES", 512))
        samples_dir = getattr(options, "samples_dir", None) or os.environ.get(
            "TRIMODAL_SAMPLES_DIR", str(Layout.default().samples)
        )
        items = _workload(mix_text, count, samples_dir)
        self.by_subset: dict[str, list] = {}
        for item in items:
            self.by_subset.setdefault(item.subset, []).append(item)
        mix = parse_mix(mix_text)
        self.subsets = [name for name in mix if name in self.by_subset]
        self.weights = [mix[name] for name in self.subsets]
        if not _CLASSES:
            _CLASSES.extend(load_spec().classes)
        self.classes = _CLASSES
        self.url = _url(self.host)
        self.client = _Client(self.url)
        _CLIENTS.add(self.client)
        self.rng = random.Random()

    def on_stop(self) -> None:
        """Close the channel."""
        self.client.close()

    @task
    def classify(self) -> None:
        """One request of a modality subset drawn with the mix's weights."""
        subset = self.rng.choices(self.subsets, weights=self.weights, k=1)[0]
        item = self.rng.choice(self.by_subset[subset])
        self._infer(f"{contract.ENSEMBLE}[{subset}]", item)

    def _infer(self, name: str, item) -> None:
        started = time.perf_counter()
        exception: BaseException | None = None
        length = 0
        try:
            result = self.client.infer(
                contract.ENSEMBLE,
                build_inputs([item.sample], grpcclient),
                outputs=build_outputs(grpcclient, 1),
                client_timeout=self.deadline_s,
                timeout=server_timeout_us(self.deadline_s),
            )
            probabilities = check_probabilities(result.as_numpy(contract.PROBABILITIES), len(self.classes))
            labels = result.as_numpy(contract.LABEL)
            if labels is None or np.size(labels) < 1:
                raise ValueError("response has no LABEL")
            _, index, label = parse_label_entry(np.ravel(labels)[0])
            check_label(label, self.classes)
            if index != int(np.argmax(probabilities[0])):
                raise ValueError(f"LABEL index {index} is not the argmax of PROBABILITIES")
            length = int(probabilities.nbytes)
        except InferenceServerException as exc:  # gRPC status (UNAVAILABLE, DEADLINE_EXCEEDED, ...) + message
            status = str(exc.status() or "error").rsplit(".", 1)[-1]
            exception = ClientError(f"{status}: {exc.message()}", status=status)
        except Exception as exc:  # an invalid answer is a failure too
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context={"subset": item.subset},
        )

"""A stand-in upstream for the Envoy tests: Triton's gRPC service (its real proto, from tritonclient) and a few HTTP
endpoints, on loopback ports. It answers what the load balancer's behaviour depends on, nothing more:

- gRPC ``ServerReady``, ``ModelInfer`` (echoes the request id; a ``delay_ms`` request parameter holds the answer)
  and ``ModelStreamInfer`` (one response per request, sent as soon as that request arrives);
- HTTP ``GET /v2/health/ready`` (200) and ``POST /v2/models/<model>/infer`` (echoes the JSON id), ``GET /slow?ms=``.
Every request is counted per path, so a test can tell which upstream port a request reached.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


class _Service(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, seen: Counter):
        self.seen = seen

    def ServerReady(self, request, context):  # noqa: N802 (the proto's names)
        self.seen["grpc:ServerReady"] += 1
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelInfer(self, request, context):  # noqa: N802
        self.seen["grpc:ModelInfer"] += 1
        delay = request.parameters["delay_ms"].int64_param if "delay_ms" in request.parameters else 0
        time.sleep(delay / 1000)
        return service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)

    def ModelStreamInfer(self, request_iterator, context):  # noqa: N802
        for request in request_iterator:
            self.seen["grpc:ModelStreamInfer"] += 1
            response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
            yield service_pb2.ModelStreamInferResponse(infer_response=response)


MAX_MESSAGE = 64 * 2**20
"""The largest gRPC message the stand-in accepts (above Envoy's cap)."""


class FakeTriton:
    """gRPC on ``grpc_port`` and HTTP on ``http_port`` (127.0.0.1, ephemeral ports), until :meth:`stop`."""

    def __init__(self) -> None:
        self.seen: Counter = Counter()
        # Accept messages far above Envoy's 16 MiB cap (gRPC's own default is 4 MiB): a request Envoy lets through
        # must reach this stand-in, so that "refused at Envoy" cannot be this server's refusal.
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.max_receive_message_length", MAX_MESSAGE)]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Service(self.seen), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                seen[f"http:{url.path}"] += 1
                if url.path == "/v2/health/ready":
                    self._send(200, {})
                elif url.path == "/slow":
                    time.sleep(int(parse_qs(url.query).get("ms", ["0"])[0]) / 1000)
                    self._send(200, {"slow": True})
                else:
                    self._send(404, {"error": url.path})

            def do_POST(self):
                url = urlparse(self.path)
                seen[f"http:{url.path}"] += 1
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._send(200, {"id": body.get("id", ""), "model_name": url.path.split("/")[3]})

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def start(self) -> FakeTriton:
        self._grpc.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._grpc.stop(grace=None)
        self._http.shutdown()
        self._http.server_close()

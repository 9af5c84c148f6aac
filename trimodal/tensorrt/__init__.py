"""GPU target ("gpu" extra): strongly typed TensorRT plans for the encoders and the fusion head, and their checks.

Modules: :mod:`.sources` (which precision graph a plan is built from; the spec must have rendered the
repository), :mod:`.profiles` (optimization profiles from pipeline.yaml), :mod:`.runtime` (TensorRT version from
the bindings or libnvinfer, the GPU from the driver, lazy imports), :mod:`.layers` (per-layer precision of the
strongly typed network), :mod:`.metadata` (what is recorded next to a plan), :mod:`.plans` (where plans and caches
go, up-to-date test), :mod:`.builder` (the build), :mod:`.samples` (preprocessed dataset samples),
:mod:`.preflight` (plans vs TensorRT/GPU vs config.pbtxt) and :mod:`.accuracy` (engines vs ONNX Runtime).
Nothing here imports TensorRT, Polygraphy or ONNX Runtime at module level.
"""

"""GPU target ("gpu" extra): TensorRT plans for the encoders and the fusion head, and their checks.

Modules: :mod:`.profiles` (optimization profiles from pipeline.yaml), :mod:`.runtime` (TensorRT version and
GPU, lazy imports), :mod:`.metadata` (what is recorded next to a plan), :mod:`.plans` (where plans and caches
go, up-to-date test), :mod:`.calibration` (preprocessed dataset samples), :mod:`.builder` (the build),
:mod:`.preflight` (plans vs TensorRT/GPU vs config.pbtxt) and :mod:`.accuracy` (engines vs ONNX Runtime).
Nothing here imports TensorRT, Polygraphy or ONNX Runtime at module level.
"""

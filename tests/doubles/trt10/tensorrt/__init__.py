"""Test double of ``tensorrt`` 10.16.0.72 (NvInferVersion.h at NVIDIA/TensorRT tag v10.16); see tests/doubles/trt_double."""

from trt_double import install

install(globals(), "10.16.0.72", "surface_10_16.json")

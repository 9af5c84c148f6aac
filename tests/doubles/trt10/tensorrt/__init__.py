"""Test double of ``tensorrt`` 10.16.0.72 (NvInferVersion.h, NVIDIA/TensorRT tag v10.16); see ../../trt_double."""

from trt_double import install

install(globals(), "10.16.0.72", "surface_10_16.json")

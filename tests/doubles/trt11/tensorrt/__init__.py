"""Test double of ``tensorrt`` 11.1.0.106 (NvInferVersion.h, NVIDIA/TensorRT tag v11.1); see ../../trt_double."""

from trt_double import install

install(globals(), "11.1.0.106", "surface_11_1.json")

/* A stand-in for the CUDA driver library (libcuda.so.1) exporting the five driver-API calls trimodal makes
 * (trimodal/tensorrt/runtime.py: cuInit, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceGetAttribute),
 * with the signatures of cuda.h (CUresult = int, CUdevice = int). The GPU it reports comes from the environment:
 * FAKE_GPU_NAME (default "NVIDIA H200"), FAKE_GPU_CC (default "9.0"), FAKE_GPU_COUNT (default 1).
 * Build: cc -shared -fPIC -o libcuda.so.1 fake_libcuda.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_INVALID_DEVICE 101
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76

static const char *env_or(const char *name, const char *fallback) {
    const char *value = getenv(name);
    return value && *value ? value : fallback;
}

int cuInit(unsigned int flags) { return flags == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

int cuDeviceGetCount(int *count) {
    *count = atoi(env_or("FAKE_GPU_COUNT", "1"));
    return CUDA_SUCCESS;
}

int cuDeviceGet(int *device, int ordinal) {
    int count = 0;
    cuDeviceGetCount(&count);
    if (ordinal < 0 || ordinal >= count) return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

int cuDeviceGetName(char *name, int len, int device) {
    if (len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", env_or("FAKE_GPU_NAME", "NVIDIA H200"));
    return CUDA_SUCCESS;
}

int cuDeviceGetAttribute(int *value, int attribute, int device) {
    int major = 0, minor = 0;
    if (sscanf(env_or("FAKE_GPU_CC", "9.0"), "%d.%d", &major, &minor) != 2) return CUDA_ERROR_INVALID_VALUE;
    if (attribute == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) *value = major;
    else if (attribute == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR) *value = minor;
    else return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

/* A stand-in for TensorRT's library (libnvinfer.so.<major>) exporting only its version functions, with the
 * signatures of NvInferRuntimeBase.h (getInferLibVersion: (MAJOR * 100 + MINOR) * 100 + PATCH) and
 * NvInferRuntime.h (getInferLibMajorVersion/Minor/Patch/Build, TensorRT >= 10). The version comes from the
 * environment: FAKE_TRT_VERSION="MAJOR.MINOR.PATCH.BUILD" (default "11.1.0.106").
 * Build: cc -shared -fPIC -o libnvinfer.so.11 fake_libnvinfer.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int32_t part(int index) {
    const char *value = getenv("FAKE_TRT_VERSION");
    int parts[4] = {11, 1, 0, 106};
    if (value && *value) sscanf(value, "%d.%d.%d.%d", &parts[0], &parts[1], &parts[2], &parts[3]);
    return parts[index];
}

int32_t getInferLibVersion(void) { return (part(0) * 100 + part(1)) * 100 + part(2); }
int32_t getInferLibMajorVersion(void) { return part(0); }
int32_t getInferLibMinorVersion(void) { return part(1); }
int32_t getInferLibPatchVersion(void) { return part(2); }
int32_t getInferLibBuildVersion(void) { return part(3); }

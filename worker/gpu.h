/*
 * gpu.h - the GPUs a worker offers: found through NVML (loaded with dlopen at run time, so the
 * binary runs on hosts without NVIDIA drivers) or described by a fake GPU spec for machines
 * without GPUs (tests, development).
 *
 * Fake GPU spec: comma-separated groups COUNTxMODEL:MEMORY_MIB[:CC], e.g. "4xH100:81920" or
 * "2xA100:40960,1xL4:24576:8.9". COUNT 1..64 (at most 64 GPUs in all), MODEL 1..64 bytes of
 * letters, digits, '.', '_' and '-', MEMORY_MIB 1..1048576, CC a compute capability such as "9.0"
 * (default: the model's when known, else "8.0"). Fake GPU UUIDs are derived from the worker id and
 * the GPU's index, so a restarted worker registers the same GPUs.
 *
 * Threads: cstl_gpu_parse_fake is reentrant; an NVML handle is used by one thread at a time.
 */
#ifndef CSTL_WORKER_GPU_H
#define CSTL_WORKER_GPU_H

#include "platform/error.h"

#include <stdint.h>

#define CSTL_GPU_MAX        64      /* GPUs of one worker (the RegisterWorker rule) */
#define CSTL_GPU_MEMORY_MAX 1048576 /* MiB of one GPU (the RegisterWorker rule) */

typedef struct cstl_gpu {
    char uuid[80];  /* "GPU-…" */
    char model[65]; /* "H100" or NVML's name */
    int64_t memory_mib;
    char compute_capability[16]; /* "9.0" */
    int nvml_index;              /* -1 for a fake GPU */
} cstl_gpu;

/* Telemetry of one GPU at one moment. */
typedef struct cstl_gpu_telemetry {
    int utilization_percent; /* 0..100 */
    int64_t memory_used_mib;
    int temperature_c;
} cstl_gpu_telemetry;

/*
 * Parses a fake GPU spec for worker_id into out (capacity CSTL_GPU_MAX). Returns 0 with *n set, or
 * CSTL_ECONFIG with a message naming the offending value and the limit.
 */
int cstl_gpu_parse_fake(
    const char *spec, const char *worker_id, cstl_gpu out[CSTL_GPU_MAX], int *n, cstl_error *err);

typedef struct cstl_nvml cstl_nvml;

/*
 * Loads libnvidia-ml.so.1 (or lib_path when not NULL, for tests) and initializes it. Returns a
 * handle, or NULL with CSTL_ENOTFOUND when the library is absent or NVML does not initialize.
 */
cstl_nvml *cstl_nvml_open(const char *lib_path, cstl_error *err);

/* The GPUs NVML sees, into out (capacity CSTL_GPU_MAX). 0 with *n set, or a code with err. */
int cstl_nvml_discover(cstl_nvml *nvml, cstl_gpu out[CSTL_GPU_MAX], int *n, cstl_error *err);

/* Telemetry of one discovered GPU; fields NVML cannot read are left at 0. */
void cstl_nvml_telemetry(cstl_nvml *nvml, const cstl_gpu *gpu, cstl_gpu_telemetry *out);

/* Shuts NVML down and unloads it. NULL is a no-op. */
void cstl_nvml_close(cstl_nvml *nvml);

#endif

/*
 * gpu.c - fake GPU specs and NVML discovery (see gpu.h).
 *
 * NVML is loaded with dlopen and its few functions resolved by name; the types below are declared
 * from NVIDIA's documented API (nvml.h): return codes are an int enum (0 = success), a device
 * handle is an opaque pointer, memory is reported in bytes, temperature sensor 0 is the GPU die.
 * Invariant: nothing here links against NVML, so a host without the driver only sees
 * CSTL_ENOTFOUND from cstl_nvml_open.
 */
#include "worker/gpu.h"

#include "commands/client.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fake GPUs --------------------------------------------------------------------------- */

/* Compute capabilities of the models people name most; anything else is "8.0". */
static const char *model_capability(const char *model)
{
    static const struct {
        const char *model, *cc;
    } known[] = {{"B200", "10.0"}, {"H200", "9.0"}, {"H100", "9.0"}, {"L40S", "8.9"},
                 {"L40", "8.9"},   {"L4", "8.9"},   {"A100", "8.0"}, {"A10", "8.6"},
                 {"A10G", "8.6"},  {"T4", "7.5"},   {"V100", "7.0"}};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(known); i++)
        if (strcmp(known[i].model, model) == 0)
            return known[i].cc;
    return "8.0";
}

static bool model_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

static bool capability_valid(const char *s)
{
    const char *dot = strchr(s, '.');
    if (dot == NULL)
        return false;
    size_t major = (size_t)(dot - s), minor = strlen(dot + 1);
    if (major < 1 || major > 3 || minor < 1 || minor > 3)
        return false;
    for (const char *p = s; *p; p++)
        if (p != dot && !isdigit((unsigned char)*p))
            return false;
    return true;
}

/* A decimal integer of 1..max with nothing else; false otherwise. */
static bool parse_bounded(const char *text, long max, long *out)
{
    if (text[0] == '\0' || !isdigit((unsigned char)text[0]))
        return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > max)
        return false;
    *out = v;
    return true;
}

/* Parses one group "COUNTxMODEL:MEMORY[:CC]" (a copy the caller owns) into out from *n. */
static int parse_group(char *group, const char *worker_id, cstl_gpu *out, int *n, cstl_error *err)
{
    char *x = strchr(group, 'x');
    if (x == NULL || x == group)
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: \"%.64s\" is not COUNTxMODEL:MEMORY_MIB[:CC] (e.g. "
                              "\"4xH100:81920\")",
                              group);
    *x = '\0';
    char *model = x + 1;
    char *colon = strchr(model, ':');
    if (colon == NULL)
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: \"%.64s\" has no memory: write MODEL:MEMORY_MIB", model);
    *colon = '\0';
    char *memory = colon + 1;
    char *cc = strchr(memory, ':');
    if (cc != NULL)
        *cc++ = '\0';
    long count = 0, mib = 0;
    if (!parse_bounded(group, CSTL_GPU_MAX, &count))
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: count \"%.32s\" must be an integer from 1 to %d", group,
                              CSTL_GPU_MAX);
    size_t mlen = strlen(model);
    bool ok = mlen >= 1 && mlen <= 64;
    for (size_t i = 0; ok && i < mlen; i++)
        ok = model_char(model[i]);
    if (!ok)
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: model \"%.64s\" must be 1 to 64 letters, digits, '.', "
                              "'_' or '-'",
                              model);
    if (!parse_bounded(memory, CSTL_GPU_MEMORY_MAX, &mib))
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: memory \"%.32s\" of %s must be an integer from 1 to %d "
                              "(MiB)",
                              memory, model, CSTL_GPU_MEMORY_MAX);
    if (cc != NULL && !capability_valid(cc))
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: compute capability \"%.32s\" of %s must be "
                              "DIGITS.DIGITS (1 to 3 digits each), e.g. \"9.0\"",
                              cc, model);
    if (*n + count > CSTL_GPU_MAX)
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: more than %d GPUs in all (%ld more "
                              "after %d)",
                              CSTL_GPU_MAX, count, *n);
    for (long i = 0; i < count; i++) {
        cstl_gpu *g = &out[(*n)++];
        memset(g, 0, sizeof(*g));
        char key[64], id[37];
        snprintf(key, sizeof(key), "fake-gpu:%d", *n - 1);
        cstl_cmd_id_from_key(worker_id, key, id);
        snprintf(g->uuid, sizeof(g->uuid), "GPU-%s", id);
        snprintf(g->model, sizeof(g->model), "%s", model);
        g->memory_mib = mib;
        snprintf(g->compute_capability, sizeof(g->compute_capability), "%s",
                 cc != NULL ? cc : model_capability(model));
        g->nvml_index = -1;
    }
    return 0;
}

int cstl_gpu_parse_fake(
    const char *spec, const char *worker_id, cstl_gpu out[CSTL_GPU_MAX], int *n, cstl_error *err)
{
    *n = 0;
    size_t len = strlen(spec);
    if (len == 0 || len > 1024)
        return cstl_error_set(err, CSTL_ECONFIG,
                              "fake gpus: the spec must be 1 to 1024 bytes, got %zu", len);
    char *copy = strdup(spec);
    if (copy == NULL)
        cstl_panic("out of memory");
    int rc = 0;
    char *p = copy;
    /* strtok_r would skip empty groups; an empty group is an error */
    while (rc == 0) {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (*p == '\0')
            rc = cstl_error_set(err, CSTL_ECONFIG, "fake gpus: \"%.64s\" has an empty group", spec);
        else
            rc = parse_group(p, worker_id, out, n, err);
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    free(copy);
    if (rc != 0)
        *n = 0;
    return rc;
}

/* ---- NVML -------------------------------------------------------------------------------- */

typedef int nvml_return;                 /* nvmlReturn_t: 0 is NVML_SUCCESS */
typedef struct nvml_device *nvml_device; /* nvmlDevice_t */
typedef struct nvml_memory {
    unsigned long long total, free, used; /* bytes */
} nvml_memory;
typedef struct nvml_utilization {
    unsigned int gpu, memory; /* percent */
} nvml_utilization;

#define NVML_TEMPERATURE_GPU 0
#define NVML_BUFFER          96 /* NVML_DEVICE_UUID_V2_BUFFER_SIZE, NVML_DEVICE_NAME_V2_BUFFER_SIZE */

struct cstl_nvml {
    void *lib;
    nvml_return (*init)(void);
    nvml_return (*shutdown)(void);
    nvml_return (*count)(unsigned int *);
    nvml_return (*handle)(unsigned int, nvml_device *);
    nvml_return (*uuid)(nvml_device, char *, unsigned int);
    nvml_return (*name)(nvml_device, char *, unsigned int);
    nvml_return (*memory)(nvml_device, nvml_memory *);
    nvml_return (*capability)(nvml_device, int *, int *);
    nvml_return (*utilization)(nvml_device, nvml_utilization *);
    nvml_return (*temperature)(nvml_device, int, unsigned int *);
};

static bool resolve(cstl_nvml *n, const char **missing)
{
    struct {
        const char *name;
        void **slot;
    } syms[] = {{"nvmlInit_v2", (void **)&n->init},
                {"nvmlShutdown", (void **)&n->shutdown},
                {"nvmlDeviceGetCount_v2", (void **)&n->count},
                {"nvmlDeviceGetHandleByIndex_v2", (void **)&n->handle},
                {"nvmlDeviceGetUUID", (void **)&n->uuid},
                {"nvmlDeviceGetName", (void **)&n->name},
                {"nvmlDeviceGetMemoryInfo", (void **)&n->memory},
                {"nvmlDeviceGetCudaComputeCapability", (void **)&n->capability},
                {"nvmlDeviceGetUtilizationRates", (void **)&n->utilization},
                {"nvmlDeviceGetTemperature", (void **)&n->temperature}};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(syms); i++) {
        *syms[i].slot = dlsym(n->lib, syms[i].name);
        if (*syms[i].slot == NULL) {
            *missing = syms[i].name;
            return false;
        }
    }
    return true;
}

cstl_nvml *cstl_nvml_open(const char *lib_path, cstl_error *err)
{
    const char *path = lib_path != NULL ? lib_path : "libnvidia-ml.so.1";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        cstl_error_set(err, CSTL_ENOTFOUND, "cannot load %s: %s", path, dlerror());
        return NULL;
    }
    cstl_nvml *n = cstl_xcalloc(1, sizeof(*n));
    n->lib = lib;
    const char *missing = NULL;
    nvml_return rc = 0;
    if (!resolve(n, &missing) || (rc = n->init()) != 0) {
        if (missing != NULL)
            cstl_error_set(err, CSTL_ENOTFOUND, "%s has no function %s", path, missing);
        else
            cstl_error_set(err, CSTL_ENOTFOUND, "nvmlInit_v2 failed with NVML error %d", rc);
        dlclose(lib);
        free(n);
        return NULL;
    }
    return n;
}

int cstl_nvml_discover(cstl_nvml *nvml, cstl_gpu out[CSTL_GPU_MAX], int *n, cstl_error *err)
{
    *n = 0;
    unsigned int count = 0;
    nvml_return rc = nvml->count(&count);
    if (rc != 0)
        return cstl_error_set(err, CSTL_EINTERNAL,
                              "nvmlDeviceGetCount_v2 failed with NVML error %d", rc);
    if (count > CSTL_GPU_MAX)
        count = CSTL_GPU_MAX;
    for (unsigned int i = 0; i < count; i++) {
        nvml_device dev = NULL;
        char uuid[NVML_BUFFER] = "", name[NVML_BUFFER] = "";
        nvml_memory mem = {0};
        int major = 0, minor = 0;
        if ((rc = nvml->handle(i, &dev)) != 0 || (rc = nvml->uuid(dev, uuid, sizeof(uuid))) != 0 ||
            (rc = nvml->name(dev, name, sizeof(name))) != 0 ||
            (rc = nvml->memory(dev, &mem)) != 0 ||
            (rc = nvml->capability(dev, &major, &minor)) != 0)
            return cstl_error_set(err, CSTL_EINTERNAL,
                                  "reading GPU %u through NVML failed with "
                                  "NVML error %d",
                                  i, rc);
        cstl_gpu *g = &out[(*n)++];
        memset(g, 0, sizeof(*g));
        snprintf(g->uuid, sizeof(g->uuid), "%.64s", uuid);
        snprintf(g->model, sizeof(g->model), "%.64s", name);
        g->memory_mib = (int64_t)(mem.total / (1024ULL * 1024ULL));
        snprintf(g->compute_capability, sizeof(g->compute_capability), "%d.%d", major % 1000,
                 minor % 1000);
        g->nvml_index = (int)i;
    }
    return 0;
}

void cstl_nvml_telemetry(cstl_nvml *nvml, const cstl_gpu *gpu, cstl_gpu_telemetry *out)
{
    memset(out, 0, sizeof(*out));
    nvml_device dev = NULL;
    if (nvml == NULL || gpu->nvml_index < 0 || nvml->handle((unsigned)gpu->nvml_index, &dev) != 0)
        return;
    nvml_utilization u = {0};
    nvml_memory mem = {0};
    unsigned int temp = 0;
    if (nvml->utilization(dev, &u) == 0)
        out->utilization_percent = u.gpu > 100 ? 100 : (int)u.gpu;
    if (nvml->memory(dev, &mem) == 0)
        out->memory_used_mib = (int64_t)(mem.used / (1024ULL * 1024ULL));
    if (nvml->temperature(dev, NVML_TEMPERATURE_GPU, &temp) == 0)
        out->temperature_c = temp > 200 ? 200 : (int)temp;
}

void cstl_nvml_close(cstl_nvml *nvml)
{
    if (nvml == NULL)
        return;
    nvml->shutdown();
    dlclose(nvml->lib);
    free(nvml);
}

/* OpenCL program build and binary cache (see program.h).
 *
 * Cache file: "DATTNCLB", u32 format version, u64 key, u64 binary bytes, u64 FNV-1a of the
 * binary, then the binary; all little-endian. The key hashes the source, the build options, the
 * device name and vendor, the driver version, the platform version and dattn's version. Files are
 * written to a temporary name and renamed, so a reader never sees half a file. */
#define _DEFAULT_SOURCE
#include "program.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "cl_sources.h"
#include "status.h"

enum { CACHE_FORMAT = 1, CACHE_HEADER = 8 + 4 + 8 + 8 + 8 };
static const char cache_magic[8] = {'D', 'A', 'T', 'T', 'N', 'C', 'L', 'B'};

static uint64_t fnv_str(uint64_t h, const char *s) { return fnv1a(h, s, strlen(s) + 1); }

void cl_default_cache_dir(char *buf, size_t n)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(buf, n, "%s/dattn", xdg);
    else if (home && *home)
        snprintf(buf, n, "%s/.cache/dattn", home);
    else if (n)
        buf[0] = '\0';
}

/* mkdir -p; 0 on success. */
static int make_dirs(const char *path)
{
    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -1;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static uint64_t cache_key(cl_device_id dev, const char *text, const char *options)
{
    char buf[256];
    cl_platform_id platform = NULL;
    uint64_t h = FNV1A_INIT;
    h = fnv_str(h, text);
    h = fnv_str(h, options ? options : "");
    static const cl_device_info dev_fields[] = {CL_DEVICE_NAME, CL_DEVICE_VENDOR, CL_DRIVER_VERSION,
                                                CL_DEVICE_VERSION};
    for (size_t i = 0; i < sizeof dev_fields / sizeof *dev_fields; i++) {
        if (clGetDeviceInfo(dev, dev_fields[i], sizeof buf, buf, NULL) != CL_SUCCESS)
            snprintf(buf, sizeof buf, "?");
        buf[sizeof buf - 1] = '\0';
        h = fnv_str(h, buf);
    }
    if (clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL) == CL_SUCCESS &&
        clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof buf, buf, NULL) == CL_SUCCESS) {
        buf[sizeof buf - 1] = '\0';
        h = fnv_str(h, buf);
    }
    char version[32];
    snprintf(version, sizeof version, "dattn %d.%d.%d", DATTN_VERSION_MAJOR, DATTN_VERSION_MINOR,
             DATTN_VERSION_PATCH);
    return fnv_str(h, version);
}

/* The cached binary for key, or NULL (absent, unreadable, or failing any check). */
static unsigned char *cache_read(const char *path, uint64_t key, size_t *bytes)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char head[CACHE_HEADER];
    unsigned char *bin = NULL;
    if (fread(head, sizeof head, 1, f) != 1 || memcmp(head, cache_magic, 8) != 0)
        goto bad;
    uint32_t format = (uint32_t)head[8] | (uint32_t)head[9] << 8 | (uint32_t)head[10] << 16 |
                      (uint32_t)head[11] << 24;
    uint64_t file_key = le_get_u64(head + 12), n = le_get_u64(head + 20), sum = le_get_u64(head + 28);
    if (format != CACHE_FORMAT || file_key != key || n == 0 || n > ((uint64_t)1 << 30))
        goto bad;
    if (fseek(f, 0, SEEK_END) != 0 || ftell(f) != (long)(CACHE_HEADER + n) ||
        fseek(f, CACHE_HEADER, SEEK_SET) != 0)
        goto bad;
    bin = malloc((size_t)n);
    if (!bin || fread(bin, 1, (size_t)n, f) != n || fnv1a(FNV1A_INIT, bin, n) != sum)
        goto bad;
    fclose(f);
    *bytes = (size_t)n;
    return bin;
bad:
    free(bin);
    fclose(f);
    return NULL;
}

static void cache_write(const char *dir, const char *path, uint64_t key, const unsigned char *bin,
                        size_t n)
{
    if (make_dirs(dir) != 0) {
        dattn_log(DATTN_LOG_WARN, "opencl: cannot create the program cache folder '%s': %s", dir,
                  strerror(errno));
        return;
    }
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        dattn_log(DATTN_LOG_WARN, "opencl: cannot write '%s': %s", tmp, strerror(errno));
        return;
    }
    unsigned char head[CACHE_HEADER];
    memcpy(head, cache_magic, 8);
    le_put_u32(head + 8, CACHE_FORMAT);
    le_put_u64(head + 12, key);
    le_put_u64(head + 20, n);
    le_put_u64(head + 28, fnv1a(FNV1A_INIT, bin, n));
    int ok = fwrite(head, sizeof head, 1, f) == 1 && fwrite(bin, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        dattn_log(DATTN_LOG_WARN, "opencl: writing the program cache '%s' failed", path);
        remove(tmp);
    }
}

/* The device's binary of a built program (malloc'ed), or NULL. */
static unsigned char *program_binary(cl_program prog, size_t *n)
{
    size_t size = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS ||
        size == 0)
        return NULL;
    unsigned char *bin = malloc(size);
    if (bin && clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) != CL_SUCCESS) {
        free(bin);
        return NULL;
    }
    *n = size;
    return bin;
}

static dattn_status build_failed(cl_program prog, cl_device_id dev, const char *name, cl_int err)
{
    char log[700] = "";
    size_t len = 0;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, &len) !=
        CL_SUCCESS) {
        /* The log is longer than our buffer: take its head. */
        size_t full = 0;
        clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &full);
        char *all = full ? malloc(full + 1) : NULL;
        if (all && clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, full, all, NULL) ==
                       CL_SUCCESS) {
            all[full] = '\0';
            snprintf(log, sizeof log, "%s", all);
        }
        free(all);
    }
    log[sizeof log - 1] = '\0';
    return dattn_fail(DATTN_E_OPENCL, "opencl: building '%s' failed (%s); build log:\n%s", name,
                      cl_error_name(err), log[0] ? log : "(empty)");
}

dattn_status cl_program_build(cl_context ctx, cl_device_id dev, const char *name, const char *text,
                              const char *options, const char *cache_dir, cl_program *out,
                              int *from_cache)
{
    dattn_status st = DATTN_OK;
    cl_int err;
    *out = NULL;
    *from_cache = 0;
    char dir[1024], path[1200];
    if (cache_dir)
        snprintf(dir, sizeof dir, "%s", cache_dir);
    else
        cl_default_cache_dir(dir, sizeof dir);
    uint64_t key = cache_key(dev, text, options);
    snprintf(path, sizeof path, "%s/%s-%016llx.bin", dir, name, (unsigned long long)key);

    if (dir[0]) {
        size_t n = 0;
        unsigned char *bin = cache_read(path, key, &n);
        if (bin) {
            const unsigned char *bins[1] = {bin};
            cl_int bin_status = CL_SUCCESS;
            cl_program prog = clCreateProgramWithBinary(ctx, 1, &dev, &n, bins, &bin_status, &err);
            free(bin);
            if (err == CL_SUCCESS && bin_status == CL_SUCCESS &&
                clBuildProgram(prog, 1, &dev, options, NULL, NULL) == CL_SUCCESS) {
                *out = prog;
                *from_cache = 1;
                return DATTN_OK;
            }
            if (prog)
                clReleaseProgram(prog);
            dattn_log(DATTN_LOG_WARN, "opencl: cached binary '%s' was rejected; rebuilding", path);
        }
    }

    const size_t len = strlen(text);
    cl_program prog = clCreateProgramWithSource(ctx, 1, &text, &len, &err);
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clCreateProgramWithSource('%s'): %s", name,
                          cl_error_name(err));
    err = clBuildProgram(prog, 1, &dev, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        st = build_failed(prog, dev, name, err);
        clReleaseProgram(prog);
        return st;
    }
    if (dir[0]) {
        size_t n = 0;
        unsigned char *bin = program_binary(prog, &n);
        if (bin)
            cache_write(dir, path, key, bin, n);
        free(bin);
    }
    *out = prog;
    return DATTN_OK;
}

const char *cl_source_text(const char *name)
{
    for (int i = 0; i < cl_n_sources; i++)
        if (!strcmp(cl_sources[i].name, name))
            return cl_sources[i].text;
    return NULL;
}

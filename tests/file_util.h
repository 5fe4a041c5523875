/* File helpers of the save/restore and write-failure tests, written from the file formats and
 * POSIX alone (sharing nothing with src/): whole-file read and write, the cache file's header
 * offsets and its FNV-1a 64 checksum (so a test can edit one field and re-seal the file, leaving
 * only the field check to refuse it), a device node that must survive a failed write (needs
 * _XOPEN_SOURCE >= 500), a write made to fail (RLIMIT_FSIZE), and a count of a directory's
 * entries (no temporary left behind). Header-only; plain C, the callers assert. */
#ifndef DATTN_TESTS_FILE_UTIL_H
#define DATTN_TESTS_FILE_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- whole files ---------------------------------------------------------------------------- */

/* The file's bytes (malloc'd, one spare byte), or NULL when it cannot be read. */
static inline uint8_t *fu_read(const char *path, size_t *n)
{
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *b = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = 2 * cap + 8192;
            uint8_t *nb = realloc(b, cap);
            if (!nb) {
                free(b);
                fclose(f);
                return NULL;
            }
            b = nb;
        }
        size_t got = fread(b + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    *n = len;
    return b;
}

/* 0 on success. */
static inline int fu_write(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(b, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* ---- the cache file (DATTNKV) --------------------------------------------------------------- *
 * "DATTNKV\0", 14 little-endian u32 fields, the n_past of each layer slot as i64, the pages, and
 * an FNV-1a 64 checksum of every byte before it. */

enum {
    FU_KV_VERSION, FU_KV_MODEL_DIM, FU_KV_N_HEADS, FU_KV_N_KV_HEADS, FU_KV_HEAD_DIM,
    FU_KV_N_LAYERS, FU_KV_KV_TYPE, FU_KV_POLICY, FU_KV_N_CTX, FU_KV_N_SINK, FU_KV_MAX_BATCH,
    FU_KV_PAGE_LEN, FU_KV_MODEL_LO, FU_KV_MODEL_HI, FU_KV_N_FIELDS
};
/* What the restore message names for each field. */
static const char *const fu_kv_field_word[FU_KV_N_FIELDS] = {
    "version", "model_dim", "n_heads", "n_kv_heads", "head_dim", "n_layers", "kv_type",
    "policy", "n_ctx", "n_sink", "max_batch", "page_len", "another model", "another model",
};

static inline size_t fu_kv_field_at(int i) { return 8 + 4 * (size_t)i; }
static inline size_t fu_kv_n_past_at(int slot) { return 8 + 4 * FU_KV_N_FIELDS + 8 * (size_t)slot; }

static inline uint32_t fu_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void fu_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t fu_get_u64(const uint8_t *p)
{
    return (uint64_t)fu_get_u32(p) | (uint64_t)fu_get_u32(p + 4) << 32;
}
static inline void fu_put_u64(uint8_t *p, uint64_t v)
{
    fu_put_u32(p, (uint32_t)v);
    fu_put_u32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t fu_fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Rewrites the trailing checksum of a cache file image of n bytes after an edit. */
static inline void fu_kv_reseal(uint8_t *b, size_t n)
{
    fu_put_u64(b + n - 8, fu_fnv1a64(b, n - 8));
}

/* 1 when the trailing checksum matches (the file as saved). */
static inline int fu_kv_sealed(const uint8_t *b, size_t n)
{
    return n >= 16 && fu_get_u64(b + n - 8) == fu_fnv1a64(b, n - 8);
}

/* ---- devices and directories ---------------------------------------------------------------- */

#if defined(_XOPEN_SOURCE) && _XOPEN_SOURCE >= 500   /* mknod */
/* 1 when path is still the character device rdev (/dev/full, /dev/null: st_rdev of a stat taken
 * before the test). When it is gone or was replaced (the bug under test), puts the device back
 * (as root) so the machine keeps it, and returns 0. */
static inline int fu_char_device_intact(const char *path, dev_t rdev)
{
    struct stat sb;
    if (lstat(path, &sb) == 0 && S_ISCHR(sb.st_mode) && sb.st_rdev == rdev)
        return 1;
    if (geteuid() == 0) {
        if (lstat(path, &sb) == 0)
            unlink(path);
        if (mknod(path, S_IFCHR | 0666, rdev) == 0)
            chmod(path, 0666);
    }
    return 0;
}
#endif

/* Entries of a directory other than "." and "..", or -1. */
static inline int fu_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Removes every entry of a (flat) directory, then the directory. */
static inline void fu_rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    char p[1024];
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

/* A fresh private directory under $TMPDIR (or /tmp) into buf; 0 on success. */
static inline int fu_tmp_dir(char *buf, size_t n, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/dattn_%s_XXXXXX", dir && *dir ? dir : "/tmp", tag);
    return mkdtemp(buf) ? 0 : -1;
}

/* Runs fn(arg) with files unable to grow past limit bytes (the soft RLIMIT_FSIZE, SIGXFSZ
 * ignored so that a write past it fails with EFBIG instead of killing the process), then puts
 * both back. In-process, so the library's threads stay as they are. Returns fn's value, or -1
 * when the limit cannot be set. Nothing else should write files meanwhile. */
static inline int fu_with_fsize_limit(int (*fn)(void *), void *arg, rlim_t limit)
{
    struct rlimit old;
    if (getrlimit(RLIMIT_FSIZE, &old) != 0 ||
        (old.rlim_max != RLIM_INFINITY && old.rlim_max < limit))
        return -1;
    struct sigaction ign, prev;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGXFSZ, &ign, &prev) != 0)
        return -1;
    struct rlimit rl = {limit, old.rlim_max};
    int rc = -1;
    if (setrlimit(RLIMIT_FSIZE, &rl) == 0) {
        rc = fn(arg);
        setrlimit(RLIMIT_FSIZE, &old);
    }
    sigaction(SIGXFSZ, &prev, NULL);
    return rc;
}

#endif

/* Output files that are replaced whole or not at all (see file_replace.h): a temporary next to
 * the target, flushed, synced and renamed over it on success, removed on failure. Used by the
 * safetensors writer and the cache/session save (DESIGN §7: a failure leaves what was there). */
#define _XOPEN_SOURCE 700   /* realpath */
#include "file_replace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "status.h"

/* A copy of s in library memory (NULL and a NOMEM message on failure). */
static char *copy_str(const char *s, const char *what)
{
    size_t n = strlen(s) + 1;
    char *p = dattn_alloc(n, what);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void release(file_replace *fr)
{
    dattn_free(fr->target);
    dattn_free(fr->tmp);
    fr->target = fr->tmp = NULL;
    fr->f = NULL;
}

/* Sets the message first (it names fr->target), then cleans up. */
static dattn_status io_fail(file_replace *fr, const char *what, int err)
{
    dattn_status st = dattn_fail(DATTN_E_IO, "%s '%.400s': %s", what, fr->target,
                                 strerror(err ? err : EIO));
    file_replace_abort(fr);
    return st;
}

/* Best effort: the rename lasts once the directory is on disk (not every file system syncs a
 * directory; nothing to report then). */
static void sync_dir(const char *target)
{
    const char *slash = strrchr(target, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == target)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - target) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - target), target);
    else
        return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

/* Write `path` itself: for targets that must not be replaced (devices, FIFOs, dangling links). */
static dattn_status open_direct(file_replace *fr, const char *path)
{
    fr->target = copy_str(path, "output path");
    if (!fr->target)
        return DATTN_E_NOMEM;
    fr->f = fopen(path, "wb");
    if (!fr->f) {
        int err = errno;
        release(fr);
        return dattn_fail(DATTN_E_IO, "cannot open '%.400s' for writing: %s", path, strerror(err));
    }
    return DATTN_OK;
}

/* Names differ per call and process; O_EXCL makes a clash harmless (the next name is tried). */
static uint64_t name_bits(void)
{
    static atomic_uint_fast64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t z = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 42 ^
                 atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

dattn_status file_replace_open(file_replace *fr, const char *path)
{
    if (!fr || !path || !*path)
        return dattn_fail(DATTN_E_INVALID_ARG, "file_replace_open: NULL or empty path");
    memset(fr, 0, sizeof *fr);

    /* A symlink: replace the file it points to (the link stays a link). */
    const char *target = path;
    char *resolved = NULL;
    struct stat sb;
    if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        resolved = realpath(path, NULL);
        if (!resolved) {
            if (errno == ENOENT)
                return open_direct(fr, path);   /* dangling: fopen creates what it names */
            return dattn_fail(DATTN_E_IO, "cannot resolve the link '%.400s': %s", path,
                              strerror(errno));
        }
        target = resolved;
    }
    int have_old = 0;
    if (stat(target, &sb) == 0) {
        if (!S_ISREG(sb.st_mode)) {
            free(resolved);
            return open_direct(fr, path);
        }
        /* The old file's permissions decide, as they would for fopen. */
        if (access(target, W_OK) != 0) {
            int err = errno;
            free(resolved);
            return dattn_fail(DATTN_E_IO, "cannot write '%.400s': %s", path, strerror(err));
        }
        have_old = 1;
    } else if (errno != ENOENT) {
        int err = errno;
        free(resolved);
        return dattn_fail(DATTN_E_IO, "cannot create '%.400s': %s", path, strerror(err));
    }

    fr->target = copy_str(target, "output path");
    free(resolved);
    if (!fr->target)
        return DATTN_E_NOMEM;
    /* "<dir>/.<name>.<12 letters>" (a long name gets ".dattn-<12 letters>" so it fits NAME_MAX). */
    const char *slash = strrchr(fr->target, '/');
    size_t dir_len = slash ? (size_t)(slash - fr->target) + 1 : 0;
    const char *base = fr->target + dir_len;
    if (strlen(base) > 200)
        base = "dattn";
    size_t cap = dir_len + strlen(base) + 16;
    fr->tmp = dattn_alloc(cap, "temporary path");
    if (!fr->tmp) {
        release(fr);
        return DATTN_E_NOMEM;
    }
    int fd = -1;
    for (int attempt = 0; fd < 0; attempt++) {
        static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        uint64_t bits = name_bits();
        char tail[13];
        for (int i = 0; i < 12; i++, bits /= 62)
            tail[i] = letters[bits % 62];
        tail[12] = '\0';
        snprintf(fr->tmp, cap, "%.*s.%s.%s", (int)dir_len, fr->target, base, tail);
        /* 0666 less the umask for a new file, as fopen gives; the old file's bits below. */
        fd = open(fr->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, have_old ? 0600 : 0666);
        if (fd < 0 && (errno != EEXIST || attempt >= 100)) {
            int err = errno;
            dattn_free(fr->tmp);
            fr->tmp = NULL;   /* nothing of ours to remove */
            dattn_status st = dattn_fail(DATTN_E_IO, "cannot create a temporary file next to "
                                         "'%.400s': %s", path, strerror(err));
            release(fr);
            return st;
        }
    }
    if (have_old) {
        /* Best effort: the owner (root replacing a user's file) only where allowed, then the
         * mode (after the owner, which may clear set-id bits). A failure keeps 0600. */
        if (sb.st_uid != geteuid() || sb.st_gid != getegid())
            (void)!fchown(fd, sb.st_uid, sb.st_gid);
        (void)!fchmod(fd, sb.st_mode & 07777);
    }
    fr->f = fdopen(fd, "wb");
    if (!fr->f) {
        int err = errno;
        close(fd);
        unlink(fr->tmp);
        release(fr);
        return dattn_fail(DATTN_E_IO, "cannot open a temporary file next to '%.400s': %s", path,
                          strerror(err));
    }
    return DATTN_OK;
}

void file_replace_abort(file_replace *fr)
{
    if (!fr)
        return;
    if (fr->f)
        fclose(fr->f);
    fr->f = NULL;
    if (fr->tmp)
        unlink(fr->tmp);
    release(fr);
}

dattn_status file_replace_commit(file_replace *fr)
{
    if (!fr || !fr->f)
        return dattn_fail(DATTN_E_INVALID_ARG, "file_replace_commit: the file is not open");
    int err = errno;   /* what a failed fwrite just before left */
    if (ferror(fr->f))
        return io_fail(fr, "writing", err);
    if (fflush(fr->f) != 0)
        return io_fail(fr, "writing", errno);
    if (fr->tmp && fsync(fileno(fr->f)) != 0)
        return io_fail(fr, "writing", errno);
    FILE *f = fr->f;
    fr->f = NULL;
    if (fclose(f) != 0)
        return io_fail(fr, "writing", errno);
    if (fr->tmp) {
        if (rename(fr->tmp, fr->target) != 0)
            return io_fail(fr, "cannot replace", errno);
        dattn_free(fr->tmp);
        fr->tmp = NULL;
        sync_dir(fr->target);
    }
    release(fr);
    return DATTN_OK;
}

/* Memory truth (DESIGN §6): the bytes a loaded model says its weights hold
 * (dattn_model_info.weight_bytes, what `dattn plan` and `:stats` print) against what the process
 * really grew by, read from /proc/self/statm around dattn_model_load_params, for the weights as
 * stored (the mapped file's pages, which the loader's checks touch) and converted to f32, f16,
 * bf16, q8_0 and q4_0 (the converted copies; the file's pages handed back), and of the file
 * dattn_model_quantize writes (q8_0 rows mapped in place, or, on a CPU whose GEMV reads them
 * interleaved, copied so and the file's pages handed back: src/cpu/interleave.h). A random
 * 40 MB F16 model on the CPU backend, each load in a child process of its own; the growth must
 * be within 5% + 1 MiB of weight_bytes. Linux only (exit 77 elsewhere). DATTN_TEST_SEED replays
 * the model. */
#define _DEFAULT_SOURCE   /* madvise, fileno */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <cmocka.h>

#include "dattn.h"
#include "model_util.h"
#include "rss_util.h"
#include "test_util.h"

static char g_path[300];
static dattn_backend *g_be;

/* In a child process of its own, so that no memory an earlier load freed (and the allocator
 * kept) hides the growth: 0 when the growth matches weight_bytes. */
static char g_packed[320];   /* the model as `dattn quantize --type q8_0` writes it */

static int measure(int convert, dattn_dtype weights, const char *name)
{
    dattn_model_params p = {convert, weights};
    const char *path = strcmp(name, "packed q8_0") ? g_path : g_packed;
    dattn_model *m = NULL;
    /* A first load of the same kind and free, so that the code and small tables a load faults
     * in (and, under qemu-user, its translated code) are resident before the measured one; with
     * glibc's threshold for mmap fixed, freed weights go back to the kernel instead of staying in
     * the heap for the second load to reuse. */
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
    if (dattn_model_load_params(g_be, path, &p, &m) == DATTN_OK)
        dattn_model_free(m);
    m = NULL;
    long long before = rss_bytes();
    if (dattn_model_load_params(g_be, path, &p, &m) != DATTN_OK) {
        printf("test_memory: load %s: %s\n", name, dattn_last_error());
        return 1;
    }
    long long grew = rss_bytes() - before;
    dattn_model_info info;
    dattn_model_get_info(m, &info);
    double held = (double)info.weight_bytes, slack = 0.05 * held + 1048576;
    int ok = grew >= held - slack && grew <= held + slack;
    printf("test_memory: %s weights %-9s weight_bytes %10llu, the process grew by %10lld bytes "
           "(%.3fx; allowed within %.0f)\n", ok ? "ok  " : "FAIL", name,
           (unsigned long long)info.weight_bytes, grew, grew / held, slack);
    fflush(stdout);
    dattn_model_free(m);
    return !ok;
}

static void check_format(int convert, dattn_dtype weights, const char *name)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(measure(convert, weights, name));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        print_error("weights %s: weight_bytes is not what the process holds (see above)\n", name);
        fail();
    }
}

/* 1 when handing a file's pages back (madvise MADV_DONTNEED, what the loader does after it
 * converted them) lowers the RSS here: qemu-user for 32-bit Arm, for one, ignores it. */
static int release_works(void)
{
    FILE *f = fopen(g_path, "rb");
    if (!f)
        return 0;
    size_t n = 16u << 20;
    void *p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fileno(f), 0);
    fclose(f);
    if (p == MAP_FAILED)
        return 0;
    volatile unsigned sum = 0;
    for (size_t i = 0; i < n; i += 4096)
        sum += ((const unsigned char *)p)[i];
    long long touched = rss_bytes();
    madvise(p, n, MADV_DONTNEED);
    long long released = rss_bytes();
    munmap(p, n);
    return touched - released > (long long)(n / 2);
}

static void test_weight_bytes_are_rss(void **state)
{
    (void)state;
    check_format(0, DATTN_DTYPE_F16, "as stored");
    check_format(0, DATTN_DTYPE_Q8_0, "packed q8_0");   /* as stored: the mapped file */
    if (!release_works()) {
        printf("test_memory: madvise(MADV_DONTNEED) does not lower the RSS here (qemu-user?): "
               "the converted formats are not measured\n");
        return;
    }
    check_format(1, DATTN_DTYPE_F32, "f32");
    check_format(1, DATTN_DTYPE_F16, "f16");
    check_format(1, DATTN_DTYPE_BF16, "bf16");
    check_format(1, DATTN_DTYPE_Q8_0, "q8_0");
    check_format(1, DATTN_DTYPE_Q4_0, "q4_0");
}

#if defined(__SANITIZE_ADDRESS__)
#  define UNDER_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define UNDER_ASAN 1
#  endif
#endif

int main(void)
{
#ifdef UNDER_ASAN
    printf("test_memory: AddressSanitizer's shadow memory and quarantine are part of the RSS: "
           "skipped\n");
    return 77;
#endif
    if (rss_bytes() < 0) {
        printf("test_memory: no /proc/self/statm here: skipped\n");
        return 77;
    }
    tu_seed_case("test_memory");
    const char *tmp = getenv("TMPDIR");
    snprintf(g_path, sizeof g_path, "%s/dattn_test_memory_%ld.safetensors",
             tmp && *tmp ? tmp : "/tmp", (long)getpid());
    /* 20M parameters: dim 512, 4 layers, ffn 1408 (every row whole q8_0 / q4_0 blocks). */
    tm_config c = {512, 4, 8, 4, 8192, 1408, 0, DATTN_DTYPE_F16};
    if (tm_make(&c, g_path) != 0) {
        printf("test_memory: cannot write %s\n", g_path);
        return 1;
    }
    snprintf(g_packed, sizeof g_packed, "%s.q8_0", g_path);
    if (dattn_model_quantize(g_path, g_packed, DATTN_DTYPE_Q8_0) != DATTN_OK) {
        printf("test_memory: cannot quantize %s: %s\n", g_path, dattn_last_error());
        remove(g_path);
        return 1;
    }
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = DATTN_BACKEND_CPU;
    bp.n_threads = 1;
    if (dattn_backend_create(&bp, &g_be) != DATTN_OK) {
        remove(g_path);
        remove(g_packed);
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_weight_bytes_are_rss)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dattn_backend_free(g_be);
    remove(g_path);
    remove(g_packed);
    return rc;
}

/* The region allocator of src/alloc.h (the CPU backend's copies of a model's weights in one run
 * of huge pages): blocks of random sizes (seeded) are aligned, zeroed and disjoint; closing hands
 * back the memory past the last block and keeps the blocks' bytes; the region's address space
 * goes when it is closed and every block released, in either order; an injected failure is a
 * DATTN_E_NOMEM that leaves the region as it was. Then whole models: two loads on one backend
 * each with a region of its own, freed in either order, give the logits of a load alone, bit for
 * bit. Where the platform has no regions (not Linux, 32-bit) the allocator cases skip. */
#define _DEFAULT_SOURCE   /* mincore */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cmocka.h>

#include "alloc.h"
#include "dattn.h"
#include "model_util.h"
#include "rss_util.h"
#include "status.h"
#include "test_util.h"

static dattn_region *open_or_skip(void)
{
    dattn_region *r = dattn_region_open();
    if (!r) {
        printf("test_region: no regions on this platform (blocks are allocated one by one)\n");
        skip();
    }
    return r;
}

/* 1 while the page at p is mapped (mincore fails with ENOMEM on an unmapped page). */
static int mapped(const void *p)
{
#if defined(__linux__)
    unsigned char v;
    void *page = (void *)((uintptr_t)p & ~(uintptr_t)4095);
    return mincore(page, 4096, &v) == 0 || errno != ENOMEM;
#else
    (void)p;
    return 1;
#endif
}

static uint8_t pattern(int block, size_t i) { return (uint8_t)(block * 131 + i * 7 + 1); }

static void test_blocks(void **state)
{
    (void)state;
    tu_seed_case("blocks");
    dattn_region *r = open_or_skip();
    enum { N = 40 };
    size_t sizes[N];
    uint8_t *blocks[N];
    /* Edges first (a byte, a line, a 4 KiB page, around 2 MiB), then random sizes up to 3 MiB. */
    const size_t edge[] = {1, 63, 64, 65, 4095, 4096, (2u << 20) - 1, 2u << 20, (2u << 20) + 1};
    int n_edge = (int)(sizeof edge / sizeof edge[0]);
    for (int b = 0; b < N; b++) {
        sizes[b] = b < n_edge ? edge[b] : (size_t)tu_int(1, 3 << 20);
        assert_true(dattn_region_fits(r, sizes[b]));
        blocks[b] = dattn_region_alloc(r, sizes[b], "test block");
        assert_non_null(blocks[b]);
        assert_int_equal((uintptr_t)blocks[b] % 64, 0);
        for (size_t i = 0; i < sizes[b]; i++)
            if (blocks[b][i]) {
                print_error("block %d (%zu bytes) byte %zu is %d, not 0\n", b, sizes[b], i,
                            blocks[b][i]);
                fail();
            }
        for (size_t i = 0; i < sizes[b]; i++)
            blocks[b][i] = pattern(b, i);
    }
    /* Disjoint: every block still holds its own bytes after all were written. */
    for (int b = 0; b < N; b++)
        for (size_t i = 0; i < sizes[b]; i++)
            if (blocks[b][i] != pattern(b, i)) {
                print_error("block %d byte %zu was overwritten\n", b, i);
                fail();
            }
    assert_false(dattn_region_fits(r, SIZE_MAX / 2));
    dattn_region_close(r);
    assert_false(dattn_region_fits(r, 1));   /* closed: no more blocks */
    for (int b = 0; b < N; b++)             /* the bytes outlive the close */
        for (size_t i = 0; i < sizes[b]; i++)
            if (blocks[b][i] != pattern(b, i)) {
                print_error("block %d byte %zu changed when the region was closed\n", b, i);
                fail();
            }
    for (int b = 0; b < N; b++)
        dattn_region_release(r);
    assert_false(mapped(blocks[0]));
}

/* A block's memory is resident, what lies past the last block is not once the region closes
 * (with huge pages, the last one was faulted whole: up to 2 MiB more before the close). */
static void test_close_hands_back_tail(void **state)
{
    (void)state;
    tu_seed_case("close_hands_back_tail");
    if (rss_bytes() < 0)
        skip();
    dattn_region *r = open_or_skip();
    size_t bytes = ((size_t)4 << 20) + (size_t)tu_int(4096, 1 << 20);
    long long before = rss_bytes();
    uint8_t *p = dattn_region_alloc(r, bytes, "test block");
    assert_non_null(p);
    for (size_t i = 0; i < bytes; i++)
        p[i] = pattern(3, i);
    dattn_region_close(r);
    long long grew = rss_bytes() - before;
    printf("test_region: a block of %zu bytes; the process grew by %lld once the region closed\n",
           bytes, grew);
    assert_true(grew >= (long long)bytes - 65536);
    assert_true(grew <= (long long)bytes + 262144);
    for (size_t i = 0; i < bytes; i++)
        if (p[i] != pattern(3, i)) {
            print_error("byte %zu changed when the tail was handed back\n", i);
            fail();
        }
    dattn_region_release(r);
    assert_false(mapped(p));
}

/* Released before the close, or closed before the release: the region goes at the second. */
static void test_lifetime(void **state)
{
    (void)state;
    for (int order = 0; order < 2; order++) {
        dattn_region *r = open_or_skip();
        uint8_t *a = dattn_region_alloc(r, 1000, "test block");
        uint8_t *b = dattn_region_alloc(r, 3000, "test block");
        assert_non_null(a);
        assert_non_null(b);
        assert_true(b >= a + 1000);
        a[999] = b[2999] = 7;
        dattn_region_release(r);
        if (order == 0) {
            dattn_region_release(r);
            assert_true(mapped(a));   /* still open: it may hand out more */
            dattn_region_close(r);
        } else {
            dattn_region_close(r);
            assert_true(mapped(b) && b[2999] == 7);
            dattn_region_release(r);
        }
        assert_false(mapped(a));
    }
    /* Closed with nothing ever handed out: it goes at once. */
    dattn_region_close(open_or_skip());
}

static void test_injected_failure(void **state)
{
    (void)state;
    dattn_region *r = open_or_skip();
    alloc_fail_at(1);
    dattn_clear_error();
    assert_null(dattn_region_alloc(r, 100, "test block"));
    assert_non_null(strstr(dattn_last_error(), "test block"));
    /* Nothing was taken: the next block is the region's first, and one release ends it. */
    uint8_t *p = dattn_region_alloc(r, 100, "test block");
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % ((uintptr_t)2 << 20), 0);
    dattn_region_close(r);
    assert_true(mapped(p));
    dattn_region_release(r);
    assert_false(mapped(p));
}

#define SENTINEL_MODEL ((dattn_model *)(uintptr_t)1)

/* Logits of `tokens` from a fresh session on m. */
static void logits_of(dattn_model *m, const int32_t *tokens, int n, float *out)
{
    dattn_model_info info;
    dattn_model_get_info(m, &info);
    dattn_cache_params cp = dattn_cache_default_params();
    cp.n_layers = info.n_layers;
    cp.n_ctx = 32;
    cp.max_batch = 8;
    dattn_session *s = NULL;
    TU_OK(dattn_session_create(m, &cp, NULL, 0, &s), "session");
    for (int i = 0; i < n; i++)   /* one at a time: the decode path */
        TU_OK(dattn_session_eval(s, tokens + i, 1, out + (size_t)i * info.vocab_size, 0), "eval");
    dattn_session_free(s);
}

/* Two models on one backend: each load's copies in a region of its own (on a CPU whose GEMV
 * reads q4_0 / q8_0 interleaved; elsewhere the backend borrows and this checks the same logits
 * the same way). */
static void test_two_models(void **state)
{
    (void)state;
    tu_seed_case("two_models");
    char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/dattn_test_region_%ld.safetensors", dir && *dir ? dir : "/tmp",
             (long)getpid());
    tm_config c = {.dim = 64, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .vocab = 260,
                   .ffn = 128, .tie = 0, .dtype = DATTN_DTYPE_F32};
    assert_int_equal(tm_make(&c, path), 0);
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    const dattn_dtype formats[] = {DATTN_DTYPE_Q4_0, DATTN_DTYPE_Q8_0};
    enum { T = 5 };
    int32_t tokens[T];
    for (int i = 0; i < T; i++)
        tokens[i] = tu_int(0, c.vocab - 1);
    size_t n = (size_t)T * (size_t)c.vocab;
    float *alone = malloc(sizeof(float) * n), *first = malloc(sizeof(float) * n),
          *second = malloc(sizeof(float) * n);
    assert_true(alone && first && second);
    for (int f = 0; f < 2; f++)
        for (int order = 0; order < 2; order++) {
            dattn_model_params p = {1, formats[f]};
            dattn_model *a = NULL, *b = NULL;
            TU_OK(dattn_model_load_params(be, path, &p, &a), "model");
            logits_of(a, tokens, T, alone);
            dattn_model_free(a);
            TU_OK(dattn_model_load_params(be, path, &p, &a), "first model");
            TU_OK(dattn_model_load_params(be, path, &p, &b), "second model");
            dattn_model_free(order ? a : b);
            logits_of(order ? b : a, tokens, T, order ? second : first);
            dattn_model_free(order ? b : a);
            if (memcmp(alone, order ? second : first, sizeof(float) * n)) {
                print_error("%s: the %s of two models gives other logits than a model alone\n",
                            tu_dtype_name(formats[f]), order ? "second" : "first");
                fail();
            }
        }
    /* A load that fails at any of its allocations (its region's blocks among them) fails with
     * DATTN_E_NOMEM and leaves nothing behind (LeakSanitizer, in the sanitizer build), and the
     * next load is whole. */
    dattn_model_params p = {1, DATTN_DTYPE_Q4_0};
    dattn_model *m = NULL;
    long c0 = alloc_count();
    TU_OK(dattn_model_load_params(be, path, &p, &m), "model");
    long count = alloc_count() - c0;
    logits_of(m, tokens, T, alone);
    dattn_model_free(m);
    for (long k = 1; k <= count; k++) {
        m = SENTINEL_MODEL;
        alloc_fail_at(k);
        dattn_status st = dattn_model_load_params(be, path, &p, &m);
        alloc_fail_at(0);
        if (st != DATTN_E_NOMEM || m != NULL) {
            print_error("allocation %ld of %ld failed: status %d, model %p (%s)\n", k, count,
                        (int)st, (void *)m, dattn_last_error());
            fail();
        }
    }
    TU_OK(dattn_model_load_params(be, path, &p, &m), "model after the failures");
    logits_of(m, tokens, T, first);
    dattn_model_free(m);
    assert_memory_equal(first, alone, sizeof(float) * n);
    free(alone);
    free(first);
    free(second);
    dattn_backend_free(be);
    remove(path);
}

int main(void)
{
    tu_init_seed("test_region");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_close_hands_back_tail),
        cmocka_unit_test(test_lifetime),
        cmocka_unit_test(test_injected_failure),
        cmocka_unit_test(test_two_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

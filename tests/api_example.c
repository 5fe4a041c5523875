/* The README's API example as a program: a layer from memory, a cache in the caller's own
 * buffer, prefill, decode, save and restore. Built by the suite against the static library and
 * by CI against the installed one through pkg-config, so the documented usage keeps compiling.
 * Exit 0 when every call succeeds and decoding after a restore repeats the original. */
#include <dattn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

#define CHECK(call)                                                                              \
    do {                                                                                         \
        dattn_status st_ = (call);                                                               \
        if (st_ != DATTN_OK) {                                                                   \
            fprintf(stderr, "%s: %s: %s\n", #call, dattn_status_name(st_), dattn_last_error());  \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

int main(int argc, char **argv)
{
    const char *session = argc > 1 ? argv[1] : "api_example.kv";
    dattn_layer_shape shape = dattn_layer_default_shape();
    shape.model_dim = 128;
    shape.n_heads = 4;
    shape.n_kv_heads = 2;
    shape.layer_index = 3;
    int E = shape.model_dim, kv = E / 2, d = E / shape.n_heads / 2;

    unsigned seed = 12345;
    size_t n_w = 2 * (size_t)E * E + 2 * (size_t)kv * E + 6 * (size_t)d;
    float *w = malloc(sizeof(float) * n_w);
    for (size_t i = 0; i < n_w; i++)
        w[i] = frand(&seed) / sqrtf((float)E);
    dattn_layer_weights lw = {.dtype = DATTN_DTYPE_F32};
    float *p = w;
    lw.q_proj = p, p += (size_t)E * E;
    lw.k_proj = p, p += (size_t)kv * E;
    lw.v_proj = p, p += (size_t)kv * E;
    lw.out_proj = p, p += (size_t)E * E;
    lw.lambda_q1 = p, p += d;
    lw.lambda_k1 = p, p += d;
    lw.lambda_q2 = p, p += d;
    lw.lambda_k2 = p, p += d;
    lw.subln = p;

    dattn_backend *be;
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = DATTN_BACKEND_CPU;   /* a caller-owned arena is host memory: the CPU backend */
    CHECK(dattn_backend_create(&bp, &be));
    dattn_layer *layer;
    CHECK(dattn_layer_create(be, &shape, &lw, &layer));
    free(w);

    dattn_cache_params cp = dattn_cache_default_params();
    cp.n_ctx = 256;
    cp.kv_type = DATTN_KV_F16;
    size_t need;
    CHECK(dattn_cache_arena_bytes(be, &shape, &cp, &need));
    void *arena = malloc(need);
    dattn_cache *cache;
    CHECK(dattn_cache_create(be, &shape, &cp, arena, need, &cache));

    enum { PROMPT = 40, MORE = 8 };
    float *x = malloc(sizeof(float) * (PROMPT + MORE) * E), *y = malloc(sizeof(float) * (PROMPT + MORE) * E);
    float y_again[MORE][128];
    for (int i = 0; i < (PROMPT + MORE) * E; i++)
        x[i] = frand(&seed);
    CHECK(dattn_layer_prefill(layer, cache, 0, 0, x, PROMPT, y));
    CHECK(dattn_cache_save(cache, session));
    for (int t = PROMPT; t < PROMPT + MORE; t++)
        CHECK(dattn_layer_decode(layer, cache, 0, t, x + (size_t)t * E, y + (size_t)t * E));

    CHECK(dattn_cache_reset(cache));
    CHECK(dattn_cache_restore(cache, session));
    for (int t = PROMPT; t < PROMPT + MORE; t++)
        CHECK(dattn_layer_decode(layer, cache, 0, t, x + (size_t)t * E, y_again[t - PROMPT]));
    int same = memcmp(y_again, y + (size_t)PROMPT * E, sizeof y_again) == 0;
    printf("%s; decode after restore %s\n", dattn_backend_describe(be),
           same ? "repeats the original" : "DIFFERS");
    remove(session);
    dattn_cache_free(cache);
    free(arena);
    dattn_layer_free(layer);
    dattn_backend_free(be);
    free(x);
    free(y);
    return same ? 0 : 1;
}

/* The README's whole-model example as a program: load a checkpoint, make a session with its own
 * arena, feed a prompt, sample a continuation token by token. Built by the suite and run on the
 * bundled model, so the documented usage keeps compiling and working.
 * usage: model_example MODEL.safetensors [PROMPT] */
#include <dattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (argc < 2) {
        fprintf(stderr, "usage: model_example MODEL.safetensors [PROMPT]\n");
        return 2;
    }
    const char *prompt = argc > 2 ? argv[2] : "The ";

    dattn_backend *be;
    dattn_backend_params bp = dattn_backend_default_params();   /* auto: an OpenCL GPU, else CPU */
    CHECK(dattn_backend_create(&bp, &be));
    dattn_model *model;
    CHECK(dattn_model_load(be, argv[1], &model));
    dattn_model_info info;
    CHECK(dattn_model_get_info(model, &info));

    dattn_cache_params cp = dattn_cache_default_params();      /* n_layers comes from the model */
    cp.n_ctx = 256;
    cp.kv_type = DATTN_KV_F16;
    dattn_session *session;                                      /* one per conversation */
    CHECK(dattn_session_create(model, &cp, NULL, 0, &session));

    int32_t ids[256];
    int n;
    CHECK(dattn_tokenize(model, prompt, strlen(prompt), ids, 256, &n));
    float *logits = malloc(sizeof(float) * (size_t)info.vocab_size);
    CHECK(dattn_session_eval(session, ids, n, logits, 0));       /* prefill: last token's logits */

    dattn_sampler *sampler;
    dattn_sampler_params sp = dattn_sampler_default_params();   /* temperature 0: greedy */
    CHECK(dattn_sampler_create(&sp, info.vocab_size, &sampler));
    printf("%s", prompt);
    for (int i = 0; i < 48; i++) {
        int32_t tok;
        char text[16];
        size_t len;
        CHECK(dattn_sample(sampler, logits, &tok));
        CHECK(dattn_token_bytes(model, tok, text, sizeof text, &len));
        fwrite(text, 1, len, stdout);
        CHECK(dattn_session_eval(session, &tok, 1, logits, 0));  /* one decode step */
    }
    printf("\n");

    free(logits);
    dattn_sampler_free(sampler);
    dattn_session_free(session);
    dattn_model_free(model);
    dattn_backend_free(be);
    return 0;
}

/* libFuzzer harness for the safetensors reader and its JSON parser (DESIGN §6): the input is a
 * whole file image, opened in memory (nothing touches the disk). Accepted files are read end to
 * end, so ASan catches any pointer handed out beyond the input. Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc tools/fuzz_safetensors.c \
 *         src/safetensors.c src/json.c src/status.c src/alloc.c -o fuzz_safetensors */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "json.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The parser alone, on the input as header text. */
    json_doc *doc = NULL;
    if (json_parse((const char *)data, size, &doc, NULL) == DATTN_OK)
        json_free(doc);

    st_file *f = NULL;
    if (st_open_memory(data, size, &f) != DATTN_OK)
        return 0;
    volatile unsigned char sink = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (st_find(f, t->name) != t)
            abort();                            /* names are unique: find must give this one */
        for (size_t b = 0; b < t->nbytes; b++)
            sink ^= ((const unsigned char *)t->data)[b];
        float *dst = malloc(t->n_elems * sizeof(float) + 1);
        if (dst) {
            st_to_f32(t, dst);
            free(dst);
        }
        st_expect(f, t->name, t->n_dims, t->shape, NULL);
    }
    st_meta(f, "embed_dim");
    st_close(f);
    (void)sink;
    return 0;
}

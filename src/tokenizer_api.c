/* The public tokenizer without a model (dattn.h, "tokenizers on their own"): a path is a
 * tokenizer.json, a directory holding one (or that directory's config.json), or a dattn
 * .safetensors model, whose __metadata__ names its tokenizer or, written by `dattn quantize` from
 * a Hugging Face directory, carries its tokenizer.json (only the header is read). */
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "meta.h"
#include "safetensors.h"
#include "status.h"
#include "tokenizer.h"

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

/* dir + "/" + file in a new string. */
static char *join(const char *dir, size_t dir_len, const char *file)
{
    size_t fl = strlen(file);
    char *p = dattn_alloc(dir_len + fl + 2, "tokenizer path");
    if (p) {
        memcpy(p, dir, dir_len);
        p[dir_len] = '/';
        memcpy(p + dir_len + 1, file, fl + 1);
    }
    return p;
}

static dattn_status load_safetensors(tokenizer *t, const char *path)
{
    st_file *f;
    dattn_status st = st_open(path, &f);
    if (st != DATTN_OK)
        return st;
    /* A file `dattn quantize` made of a Hugging Face directory carries its tokenizer files. */
    const char *json = st_meta(f, "dattn.tokenizer.json");
    if (json || st_meta(f, "dattn.config.json")) {
        const char *cfg = st_meta(f, "dattn.tokenizer_config.json");
        st = json ? tokenizer_load_texts(t, "dattn.tokenizer.json", json, strlen(json),
                                         "dattn.tokenizer_config.json", cfg,
                                         cfg ? strlen(cfg) : 0)
                  : dattn_fail(DATTN_E_FORMAT, "the model has no tokenizer.json (it takes token "
                               "ids only)");
        st_close(f);
        if (st != DATTN_OK)
            dattn_error_prefix("%s: ", path);
        return st;
    }
    long vocab;
    const char *name = st_meta(f, "tokenizer");
    st = meta_long(f, "vocab_size", 1, (long)1 << 30, 1, 0, &vocab);
    if (st == DATTN_OK)
        st = tokenizer_init(t, name ? name : "bytes", (int)vocab);
    st_close(f);
    if (st != DATTN_OK)
        dattn_error_prefix("%s: ", path);
    return st;
}

dattn_status dattn_tokenizer_load(const char *path, dattn_tokenizer **out)
{
    if (!path || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer_load: NULL argument");
    *out = NULL;
    dattn_tokenizer *tok = dattn_alloc(sizeof *tok, "tokenizer");
    if (!tok)
        return DATTN_E_NOMEM;
    struct stat sb;
    dattn_status st;
    char *json = NULL;
    int is_config = ends_with(path, "/config.json") || !strcmp(path, "config.json");
    if (!is_config && stat(path, &sb) != 0) {
        st = dattn_fail(DATTN_E_IO, "tokenizer: '%s' does not exist", path);
    } else if (is_config || S_ISDIR(sb.st_mode)) {
        /* the directory's tokenizer.json (config.json itself says nothing of the tokenizer) */
        size_t dir_len = is_config ? strlen(path) - strlen("config.json") : strlen(path);
        while (dir_len > 1 && path[dir_len - 1] == '/')
            dir_len--;
        json = dir_len ? join(path, dir_len, "") : join(".", 1, "");
        if (json)
            json[strlen(json) - 1] = '\0';   /* the directory without the trailing '/' */
        st = json ? tokenizer_load_dir(&tok->t, json) : DATTN_E_NOMEM;
    } else if (ends_with(path, ".safetensors")) {
        st = load_safetensors(&tok->t, path);
    } else {
        st = tokenizer_load_json(&tok->t, path);
    }
    dattn_free(json);
    if (st != DATTN_OK) {
        dattn_free(tok);
        return st;
    }
    *out = tok;
    return DATTN_OK;
}

void dattn_tokenizer_free(dattn_tokenizer *tok)
{
    if (!tok)
        return;
    tokenizer_free(&tok->t);
    dattn_free(tok);
}

dattn_status dattn_tokenizer_encode(const dattn_tokenizer *tok, const char *text, size_t len,
                                    int add_special, int32_t *ids, int max_ids, int *n_ids)
{
    if (!tok || (!text && len) || (!ids && max_ids) || max_ids < 0 || !n_ids)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer_encode: NULL or negative argument");
    return tokenizer_encode(&tok->t, text ? text : "", len, add_special != 0, ids, max_ids,
                            n_ids);
}

dattn_status dattn_tokenizer_token_bytes(const dattn_tokenizer *tok, int32_t id, char *buf,
                                         size_t cap, size_t *n)
{
    if (!tok || (!buf && cap) || !n)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer_token_bytes: NULL argument");
    return tok->t.token_bytes(&tok->t, id, buf, cap, n);
}

dattn_status dattn_tokenizer_decode(const dattn_tokenizer *tok, const int32_t *ids, int n_ids,
                                    char *buf, size_t cap, size_t *len)
{
    if (!tok || (!ids && n_ids) || n_ids < 0 || (!buf && cap) || !len)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer_decode: NULL or negative argument");
    return tokenizer_decode(&tok->t, ids, n_ids, buf, cap, len);
}

dattn_status dattn_tokenizer_vocab_size(const dattn_tokenizer *tok, int *n)
{
    if (!tok || !n)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer_vocab_size: NULL argument");
    *n = tok->t.vocab_size;
    return DATTN_OK;
}

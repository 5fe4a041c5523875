/* Loading a Hugging Face `diffllama` directory (DESIGN §1b): config.json parsed and every field
 * type-checked, the weights of model.safetensors or of the shards model.safetensors.index.json
 * names checked tensor by tensor, then re-laid out into dattn's diff heads (q heads j and j+H'/2,
 * KV heads p and p+K'/2, rotate_half RoPE as a row permutation, a weightless sub-norm). */
#include "hf_model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "bytes.h"
#include "convert.h"
#include "json.h"
#include "status.h"
#include "tokenizer.h"

enum { HF_MAX_JSON = 64 << 20, HF_MAX_SHARDS = 4096 };

/* The config's numbers, in HF's terms (H' = n_heads, K' = n_kv_heads, D = head_dim). */
typedef struct hf_config {
    int hidden, ffn, n_layers, n_heads, n_kv_heads, head_dim, vocab, max_pos, tie;
    double eps, theta;
    int llama3;
    double factor, low_freq, high_freq;
    int orig_max_pos;
} hf_config;

/* ---- files -------------------------------------------------------------------------------- */

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int hf_is_model_path(const char *path)
{
    if (!path)
        return 0;
    if (is_dir(path))
        return 1;
    const char *base = strrchr(path, '/');
    return !strcmp(base ? base + 1 : path, "config.json");
}

/* The whole of a small text file into *out (NUL-terminated); a missing file with absent given:
 * *absent = 1, *out NULL, DATTN_OK and no message. */
static dattn_status read_text(const char *path, const char *what, char **out, size_t *len,
                              int *absent)
{
    *out = NULL;
    if (absent)
        *absent = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (absent && errno == ENOENT) {
            *absent = 1;
            return DATTN_OK;
        }
        return dattn_fail(DATTN_E_IO, "%s: cannot open %s: %s", path, what, strerror(errno));
    }
    dattn_status st = DATTN_OK;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = dattn_fail(DATTN_E_IO, "%s: cannot read %s", path, what);
    } else if (n > HF_MAX_JSON) {
        st = dattn_fail(DATTN_E_FORMAT, "%s: %ld bytes, more than a %s may hold (%d MiB)", path,
                        n, what, HF_MAX_JSON >> 20);
    } else if (!(*out = dattn_alloc((size_t)n + 1, what))) {
        st = DATTN_E_NOMEM;
    } else if (fread(*out, 1, (size_t)n, f) != (size_t)n) {
        st = dattn_fail(DATTN_E_IO, "%s: short read of %s", path, what);
        dattn_free(*out);
        *out = NULL;
    } else {
        *len = (size_t)n;
    }
    fclose(f);
    return st;
}

/* ---- JSON access ------------------------------------------------------------------------- */

/* The value of member `key` of the object at toks[obj], or NULL. */
static const json_tok *member(const json_doc *doc, int obj, const char *key)
{
    const json_tok *o = &doc->toks[obj];
    int k = obj + 1;
    for (int i = 0; i < o->n; i++) {
        const json_tok *name = &doc->toks[k];
        if (!strcmp(name->str, key))
            return &doc->toks[k + 1];
        k = doc->toks[k + 1].end;
    }
    return NULL;
}

static int tok_index(const json_doc *doc, const json_tok *t)
{
    return (int)(t - doc->toks);
}

/* A value as text for messages: strings quoted, numbers as written, else the type. */
static const char *show(const json_tok *t, char *buf, size_t cap)
{
    if (t->type == JSON_STRING)
        snprintf(buf, cap, "\"%.60s\"", t->str);
    else if (t->type == JSON_NUMBER)
        snprintf(buf, cap, "%.*s", t->len < 60 ? (int)t->len : 60, t->str);
    else
        snprintf(buf, cap, "%s", json_type_name(t->type));
    return buf;
}

typedef struct cfg_ctx {
    const char *file;          /* "config.json" or "config.json: rope_scaling" for messages */
    const json_doc *doc;
    int obj;
} cfg_ctx;

static dattn_status bad_type(const cfg_ctx *c, const char *key, const json_tok *t,
                             const char *expected)
{
    char b[80];
    return dattn_fail(DATTN_E_FORMAT, "%s: %s is %s, expected %s", c->file, key,
                      show(t, b, sizeof b), expected);
}

/* An integer member in [lo, hi]; absent (or null when null_ok): fallback, or an error if
 * fallback < lo. */
static dattn_status get_int(const cfg_ctx *c, const char *key, long lo, long hi, long fallback,
                            int *out)
{
    const json_tok *t = member(c->doc, c->obj, key);
    if (!t || t->type == JSON_NULL) {
        if (fallback < lo)
            return dattn_fail(DATTN_E_FORMAT, "%s: %s is missing (an integer is required)",
                              c->file, key);
        *out = (int)fallback;
        return DATTN_OK;
    }
    /* An integer past int64 (the parse keeps it as text) is out of range, not a fraction. */
    bool huge = t->type == JSON_NUMBER && !t->is_int &&
                strspn(t->str, "-0123456789") == t->len;
    if (!huge && (t->type != JSON_NUMBER || !t->is_int))
        return bad_type(c, key, t, "an integer");
    if (huge || t->ival < lo || t->ival > hi) {
        char b[80];
        return dattn_fail(DATTN_E_UNSUPPORTED, "%s: %s is %s, outside %ld..%ld", c->file, key,
                          show(t, b, sizeof b), lo, hi);
    }
    *out = (int)t->ival;
    return DATTN_OK;
}

/* A finite positive number member; absent or null: fallback (< 0: required). */
static dattn_status get_pos(const cfg_ctx *c, const char *key, double fallback, double *out)
{
    const json_tok *t = member(c->doc, c->obj, key);
    if (!t || t->type == JSON_NULL) {
        if (fallback < 0)
            return dattn_fail(DATTN_E_FORMAT, "%s: %s is missing (a number is required)", c->file,
                              key);
        *out = fallback;
        return DATTN_OK;
    }
    if (t->type != JSON_NUMBER)
        return bad_type(c, key, t, "a number");
    char buf[64];
    size_t n = t->len < sizeof buf - 1 ? t->len : sizeof buf - 1;
    memcpy(buf, t->str, n);
    buf[n] = 0;
    double x = strtod(buf, NULL);
    if (!(x > 0) || !isfinite(x) || !isfinite((float)x) || (float)x == 0.0f)
        return dattn_fail(DATTN_E_UNSUPPORTED, "%s: %s is %s, expected a positive number within "
                          "the range of f32", c->file, key, buf);
    *out = x;
    return DATTN_OK;
}

static dattn_status get_bool(const cfg_ctx *c, const char *key, int fallback, int *out)
{
    const json_tok *t = member(c->doc, c->obj, key);
    if (!t || t->type == JSON_NULL)
        *out = fallback;
    else if (t->type == JSON_TRUE || t->type == JSON_FALSE)
        *out = t->type == JSON_TRUE;
    else
        return bad_type(c, key, t, "true or false");
    return DATTN_OK;
}

/* A string member; absent or null: fallback (NULL: required). */
static dattn_status get_str(const cfg_ctx *c, const char *key, const char *fallback,
                            const char **out)
{
    const json_tok *t = member(c->doc, c->obj, key);
    if (!t || t->type == JSON_NULL) {
        if (!fallback)
            return dattn_fail(DATTN_E_FORMAT, "%s: %s is missing (a string is required)", c->file,
                              key);
        *out = fallback;
        return DATTN_OK;
    }
    if (t->type != JSON_STRING)
        return bad_type(c, key, t, "a string");
    *out = t->str;
    return DATTN_OK;
}

/* bos_token_id / eos_token_id: null, an id or a list of ids, each within the vocabulary. */
static dattn_status get_ids(const cfg_ctx *c, const char *key, int vocab, int32_t *ids, int *n)
{
    *n = 0;
    const json_tok *t = member(c->doc, c->obj, key);
    if (!t || t->type == JSON_NULL)
        return DATTN_OK;
    int count = t->type == JSON_ARRAY ? t->n : 1;
    const json_tok *e = t->type == JSON_ARRAY ? t + 1 : t;
    if (t->type != JSON_ARRAY && t->type != JSON_NUMBER)
        return bad_type(c, key, t, "a token id or a list of token ids");
    if (count > MODEL_MAX_SPECIAL)
        return dattn_fail(DATTN_E_UNSUPPORTED, "%s: %s lists %d ids, this build keeps at most %d",
                          c->file, key, count, MODEL_MAX_SPECIAL);
    for (int i = 0; i < count; i++) {
        if (e->type != JSON_NUMBER || !e->is_int)
            return bad_type(c, key, e, "a token id (an integer)");
        if (e->ival < 0 || e->ival >= vocab)
            return dattn_fail(DATTN_E_FORMAT, "%s: %s %lld is outside the vocabulary 0..%d",
                              c->file, key, (long long)e->ival, vocab - 1);
        ids[i] = (int32_t)e->ival;
        e = &c->doc->toks[e->end];
    }
    *n = count;
    return DATTN_OK;
}

/* Members that would change the maths and that this build does not implement. */
static dattn_status refuse_unsupported(const cfg_ctx *c)
{
    static const char *const flags[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        int on = 0;
        dattn_status st = get_bool(c, flags[i], 0, &on);
        if (st != DATTN_OK)
            return st;
        if (on)
            return dattn_fail(DATTN_E_UNSUPPORTED, "%s: %s is true: biases are not supported",
                              c->file, flags[i]);
    }
    const json_tok *t = member(c->doc, c->obj, "partial_rotary_factor");
    if (t && t->type != JSON_NULL) {
        double f = 0;
        dattn_status st = get_pos(c, "partial_rotary_factor", 1.0, &f);
        if (st != DATTN_OK)
            return st;
        if (f != 1.0)
            return dattn_fail(DATTN_E_UNSUPPORTED, "%s: partial_rotary_factor is %g: only full "
                              "rotary embeddings (1.0) are supported", c->file, f);
    }
    return DATTN_OK;
}

/* rope_scaling (v4) or rope_parameters (v5): rope_type default or llama3. */
static dattn_status read_rope(const cfg_ctx *top, hf_config *hc)
{
    dattn_status st;
    if ((st = get_pos(top, "rope_theta", 10000.0, &hc->theta)) != DATTN_OK)
        return st;
    const char *field = "rope_parameters";
    const json_tok *t = member(top->doc, top->obj, field);
    if (!t || t->type == JSON_NULL) {
        field = "rope_scaling";
        t = member(top->doc, top->obj, field);
    }
    if (!t || t->type == JSON_NULL)
        return DATTN_OK;
    if (t->type != JSON_OBJECT)
        return bad_type(top, field, t, "an object");
    char file[64];
    snprintf(file, sizeof file, "%s: %s", top->file, field);
    cfg_ctx c = {file, top->doc, tok_index(top->doc, t)};
    if (!strcmp(field, "rope_parameters") &&
        (st = get_pos(&c, "rope_theta", hc->theta, &hc->theta)) != DATTN_OK)
        return st;
    const char *type = NULL, *key = "rope_type";
    if ((st = get_str(&c, key, "", &type)) != DATTN_OK)
        return st;
    if (!*type) {
        key = "type";
        if ((st = get_str(&c, key, "default", &type)) != DATTN_OK)
            return st;
    }
    if (!strcmp(type, "default"))
        return DATTN_OK;
    if (strcmp(type, "llama3") != 0)
        return dattn_fail(DATTN_E_UNSUPPORTED, "%s: %s is \"%.40s\": this build knows \"default\" "
                          "and \"llama3\"", file, key, type);
    hc->llama3 = 1;
    if ((st = get_pos(&c, "factor", -1, &hc->factor)) != DATTN_OK ||
        (st = get_pos(&c, "low_freq_factor", -1, &hc->low_freq)) != DATTN_OK ||
        (st = get_pos(&c, "high_freq_factor", -1, &hc->high_freq)) != DATTN_OK ||
        (st = get_int(&c, "original_max_position_embeddings", 1, INT32_MAX, 0,
                      &hc->orig_max_pos)) != DATTN_OK)
        return st;
    if (!(hc->high_freq > hc->low_freq))
        return dattn_fail(DATTN_E_FORMAT, "%s: high_freq_factor %g must exceed low_freq_factor %g",
                          file, hc->high_freq, hc->low_freq);
    return DATTN_OK;
}

static dattn_status read_config(dattn_model *m, const json_doc *doc, hf_config *hc)
{
    if (doc->toks[0].type != JSON_OBJECT)
        return dattn_fail(DATTN_E_FORMAT, "config.json: the top level is %s, expected an object",
                          json_type_name(doc->toks[0].type));
    cfg_ctx c = {"config.json", doc, 0};
    const char *s = "";
    dattn_status st;
    memset(hc, 0, sizeof *hc);
    if ((st = get_str(&c, "model_type", NULL, &s)) != DATTN_OK)
        return st;
    if (strcmp(s, "diffllama") != 0)
        return dattn_fail(DATTN_E_UNSUPPORTED, "config.json: model_type is \"%.40s\": dattn runs "
                          "\"diffllama\" (Differential Transformer) checkpoints only", s);
    if ((st = get_str(&c, "hidden_act", "silu", &s)) != DATTN_OK)
        return st;
    if (strcmp(s, "silu") != 0)
        return dattn_fail(DATTN_E_UNSUPPORTED, "config.json: hidden_act is \"%.40s\": only "
                          "\"silu\" (SwiGLU) is supported", s);
    if ((st = get_int(&c, "hidden_size", 1, 1 << 20, 0, &hc->hidden)) != DATTN_OK ||
        (st = get_int(&c, "intermediate_size", 1, 1 << 24, 0, &hc->ffn)) != DATTN_OK ||
        (st = get_int(&c, "num_hidden_layers", 1, 4096, 0, &hc->n_layers)) != DATTN_OK ||
        (st = get_int(&c, "num_attention_heads", 1, 1 << 16, 0, &hc->n_heads)) != DATTN_OK ||
        (st = get_int(&c, "num_key_value_heads", 1, 1 << 16, hc->n_heads, &hc->n_kv_heads)) !=
            DATTN_OK ||
        (st = get_int(&c, "head_dim", 1, 1 << 16,
                      hc->hidden >= hc->n_heads ? hc->hidden / hc->n_heads : 1, &hc->head_dim)) !=
            DATTN_OK ||
        (st = get_int(&c, "vocab_size", 1, 1 << 24, 0, &hc->vocab)) != DATTN_OK ||
        (st = get_int(&c, "max_position_embeddings", 1, INT32_MAX, 2048, &hc->max_pos)) !=
            DATTN_OK ||
        (st = get_pos(&c, "rms_norm_eps", 1e-5, &hc->eps)) != DATTN_OK ||
        (st = get_bool(&c, "tie_word_embeddings", 0, &hc->tie)) != DATTN_OK ||
        (st = refuse_unsupported(&c)) != DATTN_OK || (st = read_rope(&c, hc)) != DATTN_OK ||
        (st = get_ids(&c, "bos_token_id", hc->vocab, m->bos_ids, &m->n_bos)) != DATTN_OK ||
        (st = get_ids(&c, "eos_token_id", hc->vocab, m->eos_ids, &m->n_eos)) != DATTN_OK)
        return st;
    /* The shape dattn's layers can take after the re-layout (DESIGN §1b). */
    if (hc->n_heads % 2 != 0)
        return dattn_fail(DATTN_E_UNSUPPORTED, "config.json: num_attention_heads is %d: a "
                          "DiffLlama model pairs heads j and j + H/2, so it must be even",
                          hc->n_heads);
    if (hc->n_heads % hc->n_kv_heads != 0)
        return dattn_fail(DATTN_E_FORMAT, "config.json: num_attention_heads %d is not a multiple "
                          "of num_key_value_heads %d", hc->n_heads, hc->n_kv_heads);
    if (hc->head_dim % 2 != 0)
        return dattn_fail(DATTN_E_UNSUPPORTED, "config.json: head_dim %d is odd; RoPE needs pairs",
                          hc->head_dim);
    return DATTN_OK;
}

/* ---- shards -------------------------------------------------------------------------------- */

/* A shard name must be a plain file name inside the directory. */
static int plain_name(const char *s)
{
    return *s && *s != '.' && !strchr(s, '/') && !strchr(s, '\\') && strlen(s) < 256;
}

static dattn_status open_shard(dattn_model *m, const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = dattn_alloc(n, "shard path");
    if (!path)
        return DATTN_E_NOMEM;
    snprintf(path, n, "%s/%s", dir, name);
    dattn_status st = st_open(path, &m->shards[m->n_shards]);
    dattn_free(path);
    if (st != DATTN_OK)
        return st;
    m->n_shards++;
    return DATTN_OK;
}

typedef struct map_entry {
    const char *name;          /* a tensor weight_map lists */
    int shard;                 /* the index of its shard in m->shards */
} map_entry;

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const map_entry *)a)->name, ((const map_entry *)b)->name);
}

/* model.safetensors.index.json: its weight_map names each tensor's shard. Opens each distinct
 * shard once and checks that every tensor sits in the shard the map names, that no tensor is
 * listed twice, and that no shard holds a tensor the map does not list for it. */
static dattn_status open_index(dattn_model *m, const char *dir, const char *text, size_t len)
{
    const char **names = NULL;   /* [n_shards]: each shard's file name, pointing into doc */
    json_doc *doc = NULL;
    json_error je;
    dattn_status st = json_parse_ex(text, len, true, &doc, &je);
    if (st != DATTN_OK)
        return dattn_error_prefix("model.safetensors.index.json: "), st;
    const json_tok *map = NULL;
    if (doc->toks[0].type != JSON_OBJECT) {
        st = dattn_fail(DATTN_E_FORMAT, "model.safetensors.index.json: the top level is %s, "
                        "expected an object", json_type_name(doc->toks[0].type));
        goto done;
    }
    map = member(doc, 0, "weight_map");
    if (!map || map->type != JSON_OBJECT) {
        st = dattn_fail(DATTN_E_FORMAT, "model.safetensors.index.json: weight_map is %s, "
                        "expected an object", map ? json_type_name(map->type) : "missing");
        goto done;
    }
    int n_map = map->n, mi = tok_index(doc, map);
    m->shards = dattn_alloc(sizeof *m->shards * (size_t)(n_map ? n_map : 1), "shards");
    names = dattn_alloc(sizeof *names * (size_t)(n_map ? n_map : 1), "shard names");
    int *shard_of = dattn_alloc(sizeof(int) * (size_t)(n_map ? n_map : 1), "weight map");
    if (!m->shards || !names || !shard_of) {
        dattn_free(shard_of);
        st = DATTN_E_NOMEM;
        goto done;
    }
    /* Pass 1: distinct shard names, each a plain file name; open them. */
    int k = mi + 1;
    for (int i = 0; i < n_map; i++, k = doc->toks[k + 1].end) {
        const json_tok *key = &doc->toks[k], *val = &doc->toks[k + 1];
        if (val->type != JSON_STRING || !plain_name(val->str)) {
            char b[80];
            st = dattn_fail(DATTN_E_FORMAT, "model.safetensors.index.json: weight_map['%.100s'] "
                            "is %s, expected the file name of a shard in the directory",
                            key->str, show(val, b, sizeof b));
            break;
        }
        int s = 0;
        while (s < m->n_shards && strcmp(names[s], val->str) != 0)
            s++;
        if (s == m->n_shards) {
            if (m->n_shards == HF_MAX_SHARDS) {
                st = dattn_fail(DATTN_E_UNSUPPORTED, "model.safetensors.index.json: more than %d "
                                "shards", HF_MAX_SHARDS);
                break;
            }
            names[s] = val->str;
            if ((st = open_shard(m, dir, val->str)) != DATTN_OK) {
                dattn_error_prefix("model.safetensors.index.json: shard '%.100s' of tensor "
                                   "'%.100s': ", val->str, key->str);
                break;
            }
        }
        shard_of[i] = s;
    }
    /* Pass 2: each tensor listed once (the map sorted by name); pass 3: each in the shard the
     * map names; pass 4: nothing in a shard that the map does not list there. */
    map_entry *by_name = dattn_alloc(sizeof *by_name * (size_t)(n_map ? n_map : 1), "weight map");
    if (st == DATTN_OK && !by_name)
        st = DATTN_E_NOMEM;
    k = mi + 1;
    for (int i = 0; st == DATTN_OK && i < n_map; i++, k = doc->toks[k + 1].end)
        by_name[i] = (map_entry){doc->toks[k].str, shard_of[i]};
    if (st == DATTN_OK)
        qsort(by_name, (size_t)n_map, sizeof *by_name, cmp_entry);
    for (int i = 1; st == DATTN_OK && i < n_map; i++)
        if (!strcmp(by_name[i - 1].name, by_name[i].name))
            st = dattn_fail(DATTN_E_FORMAT, "model.safetensors.index.json: tensor '%.100s' is "
                            "listed twice in weight_map", by_name[i].name);
    for (int i = 0; st == DATTN_OK && i < n_map; i++)
        if (!st_find(m->shards[by_name[i].shard], by_name[i].name))
            st = dattn_fail(DATTN_E_FORMAT, "model.safetensors.index.json: tensor '%.100s' is "
                            "not in shard '%.100s', where weight_map puts it", by_name[i].name,
                            names[by_name[i].shard]);
    for (int s = 0; st == DATTN_OK && s < m->n_shards; s++)
        for (int t = 0; st == DATTN_OK && t < st_count(m->shards[s]); t++) {
            map_entry key = {st_at(m->shards[s], t)->name, 0};
            const map_entry *where = bsearch(&key, by_name, (size_t)n_map, sizeof *by_name,
                                             cmp_entry);
            if (!where || where->shard != s)
                st = dattn_fail(DATTN_E_FORMAT, "model.safetensors.index.json: shard '%.100s' "
                                "holds tensor '%.100s', which weight_map %s%.100s%s", names[s],
                                key.name, where ? "puts in shard '" : "does not list",
                                where ? names[where->shard] : "", where ? "'" : "");
        }
    dattn_free(by_name);
    dattn_free(shard_of);
    if (st == DATTN_OK && m->n_shards == 0)
        st = dattn_fail(DATTN_E_FORMAT, "model.safetensors.index.json: weight_map is empty");
done:
    /* The shard names point into doc, which goes now: they served the checks above only. */
    dattn_free(names);
    json_free(doc);
    return st;
}

static dattn_status open_weights(dattn_model *m, const char *dir)
{
    size_t n = strlen(dir) + 40, len = 0;
    char *path = dattn_alloc(n, "path");
    if (!path)
        return DATTN_E_NOMEM;
    snprintf(path, n, "%s/model.safetensors.index.json", dir);
    int absent = 0;
    char *text = NULL;
    dattn_status st = read_text(path, "model.safetensors.index.json", &text, &len, &absent);
    if (st != DATTN_OK) {
        /* the message is set */
    } else if (text) {
        st = open_index(m, dir, text, len);
        dattn_free(text);
    } else {
        m->shards = dattn_alloc(sizeof *m->shards, "shards");
        st = m->shards ? open_shard(m, dir, "model.safetensors") : DATTN_E_NOMEM;
        if (st != DATTN_OK)
            dattn_error_prefix("(no model.safetensors.index.json) ");
    }
    dattn_free(path);
    return st;
}

/* The tensor `name` in whichever shard holds it (open_index made that unique), or NULL. */
static const st_tensor *find(const dattn_model *m, const char *name)
{
    for (int s = 0; s < m->n_shards; s++) {
        const st_tensor *t = st_find(m->shards[s], name);
        if (t)
            return t;
    }
    return NULL;
}

/* ---- tensor checks ------------------------------------------------------------------------ */

enum { T_IN_NORM, T_Q, T_K, T_V, T_O, T_LQ1, T_LK1, T_LQ2, T_LK2, T_POST_NORM, T_GATE, T_UP,
       T_DOWN, T_PER_LAYER };

static const char *const layer_names[T_PER_LAYER] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.lambda_q1",
    "self_attn.lambda_k1", "self_attn.lambda_q2", "self_attn.lambda_k2",
    "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
    "mlp.down_proj.weight"};

static void layer_shape_of(const hf_config *hc, int i, int64_t shape[2])
{
    int64_t E = hc->hidden, D = hc->head_dim, F = hc->ffn, Q = (int64_t)hc->n_heads * D,
            KV = (int64_t)hc->n_kv_heads * D;
    const int64_t s[T_PER_LAYER][2] = {{E, 0}, {Q, E}, {KV, E}, {KV, E}, {E, Q}, {D, 0}, {D, 0},
                                       {D, 0}, {D, 0}, {E, 0}, {F, E}, {F, E}, {E, F}};
    shape[0] = s[i][0];
    shape[1] = s[i][1];
}

/* "[a,b,c]" of a tensor's shape, for messages. */
static const char *shape_text(const st_tensor *t, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->n_dims && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}

static dattn_status check_one(const dattn_model *m, const char *name, int64_t a, int64_t b)
{
    const st_tensor *t = find(m, name);
    if (!t)
        return dattn_fail(DATTN_E_FORMAT, "model: tensor '%s' is missing", name);
    int n_dims = b ? 2 : 1, packed_u8;
    int64_t shape[2];
    model_stored_shape(m, a, b, shape, &packed_u8);
    if (t->n_dims != n_dims || t->shape[0] != shape[0] || (b && t->shape[1] != shape[1])) {
        char got[128], want[64];
        if (b)
            snprintf(want, sizeof want, "[%lld,%lld]", (long long)shape[0], (long long)shape[1]);
        else
            snprintf(want, sizeof want, "[%lld]", (long long)a);
        return dattn_fail(DATTN_E_FORMAT, "model: tensor '%s' is %s, expected %s (from "
                          "config.json%s)", name, shape_text(t, got, sizeof got), want,
                          packed_u8 ? "; packed rows" : "");
    }
    if (packed_u8 ? t->dtype != ST_U8
                  : t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return dattn_fail(DATTN_E_FORMAT, "model: tensor '%s' is %s, expected %s", name,
                          st_dtype_name(t->dtype), packed_u8 ? "U8 (packed rows)" :
                          "F32, F16 or BF16");
    return DATTN_OK;
}

/* Is `name` one the config asks for? Layer numbers plain decimal below n_layers. */
static int expected_name(const hf_config *hc, const char *name)
{
    if (!strcmp(name, "model.embed_tokens.weight") || !strcmp(name, "model.norm.weight"))
        return 1;
    if (!strcmp(name, "lm_head.weight"))
        return !hc->tie;
    if (strncmp(name, "model.layers.", 13) != 0)
        return 0;
    const char *p = name + 13;
    long l = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 5; p++, digits++)
        l = l * 10 + (*p - '0');
    if (digits == 0 || (digits > 1 && name[13] == '0') || *p != '.' || l >= hc->n_layers)
        return 0;
    for (int i = 0; i < T_PER_LAYER; i++)
        if (!strcmp(p + 1, layer_names[i]))
            return 1;
    return 0;
}

static dattn_status check_tensors(const dattn_model *m, const hf_config *hc)
{
    dattn_status st;
    if ((st = check_one(m, "model.embed_tokens.weight", hc->vocab, hc->hidden)) != DATTN_OK ||
        (st = check_one(m, "model.norm.weight", hc->hidden, 0)) != DATTN_OK)
        return st;
    if (!hc->tie) {
        if ((st = check_one(m, "lm_head.weight", hc->vocab, hc->hidden)) != DATTN_OK)
            return dattn_error_prefix("(tie_word_embeddings is false) "), st;
    } else if (find(m, "lm_head.weight")) {
        return dattn_fail(DATTN_E_FORMAT, "model: tie_word_embeddings is true in config.json but "
                          "the checkpoint has an lm_head.weight");
    }
    char name[128];
    for (int l = 0; l < hc->n_layers; l++)
        for (int i = 0; i < T_PER_LAYER; i++) {
            int64_t shape[2];
            layer_shape_of(hc, i, shape);
            snprintf(name, sizeof name, "model.layers.%d.%s", l, layer_names[i]);
            if ((st = check_one(m, name, shape[0], shape[1])) != DATTN_OK)
                return st;
        }
    for (int s = 0; s < m->n_shards; s++)
        for (int i = 0; i < st_count(m->shards[s]); i++) {
            const char *n = st_at(m->shards[s], i)->name;
            if (!expected_name(hc, n))
                return dattn_fail(DATTN_E_FORMAT, "model: tensor '%.200s' is not part of a "
                                  "diffllama model with num_hidden_layers = %d%s", n,
                                  hc->n_layers, !strcmp(n, "lm_head.weight") ?
                                  " and tied embeddings" : "");
        }
    return DATTN_OK;
}

/* ---- weights --------------------------------------------------------------------------------- */

static const st_tensor *layer_tensor(const dattn_model *m, int l, int i)
{
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, layer_names[i]);
    return find(m, name);
}

/* The HF KV head that dattn KV pair p takes as half `half` (k1 / k2, the two halves of V):
 * heads p and p + K'/2; with K' odd every head is first duplicated (2K' heads, h -> h/2). */
static int kv_source(const hf_config *hc, int p, int half)
{
    int k2 = hc->n_kv_heads % 2 == 0 ? hc->n_kv_heads : 2 * hc->n_kv_heads;
    int idx = p + half * (k2 / 2);
    return hc->n_kv_heads % 2 == 0 ? idx : idx / 2;
}

/* Row c of a dattn q/k half of head_dim D reads HF row perm(c) of the same head: rotate_half
 * pairs (i, i + D/2) become the interleaved pairs (2i, 2i + 1). */
static int rope_row(int c, int D)
{
    return c % 2 == 0 ? c / 2 : c / 2 + D / 2;
}

/* DESIGN §1b as a row map over the stacked q_proj, k_proj, v_proj rows: dattn row -> HF row.
 * q: diff head h, half s, row c <- HF query head h + s*H'/2, row perm(c); k: pair p, half s,
 * row c <- HF KV head kv_source(p, s), row perm(c); v: the same heads, rows in order. The
 * projection computes the HF rows and reorders them; the weights stay as the file has them. */
static void qkv_row_map(const hf_config *hc, int Hkv, int32_t *map)
{
    int D = hc->head_dim, Hd = hc->n_heads / 2;
    int32_t k_at = hc->n_heads * D, v_at = k_at + hc->n_kv_heads * D;
    size_t r = 0;
    for (int h = 0; h < Hd; h++)
        for (int s = 0; s < 2; s++)
            for (int c = 0; c < D; c++)
                map[r++] = (h + s * Hd) * D + rope_row(c, D);
    for (int p = 0; p < Hkv; p++)
        for (int s = 0; s < 2; s++)
            for (int c = 0; c < D; c++)
                map[r++] = k_at + kv_source(hc, p, s) * D + rope_row(c, D);
    for (int p = 0; p < Hkv; p++)
        for (int s = 0; s < 2; s++)
            for (int c = 0; c < D; c++)
                map[r++] = v_at + kv_source(hc, p, s) * D + c;
}

/* One layer: attention from the mapped q/k/v/o (row map above) with its lambda vectors as f32
 * and a weightless sub-norm; the SwiGLU weights as stored; the two norms as f32. */
static dattn_status load_block(dattn_model *m, const hf_config *hc, int l, const double *inv_freq,
                               const int32_t *map, float *vec)
{
    model_block *b = &m->blocks[l];
    int D = hc->head_dim, Hkv = m->info.n_kv_heads;
    int qkv_dim = 2 * m->info.n_heads * D + 2 * (2 * Hkv * D);   /* A + 2 A/r, dattn's rows */
    dattn_status st;
    for (int i = 0; i < 4; i++) {
        const st_tensor *t = layer_tensor(m, l, T_LQ1 + i);
        size_t bad = convert_f32((dattn_dtype)t->dtype, t->data, (size_t)D, vec + (size_t)i * D);
        if (bad < (size_t)D)
            return dattn_fail(DATTN_E_NONFINITE, "model: tensor '%s' holds a NaN or infinite "
                              "value (element %zu)", t->name, bad);
    }
    const st_tensor *qkv[3] = {layer_tensor(m, l, T_Q), layer_tensor(m, l, T_K),
                               layer_tensor(m, l, T_V)};
    const st_tensor *o[1] = {layer_tensor(m, l, T_O)};
    layer_src src = {.vec_dtype = DATTN_DTYPE_F32, .lambda_q1 = vec, .lambda_k1 = vec + D,
                     .lambda_q2 = vec + 2 * D, .lambda_k2 = vec + 3 * D, .subln = NULL,
                     .rope_inv_freq = inv_freq, .sub_eps = (float)hc->eps, .checked = 1};
    void *copy_qkv = NULL, *copy_out = NULL;
    dattn_layer_shape shape = model_attn_shape(m);
    shape.layer_index = l;
    if ((st = model_check_finite(m, qkv, 3)) == DATTN_OK &&
        (st = model_check_finite(m, o, 1)) == DATTN_OK &&
        (st = model_weight_src(m, qkv, 3, &src.qkv, &copy_qkv)) == DATTN_OK &&
        (st = model_weight_src(m, o, 1, &src.out, &copy_out)) == DATTN_OK) {
        src.qkv.row_map = map;
        src.qkv.m = qkv_dim;
        if ((st = layer_create_src(m->be, &shape, &src, &b->attn)) == DATTN_OK) {
            model_release_copied(m, &src.qkv, qkv, 3);
            model_release_copied(m, &src.out, o, 1);
        }
    }
    dattn_free_aligned(copy_qkv);
    dattn_free_aligned(copy_out);
    if (st != DATTN_OK)
        return dattn_error_prefix("layer %d: ", l), st;
    m->info.weight_bytes += m->be->ops->layer_bytes(b->attn->impl);

    /* SwiGLU: gate (w1) and up (w3) stacked, down (w2). */
    const st_tensor *w13[2] = {layer_tensor(m, l, T_GATE), layer_tensor(m, l, T_UP)};
    const st_tensor *w2[1] = {layer_tensor(m, l, T_DOWN)};
    if ((st = model_make_weight(m, w13, 2, 0, &b->w13)) != DATTN_OK ||
        (st = model_make_weight(m, w2, 1, 0, &b->w2)) != DATTN_OK)
        return st;
    b->attn_norm = model_norm_vector(m, layer_tensor(m, l, T_IN_NORM), &st);
    if (st != DATTN_OK)
        return st;
    b->ffn_norm = model_norm_vector(m, layer_tensor(m, l, T_POST_NORM), &st);
    return st;
}

/* transformers' default inv_freq (theta^(-2i/D)), rescaled as _compute_llama3_parameters does. */
static void llama3_inv_freq(const hf_config *hc, double *inv)
{
    int D = hc->head_dim;
    double low_wavelen = hc->orig_max_pos / hc->low_freq;
    double high_wavelen = hc->orig_max_pos / hc->high_freq;
    for (int i = 0; i < D / 2; i++) {
        double f = 1.0 / pow(hc->theta, (2.0 * i) / D);
        double wavelen = 2.0 * 3.14159265358979323846 / f;
        double out = wavelen > low_wavelen ? f / hc->factor : f;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
            double smooth = (hc->orig_max_pos / wavelen - hc->low_freq) /
                            (hc->high_freq - hc->low_freq);
            out = (1.0 - smooth) * out / hc->factor + smooth * out;
        }
        inv[i] = out;
    }
}

/* FNV-1a over the config's numbers and every shard's tensors (names, dtypes, shapes, a sample of
 * the bytes), as model.c fingerprints its own files. */
static uint64_t fingerprint(const dattn_model *m, const hf_config *hc)
{
    uint64_t h = FNV1A_INIT;
    h = fnv1a(h, hc, sizeof *hc);
    for (int s = 0; s < m->n_shards; s++)
        for (int i = 0; i < st_count(m->shards[s]); i++)
            h = model_hash_tensor(m, h, st_at(m->shards[s], i));
    return h ? h : 1;
}

/* The directory of path: path itself, or what precedes "/config.json". */
static char *model_dir(const char *path)
{
    size_t n = strlen(path);
    char *dir = dattn_alloc(n + 2, "model directory");
    if (!dir)
        return NULL;
    memcpy(dir, path, n + 1);
    if (!is_dir(path)) {
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            strcpy(dir, ".");
    }
    return dir;
}

/* Prefix of the metadata keys under which `dattn quantize` carries a directory's JSON files in
 * the one file it writes ("dattn.config.json", ...). */
#define PACKED_PREFIX "dattn."

/* The JSON file `name` of the model: DIR/name, or, for a packed file (dir NULL), its metadata
 * value PACKED_PREFIX name. *absent = 1 when there is none. *where names it for messages. */
static dattn_status source_text(const dattn_model *m, const char *dir, const char *name,
                                char **text, size_t *len, int *absent, char *where, size_t cap)
{
    *text = NULL;
    *absent = 0;
    if (dir) {
        snprintf(where, cap, "%s/%s", dir, name);
        return read_text(where, name, text, len, absent);
    }
    char key[64];
    snprintf(key, sizeof key, PACKED_PREFIX "%s", name);
    snprintf(where, cap, "%s (in the packed model's metadata)", key);
    const char *v = st_meta(m->shards[0], key);
    if (!v) {
        *absent = 1;
        return DATTN_OK;
    }
    *len = strlen(v);
    if (!(*text = dattn_alloc(*len + 1, name)))
        return DATTN_E_NOMEM;
    memcpy(*text, v, *len + 1);
    return DATTN_OK;
}

/* tokenizer.json (with tokenizer_config.json) when the model has one; else the "none"
 * tokenizer, which takes token ids only. Its ids must lie inside the model's vocabulary. */
static dattn_status load_tokenizer(dattn_model *m, const char *dir)
{
    dattn_model_info *in = &m->info;
    char where[512], cfg_where[512], *text = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    int absent = 0, cfg_absent = 0;
    dattn_status st = source_text(m, dir, "tokenizer.json", &text, &len, &absent, where,
                                  sizeof where);
    if (st == DATTN_OK && !absent)
        st = source_text(m, dir, "tokenizer_config.json", &cfg, &cfg_len, &cfg_absent,
                         cfg_where, sizeof cfg_where);
    if (st != DATTN_OK) {
    } else if (absent) {
        snprintf(in->tokenizer, sizeof in->tokenizer, "none");
        st = tokenizer_init(&m->tok.t, "none", in->vocab_size);
    } else if ((st = tokenizer_load_texts(&m->tok.t, where, text, len, cfg_where, cfg,
                                          cfg_len)) == DATTN_OK) {
        snprintf(in->tokenizer, sizeof in->tokenizer, "bpe");
        if (m->tok.t.vocab_size > in->vocab_size)
            st = dattn_fail(DATTN_E_FORMAT, "%s has %d tokens, config.json's vocab_size is %d",
                            where, m->tok.t.vocab_size, in->vocab_size);
    }
    dattn_free(text);
    dattn_free(cfg);
    return st;
}

/* generation_config.json, when the directory has one: its eos_token_id (and bos_token_id) are
 * what transformers' generate() stops at, so they replace config.json's. */
static dattn_status read_generation_config(dattn_model *m, const char *dir, int vocab)
{
    size_t len = 0;
    char where[512], *text = NULL;
    int absent = 0;
    json_doc *doc = NULL;
    json_error je;
    dattn_status st = source_text(m, dir, "generation_config.json", &text, &len, &absent, where,
                                  sizeof where);
    if (st == DATTN_OK && !absent) {
        if ((st = json_parse_ex(text, len, true, &doc, &je)) != DATTN_OK) {
            dattn_error_prefix("generation_config.json: ");
        } else if (doc->toks[0].type != JSON_OBJECT) {
            st = dattn_fail(DATTN_E_FORMAT, "generation_config.json: the top level is %s, "
                            "expected an object", json_type_name(doc->toks[0].type));
        } else {
            cfg_ctx c = {"generation_config.json", doc, 0};
            int32_t ids[MODEL_MAX_SPECIAL];
            int n_ids = 0;
            if ((st = get_ids(&c, "eos_token_id", vocab, ids, &n_ids)) == DATTN_OK && n_ids) {
                memcpy(m->eos_ids, ids, sizeof(int32_t) * (size_t)n_ids);
                m->n_eos = n_ids;
            }
            if (st == DATTN_OK &&
                (st = get_ids(&c, "bos_token_id", vocab, ids, &n_ids)) == DATTN_OK && n_ids) {
                memcpy(m->bos_ids, ids, sizeof(int32_t) * (size_t)n_ids);
                m->n_bos = n_ids;
            }
        }
    }
    json_free(doc);
    dattn_free(text);
    return st;
}

/* The model from DIR (config.json, the shards, the tokenizer files), or, with dir NULL, from the
 * packed file m->shards[0] that carries them in its metadata. */
static dattn_status load_from(dattn_model *m, const char *dir)
{
    char *text = NULL, where[512];
    json_doc *doc = NULL;
    float *vec = NULL;
    int32_t *map = NULL;
    double *inv_freq = NULL;
    hf_config hc;
    size_t len = 0;
    int absent = 0;
    dattn_status st = source_text(m, dir, "config.json", &text, &len, &absent, where,
                                  sizeof where);
    if (st != DATTN_OK)
        goto done;
    if (absent) {
        st = dattn_fail(DATTN_E_IO, "no config.json in %s: not a Hugging Face model directory",
                        dir ? dir : "the packed file");
        goto done;
    }
    json_error je;
    if ((st = json_parse_ex(text, len, true, &doc, &je)) != DATTN_OK) {
        dattn_error_prefix("config.json: ");
        goto done;
    }
    if ((st = read_config(m, doc, &hc)) != DATTN_OK)
        goto done;

    dattn_model_info *in = &m->info;
    memset(in, 0, sizeof *in);
    int k2 = hc.n_kv_heads % 2 == 0 ? hc.n_kv_heads : 2 * hc.n_kv_heads;
    in->dim = hc.hidden;
    in->n_layers = hc.n_layers;
    in->n_heads = hc.n_heads / 2;
    in->n_kv_heads = k2 / 2;
    in->vocab_size = hc.vocab;
    in->ffn_dim = hc.ffn;
    in->max_seq_len = hc.max_pos;
    in->tie_embeddings = hc.tie;
    in->norm_eps = (float)hc.eps;
    in->rope_theta = (float)hc.theta;
    in->head_dim = hc.head_dim;
    dattn_layer_shape shape = model_attn_shape(m);
    if ((st = layer_check_shape(&shape)) != DATTN_OK) {
        dattn_error_prefix("config.json: ");
        goto done;
    }
    if ((st = read_generation_config(m, dir, hc.vocab)) != DATTN_OK ||
        (st = load_tokenizer(m, dir)) != DATTN_OK ||
        (dir && (st = open_weights(m, dir)) != DATTN_OK) ||
        (st = check_tensors(m, &hc)) != DATTN_OK)
        goto done;
    in->bos_id = m->n_bos ? m->bos_ids[0] : -1;
    in->n_eos = m->n_eos;
    memcpy(in->eos_ids, m->eos_ids, sizeof(int32_t) * (size_t)m->n_eos);

    m->embed = find(m, "model.embed_tokens.weight");
    if ((st = model_check_finite(m, &m->embed, 1)) != DATTN_OK)
        goto done;
    if (model_converts(m))
        st_release_tensor(m->embed);   /* converted at the end */
    in->dtype = model_tensor_format(m, m->embed);
    for (int s = 0; s < m->n_shards; s++)
        for (int i = 0; i < st_count(m->shards[s]); i++)
            in->n_params += model_tensor_params(m, st_at(m->shards[s], i));
    in->fingerprint = fingerprint(m, &hc);
    model_release_files(m);   /* the checks above touched the files: converting, let them go */

    if (hc.llama3) {
        if (!(inv_freq = dattn_alloc(sizeof(double) * (size_t)(hc.head_dim / 2), "RoPE table"))) {
            st = DATTN_E_NOMEM;
            goto done;
        }
        llama3_inv_freq(&hc, inv_freq);
    }
    size_t qkv_rows = (size_t)2 * in->n_heads * hc.head_dim + 4 * (size_t)in->n_kv_heads * hc.head_dim;
    map = dattn_alloc(sizeof(int32_t) * qkv_rows, "q/k/v row map");
    vec = dattn_alloc(sizeof(float) * 4 * (size_t)hc.head_dim, "lambda vectors");
    m->blocks = dattn_alloc(sizeof *m->blocks * (size_t)in->n_layers, "model layers");
    if (!map || !vec || !m->blocks) {
        st = DATTN_E_NOMEM;
        goto done;
    }
    qkv_row_map(&hc, in->n_kv_heads, map);
    for (int l = 0; l < in->n_layers; l++)
        if ((st = load_block(m, &hc, l, inv_freq, map, vec)) != DATTN_OK)
            goto done;
    m->final_norm = model_norm_vector(m, find(m, "model.norm.weight"), &st);
    if (st != DATTN_OK)
        goto done;
    st = model_make_embed_logits(m, hc.tie ? m->embed : find(m, "lm_head.weight"), hc.tie);
done:
    dattn_free(inv_freq);
    dattn_free(map);
    dattn_free(vec);
    json_free(doc);
    dattn_free(text);
    return st;
}

dattn_status hf_model_load(dattn_model *m, const char *path)
{
    char *dir = model_dir(path);
    if (!dir)
        return DATTN_E_NOMEM;
    dattn_status st = load_from(m, dir);
    dattn_free(dir);
    return st;
}

int hf_is_packed(const st_file *f)
{
    return st_meta(f, PACKED_PREFIX "config.json") != NULL;
}

dattn_status hf_model_load_packed(dattn_model *m)
{
    if (!(m->shards = dattn_alloc(sizeof *m->shards, "shards")))
        return DATTN_E_NOMEM;
    m->shards[0] = m->file;   /* the one file is the one shard */
    m->n_shards = 1;
    m->file = NULL;
    return load_from(m, NULL);
}

const char *const hf_text_names[HF_N_TEXTS] = {"config.json", "generation_config.json",
                                               "tokenizer.json", "tokenizer_config.json"};

dattn_status hf_files_open(const char *path, hf_files *out)
{
    memset(out, 0, sizeof *out);
    char *dir = model_dir(path), where[512];
    dattn_model holder;   /* open_weights fills its shards */
    memset(&holder, 0, sizeof holder);
    dattn_status st = dir ? DATTN_OK : DATTN_E_NOMEM;
    for (int i = 0; st == DATTN_OK && i < HF_N_TEXTS; i++) {
        size_t len = 0;
        int absent = 0;
        st = source_text(&holder, dir, hf_text_names[i], &out->text[i], &len, &absent, where,
                         sizeof where);
        if (st == DATTN_OK && absent && i == 0)
            st = dattn_fail(DATTN_E_IO, "no config.json in %s: not a Hugging Face model "
                            "directory", dir);
    }
    if (st == DATTN_OK)
        st = open_weights(&holder, dir);
    out->shards = holder.shards;
    out->n_shards = holder.n_shards;
    dattn_free(dir);
    if (st != DATTN_OK)
        hf_files_close(out);
    return st;
}

void hf_files_close(hf_files *f)
{
    for (int i = 0; i < f->n_shards; i++)
        st_close(f->shards[i]);
    dattn_free(f->shards);
    for (int i = 0; i < HF_N_TEXTS; i++)
        dattn_free(f->text[i]);
    memset(f, 0, sizeof *f);
}

/* dattn — a portable runtime for Differential-Transformer inference.
 *
 * The one public header. Opaque handles, a status from every function, results through
 * out-pointers, parameters only from the *_default_params() functions so fields can be added.
 * The library never prints, exits or aborts: on failure a function returns a status and
 * dattn_last_error() says what went wrong, in words, on the calling thread.
 *
 * Threading: one backend runs one call at a time; use one backend per thread that computes.
 */
#ifndef DATTN_H
#define DATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(DATTN_SHARED_BUILD)
#define DATTN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define DATTN_API __attribute__((visibility("default")))
#else
#define DATTN_API
#endif

#define DATTN_VERSION_MAJOR 0
#define DATTN_VERSION_MINOR 1
#define DATTN_VERSION_PATCH 0

/* ---- status and errors ------------------------------------------------------------------ */

typedef enum dattn_status {
    DATTN_OK = 0,
    DATTN_E_INVALID_ARG = -1,  /* a NULL pointer or a value out of its range */
    DATTN_E_SHAPE = -2,        /* impossible or mismatched shapes */
    DATTN_E_NOMEM = -3,        /* a host allocation failed */
    DATTN_E_ARENA = -4,        /* the arena is smaller than what was asked for */
    DATTN_E_CACHE_FULL = -5,   /* the KV cache holds n_ctx positions (full policy) */
    DATTN_E_POSITION = -6,     /* a position that does not follow the cache's contents */
    DATTN_E_IO = -7,           /* a file could not be opened, read or written */
    DATTN_E_FORMAT = -8,       /* a file is malformed or does not match what it should hold */
    DATTN_E_UNSUPPORTED = -9,  /* the backend or build cannot do what was asked */
    DATTN_E_OPENCL = -10,      /* an OpenCL call failed */
    DATTN_E_THREAD = -11,      /* a thread could not be started */
    DATTN_E_NONFINITE = -12,   /* a weight, an input or an activation is NaN or infinite */
} dattn_status;

/* "DATTN_E_SHAPE"; "DATTN_E_UNKNOWN" for a code that is not in the list. */
DATTN_API const char *dattn_status_name(dattn_status st);
/* A one-line default description of a status. */
DATTN_API const char *dattn_status_text(dattn_status st);
/* The message of the last failure on this thread (never NULL; "" before any failure). */
DATTN_API const char *dattn_last_error(void);

typedef enum dattn_log_level {
    DATTN_LOG_ERROR = 0,
    DATTN_LOG_WARN = 1,
    DATTN_LOG_INFO = 2,
    DATTN_LOG_DEBUG = 3,
} dattn_log_level;

typedef void (*dattn_log_fn)(dattn_log_level level, const char *msg, void *user_data);
/* Send the library's log lines to fn (NULL: drop them, the default). Process-wide. */
DATTN_API void dattn_log_set(dattn_log_fn fn, void *user_data);

/* ---- backends --------------------------------------------------------------------------- */

typedef struct dattn_backend dattn_backend;

typedef enum dattn_backend_type {
    DATTN_BACKEND_AUTO = 0,    /* the first OpenCL GPU if there is one, else the CPU */
    DATTN_BACKEND_CPU = 1,
    DATTN_BACKEND_OPENCL = 2,
} dattn_backend_type;

typedef struct dattn_backend_params {
    dattn_backend_type type;
    int n_threads;             /* CPU: worker threads; 0 = number of online cores */
    const char *cpu_isa;       /* CPU: NULL = best this CPU runs; or "generic", "avx2", "avx512", "neon" */
    const char *device;        /* OpenCL: "PLATFORM:DEVICE" indices or a name substring; NULL = default */
    const char *tuning;        /* OpenCL: "field=value,..." over the platforms/ tuning row
                                  (e.g. "prefill_qt=8,wg_decode=64"); NULL = the row as it is */
    uint64_t max_buffer_bytes; /* OpenCL: cap one device buffer below CL_DEVICE_MAX_MEM_ALLOC_SIZE
                                  (a long cache then spans more buffers); 0 = the device's cap */
} dattn_backend_params;

DATTN_API dattn_backend_params dattn_backend_default_params(void);
DATTN_API dattn_status dattn_backend_create(const dattn_backend_params *params, dattn_backend **out);
DATTN_API void dattn_backend_free(dattn_backend *backend);
/* A line that says what runs, e.g. "cpu avx512, 2 threads". */
DATTN_API const char *dattn_backend_describe(const dattn_backend *backend);
/* How many times the CPU backend's thread pool has woken its threads for a pass of work since
 * it was created (benchmarks: passes per token); 0 for a backend without a pool. */
DATTN_API uint64_t dattn_backend_pool_passes(const dattn_backend *backend);

/* ---- OpenCL devices ----------------------------------------------------------------------- */

typedef struct dattn_device_info {
    int platform_index, device_index;   /* the "P:D" selector of this device */
    char platform[128];                 /* CL_PLATFORM_NAME */
    char vendor[128];                   /* CL_DEVICE_VENDOR */
    char name[128];                     /* CL_DEVICE_NAME */
    char driver[64];                    /* CL_DRIVER_VERSION */
    char version[128];                  /* CL_DEVICE_VERSION */
    char c_version[64];                 /* CL_DEVICE_OPENCL_C_VERSION */
    uint64_t global_mem_bytes, max_alloc_bytes, local_mem_bytes;
    int compute_units;
    int is_gpu;
    int has_fp16;                       /* cl_khr_fp16 (dattn never needs it) */
    char tuning[64];                    /* the platforms/ tuning row that applies */
} dattn_device_info;

/* Every OpenCL device of every platform, up to max, in "P:D" order; *n is the total found (it may
 * exceed max). A build without OpenCL, or a machine without an ICD, gives *n = 0 and DATTN_OK. */
DATTN_API dattn_status dattn_devices(dattn_device_info *out, int max, int *n);

/* ---- one differential-attention layer ---------------------------------------------------- */

typedef struct dattn_layer dattn_layer;

/* Element types of weights (F32, F16, BF16) and of the other tensors a safetensors file holds. */
typedef enum dattn_dtype {
    DATTN_DTYPE_F32 = 0,
    DATTN_DTYPE_F16 = 1,
    DATTN_DTYPE_BF16 = 2,
    DATTN_DTYPE_F64 = 3,
    DATTN_DTYPE_I64 = 4,
    DATTN_DTYPE_I32 = 5,
    DATTN_DTYPE_I16 = 6,
    DATTN_DTYPE_I8 = 7,
    DATTN_DTYPE_U8 = 8,
    DATTN_DTYPE_BOOL = 9,
    /* Weight formats of their own (llama.cpp's layouts), never a safetensors dtype: blocks of 32
     * weights along a row with one f16 scale d. */
    DATTN_DTYPE_Q8_0 = 10,     /* 34 bytes: d, int8 q[32]; weight = d * q */
    DATTN_DTYPE_Q4_0 = 11,     /* 18 bytes: d, 16 bytes of 4-bit q (low nibbles: weights 0-15,
                                * high: 16-31); weight = d * (q - 8) */
} dattn_dtype;

/* E = model_dim, H = n_heads (diff heads), Hkv = n_kv_heads, r = H / Hkv, d = head_dim (one
 * softmax half; 0 means E / H / 2), A = 2 H d the attention width (E unless head_dim says
 * otherwise). Valid when H % Hkv == 0, d is even, and (head_dim 0) E % (2H) == 0. */
typedef struct dattn_layer_shape {
    int model_dim;
    int n_heads;
    int n_kv_heads;
    int layer_index;           /* l, 0-based: sets lambda_init = 0.8 - 0.6 exp(-0.3 l) */
    float rope_theta;          /* 10000 for the usual models */
    int head_dim;              /* d; 0: model_dim / n_heads / 2 */
} dattn_layer_shape;

/* Weights in PyTorch nn.Linear layout ([out, in], y = x W^T), all of one dtype (F32, F16 or
 * BF16), little-endian, any alignment. The layer copies them, in their dtype (F16 stays 2 bytes
 * a weight): the caller's memory may be freed after dattn_layer_create. */
typedef struct dattn_layer_weights {
    dattn_dtype dtype;
    const void *q_proj;        /* [A, E] */
    const void *k_proj;        /* [A/r, E] */
    const void *v_proj;        /* [A/r, E] */
    const void *out_proj;      /* [E, A] */
    const void *lambda_q1, *lambda_k1, *lambda_q2, *lambda_k2;  /* [d] each */
    const void *subln;         /* [2d] */
} dattn_layer_weights;

DATTN_API dattn_layer_shape dattn_layer_default_shape(void);
DATTN_API dattn_status dattn_layer_create(dattn_backend *backend, const dattn_layer_shape *shape,
                                          const dattn_layer_weights *weights, dattn_layer **out);
/* One layer from a safetensors file under the names of unilm's module (q_proj.weight, ...,
 * subln.weight) with __metadata__ embed_dim, num_heads, num_kv_heads, depth [, rope_theta]. */
DATTN_API dattn_status dattn_layer_load(dattn_backend *backend, const char *path, dattn_layer **out);
DATTN_API dattn_status dattn_layer_get_shape(const dattn_layer *layer, dattn_layer_shape *out);
DATTN_API void dattn_layer_free(dattn_layer *layer);

/* ---- the KV cache and its arena ---------------------------------------------------------- */

typedef struct dattn_cache dattn_cache;

typedef enum dattn_kv_type {
    DATTN_KV_F32 = 0,
    DATTN_KV_F16 = 1,
    DATTN_KV_Q8 = 2,           /* int8 with one f32 scale per row of a head half */
} dattn_kv_type;

typedef enum dattn_kv_policy {
    DATTN_POLICY_FULL = 0,         /* positions 0 .. n_ctx-1, then DATTN_E_CACHE_FULL */
    DATTN_POLICY_SINK_WINDOW = 1,  /* StreamingLLM: the first n_sink tokens + the last
                                      n_ctx - n_sink; runs without end */
} dattn_kv_policy;

typedef struct dattn_cache_params {
    int n_layers;              /* layer slots in the cache (1 for a single layer) */
    int n_ctx;                 /* tokens a query can see: full: the longest sequence */
    int n_sink;                /* sink+window: attention-sink tokens kept from the start */
    int max_batch;             /* most tokens one prefill call takes; scratch is sized for it */
    dattn_kv_type kv_type;
    dattn_kv_policy policy;
} dattn_cache_params;

DATTN_API dattn_cache_params dattn_cache_default_params(void);
/* The exact arena bytes a cache for this shape and these params takes on this backend. */
DATTN_API dattn_status dattn_cache_arena_bytes(const dattn_backend *backend,
                                               const dattn_layer_shape *shape,
                                               const dattn_cache_params *params, size_t *bytes);
/* arena = NULL: the library reserves the bytes itself. Otherwise arena must hold at least
 * dattn_cache_arena_bytes() bytes and outlive the cache; any alignment is fine. */
DATTN_API dattn_status dattn_cache_create(dattn_backend *backend, const dattn_layer_shape *shape,
                                          const dattn_cache_params *params, void *arena,
                                          size_t arena_bytes, dattn_cache **out);
DATTN_API void dattn_cache_free(dattn_cache *cache);
/* Tokens seen so far by layer slot `slot` (the stream position of the next token). */
DATTN_API dattn_status dattn_cache_n_past(const dattn_cache *cache, int slot, int *n_past);
DATTN_API dattn_status dattn_cache_get_params(const dattn_cache *cache, dattn_cache_params *out);
DATTN_API dattn_status dattn_cache_reset(dattn_cache *cache);
/* Write the cache (contents and positions of every slot) to a file; restore it into a cache made
 * with the same shape and params. A file that does not match changes nothing. */
DATTN_API dattn_status dattn_cache_save(const dattn_cache *cache, const char *path);
DATTN_API dattn_status dattn_cache_restore(dattn_cache *cache, const char *path);

/* ---- running a layer --------------------------------------------------------------------- */

/* Run the layer on n_tokens rows of x ([n_tokens, E] f32) at stream positions pos .. pos+n-1,
 * appending their K/V to cache slot `slot`, and write y ([n_tokens, E]). pos must equal the
 * slot's n_past; under the full policy a smaller pos first drops the positions from pos on.
 * n_tokens may exceed max_batch (it runs in chunks). On error the cache is unchanged. */
DATTN_API dattn_status dattn_layer_prefill(dattn_layer *layer, dattn_cache *cache, int slot, int pos,
                                           const float *x, int n_tokens, float *y);
/* One token through tiled flash decoding: x, y are [E]. */
DATTN_API dattn_status dattn_layer_decode(dattn_layer *layer, dattn_cache *cache, int slot, int pos,
                                          const float *x, float *y);
/* The attention alone, for callers that project q/k/v themselves (as flash-attention's
 * flash_attn_with_kvcache): q [n_tokens][2H][d] and k [n_tokens][2Hkv][d] as projected (RoPE is
 * applied here, at positions pos ..), v [n_tokens][Hkv][2d]. k and v are appended to slot `slot`;
 * out [n_tokens][H][2d] gets each head's normalized output before out_proj (DESIGN §1 steps 2-6).
 * q and out NULL: only append (fill a cache). One token takes the flash-decoding path. Positions
 * follow dattn_layer_prefill's rules; inputs must be finite. */
DATTN_API dattn_status dattn_layer_attend(dattn_layer *layer, dattn_cache *cache, int slot, int pos,
                                          const float *q, const float *k, const float *v,
                                          int n_tokens, float *out);

/* ---- a whole model ------------------------------------------------------------------------ */

/* A Differential-Transformer checkpoint (DESIGN §1, §6): token embedding, L layers of RMSNorm ->
 * differential attention -> residual -> RMSNorm -> SwiGLU -> residual, final RMSNorm, logits.
 * One loaded model serves any number of sessions (each with its own cache arena). */
typedef struct dattn_model dattn_model;

#define DATTN_MAX_EOS 8         /* end-of-text tokens a model may name */

typedef struct dattn_model_info {
    int dim, n_layers, n_heads, n_kv_heads, vocab_size, ffn_dim, max_seq_len;
    int tie_embeddings;        /* 1: the logits reuse tok_embeddings.weight */
    float norm_eps, rope_theta;
    char tokenizer[16];        /* "bytes" */
    dattn_dtype dtype;         /* of the file's weights */
    uint64_t n_params;         /* weights in the file */
    uint64_t weight_bytes;     /* what the backend holds for them */
    uint64_t fingerprint;      /* identifies the file: saved sessions carry it */
    int head_dim;              /* d, one softmax half: dim / n_heads / 2 unless the model sets it */
    int32_t bos_id;            /* the model's beginning-of-text token, -1 if none */
    int n_eos;                 /* end-of-text tokens: generation stops at any of them */
    int32_t eos_ids[DATTN_MAX_EOS];
    dattn_dtype weights;       /* the format the projections, the embedding and the logits
                                * weight are held in: `dtype` when used as stored */
    uint64_t embed_bytes;      /* the embedding table as held (part of weight_bytes): a token
                                * reads one row of it */
} dattn_model_info;

/* How a model's weights are held. Zeroed: as stored (F32, F16 and BF16 read in place from the
 * mapped file on the CPU). convert_weights = 1: every projection, the embedding and the logits
 * weight (tied: one copy) converted at load to `weights`: F32, F16, BF16, or the block formats
 * Q8_0 / Q4_0 (their rows need a multiple of 32 columns). */
typedef struct dattn_model_params {
    int convert_weights;
    dattn_dtype weights;
} dattn_model_params;

/* Loads a safetensors checkpoint (hyper-parameters in __metadata__, tensor names of DESIGN §6).
 * Every tensor's presence, dtype and shape is checked first; the message names the first one
 * that is missing or wrong. */
DATTN_API dattn_status dattn_model_load(dattn_backend *backend, const char *path, dattn_model **out);
/* The same with the weights held as params says (NULL: as stored). */
DATTN_API dattn_status dattn_model_load_params(dattn_backend *backend, const char *path,
                                               const dattn_model_params *params,
                                               dattn_model **out);
/* Writes the model at `in` (any path dattn_model_load takes: a dattn file or a Hugging Face
 * directory) to `out` as one safetensors file whose weight matrices are `type` (DATTN_DTYPE_Q8_0
 * or DATTN_DTYPE_Q4_0) rows, with the model's config and tokenizer carried in its metadata: it
 * loads in one mmap, nothing converted. The source is loaded (checked) first; `out` is replaced
 * only once it is complete. Needs no backend. */
DATTN_API dattn_status dattn_model_quantize(const char *in, const char *out, dattn_dtype type);
DATTN_API void dattn_model_free(dattn_model *model);
DATTN_API dattn_status dattn_model_get_info(const dattn_model *model, dattn_model_info *out);

/* Text -> token ids with the model's tokenizer. *n_ids is the count the text needs; when it
 * exceeds max_ids only max_ids are written and DATTN_E_INVALID_ARG says so. */
DATTN_API dattn_status dattn_tokenize(const dattn_model *model, const char *text, size_t len,
                                      int32_t *ids, int max_ids, int *n_ids);
/* The bytes token `id` stands for (not NUL-terminated; a byte tokenizer gives one byte; an id
 * of the model's vocabulary past its tokenizer's gives none). */
DATTN_API dattn_status dattn_token_bytes(const dattn_model *model, int32_t id, char *buf,
                                         size_t cap, size_t *n);
/* 1 if id is one of the model's end-of-text tokens (dattn_model_info's eos_ids), else 0. */
DATTN_API int dattn_token_is_eos(const dattn_model *model, int32_t id);

/* ---- tokenizers on their own ------------------------------------------------------------ */

/* A tokenizer without a model: from a Hugging Face tokenizer.json (byte-level BPE: GPT-2,
 * GPT-NeoX, Llama-3 and files built like them), a directory holding one (or its config.json),
 * or a dattn .safetensors model (its __metadata__ tokenizer; the weights are not loaded). */
typedef struct dattn_tokenizer dattn_tokenizer;

DATTN_API dattn_status dattn_tokenizer_load(const char *path, dattn_tokenizer **out);
DATTN_API void dattn_tokenizer_free(dattn_tokenizer *tok);
/* Text -> ids, as dattn_tokenize: *n_ids is the count needed, at most max_ids written
 * (DATTN_E_INVALID_ARG when it needs more). Special tokens written in the text are recognized;
 * add_special != 0 also puts the post-processor's tokens around it (e.g. a BOS). */
DATTN_API dattn_status dattn_tokenizer_encode(const dattn_tokenizer *tok, const char *text,
                                              size_t len, int add_special, int32_t *ids,
                                              int max_ids, int *n_ids);
/* The bytes token `id` prints in a stream of generated text (not NUL-terminated; SentencePiece:
 * U+2581 as a space, <0xXX> as its byte). *n is set to the length even when cap is short, which
 * is then DATTN_E_INVALID_ARG. */
DATTN_API dattn_status dattn_tokenizer_token_bytes(const dattn_tokenizer *tok, int32_t id,
                                                   char *buf, size_t cap, size_t *n);
/* The text of ids[0..n_ids) as the tokenizer file's decoder makes it (Hugging Face's
 * decode(ids, skip_special_tokens=False): SentencePiece's leading space of the text dropped,
 * <0xXX> tokens as bytes; bytes that form no UTF-8 stay bytes). *len is the length needed even
 * when cap is short (then DATTN_E_INVALID_ARG). For a stream, dattn_tokenizer_token_bytes of
 * each token instead. */
DATTN_API dattn_status dattn_tokenizer_decode(const dattn_tokenizer *tok, const int32_t *ids,
                                              int n_ids, char *buf, size_t cap, size_t *len);
/* Ids are 0..*n-1. */
DATTN_API dattn_status dattn_tokenizer_vocab_size(const dattn_tokenizer *tok, int *n);
/* A model's own tokenizer, valid while the model is (never free it). dattn_tokenize is this
 * tokenizer's encode without special tokens; dattn_tokenizer_encode with add_special puts the
 * model's beginning-of-text token(s) before a prompt, as its tokenizer files say. */
DATTN_API const dattn_tokenizer *dattn_model_tokenizer(const dattn_model *model);

/* ---- sessions: a model with its own KV cache --------------------------------------------- */
typedef struct dattn_session dattn_session;

/* The cache params of a session; n_layers is taken from the model. Exact arena bytes (KV cache
 * and every scratch tensor of the forward pass), the figure dattn_session_create reserves. */
DATTN_API dattn_status dattn_session_arena_bytes(const dattn_model *model,
                                                 const dattn_cache_params *params, size_t *bytes);
/* arena as for dattn_cache_create (NULL: the library reserves it). The session keeps its own
 * host scratch too: after this call the token path allocates nothing. */
DATTN_API dattn_status dattn_session_create(dattn_model *model, const dattn_cache_params *params,
                                            void *arena, size_t arena_bytes, dattn_session **out);
DATTN_API void dattn_session_free(dattn_session *session);
/* Runs n_tokens tokens at the session's next position (prefill in chunks of max_batch, or one
 * decode step). logits: NULL for none, else [vocab] for the last token, or [n_tokens][vocab] when
 * all_logits is 1. Under the full policy a prompt that does not fit the free context is refused
 * before anything runs (DATTN_E_CACHE_FULL). */
DATTN_API dattn_status dattn_session_eval(dattn_session *session, const int32_t *tokens,
                                          int n_tokens, float *logits, int all_logits);
/* Tokens the session has seen (the position of the next one). */
DATTN_API int dattn_session_n_past(const dattn_session *session);
/* The session's cache (for its params and arena size). */
DATTN_API const dattn_cache *dattn_session_cache(const dattn_session *session);
DATTN_API size_t dattn_session_arena_size(const dattn_session *session);
DATTN_API dattn_status dattn_session_reset(dattn_session *session);
/* Save the session (cache and position) to a file; load it into a session of the same model and
 * cache params. A file made for another model, or corrupt, changes nothing. */
DATTN_API dattn_status dattn_session_save(const dattn_session *session, const char *path);
DATTN_API dattn_status dattn_session_load(dattn_session *session, const char *path);

/* ---- safetensors files ------------------------------------------------------------------ */
/* The format of models, layer cases and logits (DESIGN §6): read mapped and checked, written
 * through a temporary file that replaces `path` only once it is complete. */
typedef struct dattn_tensor_file dattn_tensor_file;

typedef struct dattn_tensor {
    const char *name;
    dattn_dtype dtype;
    int n_dims;                /* 0..8; 0 is a scalar */
    int64_t shape[8];
    const void *data;          /* little-endian elements, any alignment; read: valid until close */
} dattn_tensor;

DATTN_API dattn_status dattn_tensor_file_open(const char *path, dattn_tensor_file **out);
DATTN_API void dattn_tensor_file_close(dattn_tensor_file *file);
/* The tensor called `name`; DATTN_E_FORMAT naming it and the file when there is none. */
DATTN_API dattn_status dattn_tensor_file_find(const dattn_tensor_file *file, const char *name,
                                              dattn_tensor *out);
/* A __metadata__ value, or NULL. */
DATTN_API const char *dattn_tensor_file_meta(const dattn_tensor_file *file, const char *key);
/* The elements of an F32, F16 or BF16 tensor as f32 (dst holds the product of the shape). */
DATTN_API dattn_status dattn_tensor_to_f32(const dattn_tensor *t, float *dst);
/* Writes the tensors in order with __metadata__ meta_kv = key0, value0, key1, ... (n_meta
 * pairs). An existing file at path is replaced only when the new one is whole. */
DATTN_API dattn_status dattn_tensor_file_write(const char *path, const dattn_tensor *tensors,
                                               int n_tensors, const char *const *meta_kv,
                                               int n_meta);

/* ---- sampling ----------------------------------------------------------------------------- */
typedef struct dattn_sampler dattn_sampler;

typedef struct dattn_sampler_params {
    float temperature;         /* 0: greedy (argmax) */
    int top_k;                 /* keep the k most likely tokens; 0: all */
    float top_p;               /* keep the smallest set whose probability reaches p; 1: all */
    float repeat_penalty;      /* > 1 lowers tokens seen in the last repeat_last_n; 1: off */
    int repeat_last_n;
    uint64_t seed;             /* the same seed, params and logits give the same tokens */
} dattn_sampler_params;

DATTN_API dattn_sampler_params dattn_sampler_default_params(void);
DATTN_API dattn_status dattn_sampler_create(const dattn_sampler_params *params, int vocab_size,
                                            dattn_sampler **out);
DATTN_API void dattn_sampler_free(dattn_sampler *sampler);
/* New params; the random stream restarts from the new seed. */
DATTN_API dattn_status dattn_sampler_set_params(dattn_sampler *sampler,
                                                const dattn_sampler_params *params);
DATTN_API dattn_status dattn_sampler_get_params(const dattn_sampler *sampler,
                                                dattn_sampler_params *out);
/* Forget the recent tokens and restart the random stream. */
DATTN_API void dattn_sampler_reset(dattn_sampler *sampler);
/* Record a token the model saw (prompt tokens) for the repetition penalty. */
DATTN_API void dattn_sampler_accept(dattn_sampler *sampler, int32_t token);
/* Pick the next token from logits [vocab] (not modified) and record it. */
DATTN_API dattn_status dattn_sample(dattn_sampler *sampler, const float *logits, int32_t *token);

#ifdef __cplusplus
}
#endif
#endif /* DATTN_H */

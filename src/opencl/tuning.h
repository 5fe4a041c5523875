/* Per-device tuning of the OpenCL kernels (DESIGN §2): the row of
 * platforms/tuning.tsv that applies to a device, the number of KV splits for tiled flash decoding,
 * and the -D options the program is built with. Plain C, no OpenCL types: the table is data,
 * embedded at build time by tools/gen_tuning.py, and no vendor `if` lives in src/. */
#ifndef DATTN_TUNING_H
#define DATTN_TUNING_H

#include <stddef.h>

/* One row of platforms/tuning.tsv (the README there says what each field means). */
typedef struct tuning_row {
    const char *vendor;   /* CL_DEVICE_VENDOR pattern: "*", or '|'-separated case-insensitive
                           * substrings, each optionally anchored: "^x" prefix, "x$" suffix */
    const char *device;   /* CL_DEVICE_NAME pattern, same syntax */
    const char *name;     /* row label, e.g. "nvidia-hopper" (shown by `dattn devices`) */
    int wg_decode;        /* WG_DECODE: decode work-group size, a power of two */
    int wg_per_cu;        /* decode work-groups resident per compute unit (the split heuristic's
                           * C = compute units x wg_per_cu) */
    int prefill_qt;       /* PREFILL_QT: query rows per prefill work-group (a multiple of 4) */
    int prefill_kt;       /* PREFILL_KT: keys per prefill key tile (a multiple of 16); QT*KT/8 items */
    int gemv_wg;          /* GEMV_WG: GEMV work-group size */
    int gemv_rows;        /* GEMV_ROWS: output rows per GEMV work-group (divides GEMV_WG) */
    int n_split;          /* KV splits for decode: 0 = auto (tuning_splits), else fixed */
    int max_split;        /* MAX_SPLIT: upper bound on splits (the combine kernel's array size) */
    int acc_local;        /* ACC_IN_LOCAL: decode value sums between tiles in local memory (1)
                           * or in registers (0) */
} tuning_row;

/* The generated table (tools/gen_tuning.py from platforms/tuning.tsv), in file order; exactly one
 * row has vendor "*" and device "*" (the default). */
extern const tuning_row tuning_rows[];
extern const int tuning_n_rows;

/* How specific a row's patterns are; a lower level wins, and within a level the first row in
 * file order. */
typedef enum tuning_level {
    TUNING_LEVEL_DEVICE = 0,   /* the device pattern is one exact name: "^name$" */
    TUNING_LEVEL_FAMILY = 1,   /* any other device pattern: "H100|H200", "gfx1100", "^pthread-" */
    TUNING_LEVEL_VENDOR = 2,   /* device "*", vendor not "*" */
    TUNING_LEVEL_DEFAULT = 3,  /* vendor "*" and device "*" */
} tuning_level;

tuning_level tuning_row_level(const tuning_row *row);

/* 1 if `text` matches `pattern` (syntax above; NULL text matches only "*"), else 0. */
int tuning_match(const char *pattern, const char *text);

/* The row for a device, from the vendor and device name strings as OpenCL reports them
 * (CL_DEVICE_VENDOR, CL_DEVICE_NAME; NULL is taken as ""): the most specific matching row
 * (device, then family, then vendor level; first in file order within a level), else the default
 * row. Never NULL. */
const tuning_row *tuning_lookup(const char *vendor, const char *device_name);

/* The same search over a caller's table (for tests): NULL only if no row matches at all. */
const tuning_row *tuning_lookup_in(const tuning_row *rows, int n_rows, const char *vendor,
                                   const char *device_name);

/* The number of splits of the KV length for tiled flash decoding: the row's n_split if > 0, else
 * flash-attention's heuristic (see tuning.c) for n_work_items work-groups per split (e.g.
 * n_kv_heads x batch) on n_compute_units (the number of work-groups the device runs at once: its
 * compute units, times the work-groups each holds if more than one). Bounded by max_split, by
 * n_compute_units (auto only) and by n_kv_tiles, and always a count whose splits are all
 * non-empty: with t = ceil(n_kv_tiles / s) tiles per split, (s - 1) * t < n_kv_tiles. Returns >= 1
 * (1 for n_kv_tiles <= 1 or any argument <= 0). */
int tuning_splits(const tuning_row *row, int n_work_items, int n_kv_tiles, int n_compute_units);

/* The launch of the decode split kernel (cl/diffattn_decode.cl) for one step. */
typedef struct tuning_decode {
    int wg;            /* work-group size: the row's wg_decode, halved until it fits */
    int heads;         /* query heads per work-group: the largest divisor of the group <= 4, or 1
                        * while the context is too short to fill the device with those */
    int tile_keys;     /* slots per tile: wg * (keys per K chunk) / 2 */
    int local_bytes;   /* the split kernel's local memory at that work-group */
    int n_tiles;       /* tiles of the slots in use */
    int n_split;       /* splits per (KV head, head block) */
    int split_pages;   /* KV pages per split: whole tiles */
    int groups;        /* work-groups of the launch: n_split x n_kv_heads x group / heads */
    int acc_local;     /* ACC_IN_LOCAL: the row's acc_local */
} tuning_decode;

/* The decode launch for kv_type (0 f32, 1 f16, 2 q8), head_dim d (of one softmax half), group
 * query heads per KV head, n_kv_heads, n_used slots in use (min(t + 1, slots of the cache)) on a
 * device with compute_units, local_mem bytes of local memory and max_wg items a work-group: the
 * same sizes cl/diffattn_decode.cl is built with (WG_DECODE, HEADS) and launched at. The split
 * count is tuning_splits over the tiles with C = compute_units x row->wg_per_cu. wg does not
 * depend on n_used; heads takes at most two values over all n_used (one query head a work-group
 * below a context length, the largest head block from there on). Returns 0, or -1
 * if no work-group of 16 or more items fits (out is then zeroed). */
int tuning_decode_plan(const tuning_row *row, int kv_type, int head_dim, int group, int n_kv_heads,
                       long long n_used, int compute_units, size_t local_mem, size_t max_wg,
                       tuning_decode *out);

/* Applies "field=value,field=value" (the tuning.tsv column names, e.g. "prefill_qt=64,wg_decode=32";
 * n_split also takes "auto") to a copy of a row: the override of the backend params (the tools' DATTN_TUNING),
 * applied at creation, to try values without rebuilding. Returns 0, or -1 with the fault in why. Values
 * are only range-checked here; the host checks them against the device before any launch. */
int tuning_override(tuning_row *row, const char *spec, char *why, size_t why_n);

#endif

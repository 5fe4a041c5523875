/* Per-device tuning (DESIGN §2): picks the row of the embedded platforms/ table
 * for a device (device name -> family -> vendor -> default), decides the KV split count of tiled
 * flash decoding with flash-attention's heuristic, and writes the -D build options. Plain C: no
 * OpenCL header, no allocation, no I/O. */
#include <stddef.h>
#include <stdio.h>
#include <limits.h>
#include <string.h>

#include "tuning.h"

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c; }

/* Case-insensitive (ASCII) comparison of n bytes. */
static int same_ci(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

/* One alternative p[0..n) of a pattern against text: "^x" = prefix, "x$" = suffix, "^x$" = the
 * whole text, else a substring. */
static int match_one(const char *p, size_t n, const char *text)
{
    int head = n > 0 && p[0] == '^';
    if (head) {
        p++;
        n--;
    }
    int tail = n > 0 && p[n - 1] == '$';
    if (tail)
        n--;
    size_t len = strlen(text);
    if (n > len)
        return 0;
    if (head && tail)
        return n == len && same_ci(p, text, n);
    if (head)
        return same_ci(p, text, n);
    if (tail)
        return same_ci(p, text + len - n, n);
    for (size_t i = 0; i + n <= len; i++)
        if (same_ci(p, text + i, n))
            return 1;
    return 0;
}

int tuning_match(const char *pattern, const char *text)
{
    if (!pattern)
        return 0;
    if (strcmp(pattern, "*") == 0)
        return 1;
    if (!text)
        text = "";
    for (const char *p = pattern;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n > 0 && match_one(p, n, text))
            return 1;
        if (!bar)
            return 0;
        p = bar + 1;
    }
}

/* 1 if every alternative of the pattern is anchored at both ends ("^name$|^other$"). */
static int exact_names(const char *pattern)
{
    for (const char *p = pattern;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n < 2 || p[0] != '^' || p[n - 1] != '$')
            return 0;
        if (!bar)
            return 1;
        p = bar + 1;
    }
}

tuning_level tuning_row_level(const tuning_row *row)
{
    int any_device = strcmp(row->device, "*") == 0;
    if (any_device)
        return strcmp(row->vendor, "*") == 0 ? TUNING_LEVEL_DEFAULT : TUNING_LEVEL_VENDOR;
    return exact_names(row->device) ? TUNING_LEVEL_DEVICE : TUNING_LEVEL_FAMILY;
}

const tuning_row *tuning_lookup_in(const tuning_row *rows, int n_rows, const char *vendor,
                                   const char *device_name)
{
    const tuning_row *best = NULL;
    tuning_level best_level = TUNING_LEVEL_DEFAULT;
    if (!vendor)
        vendor = "";
    if (!device_name)
        device_name = "";
    for (int i = 0; i < n_rows; i++) {
        const tuning_row *r = &rows[i];
        if (!tuning_match(r->vendor, vendor) || !tuning_match(r->device, device_name))
            continue;
        tuning_level level = tuning_row_level(r);
        if (!best || level < best_level) {   /* strict: the first row of a level stays */
            best = r;
            best_level = level;
        }
    }
    return best;
}

const tuning_row *tuning_lookup(const char *vendor, const char *device_name)
{
    const tuning_row *r = tuning_lookup_in(tuning_rows, tuning_n_rows, vendor, device_name);
    /* gen_tuning.py refuses a table without a "*" "*" row, so r is never NULL; the fallback
     * keeps the promise even for a hand-built table. */
    static const tuning_row fallback = {"*", "*", "builtin-default", 64, 2, 16, 32, 64, 4, 0, 16, 0};
    return r ? r : &fallback;
}

/* ---- KV splits ------------------------------------------------------------------------------
 *
 * flash-attention's num_splits_heuristic (csrc/flash_attn/flash_api.cpp), for b work-groups per
 * split (batch x heads), C work-groups resident at once, T KV tiles and a cap M:
 *
 *   if b >= 0.8 C: 1 split (the device is nearly full without splitting)
 *   M' = min(M, C, T)
 *   s in 1..M' is eligible iff s = 1 or ceil(T/s) != ceil(T/(s-1))  (else the last split is empty
 *       and s tiles the KV exactly as s-1 does)
 *   eff(s) = w(s) / ceil(w(s)), w(s) = b s / C                     ("wave efficiency")
 *   answer = the smallest eligible s with eff(s) >= 0.85 max_{eligible s'} eff(s')
 *
 * e.g. b = 48, C = 108: eff(1) = 0.44, eff(2) = 0.89, eff(3) = 0.67 -> 2 splits. flash-attention
 * passes C = 2 x the SM count (two CTAs per SM); here the caller says what is resident.
 * The comparisons are done exactly in integers: eff(s) = b s / (C ceil(b s / C)), so with k(s) =
 * ceil(b s / C), eff(s1) > eff(s2) iff s1 k(s2) > s2 k(s1), b >= 0.8 C iff 5 b >= 4 C, and
 * eff(s) >= 0.85 eff(s*) iff 100 s k(s*) >= 85 s* k(s). So the answer is the same on every
 * machine; it differs from a floating-point evaluation only at exact ties, eff(s) = 0.85 max (e.g.
 * b = 19, C = 47, T = 40: eff(2) = 38/47 = 0.85 x 760/799 = 0.85 eff(40)), where rounding may go
 * either way and the exact rule takes s.
 * -------------------------------------------------------------------------------------------- */

static long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

/* The smallest split count that tiles T exactly as s does (every split non-empty). */
static int nonempty_splits(int s, int n_kv_tiles)
{
    long long per = ceil_div(n_kv_tiles, s);
    return (int)ceil_div(n_kv_tiles, per);
}

int tuning_splits(const tuning_row *row, int n_work_items, int n_kv_tiles, int n_compute_units)
{
    if (!row || n_kv_tiles <= 1 || n_work_items <= 0 || n_compute_units <= 0)
        return 1;
    int cap = row->max_split > 0 ? row->max_split : 1;
    if (cap > n_kv_tiles)
        cap = n_kv_tiles;
    if (row->n_split > 0) {
        int s = row->n_split < cap ? row->n_split : cap;
        return nonempty_splits(s, n_kv_tiles);
    }
    long long b = n_work_items, c = n_compute_units, t = n_kv_tiles;
    if (5 * b >= 4 * c)
        return 1;
    if (cap > n_compute_units)
        cap = n_compute_units;
    int best_s = 1;
    long long best_k = 1;   /* eff(1) = b / (C k(1)), k(1) = 1 since b < C */
    for (int s = 2; s <= cap; s++) {
        if (ceil_div(t, s) == ceil_div(t, s - 1))
            continue;
        long long k = ceil_div(b * s, c);
        if ((long long)s * best_k > (long long)best_s * k) {
            best_s = s;
            best_k = k;
        }
    }
    for (int s = 1; s <= cap; s++) {
        if (s > 1 && ceil_div(t, s) == ceil_div(t, s - 1))
            continue;
        long long k = ceil_div(b * s, c);
        if (100LL * s * best_k >= 85LL * best_s * k)
            return s;
    }
    return 1;   /* not reached: s = best_s always qualifies */
}

/* Local memory of diffattn_decode_split (see its header comment): the queries as float4 per
 * dim and half, the float4 reduction buffers, the weights [2*heads][tile] (or the value sums
 * of the key groups, if larger), and with ACC_IN_LOCAL the key groups' value sums. */
/* Keys per K chunk of diffattn_decode.cl (KPC): 16 bytes of f32 or f16, 8 of q8. */
static int decode_kpc(int kv_type) { return kv_type == 0 ? 4 : 8; }

static long long decode_local_bytes(int wg, int kv_type, int d, int heads, int acc_local)
{
    int kpc = decode_kpc(kv_type);
    int vce = (2 * d) % kpc == 0 ? kpc : (2 * d) % 4 == 0 ? 4 : 2;   /* as the kernel's VCE */
    long long tile = (long long)wg * kpc / 2, vch = 2LL * d / vce;
    long long kg = wg >= vch ? wg / vch : 1;
    long long wt = 2LL * heads * tile > kg * 2 * d ? 2LL * heads * tile : kg * 2 * d;
    long long acc = acc_local ? kg * 2 * heads * 2 * d : 0;
    return 16LL * 2 * (d + 1) + 16LL * (wg + wg / 8) + 4 * (wt + acc);
}

int tuning_decode_plan(const tuning_row *row, int kv_type, int head_dim, int group, int n_kv_heads,
                       long long n_used, int compute_units, size_t local_mem, size_t max_wg,
                       tuning_decode *out)
{
    memset(out, 0, sizeof *out);
    if (!row || head_dim < 1 || group < 1 || n_kv_heads < 1 || kv_type < 0 || kv_type > 2)
        return -1;
    int heads_max = 1;
    for (int h = 4; h >= 1; h--)
        if (group % h == 0) {
            heads_max = h;
            break;
        }
    /* The work-group size fits the largest head block; a smaller block needs less memory. */
    int wg = row->wg_decode;
    while (wg >= 16 && ((size_t)wg > max_wg ||
                        decode_local_bytes(wg, kv_type, head_dim, heads_max, row->acc_local) >
                            (long long)local_mem))
        wg /= 2;
    if (wg < 16)
        return -1;
    int kpc = decode_kpc(kv_type);
    out->wg = wg;
    out->tile_keys = wg * kpc / 2;
    out->acc_local = row->acc_local ? 1 : 0;
    long long pages = (n_used + 31) / 32, tile_pages = out->tile_keys / 32;
    out->n_tiles = (int)ceil_div(pages > 0 ? pages : 1, tile_pages);
    long long c = (long long)compute_units * (row->wg_per_cu > 0 ? row->wg_per_cu : 1);
    /* Head blocks: the KV head's query heads together (up to 4) read each K/V byte once for all
     * of them. While even splits of one tile each leave over a fifth of the C resident
     * work-groups of the device without work (a short context on a large GPU: S2 at 16K on an H100, 4 KV heads x 32
     * tiles = 128 work-groups for 528), one query head a work-group multiplies the work-groups by
     * the group; every K/V byte is then read by each of its query heads, the repeats mostly from
     * L2, as the heads of one split run side by side. Only these two sizes, so a cache builds at
     * most two variants of the kernel, and the choice flips once as the context grows. */
    int heads = heads_max;
    if (heads_max > 1 && 5LL * n_kv_heads * (group / heads_max) * out->n_tiles < 4 * c)
        heads = 1;   /* under 80% of C, as tuning_splits counts a device full */
    out->heads = heads;
    out->local_bytes = (int)decode_local_bytes(wg, kv_type, head_dim, heads, out->acc_local);
    int blocks = n_kv_heads * (group / heads);
    out->n_split = tuning_splits(row, blocks, out->n_tiles, c > INT_MAX ? INT_MAX : (int)c);
    out->split_pages = (int)(ceil_div(out->n_tiles, out->n_split) * tile_pages);
    out->groups = out->n_split * blocks;
    return 0;
}

int tuning_override(tuning_row *row, const char *spec, char *why, size_t why_n)
{
    static const struct { const char *name; size_t off; } fields[] = {
        {"wg_decode", offsetof(tuning_row, wg_decode)},
        {"wg_per_cu", offsetof(tuning_row, wg_per_cu)},
        {"prefill_qt", offsetof(tuning_row, prefill_qt)},
        {"prefill_kt", offsetof(tuning_row, prefill_kt)},
        {"gemv_wg", offsetof(tuning_row, gemv_wg)},
        {"gemv_rows", offsetof(tuning_row, gemv_rows)},
        {"n_split", offsetof(tuning_row, n_split)},
        {"max_split", offsetof(tuning_row, max_split)},
        {"acc_local", offsetof(tuning_row, acc_local)},
    };
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t i, key_len = eq ? (size_t)(eq - p) : len;
        for (i = 0; i < sizeof fields / sizeof *fields; i++)
            if (strlen(fields[i].name) == key_len && !strncmp(fields[i].name, p, key_len))
                break;
        if (!eq || i == sizeof fields / sizeof *fields) {
            snprintf(why, why_n, "'%.*s' is not field=value with a tuning.tsv column (wg_decode, "
                     "wg_per_cu, prefill_qt, prefill_kt, gemv_wg, gemv_rows, n_split, max_split, acc_local)",
                     (int)len, p);
            return -1;
        }
        const char *v = eq + 1;
        size_t v_len = len - key_len - 1;
        long value = 0;
        int ok = v_len > 0 && v_len < 8;
        if (ok && v_len == 4 && !strncmp(v, "auto", 4) && !strcmp(fields[i].name, "n_split"))
            value = 0;
        else
            for (size_t c = 0; ok && c < v_len; c++) {
                ok = v[c] >= '0' && v[c] <= '9';
                value = value * 10 + (v[c] - '0');
            }
        int is_flag = !strcmp(fields[i].name, "acc_local");
        if (is_flag && (!ok || value > 1)) {
            snprintf(why, why_n, "'%.*s': the value must be 0 or 1", (int)len, p);
            return -1;
        }
        if (!ok || value > 4096 || (value < 1 && strcmp(fields[i].name, "n_split") && !is_flag)) {
            snprintf(why, why_n, "'%.*s': the value must be a whole number 1..4096", (int)len, p);
            return -1;
        }
        *(int *)((char *)row + fields[i].off) = (int)value;
        p = end ? end + 1 : p + len;
    }
    return 0;
}

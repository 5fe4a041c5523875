/* rmsnorm.cl: RMSNorm of each row (DESIGN §1, the pre-norms and the final norm):
 *
 *   y[row][i] = x[row0 + row][i] / sqrt(mean_i(x[row0 + row][i]^2) + eps) * w[i],   i < n
 *
 * (row0: the first row of x to norm; the final norm takes only the rows that make logits.)
 *
 * residual_add_norm: the model pass's residual add and, with has_norm, the next block's pre-norm
 * in the same pass over the rows (one launch instead of two per block):
 *
 *   x[row][i] += y[row][i];  xn[row][i] = x[row][i] / sqrt(mean_i(x[row][i]^2) + eps) * w[i]
 *
 * recording a non-finite y, or sum, in fault[at .. at+1] (below).
 *
 * Work: one work-group of WG_SIZE work-items per row (global size = n_rows * WG_SIZE); item l
 * handles elements l, l + WG_SIZE, ... Access: the row is read twice (sum of squares, then scale)
 * and written once, adjacent items on adjacent floats: coalesced; w is read once per row.
 * Local memory: WG_SIZE * 4 bytes (the tree reduction of the sum of squares).
 * y may alias x when row0 is 0. */

#ifndef WG_SIZE
#define WG_SIZE 256          /* work-items per row; a power of two */
#endif
#if WG_SIZE < 1 || (WG_SIZE & (WG_SIZE - 1)) != 0
#error "WG_SIZE must be a power of two"
#endif

/* The sum of every item's v over the work-group (a tree in local memory), for every item. */
static float group_sum(__local float *red, float v, int lid)
{
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG_SIZE / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return red[0];
}

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1)))
void rmsnorm(__global const float *x, __global const float *w, __global float *y, int n, float eps,
             int row0)
{
    __local float red[WG_SIZE];
    const int lid = (int)get_local_id(0);
    const size_t row = get_group_id(0);
    __global const float *xr = x + (row0 + row) * (size_t)n;
    __global float *yr = y + row * (size_t)n;

    float ss = 0.0f;
    for (int i = lid; i < n; i += WG_SIZE)
        ss = fma(xr[i], xr[i], ss);
    const float inv = 1.0f / sqrt(group_sum(red, ss, lid) / (float)n + eps);
    for (int i = lid; i < n; i += WG_SIZE)
        yr[i] = xr[i] * inv * w[i];
}

/* The fault record of a model pass, two ints the host clears to INT_MAX at the chunk's start:
 * fault[at] = the pass index (2 * layer + block) of the first add that met a non-finite value,
 * fault[at + 1] = 2 * token + in_sum of its first such token (in_sum: the block's output was
 * finite there, the sum was not). The adds of a chunk run in order on an in-order queue, so an
 * add that finds an earlier index recorded leaves the record alone; within one add, atomic_min
 * keeps the first token. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1)))
void residual_add_norm(__global float *x, __global const float *y, __global const float *w,
                       __global float *xn, int n, float eps, int has_norm, __global int *fault,
                       int at, int index)
{
    __local float red[WG_SIZE];
    const int lid = (int)get_local_id(0);
    const size_t row = get_group_id(0);
    __global float *xr = x + row * (size_t)n;
    __global const float *yr = y + row * (size_t)n;

    float ss = 0.0f;
    int code = INT_MAX;                /* this item's fault code, 2 * row + in_sum */
    for (int i = lid; i < n; i += WG_SIZE) {
        const float v = yr[i], s = xr[i] + v;
        xr[i] = s;
        ss = fma(s, s, ss);
        if (!(isfinite(v) && isfinite(s)))
            code = min(code, 2 * (int)row + (isfinite(v) ? 1 : 0));
    }
    if (code != INT_MAX && fault[at] >= index) {
        atomic_min(&fault[at], index);
        atomic_min(&fault[at + 1], code);
    }
    /* the sum runs either way: no return ahead of a barrier (PoCL's work-group loops need every
     * item to reach each one) */
    const float total = group_sum(red, ss, lid);
    if (!has_norm)                     /* the pass's last add */
        return;
    const float inv = 1.0f / sqrt(total / (float)n + eps);
    __global float *yn = xn + row * (size_t)n;
    for (int i = lid; i < n; i += WG_SIZE)   /* the sums this item wrote itself */
        yn[i] = xr[i] * inv * w[i];
}

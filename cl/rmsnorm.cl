/* rmsnorm.cl: RMSNorm of each row (DESIGN §1, the pre-norms and the final norm):
 *
 *   y[row][i] = x[row0 + row][i] / sqrt(mean_i(x[row0 + row][i]^2) + eps) * w[i],   i < n
 *
 * (row0: the first row of x to norm; the final norm takes only the rows that make logits.)
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
    red[lid] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG_SIZE / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.0f / sqrt(red[0] / (float)n + eps);
    for (int i = lid; i < n; i += WG_SIZE)
        yr[i] = xr[i] * inv * w[i];
}

/* gemv.cl: the projections of one decode step (DESIGN §1 steps 1 and 7 for a single token):
 *
 *   y[c] = sum_t W[c][t] * x[t],   c < m, t < k
 *
 * for an nn.Linear weight W [m][k], row-major, stored as f32 (WEIGHT_F16 = 0) or as IEEE half
 * bits read with vload_half (WEIGHT_F16 = 1; core OpenCL 1.2, no cl_khr_fp16 needed).
 *
 * Work: one work-group of GEMV_WG items computes GEMV_ROWS consecutive rows (global size =
 * ceil(m / GEMV_ROWS) * GEMV_WG). Each row gets LANES = GEMV_WG / GEMV_ROWS items that stride
 * over t, adjacent items on adjacent weights: loads are coalesced and every weight byte is read
 * exactly once per call, which is what a memory-bound decode step costs. x is read once per row
 * group (it stays in cache). Local memory: GEMV_WG * 4 bytes for the per-row tree reduction. */

#ifndef GEMV_WG
#define GEMV_WG 256          /* work-items per work-group; a power of two */
#endif
#ifndef GEMV_ROWS
#define GEMV_ROWS 4          /* rows per work-group; a power of two dividing GEMV_WG */
#endif
#ifndef WEIGHT_F16
#define WEIGHT_F16 0
#endif
#if GEMV_WG < 1 || (GEMV_WG & (GEMV_WG - 1)) != 0
#error "GEMV_WG must be a power of two"
#endif
#if GEMV_ROWS < 1 || (GEMV_ROWS & (GEMV_ROWS - 1)) != 0 || GEMV_ROWS > GEMV_WG
#error "GEMV_ROWS must be a power of two no larger than GEMV_WG"
#endif
#define LANES (GEMV_WG / GEMV_ROWS)

#if WEIGHT_F16
#define WEIGHT_T half
#define LOAD_W(p, i) vload_half((i), (p))
#else
#define WEIGHT_T float
#define LOAD_W(p, i) ((p)[i])
#endif

__kernel __attribute__((reqd_work_group_size(GEMV_WG, 1, 1)))
void gemv(__global const WEIGHT_T *w, __global const float *x, __global float *y, int m, int k)
{
    __local float red[GEMV_WG];
    const int lid = (int)get_local_id(0);
    const int lane = lid % LANES;
    const int row = (int)get_group_id(0) * GEMV_ROWS + lid / LANES;

    float acc = 0.0f;
    if (row < m) {
        __global const WEIGHT_T *wr = w + (size_t)row * (size_t)k;
        for (int t = lane; t < k; t += LANES)
            acc = fma(LOAD_W(wr, t), x[t], acc);
    }
    red[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = LANES / 2; s > 0; s >>= 1) {
        if (lane < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lane == 0 && row < m)
        y[row] = red[lid];
}

/* gemv.cl: the projections of one decode step (DESIGN §1 steps 1 and 7 for a single token):
 *
 *   y[c] = sum_t W[c][t] * x[t],   c < m, t < k
 *
 * for an nn.Linear weight W [m][k], row-major, stored as f32 (WEIGHT_F16 = 0) or as IEEE half
 * bits read with vload_half (WEIGHT_F16 = 1; core OpenCL 1.2, no cl_khr_fp16 needed).
 *
 * Work: one work-group of GEMV_WG items computes GEMV_ROWS consecutive rows (global size =
 * ceil(m / GEMV_ROWS) * GEMV_WG). Each row gets LANES = GEMV_WG / GEMV_ROWS items that stride
 * over t, adjacent items on adjacent 16-byte chunks of weights (4 f32 or 8 f16, when k is a
 * multiple of that, so every row is 16-byte aligned; else one weight at a time): loads are
 * coalesced and every weight byte is read exactly once per call, which is what a memory-bound
 * decode step costs. x is read once per row
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
#define VEC 8                /* weights per 16-byte load */
#else
#define WEIGHT_T float
#define LOAD_W(p, i) ((p)[i])
#define VEC 4
#endif

/* VEC weights of a row from one 16-byte load, converted in registers (a vload_half8 on global
 * memory would be eight 2-byte loads), dotted with x[t .. t+VEC). */
static inline float dot_vec(__global const WEIGHT_T *wr, __global const float *x, int t)
{
    const float4 x0 = *(__global const float4 *)(x + t);     /* t is a multiple of VEC */
#if WEIGHT_F16
    const uint4 raw = *(__global const uint4 *)(wr + t);
    const float8 w = vload_half8(0, (const __private half *)&raw);
    const float4 x1 = *(__global const float4 *)(x + t + 4);
    return dot(w.lo, x0) + dot(w.hi, x1);
#else
    return dot(*(__global const float4 *)(wr + t), x0);
#endif
}

__kernel __attribute__((reqd_work_group_size(GEMV_WG, 1, 1)))
void gemv(__global const WEIGHT_T *restrict w, __global const float *restrict x,
          __global float *restrict y, int m, int k)
{
    __local float red[GEMV_WG];
    const int lid = (int)get_local_id(0);
    const int lane = lid % LANES;
    const int row = (int)get_group_id(0) * GEMV_ROWS + lid / LANES;

    float acc = 0.0f, acc2 = 0.0f;
    if (row < m) {
        __global const WEIGHT_T *wr = w + (size_t)row * (size_t)k;
        if (k % VEC == 0) {
            /* every row starts 16-byte aligned: lanes take adjacent 16-byte chunks (a
             * work-group's loads are whole runs of a row), two chunks in flight per item */
            int t = lane * VEC;
            for (; t + LANES * VEC < k; t += 2 * LANES * VEC) {
                acc += dot_vec(wr, x, t);
                acc2 += dot_vec(wr, x, t + LANES * VEC);
            }
            if (t < k)
                acc += dot_vec(wr, x, t);
        } else {
            for (int t = lane; t < k; t += LANES)
                acc = fma(LOAD_W(wr, t), x[t], acc);
        }
    }
    red[lid] = acc + acc2;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = LANES / 2; s > 0; s >>= 1) {
        if (lane < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lane == 0 && row < m)
        y[row] = red[lid];
}

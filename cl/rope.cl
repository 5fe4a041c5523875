/* rope.cl: interleaved (GPT-J) rotary embedding (DESIGN §1 step 2), times a scale:
 *
 *   for v < n_vec, i < HEAD_DIM/2, a = pos * inv_freq[i]   (inv_freq[i] = theta^(-2i/d), from the host):
 *     y[v][2i]   = scale * (x[v][2i] cos a - x[v][2i+1] sin a)
 *     y[v][2i+1] = scale * (x[v][2i] sin a + x[v][2i+1] cos a)
 *
 * scale is 1 for keys and 1/sqrt(d) for queries (so the decode kernel gets pre-scaled queries).
 *
 * Angle accuracy. pos * inv_freq in f32 is useless for large pos (at pos = 2^31 one ulp of the
 * angle is 256 rad). The kernel reduces the *exact* product instead: the f32 inv_freq is m * 2^-sh
 * with m a 24-bit integer, so pos * m is an exact 55-bit integer N; N times a 128-bit fixed-point
 * 1/(2 pi), shifted right by sh, gives the fraction of a turn to ~2^-60 (Payne-Hanek reduction in
 * 64-bit integer arithmetic, core OpenCL C). The angle fed to sin/cos is then in [-pi, pi) with an
 * absolute error of ~2^-32 turns (1.5e-9 rad) for every pos in [0, 2^31). inv_freq must be finite,
 * in [0, 2^23).
 *
 * Work: one work-item per (pair i = global id 0, vector v = global id 1, row r = global id 2);
 * global size (HEAD_DIM/2 rounded up, n_vec rounded up, rows), any work-group size. Access: each
 * item reads and writes 8 adjacent bytes (coalesced across items); inv_freq is read once per item
 * (cached). Local memory: none. y may alias x (in place); x and y are [rows][n_vec][HEAD_DIM]. */

#ifndef HEAD_DIM
#define HEAD_DIM 64          /* d: the dim of one softmax half */
#endif
#if HEAD_DIM < 2 || HEAD_DIM % 2 != 0
#error "HEAD_DIM must be even and at least 2"
#endif

/* frac(1/(2 pi)) * 2^128, as two 64-bit words */
#define INV_2PI_HI 0x28be60db9391054aUL
#define INV_2PI_LO 0x7f09d5f47d4d3770UL

/* pos * f reduced modulo 2 pi, in [-pi, pi). */
static float rope_angle(int pos, float f)
{
    const uint u = as_uint(fabs(f));
    const uint e = u >> 23, man = u & 0x7fffffu;
    const ulong m = e ? (ulong)(man | 0x800000u) : (ulong)man;
    const int sh = e ? 150 - (int)e : 149;                /* |f| = m * 2^-sh */
    const ulong n = (ulong)(pos < 0 ? -(long)pos : (long)pos) * m;   /* exact, < 2^55 */
    /* P = n / (2 pi) = ip + mid * 2^-64 (+ under 2^-64) */
    const ulong lo1 = n * INV_2PI_HI, hi1 = mul_hi(n, INV_2PI_HI), hi2 = mul_hi(n, INV_2PI_LO);
    const ulong mid = lo1 + hi2;
    const ulong ip = hi1 + (mid < lo1 ? 1UL : 0UL);
    /* top 64 bits of frac(P * 2^-sh): the turn fraction of the angle */
    ulong fr;
    if (sh <= 0)
        fr = mid << (-sh);                               /* not reached for inv_freq < 2^23 */
    else if (sh < 64)
        fr = (ip << (64 - sh)) | (mid >> sh);
    else if (sh == 64)
        fr = ip;
    else if (sh < 128)
        fr = ip >> (sh - 64);
    else
        fr = 0;
    /* the top 32 bits as a signed fraction of a turn: [-1/2, 1/2) */
    float a = (float)as_int((uint)(fr >> 32)) * 1.46291807926715968e-9f;   /* 2 pi / 2^32 */
    const int neg = (f < 0.0f) != (pos < 0);
    return neg ? -a : a;
}

/* Rows of n_vec vectors (row r of x at r * n_vec * HEAD_DIM): row r is at position
 * min(pos0 + r, pos_cap) — pos_cap is the StreamingLLM cache position's ceiling for q_sink, and
 * INT_MAX otherwise. Global size (>= HEAD_DIM/2, >= n_vec, rows). */
__kernel void rope(__global const float *x, __global float *y, int n_vec, int pos0, int pos_cap,
                   __global const float *inv_freq, float scale)
{
    const int i = (int)get_global_id(0), v = (int)get_global_id(1), r = (int)get_global_id(2);
    if (i >= HEAD_DIM / 2 || v >= n_vec)
        return;
    const int pos = min(pos0 + r, pos_cap);
    const float a = rope_angle(pos, inv_freq[i]);
    const float c = cos(a) * scale, s = sin(a) * scale;
    const size_t o = ((size_t)r * n_vec + v) * HEAD_DIM + 2 * (size_t)i;
    const float x0 = x[o], x1 = x[o + 1];
    y[o] = x0 * c - x1 * s;
    y[o + 1] = x0 * s + x1 * c;
}

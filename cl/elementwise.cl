/* elementwise.cl: the element-wise steps of the LLaMA-shaped block (DESIGN §1, "the model around it").
 *
 *   swiglu: y[i] = silu(a[i]) * b[i] = a[i] * sigmoid(a[i]) * b[i]   (a = x W1ᵀ, b = x W3ᵀ), i < n
 *   add:    y[i] += x[i]                                              (residual add), i < n
 *   swiglu_rows: h [n][2F] holds x W1ᵀ | x W3ᵀ per row (the stacked w13 weight's GEMM);
 *           h[r][c] = silu(h[r][c]) * h[r][F + c], c < F, in place (the next GEMM reads the
 *           first F columns with row stride 2F)
 *
 * Work: one work-item per element (swiglu_rows: per (column c = dim 0, row r = dim 1)), any
 * work-group size (the host rounds the global size up; items past n or F return). Access: each byte of every operand is read once, adjacent work-items touch
 * adjacent floats, so every load and store is coalesced. Local memory: none.
 * y may alias a or b in swiglu (each item reads its own element before writing it). */

__kernel void swiglu(__global const float *a, __global const float *b, __global float *y, int n)
{
    const size_t i = get_global_id(0);
    if (i >= (size_t)n)
        return;
    const float x = a[i];
    /* x * sigmoid(x) = x / (1 + exp(-x)); for x << 0, exp(-x) = inf gives -0, the right limit */
    y[i] = x / (1.0f + exp(-x)) * b[i];
}

__kernel void add(__global float *y, __global const float *x, int n)
{
    const size_t i = get_global_id(0);
    if (i >= (size_t)n)
        return;
    y[i] += x[i];
}

__kernel void swiglu_rows(__global float *h, int f)
{
    const size_t c = get_global_id(0), r = get_global_id(1);
    if (c >= (size_t)f)
        return;
    __global float *row = h + r * 2 * (size_t)f;
    const float x = row[c];
    row[c] = x / (1.0f + exp(-x)) * row[f + c];
}

/* elementwise.cl: the element-wise steps of the LLaMA-shaped block (DESIGN §1, "the model around it").
 *
 *   swiglu: y[i] = silu(a[i]) * b[i] = a[i] * sigmoid(a[i]) * b[i]   (a = x W1ᵀ, b = x W3ᵀ), i < n
 *   add:    y[i] += x[i]                                              (residual add), i < n
 *
 * Work: one work-item per element, any work-group size (the host rounds the global size up; items
 * past n return). Access: each byte of every operand is read once, adjacent work-items touch
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

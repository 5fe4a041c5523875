// Float64 reference of one Differential-attention layer (DESIGN §1) and of StreamingLLM sink+window
// attention (DESIGN §4), for the C unit tests. Written from DESIGN alone; shares nothing with src/.
// Only libc/libm; allocates with malloc. Arrays are row-major; shapes are in the comments.
#ifndef DATTN_TESTS_REF_F64_H
#define DATTN_TESTS_REF_F64_H

typedef struct ref_shape {
    int model_dim;      // E
    int n_heads;        // H diff heads
    int n_kv_heads;     // Hkv, H % Hkv == 0
    int layer_index;    // l, counts from 0: lambda_init = 0.8 - 0.6 exp(-0.3 l)
    double rope_theta;  // usually 10000
    int head_dim;       // d (even, for RoPE); 0: E / H / 2. The attention width is A = 2 H d.
} ref_shape;

// nn.Linear layouts ([out][in], y = x W^T), r = H / Hkv.
typedef struct ref_weights {
    const double *q_proj;     // [A][E]
    const double *k_proj;     // [A/r][E]
    const double *v_proj;     // [A/r][E]
    const double *out_proj;   // [E][A]
    const double *lambda_q1;  // [d]
    const double *lambda_k1;  // [d]
    const double *lambda_q2;  // [d]
    const double *lambda_k2;  // [d]
    const double *subln;      // [2d]
} ref_weights;

// y [n][out] = x [n][in] W^T, W [out][in].
void ref_linear(const double *x, int n, int in, const double *w, int out, double *y);

// Interleaved (GPT-J) RoPE in place on v [n_vec][dim] (dim even): pair (v[2i], v[2i+1]) is rotated
// by the angle pos * theta^(-2i/dim).
void ref_rope(double *v, int n_vec, int dim, double pos, double theta);

// y [n] = x / sqrt(mean(x^2) + eps) * w * scale; w [n] may be NULL (all ones). y may alias x.
void ref_rmsnorm(const double *x, int n, const double *w, double eps, double scale, double *y);

// lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init(l). NAN on bad shapes.
double ref_lambda(const ref_shape *s, const ref_weights *w);

// The layer on T tokens x [T][E] at positions 0..T-1, causal: y [T][E]. 0, or -1 on bad shapes.
int ref_layer(const ref_shape *s, const ref_weights *w, const double *x, int T, double *y);

// StreamingLLM attention sinks, rebuilt from scratch for every token t (no cache reuse): token t sees
// tokens 0..min(n_sink, t+1)-1 and max(n_sink, t-window+1)..t. Keys and the query are rotated with
// positions WITHIN that cache (sinks at 0..n_sink-1, then the window tokens in order; the query sits
// at the last position). n_sink >= 0, window >= 1. y [T][E]. 0, or -1 on bad shapes.
int ref_layer_sink_window(const ref_shape *s, const ref_weights *w, const double *x, int T,
                          int n_sink, int window, double *y);

#endif

/* Our C kernels' functions, shared by the C files that call one another (decoder_layer.c) and by their torch
 * operators (ops.cpp). Layouts and return codes are described beside each definition. */
#ifndef LLM_INFER_KERNELS_H
#define LLM_INFER_KERNELS_H

#include <stdint.h>

/* small_batch_linear.c: y = x @ w.T (+ bias) for a few rows of x */
void linear_f32(const float *x, const float *w, const float *bias, float *y, long rows, long n, long k);
void linear_int8(const float *x, const int8_t *w, const float *scale, const float *bias, float *y, long rows, long n,
                 long k);
int linear_w8a8(const float *x, const int8_t *w, const float *scale, const float *bias, float *y, long rows, long n,
                long k);
int linear_int4(const float *x, const uint8_t *codes, const float *scale, const float *low, const float *bias,
                float *y, long rows, long n, long k);
int linear_w4a8(const float *x, const uint8_t *codes, const float *scale, const float *low, const float *bias,
                float *y, long rows, long n, long k);
int panel_width(void);
void linear_f32_panels(const float *x, const float *panels, const float *bias, float *y, long rows, long n, long k);
int kernel_threads(void);

/* paged_attention.c: one query token per sequence against its keys and values in a paged pool */
int paged_decode_attention_f32(const float *q, const float *key_pool, const float *value_pool, const int64_t *tables,
                               const int64_t *lens, float *out, long rows, long heads, long kv_heads, long head_dim,
                               long num_blocks, long block_size, long max_blocks, float scale);

/* decoder_layer.c: a decoder layer's seven projections in the order q, k, v, o, gate, up, down; scales[i] NULL for
 * float32 weights, lows[i] NULL for float32 and int8 ones */
typedef struct {
    const void *weights[7];
    const float *scales[7];
    const float *lows[7];
    int panels; /* float32 weights laid out in panels (small_batch_linear.c's panel GEMM), not in rows */
    int int8_activations; /* int8 or int4 weights meet x quantised per block of 32 (linear_w8a8, linear_w4a8) */
} projections;

int decoder_layer_f32(float *h, const float *input_norm, const float *post_norm, const projections *p,
                      float *key_pool, float *value_pool, const int64_t *tables, const float *cos, const float *sin,
                      const int64_t *lens, long rows, long hidden, long heads, long kv_heads, long head_dim,
                      long intermediate, long num_blocks, long block_size, long max_blocks, float eps);

#endif

/* One Llama decoder layer's decode step for the CPU, in one call: a few new tokens (one per sequence) through
 *
 *     x = rmsnorm(h) * input_norm
 *     q, k, v = x Wq.T, x Wk.T, x Wv.T;  rotary on q and k;  k, v written to the cache at the row's next slot
 *     h += attention(q, the row's cached keys and values) Wo.T
 *     x = rmsnorm(h) * post_norm
 *     h += (silu(x Wgate.T) * x Wup.T) Wdown.T
 *
 * Why: at batch 1 a decode step is ~20 small operators per layer; called one by one from Python (eager) or from a
 * compiled graph's wrapper, each costs a few microseconds of host time, 40% of a compiled int8 step here. In one call
 * per layer the step is the weights' streaming time plus 30 calls. The arithmetic is the model's (transformers'
 * LlamaDecoderLayer, float32): the same formulas, summed in another order (vector lanes), so results equal it up to
 * float rounding. The projections are small_batch_linear.c's kernels (float32 weights in rows or panels, int8, int4),
 * the attention paged_attention.c's kernel, reading and writing a paged KV pool through block tables (a contiguous
 * cache is a pool of one block per row).
 *
 * Layouts (row-major, contiguous, float32 unless said): h (rows, hidden), updated in place; weights (out, in) float32,
 * int8 with one float32 scale per output (scales != NULL; with int8_activations x is quantised per block of 32 for
 * each projection, linear_w8a8), or int4 (with int8_activations linear_w4a8) codes (out, in / 2) with a scale and a low per
 * group of 32 inputs (lows != NULL; small_batch_linear.c's layout), or float32 panels (n / W, in, W); the key and
 * value pools (num_blocks, block_size, kv_heads, head_dim), tables (rows, max_blocks) int64 the block ids of each
 * row in token order (paged_attention.c's layout); cos and sin (rows, head_dim), the rotary factors of each row's
 * position; lens (rows) int64, keys a row holds before this token (its new key goes to position lens[r]).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* y = x @ w_i.T; 0, or -1 when the int4, w8a8 or w4a8 kernel's scratch memory could not be allocated */
static int project(const projections *p, int i, const float *x, float *y, long rows, long n, long k) {
    if (p->lows[i] && p->int8_activations)
        return linear_w4a8(x, (const uint8_t *)p->weights[i], p->scales[i], p->lows[i], NULL, y, rows, n, k);
    if (p->lows[i])
        return linear_int4(x, (const uint8_t *)p->weights[i], p->scales[i], p->lows[i], NULL, y, rows, n, k);
    if (p->scales[i] && p->int8_activations)
        return linear_w8a8(x, (const int8_t *)p->weights[i], p->scales[i], NULL, y, rows, n, k);
    if (p->scales[i])
        linear_int8(x, (const int8_t *)p->weights[i], p->scales[i], NULL, y, rows, n, k);
    else if (p->panels)
        linear_f32_panels(x, (const float *)p->weights[i], NULL, y, rows, n, k);
    else
        linear_f32(x, (const float *)p->weights[i], NULL, y, rows, n, k);
    return 0;
}

/* out[r] = h[r] / sqrt(mean(h[r]^2) + eps) * weight */
static void rmsnorm(const float *h, const float *weight, float *out, long rows, long hidden, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *hr = h + r * hidden;
        float sum = 0.0f;
        for (long i = 0; i < hidden; i++)
            sum += hr[i] * hr[i];
        const float inv = 1.0f / sqrtf(sum / (float)hidden + eps);
        for (long i = 0; i < hidden; i++)
            out[r * hidden + i] = weight[i] * (hr[i] * inv);
    }
}

/* x = x * cos + rotate_half(x) * sin for each head of each row (rotate_half(x) = [-x2, x1], halves of head_dim) */
static void rotary(float *x, const float *cos, const float *sin, long rows, long heads, long head_dim) {
    const long half = head_dim / 2;
    for (long r = 0; r < rows; r++)
        for (long h = 0; h < heads; h++) {
            float *xh = x + (r * heads + h) * head_dim;
            const float *c = cos + r * head_dim, *s = sin + r * head_dim;
            for (long d = 0; d < half; d++) {
                const float x1 = xh[d], x2 = xh[d + half];
                xh[d] = x1 * c[d] - x2 * s[d];
                xh[d + half] = x2 * c[d + half] + x1 * s[d + half];
            }
        }
}

/* Returns 0; -1 when scratch memory could not be allocated, -2 when a row's new token falls past its block table
 * (lens[r] >= max_blocks * block_size), -3 when a block id it reads or writes is outside the pool. */
int decoder_layer_f32(float *h, const float *input_norm, const float *post_norm, const projections *p,
                      float *key_pool, float *value_pool, const int64_t *tables, const float *cos, const float *sin,
                      const int64_t *lens, long rows, long hidden, long heads, long kv_heads, long head_dim,
                      long intermediate, long num_blocks, long block_size, long max_blocks, float eps) {
    for (long r = 0; r < rows; r++) {
        if (lens[r] < 0 || lens[r] >= max_blocks * block_size)
            return -2;
        const int64_t block = tables[r * max_blocks + lens[r] / block_size];
        if (block < 0 || block >= num_blocks)
            return -3;
    }
    const long q_width = heads * head_dim, kv_width = kv_heads * head_dim;
    float *scratch = malloc(sizeof(float) * (size_t)(rows * (hidden + 2 * q_width + 2 * kv_width + 2 * intermediate)));
    int64_t *new_lens = malloc(sizeof(int64_t) * (size_t)rows);
    if (scratch == NULL || new_lens == NULL) {
        free(scratch);
        free(new_lens);
        return -1;
    }
    float *x = scratch, *q = x + rows * hidden, *attn = q + rows * q_width, *k = attn + rows * q_width,
          *v = k + rows * kv_width, *gate = v + rows * kv_width, *up = gate + rows * intermediate;

    rmsnorm(h, input_norm, x, rows, hidden, eps);
    int failed = project(p, 0, x, q, rows, q_width, hidden) | project(p, 1, x, k, rows, kv_width, hidden) |
                 project(p, 2, x, v, rows, kv_width, hidden);
    rotary(q, cos, sin, rows, heads, head_dim);
    rotary(k, cos, sin, rows, kv_heads, head_dim);
    for (long r = 0; r < rows; r++) { /* the new key and value at the row's next slot */
        const long slot = (long)tables[r * max_blocks + lens[r] / block_size] * block_size + lens[r] % block_size;
        memcpy(key_pool + slot * kv_width, k + r * kv_width, sizeof(float) * (size_t)kv_width);
        memcpy(value_pool + slot * kv_width, v + r * kv_width, sizeof(float) * (size_t)kv_width);
        new_lens[r] = lens[r] + 1;
    }
    const int attended = paged_decode_attention_f32(q, key_pool, value_pool, tables, new_lens, attn, rows, heads,
                                                    kv_heads, head_dim, num_blocks, block_size, max_blocks,
                                                    1.0f / sqrtf((float)head_dim));
    failed = attended ? attended : failed;
    if (failed == 0) {
        failed |= project(p, 3, attn, x, rows, hidden, q_width);
        for (long i = 0; i < rows * hidden; i++)
            h[i] += x[i];
        rmsnorm(h, post_norm, x, rows, hidden, eps);
        failed |= project(p, 4, x, gate, rows, intermediate, hidden) | project(p, 5, x, up, rows, intermediate, hidden);
        for (long i = 0; i < rows * intermediate; i++)
            gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
        failed |= project(p, 6, gate, x, rows, hidden, intermediate);
        for (long i = 0; i < rows * hidden; i++)
            h[i] += x[i];
    }
    free(scratch);
    free(new_lens);
    return failed;
}

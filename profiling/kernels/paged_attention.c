/* Decode attention over a paged KV cache for the CPU: one query token per sequence, its keys and values read in
 * place from the pool's blocks through the sequence's block table (no gather into a padded copy, no mask).
 *
 * A decode step at batch B reads every running sequence's keys and values once and does ~4 flops per value read:
 * its time is the time to stream them. torch's SDPA first needs them gathered into a padded (B, L_max) tensor and a
 * mask for the padding, and its flash kernel is built for many query rows, not one. Here each sequence is one task:
 * its keys are read slot after slot (a slot holds every KV head of one token, contiguous), every query head scored
 * against its KV head's part (grouped-query attention), then its values likewise, so the pool is streamed in order
 * and every key and value is read once. OpenMP splits the sequences between torch's threads.
 *
 * Layouts (row-major, contiguous): q and out (rows, heads, head_dim) float32; key and value pools
 * (num_blocks, block_size, kv_heads, head_dim) float32; tables (rows, max_blocks) int64, block ids in token order;
 * lens (rows) int64, keys each row attends to (the token's own key included, already written to the pool).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

#include "kernels.h"

/* Where token t's keys (or values), all KV heads, live in a pool */
static inline const float *slot(const float *pool, const int64_t *table, long t, long block_size, long width) {
    return pool + ((long)table[t / block_size] * block_size + t % block_size) * width;
}

/* Returns 0; -1 when scratch memory could not be allocated, -2 when a length is not within 1 .. the table's keys,
 * -3 when a block id a row reads is not within 0 .. num_blocks - 1. */
int paged_decode_attention_f32(const float *q, const float *key_pool, const float *value_pool, const int64_t *tables,
                               const int64_t *lens, float *out, long rows, long heads, long kv_heads, long head_dim,
                               long num_blocks, long block_size, long max_blocks, float scale) {
    const long group = heads / kv_heads, width = kv_heads * head_dim; /* query heads per KV head; floats per slot */
    long longest = 0;
    for (long r = 0; r < rows; r++) {
        if (lens[r] < 1 || lens[r] > max_blocks * block_size)
            return -2;
        for (long b = 0; b < (lens[r] + block_size - 1) / block_size; b++)
            if (tables[r * max_blocks + b] < 0 || tables[r * max_blocks + b] >= num_blocks)
                return -3;
        longest = lens[r] > longest ? (long)lens[r] : longest;
    }
    int failed = 0;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        float *scores = malloc(sizeof(float) * (size_t)(heads * longest));
        if (scores == NULL) {
            failed = 1;
            continue;
        }
        const float *qr = q + r * heads * head_dim;
        float *o = out + r * heads * head_dim;
        const int64_t *table = tables + r * max_blocks;
        const long len = (long)lens[r];
        for (long t = 0; t < len; t++) { /* scores: every query head against key t (its KV head's part of the slot) */
            const float *k = slot(key_pool, table, t, block_size, width);
            for (long h = 0; h < heads; h++) {
                const float *qh = qr + h * head_dim, *kh = k + (h / group) * head_dim;
                float dot = 0.0f;
                for (long d = 0; d < head_dim; d++)
                    dot += qh[d] * kh[d];
                scores[h * longest + t] = dot * scale;
            }
        }
        for (long h = 0; h < heads; h++) { /* softmax of each head's scores */
            float *s = scores + h * longest, top = -INFINITY, sum = 0.0f;
            for (long t = 0; t < len; t++)
                top = s[t] > top ? s[t] : top;
            for (long t = 0; t < len; t++) {
                s[t] = expf(s[t] - top);
                sum += s[t];
            }
            for (long t = 0; t < len; t++)
                s[t] /= sum;
        }
        for (long i = 0; i < heads * head_dim; i++)
            o[i] = 0.0f;
        for (long t = 0; t < len; t++) { /* out: the values weighted by the probabilities */
            const float *v = slot(value_pool, table, t, block_size, width);
            for (long h = 0; h < heads; h++) {
                const float p = scores[h * longest + t], *vh = v + (h / group) * head_dim;
                float *oh = o + h * head_dim;
                for (long d = 0; d < head_dim; d++)
                    oh[d] += p * vh[d];
            }
        }
        free(scores);
    }
    return failed ? -1 : 0;
}

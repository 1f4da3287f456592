/* Small-batch linear layers for the CPU: y = x @ w.T (+ bias) for a few rows of x, written to read each weight
 * row from memory once.
 *
 * At 1 to 4 rows a linear layer does ~2 flops per weight it reads: its time is the time to stream the weights
 * from memory. Each output j is one dot product over weight row j, a contiguous run of `in_features` values; the
 * loops below are plain C that the compiler vectorises (-O3 -march=native, reassociation allowed so that a dot
 * product may sum in several vector lanes). OpenMP splits the output features between the threads that torch
 * uses (the same libgomp: torch loads it first).
 *
 * Layouts (row-major, contiguous): x (rows, k) float32; w (n, k) float32 or int8; scale (n) float32, one per
 * output feature (int8: w[j, :] * scale[j] is the float weight row); bias (n) float32 or NULL; y (rows, n).
 */
#include <stdint.h>
#include <omp.h>

#define ROW_BLOCK 4 /* rows of x that share one pass over a weight row */

/* out[u] = dot(x[u, :], wj) for the ROW_BLOCK rows of x that start at x; WEIGHT is float or int8_t */
#define DOT_BLOCK(WEIGHT, NAME)                                                                        \
static inline void NAME(const float *restrict x, long k, const WEIGHT *restrict wj, float *out) {      \
    const float *x0 = x, *x1 = x + k, *x2 = x + 2 * k, *x3 = x + 3 * k;                                 \
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;                                                   \
    for (long t = 0; t < k; t++) {                                                                      \
        float v = (float)wj[t];                                                                         \
        a0 += x0[t] * v; a1 += x1[t] * v; a2 += x2[t] * v; a3 += x3[t] * v;                             \
    }                                                                                                   \
    out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;                                                 \
}

/* dot(x, wj) for one row of x */
#define DOT_ROW(WEIGHT, NAME)                                                                          \
static inline float NAME(const float *restrict x, long k, const WEIGHT *restrict wj) {                 \
    float a = 0.0f;                                                                                     \
    for (long t = 0; t < k; t++) a += x[t] * (float)wj[t];                                              \
    return a;                                                                                           \
}

DOT_BLOCK(float, dot_block_f32)
DOT_ROW(float, dot_row_f32)
DOT_BLOCK(int8_t, dot_block_int8)
DOT_ROW(int8_t, dot_row_int8)

/* y = x @ w.T (+ bias), w float32 */
void linear_f32(const float *x, const float *w, const float *bias, float *y, long rows, long n, long k) {
    #pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++) {
        const float *wj = w + j * k;
        float b = bias ? bias[j] : 0.0f, out[ROW_BLOCK];
        long i = 0;
        for (; i + ROW_BLOCK <= rows; i += ROW_BLOCK) {
            dot_block_f32(x + i * k, k, wj, out);
            for (int u = 0; u < ROW_BLOCK; u++) y[(i + u) * n + j] = out[u] + b;
        }
        for (; i < rows; i++) y[i * n + j] = dot_row_f32(x + i * k, k, wj) + b;
    }
}

/* y = x @ (w * scale[:, None]).T (+ bias), w int8 with one float32 scale per output feature */
void linear_int8(const float *x, const int8_t *w, const float *scale, const float *bias, float *y,
                 long rows, long n, long k) {
    #pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++) {
        const int8_t *wj = w + j * k;
        float b = bias ? bias[j] : 0.0f, s = scale[j], out[ROW_BLOCK];
        long i = 0;
        for (; i + ROW_BLOCK <= rows; i += ROW_BLOCK) {
            dot_block_int8(x + i * k, k, wj, out);
            for (int u = 0; u < ROW_BLOCK; u++) y[(i + u) * n + j] = out[u] * s + b;
        }
        for (; i < rows; i++) y[i * n + j] = dot_row_int8(x + i * k, k, wj) * s + b;
    }
}

/* the threads a parallel loop above uses (torch.set_num_threads sets it: one OpenMP runtime) */
int kernel_threads(void) { return omp_get_max_threads(); }

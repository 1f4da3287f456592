/* Small-batch linear layers for the CPU: y = x @ w.T (+ bias) for a few rows of x, written to read each weight
 * from memory once: dot products over weight rows (float32, int8 and int4 weights), and, for float32 weights laid out
 * in panels, a small GEMM (below).
 *
 * At 1 to 4 rows a linear layer does ~2 flops per weight it reads: its time is the time to stream the weights
 * from memory. Each output j is one dot product over weight row j, a contiguous run of `in_features` values; the
 * loops below are plain C that the compiler vectorises (-O3 -march=native, reassociation allowed so that a dot
 * product may sum in several vector lanes). OpenMP splits the output features between the threads that torch
 * uses (the same libgomp: torch loads it first).
 *
 * Layouts (row-major, contiguous): x (rows, k) float32; w (n, k) float32 or int8; scale (n) float32, one per
 * output feature (int8: w[j, :] * scale[j] is the float weight row); bias (n) float32 or NULL; y (rows, n).
 * int4 (llama.cpp's q4_1 layout, in float32 scales): groups of GROUP input features, each with a scale and a low,
 * w = low + code * scale with code 0..15; codes (n, k / 2) uint8, group g's 16 bytes holding its codes 0-15 in their
 * low halves and 16-31 in their high halves; scales and lows (n, k / GROUP) float32.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

#include "kernels.h"

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

/* dot(x, wj) for one row of x and int8 weights. Written out with vector instructions where the CPU has them: the
 * plain loop (DOT_ROW) becomes one chain of multiply-adds, each waiting on the last (4 cycles per 16 weights),
 * which caps it at ~15 GB/s of int8 weights on two cores here; four independent chains reach ~20. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define LANES 16
#define VEC __m512
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VINT8(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p))))
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSET(v) _mm512_set1_ps(v)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VSUM(a) _mm512_reduce_add_ps(a)
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LANES 8
#define VEC __m256
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VINT8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VSET(v) _mm256_set1_ps(v)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VADD(a, b) _mm256_add_ps(a, b)
static inline float VSUM(__m256 a) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
}
#endif

#ifdef LANES
static inline float dot_row_int8(const float *restrict x, long k, const int8_t *restrict wj) {
    VEC a0 = VZERO(), a1 = VZERO(), a2 = VZERO(), a3 = VZERO();
    long t = 0;
    for (; t + 4 * LANES <= k; t += 4 * LANES) {
        a0 = VFMA(VLOAD(x + t), VINT8(wj + t), a0);
        a1 = VFMA(VLOAD(x + t + LANES), VINT8(wj + t + LANES), a1);
        a2 = VFMA(VLOAD(x + t + 2 * LANES), VINT8(wj + t + 2 * LANES), a2);
        a3 = VFMA(VLOAD(x + t + 3 * LANES), VINT8(wj + t + 3 * LANES), a3);
    }
    float a = VSUM(VADD(VADD(a0, a1), VADD(a2, a3)));
    for (; t < k; t++)
        a += x[t] * (float)wj[t];
    return a;
}
#else
DOT_ROW(int8_t, dot_row_int8)
#endif

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

/* ---- float32 weights in panels -------------------------------------------------------------------------------
 * At 5 to 64 rows the dot products above read each weight row from the cache once per block of 4 rows and sum
 * across vector lanes at the end of each; a GEMM's own layout does better. The weights are laid out once in
 * panels of PANEL_WIDTH output features, (n / PANEL_WIDTH, k, PANEL_WIDTH): panel p holds w[p * W .. p * W + W - 1,
 * :] transposed, its row t the W weights that multiply x[:, t]. A block of up to PANEL_ROWS rows of x runs down a
 * panel: per input feature, two vector loads of weights, one broadcast of each row's x[t] and two multiply-adds per
 * row into 2 x PANEL_ROWS vector registers (12 of AVX-512's 32, of AVX2's 16), stored once at the end: no sums
 * across lanes, and the panel (k x W floats, 72-196 KB here) stays in the L2 cache for the next block of rows. */
#define PANEL_ROWS 6
#ifdef LANES
#define PANEL_WIDTH (2 * LANES)
#define PANEL_BLOCK(ROWS)                                                                              \
static inline void panel_block_##ROWS(const float *x, long k, const float *panel, float *y, long n) {  \
    VEC a[ROWS][2];                                                                                     \
    for (int r = 0; r < ROWS; r++)                                                                      \
        a[r][0] = a[r][1] = VZERO();                                                                    \
    for (long t = 0; t < k; t++) {                                                                      \
        const VEC w0 = VLOAD(panel + t * PANEL_WIDTH), w1 = VLOAD(panel + t * PANEL_WIDTH + LANES);     \
        for (int r = 0; r < ROWS; r++) {                                                                \
            const VEC xv = VSET(x[r * k + t]);                                                          \
            a[r][0] = VFMA(xv, w0, a[r][0]);                                                            \
            a[r][1] = VFMA(xv, w1, a[r][1]);                                                            \
        }                                                                                               \
    }                                                                                                   \
    for (int r = 0; r < ROWS; r++) {                                                                    \
        VSTORE(y + r * n, a[r][0]);                                                                     \
        VSTORE(y + r * n + LANES, a[r][1]);                                                             \
    }                                                                                                   \
}
#else
#define PANEL_WIDTH 16
#define PANEL_BLOCK(ROWS)                                                                              \
static inline void panel_block_##ROWS(const float *x, long k, const float *panel, float *y, long n) {  \
    float a[ROWS][PANEL_WIDTH] = {{0.0f}};                                                              \
    for (long t = 0; t < k; t++)                                                                        \
        for (int r = 0; r < ROWS; r++)                                                                  \
            for (int c = 0; c < PANEL_WIDTH; c++)                                                       \
                a[r][c] += x[r * k + t] * panel[t * PANEL_WIDTH + c];                                   \
    for (int r = 0; r < ROWS; r++)                                                                      \
        for (int c = 0; c < PANEL_WIDTH; c++)                                                           \
            y[r * n + c] = a[r][c];                                                                     \
}
#endif
PANEL_BLOCK(1)
PANEL_BLOCK(2)
PANEL_BLOCK(3)
PANEL_BLOCK(4)
PANEL_BLOCK(5)
PANEL_BLOCK(6)

/* output features per panel: the layout's W (small_batch.py packs the weights with it) */
int panel_width(void) { return PANEL_WIDTH; }

/* y = x @ w.T (+ bias), w in panels as above (n a multiple of PANEL_WIDTH); panels split between the threads */
void linear_f32_panels(const float *x, const float *panels, const float *bias, float *y, long rows, long n, long k) {
    #pragma omp parallel for schedule(static)
    for (long p = 0; p < n / PANEL_WIDTH; p++) {
        const float *panel = panels + p * k * PANEL_WIDTH;
        for (long i = 0; i < rows; i += PANEL_ROWS) {
            const float *xi = x + i * k;
            float *yi = y + i * n + p * PANEL_WIDTH;
            const long block = rows - i < PANEL_ROWS ? rows - i : PANEL_ROWS;
            switch (block) {
                case 1: panel_block_1(xi, k, panel, yi, n); break;
                case 2: panel_block_2(xi, k, panel, yi, n); break;
                case 3: panel_block_3(xi, k, panel, yi, n); break;
                case 4: panel_block_4(xi, k, panel, yi, n); break;
                case 5: panel_block_5(xi, k, panel, yi, n); break;
                default: panel_block_6(xi, k, panel, yi, n); break;
            }
            if (bias)
                for (long r = 0; r < block; r++)
                    for (long c = 0; c < PANEL_WIDTH; c++)
                        yi[r * n + c] += bias[p * PANEL_WIDTH + c];
        }
    }
}

/* ---- int4 weights in groups of GROUP ---------------------------------------------------------------------------
 * dot(x, w_j) = sum over groups g of scale[g] * dot(x_g, codes_g) + low[g] * sum(x_g): the sums of x's groups are
 * computed once per call (xsums), the codes' dot products in vector lanes, four groups in flight. */
#define GROUP 32

#if defined(__AVX512F__)
/* dot(x_g, codes_g) of one group, 16 lanes: the 16 bytes' low halves meet x[0..15], the high halves x[16..31] */
static inline __m512 group_dot(const float *x, const uint8_t *codes) {
    const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
    const __m512 low = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)));
    const __m512 high = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
    return _mm512_fmadd_ps(high, _mm512_loadu_ps(x + 16), _mm512_mul_ps(low, _mm512_loadu_ps(x)));
}
#elif defined(__AVX2__) && defined(__FMA__)
/* the same in 8 lanes: bytes 0-7 then 8-15 */
static inline __m256 group_dot(const float *x, const uint8_t *codes) {
    __m256 sum = _mm256_setzero_ps();
    for (int half = 0; half < 2; half++) {
        const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + 8 * half)));
        const __m256 low = _mm256_cvtepi32_ps(_mm256_and_si256(bytes, _mm256_set1_epi32(15)));
        const __m256 high = _mm256_cvtepi32_ps(_mm256_srli_epi32(bytes, 4));
        sum = _mm256_fmadd_ps(low, _mm256_loadu_ps(x + 8 * half), sum);
        sum = _mm256_fmadd_ps(high, _mm256_loadu_ps(x + 16 + 8 * half), sum);
    }
    return sum;
}
#endif

static inline float dot_row_int4(const float *restrict x, const float *restrict xsums, long groups,
                                 const uint8_t *restrict codes, const float *restrict scale,
                                 const float *restrict low) {
    float lows = 0.0f;
    for (long g = 0; g < groups; g++)
        lows += low[g] * xsums[g];
#ifdef LANES
    VEC a0 = VZERO(), a1 = VZERO(), a2 = VZERO(), a3 = VZERO();
    long g = 0;
    for (; g + 4 <= groups; g += 4) {
        a0 = VFMA(group_dot(x + g * GROUP, codes + g * GROUP / 2), VSET(scale[g]), a0);
        a1 = VFMA(group_dot(x + (g + 1) * GROUP, codes + (g + 1) * GROUP / 2), VSET(scale[g + 1]), a1);
        a2 = VFMA(group_dot(x + (g + 2) * GROUP, codes + (g + 2) * GROUP / 2), VSET(scale[g + 2]), a2);
        a3 = VFMA(group_dot(x + (g + 3) * GROUP, codes + (g + 3) * GROUP / 2), VSET(scale[g + 3]), a3);
    }
    for (; g < groups; g++)
        a0 = VFMA(group_dot(x + g * GROUP, codes + g * GROUP / 2), VSET(scale[g]), a0);
    return VSUM(VADD(VADD(a0, a1), VADD(a2, a3))) + lows;
#else
    float a = 0.0f;
    for (long g = 0; g < groups; g++) {
        float d = 0.0f;
        for (int b = 0; b < GROUP / 2; b++)
            d += x[g * GROUP + b] * (float)(codes[g * GROUP / 2 + b] & 15) +
                 x[g * GROUP + b + GROUP / 2] * (float)(codes[g * GROUP / 2 + b] >> 4);
        a += scale[g] * d;
    }
    return a + lows;
#endif
}

/* y = x @ w.T (+ bias), w int4 as above; k a multiple of GROUP. Returns 0, or -1 when scratch memory could not be
 * allocated. Each weight row is read from memory once: the rows of x meet it while it sits in the L1 cache. */
int linear_int4(const float *x, const uint8_t *codes, const float *scale, const float *low, const float *bias,
                float *y, long rows, long n, long k) {
    const long groups = k / GROUP;
    float *xsums = malloc(sizeof(float) * (size_t)(rows * groups));
    if (xsums == NULL)
        return -1;
    for (long i = 0; i < rows * groups; i++) {
        float sum = 0.0f;
        for (int t = 0; t < GROUP; t++)
            sum += x[i * GROUP + t];
        xsums[i] = sum;
    }
    #pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++)
        for (long i = 0; i < rows; i++)
            y[i * n + j] = dot_row_int4(x + i * k, xsums + i * groups, groups, codes + j * k / 2, scale + j * groups,
                                        low + j * groups) + (bias ? bias[j] : 0.0f);
    free(xsums);
    return 0;
}

/* ---- int8 weights with int8 activations (w8a8) ------------------------------------------------------------------
 * llama.cpp's q8_0 scheme for the activations of its 8-bit dot products: each row of x is quantised once per call in
 * blocks of QBLOCK inputs, x[b] ~ xscale[b] * xq[b] with xq int8 and xscale = max |x[b]| / 127; then
 *
 *     y[i, j] = scale[j] * sum over blocks b of xscale[i, b] * (integer dot of xq[i, b] and w[j, b])
 *
 * The integer dot products run in 8-bit lanes, 4 bytes into each int32 lane: with AVX-512 VNNI one vpdpbusd per
 * 64 weights (it multiplies unsigned by signed bytes, so w + 128 meets xq and the lane starts at -128 times its four
 * xq: exact), one conversion to float and one multiply-add by the lanes' block scales; with AVX2 vpmaddubsw meets
 * |w| with xq carrying w's sign (llama.cpp's trick), then vpmaddwd; elsewhere a plain loop. ~5 vector instructions per
 * 64 weights, against ~12 to widen int8 weights to float32 (linear_int8 above): the weights' streaming time again.
 * Layouts as linear_int8's; k a multiple of QBLOCK. Approximate: x is rounded to 8 bits per block. */
#define QBLOCK 32

/* xq (rows, k) and xscale (rows, k / QBLOCK): x's rows quantised per block */
static void quantize_blocks(const float *x, long rows, long k, int8_t *xq, float *xscale) {
    for (long b = 0; b < rows * k / QBLOCK; b++) {
        const float *xb = x + b * QBLOCK;
        float amax = 0.0f;
        for (int t = 0; t < QBLOCK; t++)
            amax = fabsf(xb[t]) > amax ? fabsf(xb[t]) : amax;
        const float d = amax / 127.0f, inverse = d > 0.0f ? 1.0f / d : 0.0f;
        for (int t = 0; t < QBLOCK; t++)
            xq[b * QBLOCK + t] = (int8_t)lrintf(xb[t] * inverse);
        xscale[b] = d;
    }
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
/* per row: lanes (k / 4) of the block scale each int32 lane's 4 bytes belong to, and -128 x the sum of those 4 xq */
static void lane_terms(const int8_t *xq, const float *xscale, long count, float *lane_scale, int32_t *lane_start) {
    for (long l = 0; l < count / 4; l++) {
        lane_scale[l] = xscale[l * 4 / QBLOCK];
        lane_start[l] = -128 * (xq[4 * l] + xq[4 * l + 1] + xq[4 * l + 2] + xq[4 * l + 3]);
    }
}

/* 64 weights: float lanes += block scales x (lane start + dot(w + 128, xq)) */
static inline __m512 w8a8_chunk(const int8_t *w, const int8_t *xq, const float *lane_scale, const int32_t *lane_start,
                                __m512 acc) {
    const __m512i unsigned_w = _mm512_xor_si512(_mm512_loadu_si512(w), _mm512_set1_epi8((char)0x80));
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_loadu_si512(lane_start), unsigned_w, _mm512_loadu_si512(xq));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_loadu_ps(lane_scale), acc);
}

static inline float w8a8_dot(const int8_t *wj, const int8_t *xq, const float *lane_scale, const int32_t *lane_start,
                             long k) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    long t = 0;
    for (; t + 128 <= k; t += 128) {
        a0 = w8a8_chunk(wj + t, xq + t, lane_scale + t / 4, lane_start + t / 4, a0);
        a1 = w8a8_chunk(wj + t + 64, xq + t + 64, lane_scale + t / 4 + 16, lane_start + t / 4 + 16, a1);
    }
    for (; t + 64 <= k; t += 64)
        a0 = w8a8_chunk(wj + t, xq + t, lane_scale + t / 4, lane_start + t / 4, a0);
    float a = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; t < k; t += QBLOCK) { /* a last block of 32 */
        int32_t d = 0;
        for (int u = 0; u < QBLOCK; u++)
            d += (int32_t)wj[t + u] * xq[t + u];
        a += lane_scale[t / 4] * (float)d;
    }
    return a;
}
#define W8A8_VNNI 1
#elif defined(__AVX2__) && defined(__FMA__)
/* one block of 32: the float 8 lanes of xscale x dot(w, xq), |w| against xq with w's sign */
static inline __m256 w8a8_block(const int8_t *w, const int8_t *xq, float xscale, __m256 acc) {
    const __m256i wv = _mm256_loadu_si256((const __m256i *)w), xv = _mm256_loadu_si256((const __m256i *)xq);
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
    const __m256i dot = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(xscale), acc);
}

static inline float w8a8_dot(const int8_t *wj, const int8_t *xq, const float *xscale, long k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    long b = 0;
    for (; b + 2 <= k / QBLOCK; b += 2) {
        a0 = w8a8_block(wj + b * QBLOCK, xq + b * QBLOCK, xscale[b], a0);
        a1 = w8a8_block(wj + (b + 1) * QBLOCK, xq + (b + 1) * QBLOCK, xscale[b + 1], a1);
    }
    for (; b < k / QBLOCK; b++)
        a0 = w8a8_block(wj + b * QBLOCK, xq + b * QBLOCK, xscale[b], a0);
    return VSUM(_mm256_add_ps(a0, a1));
}
#else
static inline float w8a8_dot(const int8_t *wj, const int8_t *xq, const float *xscale, long k) {
    float a = 0.0f;
    for (long b = 0; b < k / QBLOCK; b++) {
        int32_t d = 0;
        for (int u = 0; u < QBLOCK; u++)
            d += (int32_t)wj[b * QBLOCK + u] * xq[b * QBLOCK + u];
        a += xscale[b] * (float)d;
    }
    return a;
}
#endif

/* y = x @ (w * scale[:, None]).T (+ bias) with x quantised per block as above; k a multiple of QBLOCK. Returns 0, or
 * -1 when scratch memory could not be allocated. */
int linear_w8a8(const float *x, const int8_t *w, const float *scale, const float *bias, float *y, long rows, long n,
                long k) {
    int8_t *xq = malloc((size_t)(rows * k));
    float *xscale = malloc(sizeof(float) * (size_t)(rows * k / QBLOCK));
#ifdef W8A8_VNNI
    float *lane_scale = malloc(sizeof(float) * (size_t)(rows * k / 4));
    int32_t *lane_start = malloc(sizeof(int32_t) * (size_t)(rows * k / 4));
    if (xq == NULL || xscale == NULL || lane_scale == NULL || lane_start == NULL) {
        free(lane_scale);
        free(lane_start);
#else
    if (xq == NULL || xscale == NULL) {
#endif
        free(xq);
        free(xscale);
        return -1;
    }
    quantize_blocks(x, rows, k, xq, xscale);
#ifdef W8A8_VNNI
    lane_terms(xq, xscale, rows * k, lane_scale, lane_start);
#endif
    #pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++)
        for (long i = 0; i < rows; i++) {
#ifdef W8A8_VNNI
            const float d = w8a8_dot(w + j * k, xq + i * k, lane_scale + i * k / 4, lane_start + i * k / 4, k);
#else
            const float d = w8a8_dot(w + j * k, xq + i * k, xscale + i * k / QBLOCK, k);
#endif
            y[i * n + j] = d * scale[j] + (bias ? bias[j] : 0.0f);
        }
#ifdef W8A8_VNNI
    free(lane_scale);
    free(lane_start);
#endif
    free(xq);
    free(xscale);
    return 0;
}

/* ---- int4 weights with int8 activations (w4a8) ------------------------------------------------------------------
 * llama.cpp's q4_1 x q8_1 dot products: x's rows quantised per block of 32 as above (xq, xscale; the weights' groups
 * are the same 32 inputs), each block's sum xsum = xscale * sum(xq) kept; then
 *
 *     y[i, j] = sum over groups g of scale[j, g] * xscale[i, g] * dot(codes[j, g], xq[i, g]) + low[j, g] * xsum[i, g]
 *
 * The codes (0..15) are unsigned bytes as they are: unpacked from their halves into 32 bytes in x's order, they meet
 * xq in 8-bit lanes (vpdpbusd with AVX-512 VNNI, else vpmaddubsw + vpmaddwd with AVX2), one conversion to float and
 * one multiply-add per group. Layouts as linear_int4's. Approximate: x is rounded to 8 bits per block. */
#if defined(__AVX2__) && defined(__FMA__)
static inline float hsum256(__m256 a) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
}

/* acc += c * dot(codes of one group, its 32 xq) in 8 float lanes */
static inline __m256 w4a8_group(const uint8_t *codes, const int8_t *xq, float c, __m256 acc) {
    const __m128i packed = _mm_loadu_si128((const __m128i *)codes), mask = _mm_set1_epi8(15);
    const __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), mask), _mm_and_si128(packed, mask));
    const __m256i x = _mm256_loadu_si256((const __m256i *)xq);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x);
#else
    const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
#endif
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(c), acc);
}

static inline float w4a8_dot(const uint8_t *codes, const float *scale, const int8_t *xq, const float *xscale,
                             long groups) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    long g = 0;
    for (; g + 2 <= groups; g += 2) {
        a0 = w4a8_group(codes + g * GROUP / 2, xq + g * GROUP, scale[g] * xscale[g], a0);
        a1 = w4a8_group(codes + (g + 1) * GROUP / 2, xq + (g + 1) * GROUP, scale[g + 1] * xscale[g + 1], a1);
    }
    if (g < groups)
        a0 = w4a8_group(codes + g * GROUP / 2, xq + g * GROUP, scale[g] * xscale[g], a0);
    return hsum256(_mm256_add_ps(a0, a1));
}
#else
static inline float w4a8_dot(const uint8_t *codes, const float *scale, const int8_t *xq, const float *xscale,
                             long groups) {
    float a = 0.0f;
    for (long g = 0; g < groups; g++) {
        int32_t d = 0;
        for (int b = 0; b < GROUP / 2; b++)
            d += (codes[g * GROUP / 2 + b] & 15) * xq[g * GROUP + b] +
                 (codes[g * GROUP / 2 + b] >> 4) * xq[g * GROUP + b + GROUP / 2];
        a += scale[g] * xscale[g] * (float)d;
    }
    return a;
}
#endif

/* y = x @ w.T (+ bias), w int4 as linear_int4's, x quantised per block as above; k a multiple of GROUP. Returns 0,
 * or -1 when scratch memory could not be allocated. */
int linear_w4a8(const float *x, const uint8_t *codes, const float *scale, const float *low, const float *bias,
                float *y, long rows, long n, long k) {
    const long groups = k / GROUP;
    int8_t *xq = malloc((size_t)(rows * k));
    float *xscale = malloc(sizeof(float) * (size_t)(rows * groups)), *xsum = malloc(sizeof(float) * (size_t)(rows * groups));
    if (xq == NULL || xscale == NULL || xsum == NULL) {
        free(xq);
        free(xscale);
        free(xsum);
        return -1;
    }
    quantize_blocks(x, rows, k, xq, xscale);
    for (long b = 0; b < rows * groups; b++) {
        int32_t sum = 0;
        for (int t = 0; t < GROUP; t++)
            sum += xq[b * GROUP + t];
        xsum[b] = xscale[b] * (float)sum;
    }
    #pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++)
        for (long i = 0; i < rows; i++) {
            const float *lj = low + j * groups, *si = xsum + i * groups;
            float lows = 0.0f;
            for (long g = 0; g < groups; g++)
                lows += lj[g] * si[g];
            y[i * n + j] = w4a8_dot(codes + j * k / 2, scale + j * groups, xq + i * k, xscale + i * groups, groups) +
                           lows + (bias ? bias[j] : 0.0f);
        }
    free(xq);
    free(xscale);
    free(xsum);
    return 0;
}

/* the threads a parallel loop above uses (torch.set_num_threads sets it: one OpenMP runtime) */
int kernel_threads(void) { return omp_get_max_threads(); }

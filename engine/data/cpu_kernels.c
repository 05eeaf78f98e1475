/* modeldeck's CPU kernels for the serving step. GEMMs: y (M, N) bf16 = x (M, K) bf16 @ W.T (* scale)
 * (+ bias), with W stored as bf16 or as int8 (one fp32 scale per output row), on AVX512-BF16.
 *
 * Why (measured on a 2-core AMD EPYC with AVX512-BF16, SmolLM2-135M's linears, see
 * engine/serving/cpukernels.py): oneDNN's prepacked bf16 GEMM is tuned for large matrices; a decode
 * step multiplies 1-16 rows, where it reaches about half of what memory bandwidth allows. These
 * kernels keep a small block of rows in registers (one zmm accumulator per row per 16 outputs),
 * stream each weight once, and for int8 convert 32 weights to bf16 in registers (int8 -> int32 ->
 * fp32 -> bf16, exact for |w| <= 127), so int8 reads half the bytes of bf16.
 *
 * Weight layout ("packed"): N/16 blocks of 16 output rows; inside a block, K/2 pairs of
 * (16 rows x 2 consecutive k) -- the operand order of vdpbf16ps, which adds
 * a[2i]*b[2i] + a[2i+1]*b[2i+1] into fp32 lane i. Requires N % 16 == 0 and K % 2 == 0.
 * Attention: see md_attention below.
 * Compiled by engine/serving/cpukernels.py with `cc -O3 -fopenmp -shared -fPIC ... -lm`. */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define MAX_ROWS 8 /* accumulators + row broadcasts stay within the 32 zmm registers */

int md_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512bf16");
}

TARGET static inline __m512bh load_int8(const int8_t* p) {
    __m512 low = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
    __m512 high = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(p + 16))));
    return _mm512_cvtne2ps_pbh(high, low);
}

TARGET static inline __m512bh load_bf16(const uint16_t* p) {
    return (__m512bh)_mm512_loadu_si512((const void*)p);
}

/* One block of 16 outputs for ROWS rows; WEIGHT_T/LOAD pick the stored weight type. */
#define BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, ROWS)                                                  \
    TARGET static void NAME##_##ROWS(const uint16_t* x, int ldx, int pairs, const WEIGHT_T* w, \
                                     const float* scale, const float* bias, uint16_t* y,       \
                                     int ldy) {                                                \
        __m512 acc[ROWS];                                                                      \
        for (int m = 0; m < ROWS; m++) acc[m] = _mm512_setzero_ps();                            \
        for (int pair = 0; pair < pairs; pair++) {                                             \
            __m512bh weights = LOAD(w + (size_t)pair * 32);                                    \
            for (int m = 0; m < ROWS; m++) {                                                   \
                __m512i row = _mm512_set1_epi32(*(const int32_t*)(x + (size_t)m * ldx + 2 * pair)); \
                acc[m] = _mm512_dpbf16_ps(acc[m], weights, (__m512bh)row);                     \
            }                                                                                  \
        }                                                                                      \
        __m512 factor = scale ? _mm512_loadu_ps(scale) : _mm512_set1_ps(1.0f);                 \
        __m512 offset = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();                    \
        for (int m = 0; m < ROWS; m++) {                                                       \
            __m512 value = _mm512_fmadd_ps(acc[m], factor, offset);                             \
            _mm256_storeu_si256((__m256i*)(y + (size_t)m * ldy), (__m256i)_mm512_cvtneps_pbh(value)); \
        }                                                                                      \
    }

#define ALL_ROWS(NAME, WEIGHT_T, LOAD)                                                          \
    BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 1) BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 2)                 \
    BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 3) BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 4)                 \
    BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 5) BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 6)                 \
    BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 7) BLOCK_KERNEL(NAME, WEIGHT_T, LOAD, 8)

ALL_ROWS(int8_block, int8_t, load_int8)
ALL_ROWS(bf16_block, uint16_t, load_bf16)


/* Two 16-output blocks at once for a group of up to MAX_ROWS rows (used when x has more rows than
 * one group: a prefill): each row's broadcast feeds two vdpbf16ps, and a small remainder group
 * (9 rows = 8 + 1) runs two accumulator chains instead of one, which is latency-bound. Every
 * output sums its products in the same order as in BLOCK_KERNEL, so results are bit-identical
 * (a sequence's logits do not depend on the rows it shares a step with). Measured here, all
 * linears of a SmolLM2-135M step on 2 threads: 1.16-1.28x faster at 9-12 rows, 1.05-1.13x at
 * 16-64 (the remainder on one block: no gain at 9-12). At 1-8 rows (decode) two weight streams
 * per thread measured 0.81-0.95x, so those keep one block at a time. */
#define PAIR_KERNEL(NAME, WEIGHT_T, LOAD, ROWS)                                                   \
    TARGET static void NAME##_pair_##ROWS(const uint16_t* x, int ldx, int pairs, const WEIGHT_T* w, \
                                   size_t block_size, const float* scale, const float* bias,  \
                                   uint16_t* y, int ldy) {                                    \
        __m512 acc0[ROWS], acc1[ROWS];                                                         \
        for (int m = 0; m < ROWS; m++) acc0[m] = acc1[m] = _mm512_setzero_ps();                 \
        const WEIGHT_T* w1 = w + block_size;                                                   \
        for (int pair = 0; pair < pairs; pair++) {                                             \
            __m512bh weights0 = LOAD(w + (size_t)pair * 32);                                   \
            __m512bh weights1 = LOAD(w1 + (size_t)pair * 32);                                  \
            for (int m = 0; m < ROWS; m++) {                                                   \
                __m512i row = _mm512_set1_epi32(*(const int32_t*)(x + (size_t)m * ldx + 2 * pair)); \
                acc0[m] = _mm512_dpbf16_ps(acc0[m], weights0, (__m512bh)row);                  \
                acc1[m] = _mm512_dpbf16_ps(acc1[m], weights1, (__m512bh)row);                  \
            }                                                                                  \
        }                                                                                      \
        for (int half = 0; half < 2; half++) {                                                 \
            __m512 factor = scale ? _mm512_loadu_ps(scale + 16 * half) : _mm512_set1_ps(1.0f); \
            __m512 offset = bias ? _mm512_loadu_ps(bias + 16 * half) : _mm512_setzero_ps();    \
            for (int m = 0; m < ROWS; m++) {                                                   \
                __m512 value = _mm512_fmadd_ps(half ? acc1[m] : acc0[m], factor, offset);      \
                _mm256_storeu_si256((__m256i*)(y + (size_t)m * ldy + 16 * half),               \
                                    (__m256i)_mm512_cvtneps_pbh(value));                        \
            }                                                                                  \
        }                                                                                      \
    }
#define ALL_PAIRS(NAME, WEIGHT_T, LOAD)                                                         \
    PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 1) PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 2)                   \
    PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 3) PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 4)                   \
    PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 5) PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 6)                   \
    PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 7) PAIR_KERNEL(NAME, WEIGHT_T, LOAD, 8)
ALL_PAIRS(int8_block, int8_t, load_int8)
ALL_PAIRS(bf16_block, uint16_t, load_bf16)
typedef void (*int8_pair_t)(const uint16_t*, int, int, const int8_t*, size_t, const float*,
                            const float*, uint16_t*, int);
typedef void (*bf16_pair_t)(const uint16_t*, int, int, const uint16_t*, size_t, const float*,
                            const float*, uint16_t*, int);
static const int8_pair_t INT8_PAIRS[MAX_ROWS + 1] = {
    0, int8_block_pair_1, int8_block_pair_2, int8_block_pair_3, int8_block_pair_4,
    int8_block_pair_5, int8_block_pair_6, int8_block_pair_7, int8_block_pair_8};
static const bf16_pair_t BF16_PAIRS[MAX_ROWS + 1] = {
    0, bf16_block_pair_1, bf16_block_pair_2, bf16_block_pair_3, bf16_block_pair_4,
    bf16_block_pair_5, bf16_block_pair_6, bf16_block_pair_7, bf16_block_pair_8};

typedef void (*int8_block_t)(const uint16_t*, int, int, const int8_t*, const float*,
                             const float*, uint16_t*, int);
typedef void (*bf16_block_t)(const uint16_t*, int, int, const uint16_t*, const float*,
                             const float*, uint16_t*, int);
static const int8_block_t INT8_BLOCKS[MAX_ROWS + 1] = {
    0, int8_block_1, int8_block_2, int8_block_3, int8_block_4,
    int8_block_5, int8_block_6, int8_block_7, int8_block_8};
static const bf16_block_t BF16_BLOCKS[MAX_ROWS + 1] = {
    0, bf16_block_1, bf16_block_2, bf16_block_3, bf16_block_4,
    bf16_block_5, bf16_block_6, bf16_block_7, bf16_block_8};

/* Each thread takes whole 16-output blocks (pairs of them above MAX_ROWS rows) and runs every
 * row of x through them before the next, so a block's weights are read from memory once and stay
 * in L1/L2 across row groups. */
#define GEMM(NAME, WEIGHT_T, BLOCKS, PAIRS)                                                     \
    void NAME(const uint16_t* x, int rows, int k, const WEIGHT_T* w, int n, const float* scale, \
              const float* bias, uint16_t* y, int threads) {                                   \
        const int blocks = n / 16, pairs = k / 2;                                              \
        const size_t block_size = (size_t)pairs * 32;                                          \
        const int twin = rows > MAX_ROWS;                                                      \
        const int units = twin ? (blocks + 1) / 2 : blocks;                                    \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                      \
        for (int u = 0; u < units; u++) {                                                      \
            int b = twin ? 2 * u : u;                                                          \
            for (int m = 0; m < rows; m += MAX_ROWS) {                                         \
                int count = rows - m < MAX_ROWS ? rows - m : MAX_ROWS;                         \
                if (twin && b + 1 < blocks)                                                    \
                    PAIRS[count](x + (size_t)m * k, k, pairs, w + b * block_size, block_size,  \
                                 scale ? scale + 16 * b : 0, bias ? bias + 16 * b : 0,         \
                                 y + (size_t)m * n + 16 * b, n);                               \
                else                                                                           \
                    BLOCKS[count](x + (size_t)m * k, k, pairs, w + b * block_size,             \
                                  scale ? scale + 16 * b : 0, bias ? bias + 16 * b : 0,        \
                                  y + (size_t)m * n + 16 * b, n);                              \
            }                                                                                  \
        }                                                                                      \
    }

GEMM(md_int8_gemm, int8_t, INT8_BLOCKS, INT8_PAIRS)
GEMM(md_bf16_gemm, uint16_t, BF16_BLOCKS, BF16_PAIRS)

/* ---- Attention for short queries (decode: one token a row), grouped-query heads, over a row's cache. ----
 * Why: at batch 8 SDPA's CPU flash kernel took ~114 us a layer for this tiny problem (8 rows x
 * 9 query heads x ~60 keys x 64 dims), a third of the step's non-GEMM time; the work itself is a
 * few microseconds. Scores and softmax in fp32 (bf16 products are exact in fp32), the
 * output rounded once to bf16, as SDPA does. dim % 16 == 0, group <= MAX_GROUP. */
#define MAX_GROUP 16
#define MAX_DIM 256
#define MASKED -1e30f /* an additive mask at the dtype's minimum */

TARGET static inline __m512 widen_bf16(const uint16_t* p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

static inline float round_bf16(float value) { /* to the nearest bf16, ties to even */
    uint32_t bits;
    __builtin_memcpy(&bits, &value, 4);
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000u;
    __builtin_memcpy(&value, &bits, 4);
    return value;
}

TARGET static void attend_one(const uint16_t* q, long q_head_stride, const uint16_t* k,
                              const uint16_t* v, const float* mask, int group, int dim,
                              int length, float scale, uint16_t* out, float* scores) {
    const int chunks16 = dim / 16;
    __m512 query[MAX_GROUP * (MAX_DIM / 16)];  /* widened once: bf16 products are exact in fp32 */
    for (int g = 0; g < group; g++)
        for (int c = 0; c < chunks16; c++)
            query[g * chunks16 + c] = widen_bf16(q + g * q_head_stride + 16 * c);
    for (int l = 0; l < length; l++) {
        if (mask[l] < MASKED) { /* a key this query may not see (causal, past the row's end) */
            for (int g = 0; g < group; g++) scores[(size_t)g * length + l] = -INFINITY;
            continue;
        }
        __m512 key[MAX_DIM / 16];
        for (int c = 0; c < chunks16; c++) key[c] = widen_bf16(k + (size_t)l * dim + 16 * c);
        for (int g = 0; g < group; g++) {
            __m512 acc = _mm512_setzero_ps();
            for (int c = 0; c < chunks16; c++)
                acc = _mm512_fmadd_ps(key[c], query[g * chunks16 + c], acc);
            scores[(size_t)g * length + l] = _mm512_reduce_add_ps(acc) * scale + mask[l];
        }
    }
    float inverse[MAX_GROUP];
    for (int g = 0; g < group; g++) {
        float* row = scores + (size_t)g * length;
        float top = -INFINITY, total = 0.0f;
        for (int l = 0; l < length; l++) top = row[l] > top ? row[l] : top;
        if (top == -INFINITY) { /* nothing visible (a padding query): zeros, not NaN */
            for (int l = 0; l < length; l++) row[l] = 0.0f;
            inverse[g] = 0.0f;
            continue;
        }
        for (int l = 0; l < length; l++) {
            float weight = expf(row[l] - top);
            total += weight;
            row[l] = round_bf16(weight); /* as SDPA's CPU kernel feeds bf16 weights to P @ V */
        }
        inverse[g] = total > 0.0f ? 1.0f / total : 0.0f;
    }
    __m512 acc[MAX_GROUP * (MAX_DIM / 16)];
    for (int i = 0; i < group * chunks16; i++) acc[i] = _mm512_setzero_ps();
    for (int l = 0; l < length; l++) {
        if (mask[l] < MASKED) continue;
        const uint16_t* value = v + (size_t)l * dim;
        for (int c = 0; c < chunks16; c++) {
            __m512 wide = widen_bf16(value + 16 * c);
            for (int g = 0; g < group; g++)
                acc[g * chunks16 + c] = _mm512_fmadd_ps(_mm512_set1_ps(scores[(size_t)g * length + l]),
                                                        wide, acc[g * chunks16 + c]);
        }
    }
    for (int g = 0; g < group; g++)
        for (int c = 0; c < chunks16; c++)
            _mm256_storeu_si256((__m256i*)(out + (size_t)g * dim + 16 * c),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(
                                    acc[g * chunks16 + c], _mm512_set1_ps(inverse[g]))));
}

/* Attention for short queries (decode steps, short prompt pieces): q (rows, tokens, kv_heads *
 * group, dim) at q + row * q_row_stride + token * q_token_stride, each token's heads contiguous;
 * k, v: a row's kv head at k + row * kv_row_stride + head * kv_head_stride, `length` keys of
 * `dim`; mask (rows, tokens, length) fp32 additive (causality and each row's length live there);
 * out (rows, tokens, kv_heads * group * dim) bf16. Returns 0, or -1 if a buffer failed. */
int md_attention(const uint16_t* q, long q_row_stride, long q_token_stride, const uint16_t* k,
                 const uint16_t* v, long kv_row_stride, long kv_head_stride, const float* mask,
                 int rows, int tokens, int kv_heads, int group, int dim, int length, float scale,
                 uint16_t* out, int threads) {
    if (group > MAX_GROUP || dim > MAX_DIM || dim % 16) return -1;
    int failed = 0;
    _Pragma("omp parallel for num_threads(threads) schedule(static) reduction(|:failed)")
    for (int task = 0; task < rows * tokens * kv_heads; task++) {
        const int h = task % kv_heads, t = (task / kv_heads) % tokens, r = task / (kv_heads * tokens);
        float* scores = malloc(sizeof(float) * (size_t)group * length);
        if (!scores) { failed = 1; continue; }
        const size_t kv = (size_t)r * kv_row_stride + (size_t)h * kv_head_stride;
        const size_t query_row = (size_t)r * tokens + t;
        attend_one(q + (size_t)r * q_row_stride + (size_t)t * q_token_stride + (size_t)h * group * dim,
                   dim, k + kv, v + kv, mask + query_row * length, group, dim, length, scale,
                   out + (query_row * kv_heads + h) * group * dim, scores);
        free(scores);
    }
    return failed ? -1 : 0;
}

/* ---- The step's glue between GEMMs: what torch would run as 3-6 small ops each, one call. ----
 * Each rounds to bf16 where torch's bf16 ops round (so results match torch's to the last bit, or
 * by one bf16 step where torch's fp32 sum order or exp differs), and each row is computed alone:
 * a row's result does not depend on the rows beside it. Widths are multiples of 16, head dims
 * at most MAX_DIM, checked by the caller. */

TARGET static inline __m512 bf16_round(__m512 value) { /* to bf16 and back: torch's rounding */
    __m512i wide = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(value));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

TARGET static inline void store_bf16(uint16_t* p, __m512 value) {
    _mm256_storeu_si256((__m256i*)p, (__m256i)_mm512_cvtneps_pbh(value));
}

TARGET static inline __m512 exp512(__m512 x) { /* Cephes' expf, ~1 ulp; inf and 0 at the ends */
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* hidden (rows, dim) += delta (when not NULL), rounded to bf16 as torch's add; then
 * out = weight * bf16(hidden * rsqrt(mean(hidden^2) + eps)), the mean in fp32: transformers'
 * Llama RMSNorm (F.rms_norm rounds its result to bf16, the weight multiplies in bf16). */
TARGET void md_add_rms_norm(uint16_t* hidden, const uint16_t* delta, const uint16_t* weight,
                            uint16_t* out, int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        uint16_t* h = hidden + (size_t)r * dim;
        __m512 squares = _mm512_setzero_ps();
        for (int i = 0; i < dim; i += 16) {
            __m512 value = widen_bf16(h + i);
            if (delta) {
                value = bf16_round(_mm512_add_ps(value, widen_bf16(delta + (size_t)r * dim + i)));
                store_bf16(h + i, value);
            }
            squares = _mm512_fmadd_ps(value, value, squares);
        }
        const __m512 scale = _mm512_set1_ps(
            1.0f / sqrtf(_mm512_reduce_add_ps(squares) / (float)dim + eps));
        uint16_t* o = out + (size_t)r * dim;
        for (int i = 0; i < dim; i += 16)
            store_bf16(o + i, _mm512_mul_ps(widen_bf16(weight + i),
                                            bf16_round(_mm512_mul_ps(widen_bf16(h + i), scale))));
    }
}

/* out (rows, inter) = bf16(silu(gate)) * up, gate and up the two halves of each row of
 * gate_up (rows, 2 * inter): torch's silu on bf16 (x / (1 + exp(-x)) in fp32, one rounding),
 * then its mul. */
TARGET void md_silu_mul(const uint16_t* gate_up, uint16_t* out, int rows, int inter) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int r = 0; r < rows; r++) {
        const uint16_t* gate = gate_up + (size_t)r * 2 * inter;
        for (int i = 0; i < inter; i += 16) {
            const __m512 g = widen_bf16(gate + i);
            const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, exp512(_mm512_sub_ps(
                                                     _mm512_setzero_ps(), g))));
            store_bf16(out + (size_t)r * inter + i,
                       _mm512_mul_ps(bf16_round(silu), widen_bf16(gate + inter + i)));
        }
    }
}

/* Rotary embedding in place on the first `heads` heads of each token of x (tokens, >= heads,
 * dim), token_stride elements apart: x = bf16(x * cos) + bf16(roll(x, dim / 2) * sin), rounded
 * as torch's three bf16 ops; cos and sin (tokens, dim), sin's first half already negated. */
TARGET void md_rotary(uint16_t* x, long token_stride, int tokens, int heads, int dim,
                      const uint16_t* cos, const uint16_t* sin) {
    const int chunks = dim / 16, half = dim / 2;
    float twice[2 * MAX_DIM]; /* a head's values twice over: roll(x, half) is a load at +half */
    for (int t = 0; t < tokens; t++) {
        __m512 c[MAX_DIM / 16], s[MAX_DIM / 16];
        for (int i = 0; i < chunks; i++) {
            c[i] = widen_bf16(cos + (size_t)t * dim + 16 * i);
            s[i] = widen_bf16(sin + (size_t)t * dim + 16 * i);
        }
        for (int h = 0; h < heads; h++) {
            uint16_t* head = x + (size_t)t * token_stride + (size_t)h * dim;
            __m512 original[MAX_DIM / 16];
            for (int i = 0; i < chunks; i++) {
                original[i] = widen_bf16(head + 16 * i);
                _mm512_storeu_ps(twice + 16 * i, original[i]);
                _mm512_storeu_ps(twice + dim + 16 * i, original[i]);
            }
            for (int i = 0; i < chunks; i++)
                store_bf16(head + 16 * i, _mm512_add_ps(
                    bf16_round(_mm512_mul_ps(original[i], c[i])),
                    bf16_round(_mm512_mul_ps(_mm512_loadu_ps(twice + 16 * i + half), s[i]))));
        }
    }
}

/* A part's keys and values into the slot cache: token (r, t)'s heads go to slot first + r,
 * column columns[r * q + t] of keys/values (slots, heads, columns, dim), slot_stride and
 * head_stride elements apart. k and v hold each token's heads contiguous, src_token_stride
 * elements from one token to the next. A plain copy: what torch's index_put does, without its
 * per-call setup (two a layer, ~15 us each at batch 8). */
void md_write_kv(uint16_t* keys, uint16_t* values, long slot_stride, long head_stride,
                 const uint16_t* k, const uint16_t* v, long src_token_stride, int first,
                 const int64_t* columns, int rows, int q, int heads, int dim) {
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < q; t++) {
            const size_t token = (size_t)r * q + t;
            const size_t at = (size_t)(first + r) * slot_stride + (size_t)columns[token] * dim;
            for (int h = 0; h < heads; h++) {
                const size_t from = token * src_token_stride + (size_t)h * dim;
                __builtin_memcpy(keys + at + (size_t)h * head_stride, k + from, 2 * (size_t)dim);
                __builtin_memcpy(values + at + (size_t)h * head_stride, v + from, 2 * (size_t)dim);
            }
        }
}

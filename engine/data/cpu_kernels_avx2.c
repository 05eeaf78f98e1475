/* modeldeck's GEMMs for x86 CPUs with AVX2 and FMA but no AVX512-BF16:
 * y (M, N) bf16 = x (M, K) bf16 @ (W (N, K) * scale (N) fp32).T (+ bias (N) fp32), with W stored
 * as int8 (one scale per output row) or as bf16 (no scale).
 *
 * Why: on such a CPU torch has no fast kernel for either: bf16 `F.linear` is emulated and grows
 * with the rows (all linears of a SmolLM2 step: 26 / 143 ms at 1 / 8 rows), and torch's int8
 * weight-only GEMM (`_weight_int8pack_mm`) was no faster than that at one row (figures in
 * engine/serving/cpukernels.py). Here each weight is read once and widened in registers (int8 ->
 * int32 -> fp32, bf16 -> fp32 by a shift: both exact), x is widened to fp32 once per call,
 * products are exact in fp32 and summed in fp32 in k order, then scaled, biased and rounded once
 * to bf16 (ties to even, as torch).
 *
 * Weight layout ("packed"): N/16 blocks of 16 output rows; inside a block, for each k the 16
 * rows' weights side by side (block, k, 16) -- two 8-lane fp32 vectors per k.
 * Requires N % 16 == 0. Compiled into the same library as cpu_kernels.c. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define GROUP 4 /* rows per pass over a block: 8 accumulators, 4 broadcasts, 1 weight: 13 ymm */

int md_avx2_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

AVX2 static inline __m256 widen_int8(const int8_t* p) { /* 8 int8 -> 8 fp32, exact */
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}

AVX2 static inline __m256 widen_bf16(const uint16_t* p) { /* 8 bf16 -> 8 fp32: the high half */
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

AVX2 static inline __m128i to_bf16(__m256 value) { /* 8 fp32 -> 8 bf16, nearest, ties to even */
    __m256i bits = _mm256_castps_si256(value);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    bits = _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
    bits = _mm256_srli_epi32(bits, 16);
    /* packus works within 128-bit lanes: 0..3 | 4..7 -> pick the low half of each lane */
    __m256i packed = _mm256_packus_epi32(bits, bits);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

AVX2 static inline void store(__m256 sum, const float* scale, const float* bias, uint16_t* y) {
    /* one explicit FMA: a mul and an add the compiler may or may not contract would round
     * differently in different kernels, and a row's result would depend on its batch */
    __m256 offset = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    __m256 factor = scale ? _mm256_loadu_ps(scale) : _mm256_set1_ps(1.0f); /* bf16: none */
    __m256 value = _mm256_fmadd_ps(sum, factor, offset);
    _mm_storeu_si128((__m128i*)y, to_bf16(value));
}

/* SPAN blocks of 16 outputs for ROWS rows of xf (fp32, row stride ldx). Every output sums its
 * K products in k order whatever ROWS and SPAN are, so a row's result does not depend on the rows
 * it shares a step with. More blocks a pass at 1-2 rows keep 8 FMA chains in flight instead of 2-4
 * (measured, all linears of a SmolLM2 step at one row: 14.7 ms with 4 chains, 13.9 with 8).
 * The accumulators are named variables, not an array: GCC stores an array of vectors back to
 * the stack on every iteration (seen in the assembly: 6 stores a k at 4 rows).
 * a<m><j>: the sum of row m, vector j (outputs 8j..8j+7 of the span). */
#define ROW(m, ...) if (rows > m) { __VA_ARGS__ }
#define VECTOR(j, ...) if (2 * span > j) { __VA_ARGS__ }
#define FMA_ROW(m, j)                                                                           \
    ROW(m, a##m##j = _mm256_fmadd_ps(weight, x##m, a##m##j);)
#define FMA_VECTOR(j, WIDEN)                                                                    \
    VECTOR(j, __m256 weight = WIDEN(w + (j / 2) * block_size + (size_t)i * 16 + 8 * (j % 2)); \
              FMA_ROW(0, j) FMA_ROW(1, j) FMA_ROW(2, j) FMA_ROW(3, j))
#define STORE_ROW(m, j)                                                                         \
    ROW(m, store(a##m##j, scale ? scale + 8 * j : 0, bias ? bias + 8 * j : 0,                \
                 y + (size_t)m * ldy + 8 * j);)
#define STORE_VECTOR(j) VECTOR(j, STORE_ROW(0, j) STORE_ROW(1, j) STORE_ROW(2, j) STORE_ROW(3, j))
#define ZEROS(m) __m256 a##m##0 = _mm256_setzero_ps(), a##m##1 = a##m##0, a##m##2 = a##m##0,    \
                        a##m##3 = a##m##0, a##m##4 = a##m##0, a##m##5 = a##m##0,              \
                        a##m##6 = a##m##0, a##m##7 = a##m##0;
#define BROADCAST(m)                                                                            \
    __m256 x##m = _mm256_setzero_ps();                                                          \
    ROW(m, x##m = _mm256_broadcast_ss(xf + (size_t)m * ldx + i);)

/* WEIGHT_T and WIDEN: the stored weight type and its widening to fp32 */
#define BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, ROWS, SPAN)                                        \
    AVX2 static void NAME##_##ROWS##x##SPAN(const float* xf, int ldx, int k, const WEIGHT_T* w, \
                                            size_t block_size, const float* scale,            \
                                            const float* bias, uint16_t* y, int ldy) {         \
        enum { rows = ROWS, span = SPAN }; /* what ROW and VECTOR test, folded at compile time */ \
        ZEROS(0) ZEROS(1) ZEROS(2) ZEROS(3)                                                    \
        for (int i = 0; i < k; i++) {                                                          \
            BROADCAST(0) BROADCAST(1) BROADCAST(2) BROADCAST(3)                                \
            FMA_VECTOR(0, WIDEN) FMA_VECTOR(1, WIDEN) FMA_VECTOR(2, WIDEN)                     \
            FMA_VECTOR(3, WIDEN) FMA_VECTOR(4, WIDEN) FMA_VECTOR(5, WIDEN)                     \
            FMA_VECTOR(6, WIDEN) FMA_VECTOR(7, WIDEN)                                          \
        }                                                                                      \
        STORE_VECTOR(0) STORE_VECTOR(1) STORE_VECTOR(2) STORE_VECTOR(3)                        \
        STORE_VECTOR(4) STORE_VECTOR(5) STORE_VECTOR(6) STORE_VECTOR(7)                        \
    }
#define ALL_SHAPES(NAME, WEIGHT_T, WIDEN)                                                       \
    BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, 1, 1) BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, 2, 1)         \
    BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, 3, 1) BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, 4, 1)         \
    BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, 1, 2) BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, 2, 2)         \
    BLOCK_KERNEL(NAME, WEIGHT_T, WIDEN, 1, 4)                                                  \
    typedef void (*NAME##_t)(const float*, int, int, const WEIGHT_T*, size_t, const float*,    \
                             const float*, uint16_t*, int);                                    \
    static const NAME##_t NAME##_single[GROUP + 1] = {0, NAME##_1x1, NAME##_2x1, NAME##_3x1,  \
                                                      NAME##_4x1};                             \
    static const NAME##_t NAME##_double[3] = {0, NAME##_1x2, NAME##_2x2};

ALL_SHAPES(int8_block, int8_t, widen_int8)
ALL_SHAPES(bf16_block, uint16_t, widen_bf16)

AVX2 static void widen_rows(const uint16_t* x, size_t count, float* xf) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(xf + i, widen_bf16(x + i));
    for (; i < count; i++) {
        uint32_t bits = (uint32_t)x[i] << 16;
        __builtin_memcpy(xf + i, &bits, 4);
    }
}

/* Each thread takes units of whole 16-output blocks (4 at one row where there are enough to share
 * evenly, 2 at 1-2 rows, else 1) and runs every row group of x through them before the next, so
 * a block's weights (16 x K) come from memory once and from L1/L2 after. Returns nonzero when x's
 * fp32 copy could not be allocated. */
#define GEMM(NAME, WEIGHT_T, BLOCKS)                                                            \
    AVX2 int NAME(const uint16_t* x, int rows, int k, const WEIGHT_T* w, int n,                \
                  const float* scale, const float* bias, uint16_t* y, int threads) {           \
        if (rows <= 0) return 0;                                                               \
        float* xf = aligned_alloc(64, ((size_t)rows * k * sizeof(float) + 63) / 64 * 64);     \
        if (!xf) return 1;                                                                     \
        widen_rows(x, (size_t)rows * k, xf);                                                   \
        const int blocks = n / 16;                                                             \
        const int span = rows == 1 && blocks >= 16 * threads ? 4 : rows <= 2 ? 2 : 1;          \
        const int units = (blocks + span - 1) / span;                                          \
        const size_t block_size = (size_t)k * 16;                                              \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                      \
        for (int u = 0; u < units; u++) {                                                      \
            const int end = (u + 1) * span < blocks ? (u + 1) * span : blocks;                 \
            for (int m = 0; m < rows; m += GROUP) {                                            \
                int count = rows - m < GROUP ? rows - m : GROUP;                               \
                for (int b = u * span, taken; b < end; b += taken) { /* last unit: maybe short */ \
                    taken = b + 4 <= end && span == 4 ? 4 : b + 2 <= end && span >= 2 ? 2 : 1;  \
                    BLOCKS##_t kernel = taken == 4 ? BLOCKS##_1x4                              \
                                        : taken == 2 ? BLOCKS##_double[count]                  \
                                                     : BLOCKS##_single[count];                 \
                    kernel(xf + (size_t)m * k, k, k, w + b * block_size, block_size,           \
                           scale ? scale + 16 * b : 0, bias ? bias + 16 * b : 0,               \
                           y + (size_t)m * n + 16 * b, n);                                     \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        free(xf);                                                                              \
        return 0;                                                                              \
    }

GEMM(md_int8_gemm_avx2, int8_t, int8_block)
GEMM(md_bf16_gemm_avx2, uint16_t, bf16_block)

/*
 * transform.c - one fused pass over a batch: validate, filter, sqrt(x) * 2,
 * post-validate, compact. The contract and the outcome for every special
 * value are in transform.h; this file explains how the loop is kept fast.
 *
 * Shape of the loop (measured on 10,000,000 doubles with 30% negatives, 2%
 * NaN/Inf, AMD EPYC Zen 2, gcc 12 -O3; see benchmarks/bench_native.py):
 *
 * 1. Classification works on the bit pattern, not on floating-point compares:
 *    integer tests cannot raise FP exceptions on NaNs, survive any compiler
 *    flag that assumes finite math, and pin -0.0 exactly (sign bit set, all
 *    other bits zero: kept).
 * 2. Compaction is branch-free: every input is stored at output[kept] and the
 *    index advances by the keep flag (0 or 1). With 30% negatives at random
 *    positions a branch would mispredict on a large share of items; the
 *    store-always loop has no data-dependent branch at all. The price is that
 *    output must hold length doubles, not just the kept ones.
 * 3. Where the CPU has AVX2 (x86-64, GCC, Linux), one fused loop does it all
 *    four items at a time (transform_block_avx2): integer compares classify
 *    the four bit patterns; dropped lanes are zeroed so that the four square
 *    roots never see a negative or a NaN; a 16-entry table maps the 4-bit keep
 *    mask to the vpermd permutation that packs the kept results to the front;
 *    all four lanes are stored at output[kept] and kept advances by the mask's
 *    popcount. It runs at the speed of memory: 10 ms for 10,000,000 items on
 *    the machine above, against 8.7 ms for memcpy of the same input and 19 ms
 *    for the portable form below.
 * 4. Everywhere else (the portable form) the batch is walked in blocks of
 *    PL_BLOCK items: the first loop compacts the raw inputs that pass
 *    validation and the filter (point 2), the second computes sqrt(x) * 2 in
 *    place over that block, which is still in L1; separating them lets the
 *    compiler vectorise the second (it cannot while the write index is carried
 *    from item to item). On x86-64 with GCC that second loop is compiled twice
 *    (baseline and AVX2, target_clones: an ifunc the dynamic loader resolves).
 *    Which form runs is asked of the CPU on each call (__builtin_cpu_supports),
 *    so one build runs on every x86-64 machine. Define PL_NO_TARGET_CLONES to
 *    build the portable form only (csrc/sanitize.sh tests both).
 * 5. Post-validation cannot fail for IEEE-754 binary64 (the largest result is
 *    sqrt(DBL_MAX) * 2, about 2.7e154), so it is a cheap OR-reduction over the
 *    results and the pass that would drop non-finite results (in order) only
 *    runs if that reduction fires.
 *
 * Never build this file with -ffast-math (or -ffinite-math-only): the NaN and
 * Inf handling depends on IEEE semantics. -fno-math-errno is safe and lets
 * sqrt compile to a single instruction with no errno branch.
 */
#include "transform.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Items per block: large enough to amortise the per-block bookkeeping, small
 * enough (8 KiB) that a block of results stays in L1 between the two loops of
 * the portable form. Overridable with -DPL_BLOCK=n for experiments. */
#ifndef PL_BLOCK
#define PL_BLOCK 1024
#endif

/* How far ahead, in items, the AVX2 form prefetches its input: 4 KiB. The
 * hardware prefetcher alone left that loop at 10.9 ms for 10,000,000 items;
 * prefetching 256 to 1024 items ahead brought it to 8.5-8.8 ms, memcpy's
 * speed. Overridable with -DPL_PREFETCH_DISTANCE=n for experiments. */
#ifndef PL_PREFETCH_DISTANCE
#define PL_PREFETCH_DISTANCE 512
#endif

#define PL_EXPONENT_MASK UINT64_C(0x7FF0000000000000)
#define PL_MAGNITUDE_MASK UINT64_C(0x7FFFFFFFFFFFFFFF)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(PL_NO_TARGET_CLONES)
#define PL_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#define PL_HAVE_AVX2_KERNEL 1
#include <immintrin.h>
#else
#define PL_TARGET_CLONES
#define PL_HAVE_AVX2_KERNEL 0
#endif

/* memcpy is the defined way to read a double's bits; compilers emit one move. */
static uint64_t bits_of(double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* Replace values[0..count) by sqrt(value) * 2 and report whether any result is
 * NaN or Inf. Inputs are finite and not negative (or -0.0). */
PL_TARGET_CLONES
static int sqrt_times_two_in_place(double *values, size_t count)
{
    uint64_t any_non_finite = 0;
    size_t index;
    for (index = 0; index < count; index++) {
        double result = sqrt(values[index]) * 2.0;
        values[index] = result;
        any_non_finite |= (uint64_t)((bits_of(result) & PL_EXPONENT_MASK) == PL_EXPONENT_MASK);
    }
    return any_non_finite != 0;
}

/* Drop NaN/Inf from values[0..count) in place, keeping order; return how many
 * remain. Unreachable for IEEE-754 doubles (see point 5 above). */
static size_t drop_non_finite(double *values, size_t count)
{
    size_t written = 0;
    size_t index;
    for (index = 0; index < count; index++) {
        uint64_t finite = (bits_of(values[index]) & PL_EXPONENT_MASK) != PL_EXPONENT_MASK;
        values[written] = values[index];
        written += (size_t)finite;
    }
    return written;
}

/* Copy the inputs of input[0..count) that pass validation and the business
 * filter to output[0..), in order, add the NaN/Inf among them to
 * *invalid_input and return how many were copied. One item at a time, with
 * no data-dependent branch (point 2 above). Writes output[0..kept] (one slot
 * past the kept items when the last item is dropped), never beyond count. */
static size_t compact_portable(const double *input, size_t count, double *output,
                               uint64_t *invalid_input)
{
    size_t kept = 0;
    uint64_t non_finite_count = 0;
    size_t index;
    for (index = 0; index < count; index++) {
        double value = input[index];
        uint64_t bits = bits_of(value);
        uint64_t magnitude = bits & PL_MAGNITUDE_MASK;
        /* Exponent all ones: +/-Inf or a NaN of any sign and payload. */
        uint64_t non_finite = magnitude >= PL_EXPONENT_MASK;
        /* Sign bit clear and finite (bits below the Inf pattern), or +/-0.0. */
        uint64_t keep = (bits < PL_EXPONENT_MASK) | (magnitude == 0);
        output[kept] = value;
        kept += (size_t)keep;
        non_finite_count += non_finite;
    }
    *invalid_input += non_finite_count;
    return kept;
}

/* Drop NaN/Inf from the count values that end just before end, in place,
 * keeping order and keeping them against end; return how many remain. The
 * mirror image of drop_non_finite, for the backward form. */
static size_t drop_non_finite_backward(double *end, size_t count)
{
    size_t written = 0;
    size_t index;
    for (index = 1; index <= count; index++) {
        double value = end[-(ptrdiff_t)index];
        uint64_t finite = (bits_of(value) & PL_EXPONENT_MASK) != PL_EXPONENT_MASK;
        end[-1 - (ptrdiff_t)written] = value;
        written += (size_t)finite;
    }
    return written;
}

/* The mirror image of compact_portable: walk input[0..count) from its last
 * item to its first and copy the inputs that pass validation and the filter
 * so that they end just before output_end, in input order. Writes only within
 * output_end[-count..0). */
static size_t compact_portable_backward(const double *input, size_t count, double *output_end,
                                        uint64_t *invalid_input)
{
    size_t kept = 0;
    uint64_t non_finite_count = 0;
    size_t index = count;
    while (index > 0) {
        double value = input[--index];
        uint64_t bits = bits_of(value);
        uint64_t magnitude = bits & PL_MAGNITUDE_MASK;
        uint64_t non_finite = magnitude >= PL_EXPONENT_MASK;
        uint64_t keep = (bits < PL_EXPONENT_MASK) | (magnitude == 0);
        output_end[-1 - (ptrdiff_t)kept] = value;
        kept += (size_t)keep;
        non_finite_count += non_finite;
    }
    *invalid_input += non_finite_count;
    return kept;
}

#if PL_HAVE_AVX2_KERNEL
/* For each 4-bit keep mask (bit i set: lane i kept), the vpermd indices that
 * move the kept 64-bit lanes to the front, in order, as pairs of 32-bit
 * halves. Read-only data shared by every call: nothing here is mutable. */
#define PL_LANES(a, b, c, d) {2 * (a), 2 * (a) + 1, 2 * (b), 2 * (b) + 1, \
                              2 * (c), 2 * (c) + 1, 2 * (d), 2 * (d) + 1}
static const int32_t pack_kept_lanes[16][8] __attribute__((aligned(32))) = {
    PL_LANES(0, 0, 0, 0), PL_LANES(0, 0, 0, 0), PL_LANES(1, 0, 0, 0), PL_LANES(0, 1, 0, 0),
    PL_LANES(2, 0, 0, 0), PL_LANES(0, 2, 0, 0), PL_LANES(1, 2, 0, 0), PL_LANES(0, 1, 2, 0),
    PL_LANES(3, 0, 0, 0), PL_LANES(0, 3, 0, 0), PL_LANES(1, 3, 0, 0), PL_LANES(0, 1, 3, 0),
    PL_LANES(2, 3, 0, 0), PL_LANES(0, 2, 3, 0), PL_LANES(1, 2, 3, 0), PL_LANES(0, 1, 2, 3),
};
/* The same, packing the kept lanes to the back (lanes 4 - p .. 3), in order,
 * for the backward form. */
static const int32_t pack_kept_lanes_to_back[16][8] __attribute__((aligned(32))) = {
    PL_LANES(0, 0, 0, 0), PL_LANES(0, 0, 0, 0), PL_LANES(0, 0, 0, 1), PL_LANES(0, 0, 0, 1),
    PL_LANES(0, 0, 0, 2), PL_LANES(0, 0, 0, 2), PL_LANES(0, 0, 1, 2), PL_LANES(0, 0, 1, 2),
    PL_LANES(0, 0, 0, 3), PL_LANES(0, 0, 0, 3), PL_LANES(0, 0, 1, 3), PL_LANES(0, 0, 1, 3),
    PL_LANES(0, 0, 2, 3), PL_LANES(0, 0, 2, 3), PL_LANES(0, 1, 2, 3), PL_LANES(0, 1, 2, 3),
};
#undef PL_LANES

/* Transform input[0..count) into output[0..), compacted, add the NaN/Inf
 * inputs to *invalid_input, set *any_non_finite if a result is NaN or Inf and
 * return how many results were written (point 3 above). Writes at most 3
 * slots past the results, never beyond count. */
__attribute__((target("avx2,popcnt")))
static size_t transform_avx2(const double *input, size_t count, double *output,
                                   uint64_t *invalid_input, int *any_non_finite)
{
    const __m256i exponent_mask = _mm256_set1_epi64x((long long)PL_EXPONENT_MASK);
    const __m256i largest_finite = _mm256_set1_epi64x((long long)(PL_EXPONENT_MASK - 1));
    const __m256i magnitude_mask = _mm256_set1_epi64x((long long)PL_MAGNITUDE_MASK);
    const __m256i negative_zero = _mm256_set1_epi64x((long long)~PL_MAGNITUDE_MASK);
    const __m256i minus_one = _mm256_set1_epi64x(-1);
    const __m256d two = _mm256_set1_pd(2.0);
    __m256i non_finite_results = _mm256_setzero_si256();
    size_t kept = 0;
    uint64_t non_finite_inputs = 0;
    size_t index;
    size_t tail_kept;
    int tail_non_finite;

    for (index = 0; index + 4 <= count; index += 4) {
        __m256i bits = _mm256_loadu_si256((const __m256i *)(const void *)(input + index));
        /* Once per 64-byte line, ask for the line PL_PREFETCH_DISTANCE items
         * ahead (never past the input: no pointer beyond it is formed). */
        if (index % 8 == 0 && PL_PREFETCH_DISTANCE < count - index) {
            _mm_prefetch((const char *)(input + index + PL_PREFETCH_DISTANCE), _MM_HINT_T0);
        }
        /* Signed 64-bit compares: bits > -1 is "sign bit clear", and Inf > bits
         * then leaves the finite non-negatives; -0.0 is added back exactly. */
        __m256i keep_lanes = _mm256_or_si256(
            _mm256_and_si256(_mm256_cmpgt_epi64(bits, minus_one),
                             _mm256_cmpgt_epi64(exponent_mask, bits)),
            _mm256_cmpeq_epi64(bits, negative_zero));
        __m256i non_finite = _mm256_cmpgt_epi64(_mm256_and_si256(bits, magnitude_mask),
                                                largest_finite);
        int keep = _mm256_movemask_pd(_mm256_castsi256_pd(keep_lanes));
        /* Dropped lanes become +0.0: sqrt raises no FE_INVALID and needs no NaN. */
        __m256d kept_values = _mm256_castsi256_pd(_mm256_and_si256(bits, keep_lanes));
        __m256i results =
            _mm256_castpd_si256(_mm256_mul_pd(_mm256_sqrt_pd(kept_values), two));
        __m256i permutation =
            _mm256_load_si256((const __m256i *)(const void *)pack_kept_lanes[keep]);

        non_finite_results = _mm256_or_si256(
            non_finite_results,
            _mm256_cmpeq_epi64(_mm256_and_si256(results, exponent_mask), exponent_mask));
        _mm256_storeu_si256((__m256i *)(void *)(output + kept),
                            _mm256_permutevar8x32_epi32(results, permutation));
        kept += (size_t)__builtin_popcount((unsigned)keep);
        non_finite_inputs += (uint64_t)__builtin_popcount(
            (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(non_finite)));
    }
    *invalid_input += non_finite_inputs;
    /* The last 0-3 items, one at a time; output + kept is scratch, so the lanes
     * stored past the results above may be overwritten. */
    tail_kept = compact_portable(input + index, count - index, output + kept, invalid_input);
    tail_non_finite = sqrt_times_two_in_place(output + kept, tail_kept);
    *any_non_finite =
        tail_non_finite || !_mm256_testz_si256(non_finite_results, non_finite_results);
    return kept + tail_kept;
}

/* The mirror image of transform_avx2: walk input[0..count) four items at a
 * time from its end and write the results so that they end just before
 * output_end, in input order; each group's kept lanes are packed to the back
 * of the four stored lanes, and the write position moves down by their
 * count. Writes only within output_end[-count..0). */
__attribute__((target("avx2,popcnt")))
static size_t transform_avx2_backward(const double *input, size_t count, double *output_end,
                                      uint64_t *invalid_input, int *any_non_finite)
{
    const __m256i exponent_mask = _mm256_set1_epi64x((long long)PL_EXPONENT_MASK);
    const __m256i largest_finite = _mm256_set1_epi64x((long long)(PL_EXPONENT_MASK - 1));
    const __m256i magnitude_mask = _mm256_set1_epi64x((long long)PL_MAGNITUDE_MASK);
    const __m256i negative_zero = _mm256_set1_epi64x((long long)~PL_MAGNITUDE_MASK);
    const __m256i minus_one = _mm256_set1_epi64x(-1);
    const __m256d two = _mm256_set1_pd(2.0);
    __m256i non_finite_results = _mm256_setzero_si256();
    size_t kept = 0;
    uint64_t non_finite_inputs = 0;
    size_t index;
    size_t head_kept;
    int head_non_finite;

    for (index = count; index >= 4; index -= 4) {
        __m256i bits = _mm256_loadu_si256((const __m256i *)(const void *)(input + index - 4));
        if (index % 8 == 0 && index > PL_PREFETCH_DISTANCE + 4) {
            _mm_prefetch((const char *)(input + index - 4 - PL_PREFETCH_DISTANCE), _MM_HINT_T0);
        }
        __m256i keep_lanes = _mm256_or_si256(
            _mm256_and_si256(_mm256_cmpgt_epi64(bits, minus_one),
                             _mm256_cmpgt_epi64(exponent_mask, bits)),
            _mm256_cmpeq_epi64(bits, negative_zero));
        __m256i non_finite = _mm256_cmpgt_epi64(_mm256_and_si256(bits, magnitude_mask),
                                                largest_finite);
        int keep = _mm256_movemask_pd(_mm256_castsi256_pd(keep_lanes));
        __m256d kept_values = _mm256_castsi256_pd(_mm256_and_si256(bits, keep_lanes));
        __m256i results =
            _mm256_castpd_si256(_mm256_mul_pd(_mm256_sqrt_pd(kept_values), two));
        __m256i permutation =
            _mm256_load_si256((const __m256i *)(const void *)pack_kept_lanes_to_back[keep]);

        non_finite_results = _mm256_or_si256(
            non_finite_results,
            _mm256_cmpeq_epi64(_mm256_and_si256(results, exponent_mask), exponent_mask));
        _mm256_storeu_si256((__m256i *)(void *)(output_end - kept - 4),
                            _mm256_permutevar8x32_epi32(results, permutation));
        kept += (size_t)__builtin_popcount((unsigned)keep);
        non_finite_inputs += (uint64_t)__builtin_popcount(
            (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(non_finite)));
    }
    *invalid_input += non_finite_inputs;
    /* The first 0-3 items, one at a time. */
    head_kept = compact_portable_backward(input, index, output_end - kept, invalid_input);
    head_non_finite = sqrt_times_two_in_place(output_end - kept - head_kept, head_kept);
    *any_non_finite =
        head_non_finite || !_mm256_testz_si256(non_finite_results, non_finite_results);
    return kept + head_kept;
}
#endif

/* The portable form (point 4 above): compact a block, then take the square
 * roots over it while it is in L1. Same contract as transform_avx2, writing
 * at most one slot past the results. */
static size_t transform_portable(const double *input, size_t count, double *output,
                                 uint64_t *invalid_input, int *any_non_finite)
{
    size_t kept = 0;
    size_t block_start;
    int non_finite = 0;

    for (block_start = 0; block_start < count; block_start += PL_BLOCK) {
        size_t block_length = count - block_start > PL_BLOCK ? PL_BLOCK : count - block_start;
        size_t block_kept =
            compact_portable(input + block_start, block_length, output + kept, invalid_input);
        non_finite |= sqrt_times_two_in_place(output + kept, block_kept);
        kept += block_kept;
    }
    *any_non_finite = non_finite;
    return kept;
}

/* Run the AVX2 form where the CPU has it, else the portable one. */
static size_t transform_compacted(int use_avx2, const double *input, size_t count,
                                  double *output, uint64_t *invalid_input, int *any_non_finite)
{
#if PL_HAVE_AVX2_KERNEL
    if (use_avx2) {
        return transform_avx2(input, count, output, invalid_input, any_non_finite);
    }
#endif
    (void)use_avx2;
    return transform_portable(input, count, output, invalid_input, any_non_finite);
}

/* The mirror image of transform_portable: blocks from the last to the first,
 * each compacted backward and then square-rooted in place. */
static size_t transform_portable_backward(const double *input, size_t count,
                                          double *output_end, uint64_t *invalid_input,
                                          int *any_non_finite)
{
    size_t kept = 0;
    size_t block_end = count;
    int non_finite = 0;

    while (block_end > 0) {
        size_t block_length = block_end > PL_BLOCK ? PL_BLOCK : block_end;
        size_t block_kept = compact_portable_backward(input + block_end - block_length,
                                                      block_length, output_end - kept,
                                                      invalid_input);
        non_finite |= sqrt_times_two_in_place(output_end - kept - block_kept, block_kept);
        kept += block_kept;
        block_end -= block_length;
    }
    *any_non_finite = non_finite;
    return kept;
}

int pl_transform(const double *input, size_t length, double *output,
                 size_t output_capacity, pl_transform_counts *counts)
{
    size_t kept = 0;
    uint64_t invalid_input = 0;
    uint64_t invalid_output = 0;
    int any_non_finite;
#if PL_HAVE_AVX2_KERNEL
    /* Asked on every call (a load and a test of libgcc's CPU model, filled in
     * when the library is loaded), so pl_transform keeps no state of its own. */
    const int use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#else
    const int use_avx2 = 0;
#endif

    if (counts == NULL) {
        return PL_ERROR_NULL_POINTER;
    }
    memset(counts, 0, sizeof *counts);
    if (length > 0 && (input == NULL || output == NULL)) {
        return PL_ERROR_NULL_POINTER;
    }
    if (output_capacity < length) {
        return PL_ERROR_OUTPUT_TOO_SMALL;
    }

    kept = transform_compacted(use_avx2, input, length, output, &invalid_input, &any_non_finite);
    if (any_non_finite) {
        size_t remaining = drop_non_finite(output, kept);
        invalid_output = (uint64_t)(kept - remaining);
        kept = remaining;
    }

    counts->kept = (uint64_t)kept;
    counts->invalid_input = invalid_input;
    counts->invalid_output = invalid_output;
    /* Every item is exactly one of kept, negative, invalid_input or
     * invalid_output, so the negatives need no counter in the loop. */
    counts->negative = (uint64_t)length - counts->kept - invalid_input - invalid_output;
    return PL_OK;
}

int pl_transform_backward(const double *input, size_t length, double *output,
                          size_t output_capacity, pl_transform_counts *counts)
{
    size_t kept;
    uint64_t invalid_input = 0;
    uint64_t invalid_output = 0;
    int any_non_finite;
    double *output_end;
#if PL_HAVE_AVX2_KERNEL
    const int use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif

    if (counts == NULL) {
        return PL_ERROR_NULL_POINTER;
    }
    memset(counts, 0, sizeof *counts);
    if (length > 0 && (input == NULL || output == NULL)) {
        return PL_ERROR_NULL_POINTER;
    }
    if (output_capacity < length) {
        return PL_ERROR_OUTPUT_TOO_SMALL;
    }
    if (length == 0) {
        return PL_OK;
    }

    output_end = output + output_capacity;
#if PL_HAVE_AVX2_KERNEL
    if (use_avx2) {
        kept = transform_avx2_backward(input, length, output_end, &invalid_input,
                                       &any_non_finite);
    } else
#endif
    {
        kept = transform_portable_backward(input, length, output_end, &invalid_input,
                                           &any_non_finite);
    }
    if (any_non_finite) {
        size_t remaining = drop_non_finite_backward(output_end, kept);
        invalid_output = (uint64_t)(kept - remaining);
        kept = remaining;
    }

    counts->kept = (uint64_t)kept;
    counts->invalid_input = invalid_input;
    counts->invalid_output = invalid_output;
    counts->negative = (uint64_t)length - counts->kept - invalid_input - invalid_output;
    return PL_OK;
}

void pl_move(double *destination, const double *source, size_t count)
{
    if (count > 0) {
        memmove(destination, source, count * sizeof *destination);
    }
}

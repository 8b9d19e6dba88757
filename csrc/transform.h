/*
 * transform.h - the hot loop of the production stage, as plain reentrant C99.
 *
 * One call turns a batch of doubles into results in a buffer the caller owns:
 *
 *     validation       drop x if it is NaN or +/-Inf        -> invalid_input
 *     business filter  drop x if x < 0                      -> negative
 *     transform        y = sqrt(x) * 2
 *     post-validation  drop y if it is NaN or +/-Inf        -> invalid_output
 *     output           write y, compacted, in input order   -> kept
 *
 * There is no Python.h, no global or static state and no allocation, so any
 * number of threads may call pl_transform at once on distinct buffers; the
 * Python binding (src/pipeline/native/compiled.py) calls it with the GIL released.
 *
 * Outcomes for the special values (IEEE-754 binary64, round-to-nearest):
 *   +0.0                 kept, result +0.0
 *   -0.0                 kept, result -0.0: -0.0 < 0 is false, so the business
 *                        filter does not drop it, and sqrt(-0.0) is -0.0 by IEEE-754
 *   subnormal x > 0      kept, result sqrt(x) * 2 (a normal number, correctly rounded)
 *   negative subnormal   negative
 *   DBL_MAX              kept, result about 2.68e154; no finite input overflows,
 *                        so invalid_output stays 0 for IEEE-754 doubles; the check
 *                        is kept because the stage's contract names it
 *   -DBL_MAX             negative
 *   +Inf, -Inf           invalid_input (checked before the business filter)
 *   NaN of any kind      invalid_input, quiet or signalling, any sign or payload;
 *                        NaNs are classified from their bits and never reach an
 *                        arithmetic instruction, so no NaN is propagated and a
 *                        signalling NaN raises no floating-point exception
 * sqrt is only ever applied to kept values (dropped lanes compute sqrt(0.0)),
 * so the call raises no FE_INVALID flag and is safe even when the caller has
 * enabled floating-point traps. Build without -ffast-math: it lets the
 * compiler assume that NaN and Inf never occur, which deletes these checks.
 */
#ifndef PIPELINE_TRANSFORM_H
#define PIPELINE_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How the items of one call were classified; every input lands in exactly one
 * field, so kept + negative + invalid_input + invalid_output == length. */
typedef struct pl_transform_counts {
    uint64_t kept;           /* written to output */
    uint64_t negative;       /* dropped by the business filter: x < 0 */
    uint64_t invalid_input;  /* dropped by validation: NaN or +/-Inf */
    uint64_t invalid_output; /* dropped by post-validation: sqrt(x)*2 not finite */
} pl_transform_counts;

/* Status codes returned by pl_transform. */
enum {
    PL_OK = 0,
    PL_ERROR_NULL_POINTER = -1,     /* counts is NULL, or input/output NULL with length > 0 */
    PL_ERROR_OUTPUT_TOO_SMALL = -2  /* output_capacity < length */
};

/*
 * Transform input[0..length) into output[0..counts->kept) and fill *counts.
 *
 * output_capacity is counted in doubles and must be at least length, even
 * though only counts->kept results are meaningful: the loop stores every item
 * and advances the write index only for kept ones, which is what keeps it free
 * of unpredictable branches. Slots output[counts->kept..length) are scratch
 * and hold unspecified values afterwards.
 *
 * Both pointers must be aligned for double. output may equal input (the
 * transform then runs in place); any other overlap is undefined.
 *
 * Returns PL_OK, or a negative PL_ERROR_* code with nothing written to output
 * and *counts (if counts is not NULL) set to all zeros.
 */
int pl_transform(const double *input, size_t length, double *output,
                 size_t output_capacity, pl_transform_counts *counts);

/*
 * The same transform, with the results placed at the END of the output:
 * output[output_capacity - counts->kept .. output_capacity), in input order.
 * The input is walked from its last item to its first, so a caller that cuts
 * a batch into pieces and processes them last to first can lay their results
 * end to end, downwards, without knowing how many each will keep. Two
 * threads can then fill one output from a meeting point outwards: one
 * backward into the part below it, one forward (pl_transform) into the part
 * above, and the results of both are contiguous without a copy.
 *
 * output_capacity must be at least length; slots output[output_capacity -
 * length .. output_capacity - counts->kept) are scratch afterwards, and
 * nothing below output_capacity - length is written. Both pointers must be
 * aligned for double; the buffers must not overlap. Returns what pl_transform
 * returns, in the same cases.
 */
int pl_transform_backward(const double *input, size_t length, double *output,
                          size_t output_capacity, pl_transform_counts *counts);

/*
 * Copy count doubles from source to destination; the ranges may overlap (it
 * is memmove). It exists so that Python code can move a batch's results into
 * place through the same binding, with the GIL released: copying into fresh
 * memory takes a page fault per 4 KiB, which is too slow to do while holding
 * the GIL. Both pointers must be aligned for double; NULL is allowed only
 * with count == 0.
 */
void pl_move(double *destination, const double *source, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* PIPELINE_TRANSFORM_H */

/*
 * test_transform.c - a dependency-free test driver for pl_transform.
 *
 * Run under AddressSanitizer and UndefinedBehaviorSanitizer by
 * csrc/sanitize.sh (make sanitize). Exits 0 when every check passes and 1
 * otherwise, printing one line per failed check and a closing
 * "N passed, N failed" line.
 */
#include "transform.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks_passed = 0;
static int checks_failed = 0;

static void check(int condition, const char *what, int line)
{
    if (condition) {
        checks_passed++;
    } else {
        checks_failed++;
        printf("FAILED line %d: %s\n", line, what);
    }
}
#define CHECK(condition) check((condition), #condition, __LINE__)

static double from_bits(uint64_t bits)
{
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static uint64_t to_bits(double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static int same_bits(double left, double right)
{
    return to_bits(left) == to_bits(right);
}

static int counts_add_up(const pl_transform_counts *counts, size_t length)
{
    return counts->kept + counts->negative + counts->invalid_input + counts->invalid_output ==
           (uint64_t)length;
}

/* Every special value, one call, checked item by item. */
static void test_special_values(void)
{
    const double smallest_subnormal = from_bits(UINT64_C(1));
    const double largest_subnormal = from_bits(UINT64_C(0x000FFFFFFFFFFFFF));
    const double input[] = {
        0.0,                                   /* kept -> +0.0 */
        -0.0,                                  /* kept -> -0.0 */
        4.0,                                   /* kept -> 4.0 */
        smallest_subnormal,                    /* kept */
        largest_subnormal,                     /* kept */
        DBL_MAX,                               /* kept */
        DBL_MIN,                               /* kept */
        -smallest_subnormal,                   /* negative */
        -1.0,                                  /* negative */
        -DBL_MAX,                              /* negative */
        HUGE_VAL,                              /* invalid_input */
        -HUGE_VAL,                             /* invalid_input */
        from_bits(UINT64_C(0x7FF8000000000000)), /* quiet NaN */
        from_bits(UINT64_C(0xFFF8000000000001)), /* negative quiet NaN, payload 1 */
        from_bits(UINT64_C(0x7FF0000000000001)), /* signalling NaN, payload 1 */
        from_bits(UINT64_C(0xFFF4000000000000)), /* negative signalling NaN */
        from_bits(UINT64_C(0x7FFFFFFFFFFFFFFF)), /* quiet NaN, all payload bits */
        9.0,                                   /* kept -> 6.0 */
    };
    const size_t length = sizeof input / sizeof input[0];
    double output[sizeof input / sizeof input[0]];
    pl_transform_counts counts;

    CHECK(pl_transform(input, length, output, length, &counts) == PL_OK);
    CHECK(counts.kept == 8);
    CHECK(counts.negative == 3);
    CHECK(counts.invalid_input == 7);
    CHECK(counts.invalid_output == 0);
    CHECK(counts_add_up(&counts, length));
    CHECK(same_bits(output[0], 0.0));
    CHECK(same_bits(output[1], -0.0));
    CHECK(same_bits(output[2], 4.0));
    CHECK(same_bits(output[3], sqrt(smallest_subnormal) * 2.0));
    CHECK(output[3] > 0.0);
    CHECK(same_bits(output[4], sqrt(largest_subnormal) * 2.0));
    CHECK(same_bits(output[5], sqrt(DBL_MAX) * 2.0));
    CHECK(isfinite(output[5]));
    CHECK(same_bits(output[6], sqrt(DBL_MIN) * 2.0));
    CHECK(same_bits(output[7], 6.0));
}

/* NULL output/input is allowed only for an empty batch. */
static void test_empty_and_null(void)
{
    pl_transform_counts counts;
    double one = 1.0;
    double result = 0.0;

    CHECK(pl_transform(NULL, 0, NULL, 0, &counts) == PL_OK);
    CHECK(counts.kept == 0 && counts_add_up(&counts, 0));
    CHECK(pl_transform(&one, 1, &result, 1, NULL) == PL_ERROR_NULL_POINTER);
    CHECK(pl_transform(NULL, 1, &result, 1, &counts) == PL_ERROR_NULL_POINTER);
    CHECK(counts.kept == 0 && counts.negative == 0);
    CHECK(pl_transform(&one, 1, NULL, 1, &counts) == PL_ERROR_NULL_POINTER);
    CHECK(pl_transform(&one, 1, &result, 0, &counts) == PL_ERROR_OUTPUT_TOO_SMALL);
    CHECK(result == 0.0); /* nothing written on error */
    CHECK(pl_transform(&one, 1, &result, 1, &counts) == PL_OK);
    CHECK(counts.kept == 1 && same_bits(result, 2.0));

    result = 0.0;
    CHECK(pl_transform_backward(NULL, 0, NULL, 0, &counts) == PL_OK);
    CHECK(counts.kept == 0 && counts_add_up(&counts, 0));
    CHECK(pl_transform_backward(&one, 1, &result, 1, NULL) == PL_ERROR_NULL_POINTER);
    CHECK(pl_transform_backward(NULL, 1, &result, 1, &counts) == PL_ERROR_NULL_POINTER);
    CHECK(pl_transform_backward(&one, 1, NULL, 1, &counts) == PL_ERROR_NULL_POINTER);
    CHECK(pl_transform_backward(&one, 1, &result, 0, &counts) == PL_ERROR_OUTPUT_TOO_SMALL);
    CHECK(result == 0.0); /* nothing written on error */
    CHECK(pl_transform_backward(&one, 1, &result, 1, &counts) == PL_OK);
    CHECK(counts.kept == 1 && same_bits(result, 2.0));
}

/* pl_transform_backward gives pl_transform's results and counts, placed at
 * the end of its output. The backward output is allocated with exactly
 * `length` doubles so ASan catches a write below or above it. */
static void check_backward_matches_forward(const double *input, size_t length)
{
    double *forward = malloc(length * sizeof *forward + 1);
    double *backward = malloc(length * sizeof *backward + 1);
    pl_transform_counts forward_counts;
    pl_transform_counts backward_counts;

    if (forward == NULL || backward == NULL) {
        CHECK(!"allocation failed");
        free(forward);
        free(backward);
        return;
    }
    CHECK(pl_transform(input, length, forward, length, &forward_counts) == PL_OK);
    CHECK(pl_transform_backward(input, length, backward, length, &backward_counts) == PL_OK);
    CHECK(memcmp(&forward_counts, &backward_counts, sizeof forward_counts) == 0);
    CHECK(memcmp(forward, backward + (length - (size_t)backward_counts.kept),
                 (size_t)backward_counts.kept * sizeof *forward) == 0);
    free(forward);
    free(backward);
}

/* A batch longer than several blocks, with a pattern whose outcome is known,
 * checked against a straightforward branchy loop. The output is allocated
 * with exactly `length` doubles so ASan catches any write past it. */
static void test_many_blocks_against_simple_loop(size_t length)
{
    double *input = malloc(length * sizeof *input + 1);
    double *output = malloc(length * sizeof *output + 1);
    double *expected = malloc(length * sizeof *expected + 1);
    size_t expected_kept = 0;
    uint64_t expected_negative = 0;
    uint64_t expected_invalid = 0;
    pl_transform_counts counts;
    size_t index;
    int all_equal = 1;

    if (input == NULL || output == NULL || expected == NULL) {
        CHECK(!"allocation failed");
        free(input);
        free(output);
        free(expected);
        return;
    }
    for (index = 0; index < length; index++) {
        /* A deterministic mix; 7 and 13 are coprime to the block size. */
        double value = (double)index * 0.25;
        if (index % 7 == 3) {
            value = -value - 1.0;
        } else if (index % 13 == 5) {
            value = (index % 2) ? NAN : -HUGE_VAL;
        }
        input[index] = value;
        if (!isfinite(value)) {
            expected_invalid++;
        } else if (value < 0.0) {
            expected_negative++;
        } else {
            expected[expected_kept++] = sqrt(value) * 2.0;
        }
    }

    CHECK(pl_transform(input, length, output, length, &counts) == PL_OK);
    CHECK(counts.kept == expected_kept);
    CHECK(counts.negative == expected_negative);
    CHECK(counts.invalid_input == expected_invalid);
    CHECK(counts_add_up(&counts, length));
    for (index = 0; index < expected_kept; index++) {
        all_equal &= same_bits(output[index], expected[index]);
    }
    CHECK(all_equal);

    /* In place: output == input gives the same results. */
    CHECK(pl_transform(input, length, input, length, &counts) == PL_OK);
    CHECK(counts.kept == expected_kept);
    all_equal = 1;
    for (index = 0; index < expected_kept; index++) {
        all_equal &= same_bits(input[index], expected[index]);
    }
    CHECK(all_equal);

    check_backward_matches_forward(input, length);
    free(input);
    free(output);
    free(expected);
}

/* Every 4-bit keep pattern, at every offset from a 4-item group boundary:
 * the AVX2 form packs four lanes at a time with a 16-entry table, so each
 * entry is checked, with -0.0, negatives and NaN as the dropped lanes' kin.
 * The output holds exactly `length` doubles so ASan catches a wide store
 * past it. */
static void test_every_keep_pattern_of_four_lanes(void)
{
    enum { length = 11 };
    unsigned pattern;
    size_t offset;

    for (pattern = 0; pattern < 16; pattern++) {
        for (offset = 0; offset < 4; offset++) {
            double input[length];
            double *output = malloc(length * sizeof *output);
            double expected[length];
            size_t expected_kept = 0;
            pl_transform_counts counts;
            size_t index;
            int all_equal = 1;

            if (output == NULL) {
                CHECK(!"allocation failed");
                return;
            }
            for (index = 0; index < length; index++) {
                size_t lane = index - offset;
                int in_pattern = index >= offset && lane < 4;
                int kept = in_pattern ? (int)((pattern >> lane) & 1u) : index % 2 == 0;
                /* Kept values alternate with -0.0; dropped ones cycle through kinds. */
                double dropped = index % 3 == 0 ? -1.5 : (index % 3 == 1 ? NAN : -HUGE_VAL);
                double value = index % 5 == 4 ? -0.0 : (double)(index + 1) * 4.0;
                input[index] = kept ? value : dropped;
                if (kept) {
                    expected[expected_kept++] = sqrt(value) * 2.0;
                }
            }
            CHECK(pl_transform(input, length, output, length, &counts) == PL_OK);
            CHECK(counts.kept == expected_kept);
            CHECK(counts_add_up(&counts, length));
            for (index = 0; index < expected_kept && index < counts.kept; index++) {
                all_equal &= same_bits(output[index], expected[index]);
            }
            CHECK(all_equal);
            check_backward_matches_forward(input, length);
            free(output);
        }
    }
}

int main(void)
{
    size_t lengths[] = {1, 2, 3, 1023, 1024, 1025, 4099, 100003};
    size_t which;

    test_special_values();
    {
        double specials[] = {0.0, -0.0, 1e-310, -1e-310, DBL_MAX, -DBL_MAX, INFINITY,
                             -INFINITY, NAN, 4.0, -4.0, 9.0};
        check_backward_matches_forward(specials, sizeof specials / sizeof specials[0]);
    }
    test_empty_and_null();
    test_every_keep_pattern_of_four_lanes();
    for (which = 0; which < sizeof lengths / sizeof lengths[0]; which++) {
        test_many_blocks_against_simple_loop(lengths[which]);
    }
    printf("%d passed, %d failed\n", checks_passed, checks_failed);
    return checks_failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * bench_transform.c - time pl_transform and pl_transform_backward in C alone,
 * against memcpy of the same input.
 *
 * For experiments with the loop (block size, prefetch distance, the portable
 * form) without rebuilding the Python extension. 10,000,000 doubles like the
 * Python benchmark's (uniform in [0, 1000), about 30% negated, 1% NaN, 1% +Inf,
 * from rand() with a fixed seed), best of 15 calls into a reused output.
 *
 *   cc -O3 -fno-math-errno -Icsrc csrc/transform.c csrc/bench_transform.c -lm \
 *       -o /tmp/bench_transform && /tmp/bench_transform
 *
 * Add -DPL_NO_TARGET_CLONES for the portable form only, or
 * -DPL_PREFETCH_DISTANCE=n to move the prefetch (a distance larger than the
 * input turns it off).
 */
#define _POSIX_C_SOURCE 199309L
#include "transform.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

int main(void)
{
    const size_t length = 10000000;
    double *input = malloc(length * sizeof *input);
    double *output = malloc(length * sizeof *output);
    double *copy = malloc(length * sizeof *copy);
    double best_transform = INFINITY;
    double best_backward = INFINITY;
    double best_copy = INFINITY;
    pl_transform_counts counts;
    size_t index;
    int round;

    if (input == NULL || output == NULL || copy == NULL) {
        fputs("allocation failed\n", stderr);
        return EXIT_FAILURE;
    }
    srand(2024);
    for (index = 0; index < length; index++) {
        double value = 1000.0 * rand() / (double)RAND_MAX;
        double kind = rand() / (double)RAND_MAX;
        input[index] = kind < 0.01 ? NAN : kind < 0.02 ? INFINITY : kind < 0.32 ? -value : value;
    }
    memset(output, 0, length * sizeof *output); /* fault the pages in before timing */
    memset(copy, 0, length * sizeof *copy);
    for (round = 0; round < 15; round++) {
        double started = seconds_now();
        if (pl_transform(input, length, output, length, &counts) != PL_OK) {
            fputs("pl_transform failed\n", stderr);
            return EXIT_FAILURE;
        }
        best_transform = fmin(best_transform, seconds_now() - started);
        started = seconds_now();
        if (pl_transform_backward(input, length, output, length, &counts) != PL_OK) {
            fputs("pl_transform_backward failed\n", stderr);
            return EXIT_FAILURE;
        }
        best_backward = fmin(best_backward, seconds_now() - started);
        started = seconds_now();
        memcpy(copy, input, length * sizeof *copy);
        best_copy = fmin(best_copy, seconds_now() - started);
    }
    printf("pl_transform %.2f ms, pl_transform_backward %.2f ms, memcpy %.2f ms "
           "(%zu items, %llu kept)\n",
           best_transform * 1e3, best_backward * 1e3, best_copy * 1e3, length,
           (unsigned long long)counts.kept);
    free(input);
    free(output);
    free(copy);
    return EXIT_SUCCESS;
}

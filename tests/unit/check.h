/* Minimal unit-test helpers: each CHECK reports file:line and the failed
 * condition, and check_finish prints "N passed, N failed" and returns the
 * exit status for main. */
#ifndef QUADC_TESTS_CHECK_H
#define QUADC_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                       \
    do {                                                                         \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);          \
        if (check_a_ == check_b_) {                                              \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s == %s (%lld vs %lld)\n",    \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);             \
        }                                                                        \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol)                                            \
    do {                                                                         \
        double check_a_ = (double)(a), check_b_ = (double)(b);                   \
        if (fabs(check_a_ - check_b_) <= (atol) + (rtol) * fabs(check_b_)) {     \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s ~= %s (%.9g vs %.9g)\n",    \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);             \
        }                                                                        \
    } while (0)

/* Checks that two strings are equal and prints both when they differ. */
static inline void check_text(const char *label, const char *actual, const char *expected)
{
    if (strcmp(actual, expected) == 0) {
        check_passed++;
        return;
    }
    check_failed++;
    fprintf(stderr, "%s: text differs\n  expected: %s\n  actual:   %s\n", label, expected, actual);
}

static inline int check_finish(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif

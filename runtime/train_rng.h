/* The seeded pseudo-random generator of training: xoshiro256** (Blackman
 * and Vigna, 2018) seeded through splitmix64. Its whole state is four
 * 64-bit words, so a checkpoint can store it and a resumed run draws the
 * same numbers as an uninterrupted one. */
#ifndef QUADC_RUNTIME_TRAIN_RNG_H
#define QUADC_RUNTIME_TRAIN_RNG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct rt_rng {
    uint64_t s[4];
} rt_rng;

/* Seeds the generator from (seed, stream). Different streams of one seed
 * give independent sequences, so parameter init and batch sampling do not
 * disturb each other. */
void rt_rng_seed(rt_rng *r, uint64_t seed, uint64_t stream);
uint64_t rt_rng_next(rt_rng *r);
/* Returns a uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t rt_rng_below(rt_rng *r, uint64_t n);
/* Returns a uniform double in (0, 1]. */
double rt_rng_uniform(rt_rng *r);
/* Returns a standard normal sample by the Box-Muller transform. It uses two
 * uniforms per sample and keeps no spare, so the state stays four words. */
double rt_rng_normal(rt_rng *r);

/* Formats the state as 64 lowercase hex digits into buf (at least 65
 * bytes), and parses it back. rt_rng_parse returns false on bad text. */
void rt_rng_format(const rt_rng *r, char *buf);
bool rt_rng_parse(rt_rng *r, const char *text);

#endif

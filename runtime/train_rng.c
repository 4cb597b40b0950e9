/* xoshiro256** and splitmix64, written from the published algorithms. */
#include "runtime/train_rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void rt_rng_seed(rt_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1342543de82ef95ull);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t rt_rng_next(rt_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t rt_rng_below(rt_rng *r, uint64_t n)
{
    /* Reject draws from the incomplete last block of size 2^64 mod n. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = rt_rng_next(r);
    while (x >= limit);
    return x % n;
}

double rt_rng_uniform(rt_rng *r)
{
    return (double)((rt_rng_next(r) >> 11) + 1) * 0x1.0p-53;
}

double rt_rng_normal(rt_rng *r)
{
    double u1 = rt_rng_uniform(r);
    double u2 = rt_rng_uniform(r);
    const double two_pi = 6.283185307179586476925;
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

void rt_rng_format(const rt_rng *r, char *buf)
{
    for (int i = 0; i < 4; i++)
        snprintf(buf + 16 * i, 17, "%016llx", (unsigned long long)r->s[i]);
}

bool rt_rng_parse(rt_rng *r, const char *text)
{
    if (strlen(text) != 64)
        return false;
    rt_rng parsed;
    for (int i = 0; i < 4; i++) {
        uint64_t word = 0;
        for (int j = 0; j < 16; j++) {
            char c = text[16 * i + j];
            int digit;
            if (c >= '0' && c <= '9')
                digit = c - '0';
            else if (c >= 'a' && c <= 'f')
                digit = c - 'a' + 10;
            else
                return false;
            word = word << 4 | (uint64_t)digit;
        }
        parsed.s[i] = word;
    }
    if ((parsed.s[0] | parsed.s[1] | parsed.s[2] | parsed.s[3]) == 0)
        return false; /* the all-zero state is a fixed point of xoshiro */
    *r = parsed;
    return true;
}

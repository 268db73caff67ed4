/* rng.c: xoshiro256** seeded through splitmix64; deterministic across platforms. */
#include "../internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void dinoc_rng_seed(dinoc_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t dinoc_rng_u64(dinoc_rng *r) {
    uint64_t *s      = r->s;
    uint64_t  result = rotl(s[1] * 5, 7) * 9;
    uint64_t  t      = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float dinoc_rng_uniform(dinoc_rng *r) { return (float)(dinoc_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float dinoc_rng_normal(dinoc_rng *r) {
    /* Box-Muller; u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(dinoc_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(dinoc_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

float dinoc_rng_trunc_normal(dinoc_rng *r, float std, float a, float b) {
    for (;;) {
        float x = dinoc_rng_normal(r) * std;
        if (x >= a && x <= b) return x;
    }
}

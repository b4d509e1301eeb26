/* The project's one string hash: FNV-1a, 64 bit
 * (http://www.isthe.com/chongo/tech/comp/fnv/). Short keys, no seed, a few
 * cycles per byte: for tables whose keys come from configuration and
 * registration, not for keys a remote peer chooses at will (those tables
 * bound their size instead). Chain calls to hash several fields:
 * h = rete_fnv1a(rete_fnv1a(RETE_FNV1A_INIT, a, na), b, nb). */
#ifndef RETE_COMMON_HASH_H
#define RETE_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

#define RETE_FNV1A_INIT 0xcbf29ce484222325ull
#define RETE_FNV1A_PRIME 0x100000001b3ull

static inline uint64_t rete_fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * RETE_FNV1A_PRIME;
    return h;
}

/* MurmurHash3's 64-bit finaliser: spreads every input bit over the whole
 * word, for keys whose FNV-1a differs only in a few low bits (short keys,
 * consecutive numbers) before they are placed on a ring or table. */
static inline uint64_t rete_fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

/* The same over a NUL-terminated string, the NUL excluded. */
static inline uint64_t rete_fnv1a_str(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * RETE_FNV1A_PRIME;
    return h;
}

#endif

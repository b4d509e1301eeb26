/* Join tokens (format in token.h). */
#include "token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <string.h>

#define SECRET_BYTES 32
#define ID_BYTES 16

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* base64url without padding; out holds 4*ceil(n/3) - padding characters. */
static size_t b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t left = n - i;
        if (left > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            v |= in[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (left > 1)
            out[o++] = b64url[(v >> 6) & 63];
        if (left > 2)
            out[o++] = b64url[v & 63];
    }
    return o;
}

/* Decode exactly RETE_TOKEN_SECRET_LEN characters into SECRET_BYTES bytes;
 * false on a character outside the alphabet or non-zero trailing bits (a
 * non-canonical encoding would let two strings name one secret). */
static bool b64url_decode_secret(const char *in, uint8_t out[SECRET_BYTES])
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < RETE_TOKEN_SECRET_LEN; i++) {
        int v = b64url_value(in[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return o == SECRET_BYTES && acc == 0;
}

static bool sha256(const uint8_t *in, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    return EVP_Digest(in, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32;
}

rete_rc rete_token_new(char out[], size_t outlen, char id_out[33], uint8_t hash_out[32])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t id[ID_BYTES], secret[SECRET_BYTES];
    if (outlen < RETE_TOKEN_MAX)
        return RETE_ELIMIT;
    if (RAND_bytes(id, sizeof id) != 1 || RAND_bytes(secret, sizeof secret) != 1)
        return RETE_EIO;
    for (size_t i = 0; i < ID_BYTES; i++) {
        id_out[2 * i] = hex[id[i] >> 4];
        id_out[2 * i + 1] = hex[id[i] & 15];
    }
    id_out[RETE_TOKEN_ID_LEN] = '\0';
    memcpy(out, id_out, RETE_TOKEN_ID_LEN);
    out[RETE_TOKEN_ID_LEN] = '.';
    size_t n = b64url_encode(secret, sizeof secret, out + RETE_TOKEN_ID_LEN + 1);
    out[RETE_TOKEN_ID_LEN + 1 + n] = '\0';
    bool ok = sha256(secret, sizeof secret, hash_out);
    OPENSSL_cleanse(secret, sizeof secret);
    return ok ? RETE_OK : RETE_EIO;
}

rete_rc rete_token_parse(const char *token, char id[33], uint8_t hash[32])
{
    uint8_t secret[SECRET_BYTES];
    if (!token || strnlen(token, RETE_TOKEN_LEN + 1) != RETE_TOKEN_LEN ||
        token[RETE_TOKEN_ID_LEN] != '.')
        return RETE_EINVAL;
    for (size_t i = 0; i < RETE_TOKEN_ID_LEN; i++) {
        char c = token[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return RETE_EINVAL;
    }
    if (!b64url_decode_secret(token + RETE_TOKEN_ID_LEN + 1, secret))
        return RETE_EINVAL;
    memcpy(id, token, RETE_TOKEN_ID_LEN);
    id[RETE_TOKEN_ID_LEN] = '\0';
    bool ok = sha256(secret, sizeof secret, hash);
    OPENSSL_cleanse(secret, sizeof secret);
    return ok ? RETE_OK : RETE_EIO;
}

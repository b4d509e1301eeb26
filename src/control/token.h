/* Join tokens: "<id>.<secret>", id = 16 random bytes in lowercase hex (the
 * public half, the store's key), secret = 32 random bytes in base64url
 * without padding (RFC 4648 §5). The store keeps only the id and the
 * SHA-256 of the secret's 32 bytes, never the secret itself. */
#ifndef RETE_CONTROL_TOKEN_H
#define RETE_CONTROL_TOKEN_H

#include "result.h"

#include <stddef.h>
#include <stdint.h>

#define RETE_TOKEN_ID_LEN 32     /* hex characters */
#define RETE_TOKEN_SECRET_LEN 43 /* base64url characters */
#define RETE_TOKEN_LEN (RETE_TOKEN_ID_LEN + 1 + RETE_TOKEN_SECRET_LEN)
#define RETE_TOKEN_MAX (RETE_TOKEN_LEN + 1) /* with the NUL */

/* A new token in out (NUL-terminated; outlen >= RETE_TOKEN_MAX, else
 * RETE_ELIMIT), its id in id_out and the SHA-256 of its secret in hash_out.
 * RETE_EIO when the random generator fails. */
RETE_MUST_CHECK rete_rc rete_token_new(char out[], size_t outlen, char id_out[33],
                                       uint8_t hash_out[32]);

/* Split a token into its id and the SHA-256 of its secret. Strict: exactly
 * 32 lowercase hex digits, '.', 43 canonical base64url characters, nothing
 * around them (callers trim a token file's newline). RETE_EINVAL otherwise. */
RETE_MUST_CHECK rete_rc rete_token_parse(const char *token, char id[33], uint8_t hash[32]);

#endif

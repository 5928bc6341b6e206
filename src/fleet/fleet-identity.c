/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "fleet/fleet-identity.h"

#define IDENTITY_DOMAIN "espfleet identity v1"
#define FEISTEL_ROUNDS 4
#define HALF_BITS 12
#define HALF_MASK ((1u << HALF_BITS) - 1)

static int sha256(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[32]) {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        int ok;

        if (!c)
                return -ENOMEM;
        ok = EVP_DigestInit_ex2(c, EVP_sha256(), NULL) && EVP_DigestUpdate(c, a, alen) &&
             (blen == 0 || EVP_DigestUpdate(c, b, blen)) && EVP_DigestFinal_ex(c, out, NULL);
        EVP_MD_CTX_free(c);
        return ok ? 0 : -EIO;
}

int fleet_identity_key_from_seed(const char *seed, FleetIdentityKey *ret) {
        if (!seed || !*seed)
                return -EINVAL;
        /* The domain string keeps these keys apart from any other SHA-256 of
         * the same seed; its trailing NUL separates it from the seed. */
        return sha256(IDENTITY_DOMAIN, sizeof IDENTITY_DOMAIN, seed, strlen(seed), ret->key);
}

static int round_value(const FleetIdentityKey *k, unsigned round, unsigned half, unsigned *ret) {
        uint8_t in[FLEET_IDENTITY_KEY_LEN + 3], out[32];
        int r;

        memcpy(in, k->key, sizeof k->key);
        in[FLEET_IDENTITY_KEY_LEN] = (uint8_t) round;
        in[FLEET_IDENTITY_KEY_LEN + 1] = (uint8_t) (half >> 8);
        in[FLEET_IDENTITY_KEY_LEN + 2] = (uint8_t) half;
        r = sha256(in, sizeof in, NULL, 0, out);
        if (r < 0)
                return r;
        *ret = ((unsigned) out[0] << 8 | out[1]) & HALF_MASK;
        return 0;
}

static int prefix(const FleetIdentityKey *k, uint8_t p[3]) {
        uint8_t out[32];
        int r;

        r = sha256(k->key, sizeof k->key, "prefix", 6, out);
        if (r < 0)
                return r;
        p[0] = (uint8_t) ((out[0] | 0x02) & ~0x01);
        p[1] = out[1];
        p[2] = out[2];
        return 0;
}

/* A balanced Feistel network is a permutation whatever its round
 * function: each round maps (L, R) to (R, L ^ F(R)), which (R, L ^ F(R))
 * undoes. Decrypting runs the rounds backwards. */
static int feistel(const FleetIdentityKey *k, unsigned v, bool inverse, unsigned *ret) {
        unsigned l = (v >> HALF_BITS) & HALF_MASK, rt = v & HALF_MASK, f, t;
        int r;

        for (unsigned i = 0; i < FEISTEL_ROUNDS; i++) {
                unsigned round = inverse ? FEISTEL_ROUNDS - 1 - i : i;
                if (!inverse) {
                        r = round_value(k, round, rt, &f);
                        if (r < 0)
                                return r;
                        t = rt;
                        rt = l ^ f;
                        l = t;
                } else {
                        r = round_value(k, round, l, &f);
                        if (r < 0)
                                return r;
                        t = l;
                        l = rt ^ f;
                        rt = t;
                }
        }
        *ret = l << HALF_BITS | rt;
        return 0;
}

int fleet_identity_mac(const FleetIdentityKey *k, unsigned index, uint8_t mac[FLEET_MAC_LEN]) {
        unsigned low;
        int r;

        if (index > FLEET_IDENTITY_INDEX_MAX)
                return -ERANGE;
        r = prefix(k, mac);
        if (r < 0)
                return r;
        r = feistel(k, index, false, &low);
        if (r < 0)
                return r;
        mac[3] = (uint8_t) (low >> 16);
        mac[4] = (uint8_t) (low >> 8);
        mac[5] = (uint8_t) low;
        return 0;
}

int fleet_identity_index(const FleetIdentityKey *k, const uint8_t mac[FLEET_MAC_LEN], unsigned *ret) {
        uint8_t p[3];
        int r;

        r = prefix(k, p);
        if (r < 0)
                return r;
        if (memcmp(p, mac, 3) != 0)
                return -ENOENT;
        return feistel(k, (unsigned) mac[3] << 16 | (unsigned) mac[4] << 8 | mac[5], true, ret);
}

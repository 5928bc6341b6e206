/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_NVS

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "nvs/nvs-internal.h"

int nvs_keys_parse(const void *buf, size_t size, NvsXtsKeys *ret) {
        const uint8_t *b = buf;
        bool erased = true;

        if (!buf || !ret)
                return -EINVAL;
        if (size < 68)
                return -ESP_ERR_NVS_CORRUPT_KEY_PART;

        for (size_t i = 0; i < 68; i++)
                if (b[i] != 0xFF) {
                        erased = false;
                        break;
                }
        /* §3.4: a fully-erased key partition means "not initialised". */
        if (erased)
                return -ESP_ERR_NVS_KEYS_NOT_INITIALIZED;
        if (esp_crc(b, 64) != le32_read(b + 64))
                return -ESP_ERR_NVS_CORRUPT_KEY_PART;

        memcpy(ret->eky, b, 32);
        memcpy(ret->tky, b + 32, 32);
        return 0;
}

int nvs_keys_read_file(const char *path, NvsXtsKeys *ret, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size = 0;
        int r;

        r = read_full_file(path, 1024 * 1024, &data, &size);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot read key file: %s", path, strerror(-r));
                return r;
        }
        r = nvs_keys_parse(data, size, ret);
        explicit_bzero(data, size);
        if (r == -ESP_ERR_NVS_KEYS_NOT_INITIALIZED)
                snprintf(err, errlen, "%s: key partition is erased (no keys)", path);
        else if (r == -ESP_ERR_NVS_CORRUPT_KEY_PART)
                snprintf(err, errlen, "%s: not an nvs_keys image (%s, CRC of the 64 key bytes does not match)",
                         path, size < 68 ? "too short" : "bad CRC");
        return r;
}

void nvs_keys_serialize(const NvsXtsKeys *keys, uint8_t out[NVS_KEYS_PARTITION_SIZE]) {
        memset(out, 0xFF, NVS_KEYS_PARTITION_SIZE);
        memcpy(out, keys->eky, 32);
        memcpy(out + 32, keys->tky, 32);
        le32_write(out + 64, esp_crc(out, 64));
}

int nvs_keys_generate(NvsXtsKeys *ret) {
        /* XTS refuses identical halves; RAND_bytes makes that vanishingly rare,
         * but check rather than hope. */
        for (unsigned tries = 0; tries < 4; tries++) {
                if (RAND_bytes(ret->eky, 32) != 1 || RAND_bytes(ret->tky, 32) != 1)
                        return -EIO;
                if (memcmp(ret->eky, ret->tky, 32) != 0)
                        return 0;
        }
        return -EIO;
}

int nvs_keys_from_hmac(const uint8_t hmac_key[32], NvsXtsKeys *ret) {
        /* §3.4: seeds are the LE words 0xAEBE5A5A and 0xCEDEA5A5, repeated 8×. */
        static const uint8_t e_seed_word[4] = { 0x5A, 0x5A, 0xBE, 0xAE };
        static const uint8_t t_seed_word[4] = { 0xA5, 0xA5, 0xDE, 0xCE };
        uint8_t e_seed[32], t_seed[32];
        unsigned len;

        if (!hmac_key || !ret)
                return -EINVAL;
        for (unsigned i = 0; i < 32; i++) {
                e_seed[i] = e_seed_word[i % 4];
                t_seed[i] = t_seed_word[i % 4];
        }
        len = 32;
        if (!HMAC(EVP_sha256(), hmac_key, 32, e_seed, sizeof e_seed, ret->eky, &len) || len != 32)
                return -EIO;
        len = 32;
        if (!HMAC(EVP_sha256(), hmac_key, 32, t_seed, sizeof t_seed, ret->tky, &len) || len != 32)
                return -EIO;
        return 0;
}

struct NvsXts {
        EVP_CIPHER_CTX *enc;
        EVP_CIPHER_CTX *dec;
};

NvsXts *nvs_xts_free(NvsXts *x) {
        if (!x)
                return NULL;
        EVP_CIPHER_CTX_free(x->enc);
        EVP_CIPHER_CTX_free(x->dec);
        free(x);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(NvsXts *, nvs_xts_free);

int nvs_xts_new(const NvsXtsKeys *keys, NvsXts **ret) {
        _cleanup_(nvs_xts_freep) NvsXts *x = NULL;
        uint8_t key[64];
        int r = 0;

        x = calloc(1, sizeof *x);
        if (!x)
                return -ENOMEM;
        x->enc = EVP_CIPHER_CTX_new();
        x->dec = EVP_CIPHER_CTX_new();
        if (!x->enc || !x->dec)
                return -ENOMEM;

        /* OpenSSL's XTS key is key1 (data) ‖ key2 (tweak), as in IEEE P1619. */
        memcpy(key, keys->eky, 32);
        memcpy(key + 32, keys->tky, 32);
        if (EVP_EncryptInit_ex(x->enc, EVP_aes_256_xts(), NULL, key, NULL) != 1 ||
            EVP_DecryptInit_ex(x->dec, EVP_aes_256_xts(), NULL, key, NULL) != 1)
                r = -ESP_ERR_NVS_XTS_CFG_FAILED;
        explicit_bzero(key, sizeof key);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(x);
        return 0;
}

int nvs_xts_crypt(NvsXts *x, bool encrypt, uint32_t rel_addr, const uint8_t *in, uint8_t *out, unsigned n_entries) {
        EVP_CIPHER_CTX *ctx = encrypt ? x->enc : x->dec;

        for (unsigned k = 0; k < n_entries; k++) {
                uint8_t tweak[16] = {};
                int outl = 0;

                /* §3.4: each 32-byte entry is one data unit; the tweak is its
                 * partition-relative address, LE32, then 12 zero bytes. */
                le32_write(tweak, rel_addr + k * NVS_ENTRY_SIZE);
                if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, tweak, -1) != 1 ||
                    EVP_CipherUpdate(ctx, out + k * NVS_ENTRY_SIZE, &outl, in + k * NVS_ENTRY_SIZE,
                                     NVS_ENTRY_SIZE) != 1 ||
                    outl != NVS_ENTRY_SIZE)
                        return encrypt ? -ESP_ERR_NVS_XTS_ENCR_FAILED : -ESP_ERR_NVS_XTS_DECR_FAILED;
        }
        return 0;
}

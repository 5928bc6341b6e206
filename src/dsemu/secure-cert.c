/* SPDX-License-Identifier: MIT */

#define LOG_TOPIC LOG_TOPIC_DSEMU

#include <stdarg.h>

#include <openssl/pem.h>

#include "basic/crc.h"
#include "basic/errmsg.h"
#include "basic/log.h"
#include "basic/openssl-util.h"
#include "dsemu/secure-cert.h"

static const char *const secure_cert_tlv_type_table[] = {
        [SECURE_CERT_CA_CERT] = "CA_CERT",
        [SECURE_CERT_DEV_CERT] = "DEV_CERT",
        [SECURE_CERT_PRIV_KEY] = "PRIV_KEY",
        [SECURE_CERT_DS_DATA] = "DS_DATA",
        [SECURE_CERT_DS_CONTEXT] = "DS_CONTEXT",
        [SECURE_CERT_HMAC_ECDSA_KEY_SALT] = "HMAC_ECDSA_KEY_SALT",
        [SECURE_CERT_SEC_CFG] = "SEC_CFG",
        [SECURE_CERT_TEE_SEC_STORAGE_KEY] = "TEE_SEC_STORAGE_KEY",
        [SECURE_CERT_SIGNATURE_BLOCK] = "SIGNATURE_BLOCK",
        [SECURE_CERT_INTEGRITY] = "INTEGRITY",
        [SECURE_CERT_TLV_END] = "TLV_END",
        [SECURE_CERT_USER_DATA_1] = "USER_DATA_1",
        [SECURE_CERT_USER_DATA_2] = "USER_DATA_2",
        [SECURE_CERT_USER_DATA_3] = "USER_DATA_3",
        [SECURE_CERT_USER_DATA_4] = "USER_DATA_4",
        [SECURE_CERT_USER_DATA_5] = "USER_DATA_5",
};

const char *secure_cert_tlv_type_to_string(SecureCertTlvType t) {
        if ((int) t < 0 || (size_t) t >= ELEMENTSOF(secure_cert_tlv_type_table))
                return NULL;
        return secure_cert_tlv_type_table[t];
}

SecureCertTlvType secure_cert_tlv_type_from_string(const char *s) {
        if (!s)
                return _SECURE_CERT_TLV_TYPE_INVALID;
        for (size_t i = 0; i < ELEMENTSOF(secure_cert_tlv_type_table); i++)
                if (secure_cert_tlv_type_table[i] && streq(secure_cert_tlv_type_table[i], s))
                        return (SecureCertTlvType) i;
        return _SECURE_CERT_TLV_TYPE_INVALID;
}

static size_t tlv_padded_len(size_t len) {
        return ALIGN_TO(len, 16);
}

static size_t tlv_total_len(size_t len) {
        return SECURE_CERT_TLV_HEADER_LEN + tlv_padded_len(len) + SECURE_CERT_TLV_FOOTER_LEN;
}

int secure_cert_tlv_append(uint8_t *buf, size_t size, size_t *pos,
                           uint8_t type, uint8_t subtype, uint8_t flags,
                           const void *value, size_t len) {
        uint8_t *p;
        size_t body;

        if (!buf || !pos || (!value && len > 0))
                return -EINVAL;
        if (len > UINT16_MAX)
                return -EINVAL;
        if (*pos > size || size - *pos < tlv_total_len(len))
                return -ENOBUFS;

        /* header(12) ‖ value ‖ zero pad to 16 ‖ ESP-CRC over all of it (§9). */
        p = buf + *pos;
        body = SECURE_CERT_TLV_HEADER_LEN + tlv_padded_len(len);
        memset(p, 0, body);
        le32_write(p, SECURE_CERT_TLV_MAGIC);
        p[4] = flags;
        p[8] = type;
        p[9] = subtype;
        le16_write(p + 10, (uint16_t) len);
        if (len > 0)
                memcpy(p + SECURE_CERT_TLV_HEADER_LEN, value, len);
        le32_write(p + body, esp_crc(p, body));
        *pos += body + SECURE_CERT_TLV_FOOTER_LEN;
        return 0;
}

void secure_cert_ds_context(unsigned key_block, unsigned key_bits, uint8_t out[SECURE_CERT_DS_CONTEXT_LEN]) {
        /* esp_ds_data_ctx_t: pointer placeholder (patched by the reader),
         * efuse_key_id, alignment byte, rsa_length_bits LE16. */
        memset(out, 0, SECURE_CERT_DS_CONTEXT_LEN);
        out[4] = (uint8_t) key_block;
        le16_write(out + 6, (uint16_t) key_bits);
}

int secure_cert_build_rsa_ds(const char *dev_cert_pem, const char *ca_pem,
                             const DsData *ds, unsigned key_block, unsigned key_bits,
                             uint8_t *out, size_t out_size) {
        uint8_t ds_bytes[DS_DATA_LEN(DS_C_LEN_MAX)], ctx[SECURE_CERT_DS_CONTEXT_LEN];
        size_t pos = 0, ds_len;
        int r;

        if (!dev_cert_pem || !ds || !out || key_block >= EFUSE_KEY_BLOCKS)
                return -EINVAL;
        if (key_bits != (ds->rsa_length + 1) * 32)
                return -EINVAL;

        r = ds_data_to_bytes(ds, ds_bytes, sizeof(ds_bytes), &ds_len);
        if (r < 0)
                return r;
        secure_cert_ds_context(key_block, key_bits, ctx);

        /* Erased flash after the last TLV. */
        memset(out, 0xff, out_size);

        /* The order generate_partition_rsa_ds() writes (seen in the vector). */
        r = secure_cert_tlv_append(out, out_size, &pos, SECURE_CERT_DEV_CERT, 0, 0,
                                   dev_cert_pem, strlen(dev_cert_pem) + 1);
        if (r < 0)
                return r;
        if (ca_pem) {
                r = secure_cert_tlv_append(out, out_size, &pos, SECURE_CERT_CA_CERT, 0, 0,
                                           ca_pem, strlen(ca_pem) + 1);
                if (r < 0)
                        return r;
        }
        r = secure_cert_tlv_append(out, out_size, &pos, SECURE_CERT_DS_DATA, 0, 0, ds_bytes, ds_len);
        if (r < 0)
                return r;
        r = secure_cert_tlv_append(out, out_size, &pos, SECURE_CERT_DS_CONTEXT, 0, 0, ctx, sizeof(ctx));
        if (r < 0)
                return r;
        return (int) pos;
}

int secure_cert_write_region(const FlashRegion *r, const uint8_t *image, size_t len) {
        int k;

        if (!r || !image || len > r->size)
                return -EINVAL;
        k = flash_region_erase(r, 0, r->size);
        if (k < 0)
                return k;
        return flash_region_write(r, 0, image, len);
}

/* ---- Reading ---- */

struct SecureCert {
        uint8_t *data;
        size_t size;
        SecureCertTlv *tlvs;
        size_t n_tlvs;
};

SecureCert *secure_cert_free(SecureCert *c) {
        if (!c)
                return NULL;
        free(c->tlvs);
        if (c->data)
                explicit_bzero(c->data, c->size);
        free(c->data);
        free(c);
        return NULL;
}

static const char *type_name(uint8_t t, char *buf, size_t size) {
        const char *s = secure_cert_tlv_type_to_string(t);
        if (s)
                return s;
        snprintf(buf, size, "type %u", t);
        return buf;
}

int secure_cert_parse(const uint8_t *data, size_t size, SecureCert **ret, char *err, size_t errlen) {
        _cleanup_(secure_cert_freep) SecureCert *c = NULL;
        size_t pos = 0;

        if (!data || !ret)
                return -EINVAL;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->data = malloc(size ?: 1);
        if (!c->data)
                return -ENOMEM;
        memcpy(c->data, data, size);
        c->size = size;

        while (size - pos >= SECURE_CERT_TLV_HEADER_LEN && le32_read(c->data + pos) == SECURE_CERT_TLV_MAGIC) {
                const uint8_t *h = c->data + pos;
                size_t len = le16_read(h + 10), body;
                uint32_t crc_stored, crc;
                SecureCertTlv *t;
                char tn[16];

                if (size - pos < tlv_total_len(len)) {
                        (void) errf(err, errlen, 0,
                                "esp_secure_cert: TLV %zu (%s) at offset %zu: length %zu runs past the partition end (%zu bytes)",
                                c->n_tlvs, type_name(h[8], tn, sizeof(tn)), pos, len, size);
                        return -EBADMSG;
                }
                body = SECURE_CERT_TLV_HEADER_LEN + tlv_padded_len(len);
                crc_stored = le32_read(h + body);
                crc = esp_crc(h, body);
                if (crc != crc_stored) {
                        (void) errf(err, errlen, 0,
                                "esp_secure_cert: TLV %zu (%s) at offset %zu: CRC mismatch (stored 0x%08x, computed 0x%08x)",
                                c->n_tlvs, type_name(h[8], tn, sizeof(tn)), pos, crc_stored, crc);
                        return -EBADMSG;
                }

                t = reallocarray(c->tlvs, c->n_tlvs + 1, sizeof(SecureCertTlv));
                if (!t)
                        return -ENOMEM;
                c->tlvs = t;
                c->tlvs[c->n_tlvs++] = (SecureCertTlv) {
                        .offset = (uint32_t) pos,
                        .type = h[8],
                        .subtype = h[9],
                        .flags = h[4],
                        .value = h + SECURE_CERT_TLV_HEADER_LEN,
                        .len = len,
                };
                pos += body + SECURE_CERT_TLV_FOOTER_LEN;
        }

        if (c->n_tlvs == 0) {
                if (size >= 4 && le32_read(c->data) == 0xFFFFFFFFu)
                        (void) errf(err, errlen, 0, "esp_secure_cert: partition is erased (no TLV)");
                else
                        (void) errf(err, errlen, 0, "esp_secure_cert: no TLV magic 0xBA5EBA11 at offset 0 (found %02x %02x %02x %02x)",
                                size > 0 ? c->data[0] : 0, size > 1 ? c->data[1] : 0,
                                size > 2 ? c->data[2] : 0, size > 3 ? c->data[3] : 0);
                return -ENODATA;
        }

        *ret = TAKE_PTR(c);
        return 0;
}

int secure_cert_read_region(const FlashRegion *r, SecureCert **ret, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *buf = NULL;
        int k;

        if (!r || !ret)
                return -EINVAL;
        buf = malloc(r->size ?: 1);
        if (!buf)
                return -ENOMEM;
        k = flash_region_read(r, 0, buf, r->size);
        if (k < 0) {
                (void) errf(err, errlen, 0, "esp_secure_cert: cannot read %u bytes at flash offset 0x%x: %s",
                        r->size, r->offset, strerror(-k));
                return k;
        }
        k = secure_cert_parse(buf, r->size, ret, err, errlen);
        explicit_bzero(buf, r->size);
        return k;
}

size_t secure_cert_n_tlvs(const SecureCert *c) {
        return c ? c->n_tlvs : 0;
}

const SecureCertTlv *secure_cert_tlv(const SecureCert *c, size_t i) {
        return c && i < c->n_tlvs ? &c->tlvs[i] : NULL;
}

const SecureCertTlv *secure_cert_find(const SecureCert *c, SecureCertTlvType type, uint8_t subtype) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_tlvs; i++)
                if (c->tlvs[i].type == (unsigned) type && c->tlvs[i].subtype == subtype)
                        return &c->tlvs[i];
        return NULL;
}

int secure_cert_get_x509(const SecureCert *c, SecureCertTlvType type, X509 **ret) {
        const SecureCertTlv *t;
        X509 *x = NULL;

        if (!c || !ret)
                return -EINVAL;
        t = secure_cert_find(c, type, 0);
        if (!t)
                return -ENOENT;
        if (t->len == 0)
                return -EBADMSG;

        if (t->len > 10 && memcmp(t->value, "-----BEGIN", 10) == 0) {
                _cleanup_(BIO_free_allp) BIO *bio = NULL;
                size_t n = t->len;

                if (t->value[n - 1] == '\0')
                        n--;
                bio = BIO_new_mem_buf(t->value, (int) n);
                if (!bio)
                        return -ENOMEM;
                x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        } else {
                const unsigned char *p = t->value;
                x = d2i_X509(NULL, &p, (long) t->len);
        }
        if (!x)
                return -EBADMSG;
        *ret = x;
        return 0;
}

int secure_cert_get_ds(const SecureCert *c, EspChip chip, DsData *ret_data,
                       unsigned *ret_key_block, unsigned *ret_key_bits) {
        const SecureCertTlv *td, *tc;
        DsData d;
        unsigned block, bits;
        int r;

        if (!c)
                return -EINVAL;
        td = secure_cert_find(c, SECURE_CERT_DS_DATA, 0);
        tc = secure_cert_find(c, SECURE_CERT_DS_CONTEXT, 0);
        if (!td || !tc)
                return -ENOENT;
        if (tc->len != SECURE_CERT_DS_CONTEXT_LEN)
                return -EBADMSG;
        r = ds_data_from_bytes(chip, td->value, td->len, &d);
        if (r < 0)
                return -EBADMSG;
        block = tc->value[4];
        bits = le16_read(tc->value + 6);
        if (block >= EFUSE_KEY_BLOCKS || bits != (d.rsa_length + 1) * 32)
                return -EBADMSG;

        if (ret_data)
                *ret_data = d;
        if (ret_key_block)
                *ret_key_block = block;
        if (ret_key_bits)
                *ret_key_bits = bits;
        return 0;
}

/* SPDX-License-Identifier: MIT */
/* The esp_secure_cert partition in TLV format (esp-formats.md §9). The
 * input is the partition. When it parses, every TLV must lie inside it, the
 * TLVs written again with secure_cert_tlv_append() must parse to the same
 * list, and the certificate and DS lookups run on it for both chips. */

#include <openssl/err.h>

#include "dsemu/secure-cert.h"
#include "fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

static void check_lookups(const SecureCert *c) {
        static const SecureCertTlvType certs[] = { SECURE_CERT_CA_CERT, SECURE_CERT_DEV_CERT };

        for (size_t i = 0; i < ELEMENTSOF(certs); i++) {
                X509 *x = NULL;
                int r = secure_cert_get_x509(c, certs[i], &x);

                fuzz_check(r == 0 || r == -ENOENT || r == -EBADMSG, "get_x509(%d): %d", certs[i], r);
                fuzz_check((r == 0) == !!x, "get_x509 result and certificate disagree");
                fuzz_check(r != -ENOENT || !secure_cert_find(c, certs[i], 0), "get_x509: ENOENT with the TLV present");
                X509_free(x);
        }
        for (EspChip chip = 0; chip < _ESP_CHIP_MAX; chip++) {
                DsData ds;
                unsigned block = 99, bits = 0;
                int r = secure_cert_get_ds(c, chip, &ds, &block, &bits);

                fuzz_check(r == 0 || r == -ENOENT || r == -EBADMSG, "get_ds: %d", r);
                if (r == 0) {
                        uint8_t out[DS_DATA_LEN(DS_C_LEN_MAX)];
                        const SecureCertTlv *t = secure_cert_find(c, SECURE_CERT_DS_DATA, 0);
                        size_t len = 0;

                        fuzz_check(block < EFUSE_KEY_BLOCKS && bits == (ds.rsa_length + 1) * 32, "DS parameters");
                        r = ds_data_to_bytes(&ds, out, sizeof out, &len);
                        fuzz_check(r == 0 && t && len == t->len && memcmp(out, t->value, len) == 0,
                                   "DS_DATA does not serialise back to its TLV");
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(secure_cert_freep) SecureCert *c = NULL, *again = NULL;
        _cleanup_free_ uint8_t *rebuilt = NULL;
        char err[FUZZ_ERR_LEN] = "";
        size_t pos = 0;
        int r;

        r = secure_cert_parse(data, size, &c, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "secure_cert_parse");
        if (r < 0) {
                fuzz_check(r == -EBADMSG || r == -ENODATA, "secure_cert_parse: %d (%s)", r, err);
                return 0;
        }

        size_t n = secure_cert_n_tlvs(c);
        fuzz_check(n > 0 && !secure_cert_tlv(c, n), "%zu TLVs", n);
        rebuilt = malloc(size);
        if (!rebuilt)
                abort();
        memset(rebuilt, 0xFF, size);
        for (size_t i = 0; i < n; i++) {
                const SecureCertTlv *t = secure_cert_tlv(c, i);

                fuzz_check(t->offset + SECURE_CERT_TLV_HEADER_LEN + t->len <= size, "TLV %zu runs past the end", i);
                fuzz_check(memcmp(t->value, data + t->offset + SECURE_CERT_TLV_HEADER_LEN, t->len) == 0,
                           "TLV %zu's value is not the partition's bytes", i);
                fuzz_check(secure_cert_find(c, t->type, t->subtype) <= t, "find() is not the first match");
                (void) secure_cert_tlv_type_to_string(t->type);
                fuzz_check(t->offset == pos, "TLV %zu at 0x%x, the previous one ended at 0x%zx", i, t->offset, pos);
                r = secure_cert_tlv_append(rebuilt, size, &pos, t->type, t->subtype, t->flags, t->value, t->len);
                fuzz_check(r == 0, "TLV %zu does not fit again: %d", i, r);
        }
        err[0] = 0;
        r = secure_cert_parse(rebuilt, size, &again, err, sizeof err);
        fuzz_check(r == 0 && secure_cert_n_tlvs(again) == n, "the rewritten TLVs do not parse: %s", err);
        for (size_t i = 0; i < n; i++) {
                const SecureCertTlv *a = secure_cert_tlv(c, i), *b = secure_cert_tlv(again, i);
                fuzz_check(a->type == b->type && a->subtype == b->subtype && a->flags == b->flags &&
                           a->len == b->len && a->offset == b->offset && memcmp(a->value, b->value, a->len) == 0,
                           "TLV %zu differs after rewriting", i);
        }

        check_lookups(c);
        ERR_clear_error();
        return 0;
}

/* SPDX-License-Identifier: MIT */
/* QEMU eFuse files (esp-formats.md §2.6), for both chips. A file that
 * loads must serialise back to the same bytes and read consistently through
 * every accessor; then every burn is tried on a copy, and eFuse semantics
 * are checked (§2.4): a burn only sets bits, a refused burn changes nothing,
 * a read-protected key reads as zeros, and a burned file loads again. The
 * burns' parameters come from the file's own bytes. */

#include "basic/esp-err.h"
#include "dsemu/efuse.h"
#include "fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

static bool only_sets_bits(const uint8_t before[EFUSE_FILE_SIZE], const uint8_t after[EFUSE_FILE_SIZE]) {
        for (size_t i = 0; i < EFUSE_FILE_SIZE; i++)
                if (before[i] & ~after[i])
                        return false;
        return true;
}

/* Runs one burn on e: refused = nothing changed, done = bits only set. */
#define BURN(e, call, what)                                                                                  \
        do {                                                                                                 \
                uint8_t _before[EFUSE_FILE_SIZE], _after[EFUSE_FILE_SIZE];                                   \
                efuse_to_bytes((e), _before);                                                                \
                int _r = (call);                                                                             \
                efuse_to_bytes((e), _after);                                                                 \
                if (_r < 0)                                                                                  \
                        fuzz_check(memcmp(_before, _after, EFUSE_FILE_SIZE) == 0, "%s: refused (%d) but changed", \
                                   (what), _r);                                                              \
                else                                                                                         \
                        fuzz_check(only_sets_bits(_before, _after), "%s: cleared a burned bit", (what));     \
        } while (0)

static void read_everything(const Efuse *e) {
        size_t n = efuse_field_count(efuse_chip(e));
        uint8_t digests[3][32], mac[EFUSE_MAC_LEN];
        bool present[3];
        int r;

        for (size_t i = 0; i < n; i++) {
                const EfuseFieldInfo *f = efuse_field_by_index(efuse_chip(e), i);
                uint8_t raw[32];
                char text[256];
                uint64_t v;

                fuzz_check(f && efuse_field_by_name(efuse_chip(e), f->name) == f, "field %zu", i);
                r = efuse_field_get_raw(e, f, raw, sizeof raw);
                fuzz_check(r == 0, "get_raw(%s): %d", f->name, r);
                r = efuse_field_format_value(e, f, text, sizeof text);
                fuzz_check(r == 0 && memchr(text, 0, sizeof text), "format_value(%s): %d", f->name, r);
                r = efuse_get_field(e, f->name, &v);
                if (f->len > 64) {
                        fuzz_check(r == -E2BIG, "get_field(%s) of %u bits: %d", f->name, f->len, r);
                        continue;
                }
                fuzz_check(r == 0, "get_field(%s): %d", f->name, r);
                for (unsigned b = 0; b < f->len; b++)
                        fuzz_check(!!(v >> b & 1) == !!(raw[b / 8] >> (b % 8) & 1),
                                   "%s: get_field and get_raw disagree at bit %u", f->name, b);
                if (!efuse_field_is_readable(e, f))
                        fuzz_check(v == 0, "%s is read-protected but reads 0x%llx", f->name, (unsigned long long) v);
        }

        for (unsigned k = 0; k < EFUSE_KEY_BLOCKS; k++) {
                static const EfuseKeyPurpose modes[] = {
                        EFUSE_KEY_PURPOSE_HMAC_UP, EFUSE_KEY_PURPOSE_HMAC_DOWN_ALL,
                        EFUSE_KEY_PURPOSE_HMAC_DOWN_JTAG, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE,
                };
                uint8_t key[EFUSE_KEY_LEN], zero[EFUSE_KEY_LEN] = {}, hmac[32];
                EfuseKeyPurpose p = efuse_key_purpose(e, k);

                fuzz_check(p >= 0 && efuse_key_purpose_valid_for_chip(efuse_chip(e), p), "KEY_PURPOSE_%u = %d", k, p);
                r = efuse_read_key(e, k, key);
                fuzz_check(r == 0, "read_key(%u): %d", k, r);
                if (!efuse_key_is_readable(e, k))
                        fuzz_check(memcmp(key, zero, sizeof key) == 0, "BLOCK_KEY%u is read-protected but readable", k);
                (void) efuse_key_is_writeable(e, k);
                (void) efuse_key_block_is_empty(e, k);
                for (size_t m = 0; m < ELEMENTSOF(modes); m++) {
                        r = efuse_hmac(e, k, modes[m], "espfleet", 8, hmac);
                        fuzz_check(r == 0 || r == -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL, "hmac(%u, %d): %d", k, modes[m], r);
                }
        }
        for (int p = 0; p < _EFUSE_KEY_PURPOSE_MAX; p++) {
                r = efuse_find_key_block(e, (EfuseKeyPurpose) p);
                fuzz_check(r == -ENOENT || (r >= 0 && r < EFUSE_KEY_BLOCKS && efuse_key_purpose(e, (unsigned) r) == p),
                           "find_key_block(%d): %d", p, r);
        }
        efuse_get_mac(e, mac);
        fuzz_check(efuse_secure_version(e) <= 16, "secure version %u", efuse_secure_version(e));
        (void) efuse_secure_boot_enabled(e);
        (void) efuse_flash_encryption_enabled(e);
        r = efuse_secure_boot_digests(e, digests, present);
        fuzz_check(r >= 0 && r <= 3 && r == present[0] + present[1] + present[2], "secure_boot_digests: %d", r);
}

static void burn_everything(Efuse *e, const uint8_t *data) {
        size_t n = efuse_field_count(efuse_chip(e));
        char err[FUZZ_ERR_LEN];

        for (unsigned k = 0; k < EFUSE_KEY_BLOCKS; k++) {
                EfuseKeyPurpose p = (EfuseKeyPurpose) (data[100 + k] % _EFUSE_KEY_PURPOSE_MAX);
                bool rp = data[100 + k] & 0x80;
                bool was_empty = efuse_key_block_is_empty(e, k);
                uint8_t key[EFUSE_KEY_LEN];
                int r;

                BURN(e, r = efuse_burn_key(e, k, data + 200 + 8 * k, p, rp), "burn_key");
                if (r == 0) {
                        fuzz_check(was_empty && efuse_key_purpose(e, k) == p, "burn_key into a block that was not empty");
                        fuzz_check(!efuse_key_is_writeable(e, k), "a burned key block stays writeable");
                        r = efuse_read_key(e, k, key);
                        fuzz_check(r == 0, "read_key: %d", r);
                }
        }
        for (size_t i = 0; i < n; i++) {
                const EfuseFieldInfo *f = efuse_field_by_index(efuse_chip(e), i);
                uint64_t v = 0, add = (uint64_t) data[i % EFUSE_FILE_USED] << (i % 8);

                if (f->len > 64)
                        continue;
                if (efuse_get_field(e, f->name, &v) < 0)
                        continue;
                if (f->len < 64)
                        add &= (UINT64_C(1) << f->len) - 1;
                err[0] = 0;
                int r;
                BURN(e, r = efuse_burn_field_full(e, f->name, v | add, err, sizeof err), f->name);
                fuzz_check_err(r, err, sizeof err, "efuse_burn_field_full");
        }
        BURN(e, efuse_burn_secure_version(e, data[3] % 18), "burn_secure_version");
        BURN(e, efuse_revoke_secure_boot_digest(e, data[4] % 4), "revoke_secure_boot_digest");
        BURN(e, efuse_set_mac(e, data + 16), "set_mac");
}

static void one_chip(EspChip chip, const uint8_t *data, size_t size) {
        _cleanup_(efuse_freep) Efuse *e = NULL, *copy = NULL, *again = NULL;
        uint8_t out[EFUSE_FILE_SIZE];
        char err[FUZZ_ERR_LEN] = "";
        int r;

        r = efuse_from_bytes(chip, data, size, &e, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "efuse_from_bytes");
        if (r < 0) {
                fuzz_check(r == -EBADMSG, "efuse_from_bytes: %d (%s)", r, err);
                return;
        }
        fuzz_check(efuse_chip(e) == chip, "chip");
        efuse_to_bytes(e, out);
        fuzz_check(size == EFUSE_FILE_SIZE && memcmp(out, data, size) == 0, "a loaded eFuse file does not serialise back");
        read_everything(e);

        copy = efuse_dup(e);
        if (!copy)
                abort();
        burn_everything(copy, data);
        read_everything(copy);
        efuse_to_bytes(copy, out);
        err[0] = 0;
        r = efuse_from_bytes(chip, out, sizeof out, &again, err, sizeof err);
        fuzz_check(r == 0, "an eFuse file burned through the API does not load: %s", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        for (EspChip c = 0; c < _ESP_CHIP_MAX; c++)
                one_chip(c, data, size);
        return 0;
}

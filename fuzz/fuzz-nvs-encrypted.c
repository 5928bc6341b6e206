/* SPDX-License-Identifier: MIT */
/* NVS with XTS encryption (esp-formats.md §3.4), under the fixed key of the
 * basic-enc vector (VECTORS_DIR/nvs/basic-enc.keys.bin). Each input is used
 * twice:
 *  - as it is, as ciphertext: what a device reads from a partition written
 *    with that key (basic-enc.bin is a seed), or from a corrupted one; every
 *    key is read back;
 *  - as plaintext, encrypted here entry by entry as a device writes it: the
 *    encrypted partition must then read exactly as the plaintext one does,
 *    repairs and writes included.
 * The first bytes also go through the nvs_keys partition parser. */

#include "basic/esp-err.h"
#include "fuzz-nvs-util.h"
#include "fuzz-util.h"
#include "nvs/nvs-internal.h"

static NvsXtsKeys keys;
static NvsXts *xts;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        char err[FUZZ_ERR_LEN] = "";
        int r;

        r = nvs_keys_read_file(VECTORS_DIR "/nvs/basic-enc.keys.bin", &keys, err, sizeof err);
        fuzz_check(r == 0, "fixed key: %s", err);
        r = nvs_xts_new(&keys, &xts);
        fuzz_check(r == 0, "nvs_xts_new: %d", r);
        return 0;
}

static bool all_ff(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i] != 0xFF)
                        return false;
        return true;
}

/* Encrypts every entry that is not erased flash; page headers and bitmaps
 * stay plaintext (§3.4). */
static void encrypt_image(uint8_t *image, size_t size) {
        for (unsigned p = 0; p < size / NVS_PAGE_SIZE; p++)
                for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE; i++) {
                        uint8_t *e = image + p * NVS_PAGE_SIZE + NVS_FIRST_ENTRY_OFFSET + i * NVS_ENTRY_SIZE;
                        int r;

                        if (all_ff(e, NVS_ENTRY_SIZE))
                                continue;
                        r = nvs_xts_crypt(xts, true, nvs_entry_address(p, i), e, e, 1);
                        fuzz_check(r == 0, "nvs_xts_crypt: %d", r);
                }
}

static void check_keys_partition(const uint8_t *data, size_t size) {
        uint8_t out[NVS_KEYS_PARTITION_SIZE];
        NvsXtsKeys k, again;
        int r;

        r = nvs_keys_parse(data, size, &k);
        if (r < 0) {
                fuzz_check(r == -ESP_ERR_NVS_CORRUPT_KEY_PART || r == -ESP_ERR_NVS_KEYS_NOT_INITIALIZED,
                           "nvs_keys_parse: %s", esp_err_to_name(r));
                return;
        }
        nvs_keys_serialize(&k, out);
        r = nvs_keys_parse(out, sizeof out, &again);
        fuzz_check(r == 0 && memcmp(&k, &again, sizeof k) == 0 && memcmp(out, data, 68) == 0,
                   "nvs_keys partition does not survive serialize + parse");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ uint8_t *image = NULL, *cipher = NULL;
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        _cleanup_(fuzz_nvs_snapshot_done) FuzzNvsSnapshot as_cipher = {}, plain = {}, enc = {};
        size_t image_size;
        unsigned repairs_plain = 0;
        int r, r_plain;

        check_keys_partition(data, size);

        image = fuzz_pad(data, size, NVS_PAGE_SIZE, 0xFF, &image_size);

        /* The input as ciphertext. */
        r = nvs_open_buffer(image, image_size, &keys, NVS_OPEN_READ_ONLY, &nvs);
        fuzz_check(r == 0 || r == -ESP_ERR_NVS_NEW_VERSION_FOUND, "open as ciphertext: %s", esp_err_to_name(r));
        if (r == 0) {
                fuzz_check(nvs_is_encrypted(nvs), "opened with keys, not encrypted");
                fuzz_nvs_snapshot(nvs, true, &as_cipher);
                nvs = nvs_close(nvs);
                /* Writes are fuzzed below, on the encrypted plaintext: what
                 * decrypts from random bytes rarely holds an item. */
        }

        /* The input as plaintext, and the same partition encrypted. */
        r_plain = nvs_open_buffer(image, image_size, NULL, NVS_OPEN_READ_ONLY, &nvs);
        if (r_plain == 0) {
                fuzz_nvs_snapshot(nvs, false, &plain);
                repairs_plain = nvs_repair_count(nvs);
                nvs = nvs_close(nvs);
        }
        cipher = malloc(image_size);
        if (!cipher)
                abort();
        memcpy(cipher, image, image_size);
        encrypt_image(cipher, image_size);
        r = nvs_open_buffer(cipher, image_size, &keys, NVS_OPEN_READ_ONLY, &nvs);
        fuzz_check(r == r_plain, "plaintext open %s, encrypted open %s", esp_err_to_name(r_plain), esp_err_to_name(r));
        if (r < 0)
                return 0;
        fuzz_nvs_snapshot(nvs, true, &enc);
        fuzz_check(nvs_repair_count(nvs) == repairs_plain, "plaintext needs %u repairs, encrypted %u",
                   repairs_plain, nvs_repair_count(nvs));
        nvs = nvs_close(nvs);
        fuzz_nvs_compare(&plain, &enc, NULL, "plaintext vs encrypted");
        fuzz_nvs_read_write(cipher, image_size, &keys, &enc, data, size);
        return 0;
}

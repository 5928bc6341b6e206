/* SPDX-License-Identifier: MIT */
/* NVS partition images (esp-formats.md §3), plaintext. The input is the
 * partition; erased flash (0xFF) pads it to whole 4 KiB pages, as it would
 * follow a short image on a device. Every key is read back, a read-write
 * open must repair the image into one that reads the same, and writes after
 * that must not disturb the keys they do not touch (fuzz-nvs-util.h). */

#include "basic/esp-err.h"
#include "fuzz-nvs-util.h"
#include "fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ uint8_t *image = NULL, *raw = NULL;
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        _cleanup_(fuzz_nvs_snapshot_done) FuzzNvsSnapshot ro = {};
        size_t image_size;
        int r;

        /* A partition that is not whole pages is refused as it is. */
        if (size == 0 || size % NVS_PAGE_SIZE != 0) {
                raw = malloc(size ?: 1);
                if (!raw)
                        abort();
                memcpy(raw, data, size);
                r = nvs_open_buffer(raw, size, NULL, NVS_OPEN_READ_ONLY, &nvs);
                fuzz_check(r == -ESP_ERR_NVS_INVALID_LENGTH, "a %zu-byte partition opened: %d", size, r);
        }

        image = fuzz_pad(data, size, NVS_PAGE_SIZE, 0xFF, &image_size);
        r = nvs_open_buffer(image, image_size, NULL, NVS_OPEN_READ_ONLY, &nvs);
        if (r < 0) {
                fuzz_check(r == -ESP_ERR_NVS_NEW_VERSION_FOUND, "read-only open: %s", esp_err_to_name(r));
                return 0;
        }
        fuzz_nvs_snapshot(nvs, true, &ro);
        nvs = nvs_close(nvs);

        fuzz_nvs_read_write(image, image_size, NULL, &ro, data, size);
        return 0;
}

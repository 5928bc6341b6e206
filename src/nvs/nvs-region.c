/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_NVS

/* The flash back end of the storage engine: a partition of the emulated
 * NOR flash (flash/flash.h), which enforces erase-before-write and can cut
 * power for the tests. */

#include <stddef.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "nvs/nvs-internal.h"

static int region_read(void *userdata, uint32_t off, void *buf, size_t len) {
        return flash_region_read(userdata, off, buf, len);
}

static int region_write(void *userdata, uint32_t off, const void *buf, size_t len) {
        return flash_region_write(userdata, off, buf, len);
}

static int region_erase(void *userdata, uint32_t off, size_t len) {
        return flash_region_erase(userdata, off, len);
}

int nvs_open_region(const FlashRegion *region, const NvsXtsKeys *keys, NvsOpenFlags flags, Nvs **ret) {
        FlashRegion *copy;
        NvsIo io = {
                .read = region_read,
                .write = region_write,
                .erase = region_erase,
                .free = free,
        };

        if (!region || !region->flash || !ret)
                return -EINVAL;
        copy = malloc(sizeof *copy);
        if (!copy)
                return -ENOMEM;
        *copy = *region;
        io.userdata = copy;
        return nvs_open_io(&io, region->size, keys, flags, ret);
}

int nvs_erase_region(const FlashRegion *region) {
        if (!region || !region->flash)
                return -EINVAL;
        if (region->size == 0 || region->size % NVS_PAGE_SIZE != 0)
                return -ESP_ERR_NVS_INVALID_LENGTH;
        return flash_region_erase(region, 0, region->size);
}

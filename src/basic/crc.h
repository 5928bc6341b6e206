/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The ROM's esp_rom_crc32_le(): reflected polynomial 0xEDB88320, `crc` is
 * inverted on entry and on exit (esp-formats.md §0).
 *   ESP-CRC of a buffer      = esp_crc32_le(0xFFFFFFFF, buf, len)
 *   standard CRC-32 (zlib)   = esp_crc32_le(0, buf, len) */
uint32_t esp_crc32_le(uint32_t crc, const void *buf, size_t len);

/* ESP-CRC: NVS, otadata, nvs_keys, esp_secure_cert footers. */
static inline uint32_t esp_crc(const void *buf, size_t len) {
        return esp_crc32_le(0xFFFFFFFFu, buf, len);
}

/* Standard CRC-32 (ISO-HDLC): the Secure Boot V2 signature block. */
static inline uint32_t std_crc32(const void *buf, size_t len) {
        return esp_crc32_le(0, buf, len);
}

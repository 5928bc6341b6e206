/* SPDX-License-Identifier: MIT */
#include "basic/crc.h"

static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_table_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                crc_table[i] = c;
        }
        __atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t esp_crc32_le(uint32_t crc, const void *buf, size_t len) {
        const uint8_t *p = buf;

        if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE))
                crc_table_init();

        crc = ~crc;
        for (size_t i = 0; i < len; i++)
                crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
        return ~crc;
}

/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Strict number parsing: the whole string must be a number in range, no
 * leading/trailing junk, no sign on unsigned values. base 0 accepts 0x…. */
int safe_atou64(const char *s, int base, uint64_t *ret);
int safe_atoi64(const char *s, int base, int64_t *ret);
int safe_atou32(const char *s, int base, uint32_t *ret);

/* Sizes with optional K/M suffix (KiB/MiB, as gen_esp32part does): "1M", "0x4000". */
int parse_size(const char *s, uint64_t *ret);

/* Hex <-> bytes. hex_decode accepts upper/lower case, no separators;
 * returns -EINVAL on odd length or a bad digit. */
int hex_decode(const char *hex, uint8_t **ret, size_t *ret_len);
int hex_decode_fixed(const char *hex, uint8_t *out, size_t len);
void hex_encode(const uint8_t *data, size_t len, char *out); /* out: 2*len+1 */

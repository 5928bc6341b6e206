/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "basic/macro.h"
#include "basic/parse-util.h"

int safe_atou64(const char *s, int base, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || !*s || isspace((unsigned char) *s) || *s == '-' || *s == '+')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, base);
        if (errno != 0)
                return -errno;
        if (*end != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int safe_atoi64(const char *s, int base, int64_t *ret) {
        char *end;
        long long v;

        if (!s || !*s || isspace((unsigned char) *s) || *s == '+')
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, base);
        if (errno != 0)
                return -errno;
        if (*end != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int safe_atou32(const char *s, int base, uint32_t *ret) {
        uint64_t v;
        int r = safe_atou64(s, base, &v);
        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        char buf[64];
        uint64_t mult = 1, v;
        size_t n;

        if (!s)
                return -EINVAL;
        n = strlen(s);
        if (n == 0 || n >= sizeof buf)
                return -EINVAL;
        memcpy(buf, s, n + 1);
        if (buf[n - 1] == 'K' || buf[n - 1] == 'k')
                mult = 1024;
        else if (buf[n - 1] == 'M' || buf[n - 1] == 'm')
                mult = 1024 * 1024;
        if (mult != 1)
                buf[--n] = 0;
        int r = safe_atou64(buf, 0, &v);
        if (r < 0)
                return r;
        if (v > UINT64_MAX / mult)
                return -ERANGE;
        *ret = v * mult;
        return 0;
}

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int hex_decode_fixed(const char *hex, uint8_t *out, size_t len) {
        if (strlen(hex) != 2 * len)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                int a = unhex(hex[2 * i]), b = unhex(hex[2 * i + 1]);
                if (a < 0 || b < 0)
                        return -EINVAL;
                out[i] = (uint8_t) (a << 4 | b);
        }
        return 0;
}

int hex_decode(const char *hex, uint8_t **ret, size_t *ret_len) {
        size_t n = strlen(hex);
        if (n % 2)
                return -EINVAL;
        _cleanup_free_ uint8_t *buf = malloc(n / 2 + 1);
        if (!buf)
                return -ENOMEM;
        int r = hex_decode_fixed(hex, buf, n / 2);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_len = n / 2;
        return 0;
}

void hex_encode(const uint8_t *data, size_t len, char *out) {
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < len; i++) {
                out[2 * i] = digits[data[i] >> 4];
                out[2 * i + 1] = digits[data[i] & 15];
        }
        out[2 * len] = 0;
}

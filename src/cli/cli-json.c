/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "cli/cli-json.h"

int cli_json_add(json_object *obj, const char *key, json_object *val) {
        if (!val)
                return -ENOMEM;
        /* json-c leaves `val` with the caller when the insertion fails. */
        if (json_object_object_add(obj, key, val) < 0) {
                json_object_put(val);
                return -ENOMEM;
        }
        return 0;
}

int cli_json_append(json_object *array, json_object *val) {
        if (!val)
                return -ENOMEM;
        if (json_object_array_add(array, val) < 0) {
                json_object_put(val);
                return -ENOMEM;
        }
        return 0;
}

int cli_json_add_null(json_object *obj, const char *key) {
        /* json-c stores a JSON null as a NULL value. */
        return json_object_object_add(obj, key, NULL) < 0 ? -ENOMEM : 0;
}

json_object *cli_json_new_bytes(const void *data, size_t n) {
        _cleanup_free_ char *buf = NULL;
        const uint8_t *p = data;
        size_t len = 0;

        /* json-c counts string lengths in an int. */
        if (n > INT_MAX / 2)
                return NULL;
        /* U+0080…U+00FF take two bytes in UTF-8 (110000xx 10xxxxxx). */
        buf = malloc(2 * n + 1);
        if (!buf)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (p[i] < 0x80)
                        buf[len++] = (char) p[i];
                else {
                        buf[len++] = (char) (0xC0 | (p[i] >> 6));
                        buf[len++] = (char) (0x80 | (p[i] & 0x3F));
                }
        }
        return json_object_new_string_len(buf, (int) len);
}

/* The length of the well-formed UTF-8 sequence at `s` (at most `n` bytes),
 * 0 when there is none. RFC 3629 §4: second bytes outside 80..BF are narrowed
 * for E0 (overlong), ED (UTF-16 surrogates), F0 (overlong) and F4 (above
 * U+10FFFF); C0, C1 and F5..FF never occur. */
static size_t utf8_sequence_length(const uint8_t *s, size_t n) {
        uint8_t lo = 0x80, hi = 0xBF;
        size_t len;

        if (s[0] < 0x80)
                return 1;
        if (s[0] < 0xC2)
                return 0;
        if (s[0] < 0xE0)
                len = 2;
        else if (s[0] < 0xF0) {
                len = 3;
                if (s[0] == 0xE0)
                        lo = 0xA0;
                else if (s[0] == 0xED)
                        hi = 0x9F;
        } else if (s[0] < 0xF5) {
                len = 4;
                if (s[0] == 0xF0)
                        lo = 0x90;
                else if (s[0] == 0xF4)
                        hi = 0x8F;
        } else
                return 0;

        if (n < len || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
        return len;
}

static bool utf8_is_valid(const char *s, size_t n) {
        const uint8_t *p = (const uint8_t *) s;

        for (size_t i = 0; i < n;) {
                size_t k = utf8_sequence_length(p + i, n - i);
                if (k == 0)
                        return false;
                i += k;
        }
        return true;
}

json_object *cli_json_new_text(const char *s) {
        size_t n = strlen(s);

        if (n > INT_MAX / 2)
                return NULL;
        if (utf8_is_valid(s, n))
                return json_object_new_string_len(s, (int) n);
        return cli_json_new_bytes(s, n);
}

int cli_json_print(json_object *o) {
        const char *s;

        s = json_object_to_json_string_ext(o, CLI_JSON_FLAGS);
        if (!s)
                return log_error_errno(-ENOMEM, "Cannot format the JSON output: %m");
        if (fputs(s, stdout) < 0 || putchar('\n') < 0 || fflush(stdout) != 0)
                return log_error_errno(errno > 0 ? -errno : -EIO, "Cannot write to stdout: %m");
        return 0;
}

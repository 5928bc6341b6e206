/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <strings.h>

#include "basic/macro.h"
#include "transport/http-header.h"

HttpHeaderLine http_header_line_kind(const char *line, size_t len) {
        if (len >= 5 && strncmp(line, "HTTP/", 5) == 0)
                return HTTP_HEADER_STATUS;
        if (len >= HTTP_CONTENT_RANGE_NAME_LEN && strncasecmp(line, "content-range:", HTTP_CONTENT_RANGE_NAME_LEN) == 0)
                return HTTP_HEADER_CONTENT_RANGE;
        if ((len == 2 && line[0] == '\r' && line[1] == '\n') || (len == 1 && line[0] == '\n'))
                return HTTP_HEADER_END;
        return HTTP_HEADER_OTHER;
}

static int64_t parse_int64_prefix(const char *p, const char **end) {
        int64_t v = 0;
        const char *s = p;

        if (*s < '0' || *s > '9')
                return -1;
        for (; *s >= '0' && *s <= '9'; s++) {
                if (v > (INT64_MAX - 9) / 10)
                        return -1;
                v = v * 10 + (*s - '0');
        }
        *end = s;
        return v;
}

int http_content_range_parse(const char *value, size_t len, int64_t *ret_start, int64_t *ret_end,
                             int64_t *ret_total) {
        char copy[128];
        const char *p = copy, *e;
        int64_t a, b, total;

        /* The value as a string, as the header callback has always cut it. */
        len = MIN(len, sizeof copy - 1);
        memcpy(copy, value, len);
        copy[len] = 0;

        while (*p == ' ' || *p == '\t')
                p++;
        if (strncasecmp(p, "bytes ", 6) != 0)
                return -EINVAL;
        p += 6;
        a = parse_int64_prefix(p, &e);
        if (a < 0 || *e != '-')
                return -EINVAL;
        b = parse_int64_prefix(e + 1, &e);
        if (b < a || *e != '/')
                return -EINVAL;
        total = parse_int64_prefix(e + 1, &e);
        *ret_start = a;
        *ret_end = b;
        *ret_total = total;   /* -1 for "*" */
        return 0;
}

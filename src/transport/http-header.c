/* SPDX-License-Identifier: MIT */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

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

/* 1*DIGIT at *p, before end; false when there is none or it overflows. */
static bool parse_digits(const char **p, const char *end, int64_t *ret) {
        const char *s = *p;
        int64_t v = 0;

        if (s == end || *s < '0' || *s > '9')
                return false;
        for (; s < end && *s >= '0' && *s <= '9'; s++) {
                int d = *s - '0';
                if (v > (INT64_MAX - d) / 10)
                        return false;
                v = v * 10 + d;
        }
        *p = s;
        *ret = v;
        return true;
}

static bool is_ows(char c) {
        return c == ' ' || c == '\t';
}

/* RFC 9110 §14.4:
 *   Content-Range = range-unit SP ( range-resp / unsatisfied-range )
 *   range-resp    = incl-range "/" ( complete-length / "*" )
 *   incl-range    = first-pos "-" last-pos
 * "A Content-Range field value is invalid if it contains a range-resp that
 * has a last-pos value less than its first-pos value, or a complete-length
 * value less than or equal to its last-pos value." The field value is what
 * lies between optional whitespace (§5.5); the line's CRLF is not part of it.
 * An unsatisfied-range ("bytes", an asterisk, "/N": sent with a 416) has no position: it
 * is -EINVAL here too, as the caller only wants a position. */
int http_content_range_parse(const char *value, size_t len, int64_t *ret_start, int64_t *ret_end,
                             int64_t *ret_total) {
        const char *p = value, *end = value + len;
        int64_t a, b, total = -1;

        while (p < end && is_ows(*p))
                p++;
        while (end > p && (is_ows(end[-1]) || end[-1] == '\r' || end[-1] == '\n'))
                end--;

        if (end - p < 6 || strncasecmp(p, "bytes ", 6) != 0)
                return -EINVAL;
        p += 6;
        if (!parse_digits(&p, end, &a) || p == end || *p++ != '-')
                return -EINVAL;
        if (!parse_digits(&p, end, &b) || p == end || *p++ != '/')
                return -EINVAL;
        if (p < end && *p == '*')
                p++;
        else if (!parse_digits(&p, end, &total))
                return -EINVAL;
        if (p != end || b < a || (total >= 0 && total <= b))
                return -EINVAL;

        *ret_start = a;
        *ret_end = b;
        *ret_total = total;
        return 0;
}

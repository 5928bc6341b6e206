/* SPDX-License-Identifier: MIT */
/* Response header lines and Content-Range values (transport/http-header.h).
 * The input is a response's header block, cut into lines after each LF as
 * curl hands them to the header callback. Each line is classified; each
 * Content-Range line's value is parsed, and what the parser accepts is
 * checked against RFC 9110 §14.4 with a reference reading of the grammar:
 *   Content-Range = range-unit SP first-pos "-" last-pos "/" ( complete-length / "*" )
 * with first-pos <= last-pos < complete-length; and the accepted value,
 * written again, parses to the same numbers. */

#include <inttypes.h>
#include <strings.h>

#include "fuzz-util.h"
#include "transport/http-header.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

/* Reads 1*DIGIT at *p (within end) into *ret; false on none or on overflow. */
static bool digits(const char **p, const char *end, int64_t *ret) {
        int64_t v = 0;
        const char *s = *p;

        if (s == end || *s < '0' || *s > '9')
                return false;
        for (; s < end && *s >= '0' && *s <= '9'; s++) {
                if (v > (INT64_MAX - (*s - '0')) / 10)
                        return false;
                v = v * 10 + (*s - '0');
        }
        *p = s;
        *ret = v;
        return true;
}

/* The reference: optional leading blanks, "bytes" (any case), one SP, the
 * range, then only optional whitespace and the line end. */
static bool reference_parse(const char *v, size_t len, int64_t *a, int64_t *b, int64_t *total) {
        const char *p = v, *end = v + len;

        while (p < end && (*p == ' ' || *p == '\t'))
                p++;
        if (end - p < 6 || strncasecmp(p, "bytes ", 6) != 0)
                return false;
        p += 6;
        if (!digits(&p, end, a) || p == end || *p++ != '-' || !digits(&p, end, b) || p == end || *p++ != '/')
                return false;
        if (p < end && *p == '*') {
                *total = -1;
                p++;
        } else if (!digits(&p, end, total))
                return false;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                p++;
        if (p != end || *a > *b || (*total >= 0 && *total <= *b))
                return false;
        return true;
}

static void check_content_range(const char *value, size_t len) {
        int64_t a = -7, b = -7, total = -7, ra, rb, rt;
        char again[128];
        int r, n;

        r = http_content_range_parse(value, len, &a, &b, &total);
        fuzz_check(r == 0 || r == -EINVAL, "http_content_range_parse: %d", r);
        if (r < 0) {
                fuzz_check(a == -7 && b == -7 && total == -7, "a rejected value changed the outputs");
                return;
        }
        fuzz_check(reference_parse(value, len, &ra, &rb, &rt),
                   "accepted '%.*s', which is not a valid Content-Range (RFC 9110 §14.4)", (int) len, value);
        fuzz_check(a == ra && b == rb && total == rt, "'%.*s' read as %" PRId64 "-%" PRId64 "/%" PRId64
                   ", the reference reads %" PRId64 "-%" PRId64 "/%" PRId64, (int) len, value, a, b, total, ra, rb, rt);

        if (total >= 0)
                n = snprintf(again, sizeof again, " bytes %" PRId64 "-%" PRId64 "/%" PRId64 "\r\n", a, b, total);
        else
                n = snprintf(again, sizeof again, " bytes %" PRId64 "-%" PRId64 "/*\r\n", a, b);
        r = http_content_range_parse(again, (size_t) n, &ra, &rb, &rt);
        fuzz_check(r == 0 && ra == a && rb == b && rt == total, "'%s' does not parse back", again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data, *end = p + size;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t len = nl ? (size_t) (nl - p) + 1 : (size_t) (end - p);
                HttpHeaderLine k = http_header_line_kind(p, len);

                fuzz_check(k >= 0 && k < _HTTP_HEADER_LINE_MAX, "kind %d", k);
                switch (k) {
                case HTTP_HEADER_STATUS:
                        fuzz_check(len >= 5 && memcmp(p, "HTTP/", 5) == 0, "status line without HTTP/");
                        break;
                case HTTP_HEADER_CONTENT_RANGE:
                        fuzz_check(len >= HTTP_CONTENT_RANGE_NAME_LEN &&
                                   strncasecmp(p, "content-range:", HTTP_CONTENT_RANGE_NAME_LEN) == 0,
                                   "Content-Range line without its name");
                        check_content_range(p + HTTP_CONTENT_RANGE_NAME_LEN, len - HTTP_CONTENT_RANGE_NAME_LEN);
                        break;
                case HTTP_HEADER_END:
                        fuzz_check(len <= 2 && p[len - 1] == '\n', "end of headers is not an empty line");
                        break;
                case HTTP_HEADER_OTHER:
                case _HTTP_HEADER_LINE_MAX:
                case _HTTP_HEADER_LINE_INVALID:
                        break;
                }
                p += len;
        }

        /* The whole input as one value, too: the parser must not read past len. */
        check_content_range((const char *) data, size);
        return 0;
}

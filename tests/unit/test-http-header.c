/* SPDX-License-Identifier: MIT */
/* The header lines the HTTPS client reacts to, and Content-Range values
 * (RFC 9110 §14.4), without a transfer. */

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "transport/http-header.h"

#define S(x) x, sizeof(x) - 1

Test(http_header, line_kinds) {
        cr_assert_eq(http_header_line_kind(S("HTTP/1.1 206 Partial Content\r\n")), HTTP_HEADER_STATUS);
        cr_assert_eq(http_header_line_kind(S("HTTP/2 200\r\n")), HTTP_HEADER_STATUS);
        cr_assert_eq(http_header_line_kind(S("http/1.1 200 OK\r\n")), HTTP_HEADER_OTHER);
        cr_assert_eq(http_header_line_kind(S("Content-Range: bytes 0-1/2\r\n")), HTTP_HEADER_CONTENT_RANGE);
        cr_assert_eq(http_header_line_kind(S("content-RANGE:\r\n")), HTTP_HEADER_CONTENT_RANGE);
        cr_assert_eq(http_header_line_kind(S("Content-Range\r\n")), HTTP_HEADER_OTHER);
        cr_assert_eq(http_header_line_kind(S("Content-Length: 5\r\n")), HTTP_HEADER_OTHER);
        cr_assert_eq(http_header_line_kind(S("\r\n")), HTTP_HEADER_END);
        cr_assert_eq(http_header_line_kind(S("\n")), HTTP_HEADER_END);
        cr_assert_eq(http_header_line_kind(S("\r")), HTTP_HEADER_OTHER);
        cr_assert_eq(http_header_line_kind(S(" \r\n")), HTTP_HEADER_OTHER);
        cr_assert_eq(http_header_line_kind("", 0), HTTP_HEADER_OTHER);
        /* only `len` bytes count: a prefix of a longer buffer */
        cr_assert_eq(http_header_line_kind("HTTP/1.1", 4), HTTP_HEADER_OTHER);
}

typedef struct RangeCase {
        char value[64];         /* inline: Criterion copies parameters into each test process */
        int result;
        int64_t start, end, total;
} RangeCase;

static const RangeCase range_cases[] = {
        { " bytes 0-99/100\r\n", 0, 0, 99, 100 },
        { "bytes 1000-299999/300000\r\n", 0, 1000, 299999, 300000 },
        { "\t BYTES 5-5/6\r\n", 0, 5, 5, 6 },
        { " bytes 10-19/*\r\n", 0, 10, 19, -1 },
        { " bytes 0-9223372036854775798/9223372036854775799\r\n", 0, 0, 9223372036854775798, 9223372036854775799 },
        { " bytes */100\r\n", -EINVAL, 0, 0, 0 },          /* unsatisfied-range: no position */
        { " bytes 9-5/100\r\n", -EINVAL, 0, 0, 0 },        /* last-pos below first-pos */
        { " bytes -1-5/100\r\n", -EINVAL, 0, 0, 0 },
        { " bytes 0-5 /100\r\n", -EINVAL, 0, 0, 0 },
        { " items 0-5/100\r\n", -EINVAL, 0, 0, 0 },
        { " bytes 0-5\r\n", -EINVAL, 0, 0, 0 },
        { " bytes 99999999999999999999-1/2\r\n", -EINVAL, 0, 0, 0 },
        { "", -EINVAL, 0, 0, 0 },
        /* found by fuzz-http-header: each of these was accepted */
        { " bytes 1000-299999/30000te\r\n", -EINVAL, 0, 0, 0 },  /* trailing bytes */
        { " bytes 0-99/50\r\n", -EINVAL, 0, 0, 0 },              /* complete-length <= last-pos */
        { " bytes 0-99/99\r\n", -EINVAL, 0, 0, 0 },
        { " bytes 0-99/abc\r\n", -EINVAL, 0, 0, 0 },             /* was read as "*" */
        { " bytes 0-99/99999999999999999999\r\n", -EINVAL, 0, 0, 0 },  /* overflow, was read as "*" */
        { " bytes 0-99/*x\r\n", -EINVAL, 0, 0, 0 },
        { " bytes 0-99/100 \t\r\n", 0, 0, 99, 100 },              /* trailing whitespace is not part of it */
        { " bytes 0-9223372036854775806/9223372036854775807\r\n", 0, 0, 9223372036854775806, INT64_MAX },
};

ParameterizedTestParameters(http_header, content_range) {
        return cr_make_param_array(RangeCase, range_cases, sizeof range_cases / sizeof range_cases[0]);
}

ParameterizedTest(const RangeCase *c, http_header, content_range) {
        int64_t a = -7, b = -7, total = -7;
        int r = http_content_range_parse(c->value, strlen(c->value), &a, &b, &total);

        cr_assert_eq(r, c->result, "'%s': %d", c->value, r);
        if (r == 0) {
                cr_assert_eq(a, c->start, "'%s'", c->value);
                cr_assert_eq(b, c->end, "'%s'", c->value);
                cr_assert_eq(total, c->total, "'%s'", c->value);
        } else
                cr_assert(a == -7 && b == -7 && total == -7, "'%s': outputs touched on failure", c->value);
}

Test(http_header, content_range_is_bounded_by_len) {
        int64_t a = -7, b = -7, total = -7;

        /* cut before the '-': not a range */
        cr_assert_eq(http_content_range_parse(" bytes 0-99/1000", 8, &a, &b, &total), -EINVAL);
        cr_assert_eq(http_content_range_parse(" bytes 0-99/1000", 16, &a, &b, &total), 0);
        cr_assert_eq(total, 1000);
        /* the value stops at len: "/1000" cut to "/10" is not a range of 100 bytes */
        cr_assert_eq(http_content_range_parse(" bytes 0-99/1000", 14, &a, &b, &total), -EINVAL);
}

/* The value used to be copied into 128 bytes first: a valid value after a
 * long run of blanks was lost. */
Test(http_header, content_range_is_not_cut_at_127_bytes) {
        char v[300];
        int64_t a = -7, b = -7, total = -7;

        memset(v, ' ', sizeof v);
        memcpy(v + 200, "bytes 5-9/10\r\n", 14);
        cr_assert_eq(http_content_range_parse(v, 214, &a, &b, &total), 0);
        cr_assert(a == 5 && b == 9 && total == 10);
}

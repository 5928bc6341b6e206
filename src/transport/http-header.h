/* SPDX-License-Identifier: MIT */
#pragma once

/* The response header lines the HTTPS client (http.c) looks at, as curl's
 * CURLOPT_HEADERFUNCTION hands them over: one line per call, its CRLF
 * included, not NUL-terminated. Pure functions, so that they can be tested
 * and fuzzed without a transfer. */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

typedef enum HttpHeaderLine {
        HTTP_HEADER_STATUS,          /* "HTTP/…": a new response starts (after a 1xx or a redirect) */
        HTTP_HEADER_CONTENT_RANGE,   /* "Content-Range:" (any case) */
        HTTP_HEADER_END,             /* the empty line that ends the headers: CRLF, or a bare LF */
        HTTP_HEADER_OTHER,           /* any other line */
        _HTTP_HEADER_LINE_MAX,
        _HTTP_HEADER_LINE_INVALID = -EINVAL,
} HttpHeaderLine;

/* What kind of line `line` (len bytes) is. */
HttpHeaderLine http_header_line_kind(const char *line, size_t len);

/* The length of the "Content-Range:" name: the value starts after it. */
#define HTTP_CONTENT_RANGE_NAME_LEN 14

/* Parses a Content-Range value "bytes a-b/total", or "bytes a-b/" and an asterisk (RFC 9110
 * §14.4), len bytes (not NUL-terminated), between optional whitespace (and
 * the line's CRLF). Returns 0 and the first and last byte positions and the
 * complete length (-1 for "*"), or -EINVAL with the outputs untouched for
 * anything else: trailing bytes, a number that does not fit in int64_t,
 * last-pos < first-pos, or complete-length <= last-pos. */
int http_content_range_parse(const char *value, size_t len, int64_t *ret_start, int64_t *ret_end,
                             int64_t *ret_total);

/* SPDX-License-Identifier: MIT */
#pragma once

/* Helpers shared by the image module's .c files (not part of the API). */

#include <stdarg.h>
#include <stdio.h>

#include "basic/esp-err.h"
#include "basic/macro.h"

/* Formats a message into err (when given) and returns `r`, so that a parser
 * can `return image_error(err, errlen, -ESP_ERR_IMAGE_INVALID, "…", …)`. */
static inline int image_error(char *err, size_t errlen, int r, const char *fmt, ...) _printf_(4, 5);
static inline int image_error(char *err, size_t errlen, int r, const char *fmt, ...) {
        if (err && errlen > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

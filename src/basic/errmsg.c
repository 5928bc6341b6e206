/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>

#include "basic/errmsg.h"

int errf(char *err, size_t errlen, int r, const char *fmt, ...) {
        if (err && errlen > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "basic/macro.h"

/* Parsers of user input report details through a caller-supplied buffer
 * (HACKING.md "Errors"). errf() formats into err (when err is not NULL) and
 * returns r, so a parser can `return errf(err, errlen, -EINVAL, "…", …)`. */
int errf(char *err, size_t errlen, int r, const char *fmt, ...) _printf_(4, 5);

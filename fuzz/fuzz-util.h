/* SPDX-License-Identifier: MIT */
#pragma once

/* What every harness shares. A harness feeds each input to the library as it
 * is (no size or content filter of its own) and checks, besides what the
 * sanitizers catch, the properties the headers promise: a rejection always
 * says why (the err buffer is filled and terminated), a value that was
 * accepted survives a round trip, and two paths that must agree do. A failed
 * check prints where and aborts, which libFuzzer reports as a crash. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/macro.h"

/* The libFuzzer entry points each harness defines. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_ERR_LEN 512

_noreturn_ void fuzz_fail(const char *file, int line, const char *fmt, ...) _printf_(3, 4);

#define fuzz_check(cond, ...)                                         \
        do {                                                          \
                if (!(cond))                                          \
                        fuzz_fail(__FILE__, __LINE__, __VA_ARGS__);   \
        } while (0)

/* A call that returned r < 0 must have left a reason in err; and err must be
 * NUL-terminated within its `len` bytes whatever r is. `what` names the call. */
#define fuzz_check_err(r, err, len, what) fuzz_check_err_at(__FILE__, __LINE__, (r), (err), (len), (what))
void fuzz_check_err_at(const char *file, int line, int r, const char *err, size_t len, const char *what);

/* A NUL-terminated copy of the input (a text parser's view of a file: it
 * ends at the first NUL byte). Never NULL: aborts when out of memory. */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* The input padded with `fill` to a multiple of `block` bytes (at least one
 * block), as a partition image is followed by erased flash. *ret_size gets
 * the padded size. Aborts when out of memory. */
uint8_t *fuzz_pad(const uint8_t *data, size_t size, size_t block, uint8_t fill, size_t *ret_size);

/* Reads VECTORS_DIR/<name> (a fixed key or digest the harness trusts) into
 * buf, exactly `size` bytes, or aborts naming the file. */
void fuzz_read_vector(const char *name, void *buf, size_t size);

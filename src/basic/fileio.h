/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Reads a whole file (at most max_size bytes; -EFBIG when larger). The buffer
 * gets a trailing NUL that is not counted in *ret_size. */
int read_full_file(const char *path, size_t max_size, uint8_t **ret_data, size_t *ret_size);

/* Writes a file atomically: temp file in the same directory with `mode`,
 * fsync, rename. Secrets use mode 0600. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);

/* Creates `path` (-EEXIST if it exists) with `mode` and writes `data`,
 * without fsync: for files in a directory that is built under a temporary
 * name, made durable as a whole (syncfs) and only then renamed into place. */
int write_file_new(const char *path, const void *data, size_t size, mode_t mode);

/* "a/b", malloc'ed; NULL when out of memory. */
char *path_join(const char *a, const char *b);

/* mkdir -p with the given mode for directories it creates. */
int mkdir_p(const char *path, mode_t mode);

/* pread/pwrite that loop over short transfers; -EIO on a short read at EOF. */
int pread_full(int fd, void *buf, size_t size, off_t offset);
int pwrite_full(int fd, const void *buf, size_t size, off_t offset);

/* SPDX-License-Identifier: MIT */
#pragma once

/* Cleanup helpers in the style of systemd's CODING_STYLE: every destructor
 * accepts NULL, and `_cleanup_(f)` frees a local on every return path. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _pure_ __attribute__((pure))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _noreturn_ __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ALIGN_TO(x, a) (((x) + (a) - 1) / (a) * (a))

/* Hand a pointer over to someone else: returns it and clears the local. */
#define TAKE_PTR(p)                        \
        ({                                 \
                typeof(p) _ptr_ = (p);     \
                (p) = NULL;                \
                _ptr_;                     \
        })
#define TAKE_FD(fd)                        \
        ({                                 \
                int _fd_ = (fd);           \
                (fd) = -EBADF;             \
                _fd_;                      \
        })

/* Defines `name##p(type *p)` that calls `func(*p)` when *p is not NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)           \
        static inline void func##p(type *p) {             \
                if (*p)                                    \
                        func(*p);                          \
        }

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Wipe secrets before freeing them. */
static inline void erase_and_free(void *p, size_t n) {
        if (!p)
                return;
        explicit_bzero(p, n);
        free(p);
}

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)

static inline bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}
#define strneq(a, b, n) (strncmp((a), (b), (n)) == 0)

static inline const char *strna(const char *s) {
        return s ?: "n/a";
}

/* Little-endian helpers: every ESP format is LE. */
static inline uint16_t le16_read(const void *p) {
        const uint8_t *b = p;
        return (uint16_t) (b[0] | (b[1] << 8));
}
static inline uint32_t le32_read(const void *p) {
        const uint8_t *b = p;
        return (uint32_t) b[0] | ((uint32_t) b[1] << 8) | ((uint32_t) b[2] << 16) | ((uint32_t) b[3] << 24);
}
static inline uint64_t le64_read(const void *p) {
        return (uint64_t) le32_read(p) | ((uint64_t) le32_read((const uint8_t *) p + 4) << 32);
}
static inline void le16_write(void *p, uint16_t v) {
        uint8_t *b = p;
        b[0] = v & 0xff;
        b[1] = v >> 8;
}
static inline void le32_write(void *p, uint32_t v) {
        uint8_t *b = p;
        b[0] = v & 0xff;
        b[1] = (v >> 8) & 0xff;
        b[2] = (v >> 16) & 0xff;
        b[3] = v >> 24;
}
static inline void le64_write(void *p, uint64_t v) {
        le32_write(p, (uint32_t) v);
        le32_write((uint8_t *) p + 4, (uint32_t) (v >> 32));
}

/* Reverse a byte string in place (ESP peripherals use LE big integers). */
static inline void memrev(void *p, size_t n) {
        uint8_t *b = p;
        for (size_t i = 0; i < n / 2; i++) {
                uint8_t t = b[i];
                b[i] = b[n - 1 - i];
                b[n - 1 - i] = t;
        }
}

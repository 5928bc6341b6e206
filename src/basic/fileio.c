/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "basic/fileio.h"
#include "basic/macro.h"

/* Many of the files read here are secrets (eFuse images, key files), so no
 * copy of their bytes is left in freed memory: the buffer grows by copy and
 * wipe rather than realloc(), and an error wipes what was read. A regular
 * file's buffer is sized to hold it and the read that sees EOF at once. */
int read_full_file(const char *path, size_t max_size, uint8_t **ret_data, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        uint8_t *buf = NULL;
        struct stat st;
        size_t size = 0, alloc;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (S_ISREG(st.st_mode) && (uint64_t) st.st_size > max_size)
                return -EFBIG;

        alloc = S_ISREG(st.st_mode) ? (size_t) st.st_size + 2 : 4096;
        buf = malloc(alloc);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                if (size + 1 >= alloc) {
                        if (alloc > max_size + 1) {
                                r = -EFBIG;
                                goto fail;
                        }
                        size_t n = MIN(alloc * 2, max_size + 2);
                        uint8_t *nb = malloc(n);
                        if (!nb) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        memcpy(nb, buf, size);
                        erase_and_free(buf, alloc);
                        buf = nb;
                        alloc = n;
                }
                ssize_t k = read(fd, buf + size, alloc - size - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto fail;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
                if (size > max_size) {
                        r = -EFBIG;
                        goto fail;
                }
        }
        buf[size] = 0;
        *ret_data = buf;
        if (ret_size)
                *ret_size = size;
        return 0;
fail:
        erase_and_free(buf, alloc);
        return r;
}

int pwrite_full(int fd, const void *buf, size_t size, off_t offset) {
        const uint8_t *p = buf;
        while (size > 0) {
                ssize_t k = pwrite(fd, p, size, offset);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                size -= (size_t) k;
                offset += k;
        }
        return 0;
}

int pread_full(int fd, void *buf, size_t size, off_t offset) {
        uint8_t *p = buf;
        while (size > 0) {
                ssize_t k = pread(fd, p, size, offset);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                p += k;
                size -= (size_t) k;
                offset += k;
        }
        return 0;
}

int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode) {
        char tmp[PATH_MAX];
        _cleanup_close_ int fd = -EBADF;
        int r;

        if ((size_t) snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path) >= sizeof tmp)
                return -ENAMETOOLONG;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0) {
                r = -errno;
                goto fail;
        }
        r = pwrite_full(fd, data, size, 0);
        if (r < 0)
                goto fail;
        if (fsync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                goto fail;
        }
        return 0;
fail:
        (void) unlink(tmp);
        return r;
}

int write_file_new(const char *path, const void *data, size_t size, mode_t mode) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, mode);
        if (fd < 0)
                return -errno;
        /* open() applies the umask; the caller asked for exactly `mode`. */
        if (fchmod(fd, mode) < 0) {
                r = -errno;
                goto fail;
        }
        r = pwrite_full(fd, data, size, 0);
        if (r < 0)
                goto fail;
        return 0;
fail:
        (void) unlink(path);
        return r;
}

int mkdir_p(const char *path, mode_t mode) {
        char buf[PATH_MAX];

        if ((size_t) snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

char *path_join(const char *a, const char *b) {
        char *p;
        if (asprintf(&p, "%s/%s", a, b) < 0)
                return NULL;
        return p;
}

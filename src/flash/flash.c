/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#define LOG_TOPIC LOG_TOPIC_FLASH
#include "basic/log.h"
#include "flash/flash.h"

/* Largest file system block we treat as an allocation unit. Beyond that we
 * fall back to 4 KiB and accept that neighbours may read as zero after a
 * reopen on such an exotic file system. */
#define FLASH_MAX_GRANULE (1024u * 1024u)

struct Flash {
        int fd;
        char *path;
        uint32_t size;
        uint32_t n_sectors;
        bool read_only;

        /* One bit per sector: set when the sector holds data in the file,
         * clear when it is a hole (reads as 0xFF). Built once at open from
         * SEEK_DATA/SEEK_HOLE and kept up to date afterwards, so no I/O path
         * scans the file again. */
        uint64_t *allocated;

        /* Allocation unit of the file system, in sectors. When the file
         * system allocates more than one sector at a time, materialising
         * one sector would turn its unwritten neighbours into zeros, so
         * they are materialised as 0xFF together. */
        uint32_t granule;
        bool can_punch;

        int64_t power_cut;       /* ops left before the cut; < 0 = off */
        bool power_lost;
        uint64_t rng;
        uint64_t n_ops;
};

static bool sector_allocated(const Flash *f, uint32_t s) {
        return f->allocated[s / 64] & (UINT64_C(1) << (s % 64));
}

static void sector_set_allocated(Flash *f, uint32_t s, bool b) {
        if (b)
                f->allocated[s / 64] |= UINT64_C(1) << (s % 64);
        else
                f->allocated[s / 64] &= ~(UINT64_C(1) << (s % 64));
}

/* The image's fd, reopened by path after flash_release_fd(). */
static int flash_fd(Flash *f) {
        if (f->fd >= 0)
                return f->fd;
        f->fd = open(f->path, (f->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
        if (f->fd < 0) {
                int r = -errno;
                f->fd = -EBADF;
                return r;
        }
        return f->fd;
}

void flash_release_fd(Flash *f) {
        if (f && f->fd >= 0) {
                close(f->fd);
                f->fd = -EBADF;
        }
}

bool flash_holds_fd(const Flash *f) {
        return f && f->fd >= 0;
}

static int flash_scan_holes(Flash *f) {
        off_t pos = 0;

        for (;;) {
                off_t data, hole;

                if (pos >= (off_t) f->size)
                        return 0;

                data = lseek(f->fd, pos, SEEK_DATA);
                if (data < 0) {
                        if (errno == ENXIO)    /* only a hole up to EOF */
                                return 0;
                        if (errno == EINVAL || errno == EOPNOTSUPP) {
                                /* No hole support: treat everything as data. */
                                for (uint32_t s = 0; s < f->n_sectors; s++)
                                        sector_set_allocated(f, s, true);
                                return 0;
                        }
                        return -errno;
                }
                hole = lseek(f->fd, data, SEEK_HOLE);
                if (hole < 0)
                        return -errno;
                if (hole > (off_t) f->size)
                        hole = f->size;

                for (uint32_t s = data / FLASH_SECTOR_SIZE; (off_t) s * FLASH_SECTOR_SIZE < hole && s < f->n_sectors; s++)
                        sector_set_allocated(f, s, true);
                pos = hole;
        }
}

Flash *flash_close(Flash *f) {
        if (!f)
                return NULL;
        if (f->fd >= 0)
                close(f->fd);
        free(f->allocated);
        free(f->path);
        free(f);
        return NULL;
}

int flash_open(const char *path, FlashOpenFlags flags, uint32_t size, Flash **ret) {
        _cleanup_(flash_closep) Flash *f = NULL;
        struct stat st;
        int r;

        if (!path || !ret)
                return -EINVAL;
        if ((flags & FLASH_OPEN_CREATE) && (flags & FLASH_OPEN_READ_ONLY))
                return -EINVAL;
        if ((flags & FLASH_OPEN_CREATE) && size == 0)
                return -EINVAL;
        if (size % FLASH_SECTOR_SIZE != 0)
                return -EBADMSG;

        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->fd = -EBADF;
        f->power_cut = -1;
        f->rng = UINT64_C(0x9E3779B97F4A7C15);
        f->read_only = flags & FLASH_OPEN_READ_ONLY;
        f->path = strdup(path);
        if (!f->path)
                return -ENOMEM;

        if (flags & FLASH_OPEN_CREATE) {
                f->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
                if (f->fd < 0)
                        return -errno;
                if (ftruncate(f->fd, size) < 0) {
                        r = -errno;
                        (void) unlink(path);
                        return r;
                }
        } else {
                f->fd = open(path, (f->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
                if (f->fd < 0)
                        return -errno;
        }

        if (fstat(f->fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if (st.st_size <= 0 || st.st_size % FLASH_SECTOR_SIZE != 0 || st.st_size > UINT32_MAX)
                return -EBADMSG;
        if (size != 0 && (uint64_t) st.st_size != size)
                return -EBADMSG;

        f->size = (uint32_t) st.st_size;
        f->n_sectors = f->size / FLASH_SECTOR_SIZE;
        f->allocated = calloc((f->n_sectors + 63) / 64, sizeof(uint64_t));
        if (!f->allocated)
                return -ENOMEM;

        f->granule = 1;
        if (st.st_blksize > (blksize_t) FLASH_SECTOR_SIZE && st.st_blksize <= (blksize_t) FLASH_MAX_GRANULE &&
            st.st_blksize % FLASH_SECTOR_SIZE == 0)
                f->granule = st.st_blksize / FLASH_SECTOR_SIZE;
        f->can_punch = f->granule == 1;

        r = flash_scan_holes(f);
        if (r < 0)
                return r;

        log_debug("Opened flash image %s (%" PRIu32 " bytes)", path, f->size);
        *ret = TAKE_PTR(f);
        return 0;
}

uint32_t flash_size(const Flash *f) {
        return f ? f->size : 0;
}

const char *flash_path(const Flash *f) {
        return f ? f->path : NULL;
}

static int check_range(const Flash *f, uint32_t addr, size_t len) {
        if ((uint64_t) addr + len > f->size)
                return -ERANGE;
        return 0;
}

/* Reads without bounds checks: runs of allocated sectors are one pread each,
 * holes are filled with 0xFF. */
static int flash_read_raw(Flash *f, uint32_t addr, uint8_t *buf, size_t len) {
        int fd = -EBADF;

        while (len > 0) {
                uint32_t s = addr / FLASH_SECTOR_SIZE;
                bool alloc = sector_allocated(f, s);
                uint64_t end = (uint64_t) (s + 1) * FLASH_SECTOR_SIZE;

                /* Extend the run over sectors of the same kind. */
                while (end < (uint64_t) addr + len && sector_allocated(f, (uint32_t) (end / FLASH_SECTOR_SIZE)) == alloc)
                        end += FLASH_SECTOR_SIZE;
                size_t n = (size_t) MIN(end - addr, (uint64_t) len);

                if (alloc) {
                        if (fd < 0 && (fd = flash_fd(f)) < 0)
                                return fd;
                        int r = pread_full(fd, buf, n, addr);
                        if (r < 0)
                                return r;
                } else
                        memset(buf, 0xFF, n);

                buf += n;
                addr += n;
                len -= n;
        }
        return 0;
}

int flash_read(Flash *f, uint32_t addr, void *buf, size_t len) {
        int r;

        if (!f || (!buf && len > 0))
                return -EINVAL;
        r = check_range(f, addr, len);
        if (r < 0)
                return r;
        return flash_read_raw(f, addr, buf, len);
}

static uint64_t flash_random(Flash *f) {
        /* xorshift64: deterministic, so a failing power-cut case replays. */
        f->rng ^= f->rng << 13;
        f->rng ^= f->rng >> 7;
        f->rng ^= f->rng << 17;
        return f->rng;
}

/* Returns true when this operation is the one the power cut interrupts. */
static bool flash_power_tick(Flash *f) {
        if (f->power_cut < 0)
                return false;
        if (f->power_cut == 0) {
                f->power_lost = true;
                f->power_cut = -1;
                return true;
        }
        f->power_cut--;
        return false;
}

/* Materialises the sectors of s's allocation granule that are holes as 0xFF,
 * except s itself when `skip_self` (the caller writes it whole). */
static int flash_materialise(Flash *f, uint32_t s, bool skip_self) {
        static const uint8_t ff[FLASH_SECTOR_SIZE] = { [0 ... FLASH_SECTOR_SIZE - 1] = 0xFF };
        uint32_t first = s / f->granule * f->granule;
        int fd = flash_fd(f);

        if (fd < 0)
                return fd;

        for (uint32_t i = first; i < first + f->granule && i < f->n_sectors; i++) {
                if (sector_allocated(f, i) || (skip_self && i == s))
                        continue;
                int r = pwrite_full(fd, ff, FLASH_SECTOR_SIZE, (off_t) i * FLASH_SECTOR_SIZE);
                if (r < 0)
                        return r;
                sector_set_allocated(f, i, true);
        }
        return 0;
}

/* Stores bytes without NOR checks: the caller made sure they only clear bits. */
static int flash_store(Flash *f, uint32_t addr, const uint8_t *data, size_t len) {
        int fd = flash_fd(f);

        if (fd < 0)
                return fd;
        while (len > 0) {
                uint32_t s = addr / FLASH_SECTOR_SIZE;
                uint32_t in_sector = addr % FLASH_SECTOR_SIZE;
                size_t n = MIN((size_t) (FLASH_SECTOR_SIZE - in_sector), len);
                int r;

                if (sector_allocated(f, s))
                        r = pwrite_full(fd, data, n, addr);
                else {
                        uint8_t sector[FLASH_SECTOR_SIZE];

                        /* A hole is erased flash: write the whole sector at
                         * once, 0xFF around the new bytes. */
                        memset(sector, 0xFF, sizeof(sector));
                        memcpy(sector + in_sector, data, n);
                        r = pwrite_full(fd, sector, sizeof(sector), (off_t) s * FLASH_SECTOR_SIZE);
                        if (r >= 0) {
                                sector_set_allocated(f, s, true);
                                r = flash_materialise(f, s, true);
                        }
                }
                if (r < 0)
                        return r;

                data += n;
                addr += n;
                len -= n;
        }
        return 0;
}

int flash_write(Flash *f, uint32_t addr, const void *buf, size_t len) {
        _cleanup_free_ uint8_t *old = NULL;
        const uint8_t *p = buf;
        int r;

        if (!f || (!buf && len > 0))
                return -EINVAL;
        if (f->read_only)
                return -EROFS;
        r = check_range(f, addr, len);
        if (r < 0)
                return r;
        if (f->power_lost)
                return -EIO;
        if (len == 0)
                return 0;

        old = malloc(len);
        if (!old)
                return -ENOMEM;
        r = flash_read_raw(f, addr, old, len);
        if (r < 0)
                return r;

        /* NOR: programming only clears bits. */
        for (size_t i = 0; i < len; i++)
                if (p[i] & ~old[i]) {
                        log_debug("Flash write at 0x%" PRIx32 " would set bits at 0x%zx (0x%02x over 0x%02x)",
                                  addr, addr + i, p[i], old[i]);
                        return -EPERM;
                }

        if (flash_power_tick(f)) {
                size_t words = len / 4;
                size_t keep = words > 0 ? (size_t) (flash_random(f) % words) * 4 : 0;

                log_debug("Power cut during write at 0x%" PRIx32 ": %zu of %zu bytes landed", addr, keep, len);
                if (keep > 0)
                        (void) flash_store(f, addr, p, keep);
                return -EIO;
        }

        r = flash_store(f, addr, p, len);
        if (r < 0)
                return r;
        f->n_ops++;
        return 0;
}

static int flash_erase_sectors(Flash *f, uint32_t addr, size_t len) {
        static const uint8_t ff[FLASH_SECTOR_SIZE] = { [0 ... FLASH_SECTOR_SIZE - 1] = 0xFF };
        uint32_t first = addr / FLASH_SECTOR_SIZE, n = len / FLASH_SECTOR_SIZE;
        int fd = flash_fd(f);

        if (fd < 0)
                return fd;

        if (f->can_punch) {
                /* Erased flash is a hole again: it costs no disk. */
                if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, addr, len) >= 0) {
                        for (uint32_t s = first; s < first + n; s++)
                                sector_set_allocated(f, s, false);
                        return 0;
                }
                if (errno != EOPNOTSUPP && errno != ENOSYS)
                        return -errno;
                f->can_punch = false;
        }

        for (uint32_t s = first; s < first + n; s++) {
                if (!sector_allocated(f, s))
                        continue;
                int r = pwrite_full(fd, ff, FLASH_SECTOR_SIZE, (off_t) s * FLASH_SECTOR_SIZE);
                if (r < 0)
                        return r;
        }
        return 0;
}

int flash_erase(Flash *f, uint32_t addr, size_t len) {
        int r;

        if (!f)
                return -EINVAL;
        if (f->read_only)
                return -EROFS;
        if (addr % FLASH_SECTOR_SIZE != 0 || len % FLASH_SECTOR_SIZE != 0)
                return -EINVAL;
        r = check_range(f, addr, len);
        if (r < 0)
                return r;
        if (f->power_lost)
                return -EIO;
        if (len == 0)
                return 0;

        if (flash_power_tick(f)) {
                /* Whole sectors before the cut are erased; the sector being
                 * erased when power went is erased only up to some word. */
                uint32_t n = len / FLASH_SECTOR_SIZE;
                uint32_t done = (uint32_t) (flash_random(f) % n);
                uint32_t part = (uint32_t) (flash_random(f) % (FLASH_SECTOR_SIZE / 4)) * 4;
                uint32_t s = addr / FLASH_SECTOR_SIZE + done;

                log_debug("Power cut during erase at 0x%" PRIx32 ": %" PRIu32 " sectors and %" PRIu32 " bytes erased",
                          addr, done, part);
                if (done > 0)
                        (void) flash_erase_sectors(f, addr, (size_t) done * FLASH_SECTOR_SIZE);
                if (part > 0 && sector_allocated(f, s)) {
                        uint8_t ff[FLASH_SECTOR_SIZE];
                        memset(ff, 0xFF, part);
                        if (flash_fd(f) >= 0)
                                (void) pwrite_full(f->fd, ff, part, (off_t) s * FLASH_SECTOR_SIZE);
                }
                return -EIO;
        }

        r = flash_erase_sectors(f, addr, len);
        if (r < 0)
                return r;
        f->n_ops++;
        return 0;
}

void flash_set_power_cut(Flash *f, int64_t n) {
        if (!f)
                return;
        f->power_cut = n < 0 ? -1 : n;
}

void flash_power_restore(Flash *f) {
        if (!f)
                return;
        f->power_cut = -1;
        f->power_lost = false;
}

uint64_t flash_write_count(const Flash *f) {
        return f ? f->n_ops : 0;
}

int flash_allocated_bytes(const Flash *f, uint32_t addr, size_t len, uint64_t *ret) {
        uint64_t n = 0;

        if (!f || !ret)
                return -EINVAL;
        if ((uint64_t) addr + len > f->size)
                return -ERANGE;
        if (len == 0) {
                *ret = 0;
                return 0;
        }
        for (uint32_t s = addr / FLASH_SECTOR_SIZE; (uint64_t) s * FLASH_SECTOR_SIZE < (uint64_t) addr + len; s++)
                if (sector_allocated(f, s))
                        n += FLASH_SECTOR_SIZE;
        *ret = n;
        return 0;
}

int flash_export(Flash *f, const char *path) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_close_ int fd = -EBADF;
        const size_t chunk = 256 * 1024;
        int r;

        if (!f || !path)
                return -EINVAL;
        buf = malloc(chunk);
        if (!buf)
                return -ENOMEM;
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;
        for (uint32_t addr = 0; addr < f->size; addr += chunk) {
                size_t n = MIN(chunk, (size_t) (f->size - addr));
                r = flash_read_raw(f, addr, buf, n);
                if (r < 0)
                        return r;
                r = pwrite_full(fd, buf, n, addr);
                if (r < 0)
                        return r;
        }
        if (ftruncate(fd, f->size) < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int flash_sync(Flash *f) {
        if (!f)
                return -EINVAL;
        if (f->read_only || f->fd < 0)
                return 0; /* released: nothing written since the last close */
        return fdatasync(f->fd) < 0 ? -errno : 0;
}

static int region_check(const FlashRegion *r, uint32_t off, size_t len) {
        if (!r || !r->flash)
                return -EINVAL;
        if ((uint64_t) off + len > r->size)
                return -ERANGE;
        return 0;
}

int flash_region_read(const FlashRegion *r, uint32_t off, void *buf, size_t len) {
        int k = region_check(r, off, len);
        if (k < 0)
                return k;
        return flash_read(r->flash, r->offset + off, buf, len);
}

int flash_region_write(const FlashRegion *r, uint32_t off, const void *buf, size_t len) {
        int k = region_check(r, off, len);
        if (k < 0)
                return k;
        return flash_write(r->flash, r->offset + off, buf, len);
}

int flash_region_erase(const FlashRegion *r, uint32_t off, size_t len) {
        int k = region_check(r, off, len);
        if (k < 0)
                return k;
        return flash_erase(r->flash, r->offset + off, len);
}

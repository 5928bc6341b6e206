/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <sys/stat.h>

#include "basic/crc.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#define LOG_TOPIC LOG_TOPIC_FLASH
#include "basic/log.h"
#include "flash/flash.h"
#include "flash/sector-store.h"

/* The map file (<image>.map): a 4 KiB header, then one 32-byte SHA-256 per
 * sector of the flash at MAP_ENTRIES_OFFSET + sector × 32, all zeros for a
 * sector that is not in the store. Sparse: a device with one 1 MiB image in
 * the store has 8 KiB of entries on disk. An entry is one aligned 32-byte
 * pwrite() that never crosses a 512-byte boundary. */
#define MAP_MAGIC "ESPFMAP"       /* with its NUL: 8 bytes */
#define MAP_VERSION 1u
#define MAP_HEADER_SIZE 4096u
#define MAP_ENTRIES_OFFSET MAP_HEADER_SIZE
#define MAP_ENTRY_SIZE 32u
#define MAP_STORE_PATH_MAX 1024u
/* header: magic[8] version n_sectors n_ranges {first,count}[16] path_len path[] … crc32 at the end */
#define MAP_OFF_VERSION 8u
#define MAP_OFF_N_SECTORS 12u
#define MAP_OFF_N_RANGES 16u
#define MAP_OFF_RANGES 20u
#define MAP_OFF_PATH_LEN (MAP_OFF_RANGES + FLASH_MAX_STORE_RANGES * 8u)
#define MAP_OFF_PATH (MAP_OFF_PATH_LEN + 2u)
#define MAP_OFF_CRC (MAP_HEADER_SIZE - 4u)
#define DIV_ROUND_UP(x, y) (((x) + (y) - 1) / (y))
#define MAP_CHUNK 64u             /* sectors per lazily allocated chunk of the in-memory map */

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

        /* Store-backed ranges: NULL store when the image has no map. */
        SectorStore *store;
        char *map_path;
        int map_fd;
        FlashRange ranges[FLASH_MAX_STORE_RANGES];
        size_t n_ranges;
        /* Store id per sector (0 = in the file or a hole), in chunks of
         * MAP_CHUNK sectors allocated on first use: a device with one
         * image in the store holds 1 KiB of ids per MiB. */
        uint32_t **map;

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

static int flash_flush_to_store(Flash *f);

void flash_release_fd(Flash *f) {
        if (f && !f->power_lost)
                (void) flash_flush_to_store(f);    /* what fails stays in the file, as correct */
        if (f && f->fd >= 0) {
                close(f->fd);
                f->fd = -EBADF;
        }
        if (f && f->map_fd >= 0) {
                close(f->map_fd);
                f->map_fd = -EBADF;
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

static uint32_t map_id(const Flash *f, uint32_t s) {
        const uint32_t *c;

        if (!f->map)
                return 0;
        c = f->map[s / MAP_CHUNK];
        return c ? c[s % MAP_CHUNK] : 0;
}

static int map_set_mem(Flash *f, uint32_t s, uint32_t id) {
        uint32_t **c = &f->map[s / MAP_CHUNK];

        if (!*c) {
                if (id == 0)
                        return 0;
                *c = calloc(MAP_CHUNK, sizeof **c);
                if (!*c)
                        return -ENOMEM;
        }
        (*c)[s % MAP_CHUNK] = id;
        return 0;
}

static bool sector_in_store_range(const Flash *f, uint32_t s) {
        uint64_t a = (uint64_t) s * FLASH_SECTOR_SIZE;

        if (!f->store)
                return false;
        for (size_t i = 0; i < f->n_ranges; i++)
                if (a >= f->ranges[i].addr && a < (uint64_t) f->ranges[i].addr + f->ranges[i].len)
                        return true;
        return false;
}

static int map_fd(Flash *f) {
        if (f->map_fd >= 0)
                return f->map_fd;
        f->map_fd = open(f->map_path, (f->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
        if (f->map_fd < 0) {
                int r = -errno;
                f->map_fd = -EBADF;
                return r;
        }
        return f->map_fd;
}

/* Points sector s at store id (0: not in the store) on disk, then in memory. */
static int map_set(Flash *f, uint32_t s, uint32_t id) {
        uint8_t entry[MAP_ENTRY_SIZE] = {};
        int fd, r;

        if (map_id(f, s) == id)
                return 0;
        if (id > 0) {
                const uint8_t *d = sector_store_digest(f->store, id);
                if (!d)
                        return -EINVAL;
                memcpy(entry, d, sizeof entry);
        }
        fd = map_fd(f);
        if (fd < 0)
                return fd;
        r = pwrite_full(fd, entry, sizeof entry, MAP_ENTRIES_OFFSET + (off_t) s * MAP_ENTRY_SIZE);
        if (r < 0)
                return r;
        return map_set_mem(f, s, id);
}

char *flash_map_path(const char *flash_path) {
        char *p;

        if (!flash_path || asprintf(&p, "%s.map", flash_path) < 0)
                return NULL;
        return p;
}

static int map_header_parse(const uint8_t *h, uint32_t *ret_n_sectors, FlashRange *ranges, size_t *ret_n_ranges,
                            char *store_path, size_t store_path_size) {
        uint32_t n_ranges, path_len;

        if (memcmp(h, MAP_MAGIC, sizeof MAP_MAGIC) != 0 || le32_read(h + MAP_OFF_VERSION) != MAP_VERSION)
                return -EBADMSG;
        if (le32_read(h + MAP_OFF_CRC) != std_crc32(h, MAP_OFF_CRC))
                return -EBADMSG;
        n_ranges = le32_read(h + MAP_OFF_N_RANGES);
        path_len = le16_read(h + MAP_OFF_PATH_LEN);
        if (n_ranges > FLASH_MAX_STORE_RANGES || path_len == 0 || path_len >= MIN(store_path_size, MAP_STORE_PATH_MAX))
                return -EBADMSG;
        *ret_n_sectors = le32_read(h + MAP_OFF_N_SECTORS);
        for (uint32_t i = 0; i < n_ranges; i++) {
                uint32_t first = le32_read(h + MAP_OFF_RANGES + 8 * i), n = le32_read(h + MAP_OFF_RANGES + 8 * i + 4);
                if ((uint64_t) first + n > *ret_n_sectors)
                        return -EBADMSG;
                ranges[i] = (FlashRange) { first * FLASH_SECTOR_SIZE, n * FLASH_SECTOR_SIZE };
        }
        *ret_n_ranges = n_ranges;
        memcpy(store_path, h + MAP_OFF_PATH, path_len);
        store_path[path_len] = '\0';
        if (strlen(store_path) != path_len)
                return -EBADMSG;
        return 0;
}

/* The store directory named in a map, relative to the map's directory. */
static char *map_store_dir(const char *map_path, const char *store_path) {
        _cleanup_free_ char *copy = NULL;

        if (store_path[0] == '/')
                return strdup(store_path);
        copy = strdup(map_path);
        if (!copy)
                return NULL;
        return path_join(dirname(copy), store_path);
}

typedef int (*MapEntryFn)(Flash *f, uint32_t s, const uint8_t *digest, void *userdata);

/* Calls fn for every non-zero entry of the sectors in [first, first+n). */
static int map_read_entries(int fd, uint32_t first, uint32_t n, MapEntryFn fn, Flash *f, void *userdata) {
        uint8_t buf[MAP_ENTRY_SIZE * 128];
        static const uint8_t zero[MAP_ENTRY_SIZE] = {};

        for (uint32_t s = first; s < first + n;) {
                uint32_t k = MIN(n - (s - first), (uint32_t) (sizeof buf / MAP_ENTRY_SIZE));
                ssize_t got = pread(fd, buf, (size_t) k * MAP_ENTRY_SIZE, MAP_ENTRIES_OFFSET + (off_t) s * MAP_ENTRY_SIZE);
                if (got < 0)
                        return -errno;
                if (got == 0)
                        break;    /* the rest was never written */
                for (uint32_t i = 0; i < (uint32_t) got / MAP_ENTRY_SIZE; i++) {
                        if (memcmp(buf + i * MAP_ENTRY_SIZE, zero, MAP_ENTRY_SIZE) == 0)
                                continue;
                        int r = fn(f, s + i, buf + i * MAP_ENTRY_SIZE, userdata);
                        if (r < 0)
                                return r;
                }
                s += k;
        }
        return 0;
}

static int map_load_entry(Flash *f, uint32_t s, const uint8_t *digest, void *userdata) {
        uint32_t id;
        int r;

        if (!sector_in_store_range(f, s))
                return -EBADMSG;
        r = sector_store_intern(f->store, digest, &id);
        if (r == -ENOENT)
                return -EUCLEAN;    /* a map entry without its sector: the store was damaged */
        if (r < 0)
                return r;
        return map_set_mem(f, s, id);
}

static int flash_punch(Flash *f, uint32_t first, uint32_t n);

/* At open: the map of the image, if it has one. */
static int flash_load_map(Flash *f) {
        _cleanup_free_ char *dir = NULL;
        uint8_t h[MAP_HEADER_SIZE];
        char store_path[MAP_STORE_PATH_MAX];
        uint32_t n_sectors;
        int r;

        f->map_path = flash_map_path(f->path);
        if (!f->map_path)
                return -ENOMEM;
        r = map_fd(f);
        if (r == -ENOENT) {
                free(f->map_path);
                f->map_path = NULL;
                return 0;
        }
        if (r < 0)
                return r;
        r = pread_full(f->map_fd, h, sizeof h, 0);
        if (r < 0)
                return r == -EIO ? -EBADMSG : r;
        r = map_header_parse(h, &n_sectors, f->ranges, &f->n_ranges, store_path, sizeof store_path);
        if (r < 0)
                return r;
        if (n_sectors != f->n_sectors)
                return -EBADMSG;
        dir = map_store_dir(f->map_path, store_path);
        if (!dir)
                return -ENOMEM;
        r = sector_store_open(dir, f->read_only ? SECTOR_STORE_READ_ONLY : 0, &f->store);
        if (r < 0)
                return r;
        f->map = calloc(DIV_ROUND_UP(f->n_sectors, MAP_CHUNK), sizeof *f->map);
        if (!f->map)
                return -ENOMEM;
        for (size_t i = 0; i < f->n_ranges; i++) {
                r = map_read_entries(f->map_fd, f->ranges[i].addr / FLASH_SECTOR_SIZE,
                                     f->ranges[i].len / FLASH_SECTOR_SIZE, map_load_entry, f, NULL);
                if (r < 0)
                        return r;
        }
        /* A process killed between a map switch and the punch left the old
         * file data under a mapped sector: the map wins; free the disk. */
        if (!f->read_only && f->can_punch)
                for (uint32_t s = 0; s < f->n_sectors; s++)
                        if (map_id(f, s) > 0 && sector_allocated(f, s)) {
                                r = flash_punch(f, s, 1);
                                if (r < 0)
                                        return r;
                        }
        return 0;
}

bool flash_has_store(const Flash *f) {
        return f && f->store;
}

Flash *flash_close(Flash *f) {
        if (!f)
                return NULL;
        if (!f->power_lost)
                (void) flash_flush_to_store(f);
        if (f->fd >= 0)
                close(f->fd);
        if (f->map_fd >= 0)
                close(f->map_fd);
        if (f->map)
                for (uint32_t i = 0; i < DIV_ROUND_UP(f->n_sectors, MAP_CHUNK); i++)
                        free(f->map[i]);
        free(f->map);
        free(f->map_path);
        sector_store_unref(f->store);
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
        f->map_fd = -EBADF;
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

        r = flash_load_map(f);
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
 * holes are filled with 0xFF, mapped sectors come from the store. */
static int flash_read_raw(Flash *f, uint32_t addr, uint8_t *buf, size_t len) {
        int fd = -EBADF;

        while (len > 0) {
                uint32_t s = addr / FLASH_SECTOR_SIZE;
                uint32_t id = map_id(f, s);
                uint64_t end = (uint64_t) (s + 1) * FLASH_SECTOR_SIZE;
                size_t n;
                int r;

                if (id > 0) {
                        n = (size_t) MIN(end - addr, (uint64_t) len);
                        r = sector_store_read(f->store, id, addr % FLASH_SECTOR_SIZE, buf, n);
                        if (r < 0)
                                return r;
                } else {
                        bool alloc = sector_allocated(f, s);

                        /* Extend the run over sectors of the same kind. */
                        while (end < (uint64_t) addr + len) {
                                uint32_t t = (uint32_t) (end / FLASH_SECTOR_SIZE);
                                if (sector_allocated(f, t) != alloc || map_id(f, t) > 0)
                                        break;
                                end += FLASH_SECTOR_SIZE;
                        }
                        n = (size_t) MIN(end - addr, (uint64_t) len);

                        if (alloc) {
                                if (fd < 0 && (fd = flash_fd(f)) < 0)
                                        return fd;
                                r = pread_full(fd, buf, n, addr);
                                if (r < 0)
                                        return r;
                        } else
                                memset(buf, 0xFF, n);
                }

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

/* Frees the file's blocks of n sectors from `first` (they then read as
 * 0xFF unless mapped); writes 0xFF instead where holes cannot be punched. */
static int flash_punch(Flash *f, uint32_t first, uint32_t n) {
        static const uint8_t ff[FLASH_SECTOR_SIZE] = { [0 ... FLASH_SECTOR_SIZE - 1] = 0xFF };
        int fd = flash_fd(f);

        if (fd < 0)
                return fd;
        if (f->can_punch) {
                /* Only the runs that hold data: a clear bit is a hole already
                 * (an OTA erases every sector of its slot, most of them
                 * mapped to the store or never written). */
                uint32_t s = first, end = first + n;

                while (s < end) {
                        uint32_t run;

                        if (!sector_allocated(f, s)) {
                                s++;
                                continue;
                        }
                        for (run = 1; s + run < end && sector_allocated(f, s + run); run++)
                                ;
                        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) s * FLASH_SECTOR_SIZE,
                                      (off_t) run * FLASH_SECTOR_SIZE) < 0) {
                                if (errno != EOPNOTSUPP && errno != ENOSYS)
                                        return -errno;
                                f->can_punch = false;
                                break;
                        }
                        for (uint32_t i = s; i < s + run; i++)
                                sector_set_allocated(f, i, false);
                        s += run;
                }
                if (f->can_punch)
                        return 0;
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

/* Copy on write: a mapped sector's content goes back into the file, then
 * the map entry is cleared. Killed in between, the map still wins. */
static int sector_localise(Flash *f, uint32_t s) {
        uint8_t sector[FLASH_SECTOR_SIZE];
        uint32_t id = map_id(f, s);
        int fd, r;

        if (id == 0)
                return 0;
        r = sector_store_read(f->store, id, 0, sector, sizeof sector);
        if (r < 0)
                return r;
        fd = flash_fd(f);
        if (fd < 0)
                return fd;
        r = pwrite_full(fd, sector, sizeof sector, (off_t) s * FLASH_SECTOR_SIZE);
        if (r < 0)
                return r;
        sector_set_allocated(f, s, true);
        r = flash_materialise(f, s, true);
        if (r < 0)
                return r;
        return map_set(f, s, 0);
}

static bool sector_is_erased(const uint8_t *p) {
        for (size_t i = 0; i < FLASH_SECTOR_SIZE; i++)
                if (p[i] != 0xFF)
                        return false;
        return true;
}

/* A write that completes sector s of a store range: the new content goes
 * to the store, the map entry switches to it, the file's copy is punched. */
static int sector_store_write(Flash *f, uint32_t s, uint32_t in_sector, const uint8_t *data, size_t n) {
        uint8_t sector[FLASH_SECTOR_SIZE];
        uint32_t id;
        int r;

        if (in_sector > 0) {
                r = flash_read_raw(f, s * FLASH_SECTOR_SIZE, sector, in_sector);
                if (r < 0)
                        return r;
        }
        memcpy(sector + in_sector, data, n);
        if (sector_is_erased(sector))
                return 0;    /* 0xFF over erased flash programs nothing */
        r = sector_store_put_at(f->store, s, sector, &id);
        if (r < 0)
                return r;
        r = map_set(f, s, id);
        if (r < 0)
                return r;
        if (sector_allocated(f, s) && f->can_punch)
                return flash_punch(f, s, 1);
        return 0;
}

/* Sectors of store ranges still in the file (a write that ended inside
 * them, such as an image's last one) move into the store. Their content
 * does not change, so this may run at any time; it runs when the flash
 * goes idle, syncs or closes. */
static int flash_flush_to_store(Flash *f) {
        int r;

        if (!f->store || f->read_only)
                return 0;
        for (size_t i = 0; i < f->n_ranges; i++)
                for (uint32_t s = f->ranges[i].addr / FLASH_SECTOR_SIZE;
                     s < (f->ranges[i].addr + f->ranges[i].len) / FLASH_SECTOR_SIZE; s++) {
                        uint8_t sector[FLASH_SECTOR_SIZE];

                        if (!sector_allocated(f, s) || map_id(f, s) > 0)
                                continue;
                        r = flash_read_raw(f, s * FLASH_SECTOR_SIZE, sector, sizeof sector);
                        if (r < 0)
                                return r;
                        if (sector_is_erased(sector))
                                r = f->can_punch ? flash_punch(f, s, 1) : 0;
                        else
                                r = sector_store_write(f, s, 0, sector, sizeof sector);
                        if (r < 0)
                                return r;
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

                if (sector_in_store_range(f, s) && in_sector + n == FLASH_SECTOR_SIZE)
                        r = sector_store_write(f, s, in_sector, data, n);
                else if ((r = sector_localise(f, s)) < 0)
                        ;
                else if (sector_allocated(f, s))
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

/* NOR: programming only clears bits. A sector that is a hole and not mapped
 * is erased, so anything may be programmed there; elsewhere the old bytes
 * are read, a sector at a time, and compared a word at a time (the byte
 * loop finds the first offending byte for the log). */
static int flash_check_program(Flash *f, uint32_t addr, const uint8_t *p, size_t len) {
        uint8_t old[FLASH_SECTOR_SIZE];

        while (len > 0) {
                uint32_t s = addr / FLASH_SECTOR_SIZE;
                size_t n = MIN((size_t) (FLASH_SECTOR_SIZE - addr % FLASH_SECTOR_SIZE), len);

                if (sector_allocated(f, s) || map_id(f, s) > 0) {
                        size_t i = 0;
                        int r = flash_read_raw(f, addr, old, n);
                        if (r < 0)
                                return r;
                        for (; i + 8 <= n; i += 8) {
                                uint64_t a, b;
                                memcpy(&a, p + i, sizeof a);
                                memcpy(&b, old + i, sizeof b);
                                if (a & ~b)
                                        break;
                        }
                        for (; i < n; i++)
                                if (p[i] & ~old[i]) {
                                        log_debug("Flash write at 0x%" PRIx32 " would set bits at 0x%zx (0x%02x over 0x%02x)",
                                                  addr, addr + i, p[i], old[i]);
                                        return -EPERM;
                                }
                }
                addr += n;
                p += n;
                len -= n;
        }
        return 0;
}

int flash_write(Flash *f, uint32_t addr, const void *buf, size_t len) {
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

        r = flash_check_program(f, addr, p, len);
        if (r < 0)
                return r;

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
        uint32_t first = addr / FLASH_SECTOR_SIZE, n = len / FLASH_SECTOR_SIZE;
        int r;

        /* Erased flash is a hole again: it costs no disk. The file first,
         * then the map: killed in between, a mapped sector still reads as
         * before the erase, never as stale file data. */
        r = flash_punch(f, first, n);
        if (r < 0)
                return r;
        for (uint32_t s = first; s < first + n; s++) {
                r = map_set(f, s, 0);
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
                if (part > 0 && sector_localise(f, s) >= 0 && sector_allocated(f, s)) {
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
        int r;

        if (!f)
                return -EINVAL;
        if (f->read_only)
                return 0;
        r = flash_flush_to_store(f);
        if (r < 0)
                return r;
        /* released: nothing written since the last close */
        if (f->fd >= 0 && fdatasync(f->fd) < 0)
                return -errno;
        if (f->map_fd >= 0 && fdatasync(f->map_fd) < 0)
                return -errno;
        return 0;
}

static int map_write_header(const char *map_path, uint32_t n_sectors, const FlashRange *ranges, size_t n_ranges,
                            const char *store_dir) {
        uint8_t h[MAP_HEADER_SIZE] = {};
        size_t path_len = strlen(store_dir);

        if (path_len == 0 || path_len >= MAP_STORE_PATH_MAX)
                return -ENAMETOOLONG;
        memcpy(h, MAP_MAGIC, sizeof MAP_MAGIC);
        le32_write(h + MAP_OFF_VERSION, MAP_VERSION);
        le32_write(h + MAP_OFF_N_SECTORS, n_sectors);
        le32_write(h + MAP_OFF_N_RANGES, (uint32_t) n_ranges);
        for (size_t i = 0; i < n_ranges; i++) {
                le32_write(h + MAP_OFF_RANGES + 8 * i, ranges[i].addr / FLASH_SECTOR_SIZE);
                le32_write(h + MAP_OFF_RANGES + 8 * i + 4, ranges[i].len / FLASH_SECTOR_SIZE);
        }
        le16_write(h + MAP_OFF_PATH_LEN, (uint16_t) path_len);
        memcpy(h + MAP_OFF_PATH, store_dir, path_len);
        le32_write(h + MAP_OFF_CRC, std_crc32(h, MAP_OFF_CRC));
        return write_file_atomic(map_path, h, sizeof h, 0600);
}

int flash_enable_store(Flash *f, const char *store_dir, const FlashRange *ranges, size_t n_ranges) {
        _cleanup_free_ char *map_path = NULL, *dir = NULL;
        int r;

        if (!f || !store_dir || (!ranges && n_ranges > 0) || n_ranges > FLASH_MAX_STORE_RANGES)
                return -EINVAL;
        if (f->read_only)
                return -EROFS;
        if (f->store)
                return -EEXIST;
        for (size_t i = 0; i < n_ranges; i++)
                if (ranges[i].addr % FLASH_SECTOR_SIZE != 0 || ranges[i].len % FLASH_SECTOR_SIZE != 0 ||
                    (uint64_t) ranges[i].addr + ranges[i].len > f->size)
                        return -EINVAL;

        map_path = flash_map_path(f->path);
        if (!map_path)
                return -ENOMEM;
        if (access(map_path, F_OK) >= 0)
                return -EEXIST;
        dir = map_store_dir(map_path, store_dir);
        if (!dir)
                return -ENOMEM;
        r = sector_store_open(dir, SECTOR_STORE_CREATE, &f->store);
        if (r < 0)
                return r;
        r = map_write_header(map_path, f->n_sectors, ranges, n_ranges, store_dir);
        if (r < 0) {
                f->store = sector_store_unref(f->store);
                return r;
        }
        f->map = calloc(DIV_ROUND_UP(f->n_sectors, MAP_CHUNK), sizeof *f->map);
        if (!f->map)
                return -ENOMEM;
        memcpy(f->ranges, ranges, n_ranges * sizeof *ranges);
        f->n_ranges = n_ranges;
        f->map_path = TAKE_PTR(map_path);

        /* What the ranges already hold moves into the store. */
        for (uint32_t s = 0; s < f->n_sectors; s++) {
                uint8_t sector[FLASH_SECTOR_SIZE];

                if (!sector_in_store_range(f, s) || !sector_allocated(f, s))
                        continue;
                r = flash_read_raw(f, s * FLASH_SECTOR_SIZE, sector, sizeof sector);
                if (r < 0)
                        return r;
                r = sector_store_write(f, s, 0, sector, sizeof sector);
                if (r < 0)
                        return r;
        }
        return flash_sync(f);
}

int flash_mapped_bytes(const Flash *f, uint32_t addr, size_t len, uint64_t *ret) {
        uint64_t n = 0;

        if (!f || !ret)
                return -EINVAL;
        if ((uint64_t) addr + len > f->size)
                return -ERANGE;
        for (uint32_t s = addr / FLASH_SECTOR_SIZE; (uint64_t) s * FLASH_SECTOR_SIZE < (uint64_t) addr + len; s++)
                if (map_id(f, s) > 0)
                        n += FLASH_SECTOR_SIZE;
        *ret = n;
        return 0;
}

int flash_range_fingerprint(Flash *f, uint32_t addr, size_t len, uint8_t ret[static 32]) {
        EVP_MD_CTX *ctx;
        unsigned n = 0;
        int r = 0;

        if (!f || !ret || len == 0)
                return -EINVAL;
        if ((uint64_t) addr + len > f->size)
                return -ERANGE;
        if (!f->store)
                return -ENODATA;
        uint32_t first = addr / FLASH_SECTOR_SIZE, last = (uint32_t) (((uint64_t) addr + len - 1) / FLASH_SECTOR_SIZE);
        for (uint32_t s = first; s <= last; s++)
                if (map_id(f, s) == 0)
                        return -ENODATA;

        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestInit_ex2(ctx, EVP_sha256(), NULL) != 1)
                r = -EIO;
        for (uint32_t s = first; r == 0 && s <= last; s++)
                if (EVP_DigestUpdate(ctx, sector_store_digest(f->store, map_id(f, s)), SECTOR_STORE_DIGEST_SIZE) != 1)
                        r = -EIO;
        if (r == 0 && (EVP_DigestFinal_ex(ctx, ret, &n) != 1 || n != 32))
                r = -EIO;
        EVP_MD_CTX_free(ctx);
        return r;
}

typedef struct DigestCallback {
        int (*cb)(const uint8_t digest[32], void *userdata);
        void *userdata;
} DigestCallback;

static int map_entry_callback(Flash *f, uint32_t s, const uint8_t *digest, void *userdata) {
        const DigestCallback *c = userdata;
        return c->cb(digest, c->userdata);
}

int flash_map_for_each_digest(const char *map_path, int (*cb)(const uint8_t digest[32], void *userdata),
                              void *userdata) {
        _cleanup_close_ int fd = -EBADF;
        uint8_t h[MAP_HEADER_SIZE];
        FlashRange ranges[FLASH_MAX_STORE_RANGES];
        DigestCallback c = { cb, userdata };
        char store_path[MAP_STORE_PATH_MAX];
        uint32_t n_sectors;
        size_t n_ranges;
        int r;

        if (!map_path || !cb)
                return -EINVAL;
        fd = open(map_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        r = pread_full(fd, h, sizeof h, 0);
        if (r < 0)
                return r == -EIO ? -EBADMSG : r;
        r = map_header_parse(h, &n_sectors, ranges, &n_ranges, store_path, sizeof store_path);
        if (r < 0)
                return r;
        /* Every entry counts, in a range or not: garbage collection must
         * never free what a map names. */
        return map_read_entries(fd, 0, n_sectors, map_entry_callback, NULL, &c);
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

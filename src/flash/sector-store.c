/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#define LOG_TOPIC LOG_TOPIC_FLASH
#include "basic/log.h"
#include "flash/sector-store.h"

#define STORE_LOCK_FILE "lock"
#define STORE_SECTORS_DIR "sectors"
#define STORE_TMP_DIR "tmp"

/* Digests by value, each with a dense id (index + 1), found through an
 * open-addressing index on their first bytes (they are uniformly random). */
typedef struct DigestTable {
        uint8_t (*digests)[SECTOR_STORE_DIGEST_SIZE];
        uint64_t *counts;          /* scan only: map entries per digest */
        bool *present;             /* scan only: found in sectors/ */
        uint32_t n, n_alloc;
        uint32_t *slots;           /* id, 0 = empty */
        uint32_t n_slots;          /* power of two, > 2 n */
        bool with_counts;
} DigestTable;

static void digest_table_done(DigestTable *t) {
        free(t->digests);
        free(t->counts);
        free(t->present);
        free(t->slots);
        *t = (DigestTable) {};
}

static uint32_t digest_slot(const DigestTable *t, const uint8_t *d) {
        return (uint32_t) le64_read(d) & (t->n_slots - 1);
}

static uint32_t digest_table_find(const DigestTable *t, const uint8_t *d) {
        if (t->n_slots == 0)
                return 0;
        for (uint32_t i = digest_slot(t, d);; i = (i + 1) & (t->n_slots - 1)) {
                uint32_t id = t->slots[i];
                if (id == 0)
                        return 0;
                if (memcmp(t->digests[id - 1], d, SECTOR_STORE_DIGEST_SIZE) == 0)
                        return id;
        }
}

static int digest_table_rehash(DigestTable *t, uint32_t n_slots) {
        uint32_t *slots = calloc(n_slots, sizeof *slots);

        if (!slots)
                return -ENOMEM;
        free(t->slots);
        t->slots = slots;
        t->n_slots = n_slots;
        for (uint32_t id = 1; id <= t->n; id++) {
                uint32_t i = digest_slot(t, t->digests[id - 1]);
                while (t->slots[i] != 0)
                        i = (i + 1) & (n_slots - 1);
                t->slots[i] = id;
        }
        return 0;
}

/* Returns the id of d, adding it when new. */
static int digest_table_add(DigestTable *t, const uint8_t *d, uint32_t *ret_id) {
        uint32_t id = digest_table_find(t, d);
        int r;

        if (id > 0) {
                *ret_id = id;
                return 0;
        }
        if (t->n == UINT32_MAX - 1)
                return -E2BIG;
        if (t->n == t->n_alloc) {
                uint32_t n = MAX(t->n_alloc * 2, 64u);
                void *p = reallocarray(t->digests, n, SECTOR_STORE_DIGEST_SIZE);
                if (!p)
                        return -ENOMEM;
                t->digests = p;
                if (t->with_counts) {
                        p = reallocarray(t->counts, n, sizeof *t->counts);
                        if (!p)
                                return -ENOMEM;
                        t->counts = p;
                        p = reallocarray(t->present, n, sizeof *t->present);
                        if (!p)
                                return -ENOMEM;
                        t->present = p;
                }
                t->n_alloc = n;
        }
        if ((uint64_t) (t->n + 1) * 2 >= t->n_slots) {
                r = digest_table_rehash(t, MAX(t->n_slots * 2, 128u));
                if (r < 0)
                        return r;
        }
        memcpy(t->digests[t->n], d, SECTOR_STORE_DIGEST_SIZE);
        if (t->with_counts) {
                t->counts[t->n] = 0;
                t->present[t->n] = false;
        }
        id = ++t->n;
        uint32_t i = digest_slot(t, d);
        while (t->slots[i] != 0)
                i = (i + 1) & (t->n_slots - 1);
        t->slots[i] = id;
        *ret_id = id;
        return 0;
}

/* The last sector put for one hint (sector_store_put_at()). */
typedef struct RecentSector {
        uint32_t hint;
        uint32_t id;               /* 0: empty */
        uint8_t *data;             /* SECTOR_STORE_SECTOR_SIZE bytes, the content of id */
} RecentSector;

struct SectorStore {
        unsigned n_ref;
        char *path;
        dev_t dev;
        ino_t ino;
        int lock_fd;
        int sectors_fd;
        int tmp_fd;
        bool read_only;

        DigestTable known;         /* sectors known to be durable in sectors/ */
        RecentSector *recent;      /* SECTOR_STORE_RECENT_SLOTS, allocated on first use */
        EVP_MD *sha256;
        EVP_MD_CTX *md_ctx;
        uint64_t tmp_counter;

        int64_t fail_after;
        unsigned fail_where;

        SectorStore *next;
};

/* The stores this process has open: one object per directory. */
static SectorStore *stores;

void sector_store_digest_to_hex(const uint8_t digest[static SECTOR_STORE_DIGEST_SIZE], char hex[static 65]) {
        static const char x[] = "0123456789abcdef";

        for (size_t i = 0; i < SECTOR_STORE_DIGEST_SIZE; i++) {
                hex[2 * i] = x[digest[i] >> 4];
                hex[2 * i + 1] = x[digest[i] & 15];
        }
        hex[64] = '\0';
}

static int hex_nibble(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* Only lower-case hex of the exact length names a sector. */
static bool hex_to_digest(const char *hex, uint8_t digest[static SECTOR_STORE_DIGEST_SIZE]) {
        if (strlen(hex) != 2 * SECTOR_STORE_DIGEST_SIZE)
                return false;
        for (size_t i = 0; i < SECTOR_STORE_DIGEST_SIZE; i++) {
                int a = hex_nibble(hex[2 * i]), b = hex_nibble(hex[2 * i + 1]);
                if (a < 0 || b < 0)
                        return false;
                digest[i] = (uint8_t) (a << 4 | b);
        }
        return true;
}

static SectorStore *sector_store_free(SectorStore *s) {
        if (!s)
                return NULL;
        for (SectorStore **p = &stores; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        break;
                }
        if (s->tmp_fd >= 0)
                close(s->tmp_fd);
        if (s->sectors_fd >= 0)
                close(s->sectors_fd);
        if (s->lock_fd >= 0)
                close(s->lock_fd);    /* drops the shared lock */
        digest_table_done(&s->known);
        if (s->recent)
                for (size_t i = 0; i < SECTOR_STORE_RECENT_SLOTS; i++)
                        free(s->recent[i].data);
        free(s->recent);
        EVP_MD_CTX_free(s->md_ctx);
        EVP_MD_free(s->sha256);
        free(s->path);
        free(s);
        return NULL;
}

SectorStore *sector_store_ref(SectorStore *s) {
        if (s)
                s->n_ref++;
        return s;
}

SectorStore *sector_store_unref(SectorStore *s) {
        if (!s)
                return NULL;
        if (--s->n_ref == 0)
                sector_store_free(s);
        return NULL;
}

const char *sector_store_path(const SectorStore *s) {
        return s ? s->path : NULL;
}

static int open_subdir(int dir_fd, const char *name, bool create) {
        int fd;

        if (create && mkdirat(dir_fd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

int sector_store_open(const char *dir, SectorStoreFlags flags, SectorStore **ret) {
        _cleanup_(sector_store_unrefp) SectorStore *s = NULL;
        _cleanup_close_ int dir_fd = -EBADF;
        bool ro = flags & SECTOR_STORE_READ_ONLY;
        struct stat st;
        int r;

        if (!dir || !ret)
                return -EINVAL;
        if ((flags & SECTOR_STORE_CREATE) && ro)
                return -EINVAL;
        if ((flags & SECTOR_STORE_CREATE) && mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return -errno;
        if (fstat(dir_fd, &st) < 0)
                return -errno;

        for (SectorStore *i = stores; i; i = i->next)
                if (i->dev == st.st_dev && i->ino == st.st_ino) {
                        if (!ro)
                                i->read_only = false;
                        *ret = sector_store_ref(i);
                        return 0;
                }

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->n_ref = 1;
        s->lock_fd = s->sectors_fd = s->tmp_fd = -EBADF;
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->read_only = ro;
        s->fail_after = -1;
        /* tmp names: pid and this counter; a clock start keeps them apart
         * from those of an earlier process that had our pid */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s->tmp_counter = (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
        s->path = strdup(dir);
        if (!s->path)
                return -ENOMEM;
        s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        s->md_ctx = EVP_MD_CTX_new();
        if (!s->sha256 || !s->md_ctx)
                return -ENOMEM;

        s->lock_fd = openat(dir_fd, STORE_LOCK_FILE, (ro ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC | O_NOCTTY, 0600);
        if (s->lock_fd < 0)
                return -errno;
        /* The garbage collector holds it exclusively for a moment: wait. */
        while (flock(s->lock_fd, LOCK_SH) < 0)
                if (errno != EINTR)
                        return -errno;

        r = open_subdir(dir_fd, STORE_SECTORS_DIR, flags & SECTOR_STORE_CREATE);
        if (r < 0)
                return r;
        s->sectors_fd = r;
        if (flags & SECTOR_STORE_CREATE) {
                r = open_subdir(dir_fd, STORE_TMP_DIR, true);
                if (r < 0)
                        return r;
                close(r);
                if (fsync(dir_fd) < 0)
                        return -errno;
        }

        s->next = stores;
        stores = s;
        log_debug("Opened sector store %s", dir);
        *ret = TAKE_PTR(s);
        return 0;
}

void sector_store_set_fail_point(SectorStore *s, int64_t n, unsigned where) {
        if (!s)
                return;
        s->fail_after = n < 0 ? -1 : n;
        s->fail_where = where;
}

static bool store_fails_at(SectorStore *s, unsigned where, bool *armed) {
        return *armed && s->fail_where == where;
}

static int store_hash(SectorStore *s, const uint8_t *data, uint8_t digest[static SECTOR_STORE_DIGEST_SIZE]) {
        unsigned len = 0;

        if (EVP_DigestInit_ex2(s->md_ctx, s->sha256, NULL) != 1 ||
            EVP_DigestUpdate(s->md_ctx, data, SECTOR_STORE_SECTOR_SIZE) != 1 ||
            EVP_DigestFinal_ex(s->md_ctx, digest, &len) != 1 || len != SECTOR_STORE_DIGEST_SIZE)
                return -EIO;
        return 0;
}

/* tmp file, fdatasync, rename, fsync of sectors/: the name appears only
 * once its content is on disk, and is on disk itself when we return. */
static int store_write_sector(SectorStore *s, const char *hex, const uint8_t *data) {
        _cleanup_close_ int fd = -EBADF;
        char tmp[128];
        bool armed = false;
        int r;

        if (s->tmp_fd < 0) {
                _cleanup_close_ int dir_fd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dir_fd < 0)
                        return -errno;
                r = open_subdir(dir_fd, STORE_TMP_DIR, true);
                if (r < 0)
                        return r;
                s->tmp_fd = r;
        }
        if (s->fail_after >= 0) {
                if (s->fail_after == 0) {
                        armed = true;
                        s->fail_after = -1;
                } else
                        s->fail_after--;
        }

        snprintf(tmp, sizeof tmp, "%.16s.%ld.%" PRIu64, hex, (long) getpid(), s->tmp_counter++);
        fd = openat(s->tmp_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0 && errno == EEXIST) {
                /* left by an earlier process with our pid that died there */
                (void) unlinkat(s->tmp_fd, tmp, 0);
                fd = openat(s->tmp_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
        }
        if (fd < 0)
                return -errno;
        r = pwrite_full(fd, data, SECTOR_STORE_SECTOR_SIZE, 0);
        if (r < 0)
                goto fail;
        if (store_fails_at(s, 0, &armed))
                return -EIO;
        if (fdatasync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        if (store_fails_at(s, 1, &armed))
                return -EIO;
        /* Two processes storing the same sector both rename: either wins,
         * the content is the same. */
        if (renameat(s->tmp_fd, tmp, s->sectors_fd, hex) < 0) {
                r = -errno;
                goto fail;
        }
        if (store_fails_at(s, 2, &armed))
                return -EIO;
        if (fsync(s->sectors_fd) < 0)
                return -errno;
        return 0;

fail:
        (void) unlinkat(s->tmp_fd, tmp, 0);
        return r;
}

int sector_store_put(SectorStore *s, const uint8_t data[static SECTOR_STORE_SECTOR_SIZE], uint32_t *ret_id) {
        uint8_t digest[SECTOR_STORE_DIGEST_SIZE];
        char hex[65];
        uint32_t id;
        int r;

        if (!s || !data || !ret_id)
                return -EINVAL;
        r = store_hash(s, data, digest);
        if (r < 0)
                return r;
        id = digest_table_find(&s->known, digest);
        if (id > 0) {
                *ret_id = id;
                return 0;
        }
        if (s->read_only)
                return -EROFS;

        sector_store_digest_to_hex(digest, hex);
        if (faccessat(s->sectors_fd, hex, F_OK, 0) < 0) {
                /* Not there (or unreadable: writing it again is harmless). */
                r = store_write_sector(s, hex, data);
                if (r < 0)
                        return r;
                log_debug("Stored sector %s", hex);
        }
        return digest_table_add(&s->known, digest, ret_id);
}

int sector_store_put_at(SectorStore *s, uint32_t hint, const uint8_t data[static SECTOR_STORE_SECTOR_SIZE],
                        uint32_t *ret_id) {
        RecentSector *r;
        int k;

        if (!s || !data || !ret_id)
                return -EINVAL;
        if (!s->recent) {
                s->recent = calloc(SECTOR_STORE_RECENT_SLOTS, sizeof *s->recent);
                if (!s->recent)
                        return sector_store_put(s, data, ret_id);
        }
        r = &s->recent[hint % SECTOR_STORE_RECENT_SLOTS];
        if (r->id > 0 && r->hint == hint && memcmp(r->data, data, SECTOR_STORE_SECTOR_SIZE) == 0) {
                *ret_id = r->id;
                return 0;
        }
        k = sector_store_put(s, data, ret_id);
        if (k < 0)
                return k;
        if (!r->data) {
                r->data = malloc(SECTOR_STORE_SECTOR_SIZE);
                if (!r->data)
                        return 0;    /* stored all the same; only the shortcut is lost */
        }
        memcpy(r->data, data, SECTOR_STORE_SECTOR_SIZE);
        r->hint = hint;
        r->id = *ret_id;
        return 0;
}

int sector_store_intern(SectorStore *s, const uint8_t digest[static SECTOR_STORE_DIGEST_SIZE], uint32_t *ret_id) {
        char hex[65];
        uint32_t id;

        if (!s || !digest || !ret_id)
                return -EINVAL;
        id = digest_table_find(&s->known, digest);
        if (id > 0) {
                *ret_id = id;
                return 0;
        }
        sector_store_digest_to_hex(digest, hex);
        if (faccessat(s->sectors_fd, hex, F_OK, 0) < 0)
                return -errno;
        return digest_table_add(&s->known, digest, ret_id);
}

const uint8_t *sector_store_digest(const SectorStore *s, uint32_t id) {
        if (!s || id == 0 || id > s->known.n)
                return NULL;
        return s->known.digests[id - 1];
}

int sector_store_read(SectorStore *s, uint32_t id, uint32_t off, void *buf, size_t len) {
        _cleanup_close_ int fd = -EBADF;
        const uint8_t *d = sector_store_digest(s, id);
        char hex[65];

        if (!d || (!buf && len > 0))
                return -EINVAL;
        if ((uint64_t) off + len > SECTOR_STORE_SECTOR_SIZE)
                return -ERANGE;
        sector_store_digest_to_hex(d, hex);
        fd = openat(s->sectors_fd, hex, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        return pread_full(fd, buf, len, off);
}

struct SectorStoreScan {
        SectorStoreScanFlags flags;
        int lock_fd;
        int dir_fd;
        DigestTable marked;
        uint64_t n_refs;
        EVP_MD *sha256;
};

SectorStoreScan *sector_store_scan_free(SectorStoreScan *sc) {
        if (!sc)
                return NULL;
        if (sc->lock_fd >= 0)
                close(sc->lock_fd);
        if (sc->dir_fd >= 0)
                close(sc->dir_fd);
        digest_table_done(&sc->marked);
        EVP_MD_free(sc->sha256);
        free(sc);
        return NULL;
}

int sector_store_scan_begin(const char *dir, SectorStoreScanFlags flags, SectorStoreScan **ret) {
        _cleanup_(sector_store_scan_freep) SectorStoreScan *sc = NULL;
        bool gc = flags & SECTOR_STORE_SCAN_GC;

        if (!dir || !ret)
                return -EINVAL;
        sc = calloc(1, sizeof *sc);
        if (!sc)
                return -ENOMEM;
        sc->flags = flags;
        sc->lock_fd = -EBADF;
        sc->marked.with_counts = true;
        sc->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sc->dir_fd < 0)
                return -errno;
        sc->lock_fd = openat(sc->dir_fd, STORE_LOCK_FILE, (gc ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC | O_NOCTTY, 0600);
        if (sc->lock_fd < 0)
                return -errno;
        /* Garbage is only garbage while nobody can add a reference to it:
         * every process with the store open holds the lock shared. */
        if (flock(sc->lock_fd, gc ? LOCK_EX | LOCK_NB : LOCK_SH) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : -errno;
        if (flags & SECTOR_STORE_SCAN_VERIFY) {
                sc->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
                if (!sc->sha256)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(sc);
        return 0;
}

int sector_store_scan_mark(SectorStoreScan *sc, const uint8_t digest[static SECTOR_STORE_DIGEST_SIZE]) {
        uint32_t id;
        int r;

        if (!sc || !digest)
                return -EINVAL;
        r = digest_table_add(&sc->marked, digest, &id);
        if (r < 0)
                return r;
        sc->marked.counts[id - 1]++;
        sc->n_refs++;
        return 0;
}

static int scan_verify(SectorStoreScan *sc, int sectors_fd, const char *name, const uint8_t *digest, bool *ret_ok) {
        _cleanup_close_ int fd = -EBADF;
        uint8_t buf[SECTOR_STORE_SECTOR_SIZE], md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        struct stat st;

        fd = openat(sectors_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size != SECTOR_STORE_SECTOR_SIZE || pread_full(fd, buf, sizeof buf, 0) < 0) {
                *ret_ok = false;
                return 0;
        }
        if (EVP_Digest(buf, sizeof buf, md, &len, sc->sha256, NULL) != 1)
                return -EIO;
        *ret_ok = len == SECTOR_STORE_DIGEST_SIZE && memcmp(md, digest, SECTOR_STORE_DIGEST_SIZE) == 0;
        return 0;
}

static int scan_clean_tmp(SectorStoreScan *sc, uint64_t *n_removed) {
        _cleanup_close_ int fd = open_subdir(sc->dir_fd, STORE_TMP_DIR, false);
        DIR *d;
        struct dirent *de;

        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return fd;
        d = fdopendir(fcntl(fd, F_DUPFD_CLOEXEC, 3));
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && unlinkat(fd, de->d_name, 0) >= 0)
                        (*n_removed)++;
        closedir(d);
        return 0;
}

int sector_store_scan_end(SectorStoreScan *sc,
                          void (*refcount)(const uint8_t digest[SECTOR_STORE_DIGEST_SIZE], uint64_t n, void *userdata),
                          void *userdata, SectorStoreStats *ret) {
        _cleanup_close_ int sectors_fd = -EBADF;
        SectorStoreStats st = { .n_refs = sc ? sc->n_refs : 0 };
        bool gc = sc && (sc->flags & SECTOR_STORE_SCAN_GC);
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (!sc)
                return -EINVAL;
        sectors_fd = open_subdir(sc->dir_fd, STORE_SECTORS_DIR, false);
        if (sectors_fd < 0)
                return sectors_fd;
        d = fdopendir(fcntl(sectors_fd, F_DUPFD_CLOEXEC, 3));
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                uint8_t digest[SECTOR_STORE_DIGEST_SIZE];
                uint32_t id;
                struct stat s;

                if (de->d_name[0] == '.')
                        continue;
                if (!hex_to_digest(de->d_name, digest))
                        continue;    /* not ours */
                st.n_sectors++;
                id = digest_table_find(&sc->marked, digest);
                if (id == 0) {
                        if (gc) {
                                if (unlinkat(sectors_fd, de->d_name, 0) < 0) {
                                        r = -errno;
                                        break;
                                }
                                st.n_removed++;
                                continue;
                        }
                } else {
                        sc->marked.present[id - 1] = true;
                        st.n_referenced++;
                }
                if (sc->flags & SECTOR_STORE_SCAN_VERIFY) {
                        bool ok;
                        r = scan_verify(sc, sectors_fd, de->d_name, digest, &ok);
                        if (r < 0)
                                break;
                        if (!ok)
                                st.n_corrupt++;
                }
                if (fstatat(sectors_fd, de->d_name, &s, AT_SYMLINK_NOFOLLOW) >= 0)
                        st.disk_bytes += (uint64_t) s.st_blocks * 512;
        }
        closedir(d);
        if (r < 0)
                return r;

        for (uint32_t id = 1; id <= sc->marked.n; id++) {
                if (!sc->marked.present[id - 1])
                        st.n_missing += sc->marked.counts[id - 1];
                if (refcount)
                        refcount(sc->marked.digests[id - 1], sc->marked.counts[id - 1], userdata);
        }

        if (gc) {
                r = scan_clean_tmp(sc, &st.n_tmp_removed);
                if (r < 0)
                        return r;
                if (st.n_removed > 0 && fsync(sectors_fd) < 0)
                        return -errno;
        }
        if (ret)
                *ret = st;
        return 0;
}

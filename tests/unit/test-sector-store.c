/* SPDX-License-Identifier: MIT */
/* The content-addressed sector store under flash.c's store ranges (issue #10):
 * every operation is also applied to a plain flash, and both must read the
 * same, byte for byte. */
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "flash/flash.h"
#include "flash/sector-store.h"

#define SIZE (512u * 1024u)
#define SLOT0 0x10000u
#define SLOT1 0x40000u
#define SLOT_LEN 0x30000u
#define IMAGE_LEN (150u * 1024u + 1234u)
#define IMAGE_SECTORS ((IMAGE_LEN + FLASH_SECTOR_SIZE - 1) / FLASH_SECTOR_SIZE)

static char tmpdir[] = "/tmp/test-sector-store-XXXXXX";
static char store_dir[300];

static void setup(void) {
        cr_assert_not_null(mkdtemp(tmpdir));
        snprintf(store_dir, sizeof store_dir, "%s/store", tmpdir);
}

static void teardown(void) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
}

static void path_of(const char *dev, const char *file, char *buf, size_t n) {
        snprintf(buf, n, "%s/%s/%s", tmpdir, dev, file);
}

static const FlashRange slots[] = { { SLOT0, SLOT_LEN }, { SLOT1, SLOT_LEN } };

static Flash *create_dev(const char *dev, bool with_store) {
        char p[400];
        Flash *f = NULL;

        snprintf(p, sizeof p, "%s/%s", tmpdir, dev);
        cr_assert_eq(mkdir(p, 0700), 0);
        path_of(dev, "flash.bin", p, sizeof p);
        cr_assert_eq(flash_open(p, FLASH_OPEN_CREATE, SIZE, &f), 0);
        if (with_store) {
                cr_assert_eq(flash_enable_store(f, "../store", slots, ELEMENTSOF(slots)), 0);
                cr_assert(flash_has_store(f));
        }
        return f;
}

static Flash *open_dev(const char *dev) {
        char p[400];
        Flash *f = NULL;

        path_of(dev, "flash.bin", p, sizeof p);
        cr_assert_eq(flash_open(p, 0, 0, &f), 0, "reopen %s", dev);
        return f;
}

static uint64_t rng_next(uint64_t *s) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static uint8_t *make_image(uint64_t seed) {
        uint8_t *img = malloc(IMAGE_LEN);
        uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;

        cr_assert_not_null(img);
        for (size_t i = 0; i < IMAGE_LEN; i++)
                img[i] = (uint8_t) rng_next(&s);
        return img;
}

/* As ota-writer.c does: each sector erased just before the write reaches
 * it, chunks of any size. */
static int ota_write(Flash *f, uint32_t slot, const uint8_t *img, size_t len, uint64_t seed) {
        uint64_t s = seed + 7;
        size_t done = 0, erased = 0;
        int r;

        while (done < len) {
                size_t n = (size_t) (1 + rng_next(&s) % 6000);    /* MIN() evaluates twice */

                n = MIN(n, len - done);
                while (erased < done + n) {
                        r = flash_erase(f, slot + (uint32_t) erased, FLASH_SECTOR_SIZE);
                        if (r < 0)
                                return r;
                        erased += FLASH_SECTOR_SIZE;
                }
                r = flash_write(f, slot + (uint32_t) done, img + done, n);
                if (r < 0)
                        return r;
                done += n;
        }
        /* the daemon's device goes idle after its update */
        flash_release_fd(f);
        return 0;
}

static void assert_same_at(Flash *a, Flash *b, int line) {
        _cleanup_free_ uint8_t *x = malloc(SIZE), *y = malloc(SIZE);

        cr_assert_eq(flash_read(a, 0, x, SIZE), 0);
        cr_assert_eq(flash_read(b, 0, y, SIZE), 0);
        for (size_t i = 0; i < SIZE; i++)
                cr_assert_eq(x[i], y[i], "line %d: byte 0x%zx differs: 0x%02x, 0x%02x", line, i, x[i], y[i]);
}

#define assert_same(a, b) assert_same_at(a, b, __LINE__)

static void assert_same_export(Flash *a, Flash *b) {
        char pa[400], pb[400];
        _cleanup_free_ uint8_t *x = NULL, *y = NULL;
        size_t nx, ny;

        snprintf(pa, sizeof pa, "%s/export-a.bin", tmpdir);
        snprintf(pb, sizeof pb, "%s/export-b.bin", tmpdir);
        cr_assert_eq(flash_export(a, pa), 0);
        cr_assert_eq(flash_export(b, pb), 0);
        cr_assert_eq(read_full_file(pa, SIZE, &x, &nx), 0);
        cr_assert_eq(read_full_file(pb, SIZE, &y, &ny), 0);
        cr_assert_eq(nx, SIZE);
        cr_assert_eq(ny, SIZE);
        cr_assert_eq(memcmp(x, y, SIZE), 0, "flash_export() differs");
        unlink(pa);
        unlink(pb);
}

static uint64_t count_store_files(void) {
        char cmd[400];
        FILE *p;
        unsigned long n = 0;

        snprintf(cmd, sizeof cmd, "ls '%s/sectors' | wc -l", store_dir);
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        cr_assert_eq(fscanf(p, "%lu", &n), 1);
        pclose(p);
        return n;
}

/* Reference counts from every device map, through the store's scan. */
typedef struct Refs {
        uint8_t digest[512][SECTOR_STORE_DIGEST_SIZE];
        uint64_t count[512];
        size_t n;
} Refs;

static void on_refcount(const uint8_t digest[SECTOR_STORE_DIGEST_SIZE], uint64_t n, void *userdata) {
        Refs *r = userdata;
        if (r->n < ELEMENTSOF(r->count)) {
                memcpy(r->digest[r->n], digest, SECTOR_STORE_DIGEST_SIZE);
                r->count[r->n++] = n;
        }
}

static int on_digest(const uint8_t digest[32], void *userdata) {
        return sector_store_scan_mark(userdata, digest);
}

static int scan(const char *const *devs, size_t n_devs, SectorStoreScanFlags flags, Refs *refs, SectorStoreStats *st) {
        _cleanup_(sector_store_scan_freep) SectorStoreScan *sc = NULL;
        int r;

        r = sector_store_scan_begin(store_dir, flags, &sc);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_devs; i++) {
                char p[400];
                path_of(devs[i], "flash.bin.map", p, sizeof p);
                r = flash_map_for_each_digest(p, on_digest, sc);
                if (r < 0)
                        return r;
        }
        if (refs)
                *refs = (Refs) {};
        return sector_store_scan_end(sc, refs ? on_refcount : NULL, refs, st);
}

/* The refcount of the sector holding image byte `off`. */
static uint64_t refs_of(const Refs *refs, const uint8_t *img, size_t off) {
        uint8_t sector[FLASH_SECTOR_SIZE], md[EVP_MAX_MD_SIZE];
        size_t start = off / FLASH_SECTOR_SIZE * FLASH_SECTOR_SIZE;
        size_t n = MIN((size_t) FLASH_SECTOR_SIZE, IMAGE_LEN - start);
        unsigned len = 0;

        memset(sector, 0xFF, sizeof sector);
        memcpy(sector, img + start, n);
        cr_assert_eq(EVP_Digest(sector, sizeof sector, md, &len, EVP_sha256(), NULL), 1);
        for (size_t i = 0; i < refs->n; i++)
                if (memcmp(refs->digest[i], md, SECTOR_STORE_DIGEST_SIZE) == 0)
                        return refs->count[i];
        return 0;
}

Test(sector_store, identical_writes_stored_once, .init = setup, .fini = teardown) {
        _cleanup_free_ uint8_t *img = make_image(1);
        _cleanup_(flash_closep) Flash *a = create_dev("a", true), *b = create_dev("b", true), *plain = create_dev("p", false);
        uint64_t used, mapped;

        cr_assert_eq(ota_write(a, SLOT1, img, IMAGE_LEN, 1), 0);
        cr_assert_eq(ota_write(b, SLOT1, img, IMAGE_LEN, 2), 0);     /* other chunk boundaries */
        cr_assert_eq(ota_write(plain, SLOT1, img, IMAGE_LEN, 3), 0);
        /* something outside the store ranges stays in the file */
        cr_assert_eq(flash_write(a, 0x1000, "nvs", 3), 0);
        cr_assert_eq(flash_write(b, 0x1000, "nvs", 3), 0);
        cr_assert_eq(flash_write(plain, 0x1000, "nvs", 3), 0);

        { uint64_t nf = count_store_files(); cr_assert_eq(nf, IMAGE_SECTORS, "each distinct sector once: %lu files, %u sectors", (unsigned long) nf, IMAGE_SECTORS); }
        cr_assert_eq(flash_allocated_bytes(a, SLOT1, SLOT_LEN, &used), 0);
        cr_assert_eq(used, 0, "the slot costs the device no disk");
        cr_assert_eq(flash_mapped_bytes(b, SLOT1, SLOT_LEN, &mapped), 0);
        cr_assert_eq(mapped, (uint64_t) IMAGE_SECTORS * FLASH_SECTOR_SIZE);
        cr_assert_eq(flash_allocated_bytes(a, 0, 0x10000, &used), 0);
        cr_assert_eq(used, FLASH_SECTOR_SIZE);

        assert_same(a, plain);
        assert_same(b, plain);
        assert_same_export(a, plain);

        /* the same after a reopen, from the map file */
        a = flash_close(a);
        a = open_dev("a");
        assert_same(a, plain);
        uint8_t fa[32], fb[32];
        cr_assert_eq(flash_range_fingerprint(a, SLOT1, IMAGE_LEN, fa), 0);
        cr_assert_eq(flash_range_fingerprint(b, SLOT1, IMAGE_LEN, fb), 0);
        cr_assert_eq(memcmp(fa, fb, 32), 0, "same image, same fingerprint");
        cr_assert_eq(flash_range_fingerprint(a, 0, 4096, fa), -ENODATA);
}

Test(sector_store, differing_sector_copied_on_write, .init = setup, .fini = teardown) {
        _cleanup_free_ uint8_t *img = make_image(2);
        _cleanup_(flash_closep) Flash *a = create_dev("a", true), *b = create_dev("b", true), *plain = create_dev("p", false);
        uint8_t zero[16] = {}, fa[32], fb[32];
        uint64_t used, mapped;

        cr_assert_eq(ota_write(a, SLOT0, img, IMAGE_LEN, 1), 0);
        cr_assert_eq(ota_write(b, SLOT0, img, IMAGE_LEN, 1), 0);
        cr_assert_eq(ota_write(plain, SLOT0, img, IMAGE_LEN, 1), 0);
        cr_assert_eq(count_store_files(), IMAGE_SECTORS);

        /* A bit-clearing write that ends inside a mapped sector: only that
         * sector is copied into b's file, the store is unchanged. */
        cr_assert_eq(flash_write(b, SLOT0 + 5 * 4096 + 100, zero, sizeof zero), 0);
        cr_assert_eq(flash_write(plain, SLOT0 + 5 * 4096 + 100, zero, sizeof zero), 0);
        cr_assert_eq(flash_allocated_bytes(b, SLOT0, SLOT_LEN, &used), 0);
        cr_assert_eq(used, FLASH_SECTOR_SIZE, "one sector copied");
        cr_assert_eq(flash_mapped_bytes(b, SLOT0, SLOT_LEN, &mapped), 0);
        cr_assert_eq(mapped, (uint64_t) (IMAGE_SECTORS - 1) * FLASH_SECTOR_SIZE);
        cr_assert_eq(count_store_files(), IMAGE_SECTORS);
        cr_assert_eq(flash_range_fingerprint(b, SLOT0, IMAGE_LEN, fb), -ENODATA);

        /* A write that completes that sector stores its new content: one
         * new sector in the store, b's file is empty again. */
        cr_assert_eq(flash_write(b, SLOT0 + 6 * 4096 - 16, zero, sizeof zero), 0);
        cr_assert_eq(flash_write(plain, SLOT0 + 6 * 4096 - 16, zero, sizeof zero), 0);
        cr_assert_eq(count_store_files(), IMAGE_SECTORS + 1);
        cr_assert_eq(flash_allocated_bytes(b, SLOT0, SLOT_LEN, &used), 0);
        cr_assert_eq(used, 0);
        /* NOR rules still hold on a mapped sector */
        uint8_t ones[4] = { 0xFF, 0xFF, 0xFF, 0xFF };
        cr_assert_eq(flash_write(b, SLOT0 + 5 * 4096 + 100, ones, sizeof ones), -EPERM);

        assert_same(b, plain);
        assert_same_export(b, plain);
        cr_assert_eq(flash_range_fingerprint(a, SLOT0, IMAGE_LEN, fa), 0);
        cr_assert_eq(flash_range_fingerprint(b, SLOT0, IMAGE_LEN, fb), 0);
        cr_assert_neq(memcmp(fa, fb, 32), 0, "different bytes, different fingerprint");

        /* erase: a hole, and the map entry gone */
        cr_assert_eq(flash_erase(b, SLOT0, 2 * 4096), 0);
        cr_assert_eq(flash_erase(plain, SLOT0, 2 * 4096), 0);
        assert_same(b, plain);
        b = flash_close(b);
        b = open_dev("b");
        assert_same(b, plain);
}

Test(sector_store, refcounts_after_rollback_and_reupdate, .init = setup, .fini = teardown) {
        _cleanup_free_ uint8_t *x = make_image(10), *y = make_image(11), *factory = make_image(12);
        static const char *const devs[] = { "a", "b" };
        Flash *a = create_dev("a", true), *b = create_dev("b", true);
        SectorStoreStats st;
        Refs refs;

        /* both run the factory image in ota_0 and update ota_1 to x */
        cr_assert_eq(ota_write(a, SLOT0, factory, IMAGE_LEN, 1), 0);
        cr_assert_eq(ota_write(b, SLOT0, factory, IMAGE_LEN, 2), 0);
        cr_assert_eq(ota_write(a, SLOT1, x, IMAGE_LEN, 3), 0);
        cr_assert_eq(ota_write(b, SLOT1, x, IMAGE_LEN, 4), 0);

        /* the store is open: no garbage collection under a user */
        cr_assert_eq(scan(devs, 2, SECTOR_STORE_SCAN_GC, NULL, &st), -EBUSY);
        cr_assert_eq(scan(devs, 2, SECTOR_STORE_SCAN_VERIFY, &refs, &st), 0);
        cr_assert_eq(st.n_sectors, 2 * IMAGE_SECTORS);
        cr_assert_eq(st.n_refs, 4 * IMAGE_SECTORS);
        cr_assert_eq(st.n_missing, 0);
        cr_assert_eq(st.n_corrupt, 0);
        cr_assert_eq(refs_of(&refs, x, 0), 2);
        cr_assert_eq(refs_of(&refs, factory, IMAGE_LEN - 1), 2);

        /* a rolls back (x fails to boot: otadata goes back to ota_0; ota_1 is
         * left as it is but its first sector erased, as the bootloader's
         * invalidation does) and then re-updates ota_1 to y */
        cr_assert_eq(flash_erase(a, SLOT1, FLASH_SECTOR_SIZE), 0);
        a = flash_close(a);
        b = flash_close(b);
        cr_assert_eq(scan(devs, 2, 0, &refs, &st), 0);
        cr_assert_eq(refs_of(&refs, x, 0), 1, "a's invalidated first sector dropped its reference (%lu)", (unsigned long) refs_of(&refs, x, 0));
        cr_assert_eq(refs_of(&refs, x, 4096), 2);

        a = open_dev("a");
        cr_assert_eq(ota_write(a, SLOT1, y, IMAGE_LEN, 5), 0);
        a = flash_close(a);
        cr_assert_eq(scan(devs, 2, SECTOR_STORE_SCAN_GC, &refs, &st), 0);
        cr_assert_eq(st.n_removed, 0, "b still runs x");
        cr_assert_eq(refs_of(&refs, x, 4096), 1);
        cr_assert_eq(refs_of(&refs, y, 4096), 1);
        cr_assert_eq(refs_of(&refs, factory, 4096), 2);

        /* b re-updates too: x is garbage, exactly its sectors go */
        b = open_dev("b");
        cr_assert_eq(ota_write(b, SLOT1, y, IMAGE_LEN, 6), 0);
        b = flash_close(b);
        cr_assert_eq(scan(devs, 2, SECTOR_STORE_SCAN_GC, &refs, &st), 0);
        cr_assert_eq(st.n_removed, IMAGE_SECTORS);
        cr_assert_eq(st.n_sectors, 3 * IMAGE_SECTORS);
        cr_assert_eq(refs_of(&refs, x, 4096), 0);
        cr_assert_eq(refs_of(&refs, y, 4096), 2);
        cr_assert_eq(count_store_files(), 2 * IMAGE_SECTORS);

        /* and both devices still read what they hold */
        _cleanup_(flash_closep) Flash *plain = create_dev("p", false);
        cr_assert_eq(ota_write(plain, SLOT0, factory, IMAGE_LEN, 1), 0);
        cr_assert_eq(ota_write(plain, SLOT1, y, IMAGE_LEN, 1), 0);
        a = open_dev("a");
        b = open_dev("b");
        assert_same(a, plain);
        assert_same(b, plain);
        flash_close(a);
        flash_close(b);
}

/* What a sector of a slot may hold after a kill while a writer moves it
 * between images a and b, in either direction: all of one of them, or a
 * prefix of one of them followed by erased flash. */
static bool sector_is(const uint8_t *got, const uint8_t *img, size_t sector, bool prefix) {
        uint8_t want[FLASH_SECTOR_SIZE];
        size_t start = sector * FLASH_SECTOR_SIZE, i = 0;

        memset(want, 0xFF, sizeof want);
        if (start < IMAGE_LEN)
                memcpy(want, img + start, MIN((size_t) FLASH_SECTOR_SIZE, IMAGE_LEN - start));
        if (!prefix)
                return memcmp(got, want, FLASH_SECTOR_SIZE) == 0;
        while (i < FLASH_SECTOR_SIZE && got[i] == want[i])
                i++;
        for (; i < FLASH_SECTOR_SIZE; i++)
                if (got[i] != 0xFF)
                        return false;
        return true;
}

Test(sector_store, killed_mid_write_leaves_store_and_device_consistent, .init = setup, .fini = teardown, .timeout = 240) {
        _cleanup_free_ uint8_t *x = make_image(20), *y = make_image(21), *slot = malloc(SLOT_LEN);
        static const char *const devs[] = { "a" };
        uint64_t rnd = (uint64_t) time(NULL);
        Flash *a = create_dev("a", true);

        cr_assert_eq(ota_write(a, SLOT1, x, IMAGE_LEN, 1), 0);
        cr_assert_eq(flash_sync(a), 0);
        a = flash_close(a);

        for (unsigned round = 0; round < 24; round++) {
                const uint8_t *from = round % 2 ? y : x, *to = round % 2 ? x : y;
                SectorStoreStats st;
                pid_t pid;
                int status;

                pid = fork();
                cr_assert_geq(pid, 0);
                if (pid == 0) {
                        Flash *f = NULL;
                        char p[400];
                        path_of("a", "flash.bin", p, sizeof p);
                        if (flash_open(p, 0, 0, &f) < 0)
                                _exit(2);
                        /* forever: the parent kills us somewhere in it */
                        for (uint64_t seed = 0;; seed++)
                                if (ota_write(f, SLOT1, seed % 2 ? from : to, IMAGE_LEN, seed) < 0)
                                        _exit(3);
                }
                /* somewhere in the first update, or in a later one */
                struct timespec ts = { 0, (long) (1 + rng_next(&rnd) % 40) * 1000000L };
                nanosleep(&ts, NULL);
                cr_assert_eq(kill(pid, SIGKILL), 0);
                cr_assert_eq(waitpid(pid, &status, 0), pid);
                cr_assert(WIFSIGNALED(status), "child exited on its own (%d)", WEXITSTATUS(status));

                /* every map entry names a stored sector holding what it names */
                cr_assert_eq(scan(devs, 1, SECTOR_STORE_SCAN_VERIFY, NULL, &st), 0);
                cr_assert_eq(st.n_missing, 0, "round %u", round);
                cr_assert_eq(st.n_corrupt, 0, "round %u", round);

                a = open_dev("a");
                cr_assert_eq(flash_read(a, SLOT1, slot, SLOT_LEN), 0);
                for (size_t k = 0; k < SLOT_LEN / FLASH_SECTOR_SIZE; k++) {
                        const uint8_t *got = slot + k * FLASH_SECTOR_SIZE;
                        cr_assert(sector_is(got, from, k, true) || sector_is(got, to, k, true),
                                  "round %u, sector %zu: neither image, nor a prefix of one then erased", round, k);
                }
                /* finish the interrupted update, then collect the garbage */
                cr_assert_eq(ota_write(a, SLOT1, to, IMAGE_LEN, round), 0);
                a = flash_close(a);
                cr_assert_eq(scan(devs, 1, SECTOR_STORE_SCAN_GC | SECTOR_STORE_SCAN_VERIFY, NULL, &st), 0);
                if (st.n_referenced != IMAGE_SECTORS) {
                        char cmd[600];
                        snprintf(cmd, sizeof cmd, "python3 -c \"import sys; d=open('%s/a/flash.bin.map','rb').read(); print([ (i-4096)//32 for i in range(4096,len(d),32) if any(d[i:i+32])], file=sys.stderr)\"", tmpdir);
                        (void) system(cmd);
                }
                cr_assert_eq(st.n_sectors - st.n_removed, IMAGE_SECTORS, "round %u: only the new image is left: %lu - %lu, %lu referenced", round,
                             (unsigned long) st.n_sectors, (unsigned long) st.n_removed, (unsigned long) st.n_referenced);
                cr_assert_eq(st.n_missing, 0);
                a = open_dev("a");
                cr_assert_eq(flash_read(a, SLOT1, slot, SLOT_LEN), 0);
                cr_assert_eq(memcmp(slot, to, IMAGE_LEN), 0);
                a = flash_close(a);
        }
}

Test(sector_store, failure_points_in_a_sector_write, .init = setup, .fini = teardown) {
        static const char *const devs[] = { "a0", "a1", "a2" };
        uint8_t sector[FLASH_SECTOR_SIZE], got[FLASH_SECTOR_SIZE];

        for (unsigned where = 0; where < 3; where++) {
                const char *dev = devs[where];
                Flash *a;
                SectorStore *s = NULL;
                SectorStoreStats st;

                a = create_dev(dev, true);
                memset(sector, 0x10 + where, sizeof sector);
                /* half now, in the file; the rest completes the sector */
                cr_assert_eq(flash_write(a, SLOT0, sector, 2048), 0);
                cr_assert_eq(sector_store_open(store_dir, 0, &s), 0);
                sector_store_set_fail_point(s, 0, where);
                cr_assert_eq(flash_write(a, SLOT0 + 2048, sector + 2048, 2048), -EIO);
                sector_store_unref(s);

                /* the write did not happen: the first half only */
                cr_assert_eq(flash_read(a, SLOT0, got, sizeof got), 0);
                cr_assert_eq(memcmp(got, sector, 2048), 0);
                for (size_t i = 2048; i < sizeof got; i++)
                        cr_assert_eq(got[i], 0xFF);
                a = flash_close(a);
                a = open_dev(dev);
                cr_assert_eq(flash_read(a, SLOT0, got, sizeof got), 0);
                cr_assert_eq(got[2048], 0xFF);
                /* and the retry succeeds */
                int rr = flash_write(a, SLOT0 + 2048, sector + 2048, 2048);
                cr_assert_eq(rr, 0, "where %u: retry: %s", where, strerror(-rr));
                cr_assert_eq(flash_read(a, SLOT0, got, sizeof got), 0);
                cr_assert_eq(memcmp(got, sector, sizeof got), 0);
                a = flash_close(a);

                cr_assert_eq(scan(devs, where + 1, SECTOR_STORE_SCAN_GC | SECTOR_STORE_SCAN_VERIFY, NULL, &st), 0);
                cr_assert_eq(st.n_missing, 0);
                cr_assert_eq(st.n_corrupt, 0);
                /* the half sector went into the store when a closed, the
                 * retry replaced it: garbage */
                cr_assert_eq(st.n_removed, 1);
                cr_assert_eq(st.n_referenced, where + 1);
                cr_assert_eq(st.n_tmp_removed, where < 2 ? 1 : 0, "where %u: the tmp file left by the failure", where);
        }
}

/* Injected power cuts (flash_set_power_cut) land the same bytes with and
 * without the store. */
Test(sector_store, injected_power_cuts_match_a_plain_flash, .init = setup, .fini = teardown) {
        _cleanup_free_ uint8_t *x = make_image(30), *y = make_image(31);
        _cleanup_(flash_closep) Flash *a = create_dev("a", true), *plain = create_dev("p", false);

        cr_assert_eq(ota_write(a, SLOT0, x, IMAGE_LEN, 1), 0);
        cr_assert_eq(ota_write(plain, SLOT0, x, IMAGE_LEN, 1), 0);
        for (int64_t cut = 0; cut < 80; cut += 7) {
                flash_set_power_cut(a, cut);
                flash_set_power_cut(plain, cut);
                int ra = ota_write(a, SLOT0, cut % 2 ? x : y, IMAGE_LEN, (uint64_t) cut);
                int rp = ota_write(plain, SLOT0, cut % 2 ? x : y, IMAGE_LEN, (uint64_t) cut);
                cr_assert_eq(ra, rp);
                cr_assert_eq(ra, -EIO);
                flash_power_restore(a);
                flash_power_restore(plain);
                assert_same(a, plain);
        }
        assert_same_export(a, plain);
}

/* sector_store_put_at(): a sector equal to the last one put at its hint is
 * found without hashing; anything else must still get the id of its own
 * content, whatever the hint saw before. */
Test(sector_store, put_at_finds_the_id_of_the_content, .init = setup, .fini = teardown) {
        _cleanup_free_ uint8_t *a = malloc(FLASH_SECTOR_SIZE), *b = malloc(FLASH_SECTOR_SIZE);
        uint8_t got[FLASH_SECTOR_SIZE];
        uint32_t id_a, id_b, id;
        SectorStore *s = NULL;

        cr_assert_not_null(a);
        cr_assert_not_null(b);
        memset(a, 0x5A, FLASH_SECTOR_SIZE);
        memcpy(b, a, FLASH_SECTOR_SIZE);
        b[FLASH_SECTOR_SIZE - 1] ^= 1;     /* differs in its last byte only */
        cr_assert_eq(sector_store_open(store_dir, SECTOR_STORE_CREATE, &s), 0);

        cr_assert_eq(sector_store_put(s, a, &id_a), 0);
        cr_assert_eq(sector_store_put(s, b, &id_b), 0);
        cr_assert_neq(id_a, id_b);

        cr_assert_eq(sector_store_put_at(s, 7, a, &id), 0);
        cr_assert_eq(id, id_a);
        cr_assert_eq(sector_store_put_at(s, 7, a, &id), 0);      /* compared */
        cr_assert_eq(id, id_a);
        cr_assert_eq(sector_store_put_at(s, 7, b, &id), 0);      /* the hint saw a */
        cr_assert_eq(id, id_b);
        cr_assert_eq(sector_store_put_at(s, 7, a, &id), 0);      /* and now b */
        cr_assert_eq(id, id_a);
        /* another hint in the same slot (modulo the table) */
        cr_assert_eq(sector_store_put_at(s, 7 + SECTOR_STORE_RECENT_SLOTS, b, &id), 0);
        cr_assert_eq(id, id_b);
        cr_assert_eq(sector_store_put_at(s, 7, a, &id), 0);
        cr_assert_eq(id, id_a);
        /* a sector new to the store, first through a hint */
        memset(b, 0xA5, FLASH_SECTOR_SIZE);
        cr_assert_eq(sector_store_put_at(s, 8, b, &id), 0);
        cr_assert_neq(id, id_a);
        cr_assert_eq(sector_store_put_at(s, 8, b, &id_b), 0);
        cr_assert_eq(id_b, id);
        cr_assert_eq(sector_store_read(s, id_b, 0, got, sizeof got), 0);
        cr_assert_arr_eq(got, b, FLASH_SECTOR_SIZE);
        cr_assert_eq(sector_store_read(s, id_a, 0, got, sizeof got), 0);
        cr_assert_arr_eq(got, a, FLASH_SECTOR_SIZE);
        sector_store_unref(s);
}

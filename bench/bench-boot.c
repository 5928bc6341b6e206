/* SPDX-License-Identifier: MIT */
/* Boot verification of a fleet that runs one image (issue #16 §5, issue #10
 * "Boot"): boot_run() on M provisioned-like devices, first without a boot
 * cache (every device hashes the image and checks its RSA-3072 signature),
 * then with one BootCache for all of them, as a worker process would keep.
 *
 *   [BENCH_BOOT_STORE=1] bench-boot [M] [IMAGE_SIZE] [DIR]
 *                                         with BENCH_BOOT_STORE the app slots live in a sector store
 *                                         (flash.h), so a cache hit matches on the slot's fingerprint     defaults: 2000 devices, the provisioned
 *                                         firmware (smallest image), $TMPDIR or /tmp
 *
 * Each device is what `espfleet provision` writes: a 4 MiB sparse flash with
 * the signed image in ota_0 and otadata {seq 1, VALID}, and a C3 eFuse with
 * SECURE_BOOT_EN and DIGEST0 = the signing key. The image is built and
 * signed once, so every flash holds the same bytes. CPU time is that of the
 * boot_run() calls only (flash files are opened before, closed after); both
 * runs boot the same files, and their log lines are compared device by device. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "dsemu/efuse.h"
#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "image/app-image.h"
#include "image/sbv2.h"
#include "ota/boot-cache.h"
#include "ota/boot.h"

static double cpu_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int die(const char *what, int r) {
        fprintf(stderr, "bench-boot: %s: %s\n", what, esp_err_to_name(r));
        return 1;
}

/* FNV-1a over a boot's log lines, to compare the two runs. */
static uint64_t log_hash(const BootResult *r) {
        uint64_t h = 0xcbf29ce484222325ull;

        for (size_t i = 0; i < r->n_log; i++)
                for (const char *p = r->log[i]; ; p++) {
                        h = (h ^ (uint8_t) *p) * 0x100000001b3ull;
                        if (!*p)
                                break;
                }
        return h;
}

static int write_device(const char *path, const PartitionTable *t, const uint8_t *img, size_t len) {
        _cleanup_(flash_closep) Flash *f = NULL;
        const Partition *ota0 = partition_table_find_ota(t, 0);
        FlashRegion r;
        int k;

        k = flash_open(path, FLASH_OPEN_CREATE, FLASH_DEFAULT_SIZE, &f);
        if (k < 0)
                return k;
        if (getenv("BENCH_BOOT_STORE")) {
                /* the app slots in one sector store next to the images, as
                 * provisioning does for a fleet (issue #10) */
                FlashRange ranges[FLASH_MAX_STORE_RANGES];
                size_t n = 0;
                for (size_t i = 0; i < partition_table_count(t) && n < ELEMENTSOF(ranges); i++) {
                        const Partition *p = partition_table_get(t, i);
                        if (p->type == PARTITION_TYPE_APP)
                                ranges[n++] = (FlashRange) { p->offset, p->size };
                }
                k = flash_enable_store(f, "store", ranges, n);
                if (k < 0)
                        return k;
        }
        r = partition_region(f, ota0);
        k = flash_region_erase(&r, 0, ALIGN_TO(len, FLASH_SECTOR_SIZE));
        if (k < 0)
                return k;
        k = flash_region_write(&r, 0, img, len);
        if (k < 0)
                return k;
        return boot_init_otadata(f, t, 0, OTA_IMG_VALID);
}

typedef struct Run {
        double cpu;
        uint64_t *hashes;        /* per device */
} Run;

/* Boots every device once; the CPU time of the boot_run() calls goes to run->cpu. */
static int boot_all(const char *dir, unsigned m, const PartitionTable *t, Efuse **efuses, BootCache *cache, Run *run,
                    const uint64_t *expect) {
        BootOptions o = { .cache = cache };
        char path[512];

        run->cpu = 0;
        for (unsigned i = 0; i < m; i++) {
                _cleanup_(flash_closep) Flash *f = NULL;
                BootResult res = {};
                double t0;
                int k;

                snprintf(path, sizeof path, "%s/dev%05u.bin", dir, i);
                k = flash_open(path, 0, 0, &f);
                if (k < 0)
                        return die("flash_open", k);
                t0 = cpu_now();
                k = boot_run(f, t, efuses[i], &o, &res);
                run->cpu += cpu_now() - t0;
                if (k < 0 || res.app.slot != 0) {
                        boot_result_done(&res);
                        return die("boot_run", k < 0 ? k : -EBADMSG);
                }
                run->hashes[i] = log_hash(&res);
                boot_result_done(&res);
                if (expect && expect[i] != run->hashes[i]) {
                        fprintf(stderr, "bench-boot: device %u: the boot log differs with the cache\n", i);
                        return 1;
                }
        }
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(partition_table_freep) PartitionTable *table = NULL;
        _cleanup_(boot_cache_freep) BootCache *cache = NULL;
        _cleanup_free_ uint8_t *img = NULL, *signed_img = NULL;
        _cleanup_free_ uint64_t *plain_hashes = NULL, *cached_hashes = NULL;
        _cleanup_free_ Efuse **efuses = NULL;
        uint64_t m = 2000, size = 0;
        uint8_t digest[32];
        size_t len, signed_len;
        char dir[256], path[512], err[256] = "";
        const char *tmp;
        EVP_PKEY *key = NULL;
        Run plain, cached;
        int k, ret = 1;

        if (argc > 1 && (safe_atou64(argv[1], 10, &m) < 0 || m == 0 || m > 100000)) {
                fprintf(stderr, "bench-boot: M '%s': 1..100000\n", argv[1]);
                return 1;
        }
        if (argc > 2 && parse_size(argv[2], &size) < 0) {
                fprintf(stderr, "bench-boot: IMAGE_SIZE '%s': a size such as 1M\n", argv[2]);
                return 1;
        }
        tmp = argc > 3 ? argv[3] : getenv("TMPDIR") ?: "/tmp";
        snprintf(dir, sizeof dir, "%s/bench-boot.XXXXXX", tmp);
        if (!mkdtemp(dir))
                return die("mkdtemp", -errno);

        k = partition_table_from_csv(partition_table_default_csv(), "default", &table, err, sizeof err);
        if (k < 0) {
                fprintf(stderr, "bench-boot: partition table: %s\n", err);
                goto out;
        }
        /* the fleet's Secure Boot V2 key (pki.c) and the provisioned firmware (provision.c) */
        k = sbv2_generate_key(SBV2_KEY_RSA3072, &key);
        if (k >= 0)
                k = sbv2_key_digest(key, digest);
        if (k < 0) {
                die("signing key", k);
                goto out;
        }
        k = app_image_build(&(AppImageParams) { .chip_id = ESP_CHIP_ID_ESP32C3, .version = "1.0.0",
                                                .project_name = "secure_esp", .size = size },
                            &img, &len, err, sizeof err);
        if (k >= 0)
                k = sbv2_sign_file(key, img, len, &signed_img, &signed_len, err, sizeof err);
        if (k < 0) {
                fprintf(stderr, "bench-boot: image: %s\n", err);
                goto out;
        }

        efuses = calloc(m, sizeof *efuses);
        plain_hashes = calloc(m, sizeof *plain_hashes);
        cached_hashes = calloc(m, sizeof *cached_hashes);
        if (!efuses || !plain_hashes || !cached_hashes) {
                die("calloc", -ENOMEM);
                goto out;
        }
        for (unsigned i = 0; i < m; i++) {
                k = efuse_new(ESP_CHIP_ESP32C3, &efuses[i]);
                if (k >= 0)
                        k = efuse_burn_key(efuses[i], 0, digest, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0, false);
                if (k >= 0)
                        k = efuse_burn_field(efuses[i], "SECURE_BOOT_EN", 1);
                if (k >= 0) {
                        snprintf(path, sizeof path, "%s/dev%05u.bin", dir, i);
                        k = write_device(path, table, signed_img, signed_len);
                }
                if (k < 0) {
                        die("device", k);
                        goto out;
                }
        }

        k = boot_cache_new(0, 0, &cache);
        if (k < 0) {
                die("boot_cache_new", k);
                goto out;
        }
        plain.hashes = plain_hashes;
        cached.hashes = cached_hashes;
        if (boot_all(dir, (unsigned) m, table, efuses, NULL, &plain, NULL) != 0 ||
            boot_all(dir, (unsigned) m, table, efuses, cache, &cached, plain_hashes) != 0)
                goto out;

        printf("boot %" PRIu64 " devices, one %zu-byte image signed with RSA-3072 (secure boot on)\n", m, signed_len);
        printf("  %-12s %8.3f s CPU  %8.1f us/device  %7.2f s per 10,000 devices\n", "no cache", plain.cpu,
               plain.cpu / (double) m * 1e6, plain.cpu / (double) m * 10000);
        printf("  %-12s %8.3f s CPU  %8.1f us/device  %7.2f s per 10,000 devices  (%" PRIu64 " hits, %" PRIu64
               " misses)\n", "boot cache", cached.cpu, cached.cpu / (double) m * 1e6, cached.cpu / (double) m * 10000,
               boot_cache_hits(cache), boot_cache_misses(cache));
        printf("  speed-up %.1fx; boot logs identical for all %" PRIu64 " devices\n",
               cached.cpu > 0 ? plain.cpu / cached.cpu : 0, m);
        ret = 0;

out:
        for (unsigned i = 0; efuses && i < m; i++) {
                efuse_free(efuses[i]);
                snprintf(path, sizeof path, "%s/dev%05u.bin", dir, i);
                (void) unlink(path);
                snprintf(path, sizeof path, "%s/dev%05u.bin.map", dir, i);
                (void) unlink(path);
        }
        if (getenv("BENCH_BOOT_STORE")) {
                char cmd[600];
                snprintf(cmd, sizeof cmd, "rm -rf '%s/store'", dir);
                (void) system(cmd);
        }
        (void) rmdir(dir);
        EVP_PKEY_free(key);
        return ret;
}

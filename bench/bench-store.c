/* SPDX-License-Identifier: MIT */
/* Disk of a fleet updated to one image (issue #10 "Disk"): N device flashes
 * of the default layout (4 MiB, ota_0 and ota_1 of 1.5 MiB each) with their
 * app slots in one sector store, each holding the same provisioned firmware
 * in ota_0 and then updated, in an OTA writer's pattern (each sector erased
 * just before the write reaches it, chunks of 1 to 16 KiB that differ per
 * device), to the same image in ota_1. Then the same for N_PLAIN devices
 * without a store, as the baseline in the same run.
 *
 *   bench-store [N] [IMAGE_SIZE] [DIR]     defaults: 20000, 1 MiB, $TMPDIR or /tmp
 *
 * Disk is st_blocks: the store's sector files, and per device flash.bin
 * (what is not in the store: here the nvs-like sector each device writes)
 * plus flash.bin.map. Reads of every device are compared with the image. */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "flash/flash.h"
#include "flash/sector-store.h"

#define OTA0 0x20000u
#define OTA1 0x1A0000u
#define SLOT 0x180000u
#define FACTORY_LEN (8u * 1024u + 512u)

static double now(int clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static uint64_t rng(uint64_t *s) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static uint64_t blocks_of(const char *path) {
        struct stat st;
        return stat(path, &st) >= 0 ? (uint64_t) st.st_blocks * 512 : 0;
}

static uint64_t dir_blocks(const char *path) {
        DIR *d = opendir(path);
        struct dirent *de;
        uint64_t n = 0;
        char p[4400];

        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
                        n += blocks_of(p);
                }
        closedir(d);
        return n;
}

static int ota_write(Flash *f, uint32_t slot, const uint8_t *img, size_t len, uint64_t seed) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
        size_t done = 0, erased = 0;
        int r;

        while (done < len) {
                size_t n = (size_t) (1024 + rng(&s) % (15 * 1024));
                n = MIN(n, len - done);
                while (erased < done + n) {
                        r = flash_erase(f, slot + (uint32_t) erased, FLASH_SECTOR_SIZE);
                        if (r < 0)
                                return r;
                        erased += FLASH_SECTOR_SIZE;
                }
                r = flash_write(f, slot + (uint32_t) (done), img + done, n);
                if (r < 0)
                        return r;
                done += n;
        }
        return 0;
}

typedef struct Run {
        double cpu, wall;
        uint64_t dev_bytes, map_bytes, store_bytes;
} Run;

static int run(const char *dir, unsigned n, bool store, const uint8_t *factory, const uint8_t *img, size_t len, Run *ret) {
        const FlashRange ranges[] = { { OTA0, SLOT }, { OTA1, SLOT } };
        char path[4096];
        uint8_t *back = malloc(len);
        double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
        int r;

        if (!back)
                return -ENOMEM;
        *ret = (Run) {};
        for (unsigned i = 0; i < n; i++) {
                Flash *f = NULL;

                snprintf(path, sizeof path, "%s/dev%u", dir, i);
                if (mkdir(path, 0700) < 0 && errno != EEXIST)
                        return -errno;
                snprintf(path, sizeof path, "%s/dev%u/flash.bin", dir, i);
                r = flash_open(path, FLASH_OPEN_CREATE, FLASH_DEFAULT_SIZE, &f);
                if (r >= 0 && store)
                        r = flash_enable_store(f, "../store", ranges, ELEMENTSOF(ranges));
                /* one sector of its own, as NVS would be */
                if (r >= 0)
                        r = flash_write(f, 0x9000, &i, sizeof i);
                if (r >= 0)
                        r = ota_write(f, OTA0, factory, FACTORY_LEN, i);
                if (r >= 0)
                        r = ota_write(f, OTA1, img, len, i + 1000003u);
                if (r >= 0)
                        flash_release_fd(f);    /* the device goes idle */
                if (r >= 0 && i % 97 == 0) {
                        r = flash_read(f, OTA1, back, len);
                        if (r >= 0 && memcmp(back, img, len) != 0)
                                r = -EBADMSG;
                }
                flash_close(f);
                if (r < 0) {
                        free(back);
                        return r;
                }
        }
        ret->cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
        ret->wall = now(CLOCK_MONOTONIC) - w0;
        free(back);

        for (unsigned i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/dev%u/flash.bin", dir, i);
                ret->dev_bytes += blocks_of(path);
                snprintf(path, sizeof path, "%s/dev%u/flash.bin.map", dir, i);
                ret->map_bytes += blocks_of(path);
        }
        snprintf(path, sizeof path, "%s/store/sectors", dir);
        ret->store_bytes = dir_blocks(path);
        return 0;
}

static void print(const char *what, unsigned n, size_t len, const Run *r) {
        uint64_t total = r->dev_bytes + r->map_bytes + r->store_bytes;

        printf("| %s | %u | %.0f | %.1f | %.1f | %.1f | %.2f × | %.2f s (%.0f µs/device) |\n", what, n,
               r->store_bytes / 1024.0, r->dev_bytes / 1024.0 / n, r->map_bytes / 1024.0 / n, total / 1048576.0,
               total / (double) len, r->cpu, r->cpu / n * 1e6);
}

int main(int argc, char **argv) {
        uint32_t n = 20000, n_plain;
        uint64_t size = 1024 * 1024;
        char dir[4096], sub[4200];
        uint8_t *img, factory[FACTORY_LEN];
        uint64_t s = 42;
        Run with, without;
        int r;

        if (argc > 1 && (safe_atou32(argv[1], 10, &n) < 0 || n == 0))
                return fprintf(stderr, "bench-store: bad N '%s'\n", argv[1]), 2;
        if (argc > 2 && (parse_size(argv[2], &size) < 0 || size == 0 || size > SLOT))
                return fprintf(stderr, "bench-store: bad size '%s'\n", argv[2]), 2;
        snprintf(dir, sizeof dir, "%s/bench-store-XXXXXX", argc > 3 ? argv[3] : getenv("TMPDIR") ?: "/tmp");
        if (!mkdtemp(dir))
                return perror("mkdtemp"), 1;
        n_plain = MIN(n, 1000u);

        img = malloc(size);
        if (!img)
                return 1;
        for (size_t i = 0; i < size; i++)
                img[i] = (uint8_t) rng(&s);
        for (size_t i = 0; i < sizeof factory; i++)
                factory[i] = (uint8_t) rng(&s);

        snprintf(sub, sizeof sub, "%s/with", dir);
        mkdir(sub, 0700);
        r = run(sub, n, true, factory, img, size, &with);
        if (r < 0)
                return fprintf(stderr, "bench-store: with the store: %s\n", esp_err_to_name(r)), 1;
        snprintf(sub, sizeof sub, "%s/without", dir);
        mkdir(sub, 0700);
        r = run(sub, n_plain, false, factory, img, size, &without);
        if (r < 0)
                return fprintf(stderr, "bench-store: without: %s\n", esp_err_to_name(r)), 1;

        printf("`bench-store %u %" PRIu64 "`: a %" PRIu64 "-byte image in ota_1, an %u-byte firmware in ota_0\n\n", n, size,
               size, FACTORY_LEN);
        printf("| flash | devices | store KiB | flash.bin KiB/device | map KiB/device | total MiB | total / image | CPU to provision + update |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        print("sector store", n, size, &with);
        print("plain sparse file", n_plain, size, &without);
        printf("\nwith the store, %u devices: %.2f × the image size in all; without, %.2f × per device\n", n,
               (with.dev_bytes + with.map_bytes + with.store_bytes) / (double) size,
               (without.dev_bytes + without.map_bytes + without.store_bytes) / (double) size / n_plain);
        snprintf(sub, sizeof sub, "rm -rf '%s'", dir);
        return system(sub) == 0 ? 0 : 1;
}

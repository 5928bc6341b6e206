/* SPDX-License-Identifier: MIT */
/* NVS benchmark (issue #4): set and get operations per second on a 24 KiB
 * partition in an emulated flash file (so every set pays its real flash
 * writes, bitmap updates and garbage collection), and the time to open a
 * full 24 KiB partition (read, CRC-check and index every page).
 *
 *   bench-nvs [SECONDS] [DIR]     defaults: 2 s per measurement, $TMPDIR or /tmp
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "flash/flash.h"
#include "nvs/nvs.h"

#define PART_SIZE 0x6000u

static double now(clockid_t c) {
        struct timespec ts;
        clock_gettime(c, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct Meter {
        double wall, cpu;
        uint64_t ops;
} Meter;

static void meter_start(Meter *m) {
        m->wall = now(CLOCK_MONOTONIC);
        m->cpu = now(CLOCK_PROCESS_CPUTIME_ID);
        m->ops = 0;
}

static void meter_report(const Meter *m, const char *what) {
        double wall = now(CLOCK_MONOTONIC) - m->wall, cpu = now(CLOCK_PROCESS_CPUTIME_ID) - m->cpu;
        printf("%-44s %10.0f ops/s wall  %10.0f ops/s cpu  (%" PRIu64 " ops in %.2f s)\n", what, m->ops / wall,
               cpu > 0 ? m->ops / cpu : 0, m->ops, wall);
}

static int die(const char *what, int r) {
        fprintf(stderr, "bench-nvs: %s: %s\n", what, esp_err_to_name(r));
        return 1;
}

static int bench_sets(Flash *f, const NvsXtsKeys *keys, double seconds, const char *label) {
        FlashRegion region = { .flash = f, .offset = 0, .size = PART_SIZE };
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        _cleanup_(nvs_handle_closep) NvsHandle *h = NULL;
        char key[16], what[64];
        Meter m;
        int r;

        r = nvs_erase_region(&region);
        if (r < 0)
                return die("erase", r);
        r = nvs_open_region(&region, keys, 0, &nvs);
        if (r < 0)
                return die("open", r);
        r = nvs_handle_open(nvs, "bench", NVS_READWRITE, &h);
        if (r < 0)
                return die("namespace", r);

        /* u32 updates over 32 keys: each is a new entry + erase of the old one,
         * with garbage collection every ~100 sets */
        meter_start(&m);
        do {
                for (unsigned i = 0; i < 256; i++, m.ops++) {
                        snprintf(key, sizeof key, "k%u", (unsigned) (m.ops % 32));
                        r = nvs_set_u32(h, key, (uint32_t) m.ops);
                        if (r < 0)
                                return die("set_u32", r);
                }
        } while (now(CLOCK_MONOTONIC) - m.wall < seconds);
        snprintf(what, sizeof what, "set u32 (%s)", label);
        meter_report(&m, what);

        meter_start(&m);
        do {
                for (unsigned i = 0; i < 256; i++, m.ops++) {
                        uint32_t v;
                        snprintf(key, sizeof key, "k%u", (unsigned) (m.ops % 32));
                        r = nvs_get_u32(h, key, &v);
                        if (r < 0)
                                return die("get_u32", r);
                }
        } while (now(CLOCK_MONOTONIC) - m.wall < seconds);
        snprintf(what, sizeof what, "get u32 (%s)", label);
        meter_report(&m, what);

        meter_start(&m);
        do {
                for (unsigned i = 0; i < 64; i++, m.ops++) {
                        char val[64];
                        snprintf(key, sizeof key, "s%u", (unsigned) (m.ops % 8));
                        snprintf(val, sizeof val, "https://192.168.0.10:8070/fw-%" PRIu64 ".bin", m.ops);
                        r = nvs_set_str(h, key, val);
                        if (r < 0)
                                return die("set_str", r);
                }
        } while (now(CLOCK_MONOTONIC) - m.wall < seconds);
        snprintf(what, sizeof what, "set 40-byte string (%s)", label);
        meter_report(&m, what);
        return 0;
}

static int bench_open_full(Flash *f, double seconds) {
        FlashRegion region = { .flash = f, .offset = 0, .size = PART_SIZE };
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        NvsStats st;
        char key[16];
        unsigned n = 0;
        Meter m;
        int r;

        r = nvs_erase_region(&region);
        if (r < 0)
                return die("erase", r);
        r = nvs_open_region(&region, NULL, 0, &nvs);
        if (r < 0)
                return die("open", r);
        r = nvs_handle_open(nvs, "bench", NVS_READWRITE, &h);
        if (r < 0)
                return die("namespace", r);
        /* fill it: a few strings and blobs, then u32 keys until no room is left */
        for (unsigned i = 0; i < 8; i++) {
                char val[200];
                memset(val, 'a' + i, sizeof val - 1);
                val[sizeof val - 1] = 0;
                snprintf(key, sizeof key, "str%u", i);
                if ((r = nvs_set_str(h, key, val)) < 0)
                        return die("fill str", r);
                snprintf(key, sizeof key, "blob%u", i);
                if ((r = nvs_set_blob(h, key, val, 150)) < 0)
                        return die("fill blob", r);
        }
        for (;; n++) {
                snprintf(key, sizeof key, "u%u", n);
                r = nvs_set_u32(h, key, n);
                if (r == -ESP_ERR_NVS_NOT_ENOUGH_SPACE)
                        break;
                if (r < 0)
                        return die("fill", r);
        }
        (void) nvs_get_stats(nvs, &st);
        nvs_handle_close(h);
        nvs_close(nvs);

        meter_start(&m);
        do {
                r = nvs_open_region(&region, NULL, NVS_OPEN_READ_ONLY, &nvs);
                if (r < 0)
                        return die("reopen", r);
                nvs_close(nvs);
                m.ops++;
        } while (now(CLOCK_MONOTONIC) - m.wall < seconds);
        double wall = now(CLOCK_MONOTONIC) - m.wall, cpu = now(CLOCK_PROCESS_CPUTIME_ID) - m.cpu;
        printf("%-44s %10.1f us wall  %10.1f us cpu  (%" PRIu64 " opens; %zu of %zu entries used, %u u32 keys)\n",
               "open full 24 KiB partition", wall / m.ops * 1e6, cpu / m.ops * 1e6, m.ops, st.used_entries,
               st.total_entries, n);
        return 0;
}

int main(int argc, char **argv) {
        const char *dir = getenv("TMPDIR") ?: "/tmp";
        double seconds = 2;
        char path[4096];
        Flash *f = NULL;
        NvsXtsKeys keys;
        uint64_t s;
        int fd, r;

        if (argc > 1) {
                if (safe_atou64(argv[1], 10, &s) < 0 || s == 0 || s > 3600) {
                        fprintf(stderr, "bench-nvs: SECONDS must be 1…3600, not '%s'\n", argv[1]);
                        return 2;
                }
                seconds = (double) s;
        }
        if (argc > 2)
                dir = argv[2];
        snprintf(path, sizeof path, "%s/bench-nvs-XXXXXX", dir);
        fd = mkstemp(path);
        if (fd < 0) {
                perror("bench-nvs: mkstemp");
                return 1;
        }
        close(fd);
        unlink(path);
        r = flash_open(path, FLASH_OPEN_CREATE, PART_SIZE, &f);
        if (r < 0)
                return die(path, r);

        printf("espfleet NVS benchmark: 24 KiB partition in an emulated flash file (%s), %.0f s per measurement\n",
               path, seconds);
        r = bench_sets(f, NULL, seconds, "plain");
        if (r == 0 && nvs_keys_generate(&keys) == 0)
                r = bench_sets(f, &keys, seconds, "XTS-encrypted");
        if (r == 0)
                r = bench_open_full(f, seconds);
        printf("flash operations issued: %" PRIu64 "\n", flash_write_count(f));
        flash_close(f);
        unlink(path);
        return r;
}

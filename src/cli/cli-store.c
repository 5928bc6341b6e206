/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "cli/cli.h"
#include "flash/sector-store.h"
#include "fleet/fleet-dir.h"

static void store_help(void) {
        printf("Usage: espfleet store stat FLEETDIR [--verify]\n"
               "       espfleet store gc FLEETDIR\n\n"
               "The fleet's content-addressed sector store (FLEETDIR/store): each distinct 4 KiB sector\n"
               "of the devices' app slots, once. The device maps (devices/<id>/flash.bin.map) say\n"
               "which sector each slot holds.\n\n"
               "  stat     sectors stored, referenced and missing, map entries, disk used;\n"
               "           --verify also hashes every stored sector\n"
               "  gc       removes the sectors no device holds any more; refused while a daemon\n"
               "           runs the fleet\n");
}

static void print_stats(const SectorStoreStats *st, uint64_t map_bytes, size_t n_devices) {
        printf("sectors stored:      %" PRIu64 " (%" PRIu64 " KiB on disk)\n", st->n_sectors, st->disk_bytes / 1024);
        printf("sectors referenced:  %" PRIu64 "\n", st->n_referenced);
        printf("map entries:         %" PRIu64 " over %zu devices\n", st->n_refs, n_devices);
        printf("device maps on disk: %" PRIu64 " KiB\n", map_bytes / 1024);
        if (st->n_missing > 0)
                printf("MISSING:             %" PRIu64 " map entries name a sector the store lacks\n", st->n_missing);
        if (st->n_corrupt > 0)
                printf("CORRUPT:             %" PRIu64 " sectors do not hash to their name\n", st->n_corrupt);
        if (st->n_removed > 0 || st->n_tmp_removed > 0)
                printf("removed:             %" PRIu64 " sectors, %" PRIu64 " tmp files\n", st->n_removed, st->n_tmp_removed);
}

int verb_store(int argc, char **argv) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        SectorStoreScanFlags flags = 0;
        SectorStoreStats st = {};
        uint64_t map_bytes = 0;
        char err[512] = "";
        int r;

        if (argc < 3 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                store_help();
                return argc < 2 ? 2 : 0;
        }
        if (streq(argv[1], "gc"))
                flags |= SECTOR_STORE_SCAN_GC;
        else if (!streq(argv[1], "stat")) {
                log_error("Unknown 'store' command '%s'. See 'espfleet store --help'.", argv[1]);
                return 2;
        }
        for (int i = 3; i < argc; i++) {
                if (streq(argv[i], "--verify"))
                        flags |= SECTOR_STORE_SCAN_VERIFY;
                else {
                        log_error("Unknown option '%s'. See 'espfleet store --help'.", argv[i]);
                        return 2;
                }
        }
        r = fleet_open(argv[2], &f, err, sizeof err);
        if (r < 0) {
                log_error("%s", *err ? err : esp_err_to_name(r));
                return 1;
        }
        r = fleet_store_scan(f, flags, &st, &map_bytes);
        if (r == -EBUSY) {
                log_error("%s/" FLEET_STORE_DIR " is in use (a daemon runs the fleet): not collecting garbage.", argv[2]);
                return 1;
        }
        if (r < 0) {
                log_error_errno(r, "%s/" FLEET_STORE_DIR ": %m", argv[2]);
                return 1;
        }
        print_stats(&st, map_bytes, fleet_n_devices(f));
        return st.n_missing > 0 || st.n_corrupt > 0 ? 1 : 0;
}

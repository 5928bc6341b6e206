/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "cli/cli.h"
#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"

static void flash_help(void) {
        printf("Usage: espfleet flash info DEVICE\n"
               "       espfleet flash export DEVICE OUT.bin\n\n"
               "The emulated SPI NOR flash of a device (a sparse raw image, byte i = address i).\n\n"
               "  info     size, disk actually used, the partitions with their offsets, sizes and\n"
               "           disk use, and the otadata boot selection\n"
               "  export   writes a dense copy (holes as 0xFF) for QEMU or esptool\n\n"
               "DEVICE is a device directory with flash.bin, FLEETDIR/ID, or a flash image file.\n");
}

/* A device directory, FLEETDIR/ID, or the image file itself. */
static char *resolve_image(const char *arg) {
        _cleanup_free_ char *devdir = NULL;
        struct stat st;
        char err[512] = "", *p;

        if (stat(arg, &st) >= 0) {
                if (!S_ISDIR(st.st_mode))
                        return strdup(arg);
                if (asprintf(&p, "%s/" FLEET_DEVICE_FLASH_FILE, arg) < 0)
                        return NULL;
                return p;
        }
        devdir = fleet_resolve_device_arg(arg, err, sizeof(err));
        if (!devdir) {
                log_error("%s", *err ? err : "Cannot resolve the device.");
                return NULL;
        }
        if (asprintf(&p, "%s/" FLEET_DEVICE_FLASH_FILE, devdir) < 0)
                return NULL;
        return p;
}

static int open_image(const char *arg, Flash **ret) {
        _cleanup_free_ char *image = resolve_image(arg);
        int r;

        if (!image)
                return -ENOENT;
        r = flash_open(image, FLASH_OPEN_READ_ONLY, 0, ret);
        if (r == -EBADMSG)
                log_error("%s: not a flash image (its size is not a non-zero multiple of 4 KiB).", image);
        else if (r < 0)
                log_error_errno(r, "%s: cannot open the flash image: %m", image);
        return r;
}

static void format_bytes(uint64_t v, char *buf, size_t size) {
        if (v >= 1024 * 1024 && v % (1024 * 1024) == 0)
                snprintf(buf, size, "%" PRIu64 " MiB", v / (1024 * 1024));
        else if (v >= 1024 && v % 1024 == 0)
                snprintf(buf, size, "%" PRIu64 " KiB", v / 1024);
        else
                snprintf(buf, size, "%" PRIu64 " B", v);
}

static void print_otadata(Flash *f, const PartitionTable *t) {
        const Partition *p = partition_table_find(t, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_OTA);
        unsigned n = partition_table_ota_count(t);
        FlashRegion r;
        Otadata d;
        int k;

        if (!p)
                return;
        r = partition_region(f, p);
        k = otadata_read(&r, &d);
        if (k < 0) {
                printf("\notadata: cannot read: %s\n", esp_err_to_name(k));
                return;
        }
        printf("\notadata (%s at 0x%" PRIx32 "):\n", p->name, p->offset);
        for (unsigned i = 0; i < 2; i++) {
                const OtaSelectEntry *e = d.entry + i;
                const char *state = ota_img_state_to_string(e->ota_state);

                if (e->ota_seq == OTADATA_SEQ_BLANK) {
                        printf("  entry %u: empty\n", i);
                        continue;
                }
                printf("  entry %u: seq %" PRIu32 ", state %s", i, e->ota_seq, state ?: "unknown");
                if (!state)
                        printf(" (0x%" PRIx32 ")", e->ota_state);
                if (e->crc != otadata_seq_crc(e->ota_seq))
                        printf(", bad CRC");
                printf("%s\n", d.valid[i] ? "" : ", not valid");
        }
        k = otadata_boot_slot(&d, n);
        if (k >= 0)
                printf("  selected: entry %d -> ota_%d\n", d.active, k);
        else
                printf("  selected: none (the bootloader falls back to factory or ota_0)\n");
}

static int info_main(int argc, char **argv) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        _cleanup_(flash_closep) Flash *f = NULL;
        char err[768] = "", a[32], b[32];
        uint64_t used = 0;
        struct stat st;
        int r;

        if (argc != 2) {
                log_error("flash info takes one DEVICE. See 'espfleet flash --help'.");
                return 2;
        }
        if (open_image(argv[1], &f) < 0)
                return 1;

        if (stat(flash_path(f), &st) < 0)
                return log_error_errno(errno, "%s: %m", flash_path(f)), 1;
        format_bytes(flash_size(f), a, sizeof(a));
        format_bytes((uint64_t) st.st_blocks * 512, b, sizeof(b));
        printf("Image:    %s\n", flash_path(f));
        printf("Size:     0x%" PRIx32 " (%s)\n", flash_size(f), a);
        printf("On disk:  %" PRIu64 " bytes (%s)\n", (uint64_t) st.st_blocks * 512, b);

        r = partition_table_load(f, &t, err, sizeof(err));
        if (r < 0) {
                log_error("%s", err);
                return 1;
        }

        printf("\nPartition table at 0x%x: %zu entries, %u OTA slots\n", PARTITION_TABLE_OFFSET,
               partition_table_count(t), partition_table_ota_count(t));
        printf("  %-16s %-6s %-9s %-10s %-10s %-10s %s\n", "Name", "Type", "SubType", "Offset", "Size", "On disk",
               "Flags");
        for (size_t i = 0; i < partition_table_count(t); i++) {
                const Partition *p = partition_table_get(t, i);
                const char *type = partition_type_to_string(p->type);
                const char *subtype = partition_subtype_to_string(p->type, p->subtype);
                char tbuf[8], sbuf[8], off[16], size[16], disk[24];

                snprintf(tbuf, sizeof(tbuf), "0x%02x", p->type);
                snprintf(sbuf, sizeof(sbuf), "0x%02x", p->subtype);
                snprintf(off, sizeof(off), "0x%" PRIx32, p->offset);
                snprintf(size, sizeof(size), "0x%" PRIx32, p->size);
                if (flash_allocated_bytes(f, p->offset, p->size, &used) >= 0)
                        snprintf(disk, sizeof(disk), "%" PRIu64, used);
                else
                        snprintf(disk, sizeof(disk), "beyond end");
                printf("  %-16s %-6s %-9s %-10s %-10s %-10s %s%s%s\n", p->name, type ?: tbuf, subtype ?: sbuf, off, size,
                       disk, p->flags & PARTITION_FLAG_ENCRYPTED ? "encrypted" : "",
                       (p->flags & PARTITION_FLAG_ENCRYPTED) && (p->flags & PARTITION_FLAG_READONLY) ? "," : "",
                       p->flags & PARTITION_FLAG_READONLY ? "readonly" : "");
        }
        if (flash_has_store(f)) {
                printf("\nIn the fleet's sector store (flash.bin.map, not on disk above):\n");
                for (size_t i = 0; i < partition_table_count(t); i++) {
                        const Partition *p = partition_table_get(t, i);
                        if (flash_mapped_bytes(f, p->offset, p->size, &used) >= 0 && used > 0)
                                printf("  %-16s %" PRIu64 " bytes\n", p->name, used);
                }
        }
        if (partition_table_end(t) > flash_size(f))
                printf("Warning: the partitions end at 0x%" PRIx32 ", beyond the end of the flash.\n",
                       partition_table_end(t));

        print_otadata(f, t);
        return 0;
}

static int export_main(int argc, char **argv) {
        _cleanup_(flash_closep) Flash *f = NULL;
        struct stat src, dst;
        int r;

        if (argc != 3) {
                log_error("flash export takes DEVICE and OUT.bin. See 'espfleet flash --help'.");
                return 2;
        }
        if (open_image(argv[1], &f) < 0)
                return 1;

        /* Exporting onto the image itself would truncate the device's flash. */
        if (stat(flash_path(f), &src) >= 0 && stat(argv[2], &dst) >= 0 && src.st_dev == dst.st_dev &&
            src.st_ino == dst.st_ino) {
                log_error("%s is the device's flash image itself; choose another output file.", argv[2]);
                return 1;
        }

        r = flash_export(f, argv[2]);
        if (r < 0) {
                log_error_errno(r, "%s: cannot export the flash image: %m", argv[2]);
                return 1;
        }
        printf("Wrote %s (%" PRIu32 " bytes, dense).\n", argv[2], flash_size(f));
        return 0;
}

int verb_flash(int argc, char **argv) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                flash_help();
                return argc < 2 ? 2 : 0;
        }
        for (int i = 2; i < argc; i++)
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        flash_help();
                        return 0;
                }
        if (streq(argv[1], "info"))
                return info_main(argc - 1, argv + 1);
        if (streq(argv[1], "export"))
                return export_main(argc - 1, argv + 1);
        log_error("Unknown 'flash' command '%s'. See 'espfleet flash --help'.", argv[1]);
        return 2;
}

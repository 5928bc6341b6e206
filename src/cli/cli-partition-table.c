/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "cli/cli-json.h"
#include "cli/cli.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"

#define INPUT_MAX_SIZE (64u * 1024u * 1024u)

static void partition_table_help(void) {
        printf("Usage: espfleet partition-table gen IN.csv OUT.bin\n"
               "       espfleet partition-table show FILE|DEVICE [--format csv|json]\n\n"
               "ESP-IDF partition tables, byte-compatible with gen_esp32part.py.\n\n"
               "  gen    turns a partition CSV into the binary table (0x%x bytes, MD5 record, 0xFF padding)\n"
               "         that the bootloader reads at 0x%x; a binary IN gives the CSV back instead\n"
               "  show   prints a table: FILE is a binary table, a CSV or a flash image; DEVICE is a\n"
               "         device directory with flash.bin, or FLEETDIR/ID\n\n"
               "Options:\n"
               "  --format csv|json   output of show (default csv, as gen_esp32part.py prints it)\n",
               PARTITION_TABLE_MAX_LEN, PARTITION_TABLE_OFFSET);
}

static bool is_binary_table(const uint8_t *data, size_t size) {
        return size >= 2 && le16_read(data) == PARTITION_MAGIC;
}

/* Loads a table from whatever the user named: a device directory (its
 * flash.bin), FLEETDIR/ID, a flash image, a binary table or a CSV. */
static int load_any(const char *arg, PartitionTable **ret, uint32_t *ret_flash_size, char *err, size_t errlen) {
        _cleanup_free_ char *image = NULL, *devdir = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        struct stat st;
        size_t size;
        int r;

        *ret_flash_size = 0;
        if (stat(arg, &st) < 0 || S_ISDIR(st.st_mode)) {
                if (stat(arg, &st) >= 0) {
                        if (asprintf(&image, "%s/" FLEET_DEVICE_FLASH_FILE, arg) < 0)
                                return -ENOMEM;
                } else {
                        devdir = fleet_resolve_device_arg(arg, err, errlen);
                        if (!devdir) {
                                snprintf(err, errlen, "'%s' does not exist: it is neither a file, a device directory nor FLEETDIR/ID",
                                         arg);
                                return -ENOENT;
                        }
                        if (asprintf(&image, "%s/" FLEET_DEVICE_FLASH_FILE, devdir) < 0)
                                return -ENOMEM;
                }
        } else if (S_ISREG(st.st_mode) && st.st_size > (off_t) PARTITION_TABLE_OFFSET &&
                   st.st_size % FLASH_SECTOR_SIZE == 0) {
                /* Large enough to be a flash image: read its table at 0x8000. */
                image = strdup(arg);
                if (!image)
                        return -ENOMEM;
        }

        if (image) {
                _cleanup_(flash_closep) Flash *f = NULL;

                r = flash_open(image, FLASH_OPEN_READ_ONLY, 0, &f);
                if (r < 0) {
                        snprintf(err, errlen, "%s: cannot open the flash image: %s", image, strerror(-r));
                        return r;
                }
                *ret_flash_size = flash_size(f);
                return partition_table_load(f, ret, err, errlen);
        }

        r = read_full_file(arg, INPUT_MAX_SIZE, &data, &size);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot read: %s", arg, strerror(-r));
                return r;
        }
        if (is_binary_table(data, size)) {
                char msg[384];

                r = partition_table_from_binary(data, size, ret, msg, sizeof(msg));
                if (r < 0)
                        snprintf(err, errlen, "%s: %s", arg, msg);
                return r;
        }
        if (memchr(data, 0, size)) {
                snprintf(err, errlen, "%s: neither a binary partition table (no AA 50 magic) nor a CSV", arg);
                return -EBADMSG;
        }
        return partition_table_from_csv((const char *) data, arg, ret, err, errlen);
}

/* A name, or null for a number that has none. */
static int json_add_keyword(json_object *o, const char *key, const char *name) {
        if (!name)
                return cli_json_add_null(o, key);
        return cli_json_add(o, key, json_object_new_string(name));
}

static int json_partition(json_object *partitions, const Partition *p) {
        _cleanup_(json_object_putp) json_object *o = NULL;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        /* a binary table's name may hold any bytes */
        if (cli_json_add(o, "name", cli_json_new_text(p->name)) < 0 ||
            json_add_keyword(o, "type", partition_type_to_string(p->type)) < 0 ||
            cli_json_add(o, "type_id", json_object_new_uint64(p->type)) < 0 ||
            json_add_keyword(o, "subtype", partition_subtype_to_string(p->type, p->subtype)) < 0 ||
            cli_json_add(o, "subtype_id", json_object_new_uint64(p->subtype)) < 0 ||
            cli_json_add(o, "offset", json_object_new_uint64(p->offset)) < 0 ||
            cli_json_add(o, "size", json_object_new_uint64(p->size)) < 0 ||
            cli_json_add(o, "encrypted", json_object_new_boolean(!!(p->flags & PARTITION_FLAG_ENCRYPTED))) < 0 ||
            cli_json_add(o, "readonly", json_object_new_boolean(!!(p->flags & PARTITION_FLAG_READONLY))) < 0)
                return -ENOMEM;
        return cli_json_append(partitions, TAKE_PTR(o));
}

/* flash_bytes: the size of the flash the table was read from; 0 when it came from a file. */
static int json_table(const PartitionTable *t, uint32_t flash_bytes, json_object **ret) {
        _cleanup_(json_object_putp) json_object *root = NULL, *partitions = NULL;
        int r;

        root = json_object_new_object();
        partitions = json_object_new_array();
        if (!root || !partitions)
                return -ENOMEM;
        for (size_t i = 0; i < partition_table_count(t); i++) {
                r = json_partition(partitions, partition_table_get(t, i));
                if (r < 0)
                        return r;
        }
        if (cli_json_add(root, "offset", json_object_new_uint64(PARTITION_TABLE_OFFSET)) < 0 ||
            cli_json_add(root, "end", json_object_new_uint64(partition_table_end(t))) < 0 ||
            (flash_bytes > 0 ? cli_json_add(root, "flash_size", json_object_new_uint64(flash_bytes))
                            : cli_json_add_null(root, "flash_size")) < 0 ||
            cli_json_add(root, "ota_slots", json_object_new_uint64(partition_table_ota_count(t))) < 0 ||
            cli_json_add(root, "partitions", TAKE_PTR(partitions)) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(root);
        return 0;
}

static int print_json(const PartitionTable *t, uint32_t flash_bytes) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        int r;

        r = json_table(t, flash_bytes, &root);
        if (r < 0)
                return log_error_errno(r, "Cannot build the JSON table: %m");
        return cli_json_print(root);
}

static int gen_main(int argc, char **argv) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        char err[768] = "";
        size_t size;
        int r;

        if (argc != 3) {
                log_error("partition-table gen takes IN.csv and OUT.bin. See 'espfleet partition-table --help'.");
                return 2;
        }

        r = read_full_file(argv[1], INPUT_MAX_SIZE, &data, &size);
        if (r < 0) {
                log_error_errno(r, "%s: cannot read: %m", argv[1]);
                return 1;
        }

        if (is_binary_table(data, size)) {
                /* gen_esp32part.py converts both ways. */
                _cleanup_free_ char *csv = NULL;
                char msg[384];

                r = partition_table_from_binary(data, size, &t, msg, sizeof(msg));
                if (r < 0) {
                        log_error("%s: %s", argv[1], msg);
                        return 1;
                }
                r = partition_table_to_csv(t, &csv);
                if (r >= 0)
                        r = write_file_atomic(argv[2], csv, strlen(csv), 0644);
        } else {
                uint8_t bin[PARTITION_TABLE_MAX_LEN];

                if (memchr(data, 0, size)) {
                        log_error("%s: not a CSV file (it contains NUL bytes) nor a binary table.", argv[1]);
                        return 1;
                }
                r = partition_table_from_csv((const char *) data, argv[1], &t, err, sizeof(err));
                if (r < 0) {
                        log_error("%s", err);
                        return 1;
                }
                r = partition_table_to_binary(t, bin);
                if (r >= 0)
                        r = write_file_atomic(argv[2], bin, sizeof(bin), 0644);
        }
        if (r < 0) {
                log_error_errno(r, "%s: cannot write: %m", argv[2]);
                return 1;
        }
        return 0;
}

static int show_main(int argc, char **argv) {
        static const struct option options[] = {
                { "format", required_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        bool json = false;
        uint32_t flash_bytes;
        char err[768] = "";
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "f:h", options, NULL)) >= 0)
                switch (c) {
                case 'f':
                        if (streq(optarg, "json"))
                                json = true;
                        else if (streq(optarg, "csv"))
                                json = false;
                        else {
                                log_error("--format '%s' is not one of csv, json.", optarg);
                                return 2;
                        }
                        break;
                case 'h':
                        partition_table_help();
                        return 0;
                default:
                        return 2;
                }
        if (optind + 1 != argc) {
                log_error("partition-table show takes one FILE or DEVICE. See 'espfleet partition-table --help'.");
                return 2;
        }

        r = load_any(argv[optind], &t, &flash_bytes, err, sizeof(err));
        if (r < 0) {
                log_error("%s", *err ? err : strerror(-r));
                return 1;
        }

        if (json) {
                if (print_json(t, flash_bytes) < 0)
                        return 1;
        } else {
                _cleanup_free_ char *csv = NULL;
                r = partition_table_to_csv(t, &csv);
                if (r < 0) {
                        log_error_errno(r, "Cannot format the table: %m");
                        return 1;
                }
                fputs(csv, stdout);
        }
        if (fflush(stdout) != 0) {
                log_error_errno(errno, "Cannot write to stdout: %m");
                return 1;
        }
        return 0;
}

int verb_partition_table(int argc, char **argv) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                partition_table_help();
                return argc < 2 ? 2 : 0;
        }
        if (streq(argv[1], "gen")) {
                for (int i = 2; i < argc; i++)
                        if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                                partition_table_help();
                                return 0;
                        }
                return gen_main(argc - 1, argv + 1);
        }
        if (streq(argv[1], "show"))
                return show_main(argc - 1, argv + 1);
        log_error("Unknown 'partition-table' command '%s'. See 'espfleet partition-table --help'.", argv[1]);
        return 2;
}

/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "cli/cli.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"
#include "nvs/nvs.h"

#define NVS_FILE_MAX (64u * 1024u * 1024u)

static void nvs_help(void) {
        printf("Usage: espfleet nvs generate IN.csv OUT.bin SIZE [--version 1|2]\n"
               "                    [--encrypt --keyfile KEYS.bin | --encrypt --keygen --keyfile OUT_KEYS.bin]\n"
               "       espfleet nvs dump DEVICE|FILE [--format text|json] [--keyfile KEYS.bin]\n"
               "       espfleet nvs get DEVICE NAMESPACE KEY [--keyfile KEYS.bin]\n"
               "       espfleet nvs set DEVICE NAMESPACE KEY TYPE VALUE [--keyfile KEYS.bin]\n"
               "       espfleet nvs erase DEVICE NAMESPACE KEY [--keyfile KEYS.bin]\n\n"
               "ESP-IDF NVS partitions (format version 2).\n\n"
               "  generate  builds a partition image from a CSV, byte-identical to nvs_partition_gen.py;\n"
               "            `file` rows are read relative to the CSV's directory\n"
               "  dump      every namespace, key, type and value, and the page states; FILE is an NVS\n"
               "            partition image or a whole flash image\n"
               "  get/set/erase  one key of a device that is not running\n\n"
               "DEVICE is a device directory holding flash.bin, or FLEETDIR/ID; its partition named\n"
               "'nvs' is found through the partition table at 0x8000.\n"
               "TYPE for set: u8 i8 u16 i16 u32 i32 u64 i64 (decimal or 0x…), string, hex2bin, base64.\n\n"
               "Options:\n"
               "  --version 1|2     format version of generate (default 2)\n"
               "  --encrypt         XTS-AES-256 per entry (esp-formats.md §3.4)\n"
               "  --keyfile FILE    nvs_keys image (eky ‖ tky ‖ CRC): read, or written with --keygen (mode 0600)\n"
               "  --keygen          make random keys for generate --encrypt\n"
               "  --format json     machine-readable dump\n");
}

/* ---- opening a device, a flash image or a partition image ---- */

typedef struct Target {
        Flash *flash;
        PartitionTable *table;
        uint8_t *buf;          /* a bare partition image */
        size_t buf_size;
        FlashRegion region;
        char *where;           /* for messages */
} Target;

static void target_done(Target *t) {
        partition_table_free(t->table);
        flash_close(t->flash);
        free(t->buf);
        free(t->where);
        *t = (Target) {};
}

static int open_flash_image(Target *t, const char *image, bool writable) {
        char err[512] = "";
        int r;

        r = flash_open(image, writable ? 0 : FLASH_OPEN_READ_ONLY, 0, &t->flash);
        if (r < 0)
                return log_error_errno(r, "%s: cannot open the flash image: %s", image, esp_err_to_name(r));
        r = partition_table_load(t->flash, &t->table, err, sizeof err);
        if (r < 0)
                return log_error_errno(r, "%s: %s", image, err);
        r = partition_table_region(t->table, t->flash, "nvs", &t->region);
        if (r < 0)
                return log_error_errno(r, "%s: the partition table has no partition named 'nvs'", image);
        if (asprintf(&t->where, "%s, partition 'nvs' at 0x%x (0x%x bytes)", image, t->region.offset, t->region.size) < 0)
                return log_error_errno(-ENOMEM, "Out of memory");
        return 0;
}

static int resolve_device(const char *arg, char **ret_dir) {
        char err[512] = "";
        struct stat st;

        if (stat(arg, &st) >= 0 && S_ISDIR(st.st_mode)) {
                *ret_dir = strdup(arg);
                return *ret_dir ? 0 : log_error_errno(-ENOMEM, "Out of memory");
        }
        *ret_dir = fleet_resolve_device_arg(arg, err, sizeof err);
        if (!*ret_dir)
                return log_error_errno(-ENOENT, "'%s' is not a device directory: %s", arg,
                                       err[0] ? err : "no such directory");
        return 0;
}

/* A device, refused while a daemon runs it (its flash would change under us). */
static int open_device(Target *t, const char *arg, bool writable) {
        _cleanup_free_ char *dir = NULL, *image = NULL;
        char err[512] = "";
        int r;

        r = resolve_device(arg, &dir);
        if (r < 0)
                return r;
        r = fleet_device_check_not_running(dir, err, sizeof err);
        if (r < 0)
                return log_error_errno(r, "%s", err[0] ? err : "cannot tell whether the device is running");
        if (asprintf(&image, "%s/" FLEET_DEVICE_FLASH_FILE, dir) < 0)
                return log_error_errno(-ENOMEM, "Out of memory");
        return open_flash_image(t, image, writable);
}

/* dump: a device, a whole flash image (it has a table at 0x8000) or a bare
 * NVS partition image. */
static int open_any(Target *t, const char *arg) {
        _cleanup_free_ char *dir = NULL;
        struct stat st;
        int r;

        if (stat(arg, &st) < 0 || S_ISDIR(st.st_mode))
                return open_device(t, arg, false);

        r = read_full_file(arg, NVS_FILE_MAX, &t->buf, &t->buf_size);
        if (r < 0)
                return log_error_errno(r, "%s: cannot read: %s", arg, esp_err_to_name(r));
        if (t->buf_size >= PARTITION_TABLE_OFFSET + 2 && le16_read(t->buf + PARTITION_TABLE_OFFSET) == PARTITION_MAGIC) {
                free(t->buf);
                t->buf = NULL;
                return open_flash_image(t, arg, false);
        }
        if (t->buf_size == 0 || t->buf_size % NVS_PAGE_SIZE != 0)
                return log_error_errno(-ESP_ERR_NVS_INVALID_LENGTH,
                                       "%s: %zu bytes is not an NVS partition image (a non-zero multiple of 4096 bytes)",
                                       arg, t->buf_size);
        if (asprintf(&t->where, "%s (NVS partition image, 0x%zx bytes)", arg, t->buf_size) < 0)
                return log_error_errno(-ENOMEM, "Out of memory");
        return 0;
}

static int target_open_nvs(Target *t, const NvsXtsKeys *keys, bool writable, Nvs **ret) {
        int r;

        if (t->buf)
                r = nvs_open_buffer(t->buf, t->buf_size, keys, NVS_OPEN_READ_ONLY, ret);
        else
                r = nvs_open_region(&t->region, keys, writable ? 0 : NVS_OPEN_READ_ONLY, ret);
        if (r == -ESP_ERR_NVS_NO_FREE_PAGES)
                return log_error_errno(r, "%s: the partition has no free page (%s); erase it to reuse it", t->where,
                                       esp_err_to_name(r));
        if (r < 0)
                return log_error_errno(r, "%s: cannot open NVS: %s", t->where, esp_err_to_name(r));
        return 0;
}

/* ---- printing values ---- */

static void print_json_string(FILE *f, const char *s, size_t n) {
        fputc('"', f);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '"' || c == '\\')
                        fprintf(f, "\\%c", c);
                else if (c == '\n')
                        fputs("\\n", f);
                else if (c < 0x20 || c >= 0x7f)
                        fprintf(f, "\\u%04x", c);
                else
                        fputc(c, f);
        }
        fputc('"', f);
}

static void print_hex(FILE *f, const uint8_t *d, size_t n) {
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%02x", d[i]);
}

static void print_value(FILE *f, const NvsValue *v, bool json) {
        switch (v->type) {
        case NVS_TYPE_U8:
        case NVS_TYPE_U16:
        case NVS_TYPE_U32:
        case NVS_TYPE_U64:
                fprintf(f, "%" PRIu64, v->u);
                break;
        case NVS_TYPE_I8:
        case NVS_TYPE_I16:
        case NVS_TYPE_I32:
        case NVS_TYPE_I64:
                fprintf(f, "%" PRIi64, v->i);
                break;
        case NVS_TYPE_FLOAT:
        case NVS_TYPE_DOUBLE:
                fprintf(f, "%.17g", v->d);
                break;
        case NVS_TYPE_STR: {
                size_t n = v->size > 0 && v->data[v->size - 1] == 0 ? v->size - 1 : v->size;
                if (json)
                        print_json_string(f, (const char *) v->data, n);
                else
                        fprintf(f, "'%.*s'", (int) n, (const char *) v->data);
                break;
        }
        case NVS_TYPE_BLOB:
        case NVS_TYPE_BLOB_IDX:
        case NVS_TYPE_BLOB_DATA:
        case NVS_TYPE_ANY:
        case _NVS_TYPE_INVALID:
                if (json)
                        fputc('"', f);
                print_hex(f, v->data, v->size);
                if (json)
                        fputc('"', f);
                else
                        fprintf(f, " (%zu bytes)", v->size);
                break;
        }
}

typedef struct DumpCtx {
        Nvs *nvs;
        bool json;
        unsigned count;
        int error;
} DumpCtx;

static int dump_entry(const NvsEntryInfo *info, void *userdata) {
        DumpCtx *c = userdata;
        NvsValue v = {};
        int r;

        r = nvs_get_value(c->nvs, info->namespace_name, info->key, &v);
        if (c->json) {
                printf("%s\n    {\"namespace\": ", c->count ? "," : "");
                print_json_string(stdout, info->namespace_name, strlen(info->namespace_name));
                printf(", \"key\": ");
                print_json_string(stdout, info->key, strlen(info->key));
                printf(", \"type\": \"%s\", \"value\": ", nvs_type_to_string(info->type));
                if (r < 0)
                        printf("null, \"error\": \"%s\"}", esp_err_to_name(r));
                else {
                        print_value(stdout, &v, true);
                        if (v.data)
                                printf(", \"size\": %zu", v.size);
                        printf("}");
                }
        } else {
                printf("  %-15s %-15s %-10s ", info->namespace_name, info->key, nvs_type_to_string(info->type));
                if (r < 0)
                        printf("<unreadable: %s>", esp_err_to_name(r));
                else
                        print_value(stdout, &v, false);
                printf("\n");
        }
        if (r < 0)
                c->error = r;
        c->count++;
        nvs_value_done(&v);
        return 0;
}

static int read_keys(const char *keyfile, NvsXtsKeys *keys, NvsXtsKeys **ret) {
        char err[512];
        int r;

        *ret = NULL;
        if (!keyfile)
                return 0;
        r = nvs_keys_read_file(keyfile, keys, err, sizeof err);
        if (r < 0)
                return log_error_errno(r, "%s", err);
        *ret = keys;
        return 0;
}

static int do_dump(const char *arg, bool json, const char *keyfile) {
        _cleanup_(target_done) Target t = {};
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        NvsXtsKeys keys, *kp;
        DumpCtx c = { .json = json };
        int r;

        r = read_keys(keyfile, &keys, &kp);
        if (r < 0)
                return r;
        r = open_any(&t, arg);
        if (r < 0)
                return r;
        r = target_open_nvs(&t, kp, false, &nvs);
        explicit_bzero(&keys, sizeof keys);
        if (r < 0)
                return r;
        c.nvs = nvs;

        if (json) {
                printf("{\n  \"source\": ");
                print_json_string(stdout, t.where, strlen(t.where));
                printf(",\n  \"encrypted\": %s,\n  \"repairs\": %u,\n  \"pages\": [", nvs_is_encrypted(nvs) ? "true" : "false",
                       nvs_repair_count(nvs));
        } else
                printf("%s%s\nPages:\n", t.where, nvs_is_encrypted(nvs) ? ", encrypted" : "");
        for (unsigned p = 0; p < nvs_page_count(nvs); p++) {
                NvsPageInfo pi;
                (void) nvs_page_info(nvs, p, &pi);
                bool has_header = pi.state != NVS_PAGE_UNINITIALIZED;
                if (json)
                        printf("%s\n    {\"index\": %u, \"state\": \"%s\", \"state_raw\": \"0x%08" PRIx32 "\", \"seq\": %" PRIu32
                               ", \"version\": %u, \"written\": %u, \"erased\": %u, \"empty\": %u}",
                               p ? "," : "", p, nvs_page_state_to_string(pi.state), pi.state_raw,
                               has_header ? pi.seq : 0, has_header ? (pi.version == 0xFE ? 2 : 1) : 0, pi.written,
                               pi.erased, pi.empty);
                else if (has_header)
                        printf("  %2u  %-13s seq %-5" PRIu32 " v%u  written %3u  erased %3u  empty %3u\n", p,
                               nvs_page_state_to_string(pi.state), pi.seq, pi.version == 0xFE ? 2 : 1, pi.written,
                               pi.erased, pi.empty);
                else
                        printf("  %2u  %s\n", p, nvs_page_state_to_string(pi.state));
        }
        if (json)
                printf("\n  ],\n  \"entries\": [");
        else
                printf("Entries:\n");
        r = nvs_iterate(nvs, NULL, NVS_TYPE_ANY, dump_entry, &c);
        if (json)
                printf("\n  ]\n}\n");
        else if (c.count == 0)
                printf("  (none)%s\n", nvs_is_encrypted(nvs) || keyfile ? "" : " (an encrypted partition needs --keyfile)");
        if (r < 0)
                return log_error_errno(r, "%s: iteration failed: %s", t.where, esp_err_to_name(r));
        if (nvs_repair_count(nvs) > 0 && !json)
                log_notice("%s: %u entries needed a repair (shown as repaired; the image was not modified)", t.where,
                           nvs_repair_count(nvs));
        return c.error < 0 ? c.error : 0;
}

static int do_generate(int argc, char **argv, unsigned version, bool encrypt, bool keygen, const char *keyfile) {
        _cleanup_free_ uint8_t *img = NULL;
        NvsXtsKeys keys;
        uint64_t size;
        size_t n = 0;
        char err[1024] = "";
        int r;

        if (argc != 3) {
                log_error("nvs generate needs IN.csv OUT.bin SIZE");
                return 2;
        }
        r = parse_size(argv[2], &size);
        if (r < 0 || size == 0 || size % NVS_PAGE_SIZE != 0 || size > UINT32_MAX)
                return log_error_errno(-EINVAL, "size '%s' must be a non-zero multiple of 4096 (e.g. 0x6000)", argv[2]);
        if ((keygen || keyfile) && !encrypt)
                return log_error_errno(-EINVAL, "--keyfile and --keygen go with --encrypt");
        if (encrypt && !keyfile)
                return log_error_errno(-EINVAL, "--encrypt needs --keyfile KEYS.bin (to read, or to write with --keygen)");

        if (encrypt && keygen) {
                uint8_t part[NVS_KEYS_PARTITION_SIZE];
                r = nvs_keys_generate(&keys);
                if (r < 0)
                        return log_error_errno(r, "cannot generate keys: %s", esp_err_to_name(r));
                nvs_keys_serialize(&keys, part);
                r = write_file_atomic(keyfile, part, sizeof part, 0600);
                explicit_bzero(part, sizeof part);
                if (r < 0)
                        return log_error_errno(r, "%s: cannot write the key file: %s", keyfile, esp_err_to_name(r));
        } else if (encrypt) {
                r = nvs_keys_read_file(keyfile, &keys, err, sizeof err);
                if (r < 0)
                        return log_error_errno(r, "%s", err);
        }

        r = nvs_generate_csv_file(argv[0], (uint32_t) size, version, encrypt ? &keys : NULL, &img, &n, err, sizeof err);
        explicit_bzero(&keys, sizeof keys);
        if (r < 0)
                return log_error_errno(r, "%s", err);
        r = write_file_atomic(argv[1], img, n, 0644);
        if (r < 0)
                return log_error_errno(r, "%s: cannot write: %s", argv[1], esp_err_to_name(r));
        if (n < size)
                log_notice("%s: partitions below 0x3000 bytes are read-only: only the %zu bytes in use were written",
                           argv[1], n);
        return 0;
}

static int do_key(const char *verb, int argc, char **argv, const char *keyfile) {
        _cleanup_(target_done) Target t = {};
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        _cleanup_(nvs_handle_closep) NvsHandle *h = NULL;
        bool set = streq(verb, "set"), erase = streq(verb, "erase");
        NvsXtsKeys keys, *kp;
        char err[512] = "";
        int r;

        if (argc != (set ? 5 : 3)) {
                log_error("nvs %s needs DEVICE NAMESPACE KEY%s", verb, set ? " TYPE VALUE" : "");
                return 2;
        }
        r = read_keys(keyfile, &keys, &kp);
        if (r < 0)
                return r;
        r = open_device(&t, argv[0], set || erase);
        if (r < 0)
                return r;
        r = target_open_nvs(&t, kp, set || erase, &nvs);
        explicit_bzero(&keys, sizeof keys);
        if (r < 0)
                return r;
        r = nvs_handle_open(nvs, argv[1], set ? NVS_READWRITE : NVS_READONLY, &h);
        if (r < 0)
                return log_error_errno(r, "%s: namespace '%s': %s", t.where, argv[1], esp_err_to_name(r));

        if (set) {
                r = nvs_set_from_text(h, argv[2], argv[3], argv[4], err, sizeof err);
                if (r < 0)
                        return log_error_errno(r, "%s: cannot set '%s/%s': %s", t.where, argv[1], argv[2],
                                               err[0] ? err : esp_err_to_name(r));
                return 0;
        }
        if (erase) {
                /* a read-only handle cannot erase: reopen the namespace read-write */
                h = nvs_handle_close(h);
                r = nvs_handle_open(nvs, argv[1], NVS_READWRITE, &h);
                if (r >= 0)
                        r = nvs_erase_key(h, argv[2]);
                if (r < 0)
                        return log_error_errno(r, "%s: cannot erase '%s/%s': %s", t.where, argv[1], argv[2],
                                               esp_err_to_name(r));
                return 0;
        }

        NvsValue v = {};
        r = nvs_get_value(nvs, argv[1], argv[2], &v);
        if (r < 0)
                return log_error_errno(r, "%s: '%s/%s': %s", t.where, argv[1], argv[2], esp_err_to_name(r));
        if (v.type == NVS_TYPE_STR)
                printf("%.*s\n", (int) (v.size > 0 ? v.size - 1 : 0), (const char *) v.data);
        else {
                print_value(stdout, &v, true);
                printf("\n");
        }
        nvs_value_done(&v);
        return 0;
}

int verb_nvs(int argc, char **argv) {
        enum { ARG_VERSION = 0x100, ARG_ENCRYPT, ARG_KEYGEN, ARG_KEYFILE, ARG_FORMAT };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", required_argument, NULL, ARG_VERSION },
                { "encrypt", no_argument, NULL, ARG_ENCRYPT },
                { "keygen", no_argument, NULL, ARG_KEYGEN },
                { "keyfile", required_argument, NULL, ARG_KEYFILE },
                { "format", required_argument, NULL, ARG_FORMAT },
                {}
        };
        const char *keyfile = NULL, *cmd;
        bool encrypt = false, keygen = false, json = false;
        unsigned version = 2;
        int c, r;

        /* GNU getopt permutes: options may come before or after the subcommand */
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        nvs_help();
                        return 0;
                case ARG_VERSION:
                        if (streq(optarg, "1"))
                                version = 1;
                        else if (streq(optarg, "2"))
                                version = 2;
                        else {
                                log_error("--version must be 1 or 2, not '%s'", optarg);
                                return 2;
                        }
                        break;
                case ARG_ENCRYPT:
                        encrypt = true;
                        break;
                case ARG_KEYGEN:
                        keygen = true;
                        break;
                case ARG_KEYFILE:
                        keyfile = optarg;
                        break;
                case ARG_FORMAT:
                        if (streq(optarg, "json"))
                                json = true;
                        else if (streq(optarg, "text"))
                                json = false;
                        else {
                                log_error("--format must be text or json, not '%s'", optarg);
                                return 2;
                        }
                        break;
                default:
                        return 2;
                }

        if (optind >= argc) {
                nvs_help();
                return 2;
        }
        cmd = argv[optind];
        argc -= optind + 1;
        argv += optind + 1;

        if (streq(cmd, "generate"))
                r = do_generate(argc, argv, version, encrypt, keygen, keyfile);
        else if (streq(cmd, "dump")) {
                if (argc != 1) {
                        log_error("nvs dump needs DEVICE|FILE");
                        return 2;
                }
                r = do_dump(argv[0], json, keyfile);
        } else if (streq(cmd, "get") || streq(cmd, "set") || streq(cmd, "erase"))
                r = do_key(cmd, argc, argv, keyfile);
        else {
                log_error("Unknown nvs command '%s' (generate, dump, get, set, erase).", cmd);
                return 2;
        }
        if (r > 0)
                return r;   /* usage error */
        return r < 0 ? 1 : 0;
}

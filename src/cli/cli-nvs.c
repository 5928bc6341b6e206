/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "cli/cli-json.h"
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
                return log_error_errno(-ENOENT, "%s", err[0] ? err : "no such device directory");
        return 0;
}

/* A device. A change is refused while a daemon runs it (the daemon writes the
 * same flash); a read is a snapshot, as device show and efuse summary are. */
static int open_device(Target *t, const char *arg, bool writable) {
        _cleanup_free_ char *dir = NULL, *image = NULL;
        char err[512] = "";
        int r;

        r = resolve_device(arg, &dir);
        if (r < 0)
                return r;
        if (writable) {
                r = fleet_device_check_not_running(dir, err, sizeof err);
                if (r < 0)
                        return log_error_errno(r, "%s", err[0] ? err : "cannot tell whether the device is running");
        }
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

static void print_hex(FILE *f, const uint8_t *d, size_t n) {
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%02x", d[i]);
}

static size_t str_len(const NvsValue *v) {
        /* the stored NUL is not part of the value */
        return v->size > 0 && v->data[v->size - 1] == 0 ? v->size - 1 : v->size;
}

static void print_value(FILE *f, const NvsValue *v) {
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
        case NVS_TYPE_STR:
                fprintf(f, "'%.*s'", (int) str_len(v), (const char *) v->data);
                break;
        case NVS_TYPE_BLOB:
        case NVS_TYPE_BLOB_IDX:
        case NVS_TYPE_BLOB_DATA:
        case NVS_TYPE_ANY:
        case _NVS_TYPE_INVALID:
                print_hex(f, v->data, v->size);
                fprintf(f, " (%zu bytes)", v->size);
                break;
        }
}

static json_object *json_hex(const uint8_t *d, size_t n) {
        static const char digits[] = "0123456789abcdef";
        _cleanup_free_ char *hex = NULL;

        if (n > INT_MAX / 2)
                return NULL;
        hex = malloc(2 * n + 1);
        if (!hex)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                hex[2 * i] = digits[d[i] >> 4];
                hex[2 * i + 1] = digits[d[i] & 0xF];
        }
        return json_object_new_string_len(hex, (int) (2 * n));
}

/* A value in JSON: integers and floats as numbers; a string byte for byte as
 * U+0000…U+00FF (NVS strings are bytes, not necessarily UTF-8); a blob as
 * lowercase hex. NULL on OOM. */
static json_object *json_value(const NvsValue *v) {
        switch (v->type) {
        case NVS_TYPE_U8:
        case NVS_TYPE_U16:
        case NVS_TYPE_U32:
        case NVS_TYPE_U64:
                return json_object_new_uint64(v->u);
        case NVS_TYPE_I8:
        case NVS_TYPE_I16:
        case NVS_TYPE_I32:
        case NVS_TYPE_I64:
                return json_object_new_int64(v->i);
        case NVS_TYPE_FLOAT:
        case NVS_TYPE_DOUBLE:
                return json_object_new_double(v->d);
        case NVS_TYPE_STR:
                return cli_json_new_bytes(v->data, str_len(v));
        case NVS_TYPE_BLOB:
        case NVS_TYPE_BLOB_IDX:
        case NVS_TYPE_BLOB_DATA:
        case NVS_TYPE_ANY:
        case _NVS_TYPE_INVALID:
                break;
        }
        return json_hex(v->data, v->size);
}

/* Namespace and key names are bytes from flash too. */
static json_object *json_name(const char *s) {
        return cli_json_new_bytes(s, strlen(s));
}

typedef struct DumpCtx {
        Nvs *nvs;
        json_object *entries;   /* --format json; not owned */
        unsigned count;
        int error;              /* the last entry that could not be read */
        unsigned unreadable;            /* entries that could not be read */
        int first_unreadable;           /* the first one's reason */
        int json_error;         /* building the JSON failed */
} DumpCtx;

/* `r` is what reading the value gave: an unreadable entry has a null value
 * and the error's name. */
static int json_entry(json_object *entries, const NvsEntryInfo *info, const NvsValue *v, int r) {
        _cleanup_(json_object_putp) json_object *o = NULL;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (cli_json_add(o, "namespace", json_name(info->namespace_name)) < 0 ||
            cli_json_add(o, "key", json_name(info->key)) < 0 ||
            cli_json_add(o, "type", json_object_new_string(nvs_type_to_string(info->type))) < 0)
                return -ENOMEM;
        if (r < 0) {
                if (cli_json_add_null(o, "value") < 0 ||
                    cli_json_add(o, "error", json_object_new_string(esp_err_to_name(r))) < 0)
                        return -ENOMEM;
        } else {
                if (cli_json_add(o, "value", json_value(v)) < 0)
                        return -ENOMEM;
                if (v->data && cli_json_add(o, "size", json_object_new_uint64(v->size)) < 0)
                        return -ENOMEM;
        }
        return cli_json_append(entries, TAKE_PTR(o));
}

static int dump_entry(const NvsEntryInfo *info, void *userdata) {
        DumpCtx *c = userdata;
        NvsValue v = {};
        int r;

        r = nvs_get_value(c->nvs, info->namespace_name, info->key, &v);
        if (c->entries) {
                int k = json_entry(c->entries, info, &v, r);
                if (k < 0) {
                        nvs_value_done(&v);
                        c->json_error = k;
                        return k;
                }
        } else {
                printf("  %-15s %-15s %-10s ", info->namespace_name, info->key, nvs_type_to_string(info->type));
                if (r < 0)
                        printf("<unreadable: %s>", esp_err_to_name(r));
                else
                        print_value(stdout, &v);
                printf("\n");
        }
        if (r < 0) {
                c->error = r;
                if (c->unreadable++ == 0)
                        c->first_unreadable = r;
        }
        c->count++;
        nvs_value_done(&v);
        return 0;
}

static int json_page(json_object *pages, const NvsPageInfo *pi) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        bool has_header = pi->state != NVS_PAGE_UNINITIALIZED;
        char raw[16];

        snprintf(raw, sizeof raw, "0x%08" PRIx32, pi->state_raw);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (cli_json_add(o, "index", json_object_new_uint64(pi->index)) < 0 ||
            cli_json_add(o, "state", json_object_new_string(nvs_page_state_to_string(pi->state))) < 0 ||
            cli_json_add(o, "state_raw", json_object_new_string(raw)) < 0 ||
            cli_json_add(o, "seq", json_object_new_uint64(has_header ? pi->seq : 0)) < 0 ||
            cli_json_add(o, "version", json_object_new_uint64(has_header ? (pi->version == 0xFE ? 2 : 1) : 0)) < 0 ||
            cli_json_add(o, "written", json_object_new_uint64(pi->written)) < 0 ||
            cli_json_add(o, "erased", json_object_new_uint64(pi->erased)) < 0 ||
            cli_json_add(o, "empty", json_object_new_uint64(pi->empty)) < 0)
                return -ENOMEM;
        return cli_json_append(pages, TAKE_PTR(o));
}

/* The head of the JSON dump: where it comes from, and the pages. "entries"
 * is filled while iterating; *ret_entries points into *ret. */
static int json_dump_new(const Target *t, Nvs *nvs, json_object **ret, json_object **ret_entries) {
        _cleanup_(json_object_putp) json_object *root = NULL, *pages = NULL, *entries = NULL;
        json_object *e;
        int r;

        root = json_object_new_object();
        pages = json_object_new_array();
        entries = json_object_new_array();
        if (!root || !pages || !entries)
                return -ENOMEM;
        for (unsigned p = 0; p < nvs_page_count(nvs); p++) {
                NvsPageInfo pi = {};

                (void) nvs_page_info(nvs, p, &pi);
                pi.index = p;
                r = json_page(pages, &pi);
                if (r < 0)
                        return r;
        }
        e = entries;
        if (cli_json_add(root, "source", cli_json_new_bytes(t->where, strlen(t->where))) < 0 ||
            cli_json_add(root, "encrypted", json_object_new_boolean(nvs_is_encrypted(nvs))) < 0 ||
            cli_json_add(root, "repairs", json_object_new_uint64(nvs_repair_count(nvs))) < 0 ||
            cli_json_add(root, "pages", TAKE_PTR(pages)) < 0 ||
            cli_json_add(root, "entries", TAKE_PTR(entries)) < 0)
                return -ENOMEM;
        *ret_entries = e;
        *ret = TAKE_PTR(root);
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

static void print_pages(Nvs *nvs) {
        for (unsigned p = 0; p < nvs_page_count(nvs); p++) {
                NvsPageInfo pi = {};

                (void) nvs_page_info(nvs, p, &pi);
                if (pi.state != NVS_PAGE_UNINITIALIZED)
                        printf("  %2u  %-13s seq %-5" PRIu32 " v%u  written %3u  erased %3u  empty %3u\n", p,
                               nvs_page_state_to_string(pi.state), pi.seq, pi.version == 0xFE ? 2 : 1, pi.written,
                               pi.erased, pi.empty);
                else
                        printf("  %2u  %s\n", p, nvs_page_state_to_string(pi.state));
        }
}

static int do_dump(const char *arg, bool json, const char *keyfile) {
        _cleanup_(target_done) Target t = {};
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        _cleanup_(json_object_putp) json_object *root = NULL;
        NvsXtsKeys keys, *kp;
        DumpCtx c = {};
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
                r = json_dump_new(&t, nvs, &root, &c.entries);
                if (r < 0)
                        return log_error_errno(r, "Cannot build the JSON dump: %m");
        } else {
                printf("%s%s\nPages:\n", t.where, nvs_is_encrypted(nvs) ? ", encrypted" : "");
                print_pages(nvs);
                printf("Entries:\n");
        }
        r = nvs_iterate(nvs, NULL, NVS_TYPE_ANY, dump_entry, &c);
        if (c.json_error < 0)
                return log_error_errno(c.json_error, "Cannot build the JSON dump: %m");
        if (json) {
                /* printed even when the iteration failed: what was read is shown */
                int k = cli_json_print(root);
                if (k < 0)
                        return k;
        } else if (c.count == 0)
                printf("  (none)%s\n", nvs_is_encrypted(nvs) || keyfile ? "" : " (an encrypted partition needs --keyfile)");
        if (r < 0)
                return log_error_errno(r, "%s: iteration failed: %s", t.where, esp_err_to_name(r));
        /* on stderr in both formats: the JSON on stdout stays clean */
        if (nvs_repair_count(nvs) > 0)
                log_notice("%s: %u entries needed a repair (shown as repaired; the image was not modified)%s", t.where,
                           nvs_repair_count(nvs),
                           keyfile ? "; a --keyfile that is not this partition's key looks the same" : "");
        if (c.unreadable > 0)
                log_error("%s: %u of %u entries unreadable (the first: %s)%s", t.where, c.unreadable, c.count,
                          esp_err_to_name(c.first_unreadable),
                          keyfile && nvs_repair_count(nvs) > 0 ? "; check that --keyfile holds this partition's keys" : "");
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
        if (v.type == NVS_TYPE_STR) {
                printf("%.*s\n", (int) (v.size > 0 ? v.size - 1 : 0), (const char *) v.data);
                nvs_value_done(&v);
                return 0;
        }
        /* anything else as its JSON: a number, or a blob's hex in quotes */
        _cleanup_(json_object_putp) json_object *o = json_value(&v);
        nvs_value_done(&v);
        if (!o)
                return log_error_errno(-ENOMEM, "Cannot format the value: %m");
        return cli_json_print(o);
}

/* GNU getopt would read a negative VALUE ("nvs set … i16 -32768") as the
 * options -3, -2, …: such arguments are hidden from it behind a \001
 * prefix and shown again once it is done (it only moves them around). */
#define NEGATIVE_MAX 8
typedef struct Negatives {
        char *saved[NEGATIVE_MAX];
        size_t n;
} Negatives;

static bool looks_negative(const char *a) {
        return a[0] == '-' && (isdigit((unsigned char) a[1]) || (a[1] == '.' && isdigit((unsigned char) a[2])));
}

static void negatives_hide(Negatives *n, int argc, char **argv) {
        for (int i = 1; i < argc && n->n < NEGATIVE_MAX; i++) {
                if (streq(argv[i], "--"))
                        break;
                if (!looks_negative(argv[i]))
                        continue;
                char *h = malloc(strlen(argv[i]) + 2);
                if (!h)
                        return;
                h[0] = '\001';
                strcpy(h + 1, argv[i]);
                n->saved[n->n++] = h;
                argv[i] = h;
        }
}

static void negatives_show(Negatives *n, int argc, char **argv) {
        for (int i = 0; i < argc; i++)
                if (argv[i][0] == '\001')
                        argv[i]++;
}

static void negatives_free(Negatives *n) {
        for (size_t i = 0; i < n->n; i++)
                free(n->saved[i]);
}

static int verb_nvs_parsed(int argc, char **argv);

int verb_nvs(int argc, char **argv) {
        Negatives n = {};
        int r;

        negatives_hide(&n, argc, argv);
        r = verb_nvs_parsed(argc, argv);
        negatives_free(&n);
        return r;
}

static int verb_nvs_parsed(int argc, char **argv) {
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
        negatives_show(NULL, argc, argv);

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

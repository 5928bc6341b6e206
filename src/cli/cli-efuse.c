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
#include "cli/cli-json.h"
#include "cli/cli.h"
#include "dsemu/efuse.h"
#include "fleet/fleet-dir.h"

static void efuse_help(void) {
        printf("Usage: espfleet efuse summary DEVICE [--format summary|json]\n"
               "       espfleet efuse burn-key DEVICE BLOCK_KEYn FILE PURPOSE [--no-read-protect]\n"
               "       espfleet efuse burn DEVICE FIELD VALUE\n\n"
               "The emulated eFuse of a device (QEMU eFuse file, 1024 bytes).\n\n"
               "  summary    every field with its block, value, R/W flags and raw bits, like\n"
               "             'espefuse summary'; read-protected keys show ?? and are never printed\n"
               "  burn-key   burns a 32-byte key FILE into BLOCK_KEY0..5 with PURPOSE (espefuse names:\n"
               "             USER, XTS_AES_128_KEY, HMAC_DOWN_ALL, HMAC_DOWN_JTAG,\n"
               "             HMAC_DOWN_DIGITAL_SIGNATURE, HMAC_UP, SECURE_BOOT_DIGEST0..2, and on S3\n"
               "             XTS_AES_256_KEY_1/2); HMAC/XTS keys are read-protected unless\n"
               "             --no-read-protect; the block and its purpose are write-protected\n"
               "  burn       burns a BLOCK0 field or MAC; bits only go 0 -> 1\n\n"
               "DEVICE is a device directory with efuse.bin, FLEETDIR/ID, or an eFuse file.\n\n"
               "Options:\n"
               "  --chip esp32c3|esp32s3   chip of a bare eFuse file (default esp32c3; a fleet's\n"
               "                           device takes it from fleet.conf)\n"
               "  --format summary|json    summary output format\n"
               "  --no-read-protect        burn-key: leave the key readable (development)\n");
}

typedef struct EfuseTarget {
        char *path;             /* the eFuse file */
        char *device_dir;       /* NULL for a bare file */
        EspChip chip;
} EfuseTarget;

static void efuse_target_done(EfuseTarget *t) {
        free(t->path);
        free(t->device_dir);
}

/* The chip of a fleet device: FLEET/devices/<id>/../../fleet.conf. 0 with
 * *ret untouched when the directory is not inside a fleet. */
static int fleet_chip_of(const char *device_dir, EspChip *ret) {
        _cleanup_free_ char *conf = NULL;
        char err[512] = "";
        FleetConfig c;
        EspChip chip;
        int r;

        if (asprintf(&conf, "%s/../../" FLEET_CONF_FILE, device_dir) < 0)
                return -ENOMEM;
        if (access(conf, F_OK) < 0)
                return 0;
        r = fleet_config_load(conf, &c, err, sizeof(err));
        if (r < 0) {
                log_error("%s", *err ? err : "Cannot read the fleet's fleet.conf.");
                return r;
        }
        chip = esp_chip_from_string(c.chip);
        if (chip < 0) {
                log_error("%s: unknown chip '%s'.", conf, c.chip);
                return -EINVAL;
        }
        *ret = chip;
        return 1;
}

static int resolve_target(const char *arg, const char *chip_opt, EfuseTarget *ret) {
        _cleanup_free_ char *dir = NULL;
        EspChip chip = ESP_CHIP_ESP32C3, fleet_chip = _ESP_CHIP_INVALID;
        struct stat st;
        char err[512] = "";
        int r;

        if (chip_opt) {
                chip = esp_chip_from_string(chip_opt);
                if (chip < 0) {
                        log_error("Unknown chip '%s' (esp32c3 or esp32s3).", chip_opt);
                        return -EINVAL;
                }
        }

        if (stat(arg, &st) >= 0 && !S_ISDIR(st.st_mode)) {
                ret->path = strdup(arg);
                ret->device_dir = NULL;
                ret->chip = chip;
                return ret->path ? 0 : -ENOMEM;
        }
        if (stat(arg, &st) >= 0)
                dir = strdup(arg);
        else {
                dir = fleet_resolve_device_arg(arg, err, sizeof(err));
                if (!dir) {
                        log_error("%s", *err ? err : "Cannot resolve the device.");
                        return -ENOENT;
                }
        }
        if (!dir)
                return -ENOMEM;

        r = fleet_chip_of(dir, &fleet_chip);
        if (r < 0)
                return r;
        if (r > 0) {
                if (chip_opt && fleet_chip != chip) {
                        log_error("'%s' belongs to an %s fleet, but --chip says %s.", arg,
                                  esp_chip_to_string(fleet_chip), chip_opt);
                        return -EINVAL;
                }
                chip = fleet_chip;
        }

        if (asprintf(&ret->path, "%s/" FLEET_DEVICE_EFUSE_FILE, dir) < 0)
                return -ENOMEM;
        ret->device_dir = TAKE_PTR(dir);
        ret->chip = chip;
        return 0;
}

static int load(const EfuseTarget *t, Efuse **ret) {
        char err[512] = "";
        int r;

        r = efuse_load(t->path, t->chip, ret, err, sizeof(err));
        if (r < 0)
                log_error("%s", *err ? err : "Cannot load the eFuse file.");
        return r;
}

/* Burning into a device that a daemon is running would race with it. */
static int check_not_running(const EfuseTarget *t) {
        char err[512] = "";
        int r;

        if (!t->device_dir)
                return 0;
        r = fleet_device_check_not_running(t->device_dir, err, sizeof(err));
        if (r < 0)
                log_error("%s", *err ? err : "Cannot tell whether the device is running.");
        return r;
}

static int save(const Efuse *e, const EfuseTarget *t) {
        int r = efuse_save(e, t->path);
        if (r < 0)
                log_error_errno(r, "%s: cannot write the eFuse file: %m", t->path);
        return r;
}

/* ---- summary ---- */

static const char *category_title(const char *c) {
        static const struct {
                const char *key, *title;
        } titles[] = {
                { "config", "Config fuses" },   { "flash", "Flash fuses" },
                { "identity", "Identity fuses" }, { "jtag", "Jtag fuses" },
                { "mac", "Mac fuses" },         { "security", "Security fuses" },
                { "user", "User fuses" },       { "sys_data", "System data fuses" },
        };
        for (size_t i = 0; i < ELEMENTSOF(titles); i++)
                if (streq(titles[i].key, c))
                        return titles[i].title;
        return c;
}

/* Categories in espefuse's (alphabetical) order. */
static const char *const category_order[] = {
        "config", "flash", "identity", "jtag", "mac", "security", "sys_data", "user",
};

static void raw_bits(const Efuse *e, const EfuseFieldInfo *f, char *buf, size_t size) {
        uint8_t raw[32];
        uint64_t v = 0;

        if (efuse_field_get_raw(e, f, raw, sizeof(raw)) < 0 || f->len > 64) {
                snprintf(buf, size, "%s", "");
                return;
        }
        for (unsigned i = 0; i < (f->len + 7) / 8; i++)
                v |= (uint64_t) raw[i] << (8 * i);
        if (f->len <= 8) {
                size_t n = 0;
                n += (size_t) snprintf(buf + n, size - n, "0b");
                for (int i = (int) f->len - 1; i >= 0 && n + 1 < size; i--)
                        buf[n++] = (v >> i) & 1 ? '1' : '0';
                buf[MIN(n, size - 1)] = '\0';
        } else
                snprintf(buf, size, "0x%0*" PRIx64, (int) (f->len + 3) / 4, v);
}

static const char *rw_flags(const Efuse *e, const EfuseFieldInfo *f) {
        bool r = efuse_field_is_readable(e, f), w = efuse_field_is_writeable(e, f);
        return r ? (w ? "R/W" : "R/-") : (w ? "-/W" : "-/-");
}

static void print_summary(const Efuse *e) {
        EspChip chip = efuse_chip(e);

        printf("EFUSE_NAME (Block) Description  = [Meaningful Value] [Readable/Writeable] (Hex Value)\n");
        printf("----------------------------------------------------------------------------------------\n");
        for (size_t c = 0; c < ELEMENTSOF(category_order); c++) {
                bool header = false;

                for (size_t i = 0; i < efuse_field_count(chip); i++) {
                        const EfuseFieldInfo *f = efuse_field_by_index(chip, i);
                        char name[48], value[128], raw[32];
                        const char *d = f->description;
                        size_t dlen = strlen(d);

                        if (!streq(f->category, category_order[c]))
                                continue;
                        if (!header) {
                                printf("%s:\n", category_title(f->category));
                                header = true;
                        }
                        snprintf(name, sizeof(name), "%s (BLOCK%u)", f->name, f->block);
                        if (efuse_field_format_value(e, f, value, sizeof(value)) < 0)
                                snprintf(value, sizeof(value), "%s", "?");
                        raw_bits(e, f, raw, sizeof(raw));

                        if (f->type == EFUSE_FIELD_KEY) {
                                int n = (int) (f->block - EFUSE_KEY_BLOCK_FIRST);
                                const char *purpose = f->block >= EFUSE_KEY_BLOCK_FIRST && n < EFUSE_KEY_BLOCKS
                                        ? efuse_key_purpose_to_string(efuse_key_purpose(e, (unsigned) n)) : NULL;

                                if (purpose)
                                        printf("%-30s Purpose: %s\n", name, purpose);
                                else
                                        printf("%s\n", name);
                                printf("   %.50s\n   = %s %s\n", d, value, rw_flags(e, f));
                                continue;
                        }

                        printf("%-30s %-50.50s = %s %s (%s)\n", name, d, value, rw_flags(e, f), raw);
                        /* Longer descriptions continue under the column. */
                        for (size_t off = 50; off < dlen; off += 50)
                                printf("%-30s %.50s\n", "", d + off);
                }
                if (header)
                        printf("\n");
        }
}

static const char *json_efuse_type(const EfuseFieldInfo *f, char *buf, size_t size) {
        switch (f->type) {
        case EFUSE_FIELD_BOOL:
                return "bool";
        case EFUSE_FIELD_KEY:
                snprintf(buf, size, "bytes:%u", f->len / 8);
                return buf;
        case EFUSE_FIELD_MAC:
                return "bytes:6";
        case EFUSE_FIELD_UINT:
        case EFUSE_FIELD_BITMAP:
        case EFUSE_FIELD_PURPOSE:
        case EFUSE_FIELD_CRYPT_CNT:
        case EFUSE_FIELD_SOFT_DIS:
        case EFUSE_FIELD_THERMO:
        case _EFUSE_FIELD_TYPE_MAX:
        case _EFUSE_FIELD_TYPE_INVALID:
                break;
        }
        snprintf(buf, size, "uint:%u", f->len);
        return buf;
}

/* "value" as espefuse's get_meaning() gives it: a bool, a number, or text
 * (a purpose name, a MAC, key bytes with ?? where read-protected). */
static json_object *json_efuse_value(const EfuseFieldInfo *f, uint64_t v, const char *text) {
        switch (f->type) {
        case EFUSE_FIELD_BOOL:
                return json_object_new_boolean(v != 0);
        case EFUSE_FIELD_UINT:
        case EFUSE_FIELD_BITMAP:
        case EFUSE_FIELD_SOFT_DIS:
        case EFUSE_FIELD_THERMO:
                return json_object_new_uint64(v);
        case EFUSE_FIELD_PURPOSE:
        case EFUSE_FIELD_CRYPT_CNT:
        case EFUSE_FIELD_MAC:
        case EFUSE_FIELD_KEY:
        case _EFUSE_FIELD_TYPE_MAX:
        case _EFUSE_FIELD_TYPE_INVALID:
                break;
        }
        return json_object_new_string(text);
}

/* One field, with the keys of espefuse's summary JSON plus "raw_value" (the
 * bits as a number, or the text of a field wider than 64 bits). */
static int json_efuse_field(const Efuse *e, const EfuseFieldInfo *f, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        char value[128], type[16];
        uint64_t v = 0;

        if (efuse_field_format_value(e, f, value, sizeof(value)) < 0)
                snprintf(value, sizeof(value), "%s", "?");
        if (f->len <= 64)
                (void) efuse_get_field(e, f->name, &v);

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (cli_json_add(o, "name", json_object_new_string(f->name)) < 0 ||
            cli_json_add(o, "value", json_efuse_value(f, v, value)) < 0 ||
            cli_json_add(o, "raw_value", f->len <= 64 ? json_object_new_uint64(v) : json_object_new_string(value)) < 0 ||
            cli_json_add(o, "readable", json_object_new_boolean(efuse_field_is_readable(e, f))) < 0 ||
            cli_json_add(o, "writeable", json_object_new_boolean(efuse_field_is_writeable(e, f))) < 0 ||
            cli_json_add(o, "description", json_object_new_string(f->description)) < 0 ||
            cli_json_add(o, "category", json_object_new_string(f->category)) < 0 ||
            cli_json_add(o, "block", json_object_new_uint64(f->block)) < 0 ||
            cli_json_add(o, "word", json_object_new_uint64(f->start / 32)) < 0 ||
            cli_json_add(o, "pos", json_object_new_uint64(f->start % 32)) < 0 ||
            cli_json_add(o, "efuse_type", json_object_new_string(json_efuse_type(f, type, sizeof(type)))) < 0 ||
            cli_json_add(o, "bit_len", json_object_new_uint64(f->len)) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

/* `espefuse summary --format json`: one object per field, keyed by its name,
 * in the chip's field order. */
static int json_summary(const Efuse *e, json_object **ret) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        EspChip chip = efuse_chip(e);
        int r;

        root = json_object_new_object();
        if (!root)
                return -ENOMEM;
        for (size_t i = 0; i < efuse_field_count(chip); i++) {
                const EfuseFieldInfo *f = efuse_field_by_index(chip, i);
                json_object *field = NULL;

                r = json_efuse_field(e, f, &field);
                if (r < 0)
                        return r;
                r = cli_json_add(root, f->name, field);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(root);
        return 0;
}

static int print_json(const Efuse *e) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        int r;

        r = json_summary(e, &root);
        if (r < 0)
                return log_error_errno(r, "Cannot build the JSON summary: %m");
        return cli_json_print(root);
}

static int do_summary(const EfuseTarget *t, const char *format) {
        _cleanup_(efuse_freep) Efuse *e = NULL;
        int r;

        if (format && !streq(format, "summary") && !streq(format, "json")) {
                log_error("Unknown --format '%s' (summary or json).", format);
                return 2;
        }
        r = load(t, &e);
        if (r < 0)
                return 1;
        if (format && streq(format, "json")) {
                if (print_json(e) < 0)
                        return 1;
        } else {
                printf("Chip: %s, eFuse file: %s\n\n", esp_chip_to_string(efuse_chip(e)), t->path);
                print_summary(e);
        }
        return 0;
}

/* ---- burn-key ---- */

static int parse_key_block(const char *s, unsigned *ret) {
        uint32_t n;

        /* BLOCK_KEY0..5, or the eFuse block numbers BLOCK4..9. */
        if (strncasecmp(s, "BLOCK_KEY", 9) == 0 && safe_atou32(s + 9, 10, &n) >= 0 && n < EFUSE_KEY_BLOCKS) {
                *ret = n;
                return 0;
        }
        if (strncasecmp(s, "BLOCK", 5) == 0 && safe_atou32(s + 5, 10, &n) >= 0 &&
            n >= EFUSE_KEY_BLOCK_FIRST && n < EFUSE_KEY_BLOCK_FIRST + EFUSE_KEY_BLOCKS) {
                *ret = n - EFUSE_KEY_BLOCK_FIRST;
                return 0;
        }
        return -EINVAL;
}

static int do_burn_key(const EfuseTarget *t, const char *block_arg, const char *file, const char *purpose_arg,
                       bool no_read_protect) {
        _cleanup_(efuse_freep) Efuse *e = NULL;
        _cleanup_free_ uint8_t *key = NULL;
        EfuseKeyPurpose purpose;
        unsigned block;
        size_t len = 0;
        bool rp;
        int r;

        if (parse_key_block(block_arg, &block) < 0) {
                log_error("'%s' is not a key block (BLOCK_KEY0 … BLOCK_KEY5).", block_arg);
                return 2;
        }
        purpose = efuse_key_purpose_from_string(purpose_arg);
        if (purpose < 0) {
                log_error("'%s' is not a key purpose (e.g. HMAC_DOWN_DIGITAL_SIGNATURE, HMAC_UP, USER).", purpose_arg);
                return 2;
        }

        r = read_full_file(file, 64, &key, &len);
        if (r == -EFBIG || (r >= 0 && len != EFUSE_KEY_LEN)) {
                log_error("%s: a key file must hold exactly %d bytes%s.", file, EFUSE_KEY_LEN,
                          r == -EFBIG ? ", the file is larger" : "");
                if (key)
                        explicit_bzero(key, len);
                return 1;
        }
        if (r < 0) {
                log_error_errno(r, "%s: cannot read the key file: %m", file);
                return 1;
        }

        r = check_not_running(t);
        if (r >= 0)
                r = load(t, &e);
        if (r < 0) {
                explicit_bzero(key, len);
                return 1;
        }

        rp = !no_read_protect && efuse_key_purpose_read_protect_default(purpose);
        r = efuse_burn_key(e, block, key, purpose, rp);
        explicit_bzero(key, len);
        switch (r) {
        case 0:
                break;
        case -EEXIST:
                log_error("BLOCK_KEY%u is not empty (it already holds a key or its purpose is set); "
                          "eFuse keys can be burned only once.", block);
                return 1;
        case -EACCES:
                log_error("BLOCK_KEY%u, its KEY_PURPOSE_%u%s is write-protected.", block, block,
                          rp ? " or RD_DIS" : "");
                return 1;
        case -EINVAL:
                if (block == 5 && efuse_key_purpose_reverses_key(purpose))
                        log_error("BLOCK_KEY5 cannot hold an XTS_AES key (hardware quirk of KEY_PURPOSE_5).");
                else
                        log_error("Purpose %s cannot be burned on %s.", purpose_arg, esp_chip_to_string(t->chip));
                return 1;
        default:
                log_error_errno(r, "Burning BLOCK_KEY%u failed: %s", block, esp_err_to_name(r));
                return 1;
        }

        if (save(e, t) < 0)
                return 1;
        printf("Burned BLOCK_KEY%u (BLOCK%u) with purpose %s, %s, write-protected.\n",
               block, block + EFUSE_KEY_BLOCK_FIRST, efuse_key_purpose_to_string(purpose),
               efuse_key_is_readable(e, block) ? "readable" : "read-protected");
        return 0;
}

/* ---- burn ---- */

static int parse_field_value(const EfuseFieldInfo *f, const char *s, uint64_t *ret) {
        if (f->type == EFUSE_FIELD_PURPOSE) {
                EfuseKeyPurpose p = efuse_key_purpose_from_string(s);
                if (p >= 0) {
                        *ret = (uint64_t) p;
                        return 0;
                }
        }
        if (f->type == EFUSE_FIELD_MAC && strchr(s, ':')) {
                unsigned b[6];
                char tail;
                if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
                        return -EINVAL;
                *ret = 0;
                for (int i = 0; i < 6; i++)
                        *ret = (*ret << 8) | b[i];
                return 0;
        }
        if (f->type == EFUSE_FIELD_BOOL) {
                if (strcasecmp(s, "true") == 0) {
                        *ret = 1;
                        return 0;
                }
                if (strcasecmp(s, "false") == 0) {
                        *ret = 0;
                        return 0;
                }
        }
        return safe_atou64(s, 0, ret);
}

static int do_burn(const EfuseTarget *t, const char *name, const char *value) {
        _cleanup_(efuse_freep) Efuse *e = NULL;
        const EfuseFieldInfo *f;
        char err[512] = "";
        uint64_t v;
        int r;

        f = efuse_field_by_name(t->chip, name);
        if (!f) {
                log_error("'%s' is not an eFuse field of %s. Run 'espfleet efuse summary' for the list.",
                          name, esp_chip_to_string(t->chip));
                return 2;
        }
        if (f->type == EFUSE_FIELD_KEY) {
                log_error("%s is a key block; use 'espfleet efuse burn-key'.", f->name);
                return 2;
        }
        if (parse_field_value(f, value, &v) < 0) {
                log_error("%s: '%s' is not a valid value (a number%s).", f->name, value,
                          f->type == EFUSE_FIELD_PURPOSE ? " or a purpose name" :
                          f->type == EFUSE_FIELD_MAC ? " or aa:bb:cc:dd:ee:ff" : "");
                return 2;
        }

        r = check_not_running(t);
        if (r >= 0)
                r = load(t, &e);
        if (r < 0)
                return 1;
        r = efuse_burn_field_full(e, f->name, v, err, sizeof(err));
        if (r < 0) {
                log_error("%s", *err ? err : esp_err_to_name(r));
                return 1;
        }
        if (save(e, t) < 0)
                return 1;
        (void) efuse_field_format_value(e, f, err, sizeof(err));
        printf("%s = %s\n", f->name, err);
        return 0;
}

int verb_efuse(int argc, char **argv) {
        enum { ARG_CHIP = 0x100, ARG_FORMAT, ARG_NO_READ_PROTECT };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "chip", required_argument, NULL, ARG_CHIP },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "no-read-protect", no_argument, NULL, ARG_NO_READ_PROTECT },
                {},
        };
        _cleanup_(efuse_target_done) EfuseTarget t = {};
        const char *chip = NULL, *format = NULL, *sub;
        bool no_read_protect = false;
        int c, n;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        efuse_help();
                        return 0;
                case ARG_CHIP:
                        chip = optarg;
                        break;
                case ARG_FORMAT:
                        format = optarg;
                        break;
                case ARG_NO_READ_PROTECT:
                        no_read_protect = true;
                        break;
                default:
                        return 2;
                }

        n = argc - optind;
        if (n < 2) {
                efuse_help();
                return 2;
        }
        sub = argv[optind];

        if (streq(sub, "summary")) {
                if (n != 2) {
                        log_error("Usage: espfleet efuse summary DEVICE [--format json]");
                        return 2;
                }
        } else if (streq(sub, "burn-key")) {
                if (n != 5) {
                        log_error("Usage: espfleet efuse burn-key DEVICE BLOCK_KEYn FILE PURPOSE [--no-read-protect]");
                        return 2;
                }
        } else if (streq(sub, "burn")) {
                if (n != 4) {
                        log_error("Usage: espfleet efuse burn DEVICE FIELD VALUE");
                        return 2;
                }
        } else {
                log_error("Unknown efuse command '%s' (summary, burn-key, burn).", sub);
                return 2;
        }
        if (format && !streq(sub, "summary")) {
                log_error("--format applies to 'summary' only.");
                return 2;
        }
        if (no_read_protect && !streq(sub, "burn-key")) {
                log_error("--no-read-protect applies to 'burn-key' only.");
                return 2;
        }

        if (resolve_target(argv[optind + 1], chip, &t) < 0)
                return 1;

        if (streq(sub, "summary"))
                return do_summary(&t, format);
        if (streq(sub, "burn-key"))
                return do_burn_key(&t, argv[optind + 2], argv[optind + 3], argv[optind + 4], no_read_protect);
        return do_burn(&t, argv[optind + 2], argv[optind + 3]);
}

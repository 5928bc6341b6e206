/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "basic/fileio.h"
#include "basic/errmsg.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "fleet/fleet-dir.h"

#define MANIFEST_HEADER "index,id,mac"
#define MANIFEST_MAX_SIZE (64u * 1024u * 1024u)

struct Fleet {
        char *path;
        FleetConfig config;
        FleetDeviceEntry *devices;       /* sorted by index */
        size_t n_devices;
};

static bool file_exists(const char *path) {
        return access(path, F_OK) == 0;
}

/* ---- fleet.conf --------------------------------------------------------- */

static const char *const known_chips[] = { "esp32c3", "esp32s3" };

void fleet_config_init(FleetConfig *c) {
        *c = (FleetConfig) {
                .format = FLEET_FORMAT_VERSION,
                .ds_key_block = 1,
                .nvs_key_block = -1,
                .rsa_bits = 2048,
        };
        snprintf(c->chip, sizeof c->chip, "esp32c3");
        snprintf(c->firmware_version, sizeof c->firmware_version, "1.0.0");
}

typedef enum ConfKind {
        CONF_UINT,
        CONF_INT,
        CONF_BOOL,
        CONF_STRING,
        _CONF_KIND_MAX,
        _CONF_KIND_INVALID = -EINVAL,
} ConfKind;

typedef struct ConfKey {
        const char *name;
        ConfKind kind;
        size_t offset;
        size_t size;            /* strings: buffer size */
        long long min, max;     /* numbers */
} ConfKey;

static const ConfKey conf_keys[] = {
        { "format", CONF_UINT, offsetof(FleetConfig, format), 0, 0, INT_MAX },
        { "chip", CONF_STRING, offsetof(FleetConfig, chip), sizeof(((FleetConfig *) 0)->chip), 0, 0 },
        { "ds_key_block", CONF_UINT, offsetof(FleetConfig, ds_key_block), 0, 0, 5 },
        { "development", CONF_BOOL, offsetof(FleetConfig, development), 0, 0, 0 },
        { "nvs_encryption", CONF_BOOL, offsetof(FleetConfig, nvs_encryption), 0, 0, 0 },
        { "nvs_key_block", CONF_INT, offsetof(FleetConfig, nvs_key_block), 0, -1, 5 },
        { "signed_apps_no_secure_boot", CONF_BOOL, offsetof(FleetConfig, signed_apps_no_secure_boot), 0, 0, 0 },
        { "rsa_bits", CONF_UINT, offsetof(FleetConfig, rsa_bits), 0, 1024, 4096 },
        { "firmware_version", CONF_STRING, offsetof(FleetConfig, firmware_version),
          sizeof(((FleetConfig *) 0)->firmware_version), 0, 0 },
        { "fleet_size", CONF_UINT, offsetof(FleetConfig, fleet_size), 0, 0, INT_MAX },
};

static const ConfKey *conf_key_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(conf_keys); i++)
                if (streq(conf_keys[i].name, name))
                        return &conf_keys[i];
        return NULL;
}

static int conf_apply(const char *path, config_setting_t *s, const ConfKey *k, FleetConfig *c,
                      char *err, size_t errlen) {
        uint8_t *base = (uint8_t *) c + k->offset;
        int line = config_setting_source_line(s);
        int type = config_setting_type(s);

        switch (k->kind) {
        case CONF_UINT:
        case CONF_INT: {
                long long v;
                if (type == CONFIG_TYPE_INT)
                        v = config_setting_get_int(s);
                else if (type == CONFIG_TYPE_INT64)
                        v = config_setting_get_int64(s);
                else
                        return errf(err, errlen, -EINVAL, "%s:%d: '%s' must be an integer", path, line, k->name);
                if (v < k->min || v > k->max)
                        return errf(err, errlen, -ERANGE, "%s:%d: '%s' = %lld is out of range %lld..%lld",
                                    path, line, k->name, v, k->min, k->max);
                if (k->kind == CONF_UINT)
                        *(unsigned *) base = (unsigned) v;
                else
                        *(int *) base = (int) v;
                return 0;
        }
        case CONF_BOOL:
                if (type != CONFIG_TYPE_BOOL)
                        return errf(err, errlen, -EINVAL, "%s:%d: '%s' must be true or false", path, line, k->name);
                *(bool *) base = config_setting_get_bool(s);
                return 0;
        case CONF_STRING: {
                const char *v = config_setting_get_string(s);
                if (type != CONFIG_TYPE_STRING || !v)
                        return errf(err, errlen, -EINVAL, "%s:%d: '%s' must be a string", path, line, k->name);
                if (strlen(v) == 0 || strlen(v) >= k->size)
                        return errf(err, errlen, -ERANGE, "%s:%d: '%s' must be 1..%zu characters",
                                    path, line, k->name, k->size - 1);
                snprintf((char *) base, k->size, "%s", v);
                return 0;
        }
        case _CONF_KIND_MAX:
        case _CONF_KIND_INVALID:
                break;
        }
        return -EINVAL;
}

int fleet_config_load(const char *path, FleetConfig *ret, char *err, size_t errlen) {
        config_t cfg;
        FleetConfig c;
        config_setting_t *root, *s;
        int r = 0;

        fleet_config_init(&c);
        config_init(&cfg);
        if (!config_read_file(&cfg, path)) {
                if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                        r = errf(err, errlen, file_exists(path) ? -EIO : -ENOENT, "%s: cannot read: %s",
                                 path, file_exists(path) ? "I/O error" : "no such file");
                else
                        r = errf(err, errlen, -EBADMSG, "%s:%d: %s", path, config_error_line(&cfg),
                                 config_error_text(&cfg));
                goto out;
        }

        root = config_root_setting(&cfg);
        /* The format comes first: an unknown version must not be reported as
         * "unknown key" noise. */
        s = config_setting_get_member(root, "format");
        if (!s) {
                r = errf(err, errlen, -EPROTO,
                         "%s: no 'format' key: not a fleet.conf written by espfleet (expected format = %d)",
                         path, FLEET_FORMAT_VERSION);
                goto out;
        }
        r = conf_apply(path, s, conf_key_find("format"), &c, err, errlen);
        if (r < 0)
                goto out;
        if (c.format != FLEET_FORMAT_VERSION) {
                if (c.format > FLEET_FORMAT_VERSION)
                        r = errf(err, errlen, -EPROTO,
                                 "%s: fleet format %u was written by a newer espfleet; this one reads format %d. "
                                 "Use the espfleet that made the fleet.", path, c.format, FLEET_FORMAT_VERSION);
                else
                        r = errf(err, errlen, -EPROTO,
                                 "%s: fleet format %u is older than this espfleet's format %d and cannot be migrated "
                                 "(device keys must be re-created inside the DS). Provision a new fleet with "
                                 "'espfleet provision NEWDIR --pki PKI --count N'.", path, c.format, FLEET_FORMAT_VERSION);
                goto out;
        }

        for (int i = 0; (s = config_setting_get_elem(root, (unsigned) i)); i++) {
                const char *name = config_setting_name(s);
                const ConfKey *k = name ? conf_key_find(name) : NULL;
                if (!k) {
                        r = errf(err, errlen, -EINVAL, "%s:%d: unknown key '%s'", path,
                                 config_setting_source_line(s), strna(name));
                        goto out;
                }
                r = conf_apply(path, s, k, &c, err, errlen);
                if (r < 0)
                        goto out;
        }

        bool chip_ok = false;
        for (size_t i = 0; i < ELEMENTSOF(known_chips); i++)
                chip_ok = chip_ok || streq(c.chip, known_chips[i]);
        if (!chip_ok) {
                r = errf(err, errlen, -EINVAL, "%s: chip '%s' is not supported (esp32c3 or esp32s3)", path, c.chip);
                goto out;
        }
        if (c.nvs_encryption && c.nvs_key_block < 0) {
                r = errf(err, errlen, -EINVAL, "%s: nvs_encryption = true needs nvs_key_block (0..5)", path);
                goto out;
        }
        if (c.nvs_encryption && (unsigned) c.nvs_key_block == c.ds_key_block) {
                r = errf(err, errlen, -EINVAL, "%s: nvs_key_block and ds_key_block must differ", path);
                goto out;
        }
        if (c.rsa_bits % 1024 != 0) {
                r = errf(err, errlen, -EINVAL, "%s: rsa_bits = %u is not 1024, 2048, 3072 or 4096", path, c.rsa_bits);
                goto out;
        }
        *ret = c;
        r = 0;
out:
        config_destroy(&cfg);
        return r;
}

int fleet_config_save(const char *path, const FleetConfig *c) {
        _cleanup_free_ char *text = NULL, *size = NULL;
        int n;

        /* Only a sharded fleet records its size: other fleets' files stay as
         * they were. */
        if (c->fleet_size > 0 ? asprintf(&size, "fleet_size = %u;\n", c->fleet_size) < 0 : !(size = strdup("")))
                return -ENOMEM;

        n = asprintf(&text,
                     "# espfleet fleet directory settings, written by 'espfleet provision'.\n"
                     "# The fleet's devices were provisioned with these; do not edit by hand.\n"
                     "format = %u;\n"
                     "chip = \"%s\";\n"
                     "ds_key_block = %u;\n"
                     "development = %s;\n"
                     "nvs_encryption = %s;\n"
                     "nvs_key_block = %d;\n"
                     "signed_apps_no_secure_boot = %s;\n"
                     "rsa_bits = %u;\n"
                     "firmware_version = \"%s\";\n"
                     "%s",
                     c->format, c->chip, c->ds_key_block, c->development ? "true" : "false",
                     c->nvs_encryption ? "true" : "false", c->nvs_key_block,
                     c->signed_apps_no_secure_boot ? "true" : "false", c->rsa_bits, c->firmware_version, size);
        if (n < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, (size_t) n, 0644);
}

/* ---- ids, MACs, manifest ------------------------------------------------ */

bool fleet_id_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n >= FLEET_ID_MAX || s[0] == '.' || s[0] == '-')
                return false;
        return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* "esp-" and six lowercase hex digits: the form of an id made from a MAC. */
static bool id_is_mac_form(const char *s) {
        return strlen(s) == 10 && startswith(s, "esp-") && strspn(s + 4, "0123456789abcdef") == 6;
}

void fleet_id_from_mac(const uint8_t mac[FLEET_MAC_LEN], char id[FLEET_ID_MAX]) {
        snprintf(id, FLEET_ID_MAX, "esp-%02x%02x%02x", mac[3], mac[4], mac[5]);
}

void fleet_mac_to_string(const uint8_t mac[FLEET_MAC_LEN], char out[18]) {
        snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int fleet_mac_from_string(const char *s, uint8_t mac[FLEET_MAC_LEN]) {
        if (!s || strlen(s) != 17)
                return -EINVAL;
        for (size_t i = 0; i < FLEET_MAC_LEN; i++) {
                int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                if (i < FLEET_MAC_LEN - 1 && s[3 * i + 2] != ':')
                        return -EINVAL;
                mac[i] = (uint8_t) (hi << 4 | lo);
        }
        return 0;
}

static int cmp_index(const void *a, const void *b) {
        const FleetDeviceEntry *x = a, *y = b;
        return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_idp(const void *a, const void *b) {
        const FleetDeviceEntry *const *x = a, *const *y = b;
        return strcmp((*x)->id, (*y)->id);
}

/* Sorts by index and refuses duplicate indexes and ids (a duplicate MAC has
 * a duplicate id, since the id is made from the MAC). */
static int manifest_check(const char *path, FleetDeviceEntry *e, size_t n, char *err, size_t errlen) {
        _cleanup_free_ FleetDeviceEntry **byid = NULL;

        qsort(e, n, sizeof *e, cmp_index);
        for (size_t i = 1; i < n; i++)
                if (e[i].index == e[i - 1].index)
                        return errf(err, errlen, -EEXIST, "%s: index %u appears twice ('%s' and '%s')",
                                    path, e[i].index, e[i - 1].id, e[i].id);
        if (n == 0)
                return 0;
        byid = calloc(n, sizeof *byid);
        if (!byid)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                byid[i] = &e[i];
        qsort(byid, n, sizeof *byid, cmp_idp);
        for (size_t i = 1; i < n; i++)
                if (streq(byid[i]->id, byid[i - 1]->id))
                        return errf(err, errlen, -EEXIST, "%s: device id '%s' appears twice (indexes %u and %u)",
                                    path, byid[i]->id, byid[i - 1]->index, byid[i]->index);
        return 0;
}

int fleet_manifest_parse(const char *path, FleetDeviceEntry **ret, size_t *ret_n, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ FleetDeviceEntry *e = NULL;
        size_t size, n = 0, alloc = 0;
        char *p, *line;
        unsigned lineno = 0;
        int r;

        r = read_full_file(path, MANIFEST_MAX_SIZE, &data, &size);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot read: %s", path, strerror(-r));
        if (memchr(data, 0, size))
                return errf(err, errlen, -EBADMSG, "%s: contains NUL bytes, not a manifest", path);

        if (size == 0)
                return errf(err, errlen, -EBADMSG, "%s: empty file, expected the header '%s'", path, MANIFEST_HEADER);
        p = (char *) data;
        while ((line = strsep(&p, "\n"))) {
                char *fields[3], *q = line, *end;
                FleetDeviceEntry d = {};
                uint32_t idx;
                size_t nf = 0;

                lineno++;
                end = line + strlen(line);
                if (end > line && end[-1] == '\r')
                        *--end = 0;
                if (lineno == 1) {
                        if (!streq(line, MANIFEST_HEADER))
                                return errf(err, errlen, -EBADMSG, "%s:1: expected the header '%s', got '%.40s'",
                                            path, MANIFEST_HEADER, line);
                        continue;
                }
                if (*line == 0) {
                        if (p && *p)
                                return errf(err, errlen, -EBADMSG, "%s:%u: empty line", path, lineno);
                        continue;
                }
                while (q && nf < 3)
                        fields[nf++] = strsep(&q, ",");
                if (nf != 3 || q)
                        return errf(err, errlen, -EBADMSG, "%s:%u: expected 3 fields 'index,id,mac'", path, lineno);
                if (safe_atou32(fields[0], 10, &idx) < 0 || idx > FLEET_INDEX_MAX)
                        return errf(err, errlen, -EBADMSG, "%s:%u: bad index '%.20s'", path, lineno, fields[0]);
                d.index = idx;
                if (fleet_mac_from_string(fields[2], d.mac) < 0)
                        return errf(err, errlen, -EBADMSG, "%s:%u: bad MAC '%.20s' (expected aa:bb:cc:dd:ee:ff)",
                                    path, lineno, fields[2]);
                fleet_id_from_mac(d.mac, d.id);
                /* an id of the MAC's form must be that MAC's; another one is a
                 * replayed device's certificate CN */
                if (!streq(d.id, fields[1]) && (id_is_mac_form(fields[1]) || !fleet_id_is_valid(fields[1])))
                        return errf(err, errlen, -EBADMSG, "%s:%u: id '%.20s' does not match MAC %s (expected '%s')",
                                    path, lineno, fields[1], fields[2], d.id);
                snprintf(d.id, sizeof d.id, "%s", fields[1]);
                if (n == alloc) {
                        size_t na = MAX(alloc * 2, (size_t) 64);
                        FleetDeviceEntry *ne = reallocarray(e, na, sizeof *e);
                        if (!ne)
                                return -ENOMEM;
                        e = ne;
                        alloc = na;
                }
                e[n++] = d;
        }
        r = manifest_check(path, e, n, err, errlen);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(e);
        *ret_n = n;
        return 0;
}

int fleet_manifest_write(const char *path, const FleetDeviceEntry *e, size_t n) {
        _cleanup_free_ char *buf = NULL;
        size_t alloc = strlen(MANIFEST_HEADER) + 2 + n * 48, len = 0;

        buf = malloc(alloc);
        if (!buf)
                return -ENOMEM;
        len += (size_t) snprintf(buf, alloc, "%s\n", MANIFEST_HEADER);
        for (size_t i = 0; i < n; i++) {
                char mac[18];
                fleet_mac_to_string(e[i].mac, mac);
                len += (size_t) snprintf(buf + len, alloc - len, "%u,%s,%s\n", e[i].index, e[i].id, mac);
        }
        return write_file_atomic(path, buf, len, 0644);
}

/* ---- the fleet object --------------------------------------------------- */

Fleet *fleet_free(Fleet *f) {
        if (!f)
                return NULL;
        free(f->path);
        free(f->devices);
        free(f);
        return NULL;
}

const char *fleet_path(const Fleet *f) {
        return f->path;
}

const FleetConfig *fleet_config(const Fleet *f) {
        return &f->config;
}

size_t fleet_n_devices(const Fleet *f) {
        return f->n_devices;
}

const FleetDeviceEntry *fleet_device_entry(const Fleet *f, size_t i) {
        return i < f->n_devices ? &f->devices[i] : NULL;
}

const FleetDeviceEntry *fleet_find_device(const Fleet *f, const char *id) {
        for (size_t i = 0; i < f->n_devices; i++)
                if (streq(f->devices[i].id, id))
                        return &f->devices[i];
        return NULL;
}

const FleetDeviceEntry *fleet_find_index(const Fleet *f, unsigned index) {
        FleetDeviceEntry key = { .index = index };
        if (f->n_devices == 0)
                return NULL; /* an empty manifest has no array (bsearch wants one) */
        return bsearch(&key, f->devices, f->n_devices, sizeof key, cmp_index);
}

char *fleet_file(const Fleet *f, const char *file) {
        return path_join(f->path, file);
}

char *fleet_device_dir(const Fleet *f, const char *id) {
        char *p;
        if (asprintf(&p, "%s/" FLEET_DEVICES_DIR "/%s", f->path, id) < 0)
                return NULL;
        return p;
}

char *fleet_device_file(const Fleet *f, const char *id, const char *file) {
        char *p;
        if (asprintf(&p, "%s/" FLEET_DEVICES_DIR "/%s/%s", f->path, id, file) < 0)
                return NULL;
        return p;
}

/* Files an older espfleet kept next to a device: a plaintext key. */
static const char *const legacy_key_files[] = { "device.key", "key.pem", "private.key" };

static int fleet_check_devices(Fleet *f, char *err, size_t errlen) {
        for (size_t i = 0; i < f->n_devices; i++) {
                const FleetDeviceEntry *d = &f->devices[i];
                static const char *const required[] = { FLEET_DEVICE_EFUSE_FILE, FLEET_DEVICE_FLASH_FILE };
                _cleanup_free_ char *dir = fleet_device_dir(f, d->id);
                struct stat st;

                if (!dir)
                        return -ENOMEM;
                if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
                        return errf(err, errlen, -ENOENT,
                                    "%s/" FLEET_MANIFEST_FILE ": device %u '%s' is listed but its directory %s is missing",
                                    f->path, d->index, d->id, dir);
                for (size_t k = 0; k < ELEMENTSOF(legacy_key_files); k++) {
                        _cleanup_free_ char *p = path_join(dir, legacy_key_files[k]);
                        if (!p)
                                return -ENOMEM;
                        if (file_exists(p))
                                return errf(err, errlen, -EPROTO,
                                            "%s: a plaintext private key in the fleet directory (older espfleet format); "
                                            "this format keeps device keys only as DS ciphertext. Provision a new "
                                            "fleet and delete this one.", p);
                }
                for (size_t k = 0; k < ELEMENTSOF(required); k++) {
                        _cleanup_free_ char *p = path_join(dir, required[k]);
                        if (!p)
                                return -ENOMEM;
                        if (stat(p, &st) < 0)
                                return errf(err, errlen, -ENOENT, "%s: missing (device %u '%s' of %s/" FLEET_MANIFEST_FILE ")",
                                            p, d->index, d->id, f->path);
                        if (!S_ISREG(st.st_mode))
                                return errf(err, errlen, -EBADMSG, "%s: not a regular file", p);
                }
        }
        return 0;
}

int fleet_open(const char *path, Fleet **ret, char *err, size_t errlen) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        _cleanup_free_ char *conf = NULL, *manifest = NULL, *ca = NULL;
        struct stat st;
        int r;

        if (stat(path, &st) < 0)
                return errf(err, errlen, -errno, "%s: cannot open fleet directory: %s", path, strerror(errno));
        if (!S_ISDIR(st.st_mode))
                return errf(err, errlen, -ENOTDIR, "%s: not a directory", path);

        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->path = strdup(path);
        conf = path_join(path, FLEET_CONF_FILE);
        manifest = path_join(path, FLEET_MANIFEST_FILE);
        ca = path_join(path, FLEET_CA_FILE);
        if (!f->path || !conf || !manifest || !ca)
                return -ENOMEM;

        if (!file_exists(conf)) {
                if (file_exists(manifest))
                        return errf(err, errlen, -EPROTO,
                                    "%s: has a manifest.csv but no fleet.conf: a fleet from an older espfleet, whose "
                                    "device keys were plain files. It cannot be migrated into the DS format: provision a "
                                    "new fleet with 'espfleet provision NEWDIR --pki PKI --count N'.", path);
                return errf(err, errlen, -ENOENT, "%s: not a fleet directory (no fleet.conf); create one with "
                            "'espfleet provision %s --pki PKI --count N'", path, path);
        }
        r = fleet_config_load(conf, &f->config, err, errlen);
        if (r < 0)
                return r;
        if (!file_exists(manifest))
                return errf(err, errlen, -ENOENT, "%s: missing; the fleet directory is incomplete", manifest);
        r = fleet_manifest_parse(manifest, &f->devices, &f->n_devices, err, errlen);
        if (r < 0)
                return r;
        if (f->n_devices > 0 && !file_exists(ca))
                return errf(err, errlen, -ENOENT, "%s: missing (the fleet CA certificate)", ca);
        r = fleet_check_devices(f, err, errlen);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(f);
        return 0;
}

int fleet_create(const char *path, const FleetConfig *c, Fleet **ret, char *err, size_t errlen) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        _cleanup_free_ char *conf = NULL, *manifest = NULL, *devs = NULL;
        int r;

        conf = path_join(path, FLEET_CONF_FILE);
        manifest = path_join(path, FLEET_MANIFEST_FILE);
        devs = path_join(path, FLEET_DEVICES_DIR);
        if (!conf || !manifest || !devs)
                return -ENOMEM;
        if (file_exists(conf))
                return errf(err, errlen, -EEXIST, "%s: already exists", conf);
        if (file_exists(manifest))
                return errf(err, errlen, -EPROTO,
                            "%s: has a manifest.csv but no fleet.conf (an older espfleet's fleet?); refusing to touch it. "
                            "Provision into a new directory.", path);
        r = mkdir_p(devs, 0755);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot create: %s", devs, strerror(-r));

        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->path = strdup(path);
        if (!f->path)
                return -ENOMEM;
        f->config = *c;
        f->config.format = FLEET_FORMAT_VERSION;

        r = fleet_manifest_write(manifest, NULL, 0);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot write: %s", manifest, strerror(-r));
        /* fleet.conf last: its presence marks a complete fleet dir. */
        r = fleet_config_save(conf, &f->config);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot write: %s", conf, strerror(-r));
        *ret = TAKE_PTR(f);
        return 0;
}

int fleet_add_devices(Fleet *f, const FleetDeviceEntry *e, size_t n) {
        _cleanup_free_ FleetDeviceEntry *all = NULL;
        _cleanup_free_ char *manifest = NULL;
        size_t total = f->n_devices + n;
        int r;

        all = reallocarray(NULL, MAX(total, (size_t) 1), sizeof *all);
        manifest = path_join(f->path, FLEET_MANIFEST_FILE);
        if (!all || !manifest)
                return -ENOMEM;
        if (f->n_devices > 0)
                memcpy(all, f->devices, f->n_devices * sizeof *all);
        if (n > 0)
                memcpy(all + f->n_devices, e, n * sizeof *all);
        r = manifest_check(manifest, all, total, NULL, 0);
        if (r < 0)
                return r;
        r = fleet_manifest_write(manifest, all, total);
        if (r < 0)
                return r;
        free(f->devices);
        f->devices = TAKE_PTR(all);
        f->n_devices = total;
        return 0;
}

char *fleet_resolve_device_arg(const char *arg, char *err, size_t errlen) {
        _cleanup_free_ char *efuse = NULL, *copy = NULL;
        char *slash, *p;

        efuse = path_join(arg, FLEET_DEVICE_EFUSE_FILE);
        if (!efuse)
                return NULL;
        if (file_exists(efuse))
                return strdup(arg);

        copy = strdup(arg);
        if (!copy)
                return NULL;
        /* FLEETDIR/ID, with any trailing slashes dropped. */
        for (size_t l = strlen(copy); l > 1 && copy[l - 1] == '/'; l--)
                copy[l - 1] = 0;
        slash = strrchr(copy, '/');
        if (slash && slash[1]) {
                *slash = 0;
                if (asprintf(&p, "%s/" FLEET_DEVICES_DIR "/%s", *copy ? copy : "/", slash + 1) < 0)
                        return NULL;
                free(efuse);
                efuse = path_join(p, FLEET_DEVICE_EFUSE_FILE);
                if (efuse && file_exists(efuse))
                        return p;
                free(p);
        }
        errf(err, errlen, -ENOENT, "'%s' is neither a device directory (with " FLEET_DEVICE_EFUSE_FILE
             ") nor FLEETDIR/ID of a provisioned device", arg);
        return NULL;
}

/* ---- run locks ---------------------------------------------------------- */

static char *pid_record_path(const char *fleet_path, unsigned first) {
        char *p;
        if (asprintf(&p, "%s/" FLEET_RUN_DIR "/lock-%u.pid", fleet_path, first) < 0)
                return NULL;
        return p;
}

static bool pid_alive(pid_t pid) {
        return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* The pid of whoever recorded a lock range covering `index`; 0 if unknown. */
static pid_t lock_owner_pid(const char *fleet_path, unsigned index) {
        _cleanup_free_ char *dir = path_join(fleet_path, FLEET_RUN_DIR);
        DIR *d;
        struct dirent *de;
        pid_t found = 0;

        if (!dir || !(d = opendir(dir)))
                return 0;
        while ((de = readdir(d))) {
                _cleanup_free_ uint8_t *data = NULL;
                _cleanup_free_ char *p = NULL;
                unsigned pid, first, count;
                char tail;

                if (!strneq(de->d_name, "lock-", 5))
                        continue;
                p = path_join(dir, de->d_name);
                if (!p || read_full_file(p, 256, &data, NULL) < 0)
                        continue;
                if (sscanf((char *) data, "%u %u %u%c", &pid, &first, &count, &tail) != 4 || tail != '\n')
                        continue;
                if (index < first || index - first >= count)
                        continue;
                if (pid_alive((pid_t) pid)) {
                        found = (pid_t) pid;
                        break;
                }
        }
        closedir(d);
        return found;
}

/* Is some byte of [first, first+count) write-locked? 1 + *ret_index, 0, or -errno. */
static int lock_probe(int fd, unsigned first, unsigned count, unsigned *ret_index) {
        struct flock fl = {
                .l_type = F_WRLCK,
                .l_whence = SEEK_SET,
                .l_start = first,
                .l_len = count,
        };
        if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
                return -errno;
        if (fl.l_type == F_UNLCK)
                return 0;
        if (ret_index)
                *ret_index = (unsigned) MAX((off_t) first, fl.l_start);
        return 1;
}

static const char *fleet_id_for_index(Fleet *f, unsigned index) {
        const FleetDeviceEntry *e = fleet_find_index(f, index);
        return e ? e->id : "?";
}

int fleet_lock_devices(Fleet *f, unsigned first, unsigned count, int *ret_fd, char *err, size_t errlen) {
        _cleanup_free_ char *lock = NULL, *run = NULL, *rec = NULL, *text = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct flock fl = {
                .l_type = F_WRLCK,
                .l_whence = SEEK_SET,
                .l_start = first,
                .l_len = count,
        };
        int r, n;

        if (count == 0 || first > FLEET_INDEX_MAX || count > FLEET_INDEX_MAX - first + 1)
                return errf(err, errlen, -EINVAL, "bad device range %u+%u", first, count);
        lock = path_join(f->path, FLEET_LOCK_FILE);
        run = path_join(f->path, FLEET_RUN_DIR);
        rec = pid_record_path(f->path, first);
        if (!lock || !run || !rec)
                return -ENOMEM;

        fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0)
                return errf(err, errlen, -errno, "%s: cannot open: %s", lock, strerror(errno));
        if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
                unsigned busy = first;
                pid_t pid;
                r = -errno;
                if (r != -EAGAIN && r != -EACCES)
                        return errf(err, errlen, r, "%s: cannot lock: %s", lock, strerror(-r));
                (void) lock_probe(fd, first, count, &busy);
                pid = lock_owner_pid(f->path, busy);
                if (pid > 0)
                        return errf(err, errlen, -EBUSY, "device %u '%s' is already running in espfleetd (pid %d)",
                                    busy, fleet_id_for_index(f, busy), (int) pid);
                return errf(err, errlen, -EBUSY, "device %u '%s' is already running in espfleetd",
                            busy, fleet_id_for_index(f, busy));
        }

        r = mkdir_p(run, 0755);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot create: %s", run, strerror(-r));
        n = asprintf(&text, "%d %u %u\n", (int) getpid(), first, count);
        if (n < 0)
                return -ENOMEM;
        r = write_file_atomic(rec, text, (size_t) n, 0644);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot write: %s", rec, strerror(-r));

        *ret_fd = TAKE_FD(fd);
        return 0;
}

void fleet_unlock_devices(Fleet *f, unsigned first, int fd) {
        _cleanup_free_ char *rec = pid_record_path(f->path, first);
        /* Drop the record first: it is only trusted while the lock is held. */
        if (rec)
                (void) unlink(rec);
        if (fd >= 0)
                close(fd);
}

static int lock_query(const char *fleet_path, unsigned index, pid_t *ret_pid) {
        _cleanup_free_ char *lock = path_join(fleet_path, FLEET_LOCK_FILE);
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (!lock)
                return -ENOMEM;
        fd = open(lock, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        r = lock_probe(fd, index, 1, NULL);
        if (r <= 0)
                return r;
        if (ret_pid)
                *ret_pid = lock_owner_pid(fleet_path, index);
        return 1;
}

int fleet_device_running(Fleet *f, unsigned index, pid_t *ret_pid) {
        if (ret_pid)
                *ret_pid = 0;
        return lock_query(f->path, index, ret_pid);
}

int fleet_device_check_not_running(const char *device_dir, char *err, size_t errlen) {
        _cleanup_free_ char *real = NULL, *fleet = NULL, *conf = NULL, *manifest = NULL;
        _cleanup_free_ FleetDeviceEntry *e = NULL;
        const char *id;
        char *slash;
        size_t n = 0;
        pid_t pid = 0;
        int r;

        real = realpath(device_dir, NULL);
        if (!real)
                return errf(err, errlen, -errno, "%s: %s", device_dir, strerror(errno));
        slash = strrchr(real, '/');
        if (!slash || slash == real)
                return 0;
        id = slash + 1;
        fleet = strndup(real, (size_t) (slash - real));
        if (!fleet)
                return -ENOMEM;
        /* FLEET/devices/<id>: anything else is a stand-alone device dir that
         * no daemon can run. */
        slash = strrchr(fleet, '/');
        if (!slash || !streq(slash + 1, FLEET_DEVICES_DIR))
                return 0;
        *slash = 0;
        conf = path_join(*fleet ? fleet : "/", FLEET_CONF_FILE);
        manifest = path_join(*fleet ? fleet : "/", FLEET_MANIFEST_FILE);
        if (!conf || !manifest)
                return -ENOMEM;
        if (!file_exists(conf) || !file_exists(manifest))
                return 0;
        r = fleet_manifest_parse(manifest, &e, &n, err, errlen);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (!streq(e[i].id, id))
                        continue;
                r = lock_query(*fleet ? fleet : "/", e[i].index, &pid);
                if (r < 0)
                        return errf(err, errlen, r, "%s/" FLEET_LOCK_FILE ": cannot check: %s", fleet, strerror(-r));
                if (r == 0)
                        return 0;
                if (pid > 0)
                        return errf(err, errlen, -EBUSY,
                                    "device '%s' is running in espfleetd (pid %d); stop the daemon first", id, (int) pid);
                return errf(err, errlen, -EBUSY, "device '%s' is running in espfleetd; stop the daemon first", id);
        }
        return 0;
}

int fleet_device_enable_store(Flash *flash, const PartitionTable *t) {
        FlashRange ranges[FLASH_MAX_STORE_RANGES];
        size_t n = 0;

        if (!flash || !t)
                return -EINVAL;
        /* The app slots: what the fleet's devices hold alike. NVS, otadata
         * and esp_secure_cert are each device's own and stay in its file. */
        for (size_t i = 0; i < partition_table_count(t) && n < ELEMENTSOF(ranges); i++) {
                const Partition *p = partition_table_get(t, i);
                if (p->type == PARTITION_TYPE_APP && p->offset % FLASH_SECTOR_SIZE == 0 && p->size % FLASH_SECTOR_SIZE == 0)
                        ranges[n++] = (FlashRange) { p->offset, p->size };
        }
        return flash_enable_store(flash, "../../" FLEET_STORE_DIR, ranges, n);
}

static int mark_digest(const uint8_t digest[32], void *userdata) {
        return sector_store_scan_mark(userdata, digest);
}

int fleet_store_scan(const Fleet *f, SectorStoreScanFlags flags, SectorStoreStats *ret, uint64_t *ret_map_bytes) {
        _cleanup_(sector_store_scan_freep) SectorStoreScan *sc = NULL;
        _cleanup_free_ char *dir = NULL;
        uint64_t map_bytes = 0;
        int r;

        dir = fleet_file(f, FLEET_STORE_DIR);
        if (!dir)
                return -ENOMEM;
        r = sector_store_scan_begin(dir, flags, &sc);
        if (r < 0)
                return r;
        /* Every map under devices/, whether the manifest lists it yet or
         * not (a provision run in progress): garbage is what none names. */
        _cleanup_free_ char *devices = fleet_file(f, FLEET_DEVICES_DIR);
        if (!devices)
                return -ENOMEM;
        DIR *d = opendir(devices);
        if (!d)
                return -errno;
        struct dirent *de;
        while ((de = readdir(d))) {
                _cleanup_free_ char *map = NULL;
                struct stat st;

                if (de->d_name[0] == '.')
                        continue;
                if (asprintf(&map, "%s/%s/" FLEET_DEVICE_FLASH_FILE ".map", devices, de->d_name) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (stat(map, &st) >= 0)
                        map_bytes += (uint64_t) st.st_blocks * 512;
                r = flash_map_for_each_digest(map, mark_digest, sc);
                if (r < 0)
                        break;
        }
        closedir(d);
        if (r < 0)
                return r;
        if (ret_map_bytes)
                *ret_map_bytes = map_bytes;
        return sector_store_scan_end(sc, NULL, NULL, ret);
}

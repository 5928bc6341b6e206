/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>

#include <openssl/x509.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "basic/esp-err.h"
#include "cli/cli.h"
#include "cli/cli-json.h"
#include "dsemu/efuse.h"
#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"
#include "image/app-image.h"
#include "nvs/nvs.h"

static void device_help(void) {
        printf("Usage: espfleet device list FLEETDIR [--format text|json]\n"
               "       espfleet device show FLEETDIR ID|INDEX [--format text|json]\n\n"
               "list: index, id, MAC, running firmware version and whether a daemon runs the device.\n"
               "show: everything about one device (certificate, DS key, eFuse security state, boot\n"
               "      slot and firmware, settings). Read-protected eFuse keys are never shown.\n"
               "Both read a running fleet too: what they print is a snapshot.\n\n"
               "Options:\n"
               "  --format text|json       output format (default text)\n");
}

/* --format text|json and --help for list and show: the index of the first
 * operand, or a negative exit status to return (-1: 0 after --help, -2: 2). */
static int parse_options(int argc, char **argv, bool *ret_json) {
        static const struct option options[] = {
                { "format", required_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        *ret_json = false;
        optind = 1;
        while ((c = getopt_long(argc, argv, "f:h", options, NULL)) >= 0)
                switch (c) {
                case 'f':
                        if (streq(optarg, "json"))
                                *ret_json = true;
                        else if (!streq(optarg, "text")) {
                                log_error("--format '%s' is not one of text, json.", optarg);
                                return -2;
                        }
                        break;
                case 'h':
                        device_help();
                        return -1;
                default:
                        return -2;
                }
        return optind;
}

/* Version of the app the bootloader would pick (otadata, §7.2 steps 1–2),
 * from its app descriptor. Fills `slot` (-1 if none) and `state`. */
static int running_version(Flash *flash, const PartitionTable *t, char *version, size_t size, int *ret_slot,
                           uint32_t *ret_state, bool *ret_blank) {
        const Partition *otad = partition_table_find(t, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_OTA), *app;
        AppImageVerifier *v = NULL;
        uint8_t head[APP_IMAGE_PEEK_LEN];
        FlashRegion reg;
        Otadata od;
        int slot, r;

        *ret_slot = -1;
        *ret_state = OTA_IMG_UNDEFINED;
        *ret_blank = false;
        snprintf(version, size, "-");
        if (!otad)
                return -ENOENT;
        reg = partition_region(flash, otad);
        r = otadata_read(&reg, &od);
        if (r < 0)
                return r;
        slot = otadata_boot_slot(&od, partition_table_ota_count(t));
        if (slot < 0) {
                /* blank otadata: the bootloader boots the first OTA slot (there is no factory app here) */
                if (!partition_table_find_ota(t, 0))
                        return slot;
                *ret_slot = 0;
                *ret_state = OTA_IMG_UNDEFINED;
                *ret_blank = true;
                slot = 0;
        } else {
                *ret_slot = slot;
                *ret_state = od.entry[od.active].ota_state;
        }
        app = partition_table_find_ota(t, (unsigned) slot);
        if (!app)
                return -ENOENT;
        reg = partition_region(flash, app);
        r = flash_region_read(&reg, 0, head, sizeof head);
        if (r < 0)
                return r;
        r = app_image_verifier_new(app->size, &v);
        if (r < 0)
                return r;
        r = app_image_verifier_feed(v, head, sizeof head, NULL, 0);
        if (r >= 0 && app_image_verifier_have_desc(v))
                snprintf(version, size, "%s", app_image_verifier_desc(v)->version);
        else if (r >= 0)
                r = -ESP_ERR_IMAGE_INVALID;
        app_image_verifier_free(v);
        return r;
}

/* Cheap: opens only the flash image and its otadata. */
static void list_version(Fleet *f, const FleetDeviceEntry *e, char *version, size_t size) {
        _cleanup_free_ char *path = fleet_device_file(f, e->id, FLEET_DEVICE_FLASH_FILE);
        PartitionTable *t = NULL;
        Flash *flash = NULL;
        uint32_t state;
        int slot;
        bool blank;

        snprintf(version, size, "?");
        if (!path || flash_open(path, FLASH_OPEN_READ_ONLY, 0, &flash) < 0)
                return;
        if (partition_table_load(flash, &t, NULL, 0) >= 0)
                (void) running_version(flash, t, version, size, &slot, &state, &blank);
        partition_table_free(t);
        flash_close(flash);
}

static int device_list(int argc, char **argv) {
        _cleanup_(json_object_putp) json_object *root = NULL, *devices = NULL;
        _cleanup_(fleet_freep) Fleet *f = NULL;
        char err[512] = "";
        bool json;
        int r, k;

        k = parse_options(argc, argv, &json);
        if (k < 0)
                return k == -1 ? 0 : 2;
        if (argc - k != 1) {
                log_error("device list takes exactly one FLEETDIR argument. See 'espfleet device --help'.");
                return 2;
        }
        r = fleet_open(argv[k], &f, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return 1;
        }
        if (json) {
                root = json_object_new_object();
                devices = json_object_new_array();
                if (!root || !devices)
                        return log_oom(), 1;
        } else
                printf("%-8s %-12s %-18s %-16s %s\n", "INDEX", "ID", "MAC", "VERSION", "STATE");
        for (size_t i = 0; i < fleet_n_devices(f); i++) {
                const FleetDeviceEntry *e = fleet_device_entry(f, i);
                char mac[18], version[40], state[40];
                pid_t pid = 0;

                fleet_mac_to_string(e->mac, mac);
                list_version(f, e, version, sizeof version);
                r = fleet_device_running(f, e->index, &pid);
                if (json) {
                        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

                        if (!o ||
                            cli_json_add(o, "index", json_object_new_uint64(e->index)) < 0 ||
                            cli_json_add(o, "id", json_object_new_string(e->id)) < 0 ||
                            cli_json_add(o, "mac", json_object_new_string(mac)) < 0 ||
                            /* "?" when the flash cannot be read, "-" when no app boots */
                            (strchr("?-", version[0]) && !version[1] ? cli_json_add_null(o, "version")
                                                                     : cli_json_add(o, "version", cli_json_new_text(version))) < 0 ||
                            (r < 0 ? cli_json_add_null(o, "running")
                                   : cli_json_add(o, "running", json_object_new_boolean(r > 0))) < 0 ||
                            (r > 0 && pid > 0 ? cli_json_add(o, "pid", json_object_new_int64(pid))
                                              : cli_json_add_null(o, "pid")) < 0 ||
                            cli_json_append(devices, TAKE_PTR(o)) < 0)
                                return log_oom(), 1;
                        continue;
                }
                if (r > 0 && pid > 0)
                        snprintf(state, sizeof state, "running (pid %d)", (int) pid);
                else
                        snprintf(state, sizeof state, "%s", r > 0 ? "running" : r == 0 ? "stopped" : "?");
                printf("%-8u %-12s %-18s %-16s %s\n", e->index, e->id, mac, version, state);
        }
        if (json) {
                if (cli_json_add(root, "fleet", cli_json_new_text(argv[k])) < 0 ||
                    cli_json_add(root, "chip", json_object_new_string(fleet_config(f)->chip)) < 0 ||
                    cli_json_add(root, "devices", TAKE_PTR(devices)) < 0)
                        return log_oom(), 1;
                return cli_json_print(root) < 0 ? 1 : 0;
        }
        printf("%zu device%s\n", fleet_n_devices(f), fleet_n_devices(f) == 1 ? "" : "s");
        return 0;
}

static void print_time(const char *label, const ASN1_TIME *t) {
        BIO *b = BIO_new_fp(stdout, BIO_NOCLOSE);
        printf("  %-22s ", label);
        if (b) {
                ASN1_TIME_print(b, t);
                BIO_free(b);
        }
        printf("\n");
}

static void print_name(const char *label, const X509_NAME *n) {
        char buf[256];
        X509_NAME_oneline(n, buf, sizeof buf);
        printf("  %-22s %s\n", label, buf);
}

/* The secure_esp settings as the firmware reads them from NVS. Each value
 * is set, or its error (ESP_ERR_NVS_NOT_FOUND: never written). `error`: the
 * partition itself cannot be read; `what` says why. */
typedef struct Settings {
        int error;
        const char *what;
        char url[300];
        int url_r;
        uint8_t use_url;
        int use_url_r;
        uint32_t interval;
        int interval_r;
} Settings;

static void read_settings(const FleetDevice *d, const FleetConfig *c, Settings *ret) {
        const Partition *p = partition_table_find_by_name(d->partitions, "nvs");
        NvsXtsKeys keys, *kp = NULL;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        FlashRegion reg;
        size_t len;
        int r;

        *ret = (Settings) {};
        if (!p) {
                *ret = (Settings) { .error = -ENOENT, .what = "no nvs partition" };
                return;
        }
        if (c->nvs_encryption && c->nvs_key_block >= 0) {
                if (fleet_device_nvs_keys(d, (unsigned) c->nvs_key_block, &keys) < 0) {
                        *ret = (Settings) { .error = -ESP_ERR_NVS_XTS_CFG_FAILED,
                                            .what = "cannot derive the NVS keys from the HMAC_UP eFuse key" };
                        return;
                }
                kp = &keys;
        }
        reg = partition_region(d->flash, p);
        r = nvs_open_region(&reg, kp, NVS_OPEN_READ_ONLY, &nvs);
        explicit_bzero(&keys, sizeof keys);
        if (r >= 0)
                r = nvs_handle_open(nvs, "secure_esp", NVS_READONLY, &h);
        if (r < 0) {
                *ret = (Settings) { .error = r, .what = esp_err_to_name(r) };
                nvs_close(nvs);
                return;
        }
        len = sizeof ret->url;
        ret->url_r = nvs_get_str(h, "url", ret->url, &len);
        ret->use_url_r = nvs_get_u8(h, "use_url", &ret->use_url);
        ret->interval_r = nvs_get_u32(h, "interval", &ret->interval);
        nvs_handle_close(h);
        nvs_close(nvs);
}

static void print_settings(const Settings *st) {
        if (st->error < 0) {
                printf("  (%s)\n", st->what);
                return;
        }
        printf("  %-22s %s\n", "url", st->url_r >= 0 ? (*st->url ? st->url : "(empty)") : esp_err_to_name(st->url_r));
        if (st->use_url_r >= 0)
                printf("  %-22s %u\n", "use_url", st->use_url);
        else
                printf("  %-22s %s\n", "use_url", esp_err_to_name(st->use_url_r));
        if (st->interval_r >= 0)
                printf("  %-22s %u s\n", "interval", st->interval);
        else
                printf("  %-22s %s\n", "interval", st->interval_r == -ESP_ERR_NVS_NOT_FOUND ? "(not set: daemon default)"
                                                                                          : esp_err_to_name(st->interval_r));
}

static char *asn1_time_string(const ASN1_TIME *t) {
        struct tm tm;
        char *s;

        if (ASN1_TIME_to_tm(t, &tm) != 1)
                return NULL;
        if (asprintf(&s, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec) < 0)
                return NULL;
        return s;
}

static json_object *json_x509_name(const X509_NAME *n) {
        char buf[256];
        X509_NAME_oneline(n, buf, sizeof buf);
        return cli_json_new_text(buf);
}

/* An NVS value, or null with its error's name under "<key>_error". */
static int json_setting(json_object *o, const char *key, int r, json_object *val) {
        char k[32];

        if (r >= 0)
                return cli_json_add(o, key, val);
        json_object_put(val);
        snprintf(k, sizeof k, "%s_error", key);
        if (cli_json_add_null(o, key) < 0)
                return -ENOMEM;
        return cli_json_add(o, k, json_object_new_string(esp_err_to_name(r)));
}

typedef struct ShowData {
        FleetDevice *d;
        const FleetConfig *c;
        int running;            /* > 0 running, 0 stopped, < 0 unknown */
        pid_t pid;
        char mac[18];
        char version[40];
        int boot_r, slot;
        uint32_t state;
        bool blank;
        Settings settings;
} ShowData;

static int show_json(const ShowData *x) {
        _cleanup_(json_object_putp) json_object *root = NULL, *cert = NULL, *efuse = NULL, *fw = NULL, *set = NULL;
        _cleanup_free_ char *not_after = asn1_time_string(X509_get0_notAfter(x->d->cert));
        EfuseKeyPurpose purpose = efuse_key_purpose(x->d->efuse, x->d->ds_key_block);
        const char *ps = efuse_key_purpose_to_string(purpose), *st = ota_img_state_to_string(x->state);

        root = json_object_new_object();
        cert = json_object_new_object();
        efuse = json_object_new_object();
        fw = json_object_new_object();
        set = json_object_new_object();
        if (!root || !cert || !efuse || !fw || !set)
                return -ENOMEM;
        if (cli_json_add(root, "id", json_object_new_string(x->d->id)) < 0 ||
            cli_json_add(root, "index", json_object_new_uint64(x->d->index)) < 0 ||
            cli_json_add(root, "mac", json_object_new_string(x->mac)) < 0 ||
            cli_json_add(root, "directory", cli_json_new_text(x->d->dir)) < 0 ||
            cli_json_add(root, "chip", json_object_new_string(x->c->chip)) < 0 ||
            (x->running < 0 ? cli_json_add_null(root, "running")
                            : cli_json_add(root, "running", json_object_new_boolean(x->running > 0))) < 0 ||
            (x->running > 0 && x->pid > 0 ? cli_json_add(root, "pid", json_object_new_int64(x->pid))
                                          : cli_json_add_null(root, "pid")) < 0)
                return -ENOMEM;

        if (cli_json_add(cert, "subject", json_x509_name(X509_get_subject_name(x->d->cert))) < 0 ||
            cli_json_add(cert, "issuer", json_x509_name(X509_get_issuer_name(x->d->cert))) < 0 ||
            (not_after ? cli_json_add(cert, "not_after", json_object_new_string(not_after))
                       : cli_json_add_null(cert, "not_after")) < 0 ||
            cli_json_add(cert, "key", json_object_new_string("rsa")) < 0 ||
            cli_json_add(cert, "rsa_bits", json_object_new_uint64(x->d->rsa_bits)) < 0 ||
            cli_json_add(cert, "private_key", json_object_new_string("ds_ciphertext")) < 0 ||
            cli_json_add(root, "certificate", TAKE_PTR(cert)) < 0)
                return -ENOMEM;

        /* the key's value is never part of it: only where it is and who may use it */
        if (cli_json_add(efuse, "ds_key_block", json_object_new_uint64(x->d->ds_key_block)) < 0 ||
            (ps ? cli_json_add(efuse, "ds_key_purpose", json_object_new_string(ps))
                : cli_json_add(efuse, "ds_key_purpose", json_object_new_uint64(purpose))) < 0 ||
            cli_json_add(efuse, "ds_key_readable",
                         json_object_new_boolean(efuse_key_is_readable(x->d->efuse, x->d->ds_key_block))) < 0 ||
            cli_json_add(efuse, "secure_boot_enabled", json_object_new_boolean(efuse_secure_boot_enabled(x->d->efuse))) < 0 ||
            cli_json_add(efuse, "secure_version", json_object_new_uint64(efuse_secure_version(x->d->efuse))) < 0 ||
            (x->c->nvs_encryption ? cli_json_add(efuse, "nvs_key_block", json_object_new_int64(x->c->nvs_key_block))
                                  : cli_json_add_null(efuse, "nvs_key_block")) < 0 ||
            cli_json_add(root, "efuse", TAKE_PTR(efuse)) < 0)
                return -ENOMEM;

        if ((x->slot >= 0 ? cli_json_add(fw, "boot_slot", json_object_new_int64(x->slot))
                          : cli_json_add_null(fw, "boot_slot")) < 0 ||
            cli_json_add(fw, "otadata_blank", json_object_new_boolean(x->blank)) < 0 ||
            (x->slot >= 0 && !x->blank && st ? cli_json_add(fw, "ota_state", json_object_new_string(st))
                                             : cli_json_add_null(fw, "ota_state")) < 0 ||
            (x->boot_r >= 0 ? cli_json_add(fw, "version", cli_json_new_text(x->version))
                            : cli_json_add_null(fw, "version")) < 0 ||
            (x->boot_r >= 0 ? cli_json_add_null(fw, "error")
                            : cli_json_add(fw, "error", json_object_new_string(esp_err_to_name(x->boot_r)))) < 0 ||
            cli_json_add(root, "firmware", TAKE_PTR(fw)) < 0)
                return -ENOMEM;

        if (x->settings.error < 0) {
                if (cli_json_add(set, "error", json_object_new_string(x->settings.what)) < 0)
                        return -ENOMEM;
        } else if (json_setting(set, "url", x->settings.url_r, cli_json_new_text(x->settings.url)) < 0 ||
                   json_setting(set, "use_url", x->settings.use_url_r, json_object_new_uint64(x->settings.use_url)) < 0 ||
                   json_setting(set, "interval", x->settings.interval_r, json_object_new_uint64(x->settings.interval)) < 0)
                return -ENOMEM;
        if (cli_json_add(root, "settings", TAKE_PTR(set)) < 0)
                return -ENOMEM;
        return cli_json_print(root);
}

static void show_text(const ShowData *x) {
        const FleetDevice *d = x->d;

        printf("Device %s\n", d->id);
        printf("  %-22s %u\n", "index", d->index);
        printf("  %-22s %s\n", "MAC", x->mac);
        printf("  %-22s %s\n", "directory", d->dir);
        printf("  %-22s %s\n", "chip", x->c->chip);
        if (x->running > 0 && x->pid > 0)
                printf("  %-22s running in espfleetd (pid %d)\n", "state", (int) x->pid);
        else
                printf("  %-22s %s\n", "state", x->running > 0 ? "running in espfleetd" : "stopped");

        printf("Certificate (esp_secure_cert DEV_CERT)\n");
        print_name("subject", X509_get_subject_name(d->cert));
        print_name("issuer", X509_get_issuer_name(d->cert));
        print_time("not after", X509_get0_notAfter(d->cert));
        printf("  %-22s RSA-%u, private key only as DS ciphertext\n", "key", d->rsa_bits);

        printf("eFuse\n");
        EfuseKeyPurpose purpose = efuse_key_purpose(d->efuse, d->ds_key_block);
        printf("  %-22s BLOCK_KEY%u, %s, %s\n", "DS HMAC key", d->ds_key_block,
               strna(efuse_key_purpose_to_string(purpose)),
               efuse_key_is_readable(d->efuse, d->ds_key_block) ? "readable (development mode)" : "read-protected");
        printf("  %-22s %s\n", "SECURE_BOOT_EN", efuse_secure_boot_enabled(d->efuse) ? "True" : "False");
        printf("  %-22s %u\n", "SECURE_VERSION", efuse_secure_version(d->efuse));
        if (x->c->nvs_encryption)
                printf("  %-22s BLOCK_KEY%d (HMAC_UP)\n", "NVS encryption key", x->c->nvs_key_block);

        printf("Firmware\n");
        if (x->slot >= 0 && x->blank)
                printf("  %-22s ota_%d (otadata blank: the bootloader's default)\n", "boot slot", x->slot);
        else if (x->slot >= 0)
                printf("  %-22s ota_%d, %s\n", "boot slot", x->slot, strna(ota_img_state_to_string(x->state)));
        else
                printf("  %-22s none (%s)\n", "boot slot", esp_err_to_name(x->boot_r));
        printf("  %-22s %s\n", "version", x->version);

        printf("Settings (nvs, namespace secure_esp)\n");
        print_settings(&x->settings);
}

static int device_show(int argc, char **argv) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        _cleanup_(fleet_device_freep) FleetDevice *d = NULL;
        const FleetDeviceEntry *e;
        char err[512] = "";
        ShowData x = {};
        uint32_t idx;
        bool json;
        int r, k;

        k = parse_options(argc, argv, &json);
        if (k < 0)
                return k == -1 ? 0 : 2;
        if (argc - k != 2) {
                log_error("device show takes FLEETDIR and ID (or INDEX). See 'espfleet device --help'.");
                return 2;
        }
        r = fleet_open(argv[k], &f, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return 1;
        }
        e = fleet_find_device(f, argv[k + 1]);
        if (!e && safe_atou32(argv[k + 1], 10, &idx) >= 0)
                e = fleet_find_index(f, idx);
        if (!e) {
                log_error("%s: no device '%s' in manifest.csv.", argv[k], argv[k + 1]);
                return 1;
        }
        r = fleet_device_load(f, e->index, &d, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return 1;
        }

        x.d = d;
        x.c = fleet_config(f);
        fleet_mac_to_string(d->mac, x.mac);
        x.running = fleet_device_running(f, d->index, &x.pid);
        x.boot_r = running_version(d->flash, d->partitions, x.version, sizeof x.version, &x.slot, &x.state, &x.blank);
        read_settings(d, x.c, &x.settings);
        if (json) {
                r = show_json(&x);
                if (r == -ENOMEM)
                        log_oom();
                return r < 0 ? 1 : 0;
        }
        show_text(&x);
        return 0;
}

int verb_device(int argc, char **argv) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                device_help();
                return argc < 2 ? 2 : 0;
        }
        if (streq(argv[1], "list"))
                return device_list(argc - 1, argv + 1);
        if (streq(argv[1], "show"))
                return device_show(argc - 1, argv + 1);
        log_error("Unknown 'device' command '%s'. See 'espfleet device --help'.", argv[1]);
        return 2;
}

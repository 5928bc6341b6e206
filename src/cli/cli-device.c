/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include <openssl/x509.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "basic/esp-err.h"
#include "cli/cli.h"
#include "dsemu/efuse.h"
#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"
#include "image/app-image.h"
#include "nvs/nvs.h"

static void device_help(void) {
        printf("Usage: espfleet device list FLEETDIR\n"
               "       espfleet device show FLEETDIR ID|INDEX\n\n"
               "list: index, id, MAC, running firmware version and whether a daemon runs the device.\n"
               "show: everything about one device (certificate, DS key, eFuse security state, boot\n"
               "      slot and firmware, settings). Read-protected eFuse keys are never shown.\n");
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
        _cleanup_(fleet_freep) Fleet *f = NULL;
        char err[512] = "";
        int r;

        if (argc != 2) {
                log_error("device list takes exactly one FLEETDIR argument.");
                return 2;
        }
        r = fleet_open(argv[1], &f, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return 1;
        }
        printf("%-8s %-12s %-18s %-16s %s\n", "INDEX", "ID", "MAC", "VERSION", "STATE");
        for (size_t i = 0; i < fleet_n_devices(f); i++) {
                const FleetDeviceEntry *e = fleet_device_entry(f, i);
                char mac[18], version[40], state[40];
                pid_t pid = 0;

                fleet_mac_to_string(e->mac, mac);
                list_version(f, e, version, sizeof version);
                r = fleet_device_running(f, e->index, &pid);
                if (r > 0 && pid > 0)
                        snprintf(state, sizeof state, "running (pid %d)", (int) pid);
                else
                        snprintf(state, sizeof state, "%s", r > 0 ? "running" : r == 0 ? "stopped" : "?");
                printf("%-8u %-12s %-18s %-16s %s\n", e->index, e->id, mac, version, state);
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

static void show_settings(const FleetDevice *d, const FleetConfig *c) {
        const Partition *p = partition_table_find_by_name(d->partitions, "nvs");
        NvsXtsKeys keys, *kp = NULL;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        FlashRegion reg;
        size_t len = 0;
        uint8_t use_url = 0;
        uint32_t interval = 0;
        char url[300] = "";
        int r;

        if (!p) {
                printf("  (no nvs partition)\n");
                return;
        }
        if (c->nvs_encryption && c->nvs_key_block >= 0) {
                if (fleet_device_nvs_keys(d, (unsigned) c->nvs_key_block, &keys) < 0) {
                        printf("  (cannot derive the NVS keys from the HMAC_UP eFuse key)\n");
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
                printf("  (nvs: %s)\n", esp_err_to_name(r));
                nvs_close(nvs);
                return;
        }
        len = sizeof url;
        r = nvs_get_str(h, "url", url, &len);
        printf("  %-22s %s\n", "url", r >= 0 ? (*url ? url : "(empty)") : esp_err_to_name(r));
        r = nvs_get_u8(h, "use_url", &use_url);
        if (r >= 0)
                printf("  %-22s %u\n", "use_url", use_url);
        else
                printf("  %-22s %s\n", "use_url", esp_err_to_name(r));
        r = nvs_get_u32(h, "interval", &interval);
        if (r >= 0)
                printf("  %-22s %u s\n", "interval", interval);
        else
                printf("  %-22s %s\n", "interval", r == -ESP_ERR_NVS_NOT_FOUND ? "(not set: daemon default)"
                                                                                : esp_err_to_name(r));
        nvs_handle_close(h);
        nvs_close(nvs);
}

static int device_show(int argc, char **argv) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        _cleanup_(fleet_device_freep) FleetDevice *d = NULL;
        const FleetDeviceEntry *e;
        char err[512] = "", mac[18], version[40];
        uint32_t idx, state;
        pid_t pid = 0;
        int r, slot;

        if (argc != 3) {
                log_error("device show takes FLEETDIR and ID (or INDEX).");
                return 2;
        }
        r = fleet_open(argv[1], &f, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return 1;
        }
        e = fleet_find_device(f, argv[2]);
        if (!e && safe_atou32(argv[2], 10, &idx) >= 0)
                e = fleet_find_index(f, idx);
        if (!e) {
                log_error("%s: no device '%s' in manifest.csv.", argv[1], argv[2]);
                return 1;
        }
        r = fleet_device_load(f, e->index, &d, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return 1;
        }

        fleet_mac_to_string(d->mac, mac);
        r = fleet_device_running(f, d->index, &pid);
        printf("Device %s\n", d->id);
        printf("  %-22s %u\n", "index", d->index);
        printf("  %-22s %s\n", "MAC", mac);
        printf("  %-22s %s\n", "directory", d->dir);
        printf("  %-22s %s\n", "chip", fleet_config(f)->chip);
        if (r > 0 && pid > 0)
                printf("  %-22s running in espfleetd (pid %d)\n", "state", (int) pid);
        else
                printf("  %-22s %s\n", "state", r > 0 ? "running in espfleetd" : "stopped");

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
        if (fleet_config(f)->nvs_encryption)
                printf("  %-22s BLOCK_KEY%d (HMAC_UP)\n", "NVS encryption key", fleet_config(f)->nvs_key_block);

        printf("Firmware\n");
        bool blank = false;
        r = running_version(d->flash, d->partitions, version, sizeof version, &slot, &state, &blank);
        if (slot >= 0 && blank)
                printf("  %-22s ota_%d (otadata blank: the bootloader's default)\n", "boot slot", slot);
        else if (slot >= 0)
                printf("  %-22s ota_%d, %s\n", "boot slot", slot, strna(ota_img_state_to_string(state)));
        else
                printf("  %-22s none (%s)\n", "boot slot", esp_err_to_name(r));
        printf("  %-22s %s\n", "version", version);

        printf("Settings (nvs, namespace secure_esp)\n");
        show_settings(d, fleet_config(f));
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

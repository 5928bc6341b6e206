/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <unistd.h>

#include "basic/errmsg.h"
#include "basic/macro.h"
#include "basic/esp-err.h"
#include "basic/openssl-util.h"
#include "dsemu/ds.h"
#include "dsemu/efuse.h"
#include "dsemu/secure-cert.h"
#include "flash/flash.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"
#include "nvs/nvs.h"

FleetDevice *fleet_device_free(FleetDevice *d) {
        if (!d)
                return NULL;
        free(d->dir);
        efuse_free(d->efuse);
        partition_table_free(d->partitions);
        flash_close(d->flash);
        X509_free(d->cert);
        if (d->ds_data) {
                explicit_bzero(d->ds_data, sizeof *d->ds_data);
                free(d->ds_data);
        }
        free(d);
        return NULL;
}

int fleet_device_load(Fleet *f, unsigned index, FleetDevice **ret, char *err, size_t errlen) {
        _cleanup_(fleet_device_freep) FleetDevice *d = NULL;
        _cleanup_(secure_cert_freep) SecureCert *sc = NULL;
        _cleanup_free_ char *efuse_path = NULL, *flash_path = NULL;
        const FleetDeviceEntry *e = fleet_find_index(f, index);
        const Partition *p;
        FlashRegion reg;
        EspChip chip;
        uint8_t mac[EFUSE_MAC_LEN];
        char perr[256] = "";
        int r;

        if (!e)
                return errf(err, errlen, -ENOENT, "%s/" FLEET_MANIFEST_FILE ": no device with index %u",
                            fleet_path(f), index);
        chip = esp_chip_from_string(fleet_config(f)->chip);
        if ((int) chip < 0)
                return errf(err, errlen, -EINVAL, "%s/" FLEET_CONF_FILE ": chip '%s' is not supported",
                            fleet_path(f), fleet_config(f)->chip);

        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->index = e->index;
        memcpy(d->id, e->id, sizeof d->id);
        memcpy(d->mac, e->mac, sizeof d->mac);
        d->dir = fleet_device_dir(f, e->id);
        efuse_path = fleet_device_file(f, e->id, FLEET_DEVICE_EFUSE_FILE);
        flash_path = fleet_device_file(f, e->id, FLEET_DEVICE_FLASH_FILE);
        d->ds_data = calloc(1, sizeof *d->ds_data);
        if (!d->dir || !efuse_path || !flash_path || !d->ds_data)
                return -ENOMEM;

        r = efuse_load(efuse_path, chip, &d->efuse, perr, sizeof perr);
        if (r < 0)
                return errf(err, errlen, r, "%s", *perr ? perr : efuse_path);
        efuse_get_mac(d->efuse, mac);
        if (memcmp(mac, e->mac, sizeof mac) != 0) {
                char a[18], b[18];
                fleet_mac_to_string(mac, a);
                fleet_mac_to_string(e->mac, b);
                return errf(err, errlen, -EBADMSG, "%s: MAC %s in eFuse BLOCK1 differs from %s in manifest.csv for '%s'",
                            efuse_path, a, b, e->id);
        }

        r = flash_open(flash_path, 0, 0, &d->flash);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot open: %s", flash_path, esp_err_to_name(r));
        r = partition_table_load(d->flash, &d->partitions, perr, sizeof perr);
        if (r < 0)
                return errf(err, errlen, r, "%s: partition table: %s", flash_path, *perr ? perr : esp_err_to_name(r));
        if (!flash_has_store(d->flash)) {
                /* A device provisioned before the fleet had a store joins
                 * it once the store exists (issue #10). */
                _cleanup_free_ char *store = fleet_file(f, FLEET_STORE_DIR);
                if (!store)
                        return -ENOMEM;
                if (access(store, F_OK) >= 0) {
                        r = fleet_device_enable_store(d->flash, d->partitions);
                        if (r < 0)
                                return errf(err, errlen, r, "%s: moving the app slots into %s: %s", flash_path, store,
                                            esp_err_to_name(r));
                }
        }
        p = partition_table_find_by_name(d->partitions, "esp_secure_cert")
                ?: partition_table_find(d->partitions, PARTITION_TYPE_ESP_SECURE_CERT, PARTITION_SUBTYPE_ANY);
        if (!p)
                return errf(err, errlen, -ENOENT, "%s: the partition table has no esp_secure_cert partition", flash_path);
        reg = partition_region(d->flash, p);
        r = secure_cert_read_region(&reg, &sc, perr, sizeof perr);
        if (r < 0)
                return errf(err, errlen, r, "%s: esp_secure_cert: %s", flash_path, *perr ? perr : esp_err_to_name(r));
        r = secure_cert_get_x509(sc, SECURE_CERT_DEV_CERT, &d->cert);
        if (r < 0)
                return errf(err, errlen, r, "%s: esp_secure_cert: DEV_CERT %s", flash_path,
                            r == -ENOENT ? "is missing" : "does not parse");
        /* CA_CERT is not kept: the daemon verifies the broker against the
         * fleet's ca.crt, one X509_STORE per worker. */
        r = secure_cert_get_ds(sc, chip, d->ds_data, &d->ds_key_block, &d->rsa_bits);
        if (r < 0)
                return errf(err, errlen, r, "%s: esp_secure_cert: DS_DATA/DS_CONTEXT %s", flash_path,
                            r == -ENOENT ? "missing" : "malformed");

        EVP_PKEY *pub = X509_get0_pubkey(d->cert);
        if (!pub || EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA || (unsigned) EVP_PKEY_get_bits(pub) != d->rsa_bits)
                return errf(err, errlen, -EBADMSG, "%s: esp_secure_cert: DEV_CERT does not hold the RSA-%u key of DS_DATA",
                            flash_path, d->rsa_bits);

        *ret = TAKE_PTR(d);
        return 0;
}

int fleet_device_ds_key(const FleetDevice *d, DsKey **ret) {
        if (!d->ds_data)
                return -ENOKEY;
        return ds_key_new(d->efuse, d->ds_key_block, d->ds_data, X509_get0_pubkey(d->cert), ret);
}

void fleet_device_forget_ds_data(FleetDevice *d) {
        if (!d || !d->ds_data)
                return;
        explicit_bzero(d->ds_data, sizeof *d->ds_data);
        free(d->ds_data);
        d->ds_data = NULL;
}

int fleet_device_nvs_keys(const FleetDevice *d, unsigned key_block, NvsXtsKeys *ret) {
        /* nvs_sec_provider's seeds: LE words 0xAEBE5A5A (XTS key) and
         * 0xCEDEA5A5 (tweak key), each repeated eight times. */
        uint8_t seed_e[32], seed_t[32];
        NvsXtsKeys k;
        int r;

        for (size_t i = 0; i < 32; i += 4) {
                le32_write(seed_e + i, 0xAEBE5A5Au);
                le32_write(seed_t + i, 0xCEDEA5A5u);
        }
        r = efuse_hmac(d->efuse, key_block, EFUSE_KEY_PURPOSE_HMAC_UP, seed_e, sizeof seed_e, k.eky);
        if (r >= 0)
                r = efuse_hmac(d->efuse, key_block, EFUSE_KEY_PURPOSE_HMAC_UP, seed_t, sizeof seed_t, k.tky);
        if (r < 0) {
                explicit_bzero(&k, sizeof k);
                return r;
        }
        *ret = k;
        explicit_bzero(&k, sizeof k);
        return 0;
}

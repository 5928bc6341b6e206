/* SPDX-License-Identifier: MIT */
#include <openssl/err.h>

#include "basic/esp-err.h"
#include "dsemu/ds-provider.h"
#include "dsemu/ds.h"
#include "sim/keystore.h"

int keystore_load(const FleetDevice *d, DeviceIdentity *ret, char *err, size_t errlen) {
        DsKey *k = NULL;
        EVP_PKEY *pkey = NULL;
        int r;

        r = fleet_device_ds_key(d, &k);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot build the DS key: %s", d->id, esp_err_to_name(r));
                return r;
        }
        r = ds_provider_pkey_new(NULL, k, &pkey);
        if (r < 0) {
                ds_key_free(k);
                snprintf(err, errlen, "%s: cannot make a DS-backed key: %s", d->id, esp_err_to_name(r));
                ERR_clear_error();
                return r;
        }
        if (X509_up_ref(d->cert) != 1) {
                EVP_PKEY_free(pkey);
                ds_key_free(k);
                return -ENOMEM;
        }
        *ret = (DeviceIdentity) { .cert = d->cert, .key = pkey, .ds_key = k };
        return 0;
}

void device_identity_done(DeviceIdentity *i) {
        if (!i)
                return;
        EVP_PKEY_free(i->key);
        X509_free(i->cert);
        ds_key_free(i->ds_key);
        *i = (DeviceIdentity) {};
}

int keystore_load_ca(const char *fleet_dir, X509_STORE **ret, char *err, size_t errlen) {
        char path[4096];
        X509_STORE *s;

        snprintf(path, sizeof path, "%s/%s", fleet_dir, FLEET_CA_FILE);
        s = X509_STORE_new();
        if (!s)
                return -ENOMEM;
        if (X509_STORE_load_file(s, path) != 1) {
                X509_STORE_free(s);
                ERR_clear_error();
                snprintf(err, errlen, "%s: cannot load the fleet CA certificate", path);
                return -ENOENT;
        }
        *ret = s;
        return 0;
}

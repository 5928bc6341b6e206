/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/errmsg.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "dsemu/ds.h"
#include "dsemu/efuse.h"
#include "dsemu/secure-cert.h"
#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"
#include "fleet/pki.h"
#include "fleet/provision.h"
#include "image/app-image.h"
#include "image/sbv2.h"
#include "nvs/nvs.h"

#define PARTITIONS_FILE "partitions.csv"
#define SETTINGS_NAMESPACE "secure_esp"
#define FIRMWARE_PROJECT "secure_esp"

void provision_options_init(ProvisionOptions *o) {
        *o = (ProvisionOptions) {
                .key_block = -1,
        };
}

/* Everything the workers share, prepared once by the parent. */
typedef struct Plan {
        const ProvisionOptions *o;
        Fleet *fleet;                   /* not owned */
        Pki *pki;                       /* not owned */
        FleetConfig conf;
        EspChip chip;
        PartitionTable *table;          /* owned */
        uint32_t flash_size;
        char *ca_pem;
        uint8_t *firmware;              /* signed initial image */
        size_t firmware_len;
        uint8_t sb_digest[SBV2_KEY_DIGEST_LEN];
        unsigned sb_block;
        /* replay material */
        EVP_PKEY *replay_key;
        uint8_t *replay_cert_part;
        size_t replay_cert_part_len;
        uint8_t replay_hmac[EFUSE_KEY_LEN];
} Plan;

static void plan_done(Plan *p) {
        partition_table_free(p->table);
        free(p->ca_pem);
        free(p->firmware);
        EVP_PKEY_free(p->replay_key);
        free(p->replay_cert_part);
        explicit_bzero(p->replay_hmac, sizeof p->replay_hmac);
}

/* ---- one device ---------------------------------------------------------- */

/* A cheap end-to-end check of what was just written: the DS peripheral, fed
 * from the eFuse as the device will do it, computes x^d mod n, and the
 * certificate's public key undoes it. Catches a wrong HMAC key, a DS block
 * that does not belong to the certificate, or a key size mismatch. */
static int check_ds_matches_cert(const Efuse *e, unsigned block, const DsData *ds, X509 *cert,
                                 char *err, size_t errlen) {
        EVP_PKEY *pub = X509_get0_pubkey(cert);
        _cleanup_(BN_freep) BIGNUM *n = NULL, *ex = NULL, *x = NULL, *z = NULL, *back = NULL;
        _cleanup_(BN_CTX_freep) BN_CTX *ctx = NULL;
        size_t len = (ds->rsa_length + 1) * 4;
        uint8_t xle[512] = {}, zle[512];
        int r;

        if (!pub || EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA)
                return errf(err, errlen, -EBADMSG, "the device certificate does not hold an RSA key");
        if ((size_t) EVP_PKEY_get_bits(pub) != len * 8)
                return errf(err, errlen, -EBADMSG, "the certificate key has %d bits, the DS data %zu",
                            EVP_PKEY_get_bits(pub), len * 8);
        if (!EVP_PKEY_get_bn_param(pub, "n", &n) || !EVP_PKEY_get_bn_param(pub, "e", &ex))
                return -EIO;
        /* x = 0x1234…: any value below n will do. */
        for (size_t i = 0; i < 16; i++)
                xle[i] = (uint8_t) (0x5a ^ i);
        r = ds_sign(e, block, ds, xle, len, zle);
        if (r < 0)
                return errf(err, errlen, r, "the DS peripheral refuses the DS data: %s", esp_err_to_name(r));
        memrev(zle, len);
        memrev(xle, len);
        ctx = BN_CTX_new();
        z = BN_bin2bn(zle, (int) len, NULL);
        x = BN_bin2bn(xle, (int) len, NULL);
        back = BN_new();
        if (!ctx || !z || !x || !back || !BN_mod_exp(back, z, ex, n, ctx))
                return -ENOMEM;
        if (BN_cmp(back, x) != 0)
                return errf(err, errlen, -EBADMSG, "the DS data does not belong to the device certificate's key");
        return 0;
}

static int write_region(Flash *f, const PartitionTable *t, const char *name, const void *data, size_t len,
                        char *err, size_t errlen) {
        FlashRegion reg;
        int r = partition_table_region(t, f, name, &reg);
        if (r < 0)
                return errf(err, errlen, r, "partition '%s': %s", name, esp_err_to_name(r));
        if (len > reg.size)
                return errf(err, errlen, -E2BIG, "%zu bytes do not fit partition '%s' (%u bytes)", len, name, reg.size);
        r = flash_region_erase(&reg, 0, ALIGN_TO(len, FLASH_SECTOR_SIZE));
        if (r >= 0)
                r = flash_region_write(&reg, 0, data, len);
        if (r < 0)
                return errf(err, errlen, r, "writing partition '%s': %s", name, esp_err_to_name(r));
        return 0;
}

static const Partition *find_nvs(const PartitionTable *t) {
        return partition_table_find_by_name(t, "nvs") ?: partition_table_find(t, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_NVS);
}

static const Partition *find_secure_cert(const PartitionTable *t) {
        return partition_table_find_by_name(t, "esp_secure_cert")
                ?: partition_table_find(t, PARTITION_TYPE_ESP_SECURE_CERT, PARTITION_SUBTYPE_ANY);
}

static int write_settings(Flash *f, const PartitionTable *t, const NvsXtsKeys *keys, char *err, size_t errlen) {
        const Partition *p = find_nvs(t);
        FlashRegion reg;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        int r;

        if (!p)
                return errf(err, errlen, -ENOENT, "the partition table has no nvs partition");
        reg = partition_region(f, p);
        r = nvs_open_region(&reg, keys, 0, &nvs);
        if (r >= 0)
                r = nvs_handle_open(nvs, SETTINGS_NAMESPACE, NVS_READWRITE, &h);
        /* secure_esp's settings: no URL yet, use the fleet default. The
         * interval is left unset so the daemon's default applies until
         * /esp/update/interval sets one. */
        if (r >= 0)
                r = nvs_set_str(h, "url", "");
        if (r >= 0)
                r = nvs_set_u8(h, "use_url", 0);
        if (r >= 0)
                r = nvs_commit(h);
        nvs_handle_close(h);
        nvs_close(nvs);
        if (r < 0)
                return errf(err, errlen, r, "initialising the nvs partition: %s", esp_err_to_name(r));
        return 0;
}

static int provision_one(const Plan *p, const FleetDeviceEntry *d, char *err, size_t errlen) {
        const FleetConfig *c = &p->conf;
        _cleanup_(efuse_freep) Efuse *e = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_freep) X509 *cert = NULL;
        _cleanup_(secure_cert_freep) SecureCert *sc = NULL;
        _cleanup_free_ char *final = NULL, *tmp = NULL, *efuse_path = NULL, *flash_path = NULL, *cert_path = NULL,
                            *pem = NULL, *cmd = NULL;
        _cleanup_free_ uint8_t *part = NULL;
        Flash *flash = NULL;
        uint8_t hmac[EFUSE_KEY_LEN], iv[DS_IV_LEN];
        NvsXtsKeys nvs_keys, *nvs_keys_p = NULL;
        DsData ds;
        unsigned ds_block = c->ds_key_block, bits = c->rsa_bits;
        size_t pem_len, part_len;
        int r;

        final = fleet_device_dir(p->fleet, d->id);
        if (!final || asprintf(&tmp, "%s.tmp", final) < 0)
                return -ENOMEM;
        efuse_path = path_join(tmp, FLEET_DEVICE_EFUSE_FILE);
        flash_path = path_join(tmp, FLEET_DEVICE_FLASH_FILE);
        cert_path = path_join(tmp, FLEET_DEVICE_CERT_FILE);
        if (!efuse_path || !flash_path || !cert_path)
                return -ENOMEM;
        r = mkdir_p(tmp, 0700);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot create: %s", tmp, strerror(-r));

        r = efuse_new(p->chip, &e);
        if (r >= 0)
                r = efuse_set_mac(e, d->mac);
        if (r < 0)
                return errf(err, errlen, r, "%s: eFuse: %s", d->id, esp_err_to_name(r));

        if (p->replay_cert_part) {
                /* configure_esp_secure_cert.py --keep_ds_data_on_host output:
                 * its DS data and certificates, its HMAC key. */
                r = secure_cert_parse(p->replay_cert_part, p->replay_cert_part_len, &sc, err, errlen);
                if (r < 0)
                        return r;
                r = secure_cert_get_ds(sc, p->chip, &ds, &ds_block, &bits);
                if (r < 0)
                        return errf(err, errlen, r, "%s: no usable DS_DATA/DS_CONTEXT for %s: %s", p->o->secure_cert,
                                    c->chip, esp_err_to_name(r));
                r = secure_cert_get_x509(sc, SECURE_CERT_DEV_CERT, &cert);
                if (r < 0)
                        return errf(err, errlen, r, "%s: no usable DEV_CERT: %s", p->o->secure_cert, esp_err_to_name(r));
                memcpy(hmac, p->replay_hmac, sizeof hmac);
        } else {
                if (p->replay_key) {
                        if (!EVP_PKEY_up_ref(p->replay_key))
                                return -ENOMEM;
                        key = p->replay_key;
                } else if (!(key = EVP_RSA_gen(bits)))
                        return errf(err, errlen, -EIO, "%s: RSA-%u key generation failed", d->id, bits);
                bits = (unsigned) EVP_PKEY_get_bits(key);
                r = pki_issue_device_cert(p->pki, d->id, key, 0, &cert);
                if (r < 0)
                        return errf(err, errlen, r, "%s: issuing the device certificate failed", d->id);
                if (RAND_bytes(hmac, sizeof hmac) != 1 || RAND_bytes(iv, sizeof iv) != 1)
                        return errf(err, errlen, -EIO, "no randomness");
                r = ds_encrypt_params(p->chip, key, hmac, iv, &ds);
                /* The key now exists only as DS ciphertext: forget it. */
                EVP_PKEY_free(TAKE_PTR(key));
                if (r < 0) {
                        explicit_bzero(hmac, sizeof hmac);
                        return errf(err, errlen, r, "%s: DS parameters: %s", d->id, esp_err_to_name(r));
                }
        }

        /* configure_ds: burn_key BLOCK_KEYn HMAC_DOWN_DIGITAL_SIGNATURE,
         * read-protected unless in development mode. */
        r = efuse_burn_key(e, ds_block, hmac, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, !c->development);
        explicit_bzero(hmac, sizeof hmac);
        if (r < 0)
                return errf(err, errlen, r, "%s: burning the DS HMAC key into BLOCK_KEY%u: %s", d->id, ds_block,
                            esp_err_to_name(r));
        r = check_ds_matches_cert(e, ds_block, &ds, cert, err, errlen);
        if (r < 0)
                return r;

        if (c->nvs_encryption) {
                uint8_t up[EFUSE_KEY_LEN];
                if (RAND_bytes(up, sizeof up) != 1)
                        return -EIO;
                r = efuse_burn_key(e, (unsigned) c->nvs_key_block, up, EFUSE_KEY_PURPOSE_HMAC_UP, true);
                if (r >= 0)
                        r = nvs_keys_from_hmac(up, &nvs_keys);
                explicit_bzero(up, sizeof up);
                if (r < 0)
                        return errf(err, errlen, r, "%s: NVS encryption key in BLOCK_KEY%d: %s", d->id,
                                    c->nvs_key_block, esp_err_to_name(r));
                nvs_keys_p = &nvs_keys;
        }

        if (!c->signed_apps_no_secure_boot) {
                r = efuse_burn_key(e, p->sb_block, p->sb_digest, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0, false);
                if (r >= 0)
                        r = efuse_burn_field(e, "SECURE_BOOT_EN", 1);
                if (r < 0)
                        return errf(err, errlen, r, "%s: secure boot eFuses: %s", d->id, esp_err_to_name(r));
        }

        /* The flash image. */
        r = flash_open(flash_path, FLASH_OPEN_CREATE, p->flash_size, &flash);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot create: %s", flash_path, esp_err_to_name(r));
        r = partition_table_write(flash, p->table);
        if (r < 0) {
                errf(err, errlen, r, "%s: writing the partition table: %s", d->id, esp_err_to_name(r));
                goto fail;
        }

        r = pki_cert_to_pem(cert, &pem, &pem_len);
        if (r < 0)
                goto fail;
        const Partition *scp = find_secure_cert(p->table);
        if (!scp) {
                r = errf(err, errlen, -ENOENT, "the partition table has no esp_secure_cert partition");
                goto fail;
        }
        if (p->replay_cert_part) {
                r = write_region(flash, p->table, scp->name, p->replay_cert_part,
                                 MIN(p->replay_cert_part_len, (size_t) scp->size), err, errlen);
        } else {
                part_len = scp->size;
                part = malloc(part_len);
                if (!part) {
                        r = -ENOMEM;
                        goto fail;
                }
                r = secure_cert_build_rsa_ds(pem, p->ca_pem, &ds, ds_block, bits, part, part_len);
                if (r < 0)
                        errf(err, errlen, r, "%s: building esp_secure_cert: %s", d->id, esp_err_to_name(r));
                else
                        r = write_region(flash, p->table, scp->name, part, part_len, err, errlen);
        }
        if (r < 0)
                goto fail;

        r = write_settings(flash, p->table, nvs_keys_p, err, errlen);
        explicit_bzero(&nvs_keys, sizeof nvs_keys);
        if (r < 0)
                goto fail;

        /* Initial firmware in ota_0 and otadata pointing at it, as the
         * bootloader leaves it after the first boot of a factory-flashed
         * device (§7.2 step 3: entry 0 = {seq 1, VALID}). */
        const Partition *ota0 = partition_table_find_ota(p->table, 0);
        const Partition *otad = partition_table_find(p->table, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_OTA);
        if (!ota0 || !otad) {
                r = errf(err, errlen, -ENOENT, "the partition table needs ota_0 and otadata partitions");
                goto fail;
        }
        r = write_region(flash, p->table, ota0->name, p->firmware, p->firmware_len, err, errlen);
        if (r < 0)
                goto fail;
        {
                FlashRegion reg = partition_region(flash, otad);
                OtaSelectEntry ent = { .ota_seq = 1, .ota_state = OTA_IMG_VALID };
                memset(ent.seq_label, 0xff, sizeof ent.seq_label);
                r = otadata_erase(&reg);
                if (r >= 0)
                        r = otadata_write_entry(&reg, 0, &ent);
                if (r < 0) {
                        errf(err, errlen, r, "%s: writing otadata: %s", d->id, esp_err_to_name(r));
                        goto fail;
                }
        }
        flash = flash_close(flash);

        r = efuse_save(e, efuse_path);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot write: %s", efuse_path, esp_err_to_name(r));
        r = write_file_atomic(cert_path, pem, pem_len, 0644);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot write: %s", cert_path, strerror(-r));
        /* Complete: make it visible under its name. */
        if (chmod(tmp, 0755) < 0 || rename(tmp, final) < 0)
                return errf(err, errlen, -errno, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
        return 0;

fail:
        flash_close(flash);
        return r;
}

/* ---- the parent ------------------------------------------------------------ */

static int rm_rf(const char *path) {
        DIR *d = opendir(path);
        struct dirent *de;
        if (!d)
                return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
        while ((de = readdir(d))) {
                _cleanup_free_ char *p = NULL;
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                p = path_join(path, de->d_name);
                if (p)
                        (void) rm_rf(p);
        }
        closedir(d);
        return rmdir(path) < 0 ? -errno : 0;
}

/* Half-built devices from an interrupted run. */
static void remove_tmp_dirs(Fleet *f) {
        _cleanup_free_ char *dir = fleet_file(f, FLEET_DEVICES_DIR);
        DIR *d;
        struct dirent *de;

        if (!dir || !(d = opendir(dir)))
                return;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (l > 4 && streq(de->d_name + l - 4, ".tmp")) {
                        _cleanup_free_ char *p = path_join(dir, de->d_name);
                        if (p)
                                (void) rm_rf(p);
                }
        }
        closedir(d);
}

/* Copies a public PKI file into the fleet, or checks that the copy there is
 * the same (a fleet belongs to one PKI). */
static int install_public_file(Fleet *f, const char *pki_dir, const char *src_name, const char *dst_name,
                               char *err, size_t errlen) {
        _cleanup_free_ char *src = path_join(pki_dir, src_name), *dst = fleet_file(f, dst_name);
        _cleanup_free_ uint8_t *a = NULL, *b = NULL;
        size_t la, lb;
        int r;

        if (!src || !dst)
                return -ENOMEM;
        r = read_full_file(src, 1 << 20, &a, &la);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot read: %s", src, strerror(-r));
        r = read_full_file(dst, 1 << 20, &b, &lb);
        if (r == -ENOENT)
                return write_file_atomic(dst, a, la, 0644);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot read: %s", dst, strerror(-r));
        if (la != lb || memcmp(a, b, la) != 0)
                return errf(err, errlen, -EXDEV,
                            "%s differs from %s: the fleet was provisioned with another PKI; use that PKI with --pki",
                            dst, src);
        return 0;
}

static int load_partitions(Plan *p, char *err, size_t errlen) {
        _cleanup_free_ char *stored = fleet_file(p->fleet, PARTITIONS_FILE);
        _cleanup_free_ uint8_t *text = NULL, *have = NULL;
        size_t len, hlen;
        int r;

        if (!stored)
                return -ENOMEM;
        if (p->o->partition_table) {
                r = read_full_file(p->o->partition_table, 1 << 20, &text, &len);
                if (r < 0)
                        return errf(err, errlen, r, "%s: cannot read: %s", p->o->partition_table, strerror(-r));
        }
        r = read_full_file(stored, 1 << 20, &have, &hlen);
        if (r >= 0 && text && (hlen != len || memcmp(text, have, len) != 0))
                return errf(err, errlen, -EXDEV,
                            "%s: the fleet already uses another partition table (%s); all devices of a fleet share one",
                            p->o->partition_table, stored);
        if (r >= 0 && !text) {
                text = TAKE_PTR(have);
                len = hlen;
        } else if (r < 0 && r != -ENOENT)
                return errf(err, errlen, r, "%s: cannot read: %s", stored, strerror(-r));
        if (!text) {
                text = (uint8_t *) strdup(partition_table_default_csv());
                if (!text)
                        return -ENOMEM;
                len = strlen((char *) text);
        }

        r = partition_table_from_csv((char *) text, p->o->partition_table ?: stored, &p->table, err, errlen);
        if (r < 0)
                return r;
        if (!find_nvs(p->table) || !find_secure_cert(p->table) || !partition_table_find_ota(p->table, 0) ||
            !partition_table_find(p->table, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_OTA))
                return errf(err, errlen, -EINVAL, "%s: a device needs nvs, otadata, esp_secure_cert and ota_0 partitions",
                            p->o->partition_table ?: stored);
        p->flash_size = MAX(FLASH_DEFAULT_SIZE, ALIGN_TO(partition_table_flash_size(p->table), FLASH_SECTOR_SIZE));
        return write_file_atomic(stored, text, len, 0644);
}

static int build_firmware(Plan *p, char *err, size_t errlen) {
        AppImageParams ip = {
                .chip_id = (uint16_t) esp_chip_image_id(p->chip),
                .version = p->conf.firmware_version,
                .project_name = FIRMWARE_PROJECT,
                .behaviour = APP_BEHAVIOUR_OK,
        };
        _cleanup_free_ uint8_t *img = NULL;
        size_t len;
        int r;

        r = app_image_build(&ip, &img, &len, err, errlen);
        if (r < 0)
                return r;
        r = sbv2_sign_file(pki_secure_boot_key(p->pki), img, len, &p->firmware, &p->firmware_len, err, errlen);
        if (r < 0)
                return r;
        return sbv2_key_digest(pki_secure_boot_key(p->pki), p->sb_digest);
}

/* Settles the fleet's settings: a new fleet takes the options; an existing
 * one keeps its own, and an option that contradicts it is an error. */
static int settle_config(const ProvisionOptions *o, const FleetConfig *have, FleetConfig *c, char *err, size_t errlen) {
        if (have)
                *c = *have;
        else
                fleet_config_init(c);

#define CONFLICT(cond, what)                                                                                          \
        do {                                                                                                            \
                if (have && (cond))                                                                                     \
                        return errf(err, errlen, -EXDEV, "the fleet was provisioned with another %s; "                  \
                                    "a fleet's devices all share fleet.conf (drop the option or use a new fleet)", what); \
        } while (0)

        if (o->chip) {
                CONFLICT(!streq(o->chip, have->chip), "--chip");
                if (esp_chip_from_string(o->chip) < 0)
                        return errf(err, errlen, -EINVAL, "--chip '%s': esp32c3 or esp32s3", o->chip);
                snprintf(c->chip, sizeof c->chip, "%s", o->chip);
        }
        if (o->key_block >= 0) {
                CONFLICT((unsigned) o->key_block != have->ds_key_block, "--key-block");
                if (o->key_block > 5)
                        return errf(err, errlen, -EINVAL, "--key-block %d: 0..5", o->key_block);
                c->ds_key_block = (unsigned) o->key_block;
        }
        if (o->development) {
                CONFLICT(!have->development, "--development setting");
                c->development = true;
        }
        if (o->nvs_encryption) {
                CONFLICT(!have->nvs_encryption, "--nvs-encryption setting");
                c->nvs_encryption = true;
        }
        if (o->signed_apps_no_secure_boot) {
                CONFLICT(!have->signed_apps_no_secure_boot, "--signed-apps-no-secure-boot setting");
                c->signed_apps_no_secure_boot = true;
        }
        if (o->firmware_version) {
                if (strlen(o->firmware_version) == 0 || strlen(o->firmware_version) >= sizeof c->firmware_version)
                        return errf(err, errlen, -EINVAL, "--firmware-version '%s': 1..31 characters", o->firmware_version);
                snprintf(c->firmware_version, sizeof c->firmware_version, "%s", o->firmware_version);
        }
        if (o->rsa_bits) {
                CONFLICT(o->rsa_bits != have->rsa_bits, "--rsa-bits");
                c->rsa_bits = o->rsa_bits;
        }
#undef CONFLICT
        if (c->nvs_encryption && c->nvs_key_block < 0) {
                /* HMAC_UP key: the first block after the DS one. */
                c->nvs_key_block = (int) ((c->ds_key_block + 1) % EFUSE_KEY_BLOCKS);
        }
        return 0;
}

static unsigned pick_sb_block(const FleetConfig *c) {
        for (unsigned b = 0; b < EFUSE_KEY_BLOCKS; b++)
                if (b != c->ds_key_block && (!c->nvs_encryption || (int) b != c->nvs_key_block))
                        return b;
        return 0;
}

/* MACs: random, locally administered (bit 1 of the first octet set),
 * unicast (bit 0 clear), and unique in their last three bytes, since the
 * device id is made of those. `taken` is a 2^24-bit map of used ids. */
static int new_mac(uint8_t *taken, uint8_t mac[FLEET_MAC_LEN]) {
        for (unsigned tries = 0; tries < 1000; tries++) {
                uint32_t low;
                if (RAND_bytes(mac, FLEET_MAC_LEN) != 1)
                        return -EIO;
                mac[0] = (uint8_t) ((mac[0] | 0x02) & ~0x01);
                low = (uint32_t) mac[3] << 16 | (uint32_t) mac[4] << 8 | mac[5];
                if (taken[low >> 3] & (1u << (low & 7)))
                        continue;
                taken[low >> 3] |= (uint8_t) (1u << (low & 7));
                return 0;
        }
        return -ENOSPC;
}

static void mark_taken(uint8_t *taken, const uint8_t mac[FLEET_MAC_LEN]) {
        uint32_t low = (uint32_t) mac[3] << 16 | (uint32_t) mac[4] << 8 | mac[5];
        taken[low >> 3] |= (uint8_t) (1u << (low & 7));
}

static void mark_existing_dirs(Fleet *f, uint8_t *taken) {
        _cleanup_free_ char *dir = fleet_file(f, FLEET_DEVICES_DIR);
        DIR *d;
        struct dirent *de;

        if (!dir || !(d = opendir(dir)))
                return;
        while ((de = readdir(d))) {
                unsigned v;
                char tail;
                if (sscanf(de->d_name, "esp-%6x%c", &v, &tail) == 1 && strlen(de->d_name) == 10)
                        taken[v >> 3] |= (uint8_t) (1u << (v & 7));
        }
        closedir(d);
}

/* Worker: provisions todo[i] for i = w, w + jobs, … and reports each result
 * on `fd` as "ok INDEX\n" or "err MESSAGE\n". */
_noreturn_ static void worker_main(const Plan *p, const FleetDeviceEntry *todo, size_t n, unsigned w, unsigned jobs,
                                   int fd) {
        int status = 0;
        for (size_t i = w; i < n; i += jobs) {
                char err[512] = "", line[600];
                int r = provision_one(p, &todo[i], err, sizeof err), len;
                if (r < 0) {
                        len = snprintf(line, sizeof line, "err device %u '%s': %s\n", todo[i].index, todo[i].id,
                                       *err ? err : esp_err_to_name(r));
                        status = 1;
                } else
                        len = snprintf(line, sizeof line, "ok %zu\n", i);
                if (write(fd, line, (size_t) MIN(len, (int) sizeof line - 1)) < 0)
                        _exit(2);
                if (r < 0)
                        break;
        }
        _exit(status);
}

typedef struct WorkerPipe {
        pid_t pid;
        int fd;
        char buf[1024];
        size_t len;
} WorkerPipe;

static void handle_line(char *line, bool *done, size_t n, char *err, size_t errlen, int *r) {
        if (strneq(line, "ok ", 3)) {
                unsigned long i = strtoul(line + 3, NULL, 10);
                if (i < n)
                        done[i] = true;
        } else if (strneq(line, "err ", 4) && *r >= 0) {
                *r = errf(err, errlen, -EIO, "%s", line + 4);
        }
}

static int run_workers(const Plan *p, const FleetDeviceEntry *todo, size_t n, unsigned jobs, bool *done,
                       char *err, size_t errlen) {
        _cleanup_free_ WorkerPipe *w = calloc(jobs, sizeof *w);
        _cleanup_free_ struct pollfd *pfd = calloc(jobs, sizeof *pfd);
        unsigned open_fds = 0;
        int r = 0;

        if (!w || !pfd)
                return -ENOMEM;
        fflush(stdout);
        fflush(stderr);
        for (unsigned i = 0; i < jobs; i++) {
                int fds[2];
                if (pipe2(fds, O_CLOEXEC) < 0) {
                        r = errf(err, errlen, -errno, "pipe: %s", strerror(errno));
                        jobs = i;
                        break;
                }
                w[i].pid = fork();
                if (w[i].pid < 0) {
                        r = errf(err, errlen, -errno, "fork: %s", strerror(errno));
                        close(fds[0]);
                        close(fds[1]);
                        jobs = i;
                        break;
                }
                if (w[i].pid == 0) {
                        close(fds[0]);
                        worker_main(p, todo, n, i, jobs, fds[1]);
                }
                close(fds[1]);
                w[i].fd = fds[0];
                open_fds++;
        }

        while (open_fds > 0) {
                for (unsigned i = 0; i < jobs; i++)
                        pfd[i] = (struct pollfd) { .fd = w[i].fd, .events = POLLIN };
                if (poll(pfd, jobs, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                for (unsigned i = 0; i < jobs; i++) {
                        ssize_t k;
                        char *nl;
                        if (w[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        k = read(w[i].fd, w[i].buf + w[i].len, sizeof w[i].buf - 1 - w[i].len);
                        if (k <= 0) {
                                close(w[i].fd);
                                w[i].fd = -1;
                                open_fds--;
                                continue;
                        }
                        w[i].len += (size_t) k;
                        w[i].buf[w[i].len] = 0;
                        while ((nl = strchr(w[i].buf, '\n'))) {
                                *nl = 0;
                                handle_line(w[i].buf, done, n, err, errlen, &r);
                                w[i].len -= (size_t) (nl + 1 - w[i].buf);
                                memmove(w[i].buf, nl + 1, w[i].len + 1);
                        }
                        if (w[i].len == sizeof w[i].buf - 1)
                                w[i].len = 0;   /* an over-long line: drop it */
                }
        }
        for (unsigned i = 0; i < jobs; i++) {
                int status;
                if (w[i].pid > 0 && waitpid(w[i].pid, &status, 0) == w[i].pid &&
                    !(WIFEXITED(status) && WEXITSTATUS(status) == 0) && r >= 0)
                        r = errf(err, errlen, -EIO, "provisioning worker %d %s", (int) w[i].pid,
                                 WIFSIGNALED(status) ? "was killed by a signal" : "failed");
        }
        return r;
}

static int load_replay(Plan *p, char *err, size_t errlen) {
        const ProvisionOptions *o = p->o;
        int r;

        if (o->private_key) {
                _cleanup_(BIO_free_allp) BIO *b = BIO_new_file(o->private_key, "r");
                if (!b)
                        return errf(err, errlen, -ENOENT, "%s: cannot open", o->private_key);
                p->replay_key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
                ERR_clear_error();
                if (!p->replay_key || EVP_PKEY_get_base_id(p->replay_key) != EVP_PKEY_RSA)
                        return errf(err, errlen, -EBADMSG, "%s: not an unencrypted PEM RSA private key", o->private_key);
                if ((unsigned) EVP_PKEY_get_bits(p->replay_key) > ds_max_key_bits(p->chip) ||
                    EVP_PKEY_get_bits(p->replay_key) % 1024 != 0)
                        return errf(err, errlen, -EINVAL, "%s: RSA-%d is not a key size the %s DS takes",
                                    o->private_key, EVP_PKEY_get_bits(p->replay_key), p->conf.chip);
        }
        if (o->secure_cert) {
                _cleanup_free_ uint8_t *k = NULL;
                size_t klen;
                r = read_full_file(o->secure_cert, 1 << 20, &p->replay_cert_part, &p->replay_cert_part_len);
                if (r < 0)
                        return errf(err, errlen, r, "%s: cannot read: %s", o->secure_cert, strerror(-r));
                r = read_full_file(o->hmac_key, 4096, &k, &klen);
                if (r < 0)
                        return errf(err, errlen, r, "%s: cannot read: %s", o->hmac_key, strerror(-r));
                if (klen != EFUSE_KEY_LEN) {
                        erase_and_free(TAKE_PTR(k), klen);
                        return errf(err, errlen, -EINVAL, "%s: an HMAC key file holds exactly 32 bytes, not %zu",
                                    o->hmac_key, klen);
                }
                memcpy(p->replay_hmac, k, EFUSE_KEY_LEN);
                erase_and_free(TAKE_PTR(k), klen);

                /* Take the key block from its DS_CONTEXT. */
                _cleanup_(secure_cert_freep) SecureCert *sc = NULL;
                DsData ds;
                unsigned block, bits;
                r = secure_cert_parse(p->replay_cert_part, p->replay_cert_part_len, &sc, err, errlen);
                if (r < 0)
                        return r;
                r = secure_cert_get_ds(sc, p->chip, &ds, &block, &bits);
                if (r < 0)
                        return errf(err, errlen, r, "%s: no usable DS_DATA/DS_CONTEXT for %s", o->secure_cert, p->conf.chip);
                if (o->key_block >= 0 && (unsigned) o->key_block != block)
                        return errf(err, errlen, -EINVAL, "%s: its DS_CONTEXT names BLOCK_KEY%u, not --key-block %d",
                                    o->secure_cert, block, o->key_block);
                if (fleet_n_devices(p->fleet) > 0 && block != p->conf.ds_key_block)
                        return errf(err, errlen, -EXDEV, "%s: its DS_CONTEXT names BLOCK_KEY%u; the fleet uses BLOCK_KEY%u",
                                    o->secure_cert, block, p->conf.ds_key_block);
                p->conf.ds_key_block = block;
        }
        return 0;
}

int provision_fleet(const ProvisionOptions *o, char *err, size_t errlen) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        _cleanup_(pki_freep) Pki *pki = NULL;
        _cleanup_free_ FleetDeviceEntry *todo = NULL;
        _cleanup_free_ uint8_t *taken = NULL;
        _cleanup_free_ bool *done = NULL;
        _cleanup_free_ char *conf_path = NULL;
        Plan p = { .o = o };
        FleetConfig conf;
        size_t n = 0, n_done = 0;
        unsigned jobs;
        int r;

        if (!o->fleet_dir || !o->pki_dir)
                return errf(err, errlen, -EINVAL, "a fleet directory and --pki are required");
        if (o->count == 0)
                return errf(err, errlen, -EINVAL, "--count must be at least 1");
        if (o->first_index > FLEET_INDEX_MAX || o->count - 1 > FLEET_INDEX_MAX - o->first_index)
                return errf(err, errlen, -ERANGE, "--first-index %u + --count %u is beyond the largest index %u",
                            o->first_index, o->count, FLEET_INDEX_MAX);
        if ((o->private_key || o->secure_cert) && o->count != 1)
                return errf(err, errlen, -EINVAL, "replaying a device (--private-key, --secure-cert) needs --count 1");
        if (o->private_key && o->secure_cert)
                return errf(err, errlen, -EINVAL, "--private-key and --secure-cert exclude each other");
        if (!o->secure_cert != !o->hmac_key)
                return errf(err, errlen, -EINVAL, "--secure-cert and --hmac-key go together");

        r = pki_load(o->pki_dir, &pki, err, errlen);
        if (r < 0)
                return r;
        conf_path = path_join(o->fleet_dir, FLEET_CONF_FILE);
        if (!conf_path)
                return -ENOMEM;
        if (access(conf_path, F_OK) == 0) {
                r = fleet_open(o->fleet_dir, &f, err, errlen);
                if (r < 0)
                        return r;
                r = settle_config(o, fleet_config(f), &conf, err, errlen);
        } else {
                r = settle_config(o, NULL, &conf, err, errlen);
                if (r >= 0)
                        r = fleet_create(o->fleet_dir, &conf, &f, err, errlen);
        }
        if (r < 0)
                return r;

        p.fleet = f;
        p.pki = pki;
        p.conf = conf;
        p.chip = esp_chip_from_string(conf.chip);
        if ((int) p.chip < 0)
                return errf(err, errlen, -EINVAL, "chip '%s' is not supported", conf.chip);

        r = load_replay(&p, err, errlen);
        if (r < 0)
                goto out;
        p.sb_block = pick_sb_block(&p.conf);
        r = install_public_file(f, o->pki_dir, PKI_CA_CERT, FLEET_CA_FILE, err, errlen);
        if (r >= 0)
                r = install_public_file(f, o->pki_dir, PKI_SB_PUBKEY, FLEET_SB_PUBKEY_FILE, err, errlen);
        if (r >= 0)
                r = load_partitions(&p, err, errlen);
        if (r >= 0)
                r = build_firmware(&p, err, errlen);
        if (r >= 0)
                r = pki_cert_to_pem(pki_ca_cert(pki), &p.ca_pem, NULL);
        if (r < 0)
                goto out;

        /* Which devices are missing? */
        taken = calloc(1u << 21, 1);
        todo = calloc(o->count, sizeof *todo);
        if (!taken || !todo) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < fleet_n_devices(f); i++)
                mark_taken(taken, fleet_device_entry(f, i)->mac);
        remove_tmp_dirs(f);
        mark_existing_dirs(f, taken);
        for (unsigned k = 0; k < o->count; k++) {
                unsigned index = o->first_index + k;
                if (fleet_find_index(f, index))
                        continue;
                todo[n].index = index;
                r = new_mac(taken, todo[n].mac);
                if (r < 0) {
                        errf(err, errlen, r, "no free device id left");
                        goto out;
                }
                fleet_id_from_mac(todo[n].mac, todo[n].id);
                n++;
        }
        if (n == 0) {
                r = 0;
                goto out;
        }

        /* Write fleet.conf now that the settings are final (a replay may
         * have set the key block). */
        r = fleet_config_save(conf_path, &p.conf);
        if (r < 0) {
                errf(err, errlen, r, "%s: cannot write: %s", conf_path, strerror(-r));
                goto out;
        }

        jobs = o->jobs;
        if (jobs == 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                jobs = cpus > 0 ? (unsigned) cpus : 1;
        }
        jobs = (unsigned) MIN((size_t) jobs, n);
        done = calloc(n, sizeof *done);
        if (!done) {
                r = -ENOMEM;
                goto out;
        }
        r = run_workers(&p, todo, n, jobs, done, err, errlen);

        /* Record whatever was completed, even after a failure, so a re-run
         * only adds what is still missing. */
        for (size_t i = 0; i < n; i++)
                if (done[i])
                        todo[n_done++] = todo[i];
        if (n_done > 0) {
                int q = fleet_add_devices(f, todo, n_done);
                if (q < 0 && r >= 0)
                        r = errf(err, errlen, q, "%s/" FLEET_MANIFEST_FILE ": cannot update: %s", o->fleet_dir,
                                 esp_err_to_name(q));
        }
        if (r >= 0)
                r = (int) n_done;
out:
        plan_done(&p);
        return r;
}

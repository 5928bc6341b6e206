/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

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
#include "basic/progress.h"
#include "dsemu/ds.h"
#include "dsemu/efuse.h"
#include "dsemu/secure-cert.h"
#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "fleet/fleet-dir.h"
#include "fleet/fleet-identity.h"
#include "fleet/pki.h"
#include "fleet/provision.h"
#include "image/app-image.h"
#include "image/sbv2.h"
#include "nvs/nvs.h"

#define PARTITIONS_FILE "partitions.csv"
#define SETTINGS_NAMESPACE "secure_esp"
#define FIRMWARE_PROJECT "secure_esp"

/* A worker makes finished devices durable and visible in batches: one
 * syncfs() per batch instead of an fsync() per file. */
#define BATCH_MAX 512
#define BATCH_USEC (500 * 1000)
#define MANIFEST_FLUSH_USEC (1000 * 1000)  /* the parent lists finished devices at least this often */
#define PROGRESS_USEC (100 * 1000)         /* at most 10 redraws a second */
#define PROGRESS_BAR 30

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

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
        char replay_id[FLEET_ID_MAX];   /* --secure-cert: its DEV_CERT's CN, the device's id; "" otherwise */
        uint8_t replay_hmac[EFUSE_KEY_LEN];
        /* --key-pool: RSA keys shared by the devices, device index mod n_pool
         * picks one. In memory only (the workers inherit them through fork);
         * NULL for a slot no device of this run uses. */
        EVP_PKEY **pool;
        unsigned n_pool;
        int devices_fd;                 /* FLEET/devices, flock()ed for the run */
        sigset_t saved_mask;            /* the caller's signal mask, for the workers */
} Plan;

static void pool_free(Plan *p) {
        /* RSA keys clear their private numbers when freed. */
        for (unsigned i = 0; p->pool && i < p->n_pool; i++)
                EVP_PKEY_free(p->pool[i]);
        free(p->pool);
        p->pool = NULL;
}

static void plan_done(Plan *p) {
        pool_free(p);
        if (p->devices_fd >= 0)
                close(p->devices_fd);
        p->devices_fd = -EBADF;
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

/* Per worker and pool slot: the fingerprint of the pool key's DS parameters,
 * once a device with that key passed check_ds_matches_cert(). */
typedef struct PoolCheck {
        bool verified;
        uint8_t fingerprint[DS_FINGERPRINT_LEN];
} PoolCheck;

/* The DS check of a device. A key of its own: the full check. A pool key:
 * the full check for the first device with that key in this worker; then,
 * for the others, their DS data must unseal through the peripheral (HMAC
 * from their own eFuse, AES, MD and padding checks: all but the
 * exponentiation) to exactly the parameters that passed, and their
 * certificate must carry that pool key. */
static int check_device_ds(PoolCheck *pc, EVP_PKEY *pool_key, const Efuse *e, unsigned block, const DsData *ds,
                           X509 *cert, char *err, size_t errlen) {
        uint8_t fp[DS_FINGERPRINT_LEN];
        int r;

        if (pc && pc->verified) {
                r = ds_params_fingerprint(e, block, ds, fp);
                if (r < 0)
                        return errf(err, errlen, r, "the DS peripheral refuses the DS data: %s", esp_err_to_name(r));
                if (CRYPTO_memcmp(fp, pc->fingerprint, sizeof fp) != 0 ||
                    EVP_PKEY_eq(X509_get0_pubkey(cert), pool_key) != 1)
                        return errf(err, errlen, -EBADMSG, "the DS data does not belong to the device certificate's key");
                return 0;
        }
        r = check_ds_matches_cert(e, block, ds, cert, err, errlen);
        if (r < 0 || !pc)
                return r;
        r = ds_params_fingerprint(e, block, ds, pc->fingerprint);
        if (r < 0)
                return errf(err, errlen, r, "the DS peripheral refuses the DS data: %s", esp_err_to_name(r));
        pc->verified = true;
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

/* Builds device `d` in FLEET/devices/<id>.tmp; commit_batch() renames it. */
static int provision_one(const Plan *p, PoolCheck *checks, const FleetDeviceEntry *d, char *err, size_t errlen) {
        const FleetConfig *c = &p->conf;
        _cleanup_(efuse_freep) Efuse *e = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_freep) X509 *cert = NULL;
        _cleanup_(secure_cert_freep) SecureCert *sc = NULL;
        _cleanup_free_ char *final = NULL, *tmp = NULL, *efuse_path = NULL, *flash_path = NULL, *cert_path = NULL,
                            *pem = NULL;
        _cleanup_free_ uint8_t *part = NULL;
        Flash *flash = NULL;
        uint8_t hmac[EFUSE_KEY_LEN], iv[DS_IV_LEN];
        NvsXtsKeys nvs_keys, *nvs_keys_p = NULL;
        DsData ds;
        unsigned ds_block = c->ds_key_block, bits = c->rsa_bits;
        uint8_t efuse_bytes[EFUSE_FILE_SIZE];
        EVP_PKEY *pool_key = NULL;
        PoolCheck *pc = NULL;
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
        if (mkdir(tmp, 0700) < 0)
                return errf(err, errlen, -errno, "%s: cannot create: %s", tmp, strerror(errno));

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
                } else if (p->pool) {
                        unsigned slot = d->index % p->n_pool;
                        pool_key = p->pool[slot];
                        pc = &checks[slot];
                        if (!pool_key || !EVP_PKEY_up_ref(pool_key))
                                return -ENOMEM;
                        key = pool_key;
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
        r = check_device_ds(pc, pool_key, e, ds_block, &ds, cert, err, errlen);
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
        /* The app slots live in the fleet's sector store (issue #10): the
         * firmware below is stored once for the whole fleet. */
        r = fleet_device_enable_store(flash, p->table);
        if (r < 0) {
                errf(err, errlen, r, "%s: the fleet's sector store: %s", d->id, esp_err_to_name(r));
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

        /* No fsync here: commit_batch() makes the whole directory durable
         * before it gets its name. */
        efuse_to_bytes(e, efuse_bytes);
        r = write_file_new(efuse_path, efuse_bytes, sizeof efuse_bytes, 0600);
        explicit_bzero(efuse_bytes, sizeof efuse_bytes);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot write: %s", efuse_path, strerror(-r));
        r = write_file_new(cert_path, pem, pem_len, 0644);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot write: %s", cert_path, strerror(-r));
        if (chmod(tmp, 0755) < 0)
                return errf(err, errlen, -errno, "%s: cannot chmod: %s", tmp, strerror(errno));
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
        /* the emulated chip has FLASH_DEFAULT_SIZE of flash: a table past it is refused, not a larger file */
        char fit[256];
        r = partition_table_verify_fits(p->table, FLASH_DEFAULT_SIZE, fit, sizeof fit);
        if (r < 0)
                return errf(err, errlen, r, "%s: %s", p->o->partition_table ?: stored, fit);
        p->flash_size = FLASH_DEFAULT_SIZE;
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
        if (shard_is_set(&o->shard)) {
                if (have && have->fleet_size > 0 && have->fleet_size != o->count)
                        return errf(err, errlen, -EXDEV, "the fleet's shards were provisioned from a fleet of %u "
                                    "devices, not %u (--count is the whole fleet's size with --shard)",
                                    have->fleet_size, o->count);
                c->fleet_size = o->count;
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
/* A replayed esp_secure_cert brings its certificate, and the device's id
 * must be its CN: the broker takes the CN for the username
 * (use_identity_as_username) and the ACL confines a device to /esp/<CN>/#,
 * so any other id would see every publish denied. A CN that cannot be an
 * id (fleet_id_is_valid()) is refused with the reason. */
static int replay_id_from_cert(SecureCert *sc, const char *path, char id[FLEET_ID_MAX], char *err, size_t errlen) {
        _cleanup_(X509_freep) X509 *cert = NULL;
        char cn[256] = "";
        int r;

        r = secure_cert_get_x509(sc, SECURE_CERT_DEV_CERT, &cert);
        if (r < 0)
                return errf(err, errlen, r, "%s: no usable DEV_CERT: %s", path, esp_err_to_name(r));
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) <= 0)
                return errf(err, errlen, -EINVAL, "%s: DEV_CERT has no CN; the broker's ACL needs CN = the device id",
                            path);
        if (!fleet_id_is_valid(cn))
                return errf(err, errlen, -EINVAL,
                            "%s: DEV_CERT's CN '%.64s' cannot be a device id (1 to %d of A-Z a-z 0-9 . _ -, not "
                            "starting with . or -). The broker takes the CN for the username, and under the ACL "
                            "/esp/%%u/# a device with another id would see every publish denied: re-issue the "
                            "certificate", path, cn, FLEET_ID_MAX - 1);
        snprintf(id, FLEET_ID_MAX, "%s", cn);
        return 0;
}

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

static bool id_taken(const uint8_t *taken, const uint8_t mac[FLEET_MAC_LEN]) {
        uint32_t low = (uint32_t) mac[3] << 16 | (uint32_t) mac[4] << 8 | mac[5];
        return taken[low >> 3] & (1u << (low & 7));
}

/* The derived MAC of device `index` (fleet-identity.h). A device the fleet
 * already has at that index must carry it: another MAC means another seed
 * (or none), and mixing the two would break "same arguments, same ids".
 * A new one must not take the id of another device of the fleet. */
static int derived_mac(Plan *p, const FleetIdentityKey *k, const FleetDeviceEntry *have, unsigned index,
                       uint8_t *taken, uint8_t mac[FLEET_MAC_LEN], char *err, size_t errlen) {
        char id[FLEET_ID_MAX];
        int r;

        r = fleet_identity_mac(k, index, mac);
        if (r < 0)
                return errf(err, errlen, r, "cannot derive the MAC of device %u", index);
        fleet_id_from_mac(mac, id);
        if (have) {
                if (memcmp(have->mac, mac, FLEET_MAC_LEN) != 0)
                        return errf(err, errlen, -EXDEV, "%s: device %u is %s, while this --seed makes it %s: the "
                                    "fleet was provisioned with another seed (or none); use a new fleet directory",
                                    fleet_path(p->fleet), index, have->id, id);
                return 0;
        }
        if (id_taken(taken, mac))
                return errf(err, errlen, -EEXIST, "%s: device %u would be %s, an id another device of the fleet "
                            "already has (provisioned without this --seed); use a new fleet directory",
                            fleet_path(p->fleet), index, id);
        mark_taken(taken, mac);
        return 0;
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

static int write_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t k = write(fd, buf, len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += k;
                len -= (size_t) k;
        }
        return 0;
}

/* Makes a batch of finished devices durable with one syncfs() for all their
 * files, then renames each <id>.tmp to <id>: a device dir exists under its
 * name only when it is complete, also after a power cut, and an interrupted
 * run leaves at most .tmp dirs, which the next run removes. Reports
 * "ok I\n" on `fd` for each device renamed. */
static int commit_batch(const Plan *p, const FleetDeviceEntry *todo, const size_t *batch, size_t nb, int fd,
                        char *err, size_t errlen) {
        char lines[BATCH_MAX * 24];
        size_t len = 0;
        int r = 0;

        if (nb == 0)
                return 0;
        if (syncfs(p->devices_fd) < 0)
                return errf(err, errlen, -errno, "%s/" FLEET_DEVICES_DIR ": syncfs: %s", fleet_path(p->fleet),
                            strerror(errno));
        for (size_t k = 0; k < nb; k++) {
                const FleetDeviceEntry *d = &todo[batch[k]];
                _cleanup_free_ char *final = fleet_device_dir(p->fleet, d->id), *tmp = NULL;

                if (!final || asprintf(&tmp, "%s.tmp", final) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (rename(tmp, final) < 0) {
                        r = errf(err, errlen, -errno, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
                        break;
                }
                len += (size_t) snprintf(lines + len, sizeof lines - len, "ok %zu\n", batch[k]);
        }
        if (write_all(fd, lines, len) < 0)
                _exit(2);
        return r;
}

static void report_error(int fd, const FleetDeviceEntry *d, int r, const char *err) {
        char line[700];
        int len;

        if (d)
                len = snprintf(line, sizeof line, "err device %u '%s': %s\n", d->index, d->id,
                               *err ? err : esp_err_to_name(r));
        else
                len = snprintf(line, sizeof line, "err %s\n", *err ? err : esp_err_to_name(r));
        if (write_all(fd, line, (size_t) MIN(len, (int) sizeof line - 1)) < 0)
                _exit(2);
}

/* Worker: provisions todo[i] for i = w, w + jobs, … and reports on `fd`
 * "ok INDEX\n" per device made visible, "err MESSAGE\n" on the first failure. */
_noreturn_ static void worker_main(const Plan *p, const FleetDeviceEntry *todo, size_t n, unsigned w, unsigned jobs,
                                   int fd) {
        PoolCheck *checks = NULL;
        size_t batch[BATCH_MAX], nb = 0;
        uint64_t batch_start = 0;
        int status = 0;

        if (p->n_pool > 0 && !(checks = calloc(p->n_pool, sizeof *checks))) {
                report_error(fd, NULL, -ENOMEM, "");
                _exit(1);
        }
        for (size_t i = w; i < n; i += jobs) {
                char err[512] = "";
                int r = provision_one(p, checks, &todo[i], err, sizeof err);

                if (r >= 0) {
                        if (nb == 0)
                                batch_start = now_usec();
                        batch[nb++] = i;
                }
                if (r < 0 || nb == BATCH_MAX || i + jobs >= n || now_usec() - batch_start >= BATCH_USEC) {
                        char cerr[512] = "";
                        int q = commit_batch(p, todo, batch, nb, fd, cerr, sizeof cerr);
                        nb = 0;
                        if (q < 0) {
                                report_error(fd, NULL, q, cerr);
                                status = 1;
                                break;
                        }
                }
                if (r < 0) {
                        report_error(fd, &todo[i], r, err);
                        status = 1;
                        break;
                }
        }
        if (checks)
                explicit_bzero(checks, p->n_pool * sizeof *checks);
        free(checks);
        for (unsigned i = 0; p->pool && i < p->n_pool; i++)
                EVP_PKEY_free(p->pool[i]);
        _exit(status);
}

typedef struct WorkerPipe {
        pid_t pid;
        int fd;
        char buf[1024];
        size_t len;
} WorkerPipe;

/* The renames of finished devices must be on disk before manifest.csv
 * names them; then the manifest is rewritten atomically. */
static int flush_manifest(const Plan *p, const FleetDeviceEntry *fresh, size_t *n_fresh, char *err, size_t errlen) {
        int r;

        if (*n_fresh == 0)
                return 0;
        if (fsync(p->devices_fd) < 0)
                return errf(err, errlen, -errno, "%s/" FLEET_DEVICES_DIR ": fsync: %s", fleet_path(p->fleet),
                            strerror(errno));
        r = fleet_add_devices(p->fleet, fresh, *n_fresh);
        if (r < 0)
                return errf(err, errlen, r, "%s/" FLEET_MANIFEST_FILE ": cannot update: %s", fleet_path(p->fleet),
                            esp_err_to_name(r));
        *n_fresh = 0;
        return 0;
}

static void progress_draw(size_t done, size_t total, uint64_t t0) {
        char line[160];

        progress_format(line, sizeof line, done, total, (double) (now_usec() - t0) / 1e6, PROGRESS_BAR);
        fprintf(stderr, "\r%s\033[K", line);
        fflush(stderr);
}

static void stop_workers(const WorkerPipe *w, unsigned jobs) {
        for (unsigned i = 0; i < jobs; i++)
                if (w[i].pid > 0)
                        (void) kill(w[i].pid, SIGTERM);
}

/* Runs the workers, lists each finished device in manifest.csv within
 * MANIFEST_FLUSH_USEC, draws the progress bar, and on SIGINT/SIGTERM (read
 * from `sigfd`) stops the workers and keeps what they finished. Returns 0 or
 * the first error; *ret_done = devices listed. */
static int run_workers(const Plan *p, const FleetDeviceEntry *todo, size_t n, unsigned jobs, int sigfd,
                       size_t *ret_done, char *err, size_t errlen) {
        _cleanup_free_ WorkerPipe *w = calloc(jobs, sizeof *w);
        _cleanup_free_ struct pollfd *pfd = calloc(jobs + 1, sizeof *pfd);
        _cleanup_free_ FleetDeviceEntry *fresh = calloc(n, sizeof *fresh);
        _cleanup_free_ bool *done = calloc(n, sizeof *done);
        size_t n_fresh = 0, n_done = 0;
        uint64_t t0 = now_usec(), last_flush = t0, last_draw = 0;
        bool progress = p->o->progress && !p->o->quiet, stopping = false;
        unsigned open_fds = 0;
        pid_t parent = getpid();
        int r = 0, q;

        if (!w || !pfd || !fresh || !done)
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
                        /* Die with the parent, and by SIGINT/SIGTERM as usual:
                         * a device in the making is only a .tmp dir. */
                        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                        if (getppid() != parent)
                                _exit(1);
                        close(sigfd);
                        close(fds[0]);
                        for (unsigned k = 0; k < i; k++)
                                close(w[k].fd);
                        (void) sigprocmask(SIG_SETMASK, &p->saved_mask, NULL);
                        worker_main(p, todo, n, i, jobs, fds[1]);
                }
                close(fds[1]);
                w[i].fd = fds[0];
                open_fds++;
        }
        if (r < 0)
                stop_workers(w, jobs);
        if (progress)
                progress_draw(0, n, t0);

        while (open_fds > 0) {
                uint64_t now;
                int timeout = (int) ((progress ? PROGRESS_USEC : MANIFEST_FLUSH_USEC) / 1000);

                for (unsigned i = 0; i < jobs; i++)
                        pfd[i] = (struct pollfd) { .fd = w[i].fd, .events = POLLIN };
                pfd[jobs] = (struct pollfd) { .fd = sigfd, .events = POLLIN };
                if (poll(pfd, jobs + 1, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        stop_workers(w, jobs);
                        break;
                }
                if (pfd[jobs].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        if (read(sigfd, &si, sizeof si) == (ssize_t) sizeof si && !stopping) {
                                stopping = true;
                                if (r >= 0)
                                        r = errf(err, errlen, -EINTR, "interrupted by SIG%s",
                                                 sigabbrev_np((int) si.ssi_signo));
                                stop_workers(w, jobs);
                        }
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
                                char *line = w[i].buf;
                                *nl = 0;
                                if (strneq(line, "ok ", 3)) {
                                        unsigned long x = strtoul(line + 3, NULL, 10);
                                        if (x < n && !done[x]) {
                                                done[x] = true;
                                                fresh[n_fresh++] = todo[x];
                                                n_done++;
                                        }
                                } else if (strneq(line, "err ", 4) && r >= 0)
                                        r = errf(err, errlen, -EIO, "%s", line + 4);
                                w[i].len -= (size_t) (nl + 1 - w[i].buf);
                                memmove(w[i].buf, nl + 1, w[i].len + 1);
                        }
                        if (w[i].len == sizeof w[i].buf - 1)
                                w[i].len = 0;   /* an over-long line: drop it */
                }

                now = now_usec();
                if (now - last_flush >= MANIFEST_FLUSH_USEC) {
                        q = flush_manifest(p, fresh, &n_fresh, err, errlen);
                        if (q < 0 && r >= 0) {
                                r = q;
                                stop_workers(w, jobs);
                        }
                        last_flush = now;
                }
                if (progress && now - last_draw >= PROGRESS_USEC) {
                        progress_draw(n_done, n, t0);
                        last_draw = now;
                }
        }
        for (unsigned i = 0; i < jobs; i++) {
                int status;
                if (w[i].pid > 0 && waitpid(w[i].pid, &status, 0) == w[i].pid &&
                    !(WIFEXITED(status) && WEXITSTATUS(status) == 0) && r >= 0)
                        r = errf(err, errlen, -EIO, "provisioning worker %d %s", (int) w[i].pid,
                                 WIFSIGNALED(status) ? "was killed by a signal" : "failed");
        }
        /* Whatever was completed is listed, even after a failure, so that a
         * re-run only adds what is still missing. */
        q = flush_manifest(p, fresh, &n_fresh, err, errlen);
        if (q < 0 && r >= 0)
                r = q;
        if (progress) {
                fputs("\r\033[K", stderr);
                fflush(stderr);
        }
        *ret_done = n_done - n_fresh;
        return r;
}

/* --key-pool: the pool's keys, made by up to `jobs` threads before the
 * workers are forked (they inherit them). */
typedef struct PoolJob {
        EVP_PKEY **keys;
        const unsigned *slots;          /* the slots to fill */
        size_t n_slots, first, step;
        unsigned bits;
        int r;
} PoolJob;

static void *pool_thread(void *userdata) {
        PoolJob *j = userdata;

        for (size_t i = j->first; i < j->n_slots; i += j->step)
                if (!(j->keys[j->slots[i]] = EVP_RSA_gen(j->bits))) {
                        j->r = -EIO;
                        break;
                }
        return NULL;
}

/* Generates the pool keys that the devices of `todo` use. */
static int pool_generate(Plan *p, const FleetDeviceEntry *todo, size_t n, unsigned jobs, char *err, size_t errlen) {
        unsigned k = p->o->key_pool;
        _cleanup_free_ unsigned *slots = calloc(MIN((size_t) k, n), sizeof *slots);
        _cleanup_free_ bool *used = calloc(k, sizeof *used);
        _cleanup_free_ PoolJob *job = NULL;
        _cleanup_free_ pthread_t *tid = NULL;
        size_t n_slots = 0, n_threads;
        int r = 0;

        if (!slots || !used)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!used[todo[i].index % k]) {
                        used[todo[i].index % k] = true;
                        slots[n_slots++] = todo[i].index % k;
                }
        p->pool = calloc(k, sizeof *p->pool);
        if (!p->pool)
                return -ENOMEM;
        p->n_pool = k;

        n_threads = MIN((size_t) jobs, n_slots);
        job = calloc(n_threads, sizeof *job);
        tid = calloc(n_threads, sizeof *tid);
        if (!job || !tid)
                return -ENOMEM;
        for (size_t t = 0; t < n_threads; t++) {
                int q;
                job[t] = (PoolJob) { .keys = p->pool, .slots = slots, .n_slots = n_slots, .first = t,
                                     .step = n_threads, .bits = p->conf.rsa_bits };
                q = pthread_create(&tid[t], NULL, pool_thread, &job[t]);
                if (q != 0) {
                        r = errf(err, errlen, -q, "cannot start a key generation thread: %s", strerror(q));
                        n_threads = t;
                        break;
                }
        }
        for (size_t t = 0; t < n_threads; t++) {
                (void) pthread_join(tid[t], NULL);
                if (job[t].r < 0 && r >= 0)
                        r = errf(err, errlen, job[t].r, "RSA-%u key generation for the key pool failed",
                                 p->conf.rsa_bits);
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
                r = replay_id_from_cert(sc, o->secure_cert, p->replay_id, err, errlen);
                if (r >= 0 && fleet_find_device(p->fleet, p->replay_id))
                        r = errf(err, errlen, -EEXIST, "%s: its certificate's id '%s' is in the fleet already",
                                 o->secure_cert, p->replay_id);
                if (r < 0)
                        return r;
                if (fleet_n_devices(p->fleet) > 0 && block != p->conf.ds_key_block)
                        return errf(err, errlen, -EXDEV, "%s: its DS_CONTEXT names BLOCK_KEY%u; the fleet uses BLOCK_KEY%u",
                                    o->secure_cert, block, p->conf.ds_key_block);
                p->conf.ds_key_block = block;
        }
        return 0;
}

/* Takes FLEET/devices (created if missing) for this run: one provisioning
 * at a time per fleet, since a run removes the .tmp dirs it finds. The
 * workers share the lock; it goes away with the last of them. */
static int lock_devices_dir(Plan *p, char *err, size_t errlen) {
        _cleanup_free_ char *dir = fleet_file(p->fleet, FLEET_DEVICES_DIR);

        if (!dir)
                return -ENOMEM;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return errf(err, errlen, -errno, "%s: cannot create: %s", dir, strerror(errno));
        p->devices_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (p->devices_fd < 0)
                return errf(err, errlen, -errno, "%s: cannot open: %s", dir, strerror(errno));
        if (flock(p->devices_fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EWOULDBLOCK)
                        return errf(err, errlen, -EBUSY, "%s: another 'espfleet provision' is working on this fleet",
                                    fleet_path(p->fleet));
                return errf(err, errlen, -errno, "%s: cannot lock: %s", dir, strerror(errno));
        }
        return 0;
}

static bool device_dir_complete(Fleet *f, const char *id) {
        static const char *const files[] = { FLEET_DEVICE_EFUSE_FILE, FLEET_DEVICE_FLASH_FILE, FLEET_DEVICE_CERT_FILE };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *path = fleet_device_file(f, id, files[i]);
                struct stat st;
                if (!path || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
                        return false;
        }
        return true;
}

/* Devices an interrupted run made visible but had not listed yet (it is
 * killed between a rename and the next manifest update): the plan it wrote
 * before starting, FLEET_PENDING_FILE, names their index. A device dir
 * under its final name is complete (commit_batch()); a planned device with
 * no dir is simply made anew. Returns the number adopted. */
static int adopt_pending(Plan *p, char *err, size_t errlen) {
        _cleanup_free_ char *path = fleet_file(p->fleet, FLEET_PENDING_FILE);
        _cleanup_free_ FleetDeviceEntry *e = NULL;
        _cleanup_free_ uint8_t *listed = NULL;
        size_t n = 0, k = 0;
        int r;

        if (!path)
                return -ENOMEM;
        if (access(path, F_OK) < 0)
                return errno == ENOENT ? 0 : errf(err, errlen, -errno, "%s: %s", path, strerror(errno));
        r = fleet_manifest_parse(path, &e, &n, err, errlen);
        if (r < 0)
                return r;
        listed = calloc(1u << 21, 1);
        if (!listed)
                return -ENOMEM;
        for (size_t i = 0; i < fleet_n_devices(p->fleet); i++)
                mark_taken(listed, fleet_device_entry(p->fleet, i)->mac);
        for (size_t i = 0; i < n; i++)
                if (!fleet_find_index(p->fleet, e[i].index) && !id_taken(listed, e[i].mac) &&
                    device_dir_complete(p->fleet, e[i].id))
                        e[k++] = e[i];
        r = flush_manifest(p, e, &k, err, errlen);
        if (r < 0)
                return r;
        return (int) k;
}

static int provision_fleet_blocked(const ProvisionOptions *o, const sigset_t *saved_mask, char *err, size_t errlen) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        _cleanup_(pki_freep) Pki *pki = NULL;
        _cleanup_free_ FleetDeviceEntry *todo = NULL;
        _cleanup_free_ uint8_t *taken = NULL;
        _cleanup_free_ char *conf_path = NULL, *pending_path = NULL;
        Plan p = { .o = o, .devices_fd = -EBADF };
        FleetConfig conf;
        size_t n = 0, n_done = 0;
        sigset_t mask;
        int sigfd = -EBADF;
        unsigned jobs, first = o->first_index, n_want = o->count;
        FleetIdentityKey idkey = {};
        int r;

        if (!o->fleet_dir || !o->pki_dir)
                return errf(err, errlen, -EINVAL, "a fleet directory and --pki are required");
        if (o->count == 0)
                return errf(err, errlen, -EINVAL, "--count must be at least 1");
        if (o->first_index > FLEET_INDEX_MAX || o->count - 1 > FLEET_INDEX_MAX - o->first_index)
                return errf(err, errlen, -ERANGE, "--first-index %u + --count %u is beyond the largest index %u",
                            o->first_index, o->count, FLEET_INDEX_MAX);
        if (shard_is_set(&o->shard)) {
                if (!o->seed)
                        return errf(err, errlen, -EINVAL, "--shard needs --seed: the shards of one fleet derive "
                                    "their device ids from the same seed");
                if (o->first_index != 0)
                        return errf(err, errlen, -EINVAL, "--shard and --first-index exclude each other");
                shard_range(&o->shard, o->count, &first, &n_want);
                if (n_want == 0)
                        return errf(err, errlen, -EINVAL, "shard %u/%u of a fleet of %u devices holds no device",
                                    o->shard.index, o->shard.count, o->count);
        }
        if (o->seed) {
                if (o->private_key || o->secure_cert)
                        return errf(err, errlen, -EINVAL, "--seed derives new identities; a replay brings its own");
                if (first + n_want - 1 > FLEET_IDENTITY_INDEX_MAX)
                        return errf(err, errlen, -ERANGE, "with --seed, device indexes go up to %u",
                                    FLEET_IDENTITY_INDEX_MAX);
                r = fleet_identity_key_from_seed(o->seed, &idkey);
                if (r < 0)
                        return errf(err, errlen, r, "--seed: %s", r == -EINVAL ? "must not be empty" : "cannot derive a key");
        }
        if ((o->private_key || o->secure_cert) && o->count != 1)
                return errf(err, errlen, -EINVAL, "replaying a device (--private-key, --secure-cert) needs --count 1");
        if ((o->private_key || o->secure_cert) && o->key_pool > 0)
                return errf(err, errlen, -EINVAL, "--key-pool makes new keys; a replay (--private-key, --secure-cert) brings its own");
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

        r = lock_devices_dir(&p, err, errlen);
        if (r < 0)
                goto out;
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

        /* What an interrupted run left: half-made devices go, finished
         * ones that it had not listed yet are listed. */
        remove_tmp_dirs(f);
        r = adopt_pending(&p, err, errlen);
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
        mark_existing_dirs(f, taken);
        for (unsigned k = 0; k < n_want; k++) {
                unsigned index = first + k;
                const FleetDeviceEntry *have = fleet_find_index(f, index);
                if (o->seed) {
                        r = derived_mac(&p, &idkey, have, index, taken, todo[n].mac, err, errlen);
                        if (r < 0)
                                goto out;
                }
                if (have)
                        continue;
                todo[n].index = index;
                if (!o->seed) {
                        r = new_mac(taken, todo[n].mac);
                        if (r < 0) {
                                errf(err, errlen, r, "no free device id left");
                                goto out;
                        }
                }
                if (p.replay_id[0])
                        /* a replay: the id its certificate names */
                        snprintf(todo[n].id, sizeof todo[n].id, "%s", p.replay_id);
                else
                        fleet_id_from_mac(todo[n].mac, todo[n].id);
                n++;
        }
        pending_path = fleet_file(f, FLEET_PENDING_FILE);
        if (!pending_path) {
                r = -ENOMEM;
                goto out;
        }
        if (n == 0) {
                (void) unlink(pending_path);
                r = 0;
                goto out;
        }

        jobs = o->jobs;
        if (jobs == 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                jobs = cpus > 0 ? (unsigned) cpus : 1;
        }
        jobs = (unsigned) MIN((size_t) jobs, n);
        if (o->key_pool > 0) {
                r = pool_generate(&p, todo, n, jobs, err, errlen);
                if (r < 0)
                        goto out;
        }

        /* Write fleet.conf now that the settings are final (a replay may
         * have set the key block), and the plan, so that the next run can
         * list what this one finishes but does not get to list. */
        r = fleet_config_save(conf_path, &p.conf);
        if (r < 0) {
                errf(err, errlen, r, "%s: cannot write: %s", conf_path, strerror(-r));
                goto out;
        }
        r = fleet_manifest_write(pending_path, todo, n);
        if (r < 0) {
                errf(err, errlen, r, "%s: cannot write: %s", pending_path, strerror(-r));
                goto out;
        }

        /* SIGINT/SIGTERM stop the run in order (run_workers()). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        p.saved_mask = *saved_mask;
        if ((sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
                r = errf(err, errlen, -errno, "signalfd: %s", strerror(errno));
                goto out;
        }
        r = run_workers(&p, todo, n, jobs, sigfd, &n_done, err, errlen);
        close(sigfd);
        if (r >= 0) {
                (void) unlink(pending_path);
                r = (int) n_done;
        }
out:
        plan_done(&p);
        return r;
}

int provision_fleet(const ProvisionOptions *o, char *err, size_t errlen) {
        sigset_t block, saved;
        int r;

        /* SIGINT/SIGTERM are blocked from the start, so one that comes while
         * the run adopts finished devices or makes its key pool is not the
         * default death: run_workers() reads it from its signalfd (pending
         * signals included) and stops in order. */
        sigemptyset(&block);
        sigaddset(&block, SIGINT);
        sigaddset(&block, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &block, &saved) < 0)
                return errf(err, errlen, -errno, "sigprocmask: %s", strerror(errno));
        r = provision_fleet_blocked(o, &saved, err, errlen);
        (void) sigprocmask(SIG_SETMASK, &saved, NULL);
        return r;
}

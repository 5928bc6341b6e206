/* SPDX-License-Identifier: MIT */
#pragma once

/* Provisioning, the configure_ds / esp-secure-cert-tool equivalent
 * (issues #2 §2, #3 "Provisioning", #4, #5 "Provisioning"). Per device:
 *   MAC (locally administered, random, unique last 3 bytes), id, eFuse file;
 *   RSA key generated in memory, certificate signed by the fleet CA (CN = id);
 *   random HMAC key in BLOCK_KEY<ds_key_block> (HMAC_DOWN_DIGITAL_SIGNATURE,
 *   read-protected unless development); DS ciphertext with a random IV;
 *   flash image: partition table, esp_secure_cert (CA_CERT, DEV_CERT, DS_DATA,
 *   DS_CONTEXT), NVS with the settings namespace, SBv2 digest in eFuse,
 *   initial signed firmware in ota_0, otadata; then the key is freed. */

#include <stdbool.h>
#include <stddef.h>

#include "fleet/fleet-dir.h"
#include "fleet/shard.h"

typedef struct ProvisionOptions {
        const char *fleet_dir;
        const char *pki_dir;
        unsigned count;               /* devices [first_index, first_index + count) must exist; with a
                                       * shard, the whole fleet's size: the shard's slice must exist */
        unsigned first_index;         /* 0 with a shard */
        Shard shard;                  /* unset = no sharding; set: needs a seed, records fleet_size */
        const char *seed;             /* NULL = random MACs; else MACs and ids derived from it and the
                                       * index (fleet-identity.h); keys stay random */
        const char *chip;             /* NULL = keep/ default "esp32c3" */
        int key_block;                /* -1 = default 1 (or the fleet's) */
        bool development;
        bool nvs_encryption;
        bool signed_apps_no_secure_boot; /* esp-formats.md §6.2 instead of SBv2 eFuse digests */
        const char *partition_table;  /* CSV; NULL = built-in default (etc/partitions.csv layout) */
        const char *firmware_version; /* NULL = "1.0.0" */
        unsigned jobs;                /* worker processes; 0 = number of CPUs */
        unsigned rsa_bits;            /* 0 = 2048 */
        unsigned key_pool;            /* 0 = a key per device; K = K keys shared by the devices (index mod K),
                                       * generated at the start, in memory only: for load tests */
        /* Replays of a real device (count must be 1): */
        const char *private_key;      /* PEM RSA key, like configure_ds.py --private-key */
        const char *secure_cert;      /* esp_secure_cert partition binary (--keep_ds_data_on_host) */
        const char *hmac_key;         /* its 32-byte HMAC key file */
        bool quiet;
        bool progress;                /* progress bar on stderr (the caller checks that it is a TTY) */
} ProvisionOptions;

void provision_options_init(ProvisionOptions *o);

/* Provisions the missing devices; existing ones are kept. Each finished
 * device is listed in manifest.csv within a second; an interrupted run
 * (SIGINT/SIGTERM: -EINTR; or killed) leaves no half-made device visible,
 * and the next run removes its leftovers, lists what it finished and makes
 * the rest. Returns the number of devices created (>= 0) or a negative
 * errno with err filled. */
int provision_fleet(const ProvisionOptions *o, char *err, size_t errlen);

/* SPDX-License-Identifier: MIT */
#pragma once

#include "flash/flash.h"
#include "flash/partition-table.h"
#include "flash/sector-store.h"

/* The fleet directory: the daemon's state (HACKING.md "The fleet directory").
 *
 *   FLEET/fleet.conf              libconfig, `format = 1;` plus the per-fleet options below
 *   FLEET/ca.crt                  fleet CA certificate (public)
 *   FLEET/secure_boot_pubkey.pem  public half of the fleet's secure-boot signing key
 *   FLEET/manifest.csv            "index,id,mac" header, then one line per device
 *   FLEET/devices.lock            OFD byte-range locks: byte <index> is write-locked while a daemon runs it
 *   FLEET/run/lock-<first>.pid    who holds a lock range (see fleet_lock_devices())
 *   FLEET/provision.pending       while (or after an interrupted) provision runs: its plan, in the
 *                                 manifest's format; the next run lists the finished ones from it
 *   FLEET/devices/<id>.tmp/       a device being provisioned (removed by the next run if interrupted)
 *   FLEET/devices/<id>/efuse.bin  QEMU eFuse file (1024 bytes, 0600)
 *   FLEET/devices/<id>/flash.bin  4 MiB sparse flash image (0600)
 *   FLEET/devices/<id>/device.crt device certificate, for inspection
 *
 * No private key ever lives here. Functions that read user-visible files take
 * `char *err, size_t errlen` and fill it with a message naming the file and
 * the problem; they return negative errno (or -ESP_ERR_*). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/x509.h>

#define FLEET_FORMAT_VERSION 1

#define FLEET_CONF_FILE "fleet.conf"
#define FLEET_MANIFEST_FILE "manifest.csv"
#define FLEET_CA_FILE "ca.crt"
#define FLEET_SB_PUBKEY_FILE "secure_boot_pubkey.pem"
#define FLEET_LOCK_FILE "devices.lock"
#define FLEET_PENDING_FILE "provision.pending"  /* manifest format: the devices a provision run is making */
#define FLEET_RUN_DIR "run"
#define FLEET_DEVICES_DIR "devices"
#define FLEET_DEVICE_EFUSE_FILE "efuse.bin"
#define FLEET_DEVICE_FLASH_FILE "flash.bin"
#define FLEET_DEVICE_CERT_FILE "device.crt"
#define FLEET_STORE_DIR "store"               /* the fleet's sector store (flash/sector-store.h) */

#define FLEET_MAC_LEN 6
#define FLEET_ID_MAX 16              /* "esp-a1b2c3" + NUL fits */
#define FLEET_INDEX_MAX 0x7fffffffu  /* byte offsets in devices.lock */

/* Types owned by other modules; only pointers are used here. */
typedef struct Efuse Efuse;
typedef struct Flash Flash;
typedef struct PartitionTable PartitionTable;
typedef struct DsData DsData;
typedef struct DsKey DsKey;
typedef struct NvsXtsKeys NvsXtsKeys;

/* fleet.conf. Defaults (fleet_config_init()) are the one place defaults live. */
typedef struct FleetConfig {
        unsigned format;                 /* FLEET_FORMAT_VERSION */
        char chip[16];                   /* "esp32c3" (default) or "esp32s3" */
        unsigned ds_key_block;           /* BLOCK_KEY<n> holding the DS HMAC key, default 1 */
        bool development;                /* DS HMAC key left readable (configure_ds development mode) */
        bool nvs_encryption;             /* NVS encrypted, HMAC scheme (esp-formats.md §3.4) */
        int nvs_key_block;               /* BLOCK_KEY<n> with purpose HMAC_UP, -1 when !nvs_encryption */
        bool signed_apps_no_secure_boot; /* §6.2 mode instead of SBv2 eFuse digests */
        unsigned rsa_bits;               /* device key size, default 2048 */
        char firmware_version[32];       /* initial firmware written into ota_0, default "1.0.0" */
        unsigned fleet_size;             /* devices of the whole fleet when provisioned by shards
                                          * (provision --shard, shard.h); 0 = not recorded */
} FleetConfig;

void fleet_config_init(FleetConfig *c);
/* Parses/writes fleet.conf. Unknown format versions, unknown chips and
 * out-of-range values are refused with file:line or the key named. */
int fleet_config_load(const char *path, FleetConfig *ret, char *err, size_t errlen);
int fleet_config_save(const char *path, const FleetConfig *c);

/* One manifest line. */
typedef struct FleetDeviceEntry {
        unsigned index;
        char id[FLEET_ID_MAX];
        uint8_t mac[FLEET_MAC_LEN];
} FleetDeviceEntry;

/* "esp-" + the last three MAC bytes in lower-case hex. */
void fleet_id_from_mac(const uint8_t mac[FLEET_MAC_LEN], char id[FLEET_ID_MAX]);
/* Whether s can be a device id: 1..FLEET_ID_MAX-1 characters of A-Z a-z
 * 0-9 . _ -, not starting with '.' or '-' (it names a directory, an MQTT
 * client id and a topic level). A provisioned device's id is
 * fleet_id_from_mac(); a replayed one's is its certificate's CN. */
bool fleet_id_is_valid(const char *s);
/* "aa:bb:cc:dd:ee:ff" (out: 18 bytes) and back. */
void fleet_mac_to_string(const uint8_t mac[FLEET_MAC_LEN], char out[18]);
int fleet_mac_from_string(const char *s, uint8_t mac[FLEET_MAC_LEN]);

/* manifest.csv: parse (entries sorted by index on return; duplicate index,
 * id or MAC, id not derived from the MAC, bad lines → -EBADMSG with
 * "manifest.csv:LINE: reason") and atomic write (temp file + rename). */
int fleet_manifest_parse(const char *path, FleetDeviceEntry **ret, size_t *ret_n, char *err, size_t errlen);
int fleet_manifest_write(const char *path, const FleetDeviceEntry *e, size_t n);

typedef struct Fleet Fleet;

/* Opens an existing fleet dir: reads fleet.conf and manifest.csv and checks
 * that every manifest line has its device dir with efuse.bin and flash.bin,
 * and that ca.crt is present. A directory made by an older or newer espfleet
 * (no fleet.conf, another format, plaintext device keys) is refused with a
 * message saying what to do. */
int fleet_open(const char *path, Fleet **ret, char *err, size_t errlen);
/* Creates the fleet dir (mode 0755) with fleet.conf and an empty manifest;
 * -EEXIST (with a message) if it already holds a fleet.conf. */
int fleet_create(const char *path, const FleetConfig *c, Fleet **ret, char *err, size_t errlen);
Fleet *fleet_free(Fleet *f);

const char *fleet_path(const Fleet *f);
const FleetConfig *fleet_config(const Fleet *f);
size_t fleet_n_devices(const Fleet *f);
const FleetDeviceEntry *fleet_device_entry(const Fleet *f, size_t i);     /* i < fleet_n_devices(), by index order */
const FleetDeviceEntry *fleet_find_device(const Fleet *f, const char *id); /* NULL when not found */
const FleetDeviceEntry *fleet_find_index(const Fleet *f, unsigned index);

/* Adds entries to the in-memory manifest (-EEXIST on a duplicate index, id
 * or MAC) and writes manifest.csv atomically. */
int fleet_add_devices(Fleet *f, const FleetDeviceEntry *e, size_t n);

/* Paths: FLEET/devices/<id> and FLEET/devices/<id>/<file>. Caller frees. */
char *fleet_device_dir(const Fleet *f, const char *id);
char *fleet_device_file(const Fleet *f, const char *id, const char *file);
char *fleet_file(const Fleet *f, const char *file);

/* Puts the app partitions of a device flash (devices/<id>/flash.bin, or
 * devices/<id>.tmp/flash.bin while provisioning) into the fleet's sector
 * store, FLEET/store, named relative to the device directory. */
int fleet_device_enable_store(Flash *flash, const PartitionTable *t);

/* Mark and sweep over every device map of the fleet (sector-store.h):
 * counts, and with SECTOR_STORE_SCAN_GC removes what no device holds
 * (-EBUSY while a daemon or another command has the store open). */
int fleet_store_scan(const Fleet *f, SectorStoreScanFlags flags, SectorStoreStats *ret, uint64_t *ret_map_bytes);

/* Resolves a DEVICE argument of the CLI: a device directory, or FLEETDIR/ID.
 * Returns the device dir (caller frees) or NULL with err filled. */
char *fleet_resolve_device_arg(const char *arg, char *err, size_t errlen);

/* ---- Run locks --------------------------------------------------------
 *
 * devices.lock carries one OFD write lock per running device, on byte
 * <index>. What the daemon must do:
 *   - in each worker process, AFTER fork(), call fleet_lock_devices() once
 *     for its contiguous range of devices and keep the returned fd open for
 *     as long as it runs those devices (OFD locks belong to the open file
 *     description, so a fork()ed child of a lock holder shares it: take it
 *     in the worker, not in the parent);
 *   - fleet_lock_devices() records getpid() in FLEET/run/lock-<first>.pid,
 *     because F_OFD_GETLK reports l_pid = -1 for OFD locks;
 *   - on a clean exit call fleet_unlock_devices() (closes the fd, removes
 *     the pid record). A crash releases the lock by itself; a stale pid
 *     record is ignored because it is only read while the lock is held.
 * -EBUSY (message naming the first busy device and the pid) when some device
 * of the range is already locked by anyone, this process included. */
int fleet_lock_devices(Fleet *f, unsigned first, unsigned count, int *ret_fd, char *err, size_t errlen);
void fleet_unlock_devices(Fleet *f, unsigned first, int fd);

/* Is device `index` run by a daemon? 0 = no, 1 = yes (*ret_pid = the pid
 * from the pid record, or 0 when unknown), negative errno on failure. */
int fleet_device_running(Fleet *f, unsigned index, pid_t *ret_pid);

/* For CLI verbs that modify a device (nvs set, efuse burn, …): 0 when no
 * daemon runs it (also for a device dir that is not part of a fleet),
 * -EBUSY with "device 'esp-…' is running in espfleetd (pid N); stop it
 * first" otherwise, or another negative errno with a message. */
int fleet_device_check_not_running(const char *device_dir, char *err, size_t errlen);

/* ---- Loading a device for the daemon ----------------------------------- */

typedef struct FleetDevice {
        unsigned index;
        char id[FLEET_ID_MAX];
        uint8_t mac[FLEET_MAC_LEN];
        char *dir;                       /* FLEET/devices/<id> */
        Efuse *efuse;                    /* owned */
        Flash *flash;                    /* owned, open read-write */
        PartitionTable *partitions;      /* owned, read from flash at 0x8000 */
        X509 *cert;                      /* owned, DEV_CERT from esp_secure_cert */
        DsData *ds_data;                 /* owned, DS_DATA from esp_secure_cert */
        unsigned ds_key_block;           /* from DS_CONTEXT */
        unsigned rsa_bits;               /* from DS_CONTEXT */
} FleetDevice;

/* Loads device `index`: efuse.bin, flash.bin, its partition table and the
 * esp_secure_cert partition. Checks that the eFuse MAC equals the manifest
 * MAC and that DEV_CERT holds an RSA key of the DS data's size (its CN is
 * the device id, except for devices replayed with --secure-cert, which keep
 * their real certificate). Errors name the file and the problem. */
int fleet_device_load(Fleet *f, unsigned index, FleetDevice **ret, char *err, size_t errlen);
FleetDevice *fleet_device_free(FleetDevice *d);

/* The DS key of a loaded device (eFuse + DS_DATA + the cert's public key);
 * the key borrows d->efuse, so free it before the device. */
int fleet_device_ds_key(const FleetDevice *d, DsKey **ret);
/* Drops the DS ciphertext once the DS key holds its own copy (the daemon:
 * one copy per device, not two); fleet_device_ds_key() fails afterwards. */
void fleet_device_forget_ds_data(FleetDevice *d);

/* NVS encryption keys, HMAC scheme (esp-formats.md §3.4), computed as the
 * device does it: the HMAC peripheral in upstream mode over the eFuse key
 * with purpose HMAC_UP in BLOCK_KEY<key_block> (fleet.conf nvs_key_block).
 * The key itself is never read. */
int fleet_device_nvs_keys(const FleetDevice *d, unsigned key_block, NvsXtsKeys *ret);

static inline void fleet_freep(Fleet **f) {
        fleet_free(*f);
}
static inline void fleet_device_freep(FleetDevice **d) {
        fleet_device_free(*d);
}

/* SPDX-License-Identifier: MIT */
#pragma once

/* ESP-IDF partition tables (esp-formats.md §4): the CSV that
 * gen_esp32part.py reads, and the binary it writes at 0x8000.
 *
 * CSV rules reproduced from gen_esp32part.py: lines starting with '#' and
 * blank lines are skipped; fields name,type,subtype,offset,size,flags are
 * comma-separated and trimmed, missing trailing fields are empty; type and
 * subtype are names (case-insensitive) or numbers (0x.., K/M suffixes);
 * an empty subtype means data/undefined (0x06) and is an error for app; an
 * empty offset follows the previous partition, aligned to 0x10000 for app
 * and 0x1000 for everything else, starting at 0x9000 (the end of the table
 * sector); a negative size means "up to that address"; flags is a
 * ':'-separated list of `encrypted`, `readonly`.
 * On top of gen_esp32part (which truncates silently) a name longer than 16
 * bytes, an empty name and a zero size are errors, and a first line
 * "Name,Type,SubType,…" is accepted as a header. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flash/flash.h"

#define PARTITION_TABLE_OFFSET 0x8000u
#define PARTITION_TABLE_SECTOR_SIZE 0x1000u
#define PARTITION_TABLE_MAX_LEN 0xC00u      /* binary table incl. MD5 record, 0xFF padded */
#define PARTITION_TABLE_MAX_ENTRIES 94u     /* (94 + 1 MD5 record) * 32 < 0xC00 */
#define PARTITION_NAME_MAX 16u
#define PARTITION_ENTRY_SIZE 32u
#define PARTITION_MAGIC 0x50AAu             /* bytes AA 50 */
#define PARTITION_MD5_MAGIC 0xEBEBu

#define PARTITION_TYPE_APP 0x00u
#define PARTITION_TYPE_DATA 0x01u
#define PARTITION_TYPE_BOOTLOADER 0x02u
#define PARTITION_TYPE_PARTITION_TABLE 0x03u
#define PARTITION_TYPE_ESP_SECURE_CERT 0x3Fu  /* esp_secure_cert_mgr's custom type */
#define PARTITION_TYPE_ANY 0xFFu

#define PARTITION_SUBTYPE_APP_FACTORY 0x00u
#define PARTITION_SUBTYPE_APP_OTA_MIN 0x10u   /* ota_0 … ota_15 */
#define PARTITION_SUBTYPE_APP_OTA_MAX 0x1Fu
#define PARTITION_SUBTYPE_APP_TEST 0x20u
#define PARTITION_SUBTYPE_DATA_OTA 0x00u      /* otadata */
#define PARTITION_SUBTYPE_DATA_PHY 0x01u
#define PARTITION_SUBTYPE_DATA_NVS 0x02u
/* gen_esp32part.py: a read/write NVS needs 3 sectors */
#define PARTITION_NVS_RW_MIN_SIZE 0x3000u
#define PARTITION_SUBTYPE_DATA_COREDUMP 0x03u
#define PARTITION_SUBTYPE_DATA_NVS_KEYS 0x04u
#define PARTITION_SUBTYPE_DATA_EFUSE 0x05u
#define PARTITION_SUBTYPE_DATA_UNDEFINED 0x06u
#define PARTITION_SUBTYPE_ANY 0xFFu

#define PARTITION_FLAG_ENCRYPTED (1u << 0)
#define PARTITION_FLAG_READONLY (1u << 1)

#define OTADATA_PARTITION_SIZE 0x2000u

/* One entry. Plain value type. */
typedef struct Partition {
        char name[PARTITION_NAME_MAX + 1];   /* NUL-terminated */
        uint8_t type;
        uint8_t subtype;
        uint32_t offset;
        uint32_t size;
        uint32_t flags;                      /* PARTITION_FLAG_* (unknown bits kept as read) */
        unsigned line;                       /* CSV line, 0 when read from a binary */
} Partition;

typedef struct PartitionTable PartitionTable;

PartitionTable *partition_table_free(PartitionTable *t);   /* accepts NULL, returns NULL */
static inline void partition_table_freep(PartitionTable **t) {
        partition_table_free(*t);
}

/* Parses CSV text. `filename` only names the input in error messages, which
 * read "FILE:LINE: reason" (e.g. "parts.csv:4: Partitions overlap. …").
 * Returns -EINVAL (bad input, err filled), -ENOMEM. */
int partition_table_from_csv(const char *text, const char *filename, PartitionTable **ret,
                             char *err, size_t errlen);
/* Reads and parses a CSV file (-errno when unreadable, message in err). */
int partition_table_load_csv(const char *path, PartitionTable **ret, char *err, size_t errlen);

/* Parses a binary table (entries, MD5 record, 0xFF end marker), as
 * gen_esp32part.py's bin->csv does, then runs the same validation as for a
 * CSV. `len` is normally PARTITION_TABLE_MAX_LEN or a whole sector.
 * -EBADMSG with a message on a bad magic, MD5 mismatch, missing end marker. */
int partition_table_from_binary(const void *data, size_t len, PartitionTable **ret, char *err, size_t errlen);

/* The PARTITION_TABLE_MAX_LEN bytes gen_esp32part.py writes. */
int partition_table_to_binary(const PartitionTable *t, uint8_t out[static PARTITION_TABLE_MAX_LEN]);

/* gen_esp32part.py's bin->csv text ("# ESP-IDF Partition Table" header,
 * sizes as K/M where exact). *ret is malloc()ed. */
int partition_table_to_csv(const PartitionTable *t, char **ret);

size_t partition_table_count(const PartitionTable *t);
const Partition *partition_table_get(const PartitionTable *t, size_t i);   /* NULL past the end */

/* First partition with that type and subtype (PARTITION_SUBTYPE_ANY matches
 * any), in table order, as esp_partition_find_first(). NULL if none. */
const Partition *partition_table_find(const PartitionTable *t, uint8_t type, uint8_t subtype);
const Partition *partition_table_find_by_name(const PartitionTable *t, const char *name);
/* The app partition ota_<slot>, or NULL. */
const Partition *partition_table_find_ota(const PartitionTable *t, unsigned slot);
/* Number of OTA app slots, counted as ESP-IDF does: ota_0, ota_1, … up to
 * the first missing one. */
unsigned partition_table_ota_count(const PartitionTable *t);

/* End of the last partition: the flash size the table needs. */
uint32_t partition_table_end(const PartitionTable *t);
/* -EFBIG (with gen_esp32part's message) when the table ends past a flash of `flash_bytes`. */
int partition_table_verify_fits(const PartitionTable *t, uint32_t flash_bytes, char *err, size_t errlen);

/* The flash window of a partition. */
FlashRegion partition_region(Flash *f, const Partition *p);
/* The window of the partition called `name`: -ESP_ERR_NOT_FOUND if absent,
 * -ERANGE if it does not fit in the flash. */
int partition_table_region(const PartitionTable *t, Flash *f, const char *name, FlashRegion *ret);

/* Reads the table at PARTITION_TABLE_OFFSET. A blank sector gives
 * -ESP_ERR_NOT_FOUND ("no partition table"), corruption -EBADMSG; err says
 * which. */
int partition_table_load(Flash *f, PartitionTable **ret, char *err, size_t errlen);
/* Erases the table sector and writes the binary table. -ERANGE (and nothing
 * written) when a partition lies beyond the end of the flash. */
int partition_table_write(Flash *f, const PartitionTable *t);

/* The built-in default layout (the text of etc/partitions.csv): nvs, otadata,
 * phy_init, esp_secure_cert, nvs_key, ota_0, ota_1 in a 4 MiB flash. */
const char *partition_table_default_csv(void);

/* Names as gen_esp32part.py prints them: "app", "data", … / "nvs", "ota_0", …;
 * NULL for a number without a name. */
const char *partition_type_to_string(uint8_t type);
const char *partition_subtype_to_string(uint8_t type, uint8_t subtype);

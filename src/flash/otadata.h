/* SPDX-License-Identifier: MIT */
#pragma once

/* The otadata partition (esp-formats.md §7.1, §7.2 steps 1–2 and the app
 * side of esp_ota_set_boot_partition). Pure logic over a FlashRegion of
 * exactly 0x2000 bytes: two 4 KiB sectors, each starting with one 32-byte
 * esp_ota_select_entry_t:
 *
 *   0  ota_seq   LE u32, 0xFFFFFFFF = empty
 *   4  seq_label 20 bytes, unused (kept as read)
 *   24 ota_state LE u32 (OTA_IMG_*)
 *   28 crc       ESP-CRC over the 4 bytes of ota_seq only
 *
 * Image verification, fallback and factory handling belong to the caller
 * (the bootloader logic in src/ota). */

#include <stdbool.h>
#include <stdint.h>

#include "flash/flash.h"

#define OTADATA_SIZE 0x2000u
#define OTADATA_ENTRY_SIZE 32u
#define OTADATA_SEQ_BLANK 0xFFFFFFFFu

/* esp_ota_img_states_t, values as stored on flash. */
#define OTA_IMG_NEW 0x0u
#define OTA_IMG_PENDING_VERIFY 0x1u
#define OTA_IMG_VALID 0x2u
#define OTA_IMG_INVALID 0x3u
#define OTA_IMG_ABORTED 0x4u
#define OTA_IMG_UNDEFINED 0xFFFFFFFFu

/* "ESP_OTA_IMG_NEW", …, "ESP_OTA_IMG_UNDEFINED"; NULL for other values. */
const char *ota_img_state_to_string(uint32_t state);
/* Accepts the full name or its tail ("ESP_OTA_IMG_VALID", "valid",
 * "pending_verify"), case-insensitive. -EINVAL otherwise. */
int ota_img_state_from_string(const char *s, uint32_t *ret);

typedef struct OtaSelectEntry {
        uint32_t ota_seq;
        uint8_t seq_label[20];
        uint32_t ota_state;
        uint32_t crc;
} OtaSelectEntry;

void otadata_entry_parse(const uint8_t raw[static OTADATA_ENTRY_SIZE], OtaSelectEntry *ret);
void otadata_entry_serialize(const OtaSelectEntry *e, uint8_t raw[static OTADATA_ENTRY_SIZE]);
/* ESP-CRC of the LE seq: 1 -> 0x4743989A, 2 -> 0x55F63774. */
uint32_t otadata_seq_crc(uint32_t seq);
/* §7.2 step 1: seq not blank, CRC matches, state not INVALID or ABORTED. */
bool otadata_entry_is_valid(const OtaSelectEntry *e);

/* Both entries of a partition as read, and the selection result. */
typedef struct Otadata {
        OtaSelectEntry entry[2];
        bool valid[2];
        int active;          /* §7.2 step 1: the valid entry with the larger seq; -1 if none */
} Otadata;

/* Reads both sectors. -EINVAL when the region is not 0x2000 bytes. */
int otadata_read(const FlashRegion *r, Otadata *ret);

/* §7.2 step 2: slot = (seq − 1) mod n_slots of the active entry.
 * -ESP_ERR_NOT_FOUND when no entry is valid or n_slots is 0. */
int otadata_boot_slot(const Otadata *d, unsigned n_slots);

/* Erases sector `index` (0 or 1) and writes the entry there, with its crc
 * recomputed from ota_seq. */
int otadata_write_entry(const FlashRegion *r, unsigned index, const OtaSelectEntry *e);

/* esp_ota_set_boot_partition for ota_<target_slot>: if the active entry
 * already selects that slot only its state is rewritten; otherwise the other
 * sector (sector 0 when no entry is valid) gets the smallest seq > active seq
 * with (seq − 1) mod n_slots = target_slot. The state written is NEW with
 * rollback enabled, UNDEFINED without. -EINVAL on a bad slot. */
int otadata_set_boot_slot(const FlashRegion *r, unsigned n_slots, unsigned target_slot, bool rollback_enabled);

/* Rewrites the state of the active entry (e.g. PENDING_VERIFY on boot,
 * VALID on esp_ota_mark_app_valid_cancel_rollback, INVALID on
 * …_invalid_rollback). -ESP_ERR_NOT_FOUND when no entry is valid. */
int otadata_set_state(const FlashRegion *r, uint32_t state);

/* §7.2 step 5: every entry (seq and CRC intact) still in PENDING_VERIFY
 * becomes ABORTED. Returns the number of entries rewritten. */
int otadata_abort_pending(const FlashRegion *r);

/* Erases both sectors (esp_ota_set_boot_partition(factory)). */
int otadata_erase(const FlashRegion *r);

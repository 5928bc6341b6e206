/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <strings.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/macro.h"
#define LOG_TOPIC LOG_TOPIC_FLASH
#include "basic/log.h"
#include "flash/otadata.h"

static const struct {
        uint32_t value;
        const char *name;
} ota_img_state_table[] = {
        { OTA_IMG_NEW, "ESP_OTA_IMG_NEW" },
        { OTA_IMG_PENDING_VERIFY, "ESP_OTA_IMG_PENDING_VERIFY" },
        { OTA_IMG_VALID, "ESP_OTA_IMG_VALID" },
        { OTA_IMG_INVALID, "ESP_OTA_IMG_INVALID" },
        { OTA_IMG_ABORTED, "ESP_OTA_IMG_ABORTED" },
        { OTA_IMG_UNDEFINED, "ESP_OTA_IMG_UNDEFINED" },
};

const char *ota_img_state_to_string(uint32_t state) {
        for (size_t i = 0; i < ELEMENTSOF(ota_img_state_table); i++)
                if (ota_img_state_table[i].value == state)
                        return ota_img_state_table[i].name;
        return NULL;
}

int ota_img_state_from_string(const char *s, uint32_t *ret) {
        static const size_t prefix = sizeof("ESP_OTA_IMG_") - 1;

        if (!s || !ret)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(ota_img_state_table); i++) {
                const char *name = ota_img_state_table[i].name;
                if (strcasecmp(s, name) == 0 || strcasecmp(s, name + prefix) == 0) {
                        *ret = ota_img_state_table[i].value;
                        return 0;
                }
        }
        return -EINVAL;
}

void otadata_entry_parse(const uint8_t raw[static OTADATA_ENTRY_SIZE], OtaSelectEntry *ret) {
        ret->ota_seq = le32_read(raw);
        memcpy(ret->seq_label, raw + 4, sizeof(ret->seq_label));
        ret->ota_state = le32_read(raw + 24);
        ret->crc = le32_read(raw + 28);
}

void otadata_entry_serialize(const OtaSelectEntry *e, uint8_t raw[static OTADATA_ENTRY_SIZE]) {
        le32_write(raw, e->ota_seq);
        memcpy(raw + 4, e->seq_label, sizeof(e->seq_label));
        le32_write(raw + 24, e->ota_state);
        le32_write(raw + 28, e->crc);
}

uint32_t otadata_seq_crc(uint32_t seq) {
        uint8_t b[4];

        /* §7.1: the CRC covers the 4 bytes of ota_seq only. */
        le32_write(b, seq);
        return esp_crc(b, sizeof(b));
}

bool otadata_entry_is_valid(const OtaSelectEntry *e) {
        return e->ota_seq != OTADATA_SEQ_BLANK && e->crc == otadata_seq_crc(e->ota_seq) &&
                e->ota_state != OTA_IMG_INVALID && e->ota_state != OTA_IMG_ABORTED;
}

static int check_region(const FlashRegion *r) {
        if (!r || !r->flash)
                return -EINVAL;
        if (r->size != OTADATA_SIZE)
                return -EINVAL;
        return 0;
}

int otadata_read(const FlashRegion *r, Otadata *ret) {
        Otadata d = { .active = -1 };
        int k;

        k = check_region(r);
        if (k < 0)
                return k;
        if (!ret)
                return -EINVAL;

        for (unsigned i = 0; i < 2; i++) {
                uint8_t raw[OTADATA_ENTRY_SIZE];

                k = flash_region_read(r, i * FLASH_SECTOR_SIZE, raw, sizeof(raw));
                if (k < 0)
                        return k;
                otadata_entry_parse(raw, d.entry + i);
                d.valid[i] = otadata_entry_is_valid(d.entry + i);
        }

        /* §7.2 step 1: the valid entry with the larger seq wins. */
        if (d.valid[0] && d.valid[1])
                d.active = d.entry[0].ota_seq >= d.entry[1].ota_seq ? 0 : 1;
        else if (d.valid[0])
                d.active = 0;
        else if (d.valid[1])
                d.active = 1;

        *ret = d;
        return 0;
}

int otadata_boot_slot(const Otadata *d, unsigned n_slots) {
        if (!d)
                return -EINVAL;
        if (d->active < 0 || n_slots == 0)
                return -ESP_ERR_NOT_FOUND;
        /* §7.2 step 2. seq is ≥ 1 here: 0 - 1 wraps to UINT32_MAX, which the
         * bootloader computes the same way in unsigned arithmetic. */
        return (int) ((d->entry[d->active].ota_seq - 1) % n_slots);
}

int otadata_write_entry(const FlashRegion *r, unsigned index, const OtaSelectEntry *e) {
        uint8_t raw[OTADATA_ENTRY_SIZE];
        OtaSelectEntry c;
        int k;

        k = check_region(r);
        if (k < 0)
                return k;
        if (index > 1 || !e)
                return -EINVAL;

        c = *e;
        c.crc = otadata_seq_crc(c.ota_seq);
        otadata_entry_serialize(&c, raw);

        log_debug("otadata: sector %u <- seq %" PRIu32 " state %s", index, c.ota_seq,
                  strna(ota_img_state_to_string(c.ota_state)));

        /* Each sector is erased and rewritten as a whole (§7.1). */
        k = flash_region_erase(r, index * FLASH_SECTOR_SIZE, FLASH_SECTOR_SIZE);
        if (k < 0)
                return k;
        return flash_region_write(r, index * FLASH_SECTOR_SIZE, raw, sizeof(raw));
}

int otadata_set_boot_slot(const FlashRegion *r, unsigned n_slots, unsigned target_slot, bool rollback_enabled) {
        uint32_t state = rollback_enabled ? OTA_IMG_NEW : OTA_IMG_UNDEFINED;
        Otadata d;
        int k;

        if (n_slots == 0 || n_slots > 16 || target_slot >= n_slots)
                return -EINVAL;
        k = otadata_read(r, &d);
        if (k < 0)
                return k;

        if (d.active < 0) {
                /* Blank or broken otadata: sector 0 gets seq = slot + 1. */
                OtaSelectEntry e = d.entry[0];
                e.ota_seq = target_slot + 1;
                e.ota_state = state;
                return otadata_write_entry(r, 0, &e);
        }

        OtaSelectEntry cur = d.entry[d.active];
        if ((cur.ota_seq - 1) % n_slots == target_slot) {
                /* Already selected: only the state changes. */
                cur.ota_state = state;
                return otadata_write_entry(r, (unsigned) d.active, &cur);
        }

        /* The smallest seq > current with (seq − 1) mod N = target. */
        uint64_t seq = cur.ota_seq + 1;
        seq += (target_slot + n_slots - (unsigned) ((seq - 1) % n_slots)) % n_slots;
        if (seq >= OTADATA_SEQ_BLANK)
                return -EOVERFLOW;

        OtaSelectEntry next = d.entry[1 - d.active];
        next.ota_seq = (uint32_t) seq;
        next.ota_state = state;
        return otadata_write_entry(r, (unsigned) (1 - d.active), &next);
}

int otadata_set_state(const FlashRegion *r, uint32_t state) {
        Otadata d;
        int k;

        k = otadata_read(r, &d);
        if (k < 0)
                return k;
        if (d.active < 0)
                return -ESP_ERR_NOT_FOUND;

        OtaSelectEntry e = d.entry[d.active];
        e.ota_state = state;
        return otadata_write_entry(r, (unsigned) d.active, &e);
}

int otadata_abort_pending(const FlashRegion *r) {
        Otadata d;
        int k, n = 0;

        k = otadata_read(r, &d);
        if (k < 0)
                return k;

        for (unsigned i = 0; i < 2; i++) {
                OtaSelectEntry e = d.entry[i];

                if (e.ota_seq == OTADATA_SEQ_BLANK || e.crc != otadata_seq_crc(e.ota_seq) ||
                    e.ota_state != OTA_IMG_PENDING_VERIFY)
                        continue;
                e.ota_state = OTA_IMG_ABORTED;
                k = otadata_write_entry(r, i, &e);
                if (k < 0)
                        return k;
                n++;
        }
        return n;
}

int otadata_erase(const FlashRegion *r) {
        int k = check_region(r);
        if (k < 0)
                return k;
        return flash_region_erase(r, 0, OTADATA_SIZE);
}

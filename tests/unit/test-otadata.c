/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/macro.h"
#include "flash/otadata.h"

static char tmpdir[] = "/tmp/test-otadata-XXXXXX";
static char image[256];
static Flash *flash;
static FlashRegion region;

static void setup(void) {
        cr_assert_not_null(mkdtemp(tmpdir));
        snprintf(image, sizeof(image), "%s/flash.bin", tmpdir);
        cr_assert_eq(flash_open(image, FLASH_OPEN_CREATE, 128 * 1024, &flash), 0);
        /* Where the default layout puts otadata. */
        region = (FlashRegion) { .flash = flash, .offset = 0xF000, .size = OTADATA_SIZE };
}

static void teardown(void) {
        flash = flash_close(flash);
        unlink(image);
        rmdir(tmpdir);
}

TestSuite(otadata, .init = setup, .fini = teardown);

/* Puts a raw entry in sector `index`, bypassing otadata_write_entry() so the
 * tests can store bad CRCs. */
static void put(unsigned index, uint32_t seq, uint32_t state, bool good_crc) {
        uint8_t raw[OTADATA_ENTRY_SIZE];
        OtaSelectEntry e = { .ota_seq = seq, .ota_state = state };

        memset(e.seq_label, 0xFF, sizeof(e.seq_label));
        e.crc = otadata_seq_crc(seq) ^ (good_crc ? 0 : 1);
        otadata_entry_serialize(&e, raw);
        cr_assert_eq(flash_region_erase(&region, index * FLASH_SECTOR_SIZE, FLASH_SECTOR_SIZE), 0);
        cr_assert_eq(flash_region_write(&region, index * FLASH_SECTOR_SIZE, raw, sizeof(raw)), 0);
}

static Otadata get(void) {
        Otadata d;
        cr_assert_eq(otadata_read(&region, &d), 0);
        return d;
}

Test(otadata, crc_vectors) {
        /* esp-formats.md §0 */
        cr_assert_eq(otadata_seq_crc(1), 0x4743989Au);
        cr_assert_eq(otadata_seq_crc(2), 0x55F63774u);

        uint8_t raw[OTADATA_ENTRY_SIZE];
        OtaSelectEntry e = { .ota_seq = 1, .ota_state = OTA_IMG_VALID, .crc = otadata_seq_crc(1) };
        memset(e.seq_label, 0xFF, sizeof(e.seq_label));
        otadata_entry_serialize(&e, raw);
        static const uint8_t expected[OTADATA_ENTRY_SIZE] = {
                0x01, 0x00, 0x00, 0x00,
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                0x02, 0x00, 0x00, 0x00,
                0x9A, 0x98, 0x43, 0x47,
        };
        cr_assert_arr_eq(raw, expected, sizeof(raw));

        OtaSelectEntry back;
        otadata_entry_parse(raw, &back);
        cr_assert_eq(back.ota_seq, 1);
        cr_assert_eq(back.ota_state, OTA_IMG_VALID);
        cr_assert_eq(back.crc, 0x4743989Au);
        cr_assert(otadata_entry_is_valid(&back));
}

Test(otadata, state_names) {
        uint32_t s;

        cr_assert_str_eq(ota_img_state_to_string(OTA_IMG_NEW), "ESP_OTA_IMG_NEW");
        cr_assert_str_eq(ota_img_state_to_string(OTA_IMG_PENDING_VERIFY), "ESP_OTA_IMG_PENDING_VERIFY");
        cr_assert_str_eq(ota_img_state_to_string(OTA_IMG_VALID), "ESP_OTA_IMG_VALID");
        cr_assert_str_eq(ota_img_state_to_string(OTA_IMG_INVALID), "ESP_OTA_IMG_INVALID");
        cr_assert_str_eq(ota_img_state_to_string(OTA_IMG_ABORTED), "ESP_OTA_IMG_ABORTED");
        cr_assert_str_eq(ota_img_state_to_string(OTA_IMG_UNDEFINED), "ESP_OTA_IMG_UNDEFINED");
        cr_assert_null(ota_img_state_to_string(7));

        cr_assert_eq(ota_img_state_from_string("ESP_OTA_IMG_ABORTED", &s), 0);
        cr_assert_eq(s, OTA_IMG_ABORTED);
        cr_assert_eq(ota_img_state_from_string("pending_verify", &s), 0);
        cr_assert_eq(s, OTA_IMG_PENDING_VERIFY);
        cr_assert_eq(ota_img_state_from_string("undefined", &s), 0);
        cr_assert_eq(s, OTA_IMG_UNDEFINED);
        cr_assert_eq(ota_img_state_from_string("bogus", &s), -EINVAL);
}

Test(otadata, blank_selects_nothing) {
        Otadata d = get();

        cr_assert_eq(d.active, -1);
        cr_assert_not(d.valid[0]);
        cr_assert_not(d.valid[1]);
        cr_assert_eq(d.entry[0].ota_seq, OTADATA_SEQ_BLANK);
        cr_assert_eq(otadata_boot_slot(&d, 2), -ESP_ERR_NOT_FOUND);
        cr_assert_eq(otadata_set_state(&region, OTA_IMG_VALID), -ESP_ERR_NOT_FOUND);
}

Test(otadata, selection) {
        Otadata d;

        /* Both valid: the larger seq wins, whichever sector it is in. */
        put(0, 3, OTA_IMG_VALID, true);
        put(1, 4, OTA_IMG_UNDEFINED, true);
        d = get();
        cr_assert_eq(d.active, 1);
        cr_assert_eq(otadata_boot_slot(&d, 2), 1);
        cr_assert_eq(otadata_boot_slot(&d, 3), 0);
        cr_assert_eq(otadata_boot_slot(&d, 0), -ESP_ERR_NOT_FOUND);

        put(0, 7, OTA_IMG_NEW, true);
        d = get();
        cr_assert_eq(d.active, 0);
        cr_assert_eq(otadata_boot_slot(&d, 2), 0);

        /* The larger one has a bad CRC: the other one is used. */
        put(0, 7, OTA_IMG_VALID, false);
        d = get();
        cr_assert_not(d.valid[0]);
        cr_assert_eq(d.active, 1);

        /* INVALID and ABORTED entries are skipped. */
        put(0, 7, OTA_IMG_INVALID, true);
        cr_assert_eq(get().active, 1);
        put(0, 7, OTA_IMG_ABORTED, true);
        cr_assert_eq(get().active, 1);
        put(0, 7, OTA_IMG_PENDING_VERIFY, true);
        cr_assert_eq(get().active, 0);

        /* Both unusable. */
        put(0, 7, OTA_IMG_INVALID, true);
        put(1, 4, OTA_IMG_VALID, false);
        d = get();
        cr_assert_eq(d.active, -1);
        cr_assert_eq(otadata_boot_slot(&d, 2), -ESP_ERR_NOT_FOUND);

        /* A blank seq with a matching CRC is still blank. */
        put(0, OTADATA_SEQ_BLANK, OTA_IMG_VALID, true);
        put(1, 1, OTA_IMG_VALID, true);
        d = get();
        cr_assert_eq(d.active, 1);
        cr_assert_eq(otadata_boot_slot(&d, 2), 0);
}

static void expect_entry(unsigned index, uint32_t seq, uint32_t state) {
        Otadata d = get();
        cr_assert_eq(d.entry[index].ota_seq, seq, "sector %u: seq %u, want %u", index, d.entry[index].ota_seq, seq);
        cr_assert_eq(d.entry[index].ota_state, state, "sector %u: state %s", index,
                     ota_img_state_to_string(d.entry[index].ota_state));
        cr_assert_eq(d.entry[index].crc, otadata_seq_crc(seq));
}

Test(otadata, set_boot_slot_two_slots) {
        /* Blank otadata: sector 0 gets seq = slot + 1. */
        cr_assert_eq(otadata_set_boot_slot(&region, 2, 0, true), 0);
        expect_entry(0, 1, OTA_IMG_NEW);
        cr_assert_eq(get().entry[1].ota_seq, OTADATA_SEQ_BLANK);
        Otadata d = get();
        cr_assert_eq(otadata_boot_slot(&d, 2), 0);

        /* ota_1: the other sector, smallest seq > 1 with (seq-1) % 2 = 1. */
        cr_assert_eq(otadata_set_boot_slot(&region, 2, 1, true), 0);
        expect_entry(1, 2, OTA_IMG_NEW);
        expect_entry(0, 1, OTA_IMG_NEW);
        d = get();
        cr_assert_eq(d.active, 1);
        cr_assert_eq(otadata_boot_slot(&d, 2), 1);

        /* Back to ota_0: sector 0, seq 3. */
        cr_assert_eq(otadata_set_boot_slot(&region, 2, 0, false), 0);
        expect_entry(0, 3, OTA_IMG_UNDEFINED);
        expect_entry(1, 2, OTA_IMG_NEW);

        /* ota_0 again: already selected, only the state is rewritten. */
        cr_assert_eq(otadata_set_boot_slot(&region, 2, 0, true), 0);
        expect_entry(0, 3, OTA_IMG_NEW);
        expect_entry(1, 2, OTA_IMG_NEW);

        cr_assert_eq(otadata_set_boot_slot(&region, 2, 2, true), -EINVAL);
        cr_assert_eq(otadata_set_boot_slot(&region, 0, 0, true), -EINVAL);
}

Test(otadata, set_boot_slot_from_blank_to_slot1) {
        cr_assert_eq(otadata_set_boot_slot(&region, 2, 1, true), 0);
        expect_entry(0, 2, OTA_IMG_NEW);
}

Test(otadata, set_boot_slot_skips_invalid_and_three_slots) {
        /* The active entry is the valid one even if the other seq is larger. */
        put(0, 4, OTA_IMG_VALID, true);       /* slot 0 of 3 */
        put(1, 9, OTA_IMG_INVALID, true);
        cr_assert_eq(otadata_set_boot_slot(&region, 3, 2, true), 0);
        expect_entry(1, 6, OTA_IMG_NEW);      /* (6-1) % 3 = 2 */
        cr_assert_eq(otadata_set_boot_slot(&region, 3, 1, true), 0);
        expect_entry(0, 8, OTA_IMG_NEW);      /* smallest > 6 with (seq-1) % 3 = 1 */
        Otadata d = get();
        cr_assert_eq(otadata_boot_slot(&d, 3), 1);
}

Test(otadata, set_state_abort_pending_erase) {
        put(0, 5, OTA_IMG_VALID, true);
        put(1, 6, OTA_IMG_NEW, true);

        /* Boot of a NEW image: it becomes PENDING_VERIFY ... */
        cr_assert_eq(otadata_set_state(&region, OTA_IMG_PENDING_VERIFY), 0);
        expect_entry(1, 6, OTA_IMG_PENDING_VERIFY);
        expect_entry(0, 5, OTA_IMG_VALID);

        /* ... and the next boot without confirmation aborts it, which sends
         * the selection back to the older entry. */
        cr_assert_eq(otadata_abort_pending(&region), 1);
        expect_entry(1, 6, OTA_IMG_ABORTED);
        Otadata d = get();
        cr_assert_eq(d.active, 0);
        cr_assert_eq(otadata_boot_slot(&d, 2), 0);
        cr_assert_eq(otadata_abort_pending(&region), 0);

        /* A confirmed image. */
        cr_assert_eq(otadata_set_state(&region, OTA_IMG_VALID), 0);
        expect_entry(0, 5, OTA_IMG_VALID);

        /* seq_label is kept as read. */
        uint8_t label = 0x41;
        cr_assert_eq(flash_region_write(&region, 4, &label, 1), 0);
        cr_assert_eq(otadata_set_state(&region, OTA_IMG_INVALID), 0);
        d = get();
        cr_assert_eq(d.entry[0].seq_label[0], 0x41);
        cr_assert_eq(d.entry[0].seq_label[1], 0xFF);
        cr_assert_eq(d.active, -1);

        cr_assert_eq(otadata_erase(&region), 0);
        d = get();
        cr_assert_eq(d.entry[0].ota_seq, OTADATA_SEQ_BLANK);
        cr_assert_eq(d.entry[1].ota_seq, OTADATA_SEQ_BLANK);
        cr_assert_eq(d.active, -1);
}

Test(otadata, region_checks_and_power_cut) {
        FlashRegion bad = { .flash = flash, .offset = 0xF000, .size = 0x1000 };
        Otadata d;

        cr_assert_eq(otadata_read(&bad, &d), -EINVAL);
        cr_assert_eq(otadata_set_boot_slot(&bad, 2, 0, true), -EINVAL);

        /* A power cut while the new entry is written: the previous one
         * still selects the old slot. */
        cr_assert_eq(otadata_set_boot_slot(&region, 2, 0, true), 0);
        cr_assert_eq(otadata_set_state(&region, OTA_IMG_VALID), 0);
        flash_set_power_cut(flash, 1);   /* erase goes through, the write is cut */
        cr_assert_eq(otadata_set_boot_slot(&region, 2, 1, true), -EIO);
        flash_power_restore(flash);
        d = get();
        cr_assert_not(d.valid[1]);
        cr_assert_eq(d.active, 0);
        cr_assert_eq(otadata_boot_slot(&d, 2), 0);
}

/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/macro.h"
#include "flash/flash.h"

static char tmpdir[] = "/tmp/test-flash-XXXXXX";
static char image[256];

static void setup(void) {
        cr_assert_not_null(mkdtemp(tmpdir));
        snprintf(image, sizeof(image), "%s/flash.bin", tmpdir);
}

static void teardown(void) {
        char p[300];
        snprintf(p, sizeof(p), "%s/export.bin", tmpdir);
        unlink(p);
        unlink(image);
        rmdir(tmpdir);
}

static Flash *create(uint32_t size) {
        Flash *f = NULL;
        cr_assert_eq(flash_open(image, FLASH_OPEN_CREATE, size, &f), 0);
        return f;
}

static bool all_ff(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i] != 0xFF)
                        return false;
        return true;
}

TestSuite(flash, .init = setup, .fini = teardown);

Test(flash, create_is_sparse_and_erased) {
        _cleanup_(flash_closep) Flash *f = create(FLASH_DEFAULT_SIZE);
        struct stat st;
        uint8_t buf[8192];
        uint64_t used;

        cr_assert_eq(flash_size(f), FLASH_DEFAULT_SIZE);
        cr_assert_str_eq(flash_path(f), image);
        cr_assert_eq(stat(image, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        cr_assert_eq(st.st_size, FLASH_DEFAULT_SIZE);
        /* An untouched 4 MiB image costs (almost) no disk. */
        cr_assert_lt(st.st_blocks * 512, 64 * 1024);

        cr_assert_eq(flash_read(f, 0x1000 - 100, buf, sizeof(buf)), 0);
        cr_assert(all_ff(buf, sizeof(buf)));
        cr_assert_eq(flash_allocated_bytes(f, 0, FLASH_DEFAULT_SIZE, &used), 0);
        cr_assert_eq(used, 0);

        /* A second create does not clobber it. */
        Flash *g = NULL;
        cr_assert_eq(flash_open(image, FLASH_OPEN_CREATE, FLASH_DEFAULT_SIZE, &g), -EEXIST);
        cr_assert_null(g);
}

Test(flash, write_materialises_one_sector) {
        _cleanup_(flash_closep) Flash *f = create(FLASH_DEFAULT_SIZE);
        const uint8_t data[4] = { 0x12, 0x34, 0x56, 0x78 };
        uint8_t buf[FLASH_SECTOR_SIZE];
        uint64_t used;
        struct stat st;

        cr_assert_eq(flash_write(f, 0x20010, data, sizeof(data)), 0);
        cr_assert_eq(flash_read(f, 0x20000, buf, sizeof(buf)), 0);
        cr_assert(all_ff(buf, 0x10));
        cr_assert_arr_eq(buf + 0x10, data, 4);
        cr_assert(all_ff(buf + 0x14, sizeof(buf) - 0x14));
        cr_assert_eq(flash_allocated_bytes(f, 0, FLASH_DEFAULT_SIZE, &used), 0);
        cr_assert_geq(used, FLASH_SECTOR_SIZE);
        cr_assert_leq(used, 64 * 1024);
        cr_assert_eq(stat(image, &st), 0);
        cr_assert_lt(st.st_blocks * 512, 128 * 1024);

        /* Reopened, the hole map is rebuilt from the file: same content. */
        f = flash_close(f);
        cr_assert_eq(flash_open(image, FLASH_OPEN_READ_ONLY, 0, &f), 0);
        cr_assert_eq(flash_size(f), FLASH_DEFAULT_SIZE);
        cr_assert_eq(flash_read(f, 0x20000, buf, sizeof(buf)), 0);
        cr_assert(all_ff(buf, 0x10));
        cr_assert_arr_eq(buf + 0x10, data, 4);
        cr_assert(all_ff(buf + 0x14, sizeof(buf) - 0x14));
        cr_assert_eq(flash_read(f, 0x1F000, buf, sizeof(buf)), 0);
        cr_assert(all_ff(buf, sizeof(buf)));
        cr_assert_eq(flash_write(f, 0, data, 4), -EROFS);
        cr_assert_eq(flash_erase(f, 0, FLASH_SECTOR_SIZE), -EROFS);
}

Test(flash, nor_rules) {
        _cleanup_(flash_closep) Flash *f = create(64 * 1024);
        uint8_t b;

        b = 0xF0;
        cr_assert_eq(flash_write(f, 100, &b, 1), 0);
        /* Clearing more bits is fine. */
        b = 0x30;
        cr_assert_eq(flash_write(f, 100, &b, 1), 0);
        /* Writing the same value again is fine too. */
        cr_assert_eq(flash_write(f, 100, &b, 1), 0);
        /* Setting a bit back to 1 is not, and changes nothing. */
        uint8_t two[2] = { 0x00, 0x70 };
        cr_assert_eq(flash_write(f, 99, two, 2), -EPERM);
        cr_assert_eq(flash_read(f, 99, two, 2), 0);
        cr_assert_eq(two[0], 0xFF);
        cr_assert_eq(two[1], 0x30);

        /* Erase brings the sector back to 0xFF, then a write works. */
        cr_assert_eq(flash_erase(f, 0, FLASH_SECTOR_SIZE), 0);
        cr_assert_eq(flash_read(f, 100, &b, 1), 0);
        cr_assert_eq(b, 0xFF);
        b = 0x7F;
        cr_assert_eq(flash_write(f, 100, &b, 1), 0);
        cr_assert_eq(flash_read(f, 100, &b, 1), 0);
        cr_assert_eq(b, 0x7F);
}

Test(flash, write_across_sectors_and_erase) {
        _cleanup_(flash_closep) Flash *f = create(64 * 1024);
        uint8_t data[3 * FLASH_SECTOR_SIZE], back[sizeof(data)];

        for (size_t i = 0; i < sizeof(data); i++)
                data[i] = (uint8_t) (i * 7);
        cr_assert_eq(flash_write(f, 0x800, data, sizeof(data)), 0);
        cr_assert_eq(flash_read(f, 0x800, back, sizeof(back)), 0);
        cr_assert_arr_eq(back, data, sizeof(data));

        cr_assert_eq(flash_erase(f, 0x1000, 0x2000), 0);
        cr_assert_eq(flash_read(f, 0x800, back, sizeof(back)), 0);
        cr_assert_arr_eq(back, data, 0x800);
        cr_assert(all_ff(back + 0x800, 0x2000));
        cr_assert_arr_eq(back + 0x2800, data + 0x2800, 0x800);

        uint64_t used;
        cr_assert_eq(flash_allocated_bytes(f, 0x1000, 0x2000, &used), 0);
        cr_assert_eq(used, 0); /* erased sectors are holes again (4 KiB file systems) */
}

Test(flash, bounds_and_alignment) {
        _cleanup_(flash_closep) Flash *f = create(16 * 1024);
        uint8_t buf[16];

        cr_assert_eq(flash_read(f, 16 * 1024 - 8, buf, 16), -ERANGE);
        cr_assert_eq(flash_read(f, UINT32_MAX, buf, 1), -ERANGE);
        cr_assert_eq(flash_read(f, 16 * 1024 - 16, buf, 16), 0);
        memset(buf, 0, sizeof(buf));
        cr_assert_eq(flash_write(f, 16 * 1024 - 8, buf, 16), -ERANGE);
        cr_assert_eq(flash_erase(f, 16 * 1024, FLASH_SECTOR_SIZE), -ERANGE);
        cr_assert_eq(flash_erase(f, 100, FLASH_SECTOR_SIZE), -EINVAL);
        cr_assert_eq(flash_erase(f, 0, 100), -EINVAL);

        FlashRegion r = { .flash = f, .offset = 0x1000, .size = 0x2000 };
        cr_assert_eq(flash_region_write(&r, 0x1FF8, buf, 16), -ERANGE);
        cr_assert_eq(flash_region_write(&r, 0x1FF0, buf, 16), 0);
        cr_assert_eq(flash_read(f, 0x2FF0, buf, 16), 0);
        for (size_t i = 0; i < 16; i++)
                cr_assert_eq(buf[i], 0);
        cr_assert_eq(flash_region_erase(&r, 0x2000, FLASH_SECTOR_SIZE), -ERANGE);
        cr_assert_eq(flash_region_erase(&r, 0x1000, FLASH_SECTOR_SIZE), 0);
        cr_assert_eq(flash_region_read(&r, 0x1FF0, buf, 16), 0);
        cr_assert(all_ff(buf, 16));
        cr_assert_eq(flash_region_read(&r, 0x2000, buf, 1), -ERANGE);
}

Test(flash, bad_sizes) {
        Flash *f = NULL;
        int fd;

        cr_assert_eq(flash_open(image, FLASH_OPEN_CREATE, 5000, &f), -EBADMSG);
        cr_assert_eq(access(image, F_OK), -1);

        fd = open(image, O_WRONLY | O_CREAT | O_EXCL, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, 4097), 0);
        close(fd);
        cr_assert_eq(flash_open(image, 0, 0, &f), -EBADMSG);
        cr_assert_null(f);
        cr_assert_eq(truncate(image, 8192), 0);
        cr_assert_eq(flash_open(image, 0, 4096, &f), -EBADMSG);
        cr_assert_eq(flash_open(image, 0, 0, &f), 0);
        cr_assert_eq(flash_size(f), 8192);
        flash_close(f);

        cr_assert_eq(flash_open("/nonexistent/flash.bin", 0, 0, &f), -ENOENT);
}

Test(flash, power_cut_write) {
        _cleanup_(flash_closep) Flash *f = create(64 * 1024);
        uint8_t data[64], back[64];

        memset(data, 0x00, sizeof(data));
        cr_assert_eq(flash_write_count(f), 0);
        flash_set_power_cut(f, 2);
        cr_assert_eq(flash_write(f, 0, data, 4), 0);
        cr_assert_eq(flash_erase(f, 0x1000, FLASH_SECTOR_SIZE), 0);
        cr_assert_eq(flash_write_count(f), 2);
        /* The third operation is cut short. */
        cr_assert_eq(flash_write(f, 0x2000, data, sizeof(data)), -EIO);
        cr_assert_eq(flash_read(f, 0x2000, back, sizeof(back)), 0);
        size_t landed = 0;
        while (landed < sizeof(back) && back[landed] == 0x00)
                landed++;
        cr_assert_eq(landed % 4, 0);
        cr_assert_lt(landed, sizeof(data));
        cr_assert(all_ff(back + landed, sizeof(back) - landed));

        /* Everything after the cut fails until power comes back. */
        cr_assert_eq(flash_write(f, 0x3000, data, 4), -EIO);
        cr_assert_eq(flash_erase(f, 0x3000, FLASH_SECTOR_SIZE), -EIO);
        cr_assert_eq(flash_read(f, 0x3000, back, 4), 0);
        cr_assert(all_ff(back, 4));
        cr_assert_eq(flash_write_count(f), 2);

        flash_power_restore(f);
        cr_assert_eq(flash_write(f, 0x3000, data, 4), 0);
        cr_assert_eq(flash_write_count(f), 3);
}

Test(flash, power_cut_erase) {
        _cleanup_(flash_closep) Flash *f = create(64 * 1024);
        uint8_t zeros[2 * FLASH_SECTOR_SIZE] = { 0 }, back[sizeof(zeros)];

        cr_assert_eq(flash_write(f, 0, zeros, sizeof(zeros)), 0);
        flash_set_power_cut(f, 0);
        cr_assert_eq(flash_erase(f, 0, sizeof(zeros)), -EIO);
        cr_assert_eq(flash_read(f, 0, back, sizeof(back)), 0);
        /* A prefix is erased, the rest still holds the old zeros. */
        size_t erased = 0;
        while (erased < sizeof(back) && back[erased] == 0xFF)
                erased++;
        cr_assert_lt(erased, sizeof(back));
        for (size_t i = erased; i < sizeof(back); i++)
                cr_assert_eq(back[i], 0x00);
        flash_power_restore(f);
        cr_assert_eq(flash_erase(f, 0, sizeof(zeros)), 0);
        cr_assert_eq(flash_read(f, 0, back, sizeof(back)), 0);
        cr_assert(all_ff(back, sizeof(back)));
}

Test(flash, export_dense) {
        _cleanup_(flash_closep) Flash *f = create(32 * 1024);
        char out[300];
        uint8_t v = 0x42, buf[32 * 1024];
        struct stat st;

        snprintf(out, sizeof(out), "%s/export.bin", tmpdir);
        cr_assert_eq(flash_write(f, 0x5001, &v, 1), 0);
        cr_assert_eq(flash_export(f, out), 0);
        int fd = open(out, O_RDONLY);
        cr_assert_geq(fd, 0);
        cr_assert_eq(fstat(fd, &st), 0);
        cr_assert_eq(st.st_size, sizeof(buf));
        cr_assert_eq(read(fd, buf, sizeof(buf)), (ssize_t) sizeof(buf));
        close(fd);
        cr_assert(all_ff(buf, 0x5001));
        cr_assert_eq(buf[0x5001], 0x42);
        cr_assert(all_ff(buf + 0x5002, sizeof(buf) - 0x5002));
}

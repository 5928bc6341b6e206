/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/parse-util.h"
#include "basic/progress.h"

/* esp-formats.md §0 test vectors */
Test(crc, standard_and_esp) {
        cr_assert_eq(std_crc32("123456789", 9), 0xCBF43926u);
        cr_assert_eq(esp_crc("123456789", 9), 0xD202D277u);
        cr_assert_eq(esp_crc("", 0), 0xFFFFFFFFu);
        uint8_t one[4] = { 1, 0, 0, 0 }, two[4] = { 2, 0, 0, 0 };
        cr_assert_eq(esp_crc(one, 4), 0x4743989Au);
        cr_assert_eq(esp_crc(two, 4), 0x55F63774u);
}

Test(parse, numbers) {
        uint64_t u;
        int64_t i;
        uint32_t u32;
        cr_assert_eq(safe_atou64("18446744073709551615", 10, &u), 0);
        cr_assert_eq(u, UINT64_MAX);
        cr_assert_lt(safe_atou64("18446744073709551616", 10, &u), 0);
        cr_assert_lt(safe_atou64("-1", 10, &u), 0);
        cr_assert_lt(safe_atou64("12x", 10, &u), 0);
        cr_assert_lt(safe_atou64("", 10, &u), 0);
        cr_assert_lt(safe_atou64(" 1", 10, &u), 0);
        cr_assert_eq(safe_atoi64("-9223372036854775808", 10, &i), 0);
        cr_assert_eq(i, INT64_MIN);
        cr_assert_eq(safe_atou32("0x10", 0, &u32), 0);
        cr_assert_eq(u32, 16);
        cr_assert_eq(safe_atou32("4294967296", 0, &u32), -ERANGE);
        cr_assert_eq(parse_size("1M", &u), 0);
        cr_assert_eq(u, 1048576);
        cr_assert_eq(parse_size("0x4000", &u), 0);
        cr_assert_eq(u, 0x4000);
        cr_assert_lt(parse_size("K", &u), 0);
}

Test(parse, hex) {
        uint8_t b[4];
        char out[9];
        cr_assert_eq(hex_decode_fixed("DEADbeef", b, 4), 0);
        cr_assert_eq(b[0], 0xde);
        cr_assert_eq(b[3], 0xef);
        hex_encode(b, 4, out);
        cr_assert_str_eq(out, "deadbeef");
        cr_assert_lt(hex_decode_fixed("deadbee", b, 4), 0);
        cr_assert_lt(hex_decode_fixed("deadbeeg", b, 4), 0);
}

Test(esp_err, names) {
        cr_assert_str_eq(esp_err_to_name(0), "ESP_OK");
        cr_assert_str_eq(esp_err_to_name(-ESP_ERR_NVS_NOT_FOUND), "ESP_ERR_NVS_NOT_FOUND");
        cr_assert_str_eq(esp_err_to_name(-ESP_ERR_OTA_VALIDATE_FAILED), "ESP_ERR_OTA_VALIDATE_FAILED");
        cr_assert_str_eq(esp_err_to_name(-ENOMEM), "ENOMEM");
        cr_assert_str_eq(esp_err_to_name(-ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST), "ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST");
}

typedef struct EtaCase {
        double seconds;
        char want[16];          /* inline: Criterion copies parameters into each test process */
} EtaCase;

static const EtaCase eta_cases[] = {
        { 0, "0:00" },
        { 0.2, "0:01" },          /* rounded up: work remains */
        { 59, "0:59" },
        { 60, "1:00" },
        { 754.5, "12:35" },
        { 3600, "1:00:00" },
        { 3723, "1:02:03" },
        { 99.0 * 3600, "99:00:00" },
        { 99.0 * 3600 + 1, "--:--" },
        { -1, "--:--" },
        { __builtin_nan(""), "--:--" },
};

ParameterizedTestParameters(progress, eta) {
        return cr_make_param_array(EtaCase, eta_cases, sizeof eta_cases / sizeof eta_cases[0]);
}

ParameterizedTest(const EtaCase *c, progress, eta) {
        char buf[32];
        cr_assert_str_eq(format_eta(buf, sizeof buf, c->seconds), c->want, "%g s", c->seconds);
}

Test(progress, line) {
        char buf[160];

        cr_assert_str_eq(progress_format(buf, sizeof buf, 0, 200, 0, 10), "[..........] 0/200  --/s  ETA --:--");
        /* 50 done in 10 s: 5/s, 150 left = 30 s */
        cr_assert_str_eq(progress_format(buf, sizeof buf, 50, 200, 10, 10), "[##........] 50/200  5.0/s  ETA 0:30");
        cr_assert_str_eq(progress_format(buf, sizeof buf, 15000, 20000, 30, 4), "[###.] 15000/20000  500/s  ETA 0:10");
        cr_assert_str_eq(progress_format(buf, sizeof buf, 200, 200, 4, 10), "[##########] 200/200  50.0/s  ETA 0:00");
        /* done beyond total is clamped; no time yet means no rate */
        cr_assert_str_eq(progress_format(buf, sizeof buf, 7, 5, 0, 5), "[#####] 5/5  --/s  ETA --:--");
        /* a bar wider than the buffer behind it is cut, and a short buffer truncates */
        progress_format(buf, sizeof buf, 1, 2, 1, 1000);
        cr_assert_eq(strlen(buf), 128 + 2 + strlen(" 1/2  1.0/s  ETA 0:01"));
        cr_assert_str_eq(progress_format(buf, 6, 1, 2, 1, 10), "[####");
}

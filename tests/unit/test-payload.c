/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

#include "sim/payload.h"
#include "sim/settings.h"

#define S(x) x, strlen(x)

Test(payload, topics) {
        DeviceCommand c;
        bool bc;

        cr_assert_eq(command_from_topic("/esp/update/url", "esp-a1b2c3", &c, &bc), 0);
        cr_assert_eq(c, DEVICE_COMMAND_URL);
        cr_assert(bc);
        cr_assert_eq(command_from_topic("/esp/esp-a1b2c3/update/interval", "esp-a1b2c3", &c, &bc), 0);
        cr_assert_eq(c, DEVICE_COMMAND_INTERVAL);
        cr_assert_not(bc);
        cr_assert_eq(command_from_topic("/esp/restart", "esp-a1b2c3", &c, &bc), 0);
        cr_assert_eq(c, DEVICE_COMMAND_RESTART);
        cr_assert_eq(command_from_topic("/esp/esp-a1b2c3/restart", "esp-a1b2c3", &c, &bc), 0);
        cr_assert_eq(c, DEVICE_COMMAND_RESTART);
        cr_assert_eq(command_from_topic("/esp/update/run", "esp-a1b2c3", &c, &bc), 0);
        cr_assert_eq(c, DEVICE_COMMAND_RUN);
        cr_assert_eq(command_from_topic("/esp/update/use_url", "esp-a1b2c3", &c, &bc), 0);
        cr_assert_eq(c, DEVICE_COMMAND_USE_URL);

        /* another device's, unknown, prefix tricks */
        cr_assert_eq(command_from_topic("/esp/esp-000000/restart", "esp-a1b2c3", &c, &bc), -ENOENT);
        cr_assert_eq(command_from_topic("/esp/update/urlx", "esp-a1b2c3", &c, &bc), -ENOENT);
        cr_assert_eq(command_from_topic("/esp/esp-a1b2c3/update", "esp-a1b2c3", &c, &bc), -ENOENT);
        cr_assert_eq(command_from_topic("esp/restart", "esp-a1b2c3", &c, &bc), -ENOENT);
        cr_assert_eq(command_from_topic("/esp/esp-a1b2c3x/restart", "esp-a1b2c3", &c, &bc), -ENOENT);
        cr_assert_eq(command_from_topic("/esp/log", "esp-a1b2c3", &c, &bc), -ENOENT);
}

Test(payload, command_topic) {
        char buf[64];
        cr_assert_eq(command_topic(DEVICE_COMMAND_USE_URL, NULL, buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "/esp/update/use_url");
        cr_assert_eq(command_topic(DEVICE_COMMAND_RESTART, "esp-010203", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "/esp/esp-010203/restart");
        cr_assert_eq(command_topic(DEVICE_COMMAND_RESTART, "esp-010203", buf, 10), -ENOBUFS);
}

Test(payload, url) {
        char url[SETTINGS_URL_MAX + 1] = "unchanged", why[128];

        cr_assert_eq(payload_parse_url(S("https://domain.de:8070/secure_esp.bin"), url, sizeof url, why, sizeof why), 0);
        cr_assert_str_eq(url, "https://domain.de:8070/secure_esp.bin");

        strcpy(url, "unchanged");
        const char *bad[] = { "http://domain.de/fw.bin", "ftp://x/y", "https://", "https:///fw.bin", "",
                              "https://a b/fw", "HTTPS://x/y", "https://x/\ty", "domain.de/fw.bin" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                why[0] = 0;
                cr_assert_eq(payload_parse_url(S(bad[i]), url, sizeof url, why, sizeof why), -EINVAL, "%s", bad[i]);
                cr_assert_neq(why[0], 0);
                cr_assert_str_eq(url, "unchanged");
        }
        cr_assert_eq(payload_parse_url(S("http://x/y"), url, sizeof url, why, sizeof why), -EINVAL);
        cr_assert(strstr(why, "https"), "%s", why);
        /* a bare scheme is an https URL without a host, not a wrong scheme */
        cr_assert_eq(payload_parse_url(S("https://"), url, sizeof url, why, sizeof why), -EINVAL);
        cr_assert_str_eq(why, "URL has no host");

        /* 255 bytes fit, 256 do not */
        char u[300];
        memset(u, 'a', sizeof u);
        memcpy(u, "https://h/", 10);
        cr_assert_eq(payload_parse_url(u, 255, url, sizeof url, why, sizeof why), 0);
        cr_assert_eq(strlen(url), 255);
        cr_assert_eq(payload_parse_url(u, 256, url, sizeof url, why, sizeof why), -EINVAL);
        cr_assert(strstr(why, "256 bytes"), "%s", why);

        /* embedded NUL */
        cr_assert_eq(payload_parse_url("https://h/\0x", 12, url, sizeof url, why, sizeof why), -EINVAL);
}

Test(payload, use_url) {
        uint8_t v = 7;
        char why[128];

        cr_assert_eq(payload_parse_use_url(S("1"), &v, why, sizeof why), 0);
        cr_assert_eq(v, 1);
        cr_assert_eq(payload_parse_use_url(S("0"), &v, why, sizeof why), 0);
        cr_assert_eq(v, 0);
        v = 7;
        const char *bad[] = { "", "2", "01", "true", " 1", "1\n", "-1" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                cr_assert_eq(payload_parse_use_url(S(bad[i]), &v, why, sizeof why), -EINVAL, "'%s'", bad[i]);
                cr_assert_eq(v, 7);
        }
        cr_assert(strstr(why, "\"0\" or \"1\""), "%s", why);
}

Test(payload, interval) {
        uint32_t v = 42;
        char why[128];

        cr_assert_eq(payload_parse_interval(S("300"), &v, why, sizeof why), 0);
        cr_assert_eq(v, 300);
        cr_assert_eq(payload_parse_interval(S("9999999"), &v, why, sizeof why), 0);
        cr_assert_eq(v, 9999999);
        cr_assert_eq(payload_parse_interval(S("10000"), &v, why, sizeof why), 0);
        cr_assert_eq(v, 10000);
        v = 42;
        const char *bad[] = { "299", "10000000", "", "abc", "-300", "300s", "3e5", " 300", "99999999999999",
                              "0" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                cr_assert_eq(payload_parse_interval(S(bad[i]), &v, why, sizeof why), -EINVAL, "'%s'", bad[i]);
                cr_assert_eq(v, 42);
        }
        cr_assert_eq(payload_parse_interval(S("299"), &v, why, sizeof why), -EINVAL);
        cr_assert(strstr(why, "out of range 300..9999999"), "%s", why);
}

Test(payload, topic_expand) {
        char buf[64];
        cr_assert_eq(topic_expand("/esp/%s/log", "esp-a1b2c3", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "/esp/esp-a1b2c3/log");
        cr_assert_eq(topic_expand("/esp/log", "esp-a1b2c3", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "/esp/log");
        cr_assert_eq(topic_expand("/esp/%s/log", "esp-a1b2c3", buf, 12), -ENOBUFS);
}

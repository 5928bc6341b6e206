/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

#include "sim/esplog.h"

Test(esplog, format) {
        char buf[128];

        cr_assert_eq(esp_log_format(buf, sizeof buf, ESP_LOG_INFO, 1234, "secure_esp", "MQTT_EVENT_CONNECTED"),
                     (int) strlen("I (1234) secure_esp: MQTT_EVENT_CONNECTED"));
        cr_assert_str_eq(buf, "I (1234) secure_esp: MQTT_EVENT_CONNECTED");
        esp_log_format(buf, sizeof buf, ESP_LOG_ERROR, 0, "esp_https_ota", "Failed %s: %d", "x", -1);
        cr_assert_str_eq(buf, "E (0) esp_https_ota: Failed x: -1");
        esp_log_format(buf, sizeof buf, ESP_LOG_WARN, UINT32_MAX, "t", "w");
        cr_assert_str_eq(buf, "W (4294967295) t: w");
        esp_log_format(buf, sizeof buf, ESP_LOG_DEBUG, 5, "t", "d");
        cr_assert_str_eq(buf, "D (5) t: d");
        esp_log_format(buf, sizeof buf, ESP_LOG_VERBOSE, 5, "t", "v");
        cr_assert_str_eq(buf, "V (5) t: v");
}

Test(esplog, bad_arguments) {
        char buf[64];
        cr_assert_eq(esp_log_format(buf, sizeof buf, (EspLogLevel) 9, 1, "t", "x"), -EINVAL);
        cr_assert_eq(esp_log_format(buf, sizeof buf, ESP_LOG_INFO, 1, "", "x"), -EINVAL);
        cr_assert_eq(esp_log_format(buf, 1, ESP_LOG_INFO, 1, "t", "x"), -EINVAL);
}

Test(esplog, truncation) {
        char buf[16];
        int n = esp_log_format(buf, sizeof buf, ESP_LOG_INFO, 1, "tag", "%s", "abcdefghijklmnop");
        cr_assert_eq(n, 15);
        cr_assert_str_eq(buf, "I (1) tag: abcd");

        /* never cut inside a UTF-8 sequence: "é" is 2 bytes */
        char b2[13];
        n = esp_log_format(b2, sizeof b2, ESP_LOG_INFO, 1, "tag", "\xc3\xa9\xc3\xa9");
        cr_assert_eq(n, 11);
        cr_assert_str_eq(b2, "I (1) tag: ");
        char b3[14];
        n = esp_log_format(b3, sizeof b3, ESP_LOG_INFO, 1, "tag", "\xc3\xa9\xc3\xa9");
        cr_assert_str_eq(b3, "I (1) tag: \xc3\xa9");
}

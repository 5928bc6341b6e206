/* SPDX-License-Identifier: MIT */
/* What a device receives over MQTT (shared/seeds/001, sim/payload.h): the
 * input is both a payload, given to each of the three payload parsers as it
 * is, and a topic (its text up to the first NUL byte; what follows the NUL
 * is the device id, "esp-a1b2c3" without one). Accepted values are checked
 * against the contract, a rejection must give its reason, and a topic that
 * maps to a command must be the topic command_topic() builds for it. */

#include "fuzz-util.h"
#include "sim/payload.h"
#include "sim/settings.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

static bool is_digits(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i] < '0' || p[i] > '9')
                        return false;
        return n > 0;
}

static void check_payloads(const uint8_t *data, size_t size) {
        char url[SETTINGS_URL_MAX + 1], why[256];
        uint8_t use_url = 42;
        uint32_t interval = 42;
        int r;

        why[0] = 0;
        memcpy(url, "unchanged", 10);
        r = payload_parse_url(data, size, url, sizeof url, why, sizeof why);
        fuzz_check_err(r, why, sizeof why, "payload_parse_url");
        if (r == 0) {
                fuzz_check(size <= SETTINGS_URL_MAX && strlen(url) == size && memcmp(url, data, size) == 0,
                           "the URL stored is not the payload");
                fuzz_check(strncmp(url, "https://", 8) == 0 && url[8] && !strchr("/:?#", url[8]),
                           "accepted '%s', which is not an https URL with a host", url);
                for (size_t i = 0; i < size; i++)
                        fuzz_check(data[i] > 0x20 && data[i] != 0x7f, "accepted a URL with byte 0x%02x", data[i]);
        } else
                fuzz_check(r == -EINVAL && streq(url, "unchanged"), "a rejected URL changed the output (%d)", r);

        why[0] = 0;
        r = payload_parse_use_url(data, size, &use_url, why, sizeof why);
        fuzz_check_err(r, why, sizeof why, "payload_parse_use_url");
        if (r == 0)
                fuzz_check(size == 1 && use_url == data[0] - '0' && use_url <= 1, "use_url accepted %zu bytes", size);
        else
                fuzz_check(use_url == 42, "a rejected use_url changed the output");

        why[0] = 0;
        r = payload_parse_interval(data, size, &interval, why, sizeof why);
        fuzz_check_err(r, why, sizeof why, "payload_parse_interval");
        if (r == 0) {
                uint64_t v = 0;

                fuzz_check(is_digits(data, size), "interval accepted something that is not a number");
                for (size_t i = 0; i < size; i++)
                        v = v * 10 + (data[i] - '0');
                fuzz_check(v == interval && interval >= SETTINGS_INTERVAL_MIN && interval <= SETTINGS_INTERVAL_MAX,
                           "interval %u out of range or not the payload's value", interval);
        } else
                fuzz_check(interval == 42, "a rejected interval changed the output");
}

static void check_topic(const char *topic, const char *id) {
        char built[512];
        DeviceCommand c;
        bool broadcast = false;
        int r;

        r = command_from_topic(topic, id, &c, &broadcast);
        fuzz_check(r == 0 || r == -ENOENT, "command_from_topic: %d", r);
        if (r < 0)
                return;
        fuzz_check(c >= 0 && c < _DEVICE_COMMAND_MAX, "command %d", c);
        fuzz_check(device_command_from_string(device_command_to_string(c)) == c, "command name round trip");
        r = command_topic(c, broadcast ? NULL : id, built, sizeof built);
        fuzz_check(r == 0 || (r == -ENOBUFS && strlen(topic) >= sizeof built), "command_topic: %d", r);
        if (r == 0)
                fuzz_check(streq(built, topic), "topic '%s' maps to a command whose topic is '%s'", topic, built);
}

static void check_expand(const char *tmpl, const char *id) {
        char buf[256], expected[sizeof buf];
        size_t o = 0;
        bool fits = true;
        int r;

        for (const char *p = tmpl; *p && fits; p++) {
                const char *piece = p;
                size_t len = 1;

                if (p[0] == '%' && p[1] == 's') {
                        piece = id, len = strlen(id);
                        p++;
                }
                if (o + len >= sizeof expected)
                        fits = false;
                else {
                        memcpy(expected + o, piece, len);
                        o += len;
                }
        }
        expected[fits ? o : 0] = 0;

        r = topic_expand(tmpl, id, buf, sizeof buf);
        fuzz_check(r == 0 || r == -ENOBUFS, "topic_expand: %d", r);
        fuzz_check((r == 0) == fits, "topic_expand says %d for a %s result", r, fits ? "fitting" : "too long");
        if (r == 0)
                fuzz_check(streq(buf, expected), "topic_expand('%s') = '%s', expected '%s'", tmpl, buf, expected);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *topic = fuzz_strndup(data, size);
        size_t tlen = strlen(topic);
        _cleanup_free_ char *id = tlen < size ? fuzz_strndup(data + tlen + 1, size - tlen - 1) : strdup("esp-a1b2c3");

        if (!id)
                abort();
        check_payloads(data, size);
        check_topic(topic, id);
        check_topic(topic, "esp-a1b2c3");
        check_expand(topic, id);
        return 0;
}

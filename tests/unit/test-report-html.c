/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/report-html.h"

#define FIXTURE SOURCE_DIR "/tests/data/report-sample.json"

/* Every element the page may contain. Report data that escaped the
 * escaping would show up as some other tag (<script>, <img>, …), or as one
 * of these in a place we can count (see assert_balanced()). */
static const char *const allowed_tags[] = {
        "html", "head", "meta", "title", "style", "body", "main", "header", "footer", "section",
        "h1", "h2", "h3", "p", "div", "span", "b", "br", "dl", "dt", "dd", "ul", "li",
        "table", "colgroup", "col", "thead", "tbody", "tr", "th", "td", "details", "summary",
        "svg", "line", "rect", "path", "text",
};

static char *render(json_object *report, size_t *ret_size) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        cr_assert_not_null(f);
        cr_assert_eq(report_html_write(f, report), 0);
        cr_assert_eq(fclose(f), 0);
        cr_assert_not_null(buf);
        if (ret_size)
                *ret_size = size;
        return buf;
}

static json_object *parse(const char *json) {
        json_object *o = json_tokener_parse(json);

        cr_assert_not_null(o, "test JSON does not parse: %s", json);
        return o;
}

static size_t count(const char *hay, const char *needle) {
        size_t n = 0;

        for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void assert_balanced(const char *html, const char *tag) {
        char open[32], close[32];
        size_t n_open = 0;

        snprintf(open, sizeof open, "<%s", tag);
        snprintf(close, sizeof close, "</%s>", tag);
        /* "<tr" must not count "<track", "<t" "<text", …: the name ends at a space or '>'. */
        for (const char *p = html; (p = strstr(p, open)); p += strlen(open)) {
                char c = p[strlen(open)];

                if (c == ' ' || c == '>')
                        n_open++;
        }
        cr_assert_eq(n_open, count(html, close), "<%s> opened %zu times, closed %zu times", tag, n_open, count(html, close));
}

/* Well-formed enough: the doctype, one html element, every container
 * closed, and no element that is not ours. */
static void assert_page(const char *html) {
        static const char *const containers[] = {
                "html", "head", "body", "main", "section", "div", "table", "thead", "tbody", "tr", "td", "th",
                "svg", "text", "p", "ul", "li", "dl", "details", "summary", "span", "title", "style",
        };

        cr_assert(strncmp(html, "<!DOCTYPE html>\n", 16) == 0, "no doctype: %.40s", html);
        cr_assert(strlen(html) > 7 && strcmp(html + strlen(html) - 8, "</html>\n") == 0, "page does not end in </html>");
        cr_assert_eq(count(html, "<html"), 1);
        cr_assert_null(strcasestr(html, "<script"));
        cr_assert_null(strcasestr(html, "javascript:"));
        /* nothing fetched: no src or href attribute, no url() or @import in the CSS */
        cr_assert_null(strstr(html, "src=\""), "an external reference");
        cr_assert_null(strstr(html, "href=\""), "an external reference");
        cr_assert_null(strstr(html, "url("), "an external reference");
        cr_assert_null(strstr(html, "@import"), "an external reference");
        for (size_t i = 0; i < sizeof containers / sizeof containers[0]; i++)
                assert_balanced(html, containers[i]);

        for (const char *p = strchr(html, '<'); p; p = strchr(p + 1, '<')) {
                const char *name = p[1] == '/' ? p + 2 : p + 1;
                size_t len = 0;
                bool ok = false;

                if (strncmp(p, "<!DOCTYPE html>", 15) == 0)
                        continue;
                while (isalnum((unsigned char) name[len]))
                        len++;
                for (size_t i = 0; i < sizeof allowed_tags / sizeof allowed_tags[0]; i++)
                        if (strlen(allowed_tags[i]) == len && strncmp(allowed_tags[i], name, len) == 0)
                                ok = true;
                cr_assert(ok, "unexpected markup: %.60s", p);
        }
}

/* A page as it ought to look when a section has nothing to show. */
static void assert_empty_page(json_object *report) {
        char *html = render(report, NULL);

        assert_page(html);
        cr_assert_not_null(strstr(html, "no data"));
        cr_assert_eq(count(html, "<svg"), 0);
        cr_assert_not_null(strstr(html, "No verdict"));
        free(html);
}

Test(report_html, fixture) {
        json_object *report = json_object_from_file(FIXTURE), *devices;
        const char *first_online = NULL, *failed = NULL;
        size_t size;
        char *html;

        cr_assert_not_null(report, "%s: %s", FIXTURE, json_util_get_last_err());
        html = render(report, &size);
        assert_page(html);

        /* online, connect rate, latency, OTA */
        cr_assert_eq(count(html, "<svg"), 4);
        cr_assert_null(strstr(html, "no data"), "the fixture has every section");
        cr_assert_not_null(strstr(html, "FAILED"));
        cr_assert_not_null(strstr(html, "2 of 3 checks failed"));
        cr_assert_not_null(strstr(html, "OpenSSL 3.0.15"));
        cr_assert_not_null(strstr(html, "fleet-runner-01"));
        cr_assert_not_null(strstr(html, "2 min 0.5 s"));
        cr_assert_not_null(strstr(html, "ESP_ERR_OTA_VALIDATE_FAILED"));
        cr_assert_not_null(strstr(html, "tls_alert_unknown_ca"));
        cr_assert_not_null(strstr(html, "13.2 MiB"));
        /* the sample's one quoted address, escaped */
        cr_assert_not_null(strstr(html, "&#39;Fleet CA &lt;ops@example.com&gt;&#39;"));

        devices = json_object_object_get(report, "devices");
        cr_assert_eq(json_object_array_length(devices), 50);
        for (size_t i = 0; i < json_object_array_length(devices); i++) {
                json_object *d = json_object_array_get_idx(devices, i);
                const char *id = json_object_get_string(json_object_object_get(d, "id"));
                const char *state = json_object_get_string(json_object_object_get(d, "state"));
                const char *at = strstr(html, id);

                cr_assert_not_null(at, "device %s is not on the page", id);
                if (strcmp(state, "failed") == 0)
                        failed = at;
                else if (strcmp(state, "online") == 0 && (!first_online || at < first_online))
                        first_online = at;
        }
        cr_assert_not_null(failed);
        cr_assert_not_null(first_online);
        cr_assert_lt(failed, first_online, "the failed device is not listed first");
        cr_assert_eq(count(html, "<tr class=\"row-"), 50);
        cr_assert_null(strstr(html, "more in the JSON report"));

        free(html);
        json_object_put(report);
}

Test(report_html, empty_and_not_an_object) {
        static const char *const docs[] = { "{}", "[]", "\"report\"", "42", "null", "[{\"devices\": []}]" };

        assert_empty_page(NULL);
        for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
                json_object *o = json_tokener_parse(docs[i]);

                assert_empty_page(o);
                json_object_put(o);
        }
}

Test(report_html, wrong_types) {
        json_object *report = parse(
                "{\"report_version\": \"one\", \"espfleet\": [1], \"host\": \"h\","
                " \"run\": {\"started\": 5, \"ended\": [], \"duration_s\": \"long\", \"reason\": {}},"
                " \"config\": [1, 2],"
                " \"summary\": {\"devices\": \"50\", \"online\": null, \"states\": [1, 2], \"ota\": 7},"
                " \"histograms\": {\"connect\": 5, \"tls_handshake\": {\"unit\": 7, \"count\": \"x\", \"p50\": \"fast\"},"
                "   \"ds_sign\": {\"count\": 3, \"p50\": -1, \"p90\": 0, \"p99\": 1e308, \"p99.9\": NaN, \"max\": Infinity},"
                "   \"suback\": {\"count\": 0, \"unit\": \"seconds\"}, \"puback\": []},"
                " \"counters\": {\"connects\": \"many\", \"connect_failures\": [1], \"disconnects\": 3,"
                "   \"ota_results\": {\"ESP_OK\": \"x\", \"ESP_FAIL\": -3, \"ESP_ERR_NO_MEM\": 1e300}},"
                " \"timeline\": {\"interval_s\": -1, \"t\": [\"a\", null, 3, 2, -5, 1e6], \"online\": [1, \"x\", 2, -4, 1e300],"
                "   \"connects\": {}, \"failures\": [NaN, Infinity, 1, -1]},"
                " \"devices\": [1, \"x\", null, [], {\"id\": 5, \"state\": [], \"worker\": \"w\","
                "   \"ota\": {\"result\": 7, \"count\": \"2\", \"history\": \"x\"}},"
                "   {\"id\": \"esp-0k0k0k\", \"connects\": -1, \"last_connect_s\": \"fast\","
                "    \"ota\": {\"result\": null, \"history\": [1, {\"at\": 5, \"duration_s\": NaN}]}}],"
                " \"verdict\": {\"passed\": \"yes\", \"checks\": [1, {\"name\": 7, \"value\": \"x\"}, null]}}");
        char *html = render(report, NULL);

        assert_page(html);
        cr_assert_not_null(strstr(html, "esp-0k0k0k"));
        cr_assert_not_null(strstr(html, "(no id)"));
        cr_assert_not_null(strstr(html, "Verdict unknown"));
        cr_assert_not_null(strstr(html, "no data"));
        free(html);
        json_object_put(report);
}

Test(report_html, hostile_strings) {
        json_object *report = parse(
                "{\"espfleet\": {\"version\": \"<script>alert(1)</script>\"},"
                " \"host\": {\"hostname\": \"</title><script>x()</script>\"},"
                " \"run\": {\"started\": \"\\\"><img src=x onerror=alert(1)>\", \"config_file\": \"/etc/&amp;\\u0001\"},"
                " \"config\": {\"<b>key</b>\": \"'&'\", \"nested\": {\"<i>\": \"</td>\"}},"
                " \"summary\": {\"devices\": 1, \"states\": {\"<u>online</u>\": 1}},"
                " \"histograms\": {\"<svg onload=x()>\": {\"unit\": \"seconds\", \"count\": 1, \"p50\": 0.1, \"max\": 0.2}},"
                " \"counters\": {\"<i>c</i>\": 1, \"connect_failures\": {\"</td><script>\": 2},"
                "   \"ota_results\": {\"<script>ESP_OK\": 1}},"
                " \"devices\": [{\"id\": \"<script>alert(\\\"x\\\")</script>\", \"state\": \"\\\" onmouseover=\\\"x()\","
                "   \"last_error\": \"\\\"><img src=x onerror=alert(1)>\", \"last_error_at\": \"<b>\", \"version\": \"<s>\","
                "   \"ota\": {\"result\": \"<script>\", \"history\": [{\"at\": \"\\\" onclick=\\\"x()\", \"result\": \"<b>\"}]}}],"
                " \"verdict\": {\"passed\": true, \"checks\": [{\"name\": \"<script>\", \"passed\": true}]}}");
        char *html = render(report, NULL);

        assert_page(html);
        cr_assert_null(strstr(html, "<img"));
        cr_assert_null(strstr(html, "\" onmouseover"));
        cr_assert_null(strstr(html, "\" onclick"));
        cr_assert_not_null(strstr(html, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        cr_assert_not_null(strstr(html, "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        cr_assert_not_null(strstr(html, "&#39;&amp;&#39;"));
        cr_assert_not_null(strstr(html, "/etc/&amp;amp;\xef\xbf\xbd"), "a control character is replaced");
        cr_assert_not_null(strstr(html, "PASSED"));
        free(html);
        json_object_put(report);
}

Test(report_html, long_strings_are_cut) {
        json_object *report = json_object_new_object(), *devices = json_object_new_array(), *d = json_object_new_object();
        char *big = malloc(100001), *html;
        size_t size;

        cr_assert_not_null(big);
        /* 'é' is two bytes, and after the 'x' every even offset is inside
         * one: a cut there would leave invalid UTF-8. */
        big[0] = 'x';
        for (size_t i = 1; i + 2 <= 100000; i += 2)
                memcpy(big + i, "\xc3\xa9", 2);
        big[99999] = 0;
        json_object_object_add(d, "id", json_object_new_string("esp-long"));
        json_object_object_add(d, "last_error", json_object_new_string(big));
        json_object_array_add(devices, d);
        json_object_object_add(report, "devices", devices);
        json_object_object_add(report, "config", json_object_new_object());
        json_object_object_add(json_object_object_get(report, "config"), "x", json_object_new_string(big));

        html = render(report, &size);
        assert_page(html);
        cr_assert_lt(size, 40000, "the page holds %zu bytes", size);
        cr_assert_not_null(strstr(html, "\xc3\xa9\xe2\x80\xa6"), "no ellipsis after a whole character");
        free(html);
        free(big);
        json_object_put(report);
}

Test(report_html, many_devices) {
        json_object *report = json_object_new_object(), *devices = json_object_new_array();
        char id[32], *html;

        for (int i = 0; i < 5000; i++) {
                json_object *d = json_object_new_object();

                snprintf(id, sizeof id, "dev-%05d", i);
                json_object_object_add(d, "id", json_object_new_string(id));
                json_object_object_add(d, "state", json_object_new_string(i % 7 == 0 ? "failed" : "online"));
                json_object_object_add(d, "connects", json_object_new_int(i % 3));
                json_object_array_add(devices, d);
        }
        json_object_object_add(report, "devices", devices);

        html = render(report, NULL);
        assert_page(html);
        cr_assert_eq(count(html, "<tr class=\"row-"), REPORT_HTML_MAX_DEVICES);
        cr_assert_not_null(strstr(html, "4,000 more in the JSON report"));
        /* all 715 failed devices come first, the last of them too */
        cr_assert_not_null(strstr(html, "dev-04998"));
        cr_assert_eq(count(html, "<tr class=\"row-bad\">"), 715);
        cr_assert_not_null(strstr(html, "dev-00001"));
        cr_assert_null(strstr(html, "dev-04999"));
        free(html);
        json_object_put(report);
}

Test(report_html, long_timeline) {
        json_object *report = json_object_new_object(), *tl = json_object_new_object();
        json_object *t = json_object_new_array(), *online = json_object_new_array(), *connects = json_object_new_array();
        size_t size;
        char *html;

        /* 55 hours of 1 s samples: the charts stay the size of the chart */
        for (int i = 0; i < 200000; i++) {
                json_object_array_add(t, json_object_new_int(i));
                json_object_array_add(online, json_object_new_int(i % 1000 == 0 ? 0 : 5000 + i % 17));
                json_object_array_add(connects, json_object_new_int(i % 97 == 0 ? 40 : 0));
        }
        json_object_object_add(tl, "interval_s", json_object_new_int(1));
        json_object_object_add(tl, "t", t);
        json_object_object_add(tl, "online", online);
        json_object_object_add(tl, "connects", connects);
        json_object_object_add(report, "timeline", tl);

        html = render(report, &size);
        assert_page(html);
        cr_assert_eq(count(html, "<svg"), 2);
        cr_assert_lt(size, 300000, "the page holds %zu bytes", size);
        cr_assert_not_null(strstr(html, "time since start (h:min:s)"));
        cr_assert_not_null(strstr(html, "peak 5,016 online"));
        free(html);
        json_object_put(report);
}

Test(report_html, extreme_numbers) {
        json_object *report = parse(
                "{\"summary\": {\"devices\": 1e300, \"online\": -1e300},"
                " \"timeline\": {\"t\": [0, 1e300], \"online\": [1e308, 0], \"connects\": [1e308, 1e308]},"
                " \"histograms\": {\"connect\": {\"count\": 2, \"p50\": 1e-300, \"p90\": 1e-9, \"max\": 1e300}},"
                " \"counters\": {\"ota_results\": {\"ESP_OK\": 1e300, \"ESP_FAIL\": 1}}}");
        char *html = render(report, NULL);

        assert_page(html);
        cr_assert_eq(count(html, "<svg"), 4);
        free(html);
        json_object_put(report);
}

Test(report_html, write_errors) {
        json_object *report = json_object_from_file(FIXTURE);
        FILE *f = fopen("/dev/null", "re");

        cr_assert_not_null(report);
        cr_assert_not_null(f);
        cr_assert_eq(report_html_write(NULL, report), -EINVAL);
        cr_assert_lt(report_html_write(f, report), 0, "writing to a read-only stream succeeded");
        fclose(f);
        f = fopen("/dev/full", "we");
        if (f) {
                cr_assert_eq(report_html_write(f, report), -ENOSPC);
                fclose(f);
        }
        json_object_put(report);
}

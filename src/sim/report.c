/* SPDX-License-Identifier: MIT */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "metrics/metrics-json.h"
#include "metrics/report-html.h"
#include "sim/device.h"
#include "sim/report.h"

void timeline_init(Timeline *t) {
        *t = (Timeline) { .interval_s = 1 };
}

void timeline_sample(Timeline *t, uint64_t online, uint64_t connects_total, uint64_t failures_total) {
        uint32_t dc = (uint32_t) MIN(connects_total - MIN(t->last_connects, connects_total), (uint64_t) UINT32_MAX);
        uint32_t df = (uint32_t) MIN(failures_total - MIN(t->last_failures, failures_total), (uint64_t) UINT32_MAX);

        t->last_connects = connects_total;
        t->last_failures = failures_total;
        if (t->pending == 0) {
                if (t->n == TIMELINE_MAX) {
                        /* full: every two samples become one of twice the interval */
                        for (size_t i = 0; i < TIMELINE_MAX / 2; i++) {
                                t->online[i] = t->online[2 * i + 1];
                                t->connects[i] = t->connects[2 * i] + t->connects[2 * i + 1];
                                t->failures[i] = t->failures[2 * i] + t->failures[2 * i + 1];
                        }
                        t->n = TIMELINE_MAX / 2;
                        t->interval_s *= 2;
                }
                t->online[t->n] = 0;
                t->connects[t->n] = 0;
                t->failures[t->n] = 0;
                t->n++;
        }
        size_t i = t->n - 1;
        t->online[i] = (uint32_t) MIN(online, (uint64_t) UINT32_MAX); /* the last of the slot */
        t->connects[i] += dc;
        t->failures[i] += df;
        if (++t->pending >= t->interval_s)
                t->pending = 0;
}

static char *iso_time(uint64_t usec, char *buf, size_t size) {
        time_t s = (time_t) (usec / 1000000);
        struct tm tm;

        gmtime_r(&s, &tm);
        size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, size - n, ".%03uZ", (unsigned) (usec / 1000 % 1000));
        return buf;
}

static void add(json_object *o, const char *key, json_object *v) {
        if (v)
                (void) json_object_object_add(o, key, v);
}

static json_object *meta_versions(void) {
        json_object *o = json_object_new_object();
        int maj = 0, min = 0, rev = 0;
        char buf[32];

        if (!o)
                return NULL;
        add(o, "version", json_object_new_string(ESPFLEET_VERSION));
        add(o, "openssl", json_object_new_string(OpenSSL_version(OPENSSL_VERSION)));
        (void) mosquitto_lib_version(&maj, &min, &rev);
        snprintf(buf, sizeof buf, "%d.%d.%d", maj, min, rev);
        add(o, "libmosquitto", json_object_new_string(buf));
        const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
        add(o, "libcurl", json_object_new_string(cv && cv->version ? cv->version : "unknown"));
        add(o, "json-c", json_object_new_string(json_c_version()));
        return o;
}

static json_object *meta_host(void) {
        json_object *o = json_object_new_object();
        struct utsname u;
        char host[256] = "";

        if (!o)
                return NULL;
        (void) gethostname(host, sizeof host - 1);
        add(o, "hostname", json_object_new_string(host));
        if (uname(&u) >= 0) {
                add(o, "kernel", json_object_new_string(u.release));
                add(o, "machine", json_object_new_string(u.machine));
        }
        add(o, "cpus", json_object_new_int64(sysconf(_SC_NPROCESSORS_ONLN)));
        return o;
}

static void cfg_string(const char *key, const char *value, void *userdata) {
        add(userdata, key, json_object_new_string(value));
}

static void cfg_strv(const char *key, char *const *values, void *userdata) {
        json_object *a = json_object_new_array();
        for (char *const *v = values; a && v && *v; v++)
                (void) json_object_array_add(a, json_object_new_string(*v));
        add(userdata, key, a);
}

static void cfg_number(const char *key, double value, void *userdata) {
        if (value == (double) (int64_t) value)
                add(userdata, key, json_object_new_int64((int64_t) value));
        else
                add(userdata, key, json_object_new_double(value));
}

static void cfg_bool(const char *key, bool value, void *userdata) {
        add(userdata, key, json_object_new_boolean(value));
}

static json_object *timeline_json(const Timeline *t) {
        json_object *o = json_object_new_object();
        json_object *ts = json_object_new_array(), *on = json_object_new_array(), *co = json_object_new_array(),
                    *fa = json_object_new_array();

        if (!o || !ts || !on || !co || !fa) {
                json_object_put(o);
                json_object_put(ts);
                json_object_put(on);
                json_object_put(co);
                json_object_put(fa);
                return NULL;
        }
        for (size_t i = 0; t && i < t->n; i++) {
                (void) json_object_array_add(ts, json_object_new_int64((int64_t) (i * t->interval_s)));
                (void) json_object_array_add(on, json_object_new_int64(t->online[i]));
                (void) json_object_array_add(co, json_object_new_int64(t->connects[i]));
                (void) json_object_array_add(fa, json_object_new_int64(t->failures[i]));
        }
        add(o, "interval_s", json_object_new_int64(t ? t->interval_s : 1));
        add(o, "t", ts);
        add(o, "online", on);
        add(o, "connects", co);
        add(o, "failures", fa);
        return o;
}

json_object *report_build(const ReportInput *in) {
        _cleanup_free_ MetricsBlock *totals = metrics_totals_new();
        json_object *r = json_object_new_object(), *o, *devices, *states;
        uint64_t n_devices = 0, ota_ok = 0, ota_failed = 0, rolled_back = 0;
        char buf[64];

        if (!r || !totals) {
                json_object_put(r);
                return NULL;
        }
        for (size_t i = 0; i < in->n_blocks; i++)
                if (in->blocks[i])
                        metrics_totals_add(totals, in->blocks[i]);
        if (in->probe)
                metrics_totals_add(totals, in->probe);

        add(r, "report_version", json_object_new_int(1));
        add(r, "espfleet", meta_versions());
        add(r, "host", meta_host());

        o = json_object_new_object();
        if (o) {
                add(o, "started", json_object_new_string(iso_time(in->started_usec, buf, sizeof buf)));
                add(o, "ended", json_object_new_string(iso_time(in->ended_usec, buf, sizeof buf)));
                add(o, "duration_s", json_object_new_double(
                            (double) (in->ended_usec - MIN(in->started_usec, in->ended_usec)) / 1e6));
                add(o, "reason", json_object_new_string(in->reason ?: "exit"));
                if (in->config_path)
                        add(o, "config_file", json_object_new_string(in->config_path));
                add(o, "workers", json_object_new_int64((int64_t) in->n_blocks));
        }
        add(r, "run", o);

        if (in->config) {
                ConfigVisitor v = { .string = cfg_string, .strv = cfg_strv, .number = cfg_number, .boolean = cfg_bool };
                o = json_object_new_object();
                if (o)
                        (void) daemon_config_foreach(in->config, &v, o);
                add(r, "config", o);
        }

        devices = json_object_new_array();
        states = json_object_new_object();
        uint64_t in_state[_DEVICE_STATE_MAX] = {};
        for (size_t w = 0; w < in->n_blocks; w++) {
                const MetricsBlock *b = in->blocks[w];
                if (!b)
                        continue;
                for (size_t i = 0; i < b->n_devices; i++) {
                        MetricsDevice d;
                        metrics_device_read(&b->devices[i], &d);
                        DeviceState st = d.state < _DEVICE_STATE_MAX ? (DeviceState) d.state : DEVICE_OFF;
                        in_state[st]++;
                        n_devices++;
                        if (d.rollbacks > 0)
                                rolled_back++;
                        if (d.ota_count > 0) {
                                const MetricsOtaRecord *h = &d.ota_history[(d.ota_count - 1) % METRICS_OTA_HISTORY];
                                if (h->error == 0)
                                        ota_ok++;
                                else
                                        ota_failed++;
                        }
                        if (devices)
                                (void) json_object_array_add(devices,
                                                             metrics_device_json(&d, device_state_to_string(st),
                                                                                 (unsigned) w));
                }
        }
        for (DeviceState st = 0; st < _DEVICE_STATE_MAX && states; st++)
                add(states, device_state_to_string(st), json_object_new_int64((int64_t) in_state[st]));

        o = json_object_new_object();
        if (o) {
                add(o, "devices", json_object_new_int64((int64_t) n_devices));
                add(o, "online", json_object_new_int64((int64_t) in_state[DEVICE_ONLINE]));
                add(o, "states", states);
                states = NULL;
                json_object *ota = json_object_new_object();
                if (ota) {
                        add(ota, "ok", json_object_new_int64((int64_t) ota_ok));
                        add(ota, "failed", json_object_new_int64((int64_t) ota_failed));
                        add(ota, "rolled_back", json_object_new_int64((int64_t) rolled_back));
                }
                add(o, "ota", ota);
        }
        json_object_put(states);
        add(r, "summary", o);
        add(r, "histograms", metrics_histograms_json(totals));
        add(r, "counters", metrics_counters_json(totals));
        add(r, "timeline", timeline_json(in->timeline));
        add(r, "devices", devices);

        if (in->n_checks > 0) {
                json_object *v = json_object_new_object(), *checks = json_object_new_array();
                bool passed = true;
                for (size_t i = 0; checks && i < in->n_checks; i++) {
                        json_object *c = json_object_new_object();
                        if (!c)
                                continue;
                        add(c, "name", json_object_new_string(in->checks[i].name));
                        add(c, "value", json_object_new_double(in->checks[i].value));
                        add(c, "threshold", json_object_new_double(in->checks[i].threshold));
                        add(c, "passed", json_object_new_boolean(in->checks[i].passed));
                        (void) json_object_array_add(checks, c);
                        passed = passed && in->checks[i].passed;
                }
                if (v) {
                        add(v, "passed", json_object_new_boolean(passed));
                        add(v, "checks", checks);
                } else
                        json_object_put(checks);
                add(r, "verdict", v);
        }
        return r;
}

/* Writes through a temporary file in the same directory, then renames it. */
static int write_atomic(const char *path, int (*fn)(FILE *f, json_object *r), json_object *r) {
        _cleanup_free_ char *tmp = NULL;
        FILE *f;
        int k;

        if (asprintf(&tmp, "%s.tmp.%d", path, (int) getpid()) < 0)
                return -ENOMEM;
        f = fopen(tmp, "we");
        if (!f)
                return -errno;
        k = fn(f, r);
        if (fflush(f) != 0 && k >= 0)
                k = -errno;
        if (k >= 0 && fsync(fileno(f)) < 0)
                k = -errno;
        if (fclose(f) != 0 && k >= 0)
                k = -errno;
        if (k >= 0 && rename(tmp, path) < 0)
                k = -errno;
        if (k < 0)
                (void) unlink(tmp);
        return k;
}

static int json_fn(FILE *f, json_object *r) {
        const char *s = json_object_to_json_string_ext(r, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!s)
                return -ENOMEM;
        if (fputs(s, f) < 0 || fputc('\n', f) < 0)
                return -EIO;
        return 0;
}

int report_write_json(const char *path, json_object *report) {
        return write_atomic(path, json_fn, report);
}

int report_write_html(const char *path, json_object *report) {
        return write_atomic(path, report_html_write, report);
}

static const char *jstr(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
                ? json_object_get_string(v) : NULL;
}

static int64_t jint(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

const char *report_device_failure(json_object *d, char *buf, size_t size) {
        const char *state = jstr(d, "state") ?: "unknown", *err = jstr(d, "last_error");
        json_object *ota = NULL;
        const char *ota_result = NULL;

        if (json_object_object_get_ex(d, "ota", &ota))
                ota_result = jstr(ota, "result");
        if (ota_result && !streq(ota_result, "ESP_OK")) {
                snprintf(buf, size, "%s: OTA failed%s%s", ota_result, err && *err ? ": " : "", err ? err : "");
                return buf;
        }
        if (jint(d, "rollbacks") > 0) {
                snprintf(buf, size, "ESP_OTA_IMG_INVALID: rolled back %" PRIi64 " time(s), running %s", jint(d, "rollbacks"),
                         jstr(d, "version") ?: "?");
                return buf;
        }
        if (!streq(state, "online")) {
                snprintf(buf, size, "ended the run %s%s%s", state, err && *err ? ": " : "", err ? err : "");
                return buf;
        }
        return NULL;
}

static void xml_escape(FILE *f, const char *s) {
        for (; s && *s; s++)
                switch (*s) {
                case '<': fputs("&lt;", f); break;
                case '>': fputs("&gt;", f); break;
                case '&': fputs("&amp;", f); break;
                case '"': fputs("&quot;", f); break;
                case '\'': fputs("&apos;", f); break;
                default:
                        if ((unsigned char) *s < 0x20 && *s != '\n' && *s != '\t')
                                fputc('?', f); /* not allowed in XML 1.0 */
                        else
                                fputc(*s, f);
                }
}

static int junit_fn(FILE *f, json_object *r) {
        json_object *devices = NULL, *run = NULL, *meta = NULL;
        size_t n = 0, failures = 0;
        char buf[512];

        (void) json_object_object_get_ex(r, "devices", &devices);
        (void) json_object_object_get_ex(r, "run", &run);
        (void) json_object_object_get_ex(r, "espfleet", &meta);
        if (devices && json_object_is_type(devices, json_type_array))
                n = json_object_array_length(devices);
        for (size_t i = 0; i < n; i++)
                if (report_device_failure(json_object_array_get_idx(devices, i), buf, sizeof buf))
                        failures++;
        json_object *dur = NULL;
        double duration = run && json_object_object_get_ex(run, "duration_s", &dur) ? json_object_get_double(dur) : 0;

        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", f);
        fprintf(f, "<testsuites name=\"espfleet\" tests=\"%zu\" failures=\"%zu\" errors=\"0\" time=\"%.3f\">\n", n,
                failures, duration);
        fprintf(f, "  <testsuite name=\"espfleet\" tests=\"%zu\" failures=\"%zu\" errors=\"0\" skipped=\"0\" time=\"%.3f\" timestamp=\"",
                n, failures, duration);
        xml_escape(f, run ? jstr(run, "started") : "");
        fputs("\">\n    <properties>\n", f);
        static const char *const props[] = { "version", "openssl", "libmosquitto", "libcurl" };
        for (size_t i = 0; meta && i < ELEMENTSOF(props); i++) {
                fprintf(f, "      <property name=\"%s\" value=\"", props[i]);
                xml_escape(f, jstr(meta, props[i]));
                fputs("\"/>\n", f);
        }
        fputs("    </properties>\n", f);
        for (size_t i = 0; i < n; i++) {
                json_object *d = json_object_array_get_idx(devices, i), *t = NULL;
                double s = json_object_object_get_ex(d, "last_connect_s", &t) ? json_object_get_double(t) : 0;
                fprintf(f, "    <testcase classname=\"espfleet.worker%" PRIi64 "\" name=\"", jint(d, "worker"));
                xml_escape(f, jstr(d, "id"));
                fprintf(f, "\" time=\"%.6f\">", s);
                const char *why = report_device_failure(d, buf, sizeof buf);
                if (why) {
                        fputs("\n      <failure message=\"", f);
                        xml_escape(f, why);
                        fputs("\" type=\"", f);
                        const char *sp = strchr(why, ':');
                        char type[64];
                        snprintf(type, sizeof type, "%.*s", sp ? (int) (sp - why) : (int) strlen(why), why);
                        xml_escape(f, startswith(why, "ended the run") ? "offline" : type);
                        fputs("\"/>\n    ", f);
                }
                fputs("</testcase>\n", f);
        }
        fputs("  </testsuite>\n</testsuites>\n", f);
        return ferror(f) ? -EIO : 0;
}

int report_write_junit(const char *path, json_object *report) {
        return write_atomic(path, junit_fn, report);
}

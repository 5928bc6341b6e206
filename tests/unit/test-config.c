/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#include "sim/config.h"

static DaemonConfig c;
static char err[1024];

static void setup(void) {
        cr_assert_eq(daemon_config_init(&c), 0);
        err[0] = 0;
}
static void teardown(void) {
        daemon_config_done(&c);
}
TestSuite(config, .init = setup, .fini = teardown);

static int load(const char *text) {
        return daemon_config_load_string(&c, text, "test.conf", err, sizeof err);
}

/* The error must carry "test.conf:LINE: key 'KEY'". */
static void expect_error(const char *text, unsigned line, const char *key, const char *reason_part) {
        char want[256];

        cr_assert_eq(load(text), -EINVAL, "accepted: %s", text);
        snprintf(want, sizeof want, "test.conf:%u: key '%s'", line, key);
        cr_assert(strstr(err, want), "error '%s' lacks '%s'", err, want);
        if (reason_part)
                cr_assert(strstr(err, reason_part), "error '%s' lacks '%s'", err, reason_part);
}

Test(config, defaults) {
        cr_assert_str_eq(c.broker_host, "localhost");
        cr_assert_eq(c.broker_port, 8883);
        cr_assert_eq(c.tls_version_min, TLS_VERSION_1_2);
        cr_assert_str_eq(c.log_topic, "/esp/%s/log");
        cr_assert_eq(c.telemetry_enabled, false);
        cr_assert_not_null(c.bind_addresses);
        cr_assert_null(c.bind_addresses[0]);
        cr_assert_eq(c.workers, 0);
}

Test(config, full_file) {
        cr_assert_eq(load("fleet_dir = \"/tmp/f\";\n"
                          "broker = { host = \"127.0.0.1\"; port = 18883; keepalive = 30;\n"
                          "  bind_addresses = [\"127.0.0.2\", \"127.0.0.3\"]; tls_version_min = \"tlsv1.3\"; };\n"
                          "ramp = { rate = 25; jitter = 0.25; };\n"
                          "reconnect = { backoff_min_ms = 200; backoff_max_ms = 5000; connect_rate_max = 12.5; };\n"
                          "device = { log_topic = \"/esp/log\"; boot_time_ms = 0; };\n"
                          "telemetry = { enabled = true; interval = 5; };\n"
                          "log = { level = \"debug\"; debug_topics = \"sim,mqtt\"; };\n"),
                     0, "%s", err);
        cr_assert_str_eq(c.fleet_dir, "/tmp/f");
        cr_assert_str_eq(c.broker_host, "127.0.0.1");
        cr_assert_eq(c.broker_port, 18883);
        cr_assert_eq(c.keepalive_s, 30);
        cr_assert_str_eq(c.bind_addresses[0], "127.0.0.2");
        cr_assert_str_eq(c.bind_addresses[1], "127.0.0.3");
        cr_assert_null(c.bind_addresses[2]);
        cr_assert_eq(c.tls_version_min, TLS_VERSION_1_3);
        cr_assert_float_eq(c.ramp_rate, 25.0, 1e-9);
        cr_assert_float_eq(c.ramp_jitter, 0.25, 1e-9);
        cr_assert_eq(c.backoff_min_ms, 200);
        cr_assert_float_eq(c.connect_rate_max, 12.5, 1e-9);
        cr_assert_str_eq(c.log_topic, "/esp/log");
        cr_assert_eq(c.boot_time_ms, 0);
        cr_assert(c.telemetry_enabled);
        cr_assert_eq(c.telemetry_interval_s, 5);
        cr_assert_str_eq(c.log_level, "debug");
        /* untouched keys keep their defaults */
        cr_assert_eq(c.summary_interval_s, 30);
}

Test(config, unknown_key) {
        expect_error("broker = {\n  host = \"x\";\n  prot = 1;\n};\n", 3, "broker.prot", "unknown key");
        expect_error("\n\nfleetdir = \"/x\";\n", 3, "fleetdir", "unknown key");
        expect_error("nope = { a = 1; };\n", 1, "nope", "unknown key");
}

Test(config, wrong_types) {
        expect_error("broker = { port = \"8883\"; };", 1, "broker.port", "expected an integer");
        expect_error("\nbroker = { host = 5; };", 2, "broker.host", "expected a string");
        expect_error("telemetry = { enabled = 1; };", 1, "telemetry.enabled", "expected true or false");
        expect_error("ramp = { rate = \"fast\"; };", 1, "ramp.rate", "expected a number");
        expect_error("broker = { bind_addresses = \"127.0.0.1\"; };", 1, "broker.bind_addresses", "list of strings");
        expect_error("broker = { bind_addresses = [1, 2]; };", 1, "broker.bind_addresses", "expected a string");
        expect_error("broker = 1;", 1, "broker", "expected a group");
        expect_error("broker = { port = 1.5; };", 1, "broker.port", "expected an integer");
}

Test(config, out_of_range) {
        expect_error("broker = { port = 0; };", 1, "broker.port", "out of range");
        expect_error("broker = { port = 65536; };", 1, "broker.port", "out of range");
        expect_error("broker = { port = -1; };", 1, "broker.port", "out of range");
        expect_error("ramp = { jitter = 1.5; };", 1, "ramp.jitter", "out of range");
        expect_error("ramp = { rate = 0; };", 1, "ramp.rate", "out of range");
        expect_error("workers = 65;", 1, "workers", "out of range");
        expect_error("device = { default_interval = 0; };", 1, "device.default_interval", "out of range");
        expect_error("broker = { port = 9999999999; };", 1, "broker.port", "out of range");
}

Test(config, shard) {
        cr_assert_str_eq(c.shard, "");
        cr_assert_eq(load("shard = \"1/4\";"), 0, "%s", err);
        cr_assert_str_eq(c.shard, "1/4");
}

Test(config, bad_values) {
        expect_error("broker = { tls_version_min = \"tlsv1.1\"; };", 1, "broker.tls_version_min", "tlsv1.2");
        expect_error("broker = { bind_addresses = [\"127.0.0.1\", \"localhost\"]; };", 1, "broker.bind_addresses",
                     "entry 1");
        expect_error("device = { log_topic = \"esp/log\"; };", 1, "device.log_topic", "start with '/'");
        expect_error("device = { log_topic = \"/esp/%s/%s\"; };", 1, "device.log_topic", "only one %s");
        expect_error("device = { log_topic = \"/esp/%d\"; };", 1, "device.log_topic", "only one %s");
        expect_error("device = { log_topic = \"/esp/#\"; };", 1, "device.log_topic", "wildcard");
        expect_error("ota = { default_url = \"http://x/fw.bin\"; };", 1, "ota.default_url", "https");
        expect_error("log = { level = \"loud\"; };", 1, "log.level", "loud");
        expect_error("log = { debug_topics = \"sim,bogus\"; };", 1, "log.debug_topics", "bogus");
        expect_error("fleet_dir = \"\";", 1, "fleet_dir", "empty");
        expect_error("shard = \"2/2\";", 1, "shard", "I/N");
        expect_error("shard = \"1\";", 1, "shard", "I/N");
        expect_error("reconnect = {\n backoff_min_ms = 5000;\n backoff_max_ms = 100;\n};", 3,
                     "reconnect.backoff_max_ms", "below");
}

Test(config, syntax_error_has_line) {
        cr_assert_eq(load("broker = {\n host = \"x\";\n port = ; };"), -EINVAL);
        cr_assert(strstr(err, "test.conf:3:"), "%s", err);
}

Test(config, bad_file_leaves_config_untouched) {
        cr_assert_eq(load("broker = { port = 1234; };"), 0);
        cr_assert_eq(load("broker = { port = 4321; bogus = 1; };"), -EINVAL);
        cr_assert_eq(c.broker_port, 1234);
}

Test(config, missing_file) {
        cr_assert_eq(daemon_config_load(&c, "/nonexistent/espfleet.conf", err, sizeof err), -EINVAL);
        cr_assert(strstr(err, "/nonexistent/espfleet.conf"), "%s", err);
}

/* Found while triaging a fuzz-config report (libconfig#292), confirmed with
 * the harness: "@include" of a directory made libconfig's scanner call
 * exit(), so a reload would have ended the daemon. Includes are refused. */
Test(config, include_is_refused) {
        char dir[] = "/tmp/test-config.XXXXXX", path[64], text[128];
        FILE *f;

        cr_assert_eq(load("broker = { port = 1234; };"), 0);
        cr_assert_eq(load("fleet_dir = \"/x\";\n  @include \".\"\n"), -EINVAL);
        cr_assert(strstr(err, "test.conf:2: @include is not supported"), "%s", err);
        cr_assert_eq(load("\t@include \"/etc/espfleet/other.conf\"\n"), -EINVAL);
        cr_assert_eq(c.broker_port, 1234);

        /* the same from a file, with the directory that used to kill the process */
        cr_assert_not_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/espfleet.conf", dir);
        snprintf(text, sizeof text, "@include \"%s\"\n", dir);
        f = fopen(path, "we");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        cr_assert_eq(daemon_config_load(&c, path, err, sizeof err), -EINVAL);
        cr_assert(strstr(err, "espfleet.conf:1: @include is not supported"), "%s", err);
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(rmdir(dir), 0);
}

Test(config, file_with_nul_bytes) {
        char path[] = "/tmp/test-config-nul.XXXXXX";
        int fd = mkstemp(path);

        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, "broker = { port = 1; };\0junk", 29), 29);
        close(fd);
        cr_assert_eq(daemon_config_load(&c, path, err, sizeof err), -EINVAL);
        cr_assert(strstr(err, "NUL"), "%s", err);
        cr_assert_eq(unlink(path), 0);
}

Test(config, file_errors_name_the_file_and_line) {
        char path[] = "/tmp/test-config-err.XXXXXX";
        int fd = mkstemp(path);

        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, "\nbroker = { port = 0; };\n", 25), 25);
        close(fd);
        cr_assert_eq(daemon_config_load(&c, path, err, sizeof err), -EINVAL);
        cr_assert(strstr(err, ":2: key 'broker.port'") && strstr(err, path), "%s", err);
        cr_assert_eq(unlink(path), 0);
}

Test(config, shipped_sample_matches_table) {
        /* etc/espfleet.conf is the dump of the table: same text, and it parses
         * to the defaults. */
        char *dump = NULL;
        size_t dump_len = 0;
        FILE *f = open_memstream(&dump, &dump_len);
        cr_assert_eq(daemon_config_dump_sample(f), 0);
        fclose(f);

        FILE *g = fopen(SOURCE_DIR "/etc/espfleet.conf", "re");
        cr_assert_not_null(g);
        char *shipped = calloc(1, 65536);
        size_t n = fread(shipped, 1, 65535, g);
        fclose(g);
        cr_assert_eq(n, dump_len, "etc/espfleet.conf differs from `espfleetd --dump-config`");
        cr_assert_eq(memcmp(shipped, dump, n), 0, "etc/espfleet.conf differs from `espfleetd --dump-config`");

        /* Uncomment every key: the defaults must parse and round-trip. */
        char *un = calloc(1, n + 1);
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                if (shipped[i] == '#' && (i == 0 || shipped[i - 1] == ' ' || shipped[i - 1] == '\n') &&
                    i + 1 < n && shipped[i + 1] != ' ' && shipped[i + 1] != '\n')
                        continue; /* "#key = value;" -> "key = value;" */
                un[o++] = shipped[i];
        }
        cr_assert_eq(load(un), 0, "%s", err);
        DaemonConfig d;
        cr_assert_eq(daemon_config_init(&d), 0);
        const char *changed = NULL;
        cr_assert_not(daemon_config_needs_restart(&d, &c, &changed), "%s", changed);
        cr_assert_eq(d.broker_port, c.broker_port);
        daemon_config_done(&d);
        free(un);
        free(shipped);
        free(dump);
}

Test(config, needs_restart) {
        DaemonConfig d;
        const char *changed = NULL;

        cr_assert_eq(daemon_config_init(&d), 0);
        cr_assert_eq(daemon_config_load_string(&d, "ramp = { rate = 3; }; log = { level = \"debug\"; };", "x", err,
                                               sizeof err), 0);
        cr_assert_not(daemon_config_needs_restart(&c, &d, &changed));
        cr_assert_eq(daemon_config_load_string(&d, "broker = { port = 1; };", "x", err, sizeof err), 0);
        cr_assert(daemon_config_needs_restart(&c, &d, &changed));
        cr_assert_str_eq(changed, "broker.port");
        daemon_config_done(&d);
}

Test(config, workers_auto) {
        /* the default: as many devices per worker as 20,000 fds hold */
        c.devices_per_worker_max = 0;
        c.workers = 0;
        c.ota_max_concurrent = 256;
        cr_assert_eq(daemon_config_workers_for(&c, 1, 20000, err, sizeof err), 1);
        cr_assert_eq(daemon_config_workers_for(&c, 19424, 20000, err, sizeof err), 1);
        cr_assert_eq(daemon_config_workers_for(&c, 19425, 20000, err, sizeof err), 2);
        /* a cap below the budget wins */
        c.devices_per_worker_max = 4500;
        cr_assert_eq(daemon_config_workers_for(&c, 4500, 20000, err, sizeof err), 1);
        cr_assert_eq(daemon_config_workers_for(&c, 4501, 20000, err, sizeof err), 2);
        cr_assert_eq(daemon_config_workers_for(&c, 19500, 20000, err, sizeof err), 5);
        /* a cap above the budget does not */
        c.devices_per_worker_max = 100000;
        cr_assert_eq(daemon_config_workers_for(&c, 30000, 20000, err, sizeof err), 2);
        c.workers = 3;
        cr_assert_eq(daemon_config_workers_for(&c, 100, 20000, err, sizeof err), 3);
        cr_assert_eq(daemon_config_workers_for(&c, 2, 20000, err, sizeof err), 2);
        /* an explicit count that the budget cannot hold is refused, with the way out */
        c.workers = 1;
        cr_assert_eq(daemon_config_workers_for(&c, 30000, 20000, err, sizeof err), -ERANGE);
        cr_assert(strstr(err, "workers = 1") && strstr(err, "at least 2"), "%s", err);
        c.workers = 0;
        cr_assert_eq(daemon_config_workers_for(&c, 10, 64, err, sizeof err), -ERANGE);
}

/* What a worker reads: the supervisor's effective config, written out and
 * parsed back, is the same config (every key, strings with quotes and
 * backslashes, lists, doubles). */
Test(config, format_round_trip) {
        DaemonConfig back;
        char *text = NULL;
        size_t len = 0;
        const char *changed = NULL;

        cr_assert_eq(load("fleet_dir = \"/tmp/a \\\"quoted\\\" \\\\ dir\";\n"
                          "broker = { host = \"127.0.0.1\"; bind_addresses = [\"127.0.0.2\", \"127.0.0.3\"];\n"
                          "  tls_version_min = \"tlsv1.3\"; };\n"
                          "ramp = { rate = 12.5; jitter = 0.1; };\n"
                          "telemetry = { enabled = true; interval = 7; qos = 1; };\n"
                          "ota = { default_url = \"https://h:1/fw.bin\"; };\n"),
                     0, "%s", err);
        FILE *f = open_memstream(&text, &len);
        cr_assert_not_null(f);
        cr_assert_eq(daemon_config_format(&c, f), 0);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(daemon_config_init(&back), 0);
        cr_assert_eq(daemon_config_load_string(&back, text, "effective", err, sizeof err), 0, "%s\n%s", err, text);
        cr_assert_str_eq(back.fleet_dir, "/tmp/a \"quoted\" \\ dir");
        cr_assert_str_eq(back.bind_addresses[1], "127.0.0.3");
        cr_assert_null(back.bind_addresses[2]);
        cr_assert_float_eq(back.ramp_rate, 12.5, 1e-12);
        cr_assert_float_eq(back.ramp_jitter, 0.1, 1e-15);
        cr_assert_eq(back.tls_version_min, TLS_VERSION_1_3);
        cr_assert_eq(back.telemetry_qos, 1);
        cr_assert(!daemon_config_needs_restart(&c, &back, &changed), "'%s' differs", changed);
        daemon_config_done(&back);
        free(text);
}

/* SIGHUP: live keys follow the new file, restart keys stay as they were. */
Test(config, apply_live) {
        DaemonConfig next;

        cr_assert_eq(load("broker = { port = 1000; };\nramp = { rate = 5; };\n"), 0, "%s", err);
        cr_assert_eq(daemon_config_init(&next), 0);
        cr_assert_eq(daemon_config_load_string(&next, "broker = { port = 2000; };\nramp = { rate = 9; };\n"
                                               "log = { level = \"debug\"; };\n", "next", err, sizeof err), 0, "%s", err);
        daemon_config_apply_live(&c, &next);
        cr_assert_eq(c.broker_port, 1000, "a restart key changed");
        cr_assert_float_eq(c.ramp_rate, 9, 1e-12);
        cr_assert_str_eq(c.log_level, "debug");
        daemon_config_done(&next);
}

/* A scenario: nested groups, their checks, and the effective config
 * written out with them. */
Test(config, scenario_keys) {
        cr_assert_eq(load("scenario = { ramp = { profile = \"steps\"; step_size = 50; step_interval = 2.5; };\n"
                          "  hold = 60; churn = { rate = 2; }; storm = { at = 30; every = 120; };\n"
                          "  pass_if = { online_min_percent = 99.5; connack_p99_max_ms = 500; ota_failures_max = 0; }; };\n"
                          "broker = { protocol = \"mqttv5\"; };\n"
                          "telemetry = { rate = 0.5; payload_size = 256; };\n"),
                     0, "%s", err);
        cr_assert_str_eq(c.ramp_profile, "steps");
        cr_assert_eq(c.ramp_step_size, 50);
        cr_assert_float_eq(c.ramp_step_interval_s, 2.5, 1e-12);
        cr_assert_eq(c.scenario_hold_s, 60);
        cr_assert_float_eq(c.churn_rate, 2, 1e-12);
        cr_assert_eq(c.storm_at_s, 30);
        cr_assert_eq(c.storm_every_s, 120);
        cr_assert_float_eq(c.pass_online_min_percent, 99.5, 1e-12);
        cr_assert_float_eq(c.pass_connect_p99_max_ms, -1, 1e-12);
        cr_assert_float_eq(c.pass_ota_failures_max, 0, 1e-12);
        cr_assert_str_eq(c.protocol, "mqttv5");
        expect_error("scenario = { ramp = { profile = \"zigzag\"; }; };\n", 1, "scenario.ramp.profile", "zigzag");
        expect_error("broker = { protocol = \"mqttv4\"; };\n", 1, "broker.protocol", "mqttv311 or mqttv5");
        expect_error("scenario = { pass_if = { online_min_percent = 101; }; };\n", 1, "scenario.pass_if.online_min_percent", NULL);
        expect_error("scenario = { ramp = 5; };\n", 1, "scenario.ramp", "group");

        char *text = NULL;
        size_t len = 0;
        DaemonConfig back;
        FILE *f = open_memstream(&text, &len);
        cr_assert_eq(daemon_config_format(&c, f), 0);
        cr_assert_eq(fclose(f), 0);
        cr_assert_eq(daemon_config_init(&back), 0);
        cr_assert_eq(daemon_config_load_string(&back, text, "effective", err, sizeof err), 0, "%s\n%s", err, text);
        cr_assert_str_eq(back.ramp_profile, "steps");
        cr_assert_float_eq(back.pass_online_min_percent, 99.5, 1e-12);
        daemon_config_done(&back);
        free(text);
}

Test(config, broker_endpoint) {
        char host[64];
        unsigned port;

        cr_assert_eq(broker_endpoint_parse("mqtt-a", 8883, host, sizeof host, &port), 0);
        cr_assert_str_eq(host, "mqtt-a");
        cr_assert_eq(port, 8883);
        cr_assert_eq(broker_endpoint_parse("mqtt-b.example.net:8884", 8883, host, sizeof host, &port), 0);
        cr_assert_str_eq(host, "mqtt-b.example.net");
        cr_assert_eq(port, 8884);
        cr_assert_eq(broker_endpoint_parse("127.0.0.2:1", 8883, host, sizeof host, &port), 0);
        cr_assert_str_eq(host, "127.0.0.2");
        cr_assert_eq(port, 1);
        /* IPv6: bracketed with a port, bare without */
        cr_assert_eq(broker_endpoint_parse("[::1]:9000", 8883, host, sizeof host, &port), 0);
        cr_assert_str_eq(host, "::1");
        cr_assert_eq(port, 9000);
        cr_assert_eq(broker_endpoint_parse("[fd00::2]", 1883, host, sizeof host, &port), 0);
        cr_assert_str_eq(host, "fd00::2");
        cr_assert_eq(port, 1883);
        cr_assert_eq(broker_endpoint_parse("fd00::2", 1883, host, sizeof host, &port), 0);
        cr_assert_str_eq(host, "fd00::2");
        cr_assert_eq(port, 1883);

        cr_assert_eq(broker_endpoint_parse("a:0", 8883, host, sizeof host, &port), -ERANGE);
        cr_assert_eq(broker_endpoint_parse("a:65536", 8883, host, sizeof host, &port), -ERANGE);
        cr_assert_eq(broker_endpoint_parse("a:x", 8883, host, sizeof host, &port), -ERANGE);
        cr_assert_eq(broker_endpoint_parse("a:", 8883, host, sizeof host, &port), -ERANGE);
        cr_assert_eq(broker_endpoint_parse("", 8883, host, sizeof host, &port), -EINVAL);
        cr_assert_eq(broker_endpoint_parse(":8883", 8883, host, sizeof host, &port), -EINVAL);
        cr_assert_eq(broker_endpoint_parse("[]:1", 8883, host, sizeof host, &port), -EINVAL);
        cr_assert_eq(broker_endpoint_parse("[::1", 8883, host, sizeof host, &port), -EINVAL);
        cr_assert_eq(broker_endpoint_parse("[::1]x", 8883, host, sizeof host, &port), -EINVAL);
        cr_assert_eq(broker_endpoint_parse("a b:1", 8883, host, sizeof host, &port), -EINVAL);
        cr_assert_eq(broker_endpoint_parse("a/b", 8883, host, sizeof host, &port), -EINVAL);
        /* a host that does not fit is refused, not cut */
        cr_assert_eq(broker_endpoint_parse("0123456789012345678901234567890123456789012345678901234567890123",
                                           8883, host, sizeof host, &port), -EINVAL);
}

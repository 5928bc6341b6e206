/* SPDX-License-Identifier: MIT */
/* One device's OTA session end to end: sd-event, curl multi, a real
 * `openssl s_server -WWW` (and nginx for Range/resume), the writer and the
 * bootloader. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "basic/fileio.h"
#include "ota-fixture.h"
#include "ota/ota-session.h"

static Dev dev;
static BootResult running;
static char srv[] = "/tmp/test-ota-session.XXXXXX";
static pid_t server_pid = -1;
static int port;

static int free_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM, 0), p;

        cr_assert(fd >= 0);
        cr_assert(bind(fd, (struct sockaddr *) &a, sizeof a) == 0);
        cr_assert(getsockname(fd, (struct sockaddr *) &a, &l) == 0);
        p = ntohs(a.sin_port);
        close(fd);
        return p;
}

static bool port_open(int p) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(p) };
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        bool ok = connect(fd, (struct sockaddr *) &a, sizeof a) == 0;
        close(fd);
        return ok;
}

static void setup(void) {
        char cmd[2048], path[256];

        dev_open(&dev, true);
        put_image(&dev, 0, &(ImageSpec) { .version = "1.0.0", .key = key_a });
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, NULL, &running), 0);

        cr_assert_not_null(mkdtemp(srv));
        snprintf(cmd, sizeof cmd,
                 "(cd %s && mkdir www && "
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt "
                 "  -subj /CN=test-ca -days 2 && "
                 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr "
                 "  -subj /CN=localhost && "
                 "printf 'subjectAltName=DNS:localhost\\n' > ext && "
                 "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext"
                 ") >/dev/null 2>&1",
                 srv);
        cr_assert_eq(system(cmd), 0, "openssl CLI failed to make the test PKI");
        snprintf(path, sizeof path, "%s/www", srv);
        port = free_port();
}

static void start_s_server(void) {
        server_pid = fork();
        cr_assert(server_pid >= 0);
        if (server_pid == 0) {
                char accept[64], cert[256], key[256], www[256];
                int null = open("/dev/null", O_RDWR);

                snprintf(accept, sizeof accept, "127.0.0.1:%d", port);
                snprintf(cert, sizeof cert, "%s/srv.crt", srv);
                snprintf(key, sizeof key, "%s/srv.key", srv);
                snprintf(www, sizeof www, "%s/www", srv);
                if (chdir(www) < 0)
                        _exit(127);
                dup2(null, 1);
                dup2(null, 2);
                execlp("openssl", "openssl", "s_server", "-WWW", "-quiet", "-accept", accept, "-cert", cert, "-key", key,
                       NULL);
                _exit(127);
        }
        for (int i = 0; i < 100 && !port_open(port); i++)
                usleep(50000);
        cr_assert(port_open(port), "s_server did not start");
}

/* nginx over TLS; every response stalls after `stall_after` bytes, so a
 * download only completes by resuming with Range. */
static void start_nginx(unsigned stall_after) {
        char conf[2048], path[256];

        snprintf(conf, sizeof conf,
                 "daemon off; master_process off; worker_processes 1; pid %1$s/nginx.pid;\n"
                 "error_log %1$s/nginx-error.log;\n"
                 "events { worker_connections 64; }\n"
                 "http {\n access_log off;\n client_body_temp_path %1$s/tmp; proxy_temp_path %1$s/tmp;\n"
                 " fastcgi_temp_path %1$s/tmp; uwsgi_temp_path %1$s/tmp; scgi_temp_path %1$s/tmp;\n"
                 " server {\n  listen 127.0.0.1:%2$d ssl;\n  ssl_certificate %1$s/srv.crt;\n"
                 "  ssl_certificate_key %1$s/srv.key;\n  root %1$s/www;\n"
                 "  limit_rate_after %3$u; limit_rate 1;\n }\n}\n",
                 srv, port, stall_after);
        snprintf(path, sizeof path, "%s/nginx.conf", srv);
        cr_assert_eq(write_file_atomic(path, conf, strlen(conf), 0600), 0);
        snprintf(path, sizeof path, "%s/tmp", srv);
        (void) mkdir(path, 0700);

        server_pid = fork();
        cr_assert(server_pid >= 0);
        if (server_pid == 0) {
                char c[256], prefix[256];
                int null = open("/dev/null", O_RDWR);

                snprintf(c, sizeof c, "%s/nginx.conf", srv);
                snprintf(prefix, sizeof prefix, "%s/", srv);
                dup2(null, 1);
                dup2(null, 2);
                execlp("nginx", "nginx", "-p", prefix, "-c", c, NULL);
                _exit(127);
        }
        for (int i = 0; i < 100 && !port_open(port); i++)
                usleep(50000);
        cr_assert(port_open(port), "nginx did not start");
}

static void teardown(void) {
        char cmd[300];

        if (server_pid > 0) {
                kill(server_pid, SIGTERM);
                waitpid(server_pid, NULL, 0);
        }
        snprintf(cmd, sizeof cmd, "rm -rf %s", srv);
        (void) system(cmd);
        boot_result_done(&running);
        dev_close(&dev);
}

TestSuite(ota_session, .init = setup, .fini = teardown, .timeout = 120);

static void serve(const char *name, const ImageSpec *spec) {
        _cleanup_free_ uint8_t *img = NULL;
        char path[256];
        size_t len;

        make_image(spec, &img, &len);
        snprintf(path, sizeof path, "%s/www/%s", srv, name);
        cr_assert_eq(write_file_atomic(path, img, len, 0644), 0);
}

typedef struct Run {
        bool done;
        OtaOutcome outcome;
        char message[320];
        char version[33];
        OtaEvent events[64];
        size_t n_events;
        unsigned write_flash_events;
        char log[8192];
} Run;

static void on_log(OtaSession *s, char level, const char *tag, const char *message, void *userdata) {
        Run *r = userdata;
        size_t n = strlen(r->log);

        snprintf(r->log + n, sizeof r->log - n, "%c %s: %s\n", level, tag, message);
}

static void on_event(OtaSession *s, OtaEvent e, int64_t arg, void *userdata) {
        Run *r = userdata;

        if (e == OTA_EVENT_WRITE_FLASH) {
                r->write_flash_events++;
                return;
        }
        if (r->n_events < ELEMENTSOF(r->events))
                r->events[r->n_events++] = e;
}

static void on_outcome(OtaSession *s, const OtaOutcome *o, void *userdata) {
        Run *r = userdata;

        cr_assert(!r->done, "outcome reported twice");
        r->done = true;
        r->outcome = *o;
        snprintf(r->message, sizeof r->message, "%s", o->message);
        snprintf(r->version, sizeof r->version, "%s", strna(o->new_version));
        r->outcome.message = r->message;
        r->outcome.new_version = r->version;
}

static void run_ota(const char *file, OtaSessionOptions o, Run *r) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        HttpClient *http = NULL;
        OtaSession *s = NULL;
        char url[256], ca[256];

        snprintf(url, sizeof url, "https://localhost:%d/%s", port, file);
        snprintf(ca, sizeof ca, "%s/ca.crt", srv);
        o.url = url;
        o.ca_file = ca;
        o.chip_id = ESP_CHIP_ID_ESP32C3;
        o.device_id = "esp-test01";

        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(http_client_new(e, &http), 0);
        cr_assert_eq(ota_session_new(e, http, dev.flash, dev.table, dev.efuse, &running.app, &o,
                                     &(OtaSessionCallbacks) { .log = on_log, .event = on_event, .outcome = on_outcome },
                                     r, &s), 0);
        cr_assert_eq(ota_session_state(s), OTA_SESSION_IDLE);
        cr_assert_eq(ota_session_start(s), 0);
        cr_assert_eq(ota_session_start(s), -EBUSY);
        cr_assert(!r->done, "the outcome never fires inside start()");
        for (int i = 0; !r->done && i < 100000; i++)
                cr_assert_geq(sd_event_run(e, 5 * 1000000ULL), 0);
        cr_assert(r->done, "the OTA did not finish");
        cr_assert_eq(ota_session_state(s), r->outcome.ok ? OTA_SESSION_DONE : OTA_SESSION_FAILED);
        ota_session_free(s);
        http_client_free(http);
}

Test(ota_session, happy_path_with_s_server) {
        static const OtaEvent expected[] = {
                OTA_EVENT_START, OTA_EVENT_CONNECTED, OTA_EVENT_GET_IMG_DESC, OTA_EVENT_VERIFY_CHIP_ID,
                OTA_EVENT_UPDATE_BOOT_PARTITION, OTA_EVENT_FINISH,
        };
        Run r = {};

        start_s_server();
        serve("fw.bin", &(ImageSpec) { .version = "1.1.0", .key = key_a, .size = 300000 });
        run_ota("fw.bin", (OtaSessionOptions) {}, &r);
        cr_assert(r.outcome.ok, "%s: %s\n%s", esp_err_to_name(r.outcome.error), r.message, r.log);
        cr_assert_str_eq(r.version, "1.1.0");
        cr_assert_eq(r.outcome.new_slot, 1);
        cr_assert_eq(r.outcome.attempts, 1);
        cr_assert_eq(r.n_events, ELEMENTSOF(expected));
        for (size_t i = 0; i < ELEMENTSOF(expected); i++)
                cr_assert_eq(r.events[i], expected[i], "event %zu: %s", i, ota_event_to_string(r.events[i]));
        cr_assert_not_null(strstr(r.log, "New firmware version: 1.1.0"), "%s", r.log);
        cr_assert_not_null(strstr(r.log, "upgrade successful"), "%s", r.log);

        boot_result_done(&running);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, NULL, &running), 0);
        cr_assert_eq(running.app.slot, 1);
        cr_assert_str_eq(running.app.desc.version, "1.1.0");
}

Test(ota_session, same_version_refused) {
        Run r = {};

        start_s_server();
        serve("fw.bin", &(ImageSpec) { .version = "1.0.0", .key = key_a });
        run_ota("fw.bin", (OtaSessionOptions) {}, &r);
        cr_assert(!r.outcome.ok);
        cr_assert_eq(r.outcome.error, -ESP_FAIL_CODE, "%s", esp_err_to_name(r.outcome.error));
        cr_assert_not_null(strstr(r.message, "same"), "%s", r.message);
        cr_assert_eq(r.outcome.attempts, 1, "an image refusal is not retried");
        cr_assert_eq(r.events[r.n_events - 1], OTA_EVENT_ABORT);
        cr_assert_not_null(strstr(r.log, "E esp_https_ota"), "%s", r.log);
}

Test(ota_session, missing_file_on_s_server) {
        /* s_server -WWW answers 200 with an error text: not an image */
        Run r = {};

        start_s_server();
        run_ota("nope.bin", (OtaSessionOptions) {}, &r);
        cr_assert_eq(r.outcome.error, -ESP_ERR_OTA_VALIDATE_FAILED, "%s: %s", esp_err_to_name(r.outcome.error),
                     r.message);
}

Test(ota_session, server_down_retries_then_fails) {
        Run r = {};

        run_ota("fw.bin", (OtaSessionOptions) { .max_retries = 2, .retry_base_usec = 10000 }, &r);
        cr_assert(!r.outcome.ok);
        cr_assert_eq(r.outcome.error, -ESP_ERR_HTTP_CONNECT, "%s", esp_err_to_name(r.outcome.error));
        cr_assert_eq(r.outcome.attempts, 3);
        cr_assert_not_null(strstr(r.log, "retry 2/2"), "%s", r.log);
}

Test(ota_session, resumes_with_range_on_nginx) {
        Run r = {};

        start_nginx(60000);
        serve("fw.bin", &(ImageSpec) { .version = "2.0.0", .key = key_a, .size = 150000 });
        run_ota("fw.bin",
                (OtaSessionOptions) { .max_retries = 5, .retry_base_usec = 10000, .low_speed_limit = 1000,
                                      .low_speed_time_s = 1 },
                &r);
        cr_assert(r.outcome.ok, "%s: %s\n%s", esp_err_to_name(r.outcome.error), r.message, r.log);
        cr_assert_geq(r.outcome.attempts, 3, "150 KB at 60 KB per response needs three requests");
        cr_assert_not_null(strstr(r.log, "Resuming the download at byte"), "%s", r.log);
        cr_assert_not_null(strstr(r.log, "(100 %)"), "%s", r.log);

        boot_result_done(&running);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, NULL, &running), 0);
        cr_assert_eq(running.app.slot, 1);
        cr_assert_str_eq(running.app.desc.version, "2.0.0");
}

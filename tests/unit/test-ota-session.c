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

#include "test-net.h"
#include "basic/fileio.h"
#include "basic/parse-util.h"
#include "ota-fixture.h"
#include "ota/ota-session.h"

static Dev dev;
static BootResult running;
static char srv[] = "/tmp/test-ota-session.XXXXXX";
static pid_t server_pid = -1;
static int port;

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
        port = test_free_port();
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
        for (int i = 0; i < 100 && !test_port_open(port); i++)
                usleep(50000);
        cr_assert(test_port_open(port), "s_server did not start");
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
        for (int i = 0; i < 100 && !test_port_open(port); i++)
                usleep(50000);
        cr_assert(test_port_open(port), "nginx did not start");
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

Test(ota_session, not_found_is_final) {
        /* a 4xx meets the same answer on the next request: not retried
         * (README "OTA server faults") */
        Run r = {};

        start_nginx(1000000);
        run_ota("nope.bin", (OtaSessionOptions) { .max_retries = 2, .retry_base_usec = 10000 }, &r);
        cr_assert_eq(r.outcome.error, -ESP_FAIL_CODE, "%s: %s", esp_err_to_name(r.outcome.error), r.message);
        cr_assert_str_eq(r.message, "HTTP status 404");
        cr_assert_eq(r.outcome.attempts, 1, "%s", r.log);
        cr_assert_null(strstr(r.log, "retry"), "%s", r.log);
        cr_assert_eq(r.events[r.n_events - 1], OTA_EVENT_ABORT);
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

/* ---- end of body, progress (esp-formats.md §8) ------------------------- */

static bool slot_erased_head(unsigned slot) {
        FlashRegion r = slot_region(&dev, slot);
        uint8_t b[16];

        cr_assert_eq(flash_region_read(&r, 0, b, sizeof b), 0);
        for (size_t i = 0; i < sizeof b; i++)
                if (b[i] != 0xFF)
                        return false;
        return true;
}

static void expect_still_running_1_0_0(void) {
        boot_result_done(&running);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, NULL, &running), 0);
        cr_assert_eq(running.app.slot, 0);
        cr_assert_str_eq(running.app.desc.version, "1.0.0");
}

static size_t count_str(const char *hay, const char *needle) {
        size_t n = 0;

        for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

Test(ota_session, unsigned_image_on_s_server_fails_validation_once) {
        /* HTTP/1.0 without Content-Length: the body ends at EOF after the
         * image's hash; that is the whole image, not a cut download */
        Run r = {};

        start_s_server();
        serve("unsigned.bin", &(ImageSpec) { .version = "1.1.0", .size = 100000 });
        run_ota("unsigned.bin", (OtaSessionOptions) { .max_retries = 2, .retry_base_usec = 10000 }, &r);
        cr_assert_eq(r.outcome.error, -ESP_ERR_OTA_VALIDATE_FAILED, "%s: %s\n%s", esp_err_to_name(r.outcome.error),
                     r.message, r.log);
        cr_assert_not_null(strstr(r.message, "not signed"), "%s", r.message);
        cr_assert_eq(r.outcome.attempts, 1, "a complete body is not retried\n%s", r.log);
        cr_assert_null(strstr(r.log, "Resuming"), "%s", r.log);
        cr_assert(slot_erased_head(1), "the refused image must not stay bootable");
        expect_still_running_1_0_0();
}

Test(ota_session, truncated_file_on_s_server_is_verified_not_retried) {
        /* a clean EOF inside a segment: verified as it is → the image error */
        _cleanup_free_ uint8_t *img = NULL;
        char path[256];
        size_t len;
        Run r = {};

        start_s_server();
        make_image(&(ImageSpec) { .version = "1.1.0", .key = key_a, .size = 100000 }, &img, &len);
        snprintf(path, sizeof path, "%s/www/short.bin", srv);
        cr_assert_eq(write_file_atomic(path, img, 50000, 0644), 0);
        run_ota("short.bin", (OtaSessionOptions) { .max_retries = 2, .retry_base_usec = 10000 }, &r);
        cr_assert_eq(r.outcome.error, -ESP_ERR_OTA_VALIDATE_FAILED, "%s: %s\n%s", esp_err_to_name(r.outcome.error),
                     r.message, r.log);
        cr_assert_not_null(strstr(r.message, "truncated image"), "%s", r.message);
        cr_assert_eq(r.outcome.attempts, 1, "%s", r.log);
        cr_assert_eq(r.outcome.bytes, 50000);
        /* the failure says how far the download got */
        cr_assert_not_null(strstr(r.log, "upgrade failed: ESP_ERR_OTA_VALIDATE_FAILED: "), "%s", r.log);
        cr_assert_not_null(strstr(r.log, " (50000 bytes had arrived)"), "%s", r.log);
        cr_assert(slot_erased_head(1));
        expect_still_running_1_0_0();
}

Test(ota_session, progress_without_content_length_ends_at_100) {
        _cleanup_free_ uint8_t *img = NULL;
        char path[256], line[128];
        const char *last;
        size_t len;
        Run r = {};

        start_s_server();
        make_image(&(ImageSpec) { .version = "1.1.0", .key = key_a, .size = 200000 }, &img, &len);
        snprintf(path, sizeof path, "%s/www/fw.bin", srv);
        cr_assert_eq(write_file_atomic(path, img, len, 0644), 0);
        run_ota("fw.bin", (OtaSessionOptions) {}, &r);
        cr_assert(r.outcome.ok, "%s: %s\n%s", esp_err_to_name(r.outcome.error), r.message, r.log);
        cr_assert_eq(count_str(r.log, "(100 %)"), 1, "%s", r.log);
        /* without a Content-Length the total is an estimate: the lines on the
         * way say what was written, and only the last one a share of the total */
        cr_assert_geq(count_str(r.log, "Image bytes written: "), 2, "%s", r.log);
        cr_assert_eq(count_str(r.log, " %)"), 1, "%s", r.log);
        cr_assert_geq(r.write_flash_events, 1);
        /* the 100 % line counts every byte, and comes before the validation */
        snprintf(line, sizeof line, "Image bytes written: %zu of %zu (100 %%)", len, len);
        last = strstr(r.log, line);
        cr_assert_not_null(last, "no '%s' in\n%s", line, r.log);
        cr_assert_not_null(strstr(last, "Image validated"), "%s", r.log);
}

/* A scripted plain-HTTP server (a forked child): connection i is answered as
 * script[i] says, so that the end of a body can be controlled exactly. The
 * request lines and Range headers it saw go to <srv>/requests. */
typedef struct FakeReply {
        bool content_length;     /* send Content-Length (HTTP/1.1), else HTTP/1.0 until EOF */
        bool honour_range;       /* answer "Range: bytes=N-" with 206 */
        size_t cut_after;        /* stop after this many body bytes (0 = the whole rest) */
        bool reset;              /* end with a TCP RST instead of a FIN */
        unsigned stall_ms;       /* wait this long before ending the connection */
        bool alt;                /* serve the other image (fake_alt) */
} FakeReply;

static const uint8_t *fake_alt;
static size_t fake_alt_len;

static void fake_serve_one(int fd, const uint8_t *img, size_t len, const FakeReply *f, FILE *log) {
        char req[4096] = "", head[512];
        size_t n = 0, start = 0, body;
        const char *range;
        ssize_t k;

        if (f->alt) {
                img = fake_alt;
                len = fake_alt_len;
        }
        while (n < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
                k = read(fd, req + n, sizeof req - 1 - n);
                if (k <= 0)
                        return;
                n += (size_t) k;
                req[n] = 0;
        }
        range = strcasestr(req, "\r\nRange: bytes=");
        if (range) {
                uint64_t v;
                char num[32];
                size_t i = 0;

                range += strlen("\r\nRange: bytes=");
                while (i < sizeof num - 1 && range[i] >= '0' && range[i] <= '9') {
                        num[i] = range[i];
                        i++;
                }
                num[i] = 0;
                fprintf(log, "range %s\n", num);
                if (f->honour_range && safe_atou64(num, 10, &v) >= 0 && v < len)
                        start = (size_t) v;
        } else
                fprintf(log, "full\n");
        fflush(log);

        if (start > 0)
                snprintf(head, sizeof head,
                         "HTTP/1.1 206 Partial Content\r\nContent-Length: %zu\r\nContent-Range: bytes %zu-%zu/%zu\r\n"
                         "Connection: close\r\n\r\n", len - start, start, len - 1, len);
        else if (f->content_length)
                snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", len);
        else
                snprintf(head, sizeof head, "HTTP/1.0 200 ok\r\nContent-type: application/octet-stream\r\n\r\n");
        body = len - start;
        if (f->cut_after > 0)
                body = MIN(body, f->cut_after);
        if (write(fd, head, strlen(head)) < 0)
                return;
        for (size_t off = 0; off < body; off += (size_t) k) {
                k = write(fd, img + start + off, body - off);
                if (k <= 0)
                        return;
        }
        if (f->stall_ms > 0)
                usleep(f->stall_ms * 1000u);
        if (f->reset) {
                /* give the client the bytes, then reset instead of closing */
                usleep(200000);
                (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger) { .l_onoff = 1, .l_linger = 0 },
                                  sizeof(struct linger));
        } else
                shutdown(fd, SHUT_WR);
}

static void start_fake_http(const uint8_t *img, size_t len, const FakeReply *script, size_t n) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                 .sin_port = htons(port) };
        int lfd = socket(AF_INET, SOCK_STREAM, 0);

        cr_assert(lfd >= 0);
        (void) setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &(int) { 1 }, sizeof(int));
        cr_assert_eq(bind(lfd, (struct sockaddr *) &a, sizeof a), 0);
        cr_assert_eq(listen(lfd, 8), 0);
        server_pid = fork();
        cr_assert(server_pid >= 0);
        if (server_pid == 0) {
                char path[256];
                FILE *log;

                snprintf(path, sizeof path, "%s/requests", srv);
                log = fopen(path, "we");
                if (!log)
                        _exit(1);
                for (size_t i = 0; i < n; i++) {
                        int fd = accept(lfd, NULL, NULL);
                        if (fd < 0)
                                _exit(1);
                        fake_serve_one(fd, img, len, &script[i], log);
                        close(fd);
                }
                fclose(log);
                _exit(0);
        }
        close(lfd);
}

static void run_plain(const char *file, OtaSessionOptions o, Run *r) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        HttpClient *http = NULL;
        OtaSession *s = NULL;
        char url[256];

        snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", port, file);
        o.url = url;
        o.allow_plain_http = true;
        o.chip_id = ESP_CHIP_ID_ESP32C3;
        o.device_id = "esp-test01";
        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(http_client_new(e, &http), 0);
        cr_assert_eq(ota_session_new(e, http, dev.flash, dev.table, dev.efuse, &running.app, &o,
                                     &(OtaSessionCallbacks) { .log = on_log, .event = on_event, .outcome = on_outcome },
                                     r, &s), 0);
        cr_assert_eq(ota_session_start(s), 0);
        for (int i = 0; !r->done && i < 100000; i++)
                cr_assert_geq(sd_event_run(e, 5 * 1000000ULL), 0);
        cr_assert(r->done, "the OTA did not finish");
        ota_session_free(s);
        http_client_free(http);
}

static char *read_requests(void) {
        char path[256];
        char *text = NULL;

        snprintf(path, sizeof path, "%s/requests", srv);
        cr_assert_eq(read_full_file(path, 65536, (uint8_t **) &text, NULL), 0);
        return text;
}

Test(ota_session, content_length_cut_resumes_with_range) {
        _cleanup_free_ uint8_t *img = NULL;
        _cleanup_free_ char *reqs = NULL;
        size_t len;
        Run r = {};

        make_image(&(ImageSpec) { .version = "1.2.0", .key = key_a, .size = 120000 }, &img, &len);
        start_fake_http(img, len,
                        (const FakeReply[]) {
                                { .content_length = true, .cut_after = 50000 },
                                { .content_length = true, .honour_range = true },
                        },
                        2);
        run_plain("fw.bin", (OtaSessionOptions) { .max_retries = 2, .retry_base_usec = 10000 }, &r);
        cr_assert(r.outcome.ok, "%s: %s\n%s", esp_err_to_name(r.outcome.error), r.message, r.log);
        cr_assert_eq(r.outcome.attempts, 2, "%s", r.log);
        cr_assert_not_null(strstr(r.log, "ESP_ERR_HTTP_CONNECTION_CLOSED"), "%s", r.log);
        cr_assert_not_null(strstr(r.log, "Resuming the download at byte"), "%s", r.log);
        cr_assert_eq(count_str(r.log, "(100 %)"), 1, "%s", r.log);
        reqs = read_requests();
        cr_assert_not_null(strstr(reqs, "full\nrange "), "%s", reqs);
        cr_assert_lt(r.outcome.bytes, 2 * len, "resumed, not restarted");

        boot_result_done(&running);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, NULL, &running), 0);
        cr_assert_eq(running.app.slot, 1);
        cr_assert_str_eq(running.app.desc.version, "1.2.0");
}

Test(ota_session, no_length_reset_is_a_cut_and_is_retried) {
        /* HTTP/1.0 without a length, the connection reset mid-body: an error,
         * so a cut; the server does not do Range, so the retry starts over */
        _cleanup_free_ uint8_t *img = NULL;
        size_t len;
        Run r = {};

        make_image(&(ImageSpec) { .version = "1.2.0", .key = key_a, .size = 120000 }, &img, &len);
        start_fake_http(img, len,
                        (const FakeReply[]) {
                                { .cut_after = 50000, .reset = true },
                                {},
                                {},
                        },
                        3);
        run_plain("fw.bin", (OtaSessionOptions) { .max_retries = 2, .retry_base_usec = 10000 }, &r);
        cr_assert(r.outcome.ok, "%s: %s\n%s", esp_err_to_name(r.outcome.error), r.message, r.log);
        cr_assert_geq(r.outcome.attempts, 2, "%s", r.log);
        cr_assert_eq(count_str(r.log, "(100 %)"), 1, "%s", r.log);
}

static bool slot_blank_head(unsigned slot) {
        return slot_erased_head(slot);
}

Test(ota_session, free_mid_download_cancels_and_leaves_the_slot_unbootable) {
        /* what the device does when it restarts, or the daemon stops, while
         * a download runs */
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_free_ uint8_t *img = NULL;
        HttpClient *http = NULL;
        OtaSession *s = NULL;
        char url[256];
        size_t len;
        Run r = {};

        make_image(&(ImageSpec) { .version = "1.2.0", .key = key_a, .size = 120000 }, &img, &len);
        start_fake_http(img, len, (const FakeReply[]) { { .content_length = true, .cut_after = 40000, .stall_ms = 5000 } },
                        1);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/fw.bin", port);
        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(http_client_new(e, &http), 0);
        cr_assert_eq(ota_session_new(e, http, dev.flash, dev.table, dev.efuse, &running.app,
                                     &(OtaSessionOptions) { .url = url, .allow_plain_http = true,
                                                            .chip_id = ESP_CHIP_ID_ESP32C3 },
                                     &(OtaSessionCallbacks) { .log = on_log, .event = on_event, .outcome = on_outcome },
                                     &r, &s), 0);
        cr_assert_eq(ota_session_start(s), 0);
        for (int i = 0; !r.done && r.outcome.bytes == 0 && i < 10000; i++) {
                cr_assert_geq(sd_event_run(e, 1000000ULL), 0);
                if (strstr(r.log, "(30 %)"))
                        break;
        }
        cr_assert_not_null(strstr(r.log, "(30 %)"), "%s", r.log);
        cr_assert_eq(ota_session_state(s), OTA_SESSION_DOWNLOADING);
        cr_assert(!slot_blank_head(1), "the new header is on flash");
        cr_assert_eq(http_client_active(http), 1);

        s = ota_session_free(s);
        cr_assert(!r.done, "no outcome after free");
        cr_assert_eq(http_client_active(http), 0);
        cr_assert(slot_blank_head(1), "a partial image must not stay bootable");
        /* the loop goes on without the session */
        for (int i = 0; i < 5; i++)
                cr_assert_geq(sd_event_run(e, 10000ULL), 0);
        cr_assert(!r.done);
        http_client_free(http);
        expect_still_running_1_0_0();
}

Test(ota_session, giving_up_leaves_the_slot_unbootable) {
        _cleanup_free_ uint8_t *img = NULL;
        size_t len;
        Run r = {};

        make_image(&(ImageSpec) { .version = "1.2.0", .key = key_a, .size = 120000 }, &img, &len);
        /* cut; then no Range support (restart from 0), then the server is gone */
        start_fake_http(img, len,
                        (const FakeReply[]) {
                                { .content_length = true, .cut_after = 50000 },
                                { .content_length = true, .cut_after = 10 },
                        },
                        2);
        run_plain("fw.bin", (OtaSessionOptions) { .max_retries = 1, .retry_base_usec = 10000 }, &r);
        cr_assert(!r.outcome.ok);
        /* the fake server exits after its two replies: a third connection is
         * refused, or, when it raced into the listen backlog, reset */
        cr_assert(r.outcome.error == -ESP_ERR_HTTP_CONNECT || r.outcome.error == -ESP_ERR_HTTP_FETCH_HEADER,
                  "%s: %s\n%s", esp_err_to_name(r.outcome.error), r.message, r.log);
        cr_assert_not_null(strstr(r.log, "restarting from byte 0"), "%s", r.log);
        cr_assert(slot_blank_head(1));
        expect_still_running_1_0_0();
}

Test(ota_session, resume_against_a_changed_file_restarts_from_zero) {
        _cleanup_free_ uint8_t *img = NULL, *img2 = NULL;
        _cleanup_free_ char *reqs = NULL;
        size_t len, len2;
        Run r = {};

        make_image(&(ImageSpec) { .version = "1.2.0", .key = key_a, .size = 120000 }, &img, &len);
        make_image(&(ImageSpec) { .version = "1.3.0", .key = key_a, .size = 90000 }, &img2, &len2);
        cr_assert_neq(len, len2);
        fake_alt = img2;
        fake_alt_len = len2;
        start_fake_http(img, len,
                        (const FakeReply[]) {
                                { .content_length = true, .cut_after = 50000 },
                                { .content_length = true, .honour_range = true, .alt = true },
                                { .content_length = true, .honour_range = true, .alt = true },
                        },
                        3);
        run_plain("fw.bin", (OtaSessionOptions) { .max_retries = 2, .retry_base_usec = 10000 }, &r);
        cr_assert(r.outcome.ok, "%s: %s\n%s", esp_err_to_name(r.outcome.error), r.message, r.log);
        cr_assert_str_eq(r.version, "1.3.0");
        cr_assert_eq(r.outcome.attempts, 3, "%s", r.log);
        cr_assert_not_null(strstr(r.log, "the file on the server changed"), "%s", r.log);
        reqs = read_requests();
        cr_assert_not_null(strstr(reqs, "full\nrange 50000\nfull\n"), "%s", reqs);

        boot_result_done(&running);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, NULL, &running), 0);
        cr_assert_eq(running.app.slot, 1);
        cr_assert_str_eq(running.app.desc.version, "1.3.0");
}

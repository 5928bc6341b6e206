/* SPDX-License-Identifier: MIT */
/* The sd-event + curl multi HTTPS client against a real `openssl s_server
 * -WWW` on a free loopback port, with a throwaway CA made by the openssl CLI. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "test-net.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "transport/http.h"

static char dir[] = "/tmp/test-http.XXXXXX";
static pid_t server_pid = -1;
static int port;
static uint8_t *payload;
static size_t payload_size = 300000;

static int run(const char *cmd) {
        int r = system(cmd);
        return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static void setup(void) {
        char cmd[2048], path[256];

        cr_assert_not_null(mkdtemp(dir));
        /* CA, and a server cert valid for the name "localhost" only */
        snprintf(cmd, sizeof cmd,
                 "(cd %s && "
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt "
                 "  -subj /CN=test-ca -days 2 && "
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.crt "
                 "  -subj /CN=other-ca -days 2 && "
                 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr "
                 "  -subj /CN=localhost && "
                 "printf 'subjectAltName=DNS:localhost\\n' > ext && "
                 "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext"
                 ") >/dev/null 2>&1",
                 dir);
        cr_assert_eq(run(cmd), 0, "openssl CLI failed to make the test PKI");

        payload = malloc(payload_size);
        for (size_t i = 0; i < payload_size; i++)
                payload[i] = (uint8_t) (i * 7 + (i >> 8));
        snprintf(path, sizeof path, "%s/www", dir);
        cr_assert_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof path, "%s/www/fw.bin", dir);
        cr_assert_eq(write_file_atomic(path, payload, payload_size, 0644), 0);

        port = test_free_port();
        server_pid = fork();
        cr_assert(server_pid >= 0);
        if (server_pid == 0) {
                char accept[64], cert[256], key[256], www[256];

                snprintf(accept, sizeof accept, "127.0.0.1:%d", port);
                snprintf(cert, sizeof cert, "%s/srv.crt", dir);
                snprintf(key, sizeof key, "%s/srv.key", dir);
                snprintf(www, sizeof www, "%s/www", dir);
                if (chdir(www) < 0)
                        _exit(127);
                int null = open("/dev/null", O_RDWR);
                dup2(null, 1);
                dup2(null, 2);
                execlp("openssl", "openssl", "s_server", "-WWW", "-quiet", "-accept", accept,
                       "-cert", cert, "-key", key, NULL);
                _exit(127);
        }
        for (int i = 0; i < 100 && !test_port_open(port); i++)
                usleep(50000);
        cr_assert(test_port_open(port), "s_server did not start");
}

static void teardown(void) {
        char cmd[300];

        if (server_pid > 0) {
                kill(server_pid, SIGTERM);
                waitpid(server_pid, NULL, 0);
        }
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        (void) run(cmd);
        free(payload);
}

TestSuite(http, .init = setup, .fini = teardown, .timeout = 120);

typedef struct Result {
        int done;
        int result;
        char message[512];
        uint8_t *body;
        size_t size;
        long status;
        int abort_after;      /* data callback fails with -ESP_ERR_INVALID_VERSION after this many bytes */
        bool cancel_in_data;
        HttpTransfer *self;
        int *pending;
        bool have_info;       /* http_transfer_done_info() inside on_done */
        HttpDoneInfo info;
} Result;

static int on_headers(HttpTransfer *t, const HttpResponseInfo *info, void *userdata) {
        Result *res = userdata;

        res->status = info->status;
        return 0;
}

static int on_data(HttpTransfer *t, const void *data, size_t size, void *userdata) {
        Result *res = userdata;

        if (res->cancel_in_data) {
                cr_assert_null(http_transfer_cancel(t));
                res->done = -1;
                (*res->pending)--;
                return 0;
        }
        if (res->abort_after > 0 && res->size + size >= (size_t) res->abort_after)
                return -ESP_ERR_INVALID_VERSION;
        res->body = realloc(res->body, res->size + size);
        memcpy(res->body + res->size, data, size);
        res->size += size;
        return 0;
}

static void on_done(HttpTransfer *t, int result, const char *message, void *userdata) {
        Result *res = userdata;

        const HttpDoneInfo *info = http_transfer_done_info(t);

        res->done++;
        res->result = result;
        res->have_info = info != NULL;
        if (info)
                res->info = *info;
        snprintf(res->message, sizeof res->message, "%s", message);
        (*res->pending)--;
}

static int on_guard(sd_event_source *s, uint64_t usec, void *userdata) {
        cr_assert_fail("transfers did not finish in time");
        return 0;
}

/* Runs transfers for `urls` concurrently until all complete. */
static void fetch(const char *const *urls, size_t n, const char *ca, uint64_t range, Result *res) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(sd_event_source_unrefp) sd_event_source *guard = NULL;
        HttpClient *c = NULL;
        int pending = (int) n;

        cr_assert_eq(sd_event_new(&e), 0);
        cr_assert_eq(http_client_new(e, &c), 0);
        cr_assert_eq(sd_event_add_time_relative(e, &guard, CLOCK_MONOTONIC, 60 * 1000000ULL, 0, on_guard, NULL), 0);

        for (size_t i = 0; i < n; i++) {
                HttpRequest req = {
                        .url = urls[i],
                        .ca_file = ca,
                        .range_start = range,
                        .low_speed_limit = 1,
                        .low_speed_time_s = 30,
                        .buffer_size = 4096,
                        .on_headers = on_headers,
                        .on_data = on_data,
                        .on_done = on_done,
                        .userdata = &res[i],
                };
                res[i].pending = &pending;
                cr_assert_eq(http_transfer_start(c, &req, &res[i].self), 0);
        }
        cr_assert_eq(http_client_active(c), n);
        while (pending > 0) {
                cr_assert_geq(sd_event_run(e, UINT64_MAX), 0);
                /* the worker's thread also runs libmosquitto, whose
                 * SSL_get_error() reads whatever curl left behind as its own
                 * failure (the OTA fault matrix lost MQTT sessions that way) */
                cr_assert_eq(ERR_peek_error(), 0, "OpenSSL error queue left dirty: %s",
                             ERR_reason_error_string(ERR_peek_error()));
        }
        cr_assert_eq(http_client_active(c), 0);
        http_client_free(c);
        cr_assert_eq(ERR_peek_error(), 0, "OpenSSL error queue left dirty by http_client_free");
}

static char *url(const char *host, const char *file) {
        char *u = NULL;
        cr_assert(asprintf(&u, "https://%s:%d/%s", host, port, file) > 0);
        return u;
}

static char *ca(const char *name) {
        char *p = NULL;
        cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

Test(http, get_whole_file) {
        _cleanup_free_ char *u = url("localhost", "fw.bin"), *cafile = ca("ca.crt");
        Result r = {};

        fetch((const char *const[]) { u }, 1, cafile, 0, &r);
        cr_assert_eq(r.done, 1);
        cr_assert_eq(r.result, 0, "result %s: %s", esp_err_to_name(r.result), r.message);
        cr_assert_eq(r.status, 200);
        cr_assert_eq(r.size, payload_size);
        cr_assert_arr_eq(r.body, payload, payload_size);
        cr_assert(r.have_info);
        cr_assert_eq(r.info.status, 200);
        cr_assert_eq(r.info.retry_after_s, 0);
        cr_assert(!r.info.peer_verify_failed);
        free(r.body);
}

Test(http, concurrent_transfers) {
        _cleanup_free_ char *u = url("localhost", "fw.bin"), *cafile = ca("ca.crt");
        Result r[4] = {};

        fetch((const char *const[]) { u, u, u, u }, 4, cafile, 0, r);
        for (int i = 0; i < 4; i++) {
                cr_assert_eq(r[i].result, 0, "transfer %d: %s: %s", i, esp_err_to_name(r[i].result), r[i].message);
                cr_assert_eq(r[i].size, payload_size);
                cr_assert_arr_eq(r[i].body, payload, payload_size);
                free(r[i].body);
        }
}

Test(http, wrong_ca_is_a_connect_error) {
        _cleanup_free_ char *u = url("localhost", "fw.bin"), *cafile = ca("other.crt");
        Result r = {};

        fetch((const char *const[]) { u }, 1, cafile, 0, &r);
        cr_assert_eq(r.result, -ESP_ERR_HTTP_CONNECT, "got %s: %s", esp_err_to_name(r.result), r.message);
        cr_assert_eq(r.size, 0);
        cr_assert_neq(r.message[0], 0);
        cr_assert(r.have_info && r.info.peer_verify_failed, "a foreign CA is a verification failure: %s", r.message);
        cr_assert_eq(r.info.status, 0);
}

Test(http, hostname_is_verified) {
        /* the certificate names "localhost" only */
        _cleanup_free_ char *u = url("127.0.0.1", "fw.bin"), *cafile = ca("ca.crt");
        Result r = {};

        fetch((const char *const[]) { u }, 1, cafile, 0, &r);
        cr_assert_eq(r.result, -ESP_ERR_HTTP_CONNECT, "got %s: %s", esp_err_to_name(r.result), r.message);
        cr_assert_eq(r.size, 0);
        cr_assert(r.have_info && r.info.peer_verify_failed, "a wrong host name is a verification failure: %s",
                  r.message);
}

Test(http, refused_connection) {
        _cleanup_free_ char *cafile = ca("ca.crt");
        char u[128];
        Result r = {};

        snprintf(u, sizeof u, "https://127.0.0.1:%d/fw.bin", test_free_port());
        fetch((const char *const[]) { u }, 1, cafile, 0, &r);
        cr_assert_eq(r.result, -ESP_ERR_HTTP_CONNECT, "got %s: %s", esp_err_to_name(r.result), r.message);
        cr_assert(r.have_info && !r.info.peer_verify_failed, "a refused connection verified nothing");
}

Test(http, plain_http_refused) {
        char u[128];
        Result r = {};

        snprintf(u, sizeof u, "http://127.0.0.1:%d/fw.bin", port);
        fetch((const char *const[]) { u }, 1, NULL, 0, &r);
        cr_assert_eq(r.result, -ESP_ERR_HTTP_INVALID_TRANSPORT, "got %s: %s", esp_err_to_name(r.result), r.message);
}

Test(http, range_answered_without_206) {
        /* s_server -WWW ignores Range and answers 200: esp_https_ota's resumption
         * reports ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE (esp-formats.md §8) */
        _cleanup_free_ char *u = url("localhost", "fw.bin"), *cafile = ca("ca.crt");
        Result r = {};

        fetch((const char *const[]) { u }, 1, cafile, 2048, &r);
        cr_assert_eq(r.result, -ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE, "got %s: %s", esp_err_to_name(r.result), r.message);
        cr_assert_eq(r.size, 0, "no body byte may reach the receiver");
        cr_assert_not_null(strstr(r.message, "2048"), "message: %s", r.message);
}

Test(http, receiver_abort_reports_its_error) {
        _cleanup_free_ char *u = url("localhost", "fw.bin"), *cafile = ca("ca.crt");
        Result r = { .abort_after = 10000 };

        fetch((const char *const[]) { u }, 1, cafile, 0, &r);
        cr_assert_eq(r.done, 1);
        cr_assert_eq(r.result, -ESP_ERR_INVALID_VERSION, "got %s: %s", esp_err_to_name(r.result), r.message);
        cr_assert_lt(r.size, 10000);
        free(r.body);
}

Test(http, cancel_inside_data_callback) {
        /* one transfer cancels itself from its data callback; the other is unaffected */
        _cleanup_free_ char *u = url("localhost", "fw.bin"), *cafile = ca("ca.crt");
        Result r[2] = { { .cancel_in_data = true }, {} };

        fetch((const char *const[]) { u, u }, 2, cafile, 0, r);
        cr_assert_eq(r[0].done, -1, "on_done must not run for a cancelled transfer");
        cr_assert_eq(r[1].done, 1);
        cr_assert_eq(r[1].result, 0, "got %s: %s", esp_err_to_name(r[1].result), r[1].message);
        cr_assert_eq(r[1].size, payload_size);
        free(r[1].body);
}

/* SPDX-License-Identifier: MIT */
/* The device state machine (issue #9 §4), with a fake transport and a fake
 * clock: the MQTT client, the broker's resolver and sd-event's timers are
 * replaced at link time by the doubles below, so every transition runs on
 * virtual time, with no broker, no socket and no sleep. The device itself is
 * real: provisioned into a temporary fleet, booted by the real bootloader
 * from its real flash, its settings read from its NVS. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic/macro.h"
#include "fleet/pki.h"
#include "fleet/provision.h"
#include "sim/backoff.h"
#include "sim/config.h"
#include "sim/device.h"
#include "transport/mqtt.h"
#include "transport/resolver.h"

/* ---- the fake clock: sd-event's timer calls on virtual time ------------- */

struct sd_event_source {
        bool used;
        uint64_t time;
        int enabled;
        sd_event_time_handler_t cb;
        void *userdata;
};

static uint64_t fake_now = 1000000000;  /* µs */
static struct sd_event_source sources[16];

int sd_event_now(sd_event *e, clockid_t clock, uint64_t *ret) {
        *ret = fake_now;
        return 0;
}

int sd_event_add_time_relative(sd_event *e, sd_event_source **ret, clockid_t clock, uint64_t usec,
                               uint64_t accuracy, sd_event_time_handler_t cb, void *userdata) {
        for (size_t i = 0; i < ELEMENTSOF(sources); i++)
                if (!sources[i].used) {
                        sources[i] = (struct sd_event_source) { true, fake_now + usec, SD_EVENT_ONESHOT, cb, userdata };
                        if (ret)
                                *ret = &sources[i];
                        return 0;
                }
        return -ENOMEM;
}

int sd_event_source_set_time(sd_event_source *s, uint64_t usec) {
        s->time = usec;
        return 0;
}

int sd_event_source_set_time_relative(sd_event_source *s, uint64_t usec) {
        s->time = fake_now + usec;
        return 0;
}

int sd_event_source_set_enabled(sd_event_source *s, int enabled) {
        if (!s)
                return 0;
        s->enabled = enabled;
        return 0;
}

int sd_event_source_get_enabled(sd_event_source *s, int *ret) {
        if (ret)
                *ret = s->enabled;
        return s->enabled != SD_EVENT_OFF;
}

sd_event_source *sd_event_source_disable_unref(sd_event_source *s) {
        if (s)
                *s = (struct sd_event_source) {};
        return NULL;
}

/* When the next enabled timer is due (UINT64_MAX: none). */
static uint64_t next_due(void) {
        uint64_t t = UINT64_MAX;
        for (size_t i = 0; i < ELEMENTSOF(sources); i++)
                if (sources[i].used && sources[i].enabled != SD_EVENT_OFF && sources[i].time < t)
                        t = sources[i].time;
        return t;
}

/* Runs virtual time forward by `usec`, firing each timer at its time. */
static void advance(uint64_t usec) {
        uint64_t end = fake_now + usec;
        for (unsigned n = 0;; n++) {
                cr_assert_lt(n, 10000, "timers fire in a loop");
                struct sd_event_source *due = NULL;
                for (size_t i = 0; i < ELEMENTSOF(sources); i++)
                        if (sources[i].used && sources[i].enabled != SD_EVENT_OFF && sources[i].time <= end &&
                            (!due || sources[i].time < due->time))
                                due = &sources[i];
                if (!due)
                        break;
                if (due->time > fake_now)
                        fake_now = due->time;
                if (due->enabled == SD_EVENT_ONESHOT)
                        due->enabled = SD_EVENT_OFF;
                due->cb(due, due->time, due->userdata);
        }
        fake_now = end;
}

/* ---- the fake transport -------------------------------------------------- */

typedef struct Published {
        char topic[128];
        char payload[256];
        bool retain;
} Published;

struct MqttClient {
        MqttCallbacks cb;
        void *userdata;
        bool connecting, connected, disconnect_sent;
        unsigned n_connect, n_disconnect, n_abort;
        char host[64];
        unsigned port;
        char subs[8][128];
        unsigned n_subs;
        Published pub[64];
        unsigned n_pub;
        char will_topic[128];
        MqttAttemptInfo attempt;
};

static MqttClient *the_client;
static unsigned n_clients;

int mqtt_client_new(MqttLoop *l, const char *client_id, SSL_CTX *ctx, X509 *cert, EVP_PKEY *key,
                    const MqttCallbacks *cb, void *userdata, MqttClient **ret) {
        MqttClient *c = calloc(1, sizeof *c);
        cr_assert_not_null(c);
        c->cb = *cb;
        c->userdata = userdata;
        c->attempt = (MqttAttemptInfo) { .connack = -1, .alert_received = -1, .alert_sent = -1 };
        the_client = c;
        n_clients++;
        *ret = c;
        return 0;
}

MqttClient *mqtt_client_free(MqttClient *c) {
        if (c == the_client)
                the_client = NULL;
        free(c);
        return NULL;
}

int mqtt_client_set_protocol(MqttClient *c, int version) { return 0; }
int mqtt_client_add_user_property(MqttClient *c, const char *name, const char *value) { return 0; }

int mqtt_client_set_will(MqttClient *c, const char *topic, const char *payload, int qos, bool retain) {
        snprintf(c->will_topic, sizeof c->will_topic, "%s", topic);
        return 0;
}

int mqtt_client_connect(MqttClient *c, const char *host, unsigned port, const char *bind_address,
                        unsigned keepalive_s) {
        cr_assert_not(c->connecting || c->connected, "connect while an attempt or a session is open");
        c->connecting = true;
        c->n_connect++;
        c->n_subs = 0;
        snprintf(c->host, sizeof c->host, "%s", host);
        c->port = port;
        c->attempt = (MqttAttemptInfo) { .started_usec = fake_now, .connack = -1, .alert_received = -1,
                                         .alert_sent = -1 };
        return 0;
}

/* As mqtt.c does: a link that is gone reports on_disconnect at once. */
static void lost(MqttClient *c, bool expected, int reason) {
        bool was = c->connecting || c->connected;
        c->connecting = c->connected = false;
        if (was)
                c->cb.on_disconnect(c, expected, reason, c->userdata);
}

int mqtt_client_disconnect(MqttClient *c) {
        c->n_disconnect++;
        if (!c->connected) {
                lost(c, true, 0);
                return 0;
        }
        c->disconnect_sent = true;     /* the broker closes: fake_broker_closes() */
        return 0;
}

void mqtt_client_abort(MqttClient *c) {
        c->n_abort++;
        lost(c, false, -ECONNRESET);
}

int mqtt_client_subscribe(MqttClient *c, const char *topic, int qos) {
        cr_assert(c->connected, "SUBSCRIBE without a session");
        cr_assert_lt(c->n_subs, ELEMENTSOF(c->subs));
        snprintf(c->subs[c->n_subs++], sizeof c->subs[0], "%s", topic);
        return 0;
}

int mqtt_client_publish_due(MqttClient *c, const char *topic, const void *payload, size_t len, int qos,
                            bool retain, uint64_t due_usec) {
        if (!c->connected)
                return -ENOTCONN;
        if (c->n_pub < ELEMENTSOF(c->pub)) {
                Published *p = &c->pub[c->n_pub++];
                snprintf(p->topic, sizeof p->topic, "%s", topic);
                snprintf(p->payload, sizeof p->payload, "%.*s", (int) MIN(len, sizeof p->payload - 1),
                         (const char *) payload);
                p->retain = retain;
        }
        return 0;
}

bool mqtt_client_is_connected(const MqttClient *c) { return c->connected; }
unsigned mqtt_client_unacked(const MqttClient *c) { return 0; }
uint64_t mqtt_client_msgs_in(const MqttClient *c) { return 0; }
uint64_t mqtt_client_msgs_out(const MqttClient *c) { return c->n_pub; }
const MqttAttemptInfo *mqtt_client_attempt(const MqttClient *c) { return &c->attempt; }
int mqtt_identity_check(X509 *cert, EVP_PKEY *key) { return 0; }
const char *mqtt_reason_string(int rc) { return rc == 5 ? "not authorized" : "refused"; }

/* The broker's side of the attempt. */
static void fake_broker_accepts(void) {
        MqttClient *c = the_client;
        cr_assert(c && c->connecting, "no attempt in flight");
        c->connecting = false;
        c->connected = true;
        c->attempt.tcp_usec = c->attempt.tls_usec = fake_now;
        c->attempt.connack = 0;
        c->cb.on_connect(c, 0, c->userdata);
}

static void fake_broker_refuses(int connack) {
        MqttClient *c = the_client;
        cr_assert(c && c->connecting);
        c->attempt.connack = connack;
        c->cb.on_connect(c, connack, c->userdata);
        lost(c, false, -ECONNREFUSED);
}

static void fake_broker_closes(void) {
        MqttClient *c = the_client;
        cr_assert(c && c->connected);
        bool expected = c->disconnect_sent;
        c->disconnect_sent = false;
        lost(c, expected, expected ? 0 : -ECONNRESET);
}

static void fake_broker_sends(const char *topic, const char *payload) {
        MqttClient *c = the_client;
        cr_assert(c && c->connected);
        c->cb.on_message(c, topic, payload, strlen(payload), c->userdata);
}

static bool subscribed(const char *topic) {
        for (unsigned i = 0; the_client && i < the_client->n_subs; i++)
                if (streq(the_client->subs[i], topic))
                        return true;
        return false;
}

static const Published *last_status(void) {
        for (unsigned i = the_client ? the_client->n_pub : 0; i > 0; i--)
                if (strstr(the_client->pub[i - 1].topic, "/status"))
                        return &the_client->pub[i - 1];
        return NULL;
}

/* The broker's name, as the resolver hands it out. */
static unsigned n_resolver_failures;
const char *resolver_next_address(Resolver *r) { return "127.0.0.1"; }
void resolver_connect_failed(Resolver *r, const char *addr) { n_resolver_failures++; }

/* ---- the device's worker side --------------------------------------------- */

static char tmp[] = "/tmp/test-device-XXXXXX";
static DaemonConfig config;
static Fleet *fleet;
static TokenBucket bucket;
static Rng rng;
static MetricsBlock *metrics;
static DeviceBroker broker = { .host = (char *) "localhost", .port = 8883, .resolver = (Resolver *) 1 };
static DeviceContext ctx;
static Device *dev;

/* Every transition, in order; a transition reported while another one is
 * being reported would be the funnel recursing. */
static DeviceState trace[64];
static unsigned n_trace;
static bool in_state_changed;
static unsigned slots_taken;

static void state_changed(void *owner, Device *d, DeviceState old, DeviceState new_state) {
        cr_assert_not(in_state_changed, "state_changed() re-entered: %s -> %s inside another transition",
                      device_state_to_string(old), device_state_to_string(new_state));
        in_state_changed = true;
        cr_assert_eq(device_get_state(d), new_state, "reported %s while the device is %s",
                     device_state_to_string(new_state), device_state_to_string(device_get_state(d)));
        if (n_trace < ELEMENTSOF(trace))
                trace[n_trace++] = new_state;
        in_state_changed = false;
}

static HttpClient *no_http(void *owner) { return NULL; }
static const char *no_bind(void *owner) { return NULL; }
static bool ota_take(void *owner, Device *d) { return true; }
static void ota_release(void *owner, Device *d) {}
static bool connect_take(void *owner, Device *d) { slots_taken++; return true; }
static void connect_release(void *owner, Device *d) { cr_assert_gt(slots_taken, 0); slots_taken--; }

static void setup(void) {
        char err[1024] = "", pki[256], fdir[256];
        PkiOptions po = {};
        ProvisionOptions o;

        cr_assert_not_null(mkdtemp(tmp));
        snprintf(pki, sizeof pki, "%s/pki", tmp);
        snprintf(fdir, sizeof fdir, "%s/fleet", tmp);
        cr_assert_geq(pki_init(pki, &po, NULL, NULL, err, sizeof err), 0, "%s", err);
        provision_options_init(&o);
        o.fleet_dir = fdir;
        o.pki_dir = pki;
        o.count = 1;
        o.jobs = 1;
        o.quiet = true;
        cr_assert_eq(provision_fleet(&o, err, sizeof err), 1, "%s", err);
        cr_assert_geq(fleet_open(fdir, &fleet, err, sizeof err), 0, "%s", err);

        cr_assert_geq(daemon_config_init(&config), 0);
        config.boot_time_ms = 800;
        config.backoff_min_ms = 1000;
        config.backoff_max_ms = 8000;
        config.backoff_jitter = 0;
        config.connect_timeout_ms = 10000;
        config.give_up_after = 0;
        config.telemetry_enabled = false;
        config.default_interval_s = 0;

        rng_seed(&rng, 42);
        token_bucket_init(&bucket, 1000, 1000, fake_now);
        metrics = calloc(1, metrics_block_size(1));
        cr_assert_not_null(metrics);
        cr_assert_geq(metrics_block_init(metrics, 0, 1), 0);
        ctx = (DeviceContext) {
                .event = (sd_event *) 1,        /* never dereferenced: the timers are the fakes above */
                .config = &config,
                .fleet = fleet,
                .brokers = &broker,
                .n_brokers = 1,
                .connect_bucket = &bucket,
                .rng = &rng,
                .metrics = metrics,
                .http = no_http,
                .next_bind_address = no_bind,
                .state_changed = state_changed,
                .ota_slot_take = ota_take,
                .ota_slot_release = ota_release,
                .connect_slot_take = connect_take,
                .connect_slot_release = connect_release,
        };
        cr_assert_geq(device_new(&ctx, fleet_device_entry(fleet, 0), &metrics->devices[0], &dev), 0);
}

static void teardown(void) {
        char cmd[300];
        dev = device_free(dev);
        fleet = fleet_free(fleet);
        daemon_config_done(&config);
        free(metrics);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        (void) system(cmd);
}

static void expect_trace(const DeviceState *want, unsigned n) {
        for (unsigned i = 0; i < n && i < n_trace; i++)
                cr_assert_eq(trace[i], want[i], "transition %u: %s, expected %s", i,
                             device_state_to_string(trace[i]), device_state_to_string(want[i]));
        cr_assert_eq(n_trace, n, "%u transitions, expected %u", n_trace, n);
}

/* Started, and past boot_time_ms: the first attempt is in flight. */
static void boot_to_connecting(void) {
        device_start(dev, 0);
        advance(800 * 1000);
        cr_assert_eq(device_get_state(dev), DEVICE_CONNECTING);
}

static void boot_to_online(void) {
        device_start(dev, 0);
        cr_assert_eq(device_get_state(dev), DEVICE_BOOTING);
        cr_assert_not_null(the_client, "booting made no MQTT client");
        /* the app is not up before boot_time_ms */
        advance(799 * 1000);
        cr_assert_eq(device_get_state(dev), DEVICE_BOOTING);
        cr_assert_eq(the_client->n_connect, 0);
        advance(1000);
        cr_assert_eq(device_get_state(dev), DEVICE_CONNECTING);
        cr_assert_eq(the_client->n_connect, 1);
        cr_assert_str_eq(the_client->host, "127.0.0.1");
        cr_assert_eq(slots_taken, 1, "an attempt in flight holds a connection slot");
        fake_broker_accepts();
        cr_assert_eq(device_get_state(dev), DEVICE_ONLINE);
        cr_assert_eq(slots_taken, 0, "the slot outlived the attempt");
}

TestSuite(device, .init = setup, .fini = teardown, .timeout = 60);

Test(device, boots_connects_and_goes_online) {
        boot_to_online();
        DeviceState want[] = { DEVICE_BOOTING, DEVICE_CONNECTING, DEVICE_ONLINE };
        expect_trace(want, ELEMENTSOF(want));
        /* secure_esp's subscriptions and a retained online status */
        char own[128];
        snprintf(own, sizeof own, "/esp/%s/update/url", device_get_id(dev));
        cr_assert(subscribed("/esp/restart"), "no /esp/restart subscription");
        const Published *s = last_status();
        cr_assert_not_null(s, "no status published");
        cr_assert(s->retain);
        cr_assert_not_null(strstr(s->payload, "online"), "%s", s->payload);
        cr_assert_not_null(strstr(the_client->will_topic, "/status"), "no will on the status topic");
        /* online, nothing is armed to disturb it: an hour passes quietly */
        advance(3600ULL * 1000000);
        cr_assert_eq(device_get_state(dev), DEVICE_ONLINE);
        cr_assert_eq(the_client->n_connect, 1);
}

Test(device, connect_timeout_aborts_and_backs_off) {
        boot_to_connecting();
        advance(9999 * 1000);
        cr_assert_eq(device_get_state(dev), DEVICE_CONNECTING, "gave up before connect_timeout_ms");
        advance(1000);
        cr_assert_eq(the_client->n_abort, 1, "the attempt was not aborted at its timeout");
        cr_assert_eq(device_get_state(dev), DEVICE_BACKOFF);
        cr_assert_eq(n_resolver_failures, 1, "the resolver was not told the address failed");
        cr_assert_eq(slots_taken, 0);
        /* no jitter: the first delay is backoff_min_ms */
        advance(999 * 1000);
        cr_assert_eq(device_get_state(dev), DEVICE_BACKOFF);
        advance(1000);
        cr_assert_eq(device_get_state(dev), DEVICE_CONNECTING);
        cr_assert_eq(the_client->n_connect, 2);
}

Test(device, backoff_doubles_to_its_cap_and_resets_once_online) {
        boot_to_connecting();
        uint64_t expect_ms[] = { 1000, 2000, 4000, 8000, 8000 };
        for (size_t i = 0; i < ELEMENTSOF(expect_ms); i++) {
                fake_broker_refuses(5);
                cr_assert_eq(device_get_state(dev), DEVICE_BACKOFF);
                /* the next attempt comes exactly after the delay */
                uint64_t t = next_due();
                cr_assert_eq(t - fake_now, expect_ms[i] * 1000, "delay %zu: %" PRIu64 " ms, expected %" PRIu64,
                             i, (t - fake_now) / 1000, expect_ms[i]);
                advance(t - fake_now);
                cr_assert_eq(device_get_state(dev), DEVICE_CONNECTING);
        }
        fake_broker_accepts();
        cr_assert_eq(device_get_state(dev), DEVICE_ONLINE);
        /* a lost session starts again from backoff_min_ms */
        fake_broker_closes();
        cr_assert_eq(device_get_state(dev), DEVICE_BACKOFF);
        cr_assert_eq(next_due() - fake_now, 1000 * 1000);
}

Test(device, gives_up_after_the_configured_failures) {
        config.give_up_after = 3;
        boot_to_connecting();
        for (int i = 0; i < 3; i++) {
                cr_assert_eq(device_get_state(dev), DEVICE_CONNECTING);
                fake_broker_refuses(5);
                advance(10ULL * 1000000);
        }
        cr_assert_eq(device_get_state(dev), DEVICE_FAILED);
        cr_assert_eq(the_client->n_connect, 3);
        advance(3600ULL * 1000000);
        cr_assert_eq(the_client->n_connect, 3, "a FAILED device kept trying");
}

/* /esp/restart: an online device says goodbye (offline status, DISCONNECT),
 * reboots when the link is down, and is online again after boot_time_ms. */
Test(device, restart_command_goes_through_one_transition_at_a_time) {
        boot_to_online();
        n_trace = 0;
        fake_broker_sends("/esp/restart", "");
        cr_assert_eq(device_get_state(dev), DEVICE_RESTARTING);
        cr_assert_eq(the_client->n_disconnect, 1, "no DISCONNECT before the reboot");
        cr_assert_not_null(strstr(last_status()->payload, "offline"), "no offline status before the reboot");
        fake_broker_closes();
        cr_assert_eq(device_get_state(dev), DEVICE_BOOTING);
        advance(800 * 1000);
        fake_broker_accepts();
        DeviceState want[] = { DEVICE_RESTARTING, DEVICE_BOOTING, DEVICE_CONNECTING, DEVICE_ONLINE };
        expect_trace(want, ELEMENTSOF(want));
        cr_assert_eq(n_clients, 1, "a reboot made a new MQTT client");
}

/* A power cut: no DISCONNECT, no offline status (the broker sends the will). */
Test(device, power_cut_drops_without_goodbye) {
        boot_to_online();
        unsigned pubs = the_client->n_pub;
        n_trace = 0;
        device_power_cut(dev);
        cr_assert_eq(device_get_state(dev), DEVICE_BOOTING);
        cr_assert_eq(the_client->n_disconnect, 0, "a power cut sent DISCONNECT");
        cr_assert_eq(the_client->n_abort, 1);
        cr_assert_eq(the_client->n_pub, pubs, "a power cut published something");
        DeviceState want[] = { DEVICE_BOOTING };
        expect_trace(want, ELEMENTSOF(want));
        advance(800 * 1000);
        fake_broker_accepts();
        cr_assert_eq(device_get_state(dev), DEVICE_ONLINE);
}

/* A power cut during an attempt is a reset, not a failed attempt. */
Test(device, power_cut_while_connecting_is_not_a_failure) {
        boot_to_connecting();
        device_power_cut(dev);
        cr_assert_eq(device_get_state(dev), DEVICE_BOOTING);
        cr_assert_eq(n_resolver_failures, 0, "the reset was counted as a failed connection");
        cr_assert_eq(slots_taken, 0, "the connection slot was not given back");
}

Test(device, stop_says_goodbye_and_ends_off) {
        boot_to_online();
        device_stop(dev);
        cr_assert_eq(device_get_state(dev), DEVICE_STOPPING);
        cr_assert_eq(the_client->n_disconnect, 1);
        fake_broker_closes();
        cr_assert_eq(device_get_state(dev), DEVICE_OFF);
}

/* A broker that never closes after DISCONNECT does not hold up shutdown. */
Test(device, stop_against_a_silent_broker_ends_after_5_s) {
        boot_to_online();
        device_stop(dev);
        advance(4999 * 1000);
        cr_assert_eq(device_get_state(dev), DEVICE_STOPPING);
        advance(1000);
        cr_assert_eq(device_get_state(dev), DEVICE_OFF);
        cr_assert_eq(the_client->n_abort, 1);
}

Test(device, stop_while_backing_off_is_immediate) {
        boot_to_connecting();
        fake_broker_refuses(5);
        cr_assert_eq(device_get_state(dev), DEVICE_BACKOFF);
        device_stop(dev);
        cr_assert_eq(device_get_state(dev), DEVICE_OFF);
        advance(60ULL * 1000000);
        cr_assert_eq(the_client->n_connect, 1, "a stopped device reconnected");
}

/* SPDX-License-Identifier: MIT */
#pragma once

/* libmosquitto on sd-event (esp-formats.md Appendix C).
 *
 * One MqttLoop per event loop (worker) owns the single periodic timer that
 * calls mosquitto_loop_misc() for every client. Each MqttClient owns one io
 * source on mosquitto_socket(), with EPOLLOUT enabled only while
 * mosquitto_want_write() is true. Connections use
 * mosquitto_connect_bind_async(): nothing here blocks or spins.
 *
 * Errors: negative errno. libmosquitto's MOSQ_ERR_* are translated once, in
 * mqtt_error_to_errno(). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

typedef struct MqttLoop MqttLoop;
typedef struct MqttClient MqttClient;

typedef struct MqttCallbacks {
        /* CONNACK: rc 0 = accepted, else the MQTT reason (5 = not authorized…). */
        void (*on_connect)(MqttClient *c, int rc, void *userdata);
        /* Connection gone: `expected` when we asked for it (mqtt_client_disconnect). */
        void (*on_disconnect)(MqttClient *c, bool expected, int reason, void *userdata);
        void (*on_message)(MqttClient *c, const char *topic, const void *payload, size_t len, void *userdata);
        /* Every publish made so far has been acknowledged (QoS 1: PUBACK) or
         * written (QoS 0). Optional. */
        void (*on_drained)(MqttClient *c, void *userdata);
        /* SUBACK for a mqtt_client_subscribe(): `usec` since the SUBSCRIBE,
         * `refused` when the broker answered 0x80 for the filter. Optional. */
        void (*on_suback)(MqttClient *c, const char *filter, uint64_t usec, bool refused, void *userdata);
        /* PUBACK of a QoS 1 publish: `usec` since the publish was due
         * (mqtt_client_publish_due()). Optional. */
        void (*on_puback)(MqttClient *c, uint64_t usec, void *userdata);
} MqttCallbacks;

/* What happened during the last connection attempt, for the metrics and
 * for naming a failure. Times are CLOCK_MONOTONIC µs, 0 when not reached. */
typedef struct MqttAttemptInfo {
        uint64_t started_usec;          /* mqtt_client_connect() */
        uint64_t tcp_usec;              /* the socket first became ready: TCP established */
        uint64_t tls_usec;              /* TLS handshake done */
        int connack;                    /* the CONNACK code, -1 before one arrived */
        int alert_received;             /* TLS alert description from the broker, -1 if none */
        int alert_sent;                 /* TLS alert we sent, -1 if none */
        long verify_result;             /* X509_V_OK, or why the broker's certificate was refused */
} MqttAttemptInfo;

const MqttAttemptInfo *mqtt_client_attempt(const MqttClient *c);



/* misc_interval_ms: how often loop_misc runs over all clients (keepalive
 * PINGREQ, timeouts). */
int mqtt_loop_new(sd_event *e, unsigned misc_interval_ms, MqttLoop **ret);
MqttLoop *mqtt_loop_free(MqttLoop *l);
size_t mqtt_loop_n_clients(const MqttLoop *l);

/* Builds the client SSL_CTX that all devices of a worker share: TLS >=
 * min_version (TLS1_2_VERSION…), SSL_MODE_RELEASE_BUFFERS, no session
 * cache, SSL_VERIFY_PEER against `ca_store` (shared, up-ref'd with
 * SSL_CTX_set1_cert_store), the broker name `host` checked against its
 * certificate (DNS name or IP address). It holds no identity: each
 * connection presents its own client's certificate and key (a DS-backed
 * EVP_PKEY works) from a certificate callback. */
int mqtt_ssl_ctx_new(X509_STORE *ca_store, const char *host, int min_version, SSL_CTX **ret);
/* 0 if `key` is the private half of `cert`'s public key, else -EKEYREJECTED. */
int mqtt_identity_check(X509 *cert, EVP_PKEY *key);

/* One libmosquitto client (MQTT v3.1.1, clean session). `ctx` is up-ref'd
 * and handed to libmosquitto with MOSQ_OPT_SSL_CTX (no defaults applied);
 * `cert` and `key` are up-ref'd and presented on every connection. A
 * session costs one fd: the socket (libmosquitto's socketpair is refused,
 * see mqtt.c). If `will_topic` is set, the will is will_payload, retained. */
int mqtt_client_new(MqttLoop *l, const char *client_id, SSL_CTX *ctx, X509 *cert, EVP_PKEY *key,
                    const MqttCallbacks *cb, void *userdata, MqttClient **ret);
MqttClient *mqtt_client_free(MqttClient *c);
/* The MQTT version of the next connections: 4 (3.1.1, the default) or 5. */
int mqtt_client_set_protocol(MqttClient *c, int version);
/* MQTT 5 only: a user property (name, value) sent with every PUBLISH of
 * this client, e.g. which device a line on a shared topic comes from.
 * Ignored under 3.1.1. 0 or -errno. */
int mqtt_client_add_user_property(MqttClient *c, const char *name, const char *value);
int mqtt_client_set_will(MqttClient *c, const char *topic, const char *payload, int qos, bool retain);

/* Starts an asynchronous connect (TCP, TLS, CONNECT); the result arrives in
 * on_connect or on_disconnect. bind_address may be NULL. `host` should be a
 * numeric address (resolver.h): libmosquitto resolves it with a blocking
 * getaddrinfo(); the name the broker's certificate must match is the
 * SSL_CTX's. */
int mqtt_client_connect(MqttClient *c, const char *host, unsigned port, const char *bind_address,
                        unsigned keepalive_s);
/* Sends DISCONNECT (if connected) and closes; on_disconnect(expected=true). */
int mqtt_client_disconnect(MqttClient *c);
/* Drops the connection without DISCONNECT (the broker then sends the will). */
void mqtt_client_abort(MqttClient *c);

int mqtt_client_subscribe(MqttClient *c, const char *topic, int qos);
int mqtt_client_publish(MqttClient *c, const char *topic, const void *payload, size_t len,
                        int qos, bool retain);
/* The same, for a publish that was due at `due_usec` (CLOCK_MONOTONIC): a
 * QoS 1 PUBACK reports its latency from then (on_puback). */
int mqtt_client_publish_due(MqttClient *c, const char *topic, const void *payload, size_t len,
                            int qos, bool retain, uint64_t due_usec);
bool mqtt_client_is_connected(const MqttClient *c);
/* Publishes of this session not yet acknowledged (QoS 1) or written (QoS 0). */
unsigned mqtt_client_unacked(const MqttClient *c);

/* Number of messages received / sent by this client since creation. */
uint64_t mqtt_client_msgs_in(const MqttClient *c);
uint64_t mqtt_client_msgs_out(const MqttClient *c);

/* MOSQ_ERR_* (positive) -> -errno; MOSQ_ERR_ERRNO reads errno. */
int mqtt_error_to_errno(int mosq_err);
/* A short reason for a CONNACK code or a disconnect reason. */
const char *mqtt_reason_string(int rc);

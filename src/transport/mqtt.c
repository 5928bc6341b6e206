/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_MQTT

#include <arpa/inet.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "basic/time-util.h"
#include "basic/log.h"
#include "transport/mqtt.h"

/* Facts about libmosquitto 2.0.11 this file relies on (lib/net_mosq.c, lib/loop.c):
 * - With MOSQ_OPT_SSL_CTX and MOSQ_OPT_SSL_CTX_WITH_DEFAULTS = 0,
 *   net__init_ssl_ctx() returns before touching the context: no CA, no
 *   verify mode and no hostname check (that one lives only in the verify
 *   callback it installs on the defaults path). mqtt_ssl_ctx_new() therefore
 *   sets all of them itself.
 * - A fatal TLS handshake error inside mosquitto_loop_read() closes the
 *   socket and returns MOSQ_ERR_TLS without calling on_disconnect, and
 *   SSL_ERROR_SYSCALL (e.g. a refused TCP connect) leaves want_connect set
 *   forever. So each session gets its own struct mosquitto, and this file
 *   tears it down itself after any error or hang-up, outside libmosquitto's
 *   callbacks. */

/* Socket events of one dispatch at most: the loop then goes back to its
 * timers and other sources. */
#define MQTT_EVENTS_PER_DISPATCH 256
/* Publishes and subscriptions timed per client at once. */
#define MQTT_TIMED_MAX 8

struct MqttLoop {
        sd_event *event;
        /* All client sockets sit in an epoll set of our own, watched by sd-event
         * as one fd. sd-event dispatches one source per iteration and polls
         * its level-triggered fds again before the next: with a source per
         * socket, a broadcast that makes N sockets readable costs N polls of
         * N fds. Here one dispatch serves up to MQTT_EVENTS_PER_DISPATCH. */
        int epfd;
        sd_event_source *epoll_source;
        struct epoll_event *batch;      /* the events being dispatched (NULLed when a client goes) */
        int batch_n;
        sd_event_source *misc_timer;
        uint64_t misc_interval_usec;
        MqttClient *clients;
        size_t n_clients;
};

struct MqttClient {
        MqttLoop *loop;                 /* not owned */
        MqttClient *next, *prev;

        char *client_id;
        SSL_CTX *ctx;                   /* shared by the fleet's clients */
        X509 *cert;                     /* this client's identity, presented by ssl_cert_cb() */
        EVP_PKEY *key;
        MqttCallbacks cb;
        void *userdata;

        char *will_topic, *will_payload;
        int will_qos;
        bool will_retain;

        struct mosquitto *mosq;         /* only while a session exists */
        int fd;                         /* in the loop's epoll set, or -1 */
        uint32_t io_events;

        bool busy;                      /* inside mosquitto_loop_*(): no teardown now */
        bool connected;                 /* CONNACK 0 received */
        bool disconnect_requested;
        bool lost;                      /* libmosquitto reported the end of the session */
        int lost_rc;

        uint64_t msgs_in, msgs_out;
        unsigned unacked;               /* publishes of this session not yet acknowledged/written */

        int protocol;                   /* 4 = MQTT 3.1.1, 5 = MQTT 5 */
        mosquitto_property *publish_props; /* MQTT 5: sent with every PUBLISH (user properties) */
        MqttAttemptInfo attempt;
        int early_errno;                /* a connect error the handshake's first write() took (see connect) */
        /* QoS 1 publishes and SUBSCRIBEs in flight, for their latencies: a
         * small ring, oldest first (a device has a handful at a time; an
         * entry that falls off is simply not measured). */
        struct { int mid; uint64_t usec; } pubs[MQTT_TIMED_MAX], subs[MQTT_TIMED_MAX];
        char *sub_filter[MQTT_TIMED_MAX];
        unsigned n_pubs, n_subs;
};

int mqtt_error_to_errno(int e) {
        switch (e) {
        case MOSQ_ERR_SUCCESS: return 0;
        case MOSQ_ERR_NOMEM: return -ENOMEM;
        case MOSQ_ERR_PROTOCOL: return -EPROTO;
        case MOSQ_ERR_INVAL: return -EINVAL;
        case MOSQ_ERR_NO_CONN: return -ENOTCONN;
        case MOSQ_ERR_CONN_REFUSED: return -ECONNREFUSED;
        case MOSQ_ERR_NOT_FOUND: return -ENOENT;
        case MOSQ_ERR_CONN_LOST: return -ECONNRESET;
        case MOSQ_ERR_TLS: return -EPROTO;
        case MOSQ_ERR_PAYLOAD_SIZE: return -EMSGSIZE;
        case MOSQ_ERR_NOT_SUPPORTED: return -EOPNOTSUPP;
        case MOSQ_ERR_AUTH: return -EACCES;
        case MOSQ_ERR_ACL_DENIED: return -EACCES;
        case MOSQ_ERR_ERRNO: return errno > 0 ? -errno : -EIO;
        case MOSQ_ERR_EAI: return -EHOSTUNREACH;
        case MOSQ_ERR_KEEPALIVE: return -ETIMEDOUT;
        case MOSQ_ERR_LOOKUP: return -EHOSTUNREACH;
        default: return -EIO;
        }
}

const char *mqtt_reason_string(int rc) {
        /* MQTT 3.1.1 CONNACK return codes (§3.2.2.3) */
        switch (rc) {
        case 0: return "accepted";
        case 1: return "unacceptable protocol version";
        case 2: return "identifier rejected";
        case 3: return "server unavailable";
        case 4: return "bad user name or password";
        case 5: return "not authorized";
        default: return "refused";
        }
}

/* ---- SSL_CTX -------------------------------------------------------- */

/* The client of a connection, for the certificate callback: libmosquitto
 * makes the SSL itself (SSL_new on the shared context) inside
 * mosquitto_connect_bind_async(), and mqtt_client_connect() tags it right
 * after. Usually the certificate is needed later, in a loop_read(); but
 * when the TCP connect completes at once and the broker answers before the
 * first SSL_connect() reads (a busy machine), the whole first flight up to
 * CertificateRequest is handled inside that call, before the tag: the
 * client being connected is `connecting_client` then (one loop, one
 * thread, one connect at a time). */
static int ssl_client_index = -1;
static MqttClient *connecting_client;

static int ssl_cert_cb(SSL *ssl, void *arg) {
        MqttClient *c = ssl_client_index >= 0 ? SSL_get_ex_data(ssl, ssl_client_index) : NULL;

        if (!c)
                c = connecting_client;

        if (!c || !c->cert || !c->key)
                return 0; /* no identity: the handshake fails */
        if (SSL_use_certificate(ssl, c->cert) != 1 || SSL_use_PrivateKey(ssl, c->key) != 1)
                return 0;
        return 1;
}

/* Handshake milestones and alerts, for MqttAttemptInfo. */
static void ssl_info_cb(const SSL *ssl, int where, int ret) {
        MqttClient *c = ssl_client_index >= 0 ? SSL_get_ex_data(ssl, ssl_client_index) : NULL;

        if (!c)
                c = connecting_client;
        if (!c)
                return;
        /* The ClientHello is out: the TCP connection is up (the write
         * succeeded). libmosquitto starts the handshake inside connect(), so
         * this is the first moment the socket is known to be connected. */
        if ((where & SSL_CB_LOOP) && !c->attempt.tcp_usec && SSL_get_state(ssl) == TLS_ST_CR_SRVR_HELLO)
                c->attempt.tcp_usec = now_usec(CLOCK_MONOTONIC);
        if ((where & SSL_CB_HANDSHAKE_DONE) && !c->attempt.tls_usec)
                c->attempt.tls_usec = now_usec(CLOCK_MONOTONIC);
        if (where & SSL_CB_ALERT) {
                if (where & SSL_CB_READ) {
                        if (c->attempt.alert_received < 0)
                                c->attempt.alert_received = ret & 0xff;
                } else if (c->attempt.alert_sent < 0) {
                        c->attempt.alert_sent = ret & 0xff;
                        c->attempt.verify_result = SSL_get_verify_result(ssl);
                }
        }
}

int mqtt_ssl_ctx_new(X509_STORE *ca_store, const char *host, int min_version, SSL_CTX **ret) {
        unsigned char ip[sizeof(struct in6_addr)];
        SSL_CTX *ctx;

        if (!ca_store || !host)
                return -EINVAL;
        if (ssl_client_index < 0) {
                ssl_client_index = SSL_get_ex_new_index(0, (void *) "espfleet MqttClient", NULL, NULL, NULL);
                if (ssl_client_index < 0)
                        return -ENOMEM;
        }
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
                return -ENOMEM;
        if (SSL_CTX_set_min_proto_version(ctx, MAX(min_version, TLS1_2_VERSION)) != 1)
                goto fail;
        /* ~57 KB -> ~23 KB per idle connection (esp-formats.md Appendix C) */
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
        /* A device makes one connection at a time and keeps no session. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        /* One store for the whole fleet: each context only takes a reference. */
        if (SSL_CTX_set1_cert_store(ctx, ca_store), SSL_CTX_get_cert_store(ctx) != ca_store)
                goto fail;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
                if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1)
                        goto fail;
        } else if (X509_VERIFY_PARAM_set1_host(param, host, 0) != 1)
                goto fail;
        /* Each connection presents its own device's certificate and DS key. */
        SSL_CTX_set_cert_cb(ctx, ssl_cert_cb, NULL);
        SSL_CTX_set_info_callback(ctx, ssl_info_cb);
        *ret = ctx;
        return 0;
fail:
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return -EINVAL;
}

int mqtt_identity_check(X509 *cert, EVP_PKEY *key) {
        if (!cert || !key)
                return -EINVAL;
        if (X509_check_private_key(cert, key) != 1) {
                ERR_clear_error();
                return -EKEYREJECTED;
        }
        return 0;
}

/* libmosquitto opens a socketpair in every mosquitto_new(), only to wake up
 * its own select() loop from other threads (lib/mosquitto.c,
 * net__socketpair()); it works without one ("outgoing publish commands may
 * be delayed", which cannot happen here: we never use mosquitto_loop()). On
 * a fleet that is two of the three fds a device would cost. While
 * mqtt_client_connect() calls mosquitto_new(), socketpair() refuses. */
static bool refuse_socketpair;

int socketpair(int domain, int type, int protocol, int sv[2]) {
        if (refuse_socketpair) {
                errno = EMFILE;
                return -1;
        }
        return (int) syscall(SYS_socketpair, domain, type, protocol, sv);
}

/* ---- loop ------------------------------------------------------------ */

static void client_sync(MqttClient *c);
static void client_finish(MqttClient *c);
static int epoll_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int misc_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttLoop *l = userdata;

        for (MqttClient *c = l->clients, *next; c; c = next) {
                next = c->next;
                if (!c->mosq || c->fd < 0)
                        continue;
                c->busy = true;
                int r = mosquitto_loop_misc(c->mosq);
                c->busy = false;
                if (r != MOSQ_ERR_SUCCESS && !c->lost) {
                        c->lost = true;
                        c->lost_rc = r;
                }
                client_sync(c);
        }
        (void) sd_event_source_set_time(s, usec + l->misc_interval_usec);
        return 0;
}

int mqtt_loop_new(sd_event *e, unsigned misc_interval_ms, MqttLoop **ret) {
        MqttLoop *l;
        int r;

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->event = sd_event_ref(e);
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        l->batch = calloc(MQTT_EVENTS_PER_DISPATCH, sizeof *l->batch);
        if (l->epfd < 0 || !l->batch) {
                r = l->epfd < 0 ? -errno : -ENOMEM;
                mqtt_loop_free(l);
                return r;
        }
        r = sd_event_add_io(e, &l->epoll_source, l->epfd, EPOLLIN, epoll_handler, l);
        if (r < 0) {
                mqtt_loop_free(l);
                return r;
        }
        (void) sd_event_source_set_description(l->epoll_source, "mqtt-sockets");
        l->misc_interval_usec = (uint64_t) MAX(misc_interval_ms, 10u) * 1000;
        r = sd_event_add_time_relative(e, &l->misc_timer, CLOCK_MONOTONIC, l->misc_interval_usec,
                                       l->misc_interval_usec / 10, misc_handler, l);
        if (r < 0) {
                mqtt_loop_free(l);
                return r;
        }
        r = sd_event_source_set_enabled(l->misc_timer, SD_EVENT_ON);
        if (r < 0) {
                mqtt_loop_free(l);
                return r;
        }
        (void) sd_event_source_set_description(l->misc_timer, "mqtt-misc");
        *ret = l;
        return 0;
}

MqttLoop *mqtt_loop_free(MqttLoop *l) {
        if (!l)
                return NULL;
        while (l->clients)
                mqtt_client_free(l->clients);
        sd_event_source_disable_unref(l->misc_timer);
        sd_event_source_disable_unref(l->epoll_source);
        if (l->epfd >= 0)
                close(l->epfd);
        free(l->batch);
        sd_event_unref(l->event);
        free(l);
        return NULL;
}

size_t mqtt_loop_n_clients(const MqttLoop *l) {
        return l->n_clients;
}

/* ---- client -------------------------------------------------------- */

static void cb_connect(struct mosquitto *m, void *userdata, int rc) {
        MqttClient *c = userdata;

        c->connected = rc == 0;
        c->attempt.connack = rc;
        if (c->cb.on_connect)
                c->cb.on_connect(c, rc, c->userdata);
}

static void cb_disconnect(struct mosquitto *m, void *userdata, int rc) {
        MqttClient *c = userdata;

        /* Inside libmosquitto: only note it, client_sync() finishes. */
        if (!c->lost) {
                c->lost = true;
                c->lost_rc = rc;
        }
}

static void cb_message(struct mosquitto *m, void *userdata, const struct mosquitto_message *msg) {
        MqttClient *c = userdata;

        c->msgs_in++;
        if (c->cb.on_message)
                c->cb.on_message(c, msg->topic, msg->payload, msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0,
                                 c->userdata);
}

static void cb_publish(struct mosquitto *m, void *userdata, int mid) {
        MqttClient *c = userdata;

        if (c->unacked > 0)
                c->unacked--;
        for (unsigned i = 0; i < c->n_pubs; i++)
                if (c->pubs[i].mid == mid) {
                        uint64_t t = c->pubs[i].usec, now = now_usec(CLOCK_MONOTONIC);
                        memmove(&c->pubs[i], &c->pubs[i + 1], (c->n_pubs - i - 1) * sizeof c->pubs[0]);
                        c->n_pubs--;
                        if (c->cb.on_puback)
                                c->cb.on_puback(c, now > t ? now - t : 0, c->userdata);
                        break;
                }
        if (c->unacked == 0 && c->cb.on_drained)
                c->cb.on_drained(c, c->userdata);
}

static void cb_subscribe(struct mosquitto *m, void *userdata, int mid, int qos_count, const int *granted) {
        MqttClient *c = userdata;

        for (unsigned i = 0; i < c->n_subs; i++)
                if (c->subs[i].mid == mid) {
                        uint64_t t = c->subs[i].usec, now = now_usec(CLOCK_MONOTONIC);
                        char *filter = c->sub_filter[i];
                        bool refused = false;
                        for (int k = 0; k < qos_count; k++)
                                if (granted[k] >= 0x80)
                                        refused = true;
                        memmove(&c->subs[i], &c->subs[i + 1], (c->n_subs - i - 1) * sizeof c->subs[0]);
                        memmove(&c->sub_filter[i], &c->sub_filter[i + 1], (c->n_subs - i - 1) * sizeof(char *));
                        c->n_subs--;
                        if (c->cb.on_suback)
                                c->cb.on_suback(c, filter ?: "", now > t ? now - t : 0, refused, c->userdata);
                        free(filter);
                        return;
                }
}

static void timed_clear(MqttClient *c) {
        for (unsigned i = 0; i < c->n_subs; i++)
                free(c->sub_filter[i]);
        c->n_subs = c->n_pubs = 0;
}

static void cb_log(struct mosquitto *m, void *userdata, int level, const char *str) {
        MqttClient *c = userdata;
        log_full_errno(LOG_DEBUG, LOG_TOPIC_MQTT, c->client_id, 0, "libmosquitto: %s", str);
}

static void client_unwatch(MqttClient *c) {
        MqttLoop *l = c->loop;

        if (c->fd >= 0)
                (void) epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->fd = -1;
        /* an event of this dispatch for the old socket must not reach the client */
        for (int i = 0; i < l->batch_n; i++)
                if (l->batch[i].data.ptr == c)
                        l->batch[i].data.ptr = NULL;
}

static void client_io(MqttClient *c, int fd, uint32_t revents) {
        int r = MOSQ_ERR_SUCCESS;

        if (!c->mosq)
                return;
        /* A connect that failed (refused, unreachable) shows as an error on
         * the socket: take its reason before libmosquitto reads it as a
         * generic "connection lost". */
        if (!c->connected && !c->attempt.tcp_usec && (revents & (EPOLLHUP | EPOLLERR))) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0)
                        err = c->early_errno;
                if (err != 0) {
                        c->lost = true;
                        c->lost_rc = MOSQ_ERR_ERRNO;
                        errno = err;
                        client_sync(c);
                        return;
                }
        }
        c->busy = true;
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                r = mosquitto_loop_read(c->mosq, 1);
                /* Until CONNACK, acknowledge what arrived at once. A TLS 1.3
                 * broker sends its session tickets right before CONNACK; a
                 * broker without TCP_NODELAY (mosquitto's default) holds the
                 * small CONNACK back until they are acknowledged (Nagle), and
                 * our kernel delays that ACK by ~40 ms: every connection
                 * would wait 40 ms for nothing. */
                if (!c->connected && fd >= 0)
                        (void) setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &(int) { 1 }, sizeof(int));
        }
        if (r == MOSQ_ERR_SUCCESS && !c->lost && (revents & EPOLLOUT) && mosquitto_socket(c->mosq) >= 0)
                r = mosquitto_loop_write(c->mosq, 1);
        c->busy = false;
        if (r != MOSQ_ERR_SUCCESS && !c->lost) {
                c->lost = true;
                c->lost_rc = r;
        }
        /* Before CONNACK, a hang-up or socket error means the TCP connect or
         * the handshake failed; libmosquitto would retry SSL_connect forever. */
        if (!c->lost && !c->connected && (revents & (EPOLLHUP | EPOLLERR))) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0)
                        err = c->early_errno ?: ECONNRESET;
                c->lost = true;
                c->lost_rc = MOSQ_ERR_ERRNO;
                errno = err;
        }
        client_sync(c);
}

static int epoll_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        MqttLoop *l = userdata;
        int n;

        n = epoll_wait(l->epfd, l->batch, MQTT_EVENTS_PER_DISPATCH, 0);
        if (n <= 0)
                return 0;
        l->batch_n = n;
        for (int i = 0; i < n; i++) {
                MqttClient *c = l->batch[i].data.ptr;
                if (c)
                        client_io(c, c->fd, l->batch[i].events);
        }
        l->batch_n = 0;
        return 0;
}

/* Brings the io source in line with libmosquitto's socket and want_write(),
 * and finishes a session that ended. */
static void client_sync(MqttClient *c) {
        int fd, r;

        if (!c->mosq || c->busy)
                return;
        fd = mosquitto_socket(c->mosq);
        if (c->lost || fd < 0) {
                client_finish(c);
                return;
        }
        uint32_t events = EPOLLIN | (mosquitto_want_write(c->mosq) ? EPOLLOUT : 0);
        if (fd != c->fd) {
                client_unwatch(c);
                struct epoll_event ev = { .events = events, .data.ptr = c };
                r = epoll_ctl(c->loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
                if (r >= 0)
                        c->fd = fd;
                if (r < 0) {
                        log_full_errno(LOG_ERR, LOG_TOPIC_MQTT, c->client_id, r, "Failed to watch socket: %m");
                        c->lost = true;
                        c->lost_rc = MOSQ_ERR_NOMEM;
                        client_finish(c);
                        return;
                }
                c->io_events = events;
        } else if (events != c->io_events) {
                struct epoll_event ev = { .events = events, .data.ptr = c };
                (void) epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, fd, &ev);
                c->io_events = events;
        }
}

/* Ends the session: frees the struct mosquitto (closing its fds) first,
 * then tells the user, who may reconnect right away. */
static void client_finish(MqttClient *c) {
        int rc = c->lost_rc, saved_errno = errno;
        bool expected = c->disconnect_requested && (rc == MOSQ_ERR_SUCCESS || c->connected);

        client_unwatch(c);
        if (c->mosq) {
                mosquitto_destroy(c->mosq);
                c->mosq = NULL;
        }
        c->connected = false;
        c->lost = false;
        c->disconnect_requested = false;
        c->unacked = 0;
        timed_clear(c);
        errno = saved_errno;
        int reason = expected ? 0 : (rc == MOSQ_ERR_SUCCESS ? -ECONNRESET : mqtt_error_to_errno(rc));
        if (c->cb.on_disconnect)
                c->cb.on_disconnect(c, expected, reason, c->userdata);
}

int mqtt_client_new(MqttLoop *l, const char *client_id, SSL_CTX *ctx, X509 *cert, EVP_PKEY *key,
                    const MqttCallbacks *cb, void *userdata, MqttClient **ret) {
        MqttClient *c;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->client_id = strdup(client_id);
        if (!c->client_id) {
                free(c);
                return -ENOMEM;
        }
        if (ctx) {
                SSL_CTX_up_ref(ctx);
                c->ctx = ctx;
        }
        if (cert) {
                X509_up_ref(cert);
                c->cert = cert;
        }
        if (key) {
                EVP_PKEY_up_ref(key);
                c->key = key;
        }
        c->cb = *cb;
        c->userdata = userdata;
        c->fd = -1;
        c->protocol = 4;
        c->loop = l;
        c->next = l->clients;
        if (l->clients)
                l->clients->prev = c;
        l->clients = c;
        l->n_clients++;
        *ret = c;
        return 0;
}

MqttClient *mqtt_client_free(MqttClient *c) {
        if (!c)
                return NULL;
        client_unwatch(c);
        if (c->mosq)
                mosquitto_destroy(c->mosq);
        timed_clear(c);
        if (c->prev)
                c->prev->next = c->next;
        else if (c->loop->clients == c)
                c->loop->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->loop->n_clients--;
        SSL_CTX_free(c->ctx);
        X509_free(c->cert);
        EVP_PKEY_free(c->key);
        mosquitto_property_free_all(&c->publish_props);
        free(c->will_topic);
        free(c->will_payload);
        free(c->client_id);
        free(c);
        return NULL;
}

int mqtt_client_set_will(MqttClient *c, const char *topic, const char *payload, int qos, bool retain) {
        char *t = NULL, *p = NULL;

        if (topic) {
                t = strdup(topic);
                p = strdup(payload ?: "");
                if (!t || !p) {
                        free(t);
                        free(p);
                        return -ENOMEM;
                }
        }
        free(c->will_topic);
        free(c->will_payload);
        c->will_topic = t;
        c->will_payload = p;
        c->will_qos = qos;
        c->will_retain = retain;
        return 0;
}

int mqtt_client_add_user_property(MqttClient *c, const char *name, const char *value) {
        return mqtt_error_to_errno(mosquitto_property_add_string_pair(&c->publish_props, MQTT_PROP_USER_PROPERTY,
                                                                      name, value));
}

int mqtt_client_set_protocol(MqttClient *c, int version) {
        if (version != 4 && version != 5)
                return -EINVAL;
        c->protocol = version;
        return 0;
}

int mqtt_client_connect(MqttClient *c, const char *host, unsigned port, const char *bind_address,
                        unsigned keepalive_s) {
        struct mosquitto *m;
        int r;

        if (c->mosq)
                return -EALREADY;
        c->attempt = (MqttAttemptInfo) {
                .started_usec = now_usec(CLOCK_MONOTONIC),
                .connack = -1,
                .alert_received = -1,
                .alert_sent = -1,
        };
        refuse_socketpair = true;
        m = mosquitto_new(c->client_id, true, c);
        refuse_socketpair = false;
        if (!m)
                return errno > 0 ? -errno : -ENOMEM;
        r = mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, c->protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
        /* Nagle would hold a second small packet (a log line after a PUBACK)
         * until the broker's delayed ACK, ~40 ms later. */
        if (r == MOSQ_ERR_SUCCESS)
                r = mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
        if (r == MOSQ_ERR_SUCCESS && c->ctx) {
                r = mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, c->ctx);
                if (r == MOSQ_ERR_SUCCESS)
                        r = mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
        }
        if (r == MOSQ_ERR_SUCCESS && c->will_topic)
                r = mosquitto_will_set(m, c->will_topic, (int) strlen(c->will_payload), c->will_payload,
                                       c->will_qos, c->will_retain);
        if (r != MOSQ_ERR_SUCCESS) {
                mosquitto_destroy(m);
                return mqtt_error_to_errno(r);
        }
        mosquitto_connect_callback_set(m, cb_connect);
        mosquitto_disconnect_callback_set(m, cb_disconnect);
        mosquitto_message_callback_set(m, cb_message);
        mosquitto_publish_callback_set(m, cb_publish);
        mosquitto_subscribe_callback_set(m, cb_subscribe);
        if (log_would_log(LOG_DEBUG, LOG_TOPIC_MQTT))
                mosquitto_log_callback_set(m, cb_log);

        connecting_client = c;
        errno = 0;
        r = mosquitto_connect_bind_async(m, host, (int) port, (int) keepalive_s, bind_address);
        /* libmosquitto starts the handshake right after connect(): on
         * loopback a refusal is already there, and the ClientHello's write()
         * takes it off the socket (SO_ERROR reads 0 afterwards), leaving only
         * errno to say what happened. */
        int early = errno;
        connecting_client = NULL;
        c->early_errno = r == MOSQ_ERR_SUCCESS && (early == ECONNREFUSED || early == ENETUNREACH || early == EHOSTUNREACH || early == ETIMEDOUT)
                ? early : 0;
        if (r != MOSQ_ERR_SUCCESS) {
                r = mqtt_error_to_errno(r);
                mosquitto_destroy(m);
                return r;
        }
        SSL *ssl = mosquitto_ssl_get(m);
        if (ssl && SSL_set_ex_data(ssl, ssl_client_index, c) != 1) {
                mosquitto_destroy(m);
                return -ENOMEM;
        }
        c->mosq = m;
        c->connected = c->lost = c->disconnect_requested = false;
        client_sync(c);
        return 0;
}

int mqtt_client_disconnect(MqttClient *c) {
        int r;

        if (!c->mosq)
                return -ENOTCONN;
        c->disconnect_requested = true;
        if (!c->connected) {
                /* Nothing to say DISCONNECT to yet: just drop the attempt. */
                c->lost = true;
                c->lost_rc = MOSQ_ERR_SUCCESS;
                client_sync(c);
                return 0;
        }
        r = mosquitto_disconnect(c->mosq);
        if (r != MOSQ_ERR_SUCCESS && !c->lost) {
                c->lost = true;
                c->lost_rc = MOSQ_ERR_SUCCESS;
        }
        client_sync(c);
        return 0;
}

void mqtt_client_abort(MqttClient *c) {
        if (!c->mosq)
                return;
        c->lost = true;
        c->lost_rc = MOSQ_ERR_CONN_LOST;
        client_sync(c);
}

int mqtt_client_subscribe(MqttClient *c, const char *topic, int qos) {
        int r;

        if (!c->mosq || !c->connected)
                return -ENOTCONN;
        int mid = 0;
        r = mosquitto_subscribe(c->mosq, &mid, topic, qos);
        if (r == MOSQ_ERR_SUCCESS) {
                if (c->n_subs == MQTT_TIMED_MAX) { /* the oldest is not measured */
                        free(c->sub_filter[0]);
                        memmove(&c->subs[0], &c->subs[1], (MQTT_TIMED_MAX - 1) * sizeof c->subs[0]);
                        memmove(&c->sub_filter[0], &c->sub_filter[1], (MQTT_TIMED_MAX - 1) * sizeof(char *));
                        c->n_subs--;
                }
                c->subs[c->n_subs].mid = mid;
                c->subs[c->n_subs].usec = now_usec(CLOCK_MONOTONIC);
                c->sub_filter[c->n_subs] = strdup(topic);
                c->n_subs++;
        }
        client_sync(c);
        return mqtt_error_to_errno(r);
}

int mqtt_client_publish(MqttClient *c, const char *topic, const void *payload, size_t len, int qos, bool retain) {
        return mqtt_client_publish_due(c, topic, payload, len, qos, retain, now_usec(CLOCK_MONOTONIC));
}

int mqtt_client_publish_due(MqttClient *c, const char *topic, const void *payload, size_t len, int qos,
                            bool retain, uint64_t due_usec) {
        int mid = 0, r;

        if (!c->mosq || !c->connected)
                return -ENOTCONN;
        if (len > INT32_MAX)
                return -EMSGSIZE;
        if (c->protocol == 5 && c->publish_props)
                r = mosquitto_publish_v5(c->mosq, &mid, topic, (int) len, payload, qos, retain, c->publish_props);
        else
                r = mosquitto_publish(c->mosq, &mid, topic, (int) len, payload, qos, retain);
        if (r == MOSQ_ERR_SUCCESS) {
                c->msgs_out++;
                c->unacked++;
                if (qos == 1) {
                        if (c->n_pubs == MQTT_TIMED_MAX) {
                                memmove(&c->pubs[0], &c->pubs[1], (MQTT_TIMED_MAX - 1) * sizeof c->pubs[0]);
                                c->n_pubs--;
                        }
                        c->pubs[c->n_pubs].mid = mid;
                        c->pubs[c->n_pubs].usec = due_usec;
                        c->n_pubs++;
                }
        }
        client_sync(c);
        return mqtt_error_to_errno(r);
}

const MqttAttemptInfo *mqtt_client_attempt(const MqttClient *c) {
        return &c->attempt;
}

unsigned mqtt_client_unacked(const MqttClient *c) {
        return c->mosq ? c->unacked : 0;
}

bool mqtt_client_is_connected(const MqttClient *c) {
        return c->mosq && c->connected;
}

uint64_t mqtt_client_msgs_in(const MqttClient *c) {
        return c->msgs_in;
}

uint64_t mqtt_client_msgs_out(const MqttClient *c) {
        return c->msgs_out;
}

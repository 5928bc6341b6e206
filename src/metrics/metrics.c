/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/macro.h"
#include "metrics/metrics.h"

static const char *const generic_reason_table[_METRIC_REASON_GENERIC_MAX] = {
        [METRIC_REASON_OTHER] = "other",
        [METRIC_REASON_REQUESTED] = "requested",
        [METRIC_REASON_TCP_REFUSED] = "tcp_refused",
        [METRIC_REASON_TCP_TIMEOUT] = "tcp_timeout",
        [METRIC_REASON_TCP_UNREACHABLE] = "tcp_unreachable",
        [METRIC_REASON_TCP_RESET] = "tcp_reset",
        [METRIC_REASON_TLS_HANDSHAKE] = "tls_handshake",
        [METRIC_REASON_CERT_VERIFY] = "cert_verify_failed",
        [METRIC_REASON_NO_CONNACK] = "no_connack",
        [METRIC_REASON_SUBACK_REFUSED] = "suback_refused",
        [METRIC_REASON_KEEPALIVE] = "keepalive_timeout",
        [METRIC_REASON_PROTOCOL] = "protocol_error",
        [METRIC_REASON_POWER_CUT] = "power_cut",
        [METRIC_REASON_CHURN] = "churn",
        [METRIC_REASON_STORM] = "storm",
};

/* TLS alert descriptions (RFC 8446 §6.2, RFC 5246 §7.2.2 for the older ones). */
static const char *tls_alert_name(unsigned d) {
        switch (d) {
        case 0: return "close_notify";
        case 10: return "unexpected_message";
        case 20: return "bad_record_mac";
        case 21: return "decryption_failed";
        case 22: return "record_overflow";
        case 30: return "decompression_failure";
        case 40: return "handshake_failure";
        case 41: return "no_certificate";
        case 42: return "bad_certificate";
        case 43: return "unsupported_certificate";
        case 44: return "certificate_revoked";
        case 45: return "certificate_expired";
        case 46: return "certificate_unknown";
        case 47: return "illegal_parameter";
        case 48: return "unknown_ca";
        case 49: return "access_denied";
        case 50: return "decode_error";
        case 51: return "decrypt_error";
        case 60: return "export_restriction";
        case 70: return "protocol_version";
        case 71: return "insufficient_security";
        case 80: return "internal_error";
        case 86: return "inappropriate_fallback";
        case 90: return "user_canceled";
        case 100: return "no_renegotiation";
        case 109: return "missing_extension";
        case 110: return "unsupported_extension";
        case 111: return "certificate_unobtainable";
        case 112: return "unrecognized_name";
        case 113: return "bad_certificate_status_response";
        case 114: return "bad_certificate_hash_value";
        case 115: return "unknown_psk_identity";
        case 116: return "certificate_required";
        case 120: return "no_application_protocol";
        default: return NULL;
        }
}

/* CONNACK return codes: MQTT 3.1.1 §3.2.2.3, and the MQTT 5 reason codes
 * (§3.2.2.2) a CONNACK can carry. */
static const char *connack_name(unsigned c) {
        switch (c) {
        case 1: return "unacceptable_protocol_version";
        case 2: return "identifier_rejected";
        case 3: return "server_unavailable";
        case 4: return "bad_username_or_password";
        case 5: return "not_authorized";
        case 0x80: return "unspecified_error";
        case 0x81: return "malformed_packet";
        case 0x82: return "protocol_error";
        case 0x83: return "implementation_specific_error";
        case 0x84: return "unsupported_protocol_version";
        case 0x85: return "client_identifier_not_valid";
        case 0x86: return "bad_user_name_or_password";
        case 0x87: return "not_authorized_v5";
        case 0x88: return "server_unavailable_v5";
        case 0x89: return "server_busy";
        case 0x8a: return "banned";
        case 0x8c: return "bad_authentication_method";
        case 0x90: return "topic_name_invalid";
        case 0x95: return "packet_too_large";
        case 0x97: return "quota_exceeded";
        case 0x99: return "payload_format_invalid";
        case 0x9a: return "retain_not_supported";
        case 0x9b: return "qos_not_supported";
        case 0x9c: return "use_another_server";
        case 0x9d: return "server_moved";
        case 0x9f: return "connection_rate_exceeded";
        default: return NULL;
        }
}

const char *metrics_reason_name(unsigned reason, char *buf, size_t size) {
        unsigned cls = reason >> 8, d = reason & 0xffu;
        const char *n;

        switch ((MetricReasonClass) cls) {
        case METRIC_REASON_GENERIC:
                return d < _METRIC_REASON_GENERIC_MAX ? generic_reason_table[d] : NULL;
        case METRIC_REASON_TLS_ALERT:
                n = tls_alert_name(d);
                if (n)
                        snprintf(buf, size, "tls_alert_%s", n);
                else
                        snprintf(buf, size, "tls_alert_%u", d);
                return buf;
        case METRIC_REASON_CONNACK:
                n = connack_name(d);
                if (n)
                        snprintf(buf, size, "connack_%s", n);
                else
                        snprintf(buf, size, "connack_%u", d);
                return buf;
        case METRIC_REASON_ERRNO: {
                const char *e = d > 0 ? strerrorname_np((int) d) : NULL;
                if (!e)
                        snprintf(buf, size, "errno_%u", d);
                else {
                        size_t i = 0;
                        i += (size_t) snprintf(buf, size, "errno_");
                        for (; *e && i + 1 < size; e++)
                                buf[i++] = (char) (*e >= 'A' && *e <= 'Z' ? *e - 'A' + 'a' : *e);
                        if (i < size)
                                buf[i] = 0;
                }
                return buf;
        }
        case _METRIC_REASON_CLASS_MAX:
                break;
        }
        return NULL;
}

size_t metrics_block_size(size_t n_devices) {
        size_t sz = offsetof(MetricsBlock, devices) + n_devices * sizeof(MetricsDevice);
        long page = sysconf(_SC_PAGESIZE);
        size_t p = page > 0 ? (size_t) page : 4096;

        return (sz + p - 1) / p * p;
}

int metrics_block_init(MetricsBlock *b, unsigned worker, size_t n_devices) {
        if (b->magic == 0 && b->version == 0) {
                b->magic = METRICS_MAGIC;
                b->version = METRICS_VERSION;
                b->worker = worker;
                b->n_devices = (uint32_t) n_devices;
                return 0;
        }
        if (b->magic != METRICS_MAGIC || b->version != METRICS_VERSION || b->worker != worker ||
            b->n_devices != n_devices)
                return -EBADMSG;
        return 0;
}

int metrics_block_create(unsigned worker, size_t n_devices, int *ret_fd, MetricsBlock **ret) {
        size_t size = metrics_block_size(n_devices);
        char name[32];
        int fd, r;

        snprintf(name, sizeof name, "espfleet-metrics-%u", worker);
        fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t) size) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        /* the size is part of the layout: nobody may change it */
        (void) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
                r = -errno;
                close(fd);
                return r;
        }
        r = metrics_block_init(p, worker, n_devices);
        if (r < 0) {
                munmap(p, size);
                close(fd);
                return r;
        }
        *ret_fd = fd;
        *ret = p;
        return 0;
}

int metrics_block_map(int fd, MetricsBlock **ret, size_t *ret_size) {
        struct stat st;
        MetricsBlock *b;

        if (fstat(fd, &st) < 0)
                return -errno;
        if ((size_t) st.st_size < sizeof(MetricsBlock))
                return -EBADMSG;
        b = mmap(NULL, (size_t) st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (b == MAP_FAILED)
                return -errno;
        if (b->magic != METRICS_MAGIC || b->version != METRICS_VERSION ||
            metrics_block_size(b->n_devices) != (size_t) st.st_size) {
                munmap(b, (size_t) st.st_size);
                return -EBADMSG;
        }
        *ret = b;
        *ret_size = (size_t) st.st_size;
        return 0;
}

void metrics_block_unmap(MetricsBlock *b, size_t size) {
        if (b)
                (void) munmap(b, size);
}

void metrics_connect_failed(MetricsBlock *b, unsigned reason) {
        if (b && reason < METRIC_REASON_SLOTS)
                b->connect_failures[reason]++;
}

void metrics_disconnected(MetricsBlock *b, unsigned reason) {
        if (b && reason < METRIC_REASON_SLOTS)
                b->disconnects[reason]++;
}

void metrics_ota_result(MetricsBlock *b, int err) {
        if (!b)
                return;
        for (size_t i = 0; i < METRIC_OTA_RESULT_SLOTS; i++) {
                MetricsOtaResult *s = &b->ota_results[i];
                if (s->used && s->code == err) {
                        s->count++;
                        return;
                }
                if (!s->used) {
                        s->code = err;
                        s->count = 1;
                        __atomic_store_n(&s->used, 1, __ATOMIC_RELEASE);
                        return;
                }
        }
        /* more distinct codes than slots: the last slot takes the rest */
        b->ota_results[METRIC_OTA_RESULT_SLOTS - 1].count++;
}

void metrics_device_begin(MetricsDevice *d) {
        __atomic_store_n(&d->seq, d->seq + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
}

void metrics_device_end(MetricsDevice *d) {
        __atomic_thread_fence(__ATOMIC_RELEASE);
        __atomic_store_n(&d->seq, d->seq + 1, __ATOMIC_RELAXED);
}

void metrics_device_read(const MetricsDevice *src, MetricsDevice *ret) {
        for (unsigned tries = 0;; tries++) {
                uint32_t a = __atomic_load_n(&src->seq, __ATOMIC_ACQUIRE);
                memcpy(ret, src, sizeof *ret);
                __atomic_thread_fence(__ATOMIC_ACQUIRE);
                uint32_t b = __atomic_load_n(&src->seq, __ATOMIC_RELAXED);
                /* the writer is another process's loop, inside a few stores */
                if ((a == b && !(a & 1)) || tries > 10000)
                        break;
        }
        /* whatever happened, the strings end */
        ret->id[sizeof ret->id - 1] = 0;
        ret->broker[sizeof ret->broker - 1] = 0;
        ret->version[sizeof ret->version - 1] = 0;
        ret->last_error[sizeof ret->last_error - 1] = 0;
        for (size_t i = 0; i < METRICS_OTA_HISTORY; i++)
                ret->ota_history[i].version[sizeof ret->ota_history[i].version - 1] = 0;
}

void metrics_set_string(char *field, size_t size, const char *value) {
        size_t n = value ? strnlen(value, size - 1) : 0;

        memcpy(field, value ? value : "", n);
        memset(field + n, 0, size - n);
}

MetricsBlock *metrics_totals_new(void) {
        return calloc(1, sizeof(MetricsBlock));
}

void metrics_totals_add(MetricsBlock *t, const MetricsBlock *b) {
        for (size_t i = 0; i < _METRIC_COUNTER_MAX; i++)
                t->counters[i] += b->counters[i];
        for (size_t i = 0; i < METRIC_REASON_SLOTS; i++) {
                t->connect_failures[i] += b->connect_failures[i];
                t->disconnects[i] += b->disconnects[i];
        }
        for (size_t i = 0; i < METRIC_OTA_RESULT_SLOTS; i++) {
                const MetricsOtaResult *s = &b->ota_results[i];
                if (!__atomic_load_n(&s->used, __ATOMIC_ACQUIRE))
                        break;
                size_t j;
                for (j = 0; j < METRIC_OTA_RESULT_SLOTS - 1; j++)
                        if (!t->ota_results[j].used || t->ota_results[j].code == s->code)
                                break;
                t->ota_results[j].used = 1;
                t->ota_results[j].code = s->code;
                t->ota_results[j].count += s->count;
        }
        for (size_t i = 0; i < METRIC_STATE_SLOTS; i++)
                t->devices_in_state[i] += b->devices_in_state[i];
        t->downloads_active += b->downloads_active;
        t->downloads_queued += b->downloads_queued;
        t->worker_starts += b->worker_starts;
        t->n_devices += b->n_devices;
        if (b->started_usec && (!t->started_usec || b->started_usec < t->started_usec))
                t->started_usec = b->started_usec;
        for (size_t i = 0; i < _METRIC_HISTOGRAM_MAX; i++)
                histogram_merge(&t->histograms[i], &b->histograms[i]);
}

/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_OTA

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/string-table.h"
#include "dsemu/efuse.h"
#include "image/sbv2.h"
#include "ota/ota-session.h"
#include "ota/ota-writer.h"

#define DEFAULT_MAX_RETRIES 3u
#define DEFAULT_RETRY_BASE_USEC (1000u * 1000u)
#define DEFAULT_RETRY_MAX_USEC (60ull * 1000u * 1000u)
#define DEFAULT_LOW_SPEED_TIME_S 30u
#define HTTP_BUFFER_SIZE (16u * 1024u)
#define USEC_PER_SEC 1000000ull

struct OtaSession {
        sd_event *event;                 /* not owned (a reference is held) */
        HttpClient *http;                /* not owned */
        Flash *flash;                    /* not owned */
        const PartitionTable *table;     /* not owned */
        Efuse *efuse;                    /* not owned */
        BootApp running;
        OtaSessionOptions opts;          /* strings below are owned copies */
        char *url, *ca_file, *device_id;
        OtaSessionCallbacks cb;
        void *userdata;

        OtaSessionState state;
        OtaWriter *writer;
        HttpTransfer *transfer;
        sd_event_source *timer;

        unsigned attempts;               /* requests made */
        unsigned retries;                /* retries used */
        bool range_refused;              /* the server does not do Range: restart from 0 */
        bool restart;                    /* the next attempt starts from byte 0 (the image changed) */
        bool resumed;                    /* this attempt asked for a Range */
        bool desc_seen;
        int writer_error;                /* the image was refused (final) */
        int64_t total_len;               /* whole body length from HTTP (Content-Length of a 200,
                                          * Content-Range total of a 206), -1 unknown */
        int64_t body_end;                /* where this attempt's body must end (offset + Content-Length),
                                          * -1 when the server sent no length (HTTP/1.0, s_server -WWW) */
        int last_decile;                 /* last 10 % step reported */
        uint64_t bytes;                  /* bytes received, all attempts */
        char new_version[33];
        uint32_t new_secure_version;
        char message[320];
};

static const char *const ota_session_state_table[_OTA_SESSION_STATE_MAX] = {
        [OTA_SESSION_IDLE] = "idle",
        [OTA_SESSION_WAITING] = "waiting",
        [OTA_SESSION_CONNECTING] = "connecting",
        [OTA_SESSION_DOWNLOADING] = "downloading",
        [OTA_SESSION_VERIFYING] = "verifying",
        [OTA_SESSION_DONE] = "done",
        [OTA_SESSION_FAILED] = "failed",
};
DEFINE_STRING_TABLE_LOOKUP(ota_session_state, OtaSessionState);

static const char *const ota_event_table[_OTA_EVENT_MAX] = {
        [OTA_EVENT_START] = "ESP_HTTPS_OTA_START",
        [OTA_EVENT_CONNECTED] = "ESP_HTTPS_OTA_CONNECTED",
        [OTA_EVENT_GET_IMG_DESC] = "ESP_HTTPS_OTA_GET_IMG_DESC",
        [OTA_EVENT_VERIFY_CHIP_ID] = "ESP_HTTPS_OTA_VERIFY_CHIP_ID",
        [OTA_EVENT_WRITE_FLASH] = "ESP_HTTPS_OTA_WRITE_FLASH",
        [OTA_EVENT_UPDATE_BOOT_PARTITION] = "ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION",
        [OTA_EVENT_FINISH] = "ESP_HTTPS_OTA_FINISH",
        [OTA_EVENT_ABORT] = "ESP_HTTPS_OTA_ABORT",
};
DEFINE_STRING_TABLE_LOOKUP(ota_event, OtaEvent);

static void session_log(OtaSession *s, char level, const char *tag, const char *fmt, ...) _printf_(4, 5);
static void session_log(OtaSession *s, char level, const char *tag, const char *fmt, ...) {
        char msg[400];
        va_list ap;

        if (!s->cb.log)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        s->cb.log(s, level, tag, msg, s->userdata);
}

static void session_event(OtaSession *s, OtaEvent e, int64_t arg) {
        if (s->cb.event)
                s->cb.event(s, e, arg, s->userdata);
}

static void ota_session_enter_state(OtaSession *s, OtaSessionState state) {
        if (s->state == state)
                return;
        log_full_errno(LOG_DEBUG, LOG_TOPIC, s->device_id, 0, "OTA state %s -> %s",
                       ota_session_state_to_string(s->state), ota_session_state_to_string(state));
        s->state = state;
        /* only WAITING keeps a timer armed */
        if (state != OTA_SESSION_WAITING && s->timer)
                (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
}

/* Terminal: reports once. `s` may be freed by the outcome callback. */
static void session_finish(OtaSession *s, int error, const char *fmt, ...) _printf_(3, 4);
static void session_finish(OtaSession *s, int error, const char *fmt, ...) {
        OtaOutcome o;
        va_list ap;

        if (fmt) {
                va_start(ap, fmt);
                vsnprintf(s->message, sizeof s->message, fmt, ap);
                va_end(ap);
        } else
                s->message[0] = 0;

        s->transfer = http_transfer_cancel(s->transfer);
        o = (OtaOutcome) {
                .ok = error == 0,
                .error = error,
                .message = s->message,
                .new_version = s->new_version[0] ? s->new_version : NULL,
                .new_secure_version = s->new_secure_version,
                .new_slot = error == 0 && s->writer ? (int) ota_writer_target_slot(s->writer) : -1,
                .attempts = s->attempts,
                .bytes = s->bytes,
        };
        /* how far it got: the image bytes in the slot, of the total when the
         * server said one */
        char got[96] = "";
        if (error < 0) {
                uint64_t written = s->writer ? ota_writer_written(s->writer) : 0;
                if (s->total_len > 0)
                        snprintf(got, sizeof got, " (%" PRIu64 " of %" PRId64 " bytes had arrived)", written,
                                 s->total_len);
                else
                        snprintf(got, sizeof got, " (%" PRIu64 " bytes had arrived)", written);
        }
        if (error < 0 && s->writer)
                /* esp_https_ota_abort(): whatever part of the image reached
                 * the passive slot must not be bootable */
                (void) ota_writer_abort(s->writer);
        s->writer = ota_writer_free(s->writer);

        if (error == 0) {
                ota_session_enter_state(s, OTA_SESSION_DONE);
                log_full_errno(LOG_INFO, LOG_TOPIC, s->device_id, 0,
                               "OTA from '%s' done: version %s in ota_%d (%u request(s), %" PRIu64 " bytes)",
                               s->url, strna(o.new_version), o.new_slot, s->attempts, s->bytes);
        } else {
                ota_session_enter_state(s, OTA_SESSION_FAILED);
                session_event(s, OTA_EVENT_ABORT, 0);
                session_log(s, 'E', "esp_https_ota", "ESP_HTTPS_OTA upgrade failed: %s: %s%s", esp_err_to_name(error),
                            s->message, got);
                log_full_errno(LOG_WARNING, LOG_TOPIC, s->device_id, 0, "OTA from '%s' failed: %s: %s%s", s->url,
                               esp_err_to_name(error), s->message, got);
        }
        if (s->cb.outcome)
                s->cb.outcome(s, &o, s->userdata);
}

static int session_arm_timer(OtaSession *s, uint64_t usec);

static uint64_t session_backoff(OtaSession *s) {
        uint64_t d = s->opts.retry_base_usec;

        for (unsigned i = 1; i < s->retries && d < s->opts.retry_max_usec; i++)
                d *= 2;
        d = MIN(d, s->opts.retry_max_usec);
        /* ±25 % jitter so that a fleet does not retry in lockstep */
        if (d >= 4)
                d = d - d / 4 + arc4random_uniform((uint32_t) MIN(d / 2 + 1, (uint64_t) UINT32_MAX));
        return d;
}

/* After a transient failure: retry (with backoff), or give up. A server's
 * Retry-After (RFC 9110 §10.2.3; with 503 and 429) is a floor for this one
 * delay, capped by retry_max_usec so that a server cannot park a device. */
static void session_retry_or_fail(OtaSession *s, int error, const char *message, uint64_t retry_after_s) {
        char why[96] = "";

        if (s->retries >= s->opts.max_retries) {
                session_finish(s, error, "%s (gave up after %u attempt(s))", message, s->attempts);
                return;
        }
        s->retries++;
        uint64_t d = session_backoff(s);
        if (retry_after_s > 0) {
                uint64_t ra = MIN(retry_after_s, UINT64_MAX / USEC_PER_SEC) * USEC_PER_SEC;
                bool capped = ra > s->opts.retry_max_usec;

                d = MAX(d, MIN(ra, s->opts.retry_max_usec));
                snprintf(why, sizeof why, " (Retry-After: %" PRIu64 " s%s)", retry_after_s,
                         capped ? ", capped by the backoff maximum" : "");
        }
        session_log(s, 'W', "esp_https_ota", "Download failed (%s: %s); retry %u/%u in %" PRIu64 " ms%s",
                    esp_err_to_name(error), message, s->retries, s->opts.max_retries, d / 1000, why);
        ota_session_enter_state(s, OTA_SESSION_WAITING);
        int k = session_arm_timer(s, d);
        if (k < 0)
                session_finish(s, k, "cannot arm the retry timer");
}

static int on_http_headers(HttpTransfer *t, const HttpResponseInfo *info, void *userdata) {
        OtaSession *s = userdata;

        ota_session_enter_state(s, OTA_SESSION_DOWNLOADING);
        if (s->resumed && s->total_len > 0 && info->total_length > 0 && info->total_length != s->total_len) {
                /* a new file under the same URL since the last attempt: the
                 * bytes on flash belong to another image; splicing the two
                 * would only fail validation at the end */
                snprintf(s->message, sizeof s->message,
                         "the file on the server changed (%" PRId64 " bytes, was %" PRId64 ")", info->total_length,
                         s->total_len);
                s->total_len = info->total_length;
                s->restart = true;
                return -ESP_ERR_INVALID_SIZE;
        }
        if (info->total_length > 0)
                s->total_len = info->total_length;
        if (info->content_length >= 0)
                s->body_end = (int64_t) ota_writer_written(s->writer) + info->content_length;
        else if (info->status == 206 && info->total_length > 0)
                s->body_end = info->total_length;
        else
                s->body_end = -1;
        if (s->attempts == 1)
                session_event(s, OTA_EVENT_CONNECTED, 0);
        if (s->resumed)
                session_log(s, 'I', "esp_https_ota", "Resuming the download at byte %" PRId64 " of %" PRId64
                            " (HTTP %ld)", info->range_start, s->total_len, info->status);
        return 0;
}

/* The size to count percentages against: the HTTP length when the server
 * sent one; otherwise (s_server -WWW: HTTP/1.0, no Content-Length) the image's
 * own length once its last segment header was parsed, plus the signature
 * sector when this device requires one. `estimated` is set in the latter case:
 * the image may still carry bytes we did not expect (a signature sector on a
 * device that does not check it), so such a total never reaches 100 % before
 * the body has ended. */
static int64_t session_total(OtaSession *s, bool *estimated) {
        uint64_t image_len = ota_writer_image_len(s->writer);
        bool need_sig = efuse_secure_boot_enabled(s->efuse) || s->opts.signed_apps_no_secure_boot;

        *estimated = false;
        if (s->total_len > 0)
                return s->total_len;
        if (image_len == 0)
                return -1;
        *estimated = true;
        return (int64_t) (need_sig ? ALIGN_TO(image_len, SBV2_SECTOR_SIZE) + SBV2_SECTOR_SIZE : image_len);
}

/* With no Content-Length the total is only an estimate (from the image
 * header): then the line says what was written and no share of a total it
 * does not know. */
static void session_progress_report(OtaSession *s, uint64_t done, int64_t total, bool estimated, int decile) {
        s->last_decile = decile;
        session_event(s, OTA_EVENT_WRITE_FLASH, (int64_t) done);
        if (estimated)
                session_log(s, 'I', "esp_https_ota", "Image bytes written: %" PRIu64, done);
        else
                session_log(s, 'I', "esp_https_ota", "Image bytes written: %" PRIu64 " of %" PRId64 " (%d %%)", done,
                            total, decile * 10);
}

static void session_progress(OtaSession *s) {
        uint64_t done = ota_writer_written(s->writer);
        bool estimated;
        int64_t total = session_total(s, &estimated);
        int decile;

        if (total <= 0)
                return;
        decile = (int) MIN((uint64_t) (estimated ? 9 : 10), done * 10 / (uint64_t) total);
        if (decile <= s->last_decile)
                return;
        session_progress_report(s, done, total, estimated, decile);
}

/* The body ended and is complete: whatever the total was (or was not), the
 * last progress line says 100 %. */
static void session_progress_end(OtaSession *s) {
        uint64_t done = ota_writer_written(s->writer);

        if (s->last_decile < 10)
                session_progress_report(s, done, (int64_t) done, false, 10);
}

static int on_http_data(HttpTransfer *t, const void *data, size_t size, void *userdata) {
        OtaSession *s = userdata;
        char err[300] = "";
        int k;

        s->bytes += size;
        k = ota_writer_write(s->writer, data, size, err, sizeof err);
        if (k < 0) {
                s->writer_error = k;
                snprintf(s->message, sizeof s->message, "%s", err);
                return k;
        }
        if (!s->desc_seen && ota_writer_have_desc(s->writer)) {
                const AppDesc *d = ota_writer_desc(s->writer);

                s->desc_seen = true;
                snprintf(s->new_version, sizeof s->new_version, "%s", d->version);
                s->new_secure_version = d->secure_version;
                session_event(s, OTA_EVENT_GET_IMG_DESC, 0);
                session_event(s, OTA_EVENT_VERIFY_CHIP_ID, ota_writer_image_chip_id(s->writer));
                session_log(s, 'I', "esp_https_ota", "Running firmware version: %s", s->running.desc.version);
                session_log(s, 'I', "esp_https_ota", "New firmware version: %s (secure_version %" PRIu32 ")",
                            d->version, d->secure_version);
                session_log(s, 'I', "esp_ota_ops", "Writing to partition ota_%u", ota_writer_target_slot(s->writer));
        }
        session_progress(s);
        return 0;
}

/* Where does the body end? (§8, esp_https_ota_perform)
 *
 * - With a length (Content-Length, or the Content-Range of a 206), fewer
 *   bytes than announced is a cut download: resume it. curl normally reports
 *   that itself (CURLE_PARTIAL_FILE); this catches anything that slips past.
 * - Without one (`openssl s_server -WWW` answers HTTP/1.0 and closes), the
 *   body ends at EOF. esp_https_ota reads until esp_http_client_read()
 *   returns 0 and treats it as a lost connection only when the socket
 *   reported an error (ENOTCONN, ECONNRESET, ECONNABORTED); a clean EOF is the
 *   end of the image, and esp_https_ota_finish() → esp_ota_end() verifies
 *   what arrived. So do we: a transfer that ended with an error is a cut
 *   (retried, resumed with Range), whatever the image headers say; a clean
 *   EOF goes to verification even when the image is incomplete by its own
 *   headers (truncated in a segment, before its hash, or without the
 *   signature sector that this device requires), which then fails with
 *   ESP_ERR_OTA_VALIDATE_FAILED and leaves the slot unbootable. We do not
 *   guess "cut" from the image layout: an unsigned image and a cut signed one
 *   look alike at that point, and retrying an unsigned image only ends in a
 *   misleading ESP_ERR_HTTP_CONNECTION_CLOSED. */
static bool session_body_short(OtaSession *s) {
        return s->body_end >= 0 && ota_writer_written(s->writer) < (uint64_t) s->body_end;
}

static void session_verify(OtaSession *s) {
        char err[300] = "";
        unsigned slot;
        int k;

        ota_session_enter_state(s, OTA_SESSION_VERIFYING);
        k = ota_writer_finish(s->writer, err, sizeof err);
        if (k < 0) {
                session_finish(s, k, "%s", err);
                return;
        }
        slot = ota_writer_target_slot(s->writer);
        k = ota_writer_set_boot(s->writer, err, sizeof err);
        if (k < 0) {
                session_finish(s, k, "%s", err);
                return;
        }
        session_event(s, OTA_EVENT_UPDATE_BOOT_PARTITION, PARTITION_SUBTYPE_APP_OTA_MIN + slot);
        session_log(s, 'I', "esp_ota_ops", "Image validated; boot partition set to ota_%u", slot);
        session_event(s, OTA_EVENT_FINISH, 0);
        session_log(s, 'I', "esp_https_ota", "ESP_HTTPS_OTA upgrade successful. Rebooting ...");
        session_finish(s, 0, NULL);
}

/* The retry policy (README "OTA server faults"). ESP-IDF leaves retries to
 * the application (esp_https_ota returns, §8); ours retries what another
 * request can end differently: a refused, reset, stalled or cut connection, a
 * missing header, 5xx, 408 and 429. Final, because the next request meets the
 * same answer: the image refused (handled by the caller), a certificate or
 * host name that does not verify, any other 3xx or 4xx (416 only on a request
 * from byte 0; on a resumption it means "start over"), 304, a redirect loop,
 * and a URL or redirect that is not https://. */
static bool session_failure_is_final(OtaSession *s, int error, const HttpDoneInfo *info) {
        long status = info ? info->status : 0;

        if (info && info->peer_verify_failed)
                return true;
        switch (error) {
        case -ESP_ERR_HTTP_INVALID_TRANSPORT:
        case -ESP_ERR_HTTP_MAX_REDIRECT:
        case -ESP_ERR_HTTP_NOT_MODIFIED:
                return true;
        case -ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE:
                return !s->resumed;
        case -ESP_FAIL_CODE:
                return status >= 300 && status < 500 && status != 408 && status != 429;
        default:
                return false;
        }
}

static void on_http_done(HttpTransfer *t, int result, const char *message, void *userdata) {
        OtaSession *s = userdata;
        const HttpDoneInfo *info = http_transfer_done_info(t);

        s->transfer = NULL;
        if (result == 0 && session_body_short(s)) {
                result = -ESP_ERR_HTTP_CONNECTION_CLOSED;
                message = "the connection closed before the announced end of the body";
        }
        if (result == 0) {
                session_progress_end(s);
                session_verify(s);
                return;
        }
        if (s->writer_error < 0) {
                /* the image was refused: final (message already in s->message) */
                char msg[sizeof s->message];

                snprintf(msg, sizeof msg, "%s", s->message);
                session_finish(s, s->writer_error, "%s", msg);
                return;
        }
        if (s->restart) {
                /* counts as a retry, so that a server flipping between files
                 * cannot keep us here */
                char msg[sizeof s->message + 32];

                snprintf(msg, sizeof msg, "%s; restarting from byte 0", s->message);
                session_retry_or_fail(s, result, msg, 0);
                return;
        }
        if (session_failure_is_final(s, result, info)) {
                session_finish(s, result, "%s", message);
                return;
        }
        if (result == -ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE && s->resumed) {
                /* §8: no 206 for the resumption: one more try from byte 0 */
                s->range_refused = true;
                session_log(s, 'W', "esp_https_ota", "The server did not resume (%s: %s); restarting from byte 0",
                            esp_err_to_name(result), message);
                ota_session_enter_state(s, OTA_SESSION_WAITING);
                int k = session_arm_timer(s, 0);
                if (k < 0)
                        session_finish(s, k, "cannot arm the retry timer");
                return;
        }
        session_retry_or_fail(s, result, message, info ? info->retry_after_s : 0);
}

static void session_attempt(OtaSession *s) {
        char err[300] = "";
        uint64_t offset = 0;
        int k;

        /* resume where the last attempt's bytes on flash end (≥ 1,024) */
        if (s->writer)
                (void) ota_writer_flush(s->writer, NULL, 0);
        if (s->writer && !s->range_refused && !s->restart && ota_writer_flashed(s->writer) >= APP_IMAGE_PEEK_LEN)
                offset = ota_writer_flashed(s->writer);
        s->restart = false;
        if (s->writer && offset == 0)
                /* starting over: the earlier bytes are abandoned; should this
                 * attempt never write, they must not stay bootable either */
                (void) ota_writer_abort(s->writer);
        s->writer = ota_writer_free(s->writer);
        s->writer_error = 0;

        k = ota_writer_new(s->flash, s->table, s->efuse, &s->running,
                           &(OtaWriterOptions) {
                                   .chip_id = s->opts.chip_id,
                                   .allow_equal_version = s->opts.allow_equal_version,
                                   .signed_apps_no_secure_boot = s->opts.signed_apps_no_secure_boot,
                           },
                           &s->writer, err, sizeof err);
        if (k < 0) {
                session_finish(s, k, "%s", err);
                return;
        }
        if (offset > 0) {
                k = ota_writer_resume(s->writer, offset, err, sizeof err);
                if (k < 0) {
                        session_log(s, 'W', "esp_https_ota", "Cannot resume: %s; restarting from byte 0", err);
                        (void) ota_writer_abort(s->writer);
                        s->writer = ota_writer_free(s->writer);
                        k = ota_writer_new(s->flash, s->table, s->efuse, &s->running,
                                           &(OtaWriterOptions) {
                                                   .chip_id = s->opts.chip_id,
                                                   .allow_equal_version = s->opts.allow_equal_version,
                                                   .signed_apps_no_secure_boot = s->opts.signed_apps_no_secure_boot,
                                           },
                                           &s->writer, err, sizeof err);
                        if (k < 0) {
                                session_finish(s, k, "%s", err);
                                return;
                        }
                        offset = 0;
                }
        }
        s->resumed = offset > 0;
        s->body_end = -1;
        /* a resumed download goes on from the percentage it had reached */
        if (offset == 0) {
                s->last_decile = 0;
                /* from byte 0 the descriptor is read (and reported) again: it
                 * may be another image than last time */
                s->desc_seen = false;
                s->new_version[0] = 0;
                s->new_secure_version = 0;
        }
        s->attempts++;

        ota_session_enter_state(s, OTA_SESSION_CONNECTING);
        k = http_transfer_start(s->http,
                                &(HttpRequest) {
                                        .url = s->url,
                                        .ca_file = s->ca_file,
                                        .range_start = offset,
                                        .allow_plain_http = s->opts.allow_plain_http,
                                        .connect_timeout_ms = s->opts.connect_timeout_ms,
                                        .low_speed_limit = s->opts.low_speed_limit,
                                        .low_speed_time_s = s->opts.low_speed_time_s,
                                        .buffer_size = HTTP_BUFFER_SIZE,
                                        .on_headers = on_http_headers,
                                        .on_data = on_http_data,
                                        .on_done = on_http_done,
                                        .userdata = s,
                                },
                                &s->transfer);
        if (k < 0)
                session_finish(s, k, "cannot start the HTTP request");
}

static int on_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        OtaSession *s = userdata;

        if (s->state == OTA_SESSION_WAITING)
                session_attempt(s);
        return 0;
}

static int session_arm_timer(OtaSession *s, uint64_t usec) {
        int k;

        if (!s->timer) {
                k = sd_event_add_time_relative(s->event, &s->timer, CLOCK_MONOTONIC, usec, 1000, on_timer, s);
                if (k < 0)
                        return k;
                (void) sd_event_source_set_description(s->timer, "ota-session");
        } else {
                k = sd_event_source_set_time_relative(s->timer, usec);
                if (k < 0)
                        return k;
        }
        return sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

int ota_session_new(sd_event *event, HttpClient *http, Flash *flash, const PartitionTable *table, Efuse *efuse,
                    const BootApp *running, const OtaSessionOptions *o, const OtaSessionCallbacks *cb,
                    void *userdata, OtaSession **ret) {
        OtaSession *s;

        if (!event || !http || !flash || !table || !efuse || !running || !o || !o->url || !ret)
                return -EINVAL;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->http = http;
        s->flash = flash;
        s->table = table;
        s->efuse = efuse;
        s->running = *running;
        s->opts = *o;
        s->url = strdup(o->url);
        s->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
        s->device_id = o->device_id ? strdup(o->device_id) : NULL;
        if (!s->url || (o->ca_file && !s->ca_file) || (o->device_id && !s->device_id)) {
                ota_session_free(s);
                return -ENOMEM;
        }
        s->opts.url = s->url;
        s->opts.ca_file = s->ca_file;
        s->opts.device_id = s->device_id;
        if (s->opts.max_retries == 0 && o->retry_base_usec == 0)
                s->opts.max_retries = DEFAULT_MAX_RETRIES;
        if (s->opts.retry_base_usec == 0)
                s->opts.retry_base_usec = DEFAULT_RETRY_BASE_USEC;
        if (s->opts.retry_max_usec == 0)
                s->opts.retry_max_usec = DEFAULT_RETRY_MAX_USEC;
        if (s->opts.low_speed_limit == 0)
                s->opts.low_speed_limit = 1;
        if (s->opts.low_speed_time_s == 0)
                s->opts.low_speed_time_s = DEFAULT_LOW_SPEED_TIME_S;
        if (cb)
                s->cb = *cb;
        s->userdata = userdata;
        s->total_len = -1;
        s->body_end = -1;
        s->state = OTA_SESSION_IDLE;
        *ret = s;
        return 0;
}

OtaSession *ota_session_free(OtaSession *s) {
        if (!s)
                return NULL;
        http_transfer_cancel(s->transfer);
        sd_event_source_disable_unref(s->timer);
        if (s->writer)
                /* freed mid-download (device restart, daemon stop, cancel):
                 * the partial image in the passive slot must not boot */
                (void) ota_writer_abort(s->writer);
        ota_writer_free(s->writer);
        sd_event_unref(s->event);
        free(s->url);
        free(s->ca_file);
        free(s->device_id);
        free(s);
        return NULL;
}

int ota_session_start(OtaSession *s) {
        uint64_t delay = 0;
        int k;

        if (!s)
                return -EINVAL;
        if (s->state != OTA_SESSION_IDLE)
                return -EBUSY;

        session_event(s, OTA_EVENT_START, 0);
        session_log(s, 'I', "esp_https_ota", "Starting OTA from '%s'", s->url);
        if (s->opts.start_jitter_usec > 0) {
                delay = ((uint64_t) arc4random() << 32 | arc4random()) % s->opts.start_jitter_usec;
                session_log(s, 'I', "ota", "Start jitter: waiting %" PRIu64 " ms", delay / 1000);
        }
        /* even without jitter, the first attempt runs from the loop, so the
         * outcome callback never fires inside ota_session_start() */
        ota_session_enter_state(s, OTA_SESSION_WAITING);
        k = session_arm_timer(s, delay);
        if (k < 0) {
                ota_session_enter_state(s, OTA_SESSION_IDLE);
                return k;
        }
        return 0;
}

OtaSessionState ota_session_state(const OtaSession *s) {
        return s ? s->state : _OTA_SESSION_STATE_INVALID;
}

/* SPDX-License-Identifier: MIT */
#pragma once

/* One device's HTTPS OTA, as an explicit state machine on sd-event
 * (esp_https_ota + the advanced_https_ota example, esp-formats.md §8):
 *
 *   IDLE -> WAITING (start jitter / retry backoff) -> CONNECTING (GET sent)
 *        -> DOWNLOADING (body streamed into OtaWriter) -> VERIFYING (hash,
 *        signature, otadata) -> DONE
 *   any error -> WAITING for a retry (transient failures only, up to
 *   max_retries, exponential backoff with jitter) or FAILED.
 *
 * Transient: a refused, reset, stalled or cut connection, no response header,
 * 5xx, 408, 429; a Retry-After on the response sets a floor for that one
 * delay, capped by retry_max_usec. Final at once: image refusals (chip,
 * version, secure version, validation), a server certificate or host name
 * that does not verify, any other 3xx/4xx, 304, a redirect loop, and a URL or
 * redirect that is not https:// (README "OTA server faults").
 *
 * A retry resumes with "Range: bytes=<written>-" when >= 1,024 bytes are on
 * flash; a server that does not answer 206 (or answers 416) gets one more
 * try from 0, which does not count as a retry.
 *
 * End of body (§8): with a Content-Length (or Content-Range), fewer bytes is
 * a cut download (retried, resumed); without one (s_server -WWW, HTTP/1.0) a
 * clean EOF ends the image and it is verified as it is, while a transfer that
 * ended with an error is a cut. Progress: "(N %)" every 10 % against the HTTP
 * length, or the image's own length once its segments are parsed, and always
 * a final "(100 %)" line when the body is complete.
 *
 * Usage from the device (src/sim/device.c), on /esp/update/run:
 *
 *   OtaSessionOptions o = { .url = url, .ca_file = ca, .chip_id = 5, … };
 *   OtaSessionCallbacks cb = { .log = dev_ota_log, .outcome = dev_ota_done };
 *   r = ota_session_new(event, http, flash, table, efuse, &boot_result.app, &o, &cb, dev, &s);
 *   r = ota_session_start(s);
 *   … outcome callback: ok → restart the device (boot_run() picks the new slot)
 *   ota_session_free(s);     (any time; cancels a running download)
 *
 * All pointers passed to ota_session_new are borrowed and must outlive the
 * session, except the options' strings and `running`, which are copied. */

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "flash/flash.h"
#include "flash/partition-table.h"
#include "ota/boot.h"
#include "transport/http.h"

typedef struct Efuse Efuse;
typedef struct OtaSession OtaSession;

typedef enum OtaSessionState {
        OTA_SESSION_IDLE,          /* created, not started */
        OTA_SESSION_WAITING,       /* start jitter or retry backoff timer armed */
        OTA_SESSION_CONNECTING,    /* request sent, no response header yet */
        OTA_SESSION_DOWNLOADING,   /* body streaming into the passive slot */
        OTA_SESSION_VERIFYING,     /* hash, signature, set boot partition */
        OTA_SESSION_DONE,          /* new image written and selected (terminal) */
        OTA_SESSION_FAILED,        /* gave up (terminal) */
        _OTA_SESSION_STATE_MAX,
        _OTA_SESSION_STATE_INVALID = -EINVAL,
} OtaSessionState;

const char *ota_session_state_to_string(OtaSessionState s);   /* "idle", … */
OtaSessionState ota_session_state_from_string(const char *s);

/* esp_https_ota_event_t, in the order ESP-IDF raises them. */
typedef enum OtaEvent {
        OTA_EVENT_START,
        OTA_EVENT_CONNECTED,
        OTA_EVENT_GET_IMG_DESC,
        OTA_EVENT_VERIFY_CHIP_ID,
        OTA_EVENT_WRITE_FLASH,
        OTA_EVENT_UPDATE_BOOT_PARTITION,
        OTA_EVENT_FINISH,
        OTA_EVENT_ABORT,
        _OTA_EVENT_MAX,
        _OTA_EVENT_INVALID = -EINVAL,
} OtaEvent;

const char *ota_event_to_string(OtaEvent e);   /* "ESP_HTTPS_OTA_START", … */
OtaEvent ota_event_from_string(const char *s);

typedef struct OtaSessionOptions {
        const char *url;                 /* https://… (copied) */
        const char *ca_file;             /* fleet CA (copied) */
        const char *device_id;           /* for the daemon log (copied; may be NULL) */
        uint16_t chip_id;                /* the device's image chip id */
        bool allow_equal_version;
        bool signed_apps_no_secure_boot;
        bool allow_plain_http;           /* tests only */
        unsigned max_retries;            /* retries after the first attempt (transient failures only);
                                          * when both this and retry_base_usec are 0, the default 3 applies */
        uint64_t retry_base_usec;        /* first backoff; default 1 s; doubles, ±25 % jitter */
        uint64_t retry_max_usec;         /* backoff cap, and Retry-After's; default 60 s */
        uint64_t start_jitter_usec;      /* random delay before the first attempt; 0 = none */
        uint32_t connect_timeout_ms;     /* default 10 s */
        uint32_t low_speed_limit;        /* bytes/s, default 1 */
        uint32_t low_speed_time_s;       /* default 30 s */
} OtaSessionOptions;

typedef struct OtaOutcome {
        bool ok;
        int error;                       /* 0 or a negative ESP/errno code (esp_err_to_name) */
        const char *message;             /* human-readable reason; "" on success */
        const char *new_version;         /* the downloaded app's version, or NULL if never seen */
        uint32_t new_secure_version;
        int new_slot;                    /* the slot now selected for the next boot, -1 on failure */
        unsigned attempts;               /* HTTP requests made */
        uint64_t bytes;                  /* bytes received in total (all attempts) */
} OtaOutcome;

typedef struct OtaSessionCallbacks {
        /* ESP-IDF log line for the device's log topic: level 'I', 'W' or 'E',
         * tag ("esp_https_ota", "esp_ota_ops", "ota"), and the message (no
         * prefix; the device adds "I (<ms>) <tag>: "). Optional. */
        void (*log)(OtaSession *s, char level, const char *tag, const char *message, void *userdata);
        /* Each ESP_HTTPS_OTA_EVENT; `arg` is the chip id for VERIFY_CHIP_ID,
         * bytes written for WRITE_FLASH (only at every 10 % step), the slot for
         * UPDATE_BOOT_PARTITION, else 0. Optional. */
        void (*event)(OtaSession *s, OtaEvent e, int64_t arg, void *userdata);
        /* Exactly once, when the session reaches DONE or FAILED. The session
         * may be freed from inside this callback. */
        void (*outcome)(OtaSession *s, const OtaOutcome *o, void *userdata);
} OtaSessionCallbacks;

int ota_session_new(sd_event *event, HttpClient *http, Flash *flash, const PartitionTable *table, Efuse *efuse,
                    const BootApp *running, const OtaSessionOptions *o, const OtaSessionCallbacks *cb,
                    void *userdata, OtaSession **ret);
/* Cancels whatever runs (no outcome callback); a partial image already in
 * the passive slot is made unbootable (ota_writer_abort). May be called from
 * the outcome callback, not from the log or event callbacks. Accepts NULL,
 * returns NULL. */
OtaSession *ota_session_free(OtaSession *s);

/* IDLE -> WAITING/CONNECTING. -EBUSY if already started. Errors found before
 * any I/O (e.g. the running app is PENDING_VERIFY) are reported through the
 * outcome callback, not returned. */
int ota_session_start(OtaSession *s);

OtaSessionState ota_session_state(const OtaSession *s);

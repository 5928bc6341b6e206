/* SPDX-License-Identifier: MIT */
#pragma once

/* One emulated secure_esp device: an explicit state machine (STYLE.md,
 * iwd's station_enter_state) on the worker's event loop. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "fleet/fleet-dir.h"
#include "metrics/metrics.h"
#include "sim/backoff.h"
#include "sim/config.h"
#include "transport/http.h"
#include "transport/mqtt.h"
#include "transport/resolver.h"

typedef struct Device Device;
typedef struct BootCache BootCache;

typedef enum DeviceState {
        DEVICE_OFF,             /* not running: before its ramp slot, or after shutdown */
        DEVICE_BOOTING,         /* reset: bootloader ran, boot timer until the app connects */
        DEVICE_CONNECTING,      /* waiting for a connection slot, then TCP + TLS + CONNECT */
        DEVICE_ONLINE,          /* CONNACK accepted, subscribed, serving commands */
        DEVICE_BACKOFF,         /* connection failed or lost: reconnect timer armed */
        DEVICE_RESTARTING,      /* /esp/restart: DISCONNECT sent, reboots when the link is down */
        DEVICE_NO_CONNECT,      /* running firmware that never reaches the broker (OTA tests) */
        DEVICE_FAILED,          /* gave up (load error, or reconnect.give_up_after attempts) */
        DEVICE_STOPPING,        /* daemon shutdown: DISCONNECT sent, OFF when the link is down */
        _DEVICE_STATE_MAX,
        _DEVICE_STATE_INVALID = -EINVAL,
} DeviceState;

const char *device_state_to_string(DeviceState s);
DeviceState device_state_from_string(const char *s);

/* One broker of the fleet (broker.hosts, or broker.host:port): its name is
 * also what its certificate must match, so each has its own SSL_CTX. */
typedef struct DeviceBroker {
        char *host;
        unsigned port;
        SSL_CTX *ssl_ctx;               /* for every device of the worker on this broker */
        Resolver *resolver;             /* its addresses; NULL until the manager starts */
} DeviceBroker;

/* What a device may use of its worker: nothing else. Owned by the worker's
 * manager, which outlives its devices; `config` is updated in place on a
 * reload. */
typedef struct DeviceContext {
        sd_event *event;
        const DaemonConfig *config;
        Fleet *fleet;                   /* not owned */
        MqttLoop *mqtt;
        const DeviceBroker *brokers;    /* device INDEX uses brokers[INDEX % n_brokers] */
        size_t n_brokers;
        TokenBucket *connect_bucket;    /* this worker's share of reconnect.connect_rate_max */
        Rng *rng;
        const char *ca_path;            /* FLEET/ca.crt, for the OTA server */
        BootCache *boot_cache;          /* NULL: verify every boot in full */
        MetricsBlock *metrics;          /* the worker's counters and histograms */

        /* The owner's services. */
        void *owner;
        HttpClient *(*http)(void *owner);                       /* NULL on failure */
        const char *(*next_bind_address)(void *owner);          /* NULL: let the kernel pick */
        void (*state_changed)(void *owner, Device *d, DeviceState old, DeviceState new_state);
        /* A download slot (ota.max_concurrent): true when granted now; false
         * when queued, and device_ota_slot_granted() follows later. */
        bool (*ota_slot_take)(void *owner, Device *d);
        void (*ota_slot_release)(void *owner, Device *d);
        /* A connection attempt in flight (reconnect.connect_inflight_max), the
         * same way: device_connect_slot_granted() follows a false. */
        bool (*connect_slot_take)(void *owner, Device *d);
        void (*connect_slot_release)(void *owner, Device *d);
} DeviceContext;

/* `rec` (borrowed) is the device's record in the worker's metrics block. */
int device_new(const DeviceContext *ctx, const FleetDeviceEntry *e, MetricsDevice *rec, Device **ret);
Device *device_free(Device *d);

/* OFF -> BOOTING. `due_usec` (CLOCK_MONOTONIC) is when the start was due:
 * the connection latencies count from then. 0: now. */
void device_start(Device *d, uint64_t due_usec);
/* Any state -> STOPPING -> OFF (DISCONNECT sent when online). */
void device_stop(Device *d);

/* Operator commands (the control socket). A restart is /esp/restart's: an
 * online device says goodbye first. A power cut drops everything at once
 * (no DISCONNECT: the broker sends the will; a download in flight is lost)
 * and boots again. OTA now is /esp/update/run's, from `url` when set
 * (not saved), else from the device's own settings. */
void device_restart(Device *d);
void device_power_cut(Device *d);
void device_ota_now(Device *d, const char *url);
/* Drops an online device's connection without DISCONNECT (scenario churn
 * and storms): it reconnects after its backoff. `reason` is the metrics
 * reason of the disconnect (METRIC_REASON_CHURN, _STORM). */
void device_drop(Device *d, unsigned reason);

/* Applies live config changes (backoff, telemetry). */
void device_reload(Device *d);

/* The slot asked for with ota_slot_take() is this device's now. Returns
 * false when the device no longer wants it (it gave it back). */
bool device_ota_slot_granted(Device *d);
/* The same for a connection slot. */
bool device_connect_slot_granted(Device *d);

DeviceState device_get_state(const Device *d);
const char *device_get_id(const Device *d);
/* Whether the device had its first connection outcome since the daemon started. */
bool device_settled(const Device *d);
uint64_t device_msgs_in(const Device *d);
uint64_t device_msgs_out(const Device *d);

/* SPDX-License-Identifier: MIT */
#pragma once

/* One emulated secure_esp device: an explicit state machine (STYLE.md,
 * iwd's station_enter_state) on the worker's event loop. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "fleet/fleet-dir.h"

typedef struct Manager Manager;
typedef struct Device Device;

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

int device_new(Manager *m, const FleetDeviceEntry *e, Device **ret);
Device *device_free(Device *d);

/* OFF -> BOOTING. */
void device_start(Device *d);
/* Any state -> STOPPING -> OFF (DISCONNECT sent when online). */
void device_stop(Device *d);

/* Applies live config changes (backoff, telemetry). */
void device_reload(Device *d);

DeviceState device_get_state(const Device *d);
const char *device_get_id(const Device *d);
/* Whether the device had its first connection outcome since the daemon started. */
bool device_settled(const Device *d);
uint64_t device_msgs_in(const Device *d);
uint64_t device_msgs_out(const Device *d);

/* SPDX-License-Identifier: MIT */
#pragma once

/* The secure_esp topic contract (shared/seeds/001: "MQTT Interface
 * definition"): each command on its broadcast topic and on the per-device
 * topic /esp/<id>/..., and the checks a payload must pass. Pure functions. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum DeviceCommand {
        DEVICE_COMMAND_URL,             /* /esp/update/url: store the OTA URL */
        DEVICE_COMMAND_USE_URL,         /* /esp/update/use_url: 0 = default URL, 1 = stored URL */
        DEVICE_COMMAND_INTERVAL,        /* /esp/update/interval: seconds, after restart */
        DEVICE_COMMAND_RUN,             /* /esp/update/run: start OTA now */
        DEVICE_COMMAND_RESTART,         /* /esp/restart: reboot */
        _DEVICE_COMMAND_MAX,
        _DEVICE_COMMAND_INVALID = -EINVAL,
} DeviceCommand;

/* "update/url", "restart", … (the topic suffix after /esp/ or /esp/<id>/). */
const char *device_command_to_string(DeviceCommand c);
DeviceCommand device_command_from_string(const char *s);

/* Maps a topic to a command for device `id`: /esp/<cmd> (broadcast) or
 * /esp/<id>/<cmd>. -ENOENT for any other topic (another device's included). */
int command_from_topic(const char *topic, const char *id, DeviceCommand *ret, bool *ret_broadcast);

/* The topic of a command: broadcast when id is NULL. */
int command_topic(DeviceCommand c, const char *id, char *buf, size_t size);

/* Payload checks. Each returns 0 with the value, or -EINVAL with `reason`
 * filled ("not an https URL", …), never touching *ret on failure. */
int payload_parse_url(const void *payload, size_t len, char *ret, size_t ret_size, char *reason, size_t n);
int payload_parse_use_url(const void *payload, size_t len, uint8_t *ret, char *reason, size_t n);
int payload_parse_interval(const void *payload, size_t len, uint32_t *ret, char *reason, size_t n);

/* Expands a topic template ("/esp/%s/log") with the device id. */
int topic_expand(const char *tmpl, const char *id, char *buf, size_t size);

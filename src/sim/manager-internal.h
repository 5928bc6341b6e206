/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared between manager.c and device.c only. */

#include <openssl/x509.h>

#include "sim/backoff.h"
#include "sim/device.h"
#include "sim/manager.h"
#include "transport/http.h"
#include "transport/mqtt.h"

struct Manager {
        sd_event *event;
        DaemonConfig config;            /* own copy, replaced on reload */
        Fleet *fleet;                   /* not owned */
        MqttLoop *mqtt;
        X509_STORE *ca_store;           /* one for every device */
        unsigned n_workers;

        Device **devices;
        size_t n_devices;

        sd_event_source *ramp_timer;
        size_t ramp_next;               /* next device to start */
        uint64_t ramp_start_usec;

        TokenBucket connect_bucket;     /* this worker's share of reconnect.connect_rate_max */
        Rng rng;
        size_t bind_next;               /* round-robin over broker.bind_addresses */

        HttpClient *http;               /* OTA downloads, created on first use */
        char *ca_path;                  /* FLEET/ca.crt */

        bool stopping;
        void (*stop_done)(Manager *m, void *userdata);
        void *stop_userdata;
};

uint64_t manager_now(Manager *m);
/* Called by a device whenever its state changes (shutdown accounting). */
void manager_device_changed(Manager *m, Device *d);
const char *manager_next_bind_address(Manager *m);
/* The worker's HTTPS client (libcurl multi on the loop); NULL on failure. */
HttpClient *manager_http(Manager *m);

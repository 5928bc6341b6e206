/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/macro.h"
#include "sim/probe-tracker.h"

#define PROBE_ID_MAX 32

typedef struct ProbeEntry {
        char id[PROBE_ID_MAX];          /* "" = free slot */
        uint64_t direct_usec;           /* an unanswered command to this device, 0 = none */
        uint32_t answered_gen;          /* the last broadcast this device answered */
} ProbeEntry;

struct ProbeTracker {
        ProbeEntry *slots;
        size_t cap, n;                  /* cap: a power of two */
        uint32_t gen;                   /* broadcasts seen so far */
        uint64_t broadcast_usec;        /* when the last one was seen */
};

static uint64_t hash_id(const char *s) {
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 1099511628211ULL;
        return h;
}

int probe_tracker_new(ProbeTracker **ret) {
        ProbeTracker *t = calloc(1, sizeof *t);

        if (!t)
                return -ENOMEM;
        t->cap = 256;
        t->slots = calloc(t->cap, sizeof *t->slots);
        if (!t->slots) {
                free(t);
                return -ENOMEM;
        }
        *ret = t;
        return 0;
}

ProbeTracker *probe_tracker_free(ProbeTracker *t) {
        if (!t)
                return NULL;
        free(t->slots);
        free(t);
        return NULL;
}

static ProbeEntry *find_slot(ProbeEntry *slots, size_t cap, const char *id) {
        for (size_t i = hash_id(id) & (cap - 1);; i = (i + 1) & (cap - 1))
                if (!slots[i].id[0] || streq(slots[i].id, id))
                        return &slots[i];
}

static int grow(ProbeTracker *t) {
        size_t cap = t->cap * 2;
        ProbeEntry *n = calloc(cap, sizeof *n);

        if (!n)
                return -ENOMEM;
        for (size_t i = 0; i < t->cap; i++)
                if (t->slots[i].id[0])
                        *find_slot(n, cap, t->slots[i].id) = t->slots[i];
        free(t->slots);
        t->slots = n;
        t->cap = cap;
        return 0;
}

/* The entry of `id`, made on first sight (a new device has answered no
 * broadcast before it was seen: it starts at the current generation, so a
 * device that appears only after a broadcast does not count as answering it). */
static ProbeEntry *entry(ProbeTracker *t, const char *id) {
        if (strlen(id) >= PROBE_ID_MAX || !*id)
                return NULL;
        ProbeEntry *e = find_slot(t->slots, t->cap, id);
        if (e->id[0])
                return e;
        if ((t->n + 1) * 2 > t->cap) {
                if (grow(t) < 0)
                        return NULL;
                e = find_slot(t->slots, t->cap, id);
        }
        strcpy(e->id, id);
        e->answered_gen = t->gen;
        t->n++;
        return e;
}

int probe_tracker_command(ProbeTracker *t, const char *id, uint64_t now) {
        if (!id || !*id) {
                t->gen++;
                t->broadcast_usec = now;
                return 0;
        }
        ProbeEntry *e = entry(t, id);
        if (!e)
                return -EINVAL;
        e->direct_usec = now;
        return 0;
}

int64_t probe_tracker_log_line(ProbeTracker *t, const char *id, uint64_t now) {
        bool known = find_slot(t->slots, t->cap, id)->id[0];
        ProbeEntry *e = entry(t, id);

        if (!e)
                return -1;
        if (e->direct_usec) {
                uint64_t since = e->direct_usec;
                e->direct_usec = 0;
                /* a broadcast seen after it is answered by the same line */
                if (t->broadcast_usec >= since)
                        e->answered_gen = t->gen;
                return (int64_t) (now >= since ? now - since : 0);
        }
        /* a device seen for the first time now answered nothing it was sent */
        if (known && e->answered_gen != t->gen) {
                e->answered_gen = t->gen;
                return (int64_t) (now >= t->broadcast_usec ? now - t->broadcast_usec : 0);
        }
        return -1;
}

size_t probe_tracker_n_devices(const ProbeTracker *t) {
        return t->n;
}

bool probe_topic_id(const char *tmpl, const char *topic, char *id, size_t size) {
        const char *p = strstr(tmpl, "%s");
        size_t pre, post, len = strlen(topic);

        if (!p)
                return false;
        pre = (size_t) (p - tmpl);
        post = strlen(p + 2);
        if (len <= pre + post || strncmp(topic, tmpl, pre) != 0 || !streq(topic + len - post, p + 2))
                return false;
        size_t n = len - pre - post;
        if (n >= size || memchr(topic + pre, '/', n))
                return false;
        memcpy(id, topic + pre, n);
        id[n] = 0;
        return true;
}

bool probe_command_topic(const char *topic, char *id, size_t size) {
        const char *rest;

        if (!startswith(topic, "/esp/"))
                return false;
        rest = topic + 5;
        if (startswith(rest, "update/") || streq(rest, "restart")) {
                if (size > 0)
                        id[0] = 0;
                return true;
        }
        const char *slash = strchr(rest, '/');
        if (!slash || slash == rest || (size_t) (slash - rest) >= size)
                return false;
        if (!startswith(slash + 1, "update/") && !streq(slash + 1, "restart"))
                return false;
        memcpy(id, rest, (size_t) (slash - rest));
        id[slash - rest] = 0;
        return true;
}

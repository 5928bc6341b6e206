/* SPDX-License-Identifier: MIT */
#include "basic/secret-mem.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define STEP 64
#define N_CLASSES (SECRET_MEM_MAX / STEP)
#define CHUNK_SIZE (64 * 1024)

typedef struct FreeSlot {
        struct FreeSlot *next;
} FreeSlot;

typedef struct SizeClass {
        FreeSlot *free;
        uint8_t *bump, *bump_end;       /* the unused tail of the newest chunk */
} SizeClass;

typedef struct Chunk {
        uintptr_t start;
        size_t size;
} Chunk;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static SizeClass classes[N_CLASSES];
static Chunk *chunks;
static size_t n_chunks, n_chunks_allocated;
static size_t mapped, locked;

static int chunk_new(size_t size, uint8_t **ret) {
        void *p;

        if (n_chunks == n_chunks_allocated) {
                size_t n = n_chunks_allocated ? 2 * n_chunks_allocated : 16;
                Chunk *c = realloc(chunks, n * sizeof(*c));
                if (!c)
                        return -1;
                chunks = c;
                n_chunks_allocated = n;
        }
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return -1;
        /* Out of core dumps: if the kernel cannot mark it, it is no place for keys. */
        if (madvise(p, size, MADV_DONTDUMP) < 0) {
                munmap(p, size);
                return -1;
        }
        /* Out of swap where allowed; pages lock as they are touched, so a
         * chunk costs RAM only for the slots in use. */
        if (mlock2(p, size, MLOCK_ONFAULT) == 0)
                locked += size;
        mapped += size;
        chunks[n_chunks++] = (Chunk) { (uintptr_t) p, size };
        *ret = p;
        return 0;
}

void *secret_alloc0(size_t size) {
        SizeClass *c;
        void *p = NULL;

        if (size == 0 || size > SECRET_MEM_MAX)
                return NULL;
        size_t slot = (size + STEP - 1) / STEP * STEP;
        c = &classes[slot / STEP - 1];

        pthread_mutex_lock(&lock);
        if (c->free) {
                p = c->free;
                c->free = c->free->next;
                explicit_bzero(p, sizeof(FreeSlot));
        } else {
                if ((size_t) (c->bump_end - c->bump) < slot) {
                        uint8_t *m;
                        if (chunk_new(CHUNK_SIZE, &m) < 0)
                                goto out;
                        c->bump = m;
                        c->bump_end = m + CHUNK_SIZE / slot * slot;
                }
                p = c->bump;    /* fresh anonymous memory is zero */
                c->bump += slot;
        }
out:
        pthread_mutex_unlock(&lock);
        return p;
}

void secret_free(void *p, size_t size) {
        if (!p)
                return;
        /* A size outside the classes cannot have come from secret_alloc0();
         * wiping what the caller says it owns is still right. */
        size_t slot = (size + STEP - 1) / STEP * STEP;
        if (size == 0 || size > SECRET_MEM_MAX || !secret_mem_owns(p)) {
                if (size > 0)
                        explicit_bzero(p, size);
                abort();        /* a programming error: never leak the slot or free() it */
        }
        explicit_bzero(p, slot);
        pthread_mutex_lock(&lock);
        FreeSlot *f = p;
        f->next = classes[slot / STEP - 1].free;
        classes[slot / STEP - 1].free = f;
        pthread_mutex_unlock(&lock);
}

bool secret_mem_owns(const void *p) {
        uintptr_t a = (uintptr_t) p;
        bool found = false;

        pthread_mutex_lock(&lock);
        for (size_t i = 0; i < n_chunks && !found; i++)
                found = a >= chunks[i].start && a - chunks[i].start < chunks[i].size;
        pthread_mutex_unlock(&lock);
        return found;
}

void secret_mem_stats(size_t *ret_mapped, size_t *ret_locked) {
        pthread_mutex_lock(&lock);
        if (ret_mapped)
                *ret_mapped = mapped;
        if (ret_locked)
                *ret_locked = locked;
        pthread_mutex_unlock(&lock);
}

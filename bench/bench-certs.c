/* SPDX-License-Identifier: MIT */
/* Client certificates for the issue #16 peer (bench/peer/peer.js): N
 * certificates with CN = peer-NNNNNN, signed by the fleet CA of an espfleet
 * PKI dir, over a pool of K RSA-2048 keys (RSA-2048 as the devices' DS keys;
 * one key per certificate would take ~190 ms of keygen each, 30+ minutes for
 * 19,500).
 *
 *   bench-certs --pki PKI --count N [--keys K] --out DIR
 *
 * K defaults to 16. DIR (created, mode 0700) then holds:
 *   ca.crt              copy of PKI/ca.crt, for verifying the broker
 *   key-KKK.pem         the K private keys, PKCS#8 PEM, mode 0600
 *   peer-NNNNNN.crt     N certificates, PEM; certificate i uses key-(i mod K)
 *   certs.conf          "count=N", "keys=K", "prefix=peer-", "digits=6",
 *                       written last, so a run that failed half way leaves none
 * The certificates' CN is the MQTT username under the broker's
 * use_identity_as_username, so the ACL gives each client /esp/peer-NNNNNN/#.
 *
 * The keys are private keys that the fleet directory must never hold: DIR
 * is refused when it or a parent is a fleet dir (has fleet.conf and
 * manifest.csv). Files are written without fsync: they are a cache that
 * bench/peer/run-peer.sh regenerates whenever certs.conf is missing.
 * One line on stdout at the end:
 *   "bench-certs: count=N keys=K keygen_s=… issue_s=… dir=DIR". */

#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/pem.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "basic/parse-util.h"
#include "fleet/pki.h"

#define CN_PREFIX "peer-"
#define CN_DIGITS 6
#define COUNT_MAX 999999u
#define KEYS_MAX 1000u

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* One file in dirfd, truncated and written in full, with exactly `mode`. */
static int write_at(int dirfd, const char *name, const void *data, size_t size, mode_t mode) {
        _cleanup_close_ int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        const uint8_t *p = data;

        if (fd < 0)
                return -errno;
        /* an existing file keeps its old mode through O_CREAT */
        if (fchmod(fd, mode) < 0)
                return -errno;
        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                size -= (size_t) n;
        }
        return 0;
}

static int write_key(int dirfd, const char *name, EVP_PKEY *k) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
        char *data;
        long n;

        if (!b)
                return -ENOMEM;
        if (!PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL))
                return -EIO;
        n = BIO_get_mem_data(b, &data);
        if (n <= 0)
                return -EIO;
        /* BIO_free_all does not wipe the buffer; these are throw-away bench keys */
        return write_at(dirfd, name, data, (size_t) n, 0600);
}

/* True when `path` (which exists) or one of its parents is a fleet dir. */
static bool inside_fleet_dir(const char *path) {
        char buf[PATH_MAX];

        if (!realpath(path, buf))
                return false;
        for (;;) {
                _cleanup_free_ char *conf = path_join(buf, "fleet.conf"), *manifest = path_join(buf, "manifest.csv");
                if (conf && manifest && access(conf, F_OK) == 0 && access(manifest, F_OK) == 0)
                        return true;
                char *slash = strrchr(buf, '/');
                if (!slash || slash == buf)
                        return false;
                *slash = '\0';
        }
}

static void usage(FILE *f) {
        fprintf(f, "usage: bench-certs --pki PKI --count N [--keys K] --out DIR\n");
}

static int fail(const char *what, int r) {
        fprintf(stderr, "bench-certs: %s: %s\n", what, esp_err_to_name(r));
        return 1;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "pki", required_argument, NULL, 'p' },
                { "count", required_argument, NULL, 'n' },
                { "keys", required_argument, NULL, 'k' },
                { "out", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        _cleanup_(pki_freep) Pki *pki = NULL;
        _cleanup_close_ int dirfd = -EBADF;
        _cleanup_free_ EVP_PKEY **keys = NULL;
        const char *pki_path = NULL, *out = NULL;
        uint32_t count = 0, n_keys = 16;
        char err[256], name[64];
        double t0, t_keys, t_end;
        int c, r, rc = 1;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'p':
                        pki_path = optarg;
                        break;
                case 'n':
                        if (safe_atou32(optarg, 10, &count) < 0 || count == 0 || count > COUNT_MAX) {
                                fprintf(stderr, "bench-certs: --count must be 1…%u, not '%s'\n", COUNT_MAX, optarg);
                                return 2;
                        }
                        break;
                case 'k':
                        if (safe_atou32(optarg, 10, &n_keys) < 0 || n_keys == 0 || n_keys > KEYS_MAX) {
                                fprintf(stderr, "bench-certs: --keys must be 1…%u, not '%s'\n", KEYS_MAX, optarg);
                                return 2;
                        }
                        break;
                case 'o':
                        out = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!pki_path || !out || count == 0 || optind != argc) {
                usage(stderr);
                return 2;
        }
        if (n_keys > count)
                n_keys = count;

        r = pki_load(pki_path, &pki, err, sizeof err);
        if (r < 0) {
                fprintf(stderr, "bench-certs: %s\n", err);
                return 1;
        }
        r = mkdir_p(out, 0700);
        if (r < 0)
                return fail(out, r);
        if (inside_fleet_dir(out)) {
                fprintf(stderr, "bench-certs: '%s' is inside a fleet directory, which must hold no private keys\n", out);
                return 1;
        }
        dirfd = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return fail(out, -errno);
        /* whatever was here is incomplete until the new certs.conf exists */
        if (unlinkat(dirfd, "certs.conf", 0) < 0 && errno != ENOENT)
                return fail("removing the old certs.conf", -errno);

        {
                _cleanup_free_ char *pem = NULL;
                size_t len;
                r = pki_cert_to_pem(pki_ca_cert(pki), &pem, &len);
                if (r >= 0)
                        r = write_at(dirfd, "ca.crt", pem, len, 0644);
                if (r < 0)
                        return fail("writing ca.crt", r);
        }

        keys = calloc(n_keys, sizeof(EVP_PKEY *));
        if (!keys)
                return fail("allocating", -ENOMEM);
        t0 = now();
        fprintf(stderr, "bench-certs: %u RSA-2048 keys…\n", n_keys);
        for (uint32_t i = 0; i < n_keys; i++) {
                keys[i] = EVP_RSA_gen(2048);
                if (!keys[i]) {
                        fail("RSA key generation", -EIO);
                        goto finish;
                }
                snprintf(name, sizeof name, "key-%03u.pem", i);
                r = write_key(dirfd, name, keys[i]);
                if (r < 0) {
                        fail(name, r);
                        goto finish;
                }
        }
        t_keys = now();

        fprintf(stderr, "bench-certs: %u certificates…\n", count);
        for (uint32_t i = 0; i < count; i++) {
                _cleanup_(X509_freep) X509 *cert = NULL;
                _cleanup_free_ char *pem = NULL;
                char cn[32];
                size_t len;

                snprintf(cn, sizeof cn, CN_PREFIX "%0*u", CN_DIGITS, i);
                r = pki_issue_device_cert(pki, cn, keys[i % n_keys], 0, &cert);
                if (r >= 0)
                        r = pki_cert_to_pem(cert, &pem, &len);
                if (r >= 0) {
                        snprintf(name, sizeof name, "%s.crt", cn);
                        r = write_at(dirfd, name, pem, len, 0644);
                }
                if (r < 0) {
                        fail(cn, r);
                        goto finish;
                }
        }
        t_end = now();

        {
                char conf[128];
                int n = snprintf(conf, sizeof conf, "count=%u\nkeys=%u\nprefix=%s\ndigits=%d\n", count, n_keys,
                                 CN_PREFIX, CN_DIGITS);
                r = write_at(dirfd, "certs.conf", conf, (size_t) n, 0644);
                if (r < 0) {
                        fail("writing certs.conf", r);
                        goto finish;
                }
        }
        printf("bench-certs: count=%u keys=%u keygen_s=%.2f issue_s=%.2f dir=%s\n", count, n_keys, t_keys - t0,
               t_end - t_keys, out);
        rc = 0;
finish:
        for (uint32_t i = 0; i < n_keys; i++)
                EVP_PKEY_free(keys[i]);
        return rc;
}

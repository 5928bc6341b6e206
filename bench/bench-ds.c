/* SPDX-License-Identifier: MIT */
/* DS signatures per second through ds_key_sign_raw() (issue #3 benchmark).
 *
 *   bench-ds [--seconds N] [--bits 2048,3072] [--chip esp32c3|esp32s3] [--plain]
 *
 * For each size: a fresh RSA key, a random HMAC key burned read-protected
 * into BLOCK_KEY1, the DS ciphertext, then a timed loop of raw private
 * operations on random inputs. Each signature goes through the whole
 * peripheral path (HMAC, AES-256-CBC, MD and padding checks) before the
 * exponentiation. --plain also times ds_sign() (no CRT form), for reference.
 *
 * Like `openssl speed` (which divides by user CPU time unless -elapsed is
 * given), the loop runs for N seconds of wall time and the rate is ops per
 * second of user CPU time, so both stay comparable on a loaded machine.
 * Prints one line per measurement:
 *   "ds <what> <bits> <ops> <user seconds> <ops/user s> <wall seconds> <ops/wall s>". */

#include <getopt.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/rand.h>
#include <openssl/x509.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "basic/parse-util.h"
#include "dsemu/ds.h"

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double user_time(void) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6;
}

static void report(const char *what, unsigned bits, unsigned long ops, double wall, double user) {
        printf("ds %s %u %lu %.3f %.1f %.3f %.1f\n", what, bits, ops, user,
               user > 0 ? (double) ops / user : 0.0, wall, (double) ops / wall);
        fflush(stdout);
}

static EVP_PKEY *public_of(EVP_PKEY *k) {
        unsigned char *der = NULL;
        const unsigned char *p;
        int n = i2d_PUBKEY(k, &der);
        EVP_PKEY *pub;

        if (n <= 0)
                return NULL;
        p = der;
        pub = d2i_PUBKEY(NULL, &p, n);
        OPENSSL_free(der);
        return pub;
}

static int bench_one(EspChip chip, unsigned bits, double seconds, bool plain) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL, *pub = NULL;
        _cleanup_(efuse_freep) Efuse *e = NULL;
        _cleanup_(ds_key_freep) DsKey *k = NULL;
        uint8_t hk[32], iv[DS_IV_LEN], in[16][512], out[512];
        size_t len = bits / 8;
        unsigned long ops = 0;
        double t0, t, u0;
        DsData d;
        int r;

        key = EVP_RSA_gen(bits);
        if (!key)
                return -ENOMEM;
        pub = public_of(key);
        if (!pub || RAND_bytes(hk, sizeof(hk)) != 1 || RAND_bytes(iv, sizeof(iv)) != 1)
                return -EIO;
        r = efuse_new(chip, &e);
        if (r < 0)
                return r;
        r = efuse_burn_key(e, 1, hk, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true);
        if (r < 0)
                return r;
        r = ds_encrypt_params(chip, key, hk, iv, &d);
        if (r < 0)
                return r;
        explicit_bzero(hk, sizeof(hk));
        /* The private key is no longer needed: the DS data is all we sign with. */
        key = (EVP_PKEY_free(key), NULL);

        r = ds_key_new(e, 1, &d, pub, &k);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(in); i++) {
                if (RAND_bytes(in[i], (int) len) != 1)
                        return -EIO;
                in[i][0] &= 0x7f;
        }

        u0 = user_time();
        t0 = now();
        do {
                for (int i = 0; i < 8; i++) {
                        r = ds_key_sign_raw(k, in[ops % ELEMENTSOF(in)], len, out);
                        if (r < 0)
                                return r;
                        ops++;
                }
                t = now() - t0;
        } while (t < seconds);
        report(ds_key_has_crt(k) ? "ds_key_sign_raw" : "ds_key_sign_raw(no-crt)", bits, ops, t, user_time() - u0);

        if (plain) {
                uint8_t x[512];
                ops = 0;
                u0 = user_time();
                t0 = now();
                do {
                        memcpy(x, in[ops % ELEMENTSOF(in)], len);
                        memrev(x, len);
                        r = ds_sign(e, 1, &d, x, len, out);
                        if (r < 0)
                                return r;
                        ops++;
                        t = now() - t0;
                } while (t < seconds);
                report("ds_sign", bits, ops, t, user_time() - u0);
        }
        return 0;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "seconds", required_argument, NULL, 's' },
                { "bits", required_argument, NULL, 'b' },
                { "chip", required_argument, NULL, 'c' },
                { "plain", no_argument, NULL, 'p' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *bits_arg = "2048,3072";
        EspChip chip = ESP_CHIP_ESP32C3;
        uint32_t seconds = 3;
        bool plain = false;
        int c;

        while ((c = getopt_long(argc, argv, "s:b:c:ph", options, NULL)) >= 0)
                switch (c) {
                case 's':
                        if (safe_atou32(optarg, 10, &seconds) < 0 || seconds == 0) {
                                fprintf(stderr, "bench-ds: --seconds '%s' is not a positive number\n", optarg);
                                return 2;
                        }
                        break;
                case 'b':
                        bits_arg = optarg;
                        break;
                case 'c':
                        chip = esp_chip_from_string(optarg);
                        if (chip < 0) {
                                fprintf(stderr, "bench-ds: unknown chip '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'p':
                        plain = true;
                        break;
                case 'h':
                        printf("Usage: bench-ds [--seconds N] [--bits 2048,3072] [--chip esp32c3|esp32s3] [--plain]\n");
                        return 0;
                default:
                        return 2;
                }

        _cleanup_free_ char *list = strdup(bits_arg);
        char *save = NULL;
        if (!list)
                return 1;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                uint32_t bits;
                int r;

                if (safe_atou32(tok, 10, &bits) < 0 || (bits != 1024 && bits != 2048 && bits != 3072 && bits != 4096) ||
                    bits > ds_max_key_bits(chip)) {
                        fprintf(stderr, "bench-ds: %s is not an RSA size the %s DS takes\n", tok,
                                esp_chip_to_string(chip));
                        return 2;
                }
                r = bench_one(chip, bits, seconds, plain);
                if (r < 0) {
                        fprintf(stderr, "bench-ds: RSA-%u failed: %s\n", bits, esp_err_to_name(r));
                        return 1;
                }
        }
        return 0;
}

/* SPDX-License-Identifier: MIT */
/* Integration: a DS-backed device key authenticates to a real mosquitto over
 * mTLS (TLS 1.2 and TLS 1.3) and publishes a message that a second client
 * receives.
 *
 * libmosquitto 2.0.11 and MOSQ_OPT_SSL_CTX: net__init_ssl_ctx() returns at
 * once for a user SSL_CTX unless MOSQ_OPT_SSL_CTX_WITH_DEFAULTS is set (and
 * that option then insists on a cafile/capath and would load key files
 * itself). Without the defaults libmosquitto configures nothing, not even
 * its hostname check (that lives in the verify callback the defaults
 * install), so the context here carries the CA store, SSL_VERIFY_PEER, the
 * expected host name, the certificate and the DS key. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "test-net.h"
#include "basic/openssl-util.h"
#include "dsemu/ds-provider.h"
#include "dsemu/ds.h"
#include "dsemu/efuse.h"

#define DEVICE_ID "esp-c0ffee"
#define BROKER_HOST "localhost"

static char tmpdir[] = "/tmp/espfleet-ds-mqtt-XXXXXX";
static pid_t broker_pid = -1;
static int broker_port;

/* ---- PKI ---- */

typedef struct Pki {
        EVP_PKEY *ca_key;
        X509 *ca;
        EVP_PKEY *server_key;
        X509 *server;
        EVP_PKEY *sub_key;              /* the subscriber: a plain software key */
        X509 *sub;
        /* the device: its private key exists only as DS data */
        Efuse *efuse;
        DsData data;
        DsKey *ds;
        EVP_PKEY *ds_pkey;
        X509 *device;
} Pki;

static Pki pki;

static EVP_PKEY *rsa_new(unsigned bits) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
        cr_assert_not_null(k);
        return k;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
        X509V3_CTX v3;
        X509_EXTENSION *ext;

        X509V3_set_ctx_nodb(&v3);
        X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
        cr_assert_not_null(ext, "extension %s", value);
        cr_assert(X509_add_ext(x, ext, -1));
        X509_EXTENSION_free(ext);
}

/* A certificate for `pub` named `cn`, issued by (issuer, issuer_key), or
 * self-signed when issuer is NULL. */
static X509 *cert_new(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *issuer_key, bool ca, const char *san) {
        X509 *x = X509_new();
        static long serial = 1;

        cr_assert_not_null(x);
        cr_assert(X509_set_version(x, 2));
        cr_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++));
        cr_assert(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
        cr_assert(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
        cr_assert(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                             (const unsigned char *) cn, -1, -1, 0));
        cr_assert(X509_set_issuer_name(x, X509_get_subject_name(issuer ?: x)));
        cr_assert(X509_set_pubkey(x, pub));
        add_ext(x, issuer ?: x, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
        add_ext(x, issuer ?: x, NID_key_usage, ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment");
        add_ext(x, issuer ?: x, NID_subject_key_identifier, "hash");
        if (!ca)
                add_ext(x, issuer ?: x, NID_ext_key_usage, san ? "serverAuth" : "clientAuth");
        if (san)
                add_ext(x, issuer ?: x, NID_subject_alt_name, san);
        cr_assert_gt(X509_sign(x, issuer_key, EVP_sha256()), 0);
        return x;
}

static void write_pem(const char *name, X509 *x, EVP_PKEY *k) {
        char path[256];
        _cleanup_fclose_ FILE *f = NULL;
        int fd;

        snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0, "%s: %m", path);
        f = fdopen(fd, "w");
        cr_assert_not_null(f);
        if (x)
                cr_assert(PEM_write_X509(f, x));
        if (k)
                cr_assert(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
}

static void pki_make(void) {
        uint8_t hmac_key[32], iv[DS_IV_LEN];
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *device_key = NULL;

        pki.ca_key = rsa_new(2048);
        pki.ca = cert_new("espfleet test CA", pki.ca_key, NULL, pki.ca_key, true, NULL);
        pki.server_key = rsa_new(2048);
        pki.server = cert_new(BROKER_HOST, pki.server_key, pki.ca, pki.ca_key, false,
                              "DNS:" BROKER_HOST ",IP:127.0.0.1");
        pki.sub_key = rsa_new(2048);
        pki.sub = cert_new("subscriber", pki.sub_key, pki.ca, pki.ca_key, false, NULL);

        /* Provisioning, as `espfleet provision` does it: the device key goes
         * into DS data under a read-protected eFuse HMAC key, then only the
         * certificate and the DS data remain. */
        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &pki.efuse), 0);
        cr_assert_eq(RAND_bytes(hmac_key, sizeof(hmac_key)), 1);
        cr_assert_eq(RAND_bytes(iv, sizeof(iv)), 1);
        cr_assert_eq(efuse_burn_key(pki.efuse, 1, hmac_key, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true), 0);
        device_key = rsa_new(2048);
        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32C3, device_key, hmac_key, iv, &pki.data), 0);
        explicit_bzero(hmac_key, sizeof(hmac_key));
        pki.device = cert_new(DEVICE_ID, device_key, pki.ca, pki.ca_key, false, NULL);
        EVP_PKEY_free(TAKE_PTR(device_key));

        cr_assert_eq(ds_key_new(pki.efuse, 1, &pki.data, X509_get0_pubkey(pki.device), &pki.ds), 0);
        cr_assert_eq(ds_provider_pkey_new(NULL, pki.ds, &pki.ds_pkey), 0);

        write_pem("ca.crt", pki.ca, NULL);
        write_pem("server.crt", pki.server, NULL);
        write_pem("server.key", NULL, pki.server_key);
}

static void pki_free(void) {
        EVP_PKEY_free(pki.ds_pkey);
        ds_key_free(pki.ds);
        efuse_free(pki.efuse);
        X509_free(pki.device);
        X509_free(pki.sub);
        EVP_PKEY_free(pki.sub_key);
        X509_free(pki.server);
        EVP_PKEY_free(pki.server_key);
        X509_free(pki.ca);
        EVP_PKEY_free(pki.ca_key);
        memset(&pki, 0, sizeof(pki));
}

/* ---- broker ---- */

static void msleep(long ms) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void broker_stop(void) {
        if (broker_pid > 0) {
                kill(broker_pid, SIGTERM);
                for (int i = 0; i < 100; i++) {
                        if (waitpid(broker_pid, NULL, WNOHANG) == broker_pid) {
                                broker_pid = -1;
                                return;
                        }
                        msleep(20);
                }
                kill(broker_pid, SIGKILL);
                waitpid(broker_pid, NULL, 0);
                broker_pid = -1;
        }
}

static void broker_start(void) {
        char conf[256], acl[256], log[256];
        _cleanup_fclose_ FILE *f = NULL;
        double deadline;

        snprintf(conf, sizeof(conf), "%s/mosquitto.conf", tmpdir);
        snprintf(acl, sizeof(acl), "%s/acl", tmpdir);
        snprintf(log, sizeof(log), "%s/mosquitto.log", tmpdir);
        broker_port = test_free_port();

        /* The ACL proves use_identity_as_username: a device may only write
         * under its own certificate CN. */
        f = fopen(acl, "we");
        cr_assert_not_null(f);
        fprintf(f, "pattern read esp/#\npattern write esp/%%u/#\n");
        fclose(TAKE_PTR(f));

        f = fopen(conf, "we");
        cr_assert_not_null(f);
        fprintf(f,
                "user root\n"
                "persistence false\n"
                "log_dest file %s\n"
                "log_type all\n"
                "listener %d 127.0.0.1\n"
                "cafile %s/ca.crt\n"
                "certfile %s/server.crt\n"
                "keyfile %s/server.key\n"
                "require_certificate true\n"
                "use_identity_as_username true\n"
                "allow_anonymous false\n"
                "acl_file %s\n",
                log, broker_port, tmpdir, tmpdir, tmpdir, acl);
        fclose(TAKE_PTR(f));

        broker_pid = fork();
        cr_assert_geq(broker_pid, 0);
        if (broker_pid == 0) {
                int null = open("/dev/null", O_RDWR);
                /* Never outlive the test process, whatever happens to it. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (null >= 0) {
                        dup2(null, STDIN_FILENO);
                        dup2(null, STDOUT_FILENO);
                        dup2(null, STDERR_FILENO);
                }
                execl("/usr/sbin/mosquitto", "mosquitto", "-c", conf, (char *) NULL);
                execlp("mosquitto", "mosquitto", "-c", conf, (char *) NULL);
                _exit(127);
        }

        deadline = now() + 15;
        while (!test_port_open(broker_port)) {
                int status;
                cr_assert_eq(waitpid(broker_pid, &status, WNOHANG), 0,
                             "mosquitto exited early (status %d), see %s", status, log);
                cr_assert_lt(now(), deadline, "mosquitto did not open port %d", broker_port);
                msleep(50);
        }
}

static void suite_init(void) {
        cr_assert_not_null(mkdtemp(tmpdir));
        cr_assert_eq(mosquitto_lib_init(), MOSQ_ERR_SUCCESS);
        pki_make();
        broker_start();
}

static void suite_fini(void) {
        char path[300];

        broker_stop();
        pki_free();
        mosquitto_lib_cleanup();
        if (tmpdir[strlen(tmpdir) - 1] != 'X') {
                const char *files[] = { "ca.crt", "server.crt", "server.key", "mosquitto.conf", "acl", "mosquitto.log" };
                for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                        snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
                        (void) unlink(path);
                }
                (void) rmdir(tmpdir);
        }
}

/* ---- clients ---- */

typedef struct Client {
        struct mosquitto *mosq;
        bool connected;
        int connack;
        bool subscribed;
        bool published;
        bool got_message;
        char received[128];
} Client;

static void on_connect(struct mosquitto *m, void *userdata, int rc) {
        Client *c = userdata;
        c->connack = rc;
        c->connected = rc == 0;
}

static void on_subscribe(struct mosquitto *m, void *userdata, int mid, int qos_count, const int *granted) {
        Client *c = userdata;
        c->subscribed = qos_count == 1 && granted[0] <= 2;
}

static void on_publish(struct mosquitto *m, void *userdata, int mid) {
        Client *c = userdata;
        c->published = true;
}

static void on_message(struct mosquitto *m, void *userdata, const struct mosquitto_message *msg) {
        Client *c = userdata;
        size_t n = MIN((size_t) msg->payloadlen, sizeof(c->received) - 1);
        memcpy(c->received, msg->payload, n);
        c->received[n] = 0;
        c->got_message = true;
}

static void on_log(struct mosquitto *m, void *userdata, int level, const char *str) {
        if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
                fprintf(stderr, "libmosquitto: %s\n", str);
}

static SSL_CTX *client_ctx(int max_version, X509 *cert, EVP_PKEY *key, const char *expect_host) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

        cr_assert_not_null(ctx);
        cr_assert(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION));
        cr_assert(SSL_CTX_set_max_proto_version(ctx, max_version));
        cr_assert(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki.ca));
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        cr_assert(X509_VERIFY_PARAM_set1_host(SSL_CTX_get0_param(ctx), expect_host, 0));
        cr_assert_eq(SSL_CTX_use_certificate(ctx, cert), 1);
        cr_assert_eq(SSL_CTX_use_PrivateKey(ctx, key), 1);
        cr_assert_eq(SSL_CTX_check_private_key(ctx), 1);
        return ctx;
}

static int client_connect(Client *c, const char *id, SSL_CTX *ctx) {
        memset(c, 0, sizeof(*c));
        c->connack = -1;
        c->mosq = mosquitto_new(id, true, c);
        cr_assert_not_null(c->mosq);
        mosquitto_connect_callback_set(c->mosq, on_connect);
        mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
        mosquitto_publish_callback_set(c->mosq, on_publish);
        mosquitto_message_callback_set(c->mosq, on_message);
        mosquitto_log_callback_set(c->mosq, on_log);
        cr_assert_eq(mosquitto_void_option(c->mosq, MOSQ_OPT_SSL_CTX, ctx), MOSQ_ERR_SUCCESS);
        /* 2.0.11 starts with the defaults switched ON (mosquitto_new), and
         * then refuses a user context without a cafile: switch them off. */
        cr_assert_eq(mosquitto_int_option(c->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0), MOSQ_ERR_SUCCESS);
        /* Blocking connect: TCP, then the whole TLS handshake, then CONNECT. */
        return mosquitto_connect(c->mosq, BROKER_HOST, broker_port, 30);
}

static void client_done(Client *c) {
        if (c->mosq) {
                mosquitto_disconnect(c->mosq);
                mosquitto_destroy(c->mosq);
        }
        c->mosq = NULL;
}

/* Drive both clients with mosquitto_loop() until *flag or 20 s. */
static void loop_until(Client *a, Client *b, const bool *flag, const char *what) {
        double deadline = now() + 20;

        while (!*flag) {
                cr_assert_lt(now(), deadline, "timed out waiting for %s", what);
                if (a->mosq)
                        cr_assert_eq(mosquitto_loop(a->mosq, 20, 1), MOSQ_ERR_SUCCESS, "%s", what);
                if (b && b->mosq)
                        cr_assert_eq(mosquitto_loop(b->mosq, 20, 1), MOSQ_ERR_SUCCESS, "%s", what);
        }
}

static void publish_through_ds(int max_version) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *sub_ctx = client_ctx(max_version, pki.sub, pki.sub_key, BROKER_HOST);
        _cleanup_(SSL_CTX_freep) SSL_CTX *dev_ctx = client_ctx(max_version, pki.device, pki.ds_pkey, BROKER_HOST);
        Client sub, dev;
        char payload[64];
        int nid = NID_undef;
        SSL *ssl;

        snprintf(payload, sizeof(payload), "signed by the DS over TLS 0x%x", (unsigned) max_version);

        cr_assert_eq(client_connect(&sub, "subscriber", sub_ctx), MOSQ_ERR_SUCCESS);
        loop_until(&sub, NULL, &sub.connected, "subscriber CONNACK");
        cr_assert_eq(mosquitto_subscribe(sub.mosq, NULL, "esp/#", 1), MOSQ_ERR_SUCCESS);
        loop_until(&sub, NULL, &sub.subscribed, "SUBACK");

        cr_assert_eq(client_connect(&dev, DEVICE_ID, dev_ctx), MOSQ_ERR_SUCCESS, "device TLS connect");
        loop_until(&dev, &sub, &dev.connected, "device CONNACK");

        /* The device really negotiated the version under test and signed its
         * CertificateVerify (PSS in TLS 1.3) with the DS key. */
        ssl = mosquitto_ssl_get(dev.mosq);
        cr_assert_not_null(ssl);
        cr_assert_eq(SSL_version(ssl), max_version);
        cr_assert_eq(SSL_get_signature_type_nid(ssl, &nid), 1);
        if (max_version == TLS1_3_VERSION)
                cr_assert_eq(nid, NID_rsassaPss);
        cr_assert_eq(SSL_get_verify_result(ssl), X509_V_OK);

        cr_assert_eq(mosquitto_publish(dev.mosq, NULL, "esp/" DEVICE_ID "/status", (int) strlen(payload), payload, 1, false),
                     MOSQ_ERR_SUCCESS);
        loop_until(&dev, &sub, &dev.published, "PUBACK");
        loop_until(&sub, &dev, &sub.got_message, "the message at the subscriber");
        cr_assert_str_eq(sub.received, payload);

        client_done(&dev);
        client_done(&sub);
}

TestSuite(ds_mqtt, .init = suite_init, .fini = suite_fini, .timeout = 120);

Test(ds_mqtt, publish_tls12) {
        publish_through_ds(TLS1_2_VERSION);
}

Test(ds_mqtt, publish_tls13) {
        publish_through_ds(TLS1_3_VERSION);
}

/* The client checks the broker's name: a context expecting another host
 * refuses the broker, so the positive cases above are meaningful. */
Test(ds_mqtt, wrong_broker_name_refused) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = client_ctx(TLS1_3_VERSION, pki.device, pki.ds_pkey, "not-the-broker.example");
        Client dev;

        double deadline = now() + 20;
        int r;

        /* The socket turns non-blocking before the handshake, so the failure
         * shows either at connect or in the loop; never as a CONNACK. */
        r = client_connect(&dev, DEVICE_ID, ctx);
        while (r == MOSQ_ERR_SUCCESS) {
                cr_assert_lt(now(), deadline, "the broker's certificate was not refused");
                r = mosquitto_loop(dev.mosq, 20, 1);
        }
        cr_assert(!dev.connected);
        cr_assert(r == MOSQ_ERR_TLS || r == MOSQ_ERR_CONN_LOST || r == MOSQ_ERR_PROTOCOL, "%s", mosquitto_strerror(r));
        client_done(&dev);
}

/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "fleet/fleet-dir.h"

static char tmp[64];

static void setup(void) {
        snprintf(tmp, sizeof tmp, "/tmp/test-fleet.XXXXXX");
        cr_assert_not_null(mkdtemp(tmp));
}

static void teardown(void) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        cr_assert_eq(system(cmd), 0);
}

static void write_text(const char *dir, const char *file, const char *text) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        cr_assert_eq(write_file_atomic(path, text, strlen(text), 0644), 0, "write %s", path);
}

/* A fleet dir with n devices whose MACs are 02:00:00:00:00:<i+1>. */
static Fleet *make_fleet(unsigned n) {
        FleetConfig c;
        Fleet *f = NULL;
        char err[256] = "";
        FleetDeviceEntry e[16];

        cr_assert_leq(n, ELEMENTSOF(e));
        fleet_config_init(&c);
        cr_assert_eq(fleet_create(tmp, &c, &f, err, sizeof err), 0, "%s", err);
        for (unsigned i = 0; i < n; i++) {
                char path[256];
                e[i] = (FleetDeviceEntry) { .index = i, .mac = { 0x02, 0, 0, 0, 0, (uint8_t) (i + 1) } };
                fleet_id_from_mac(e[i].mac, e[i].id);
                snprintf(path, sizeof path, "%s/devices/%s", tmp, e[i].id);
                cr_assert_eq(mkdir_p(path, 0755), 0);
                strcat(path, "/");
                write_text(path, FLEET_DEVICE_EFUSE_FILE, "x");
                write_text(path, FLEET_DEVICE_FLASH_FILE, "x");
        }
        write_text(tmp, FLEET_CA_FILE, "ca");
        cr_assert_eq(fleet_add_devices(f, e, n), 0);
        return f;
}

static int open_err(char *err, size_t errlen) {
        _cleanup_(fleet_freep) Fleet *f = NULL;
        int r = fleet_open(tmp, &f, err, errlen);
        if (r >= 0)
                cr_assert_not_null(f);
        return r;
}

TestSuite(fleet, .init = setup, .fini = teardown);

Test(fleet, id_is_valid) {
        /* a MAC's id, and the CNs of replayed devices */
        cr_assert(fleet_id_is_valid("esp-a1b2c3"));
        cr_assert(fleet_id_is_valid("esp-kat001"));
        cr_assert(fleet_id_is_valid("ESP32_dev.01"));
        cr_assert(fleet_id_is_valid("abcdefghijklmno"));        /* 15: the most */
        cr_assert_not(fleet_id_is_valid("abcdefghijklmnop"));   /* 16 */
        cr_assert_not(fleet_id_is_valid(""));
        cr_assert_not(fleet_id_is_valid("."));
        cr_assert_not(fleet_id_is_valid(".."));
        cr_assert_not(fleet_id_is_valid("-x"));
        cr_assert_not(fleet_id_is_valid("a/b"));                /* a directory name, a topic level */
        cr_assert_not(fleet_id_is_valid("a+b"));                /* MQTT wildcards */
        cr_assert_not(fleet_id_is_valid("a#"));
        cr_assert_not(fleet_id_is_valid("a b"));
        cr_assert_not(fleet_id_is_valid("caf\xc3\xa9"));
}

Test(fleet, id_and_mac) {
        uint8_t mac[6] = { 0x02, 0x11, 0x22, 0xa1, 0xb2, 0xc3 }, back[6];
        char id[FLEET_ID_MAX], s[18];

        fleet_id_from_mac(mac, id);
        cr_assert_str_eq(id, "esp-a1b2c3");
        fleet_mac_to_string(mac, s);
        cr_assert_str_eq(s, "02:11:22:a1:b2:c3");
        cr_assert_eq(fleet_mac_from_string(s, back), 0);
        cr_assert_arr_eq(back, mac, 6);
        cr_assert_eq(fleet_mac_from_string("02:11:22:a1:b2", back), -EINVAL);
        cr_assert_eq(fleet_mac_from_string("02-11-22-a1-b2-c3", back), -EINVAL);
        cr_assert_eq(fleet_mac_from_string("02:11:22:a1:b2:cg", back), -EINVAL);
}

Test(fleet, manifest_round_trip) {
        FleetDeviceEntry in[3] = {
                { .index = 7, .mac = { 0x02, 1, 2, 3, 4, 5 } },
                { .index = 2, .mac = { 0x06, 1, 2, 0xaa, 0xbb, 0xcc } },
                { .index = 4000, .mac = { 0x0a, 9, 9, 0, 0, 1 } },
        };
        _cleanup_free_ FleetDeviceEntry *out = NULL;
        _cleanup_free_ uint8_t *text = NULL;
        char path[256], err[256] = "";
        size_t n = 0;

        for (size_t i = 0; i < 3; i++)
                fleet_id_from_mac(in[i].mac, in[i].id);
        snprintf(path, sizeof path, "%s/manifest.csv", tmp);
        cr_assert_eq(fleet_manifest_write(path, in, 3), 0);
        cr_assert_eq(read_full_file(path, 4096, &text, NULL), 0);
        cr_assert_str_eq((char *) text, "index,id,mac\n"
                                        "7,esp-030405,02:01:02:03:04:05\n"
                                        "2,esp-aabbcc,06:01:02:aa:bb:cc\n"
                                        "4000,esp-000001,0a:09:09:00:00:01\n");
        cr_assert_eq(fleet_manifest_parse(path, &out, &n, err, sizeof err), 0, "%s", err);
        cr_assert_eq(n, 3);
        /* sorted by index */
        cr_assert_eq(out[0].index, 2);
        cr_assert_str_eq(out[0].id, "esp-aabbcc");
        cr_assert_arr_eq(out[0].mac, in[1].mac, 6);
        cr_assert_eq(out[1].index, 7);
        cr_assert_eq(out[2].index, 4000);
        cr_assert_str_eq(out[2].id, "esp-000001");
}

static void expect_manifest_error(const char *text, const char *needle) {
        _cleanup_free_ FleetDeviceEntry *out = NULL;
        char path[256], err[256] = "";
        size_t n = 0;
        int r;

        snprintf(path, sizeof path, "%s/m.csv", tmp);
        cr_assert_eq(write_file_atomic(path, text, strlen(text), 0644), 0);
        r = fleet_manifest_parse(path, &out, &n, err, sizeof err);
        cr_assert_lt(r, 0, "manifest %s accepted", text);
        cr_assert_not_null(strstr(err, needle), "error '%s' lacks '%s'", err, needle);
        cr_assert_not_null(strstr(err, "m.csv"), "error '%s' does not name the file", err);
}

Test(fleet, manifest_errors) {
        expect_manifest_error("", "empty file");
        expect_manifest_error("id,mac\n", "header");
        expect_manifest_error("index,id,mac\n0,esp-030405\n", ":2: expected 3 fields");
        expect_manifest_error("index,id,mac\n0,esp-030405,02:01:02:03:04:05,x\n", ":2: expected 3 fields");
        expect_manifest_error("index,id,mac\n-1,esp-030405,02:01:02:03:04:05\n", ":2: bad index");
        expect_manifest_error("index,id,mac\nx,esp-030405,02:01:02:03:04:05\n", ":2: bad index");
        expect_manifest_error("index,id,mac\n0,esp-030405,02:01:02:03:04\n", ":2: bad MAC");
        expect_manifest_error("index,id,mac\n0,esp-999999,02:01:02:03:04:05\n", "does not match MAC");
        expect_manifest_error("index,id,mac\n0,esp-030405,02:01:02:03:04:05\n\n1,esp-030406,02:01:02:03:04:06\n",
                              ":3: empty line");
        expect_manifest_error("index,id,mac\n0,esp-030405,02:01:02:03:04:05\n0,esp-030406,02:01:02:03:04:06\n",
                              "index 0 appears twice");
        expect_manifest_error("index,id,mac\n0,esp-030405,02:01:02:03:04:05\n1,esp-030405,06:01:02:03:04:05\n",
                              "'esp-030405' appears twice");
}

Test(fleet, config_round_trip_and_errors) {
        FleetConfig c, d;
        char path[256], err[256] = "";

        snprintf(path, sizeof path, "%s/fleet.conf", tmp);
        fleet_config_init(&c);
        snprintf(c.chip, sizeof c.chip, "esp32s3");
        c.ds_key_block = 3;
        c.nvs_encryption = true;
        c.nvs_key_block = 4;
        c.development = true;
        snprintf(c.firmware_version, sizeof c.firmware_version, "2.1.0");
        cr_assert_eq(fleet_config_save(path, &c), 0);
        cr_assert_eq(fleet_config_load(path, &d, err, sizeof err), 0, "%s", err);
        cr_assert_str_eq(d.chip, "esp32s3");
        cr_assert_eq(d.ds_key_block, 3);
        cr_assert(d.nvs_encryption);
        cr_assert_eq(d.nvs_key_block, 4);
        cr_assert(d.development);
        cr_assert_not(d.signed_apps_no_secure_boot);
        cr_assert_eq(d.rsa_bits, 2048);
        cr_assert_str_eq(d.firmware_version, "2.1.0");

        static const struct {
                const char *text, *needle;
        } bad[] = {
                { "chip = \"esp32c3\";\n", "no 'format' key" },
                { "format = 2;\n", "newer espfleet" },
                { "format = 0;\n", "Provision a new fleet" },
                { "format = 1;\nchip = \"esp32\";\n", "chip 'esp32' is not supported" },
                { "format = 1;\nds_key_block = 6;\n", ":2: 'ds_key_block' = 6 is out of range" },
                { "format = 1;\nds_key_block = \"1\";\n", ":2: 'ds_key_block' must be an integer" },
                { "format = 1;\ncolour = 1;\n", ":2: unknown key 'colour'" },
                { "format = 1;\nnvs_encryption = 1;\n", ":2: 'nvs_encryption' must be true or false" },
                { "format = 1;\nnvs_encryption = true;\n", "needs nvs_key_block" },
                { "format = 1;\nchip = ;\n", ":2:" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                cr_assert_eq(write_file_atomic(path, bad[i].text, strlen(bad[i].text), 0644), 0);
                err[0] = 0;
                cr_assert_lt(fleet_config_load(path, &d, err, sizeof err), 0, "accepted: %s", bad[i].text);
                cr_assert_not_null(strstr(err, bad[i].needle), "case %zu: '%s' lacks '%s'", i, err, bad[i].needle);
                cr_assert_not_null(strstr(err, "fleet.conf"), "'%s' does not name the file", err);
        }
}

Test(fleet, open_consistent) {
        _cleanup_(fleet_freep) Fleet *f = make_fleet(3), *g = NULL;
        char err[256] = "";

        cr_assert_eq(fleet_open(tmp, &g, err, sizeof err), 0, "%s", err);
        cr_assert_eq(fleet_n_devices(g), 3);
        cr_assert_str_eq(fleet_device_entry(g, 2)->id, "esp-000003");
        cr_assert_eq(fleet_find_device(g, "esp-000002")->index, 1);
        cr_assert_null(fleet_find_device(g, "esp-000009"));
        cr_assert_eq(fleet_find_index(g, 2)->mac[5], 3);
        cr_assert_null(fleet_find_index(g, 3));
        cr_assert_str_eq(fleet_config(g)->chip, "esp32c3");

        /* adding a duplicate is refused and leaves the manifest alone */
        FleetDeviceEntry dup = { .index = 9, .mac = { 0x02, 0, 0, 0, 0, 1 } };
        fleet_id_from_mac(dup.mac, dup.id);
        cr_assert_eq(fleet_add_devices(g, &dup, 1), -EEXIST);
        cr_assert_eq(fleet_n_devices(g), 3);
}

Test(fleet, open_inconsistent) {
        _cleanup_(fleet_freep) Fleet *f = make_fleet(2);
        char err[512] = "", path[256];

        /* a device's flash image is missing */
        snprintf(path, sizeof path, "%s/devices/esp-000002/flash.bin", tmp);
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(open_err(err, sizeof err), -ENOENT);
        cr_assert_not_null(strstr(err, "esp-000002/flash.bin: missing"), "%s", err);

        /* a manifest line without a device dir */
        snprintf(path, sizeof path, "rm -rf '%s/devices/esp-000002'", tmp);
        cr_assert_eq(system(path), 0);
        cr_assert_eq(open_err(err, sizeof err), -ENOENT);
        cr_assert_not_null(strstr(err, "'esp-000002' is listed but its directory"), "%s", err);
        cr_assert_not_null(strstr(err, "manifest.csv"), "%s", err);

        /* a plaintext key left by an older espfleet */
        write_text(tmp, "devices/esp-000001/device.key", "-----BEGIN PRIVATE KEY-----\n");
        cr_assert_eq(open_err(err, sizeof err), -EPROTO);
        cr_assert_not_null(strstr(err, "plaintext private key"), "%s", err);
}

Test(fleet, open_refuses_old_and_unknown) {
        char err[512] = "", path[256];

        cr_assert_eq(open_err(err, sizeof err), -ENOENT);
        cr_assert_not_null(strstr(err, "not a fleet directory"), "%s", err);

        write_text(tmp, "manifest.csv", "index,id,mac\n");
        cr_assert_eq(open_err(err, sizeof err), -EPROTO);
        cr_assert_not_null(strstr(err, "older espfleet"), "%s", err);
        cr_assert_not_null(strstr(err, "espfleet provision"), "%s", err);

        write_text(tmp, "fleet.conf", "format = 7;\n");
        cr_assert_eq(open_err(err, sizeof err), -EPROTO);
        cr_assert_not_null(strstr(err, "newer espfleet"), "%s", err);

        snprintf(path, sizeof path, "%s/nope", tmp);
        {
                _cleanup_(fleet_freep) Fleet *f = NULL;
                cr_assert_eq(fleet_open(path, &f, err, sizeof err), -ENOENT);
                cr_assert_not_null(strstr(err, "nope"), "%s", err);
        }
}

Test(fleet, create_refuses_existing) {
        _cleanup_(fleet_freep) Fleet *f = make_fleet(1), *g = NULL;
        FleetConfig c;
        char err[256] = "";

        fleet_config_init(&c);
        cr_assert_eq(fleet_create(tmp, &c, &g, err, sizeof err), -EEXIST);
        cr_assert_not_null(strstr(err, "fleet.conf: already exists"), "%s", err);
}

Test(fleet, locks_in_process) {
        _cleanup_(fleet_freep) Fleet *f = make_fleet(6);
        char err[256] = "", dir[256];
        int fd = -1, fd2 = -1;
        pid_t pid = -1;

        cr_assert_eq(fleet_device_running(f, 4, &pid), 0);
        cr_assert_eq(fleet_lock_devices(f, 2, 3, &fd, err, sizeof err), 0, "%s", err);
        cr_assert_geq(fd, 0);

        /* A second worker (another open file description) cannot take an
         * overlapping range, even in the same process; a disjoint one is fine. */
        cr_assert_eq(fleet_lock_devices(f, 4, 2, &fd2, err, sizeof err), -EBUSY);
        cr_assert_not_null(strstr(err, "device 4 'esp-000005'"), "%s", err);
        char want[32];
        snprintf(want, sizeof want, "pid %d", (int) getpid());
        cr_assert_not_null(strstr(err, want), "%s", err);
        cr_assert_eq(fleet_lock_devices(f, 5, 1, &fd2, err, sizeof err), 0, "%s", err);

        cr_assert_eq(fleet_device_running(f, 1, &pid), 0);
        cr_assert_eq(fleet_device_running(f, 3, &pid), 1);
        cr_assert_eq(pid, getpid());
        cr_assert_eq(fleet_device_running(f, 5, &pid), 1);

        snprintf(dir, sizeof dir, "%s/devices/esp-000004", tmp);
        cr_assert_eq(fleet_device_check_not_running(dir, err, sizeof err), -EBUSY);
        cr_assert_not_null(strstr(err, "'esp-000004'"), "%s", err);
        cr_assert_not_null(strstr(err, want), "%s", err);
        snprintf(dir, sizeof dir, "%s/devices/esp-000001", tmp);
        cr_assert_eq(fleet_device_check_not_running(dir, err, sizeof err), 0, "%s", err);

        fleet_unlock_devices(f, 2, fd);
        cr_assert_eq(fleet_device_running(f, 3, &pid), 0);
        snprintf(dir, sizeof dir, "%s/devices/esp-000004", tmp);
        cr_assert_eq(fleet_device_check_not_running(dir, err, sizeof err), 0, "%s", err);
        fleet_unlock_devices(f, 5, fd2);
        cr_assert_eq(fleet_device_running(f, 5, &pid), 0);
        cr_assert_eq(fleet_lock_devices(f, 0, 6, &fd, err, sizeof err), 0, "%s", err);
        fleet_unlock_devices(f, 0, fd);
}

Test(fleet, lock_held_by_child_and_released_on_exit) {
        _cleanup_(fleet_freep) Fleet *f = make_fleet(4);
        char err[256] = "", dir[256], want[32];
        int to_parent[2], to_child[2], status;
        pid_t child, pid = 0;
        char c;

        cr_assert_eq(pipe(to_parent), 0);
        cr_assert_eq(pipe(to_child), 0);
        child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
                int fd;
                if (fleet_lock_devices(f, 0, 4, &fd, NULL, 0) < 0)
                        _exit(1);
                (void) !write(to_parent[1], "L", 1);
                (void) !read(to_child[0], &c, 1);
                _exit(0);       /* no unlock: the kernel drops the lock */
        }
        cr_assert_eq(read(to_parent[0], &c, 1), 1);

        cr_assert_eq(fleet_device_running(f, 2, &pid), 1);
        cr_assert_eq(pid, child);
        snprintf(dir, sizeof dir, "%s/devices/esp-000003", tmp);
        snprintf(want, sizeof want, "pid %d", (int) child);
        cr_assert_eq(fleet_device_check_not_running(dir, err, sizeof err), -EBUSY);
        cr_assert_not_null(strstr(err, want), "%s", err);

        cr_assert_eq(write(to_child[1], "x", 1), 1);
        cr_assert_eq(waitpid(child, &status, 0), child);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        cr_assert_eq(fleet_device_running(f, 2, &pid), 0);
        cr_assert_eq(fleet_device_check_not_running(dir, err, sizeof err), 0, "%s", err);
}

Test(fleet, resolve_device_arg) {
        _cleanup_(fleet_freep) Fleet *f = make_fleet(2);
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        char arg[256], err[256] = "";

        snprintf(arg, sizeof arg, "%s/esp-000002", tmp);
        a = fleet_resolve_device_arg(arg, err, sizeof err);
        cr_assert_not_null(a, "%s", err);
        snprintf(arg, sizeof arg, "%s/devices/esp-000002", tmp);
        cr_assert_str_eq(a, arg);
        b = fleet_resolve_device_arg(arg, err, sizeof err);
        cr_assert_str_eq(b, arg);
        snprintf(arg, sizeof arg, "%s/esp-000009", tmp);
        c = fleet_resolve_device_arg(arg, err, sizeof err);
        cr_assert_null(c);
        cr_assert_not_null(strstr(err, "esp-000009"), "%s", err);
}

/* The device part of the core: the big-core thread rule against fake sysfs trees (the cases
 * of tests/test_engine_threads.py), thermal and device blocks, sha256, the profile writer on
 * synthetic runs and fe_benchmark on the model. argv[1] = SmolLM2 GGUF. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "finllm_edge.h"
#include "fe_test.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[256];

/* mkdir -p of a path built with printf. */
static void mkdirs(const char *fmt, ...) {
    char path[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0755);
            *p = '/';
        }
    mkdir(path, 0755);
}

static void write_text(const char *text, const char *fmt, ...) {
    char path[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

/* A fake sysfs under g_tmp/<name>: devices/system/cpu/{online, cpuN/cpufreq/...}. khz[i] <= 0:
 * that CPU has a cpufreq directory but no readable files (a VM). Returns the root. */
static const char *fake_sysfs(const char *name, const long *khz, int n, const char *online) {
    static char root[512];
    snprintf(root, sizeof root, "%s/%s", g_tmp, name);
    mkdirs("%s/devices/system/cpu", root);
    char buf[64];
    snprintf(buf, sizeof buf, "0-%d\n", n - 1);
    write_text(online ? online : buf, "%s/devices/system/cpu/online", root);
    for (int i = 0; i < n; i++) {
        mkdirs("%s/devices/system/cpu/cpu%d/cpufreq", root, i);
        if (khz[i] <= 0) continue;
        snprintf(buf, sizeof buf, "%ld\n", khz[i]);
        write_text(buf, "%s/devices/system/cpu/cpu%d/cpufreq/cpuinfo_max_freq", root, i);
        write_text("schedutil\n", "%s/devices/system/cpu/cpu%d/cpufreq/scaling_governor", root, i);
        snprintf(buf, sizeof buf, "%ld\n", khz[i] / 2);
        write_text(buf, "%s/devices/system/cpu/cpu%d/cpufreq/scaling_cur_freq", root, i);
    }
    return root;
}

static const int32_t ALL8[8] = {0, 1, 2, 3, 4, 5, 6, 7};
/* Snapdragon 865 as most kernels number it: 4x A55 1.8 GHz, 3x A77 2.42 GHz, 1x A77 2.84 GHz. */
static const long SD865[8] = {1804800, 1804800, 1804800, 1804800, 2419200, 2419200, 2419200, 2841600};
/* The same SoC numbered big cores first. */
static const long SD865_BIG_FIRST[8] = {2841600, 2419200, 2419200, 2419200, 1804800, 1804800, 1804800, 1804800};

static int same_cores(const fe_thread_choice *c, const int32_t *want, int n) {
    if (c->n_cores != n) return 0;
    for (int i = 0; i < n; i++)
        if (c->cores[i] != want[i]) return 0;
    return 1;
}

static void test_sd865_uses_the_four_big_cores(void) {
    fe_thread_choice c;
    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("sd865", SD865, 8, NULL), ALL8, 8, &c), FE_OK, NULL);
    static const int32_t want[4] = {4, 5, 6, 7};
    CHECK(c.n_threads == 4);
    CHECK(same_cores(&c, want, 4));
    CHECK(strstr(c.reason, "1x2.84GHz") != NULL && strstr(c.reason, "3x2.42GHz") != NULL);
    CHECK(strstr(c.reason, "skipping 4 cores at 1.80GHz") != NULL);
    CHECK(c.n_affinity == 8 && c.affinity[7] == 7);

    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("sd865b", SD865_BIG_FIRST, 8, NULL), ALL8, 8, &c), FE_OK, NULL);
    static const int32_t want_b[4] = {0, 1, 2, 3};
    CHECK(c.n_threads == 4 && same_cores(&c, want_b, 4));
}

static void test_three_clusters_keep_everything_but_the_little_cluster(void) {
    static const long f[8] = {2016000, 2016000, 2016000, 2803200, 2803200, 2803200, 2803200, 3187200};
    fe_thread_choice c;
    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("three", f, 8, NULL), ALL8, 8, &c), FE_OK, NULL);
    static const int32_t want[5] = {3, 4, 5, 6, 7};
    CHECK(c.n_threads == 5 && same_cores(&c, want, 5));
}

static void test_affinity_mask_limits_the_choice(void) {
    static const int32_t aff[6] = {5, 4, 3, 2, 1, 0};  /* order does not matter */
    fe_thread_choice c;
    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("aff", SD865, 8, NULL), aff, 6, &c), FE_OK, NULL);
    static const int32_t want[2] = {4, 5};
    CHECK(c.n_threads == 2 && same_cores(&c, want, 2));
    CHECK(c.n_affinity == 6 && c.affinity[0] == 0 && c.affinity[5] == 5);
}

static void test_offline_cores_are_ignored(void) {
    fe_thread_choice c;
    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("offline", SD865, 8, "0-6\n"), ALL8, 8, &c), FE_OK, NULL);
    static const int32_t want[3] = {4, 5, 6};
    CHECK(c.n_threads == 3 && same_cores(&c, want, 3));
}

static void test_uniform_or_unreadable_frequencies_use_every_allowed_core(void) {
    static const long same[3] = {3000000, 3000000, 3000000};
    static const int32_t aff3[3] = {0, 1, 2};
    fe_thread_choice c;
    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("same", same, 3, NULL), aff3, 3, &c), FE_OK, NULL);
    CHECK(c.n_threads == 3 && same_cores(&c, aff3, 3));
    CHECK(strstr(c.reason, "share max freq 3000000 kHz") != NULL);

    static const long vm[2] = {0, 0};
    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("vm", vm, 2, NULL), aff3, 2, &c), FE_OK, NULL);
    CHECK(c.n_threads == 2 && same_cores(&c, aff3, 2));
    CHECK(strstr(c.reason, "not readable") != NULL);

    /* one unreadable core among readable ones: no guessing, every allowed core */
    static const long partial[4] = {2841600, 2419200, 0, 1804800};
    static const int32_t aff4[4] = {0, 1, 2, 3};
    CHECK_STATUS(fe_choose_threads(0, fake_sysfs("partial", partial, 4, NULL), aff4, 4, &c), FE_OK, NULL);
    CHECK(c.n_threads == 4 && strstr(c.reason, "not readable") != NULL);

    /* no sysfs at all */
    char none[512];
    snprintf(none, sizeof none, "%s/no-such-sysfs", g_tmp);
    CHECK_STATUS(fe_choose_threads(0, none, aff4, 4, &c), FE_OK, NULL);
    CHECK(c.n_threads == 4 && same_cores(&c, aff4, 4));
}

static void test_explicit_thread_count_reports_the_fastest_cores(void) {
    fe_thread_choice c;
    const char *root = fake_sysfs("explicit", SD865, 8, NULL);
    CHECK_STATUS(fe_choose_threads(2, root, ALL8, 8, &c), FE_OK, NULL);
    static const int32_t want[2] = {4, 7};  /* the prime core, then the first gold core */
    CHECK(c.n_threads == 2 && same_cores(&c, want, 2));
    CHECK(strstr(c.reason, "2 threads requested") != NULL);
    /* more threads than cores: the count stays, the cores are all of them */
    CHECK_STATUS(fe_choose_threads(12, root, ALL8, 8, &c), FE_OK, NULL);
    CHECK(c.n_threads == 12 && c.n_cores == 8);
    CHECK_STATUS(fe_choose_threads(-1, root, ALL8, 8, &c), FE_ERR_INVALID_ARG, "n_threads");
    CHECK_STATUS(fe_choose_threads(0, root, NULL, 3, &c), FE_ERR_INVALID_ARG, "affinity");
    static const int32_t bad[1] = {FE_MAX_CPUS};
    CHECK_STATUS(fe_choose_threads(0, root, bad, 1, &c), FE_ERR_INVALID_ARG, "outside");
    CHECK_STATUS(fe_choose_threads(0, root, ALL8, 8, NULL), FE_ERR_INVALID_ARG, "NULL");
}

static void test_default_n_threads_follows_fe_sysfs_root(void) {
    /* the process's real affinity on a fake tree: CPUs in the mask that are absent from the
     * tree have no cpufreq -> every allowed core; a tree where cpu0 is the only fast core -> 1 */
    int32_t real = fe_default_n_threads();
    CHECK(real >= 1);
    fe_thread_choice self;
    CHECK_STATUS(fe_choose_threads(0, NULL, NULL, 0, &self), FE_OK, NULL);
    long khz[FE_MAX_CPUS];
    int n = 0;
    for (int i = 0; i < self.n_affinity; i++) n = self.affinity[i] + 1 > n ? self.affinity[i] + 1 : n;
    for (int i = 0; i < n; i++) khz[i] = 1000000;
    khz[self.affinity[0]] = 2000000;
    const char *root = fake_sysfs("self", khz, n, NULL);
    CHECK(setenv("FE_SYSFS_ROOT", root, 1) == 0);
    /* only the first CPU of the mask is fast: one thread (also with a one-CPU mask) */
    CHECK(fe_default_n_threads() == 1);
    CHECK(fe_session_default_params().n_threads == 1);
    unsetenv("FE_SYSFS_ROOT");
    CHECK(fe_default_n_threads() == real);
}

static void test_thermal_and_device_blocks(void) {
    const char *root = fake_sysfs("thermal", SD865, 8, NULL);
    char base[600];
    snprintf(base, sizeof base, "%s", root);
    mkdirs("%s/class/thermal/thermal_zone0", base);
    write_text("41500\n", "%s/class/thermal/thermal_zone0/temp", base);
    write_text("cpu-0-0-usr\n", "%s/class/thermal/thermal_zone0/type", base);
    mkdirs("%s/class/thermal/thermal_zone12", base);
    write_text("35\n", "%s/class/thermal/thermal_zone12/temp", base);  /* degrees, not millidegrees */
    write_text("battery\n", "%s/class/thermal/thermal_zone12/type", base);
    mkdirs("%s/class/thermal/thermal_zone3", base);  /* unreadable temp: left out */
    CHECK(setenv("FE_SYSFS_ROOT", base, 1) == 0);

    char *t = fe_thermal_json();
    REQUIRE(t != NULL);
    CHECK(strstr(t, "\"temps_c\": {") == t + 1);
    CHECK(strstr(t, "\"thermal_zone0:cpu-0-0-usr\": 41.5") != NULL);
    CHECK(strstr(t, "\"thermal_zone12:battery\": 35.0") != NULL);
    CHECK(strstr(t, "thermal_zone3") == NULL);
    CHECK(strstr(t, "\"7\": 1420800") != NULL);  /* scaling_cur_freq = max / 2 in the fake tree */
    CHECK(strstr(t, "temp_c\"") == NULL);        /* the key is temps_c, as the adb snapshots */
    fe_free(t);

    char *d = fe_device_json();
    REQUIRE(d != NULL);
    /* governor and max_freq of the CPUs in this process's mask come from the fake tree */
    fe_thread_choice self;
    CHECK_STATUS(fe_choose_threads(0, NULL, NULL, 0, &self), FE_OK, NULL);
    CHECK(strstr(d, "\"cpu_model\": \"") != NULL && strstr(d, "\"cores_used\": [") != NULL);
    if (self.affinity[0] < 4) {  /* the fake tree's CPUs 0-3 are the 1.8 GHz cluster */
        char want[96];
        snprintf(want, sizeof want, "\"governor\": {\"%d\": \"schedutil\"", (int)self.affinity[0]);
        CHECK(strstr(d, want) != NULL);
        snprintf(want, sizeof want, "\"max_freq_khz\": {\"%d\": 1804800", (int)self.affinity[0]);
        CHECK(strstr(d, want) != NULL);
    } else {
        fprintf(stderr, "note: affinity starts at cpu%d; governor check needs a CPU below 4\n", (int)self.affinity[0]);
        CHECK(self.affinity[0] < 4);  /* fail loudly rather than skip */
    }
    CHECK(strstr(d, "\"mem_total_mb\": ") != NULL);
    fe_free(d);
    unsetenv("FE_SYSFS_ROOT");

    /* nothing readable: empty objects, never NULL */
    char none[512];
    snprintf(none, sizeof none, "%s/nothing", g_tmp);
    CHECK(setenv("FE_SYSFS_ROOT", none, 1) == 0);
    t = fe_thermal_json();
    REQUIRE(t != NULL);
    CHECK(strcmp(t, "{\"temps_c\": {}, \"cur_freq_khz\": {}}") == 0);
    fe_free(t);
    unsetenv("FE_SYSFS_ROOT");
}

static void test_sha256(void) {
    char path[512], hex[65];
    snprintf(path, sizeof path, "%s/abc.bin", g_tmp);
    write_text("abc", "%s", path);
    CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);  /* cached */
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    sleep(1);  /* a new mtime second even on coarse file systems */
    write_text("abcd", "%s", path);  /* size + mtime change -> hashed again */
    CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);
    CHECK(strcmp(hex, "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589") == 0);
    snprintf(path, sizeof path, "%s/empty.bin", g_tmp);
    write_text("", "%s", path);
    CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    CHECK_STATUS(fe_file_sha256(g_tmp, hex), FE_ERR_FILE_NOT_FOUND, "not a regular file");
    snprintf(path, sizeof path, "%s/none.bin", g_tmp);
    CHECK_STATUS(fe_file_sha256(path, hex), FE_ERR_FILE_NOT_FOUND, "none.bin");
    CHECK_STATUS(fe_file_sha256(NULL, hex), FE_ERR_INVALID_ARG, NULL);
    /* a million 'a' (FIPS 180-2's long vector): many blocks through the CPU's SHA instructions
     * where it has them (fe_sha256_impl), the same digest as the portable code */
    const char *impl = fe_sha256_impl();
    fprintf(stderr, "  sha256 implementation: %s\n", impl);
    CHECK(impl && (!strcmp(impl, "portable") || !strcmp(impl, "x86-sha-ni") || !strcmp(impl, "armv8-sha2")));
    snprintf(path, sizeof path, "%s/million.bin", g_tmp);
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    for (int i = 0; i < 1000000; i++) fputc('a', f);
    fclose(f);
    CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
}

/* the index line fe_file_sha256 would trust for `path` as it is now, with `hex` as its hash */
static void index_line(char *out, size_t n, const char *path, const char *hex) {
    struct stat st;
    char real[4096];
    if (stat(path, &st) != 0 || !realpath(path, real)) { out[0] = 0; return; }
    snprintf(out, n, "%s %llu %llu %llu %llu %llu %s\n", hex, (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec,
             (unsigned long long)st.st_ctim.tv_sec * 1000000000ull + (unsigned long long)st.st_ctim.tv_nsec, real);
}

static void test_hash_index(void) {
    static const char *abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    static const char *fake = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char dir[512], idx[600], path[512], hex[65], line[8192], text[20000];
    snprintf(dir, sizeof dir, "%s/hash-index", g_tmp);
    snprintf(idx, sizeof idx, "%s/sha256-index.txt", dir);
    CHECK_STATUS(fe_set_hash_index_dir(dir), FE_OK, NULL);
    /* a hash computed is recorded: header + one line naming the file's real path */
    snprintf(path, sizeof path, "%s/idx-a.bin", g_tmp);
    write_text("abc", "%s", path);
    CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);
    CHECK(strcmp(hex, abc) == 0);
    char want[8192];
    index_line(want, sizeof want, path, abc);
    FILE *f = fopen(idx, "rb");
    REQUIRE(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    CHECK(strncmp(text, "finllm-edge sha256-index 1\n", 27) == 0);
    CHECK(want[0] && strstr(text, want) != NULL);
    /* a matching entry is what a later process uses: a file not hashed in this process yet,
     * with a planted hash, gets the planted hash (the file is not read) */
    snprintf(path, sizeof path, "%s/idx-b.bin", g_tmp);
    write_text("abc", "%s", path);
    index_line(line, sizeof line, path, fake);
    write_text(line, "%s", idx);  /* no header: ignored whole */
    CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);
    CHECK(strcmp(hex, abc) == 0);
    /* damaged entries are never trusted; each case hashes a fresh file (no in-process cache) */
    const char *cases[] = {"GOOD", "UPPER", "STAMP", "NOEOL", "OVERFLOW", "RELATIVE", "HUGE", "OFF"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(path, sizeof path, "%s/idx-c%zu.bin", g_tmp, i);
        write_text("abc", "%s", path);
        index_line(line, sizeof line, path, fake);
        const char *c = cases[i];
        if (!strcmp(c, "UPPER")) for (int k = 0; k < 64; k++) line[k] = (char)toupper((unsigned char)line[k]);
        if (!strcmp(c, "STAMP")) { char *sp = strchr(line, ' '); sp[1] = sp[1] == '9' ? '8' : '9'; }
        if (!strcmp(c, "NOEOL")) line[strlen(line) - 1] = 0;
        if (!strcmp(c, "OVERFLOW")) { memmove(line + 65 + 23, line + 65, strlen(line) - 65 + 1); memset(line + 65, '9', 23); }
        if (!strcmp(c, "RELATIVE")) { char *slash = strchr(line + 65, '/'); memmove(slash, slash + 1, strlen(slash)); }
        FILE *w = fopen(idx, "wb");
        REQUIRE(w);
        fputs("finllm-edge sha256-index 1\n", w);
        if (!strcmp(c, "HUGE")) for (int k = 0; k < 40000; k++) fputs("junk line of an oversize index\n", w);
        fputs(line, w);
        fclose(w);
        if (!strcmp(c, "OFF")) CHECK_STATUS(fe_set_hash_index_dir(NULL), FE_OK, NULL);
        CHECK_STATUS(fe_file_sha256(path, hex), FE_OK, NULL);
        if (!strcmp(c, "GOOD")) {
            if (strcmp(hex, fake) != 0) fprintf(stderr, "  a good planted entry was not used\n");
            CHECK(strcmp(hex, fake) == 0);
        } else {
            if (strcmp(hex, abc) != 0) fprintf(stderr, "  case %s: trusted a damaged entry\n", c);
            CHECK(strcmp(hex, abc) == 0);
        }
    }
    CHECK_STATUS(fe_set_hash_index_dir(NULL), FE_OK, NULL);
}

/* the value after "key": in a profile, as a double */
static double jnum(const char *json, const char *key) {
    char k[128];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(json, k);
    return p ? atof(p + strlen(k)) : NAN;
}

static void test_profile_json_on_synthetic_runs(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.bin", g_tmp);
    write_text("abc", "%s", path);
    static const double t1[3] = {10.0, 20.0, 30.0}, t2[3] = {5.0, 5.0, 5.0}, t3[3] = {20.0, 4.0, 6.0};
    fe_run_timing runs[3] = {
        {100.0, 80.0, 200.0, 16, 4, t1, 3, 0},
        {50.0, 40.0, 90.0, 16, 4, t2, 3, 0},
        {70.0, 20.0, 140.0, 16, 4, t3, 3, 0},
    };
    fe_profile_meta m = fe_profile_default_meta();
    CHECK(m.n_threads == fe_default_n_threads() && m.n_ctx == 0 && m.tool == NULL);
    m.tool = "test_device";
    m.model_path = path;
    m.model_type = "llama ?B Q4_0";
    m.bits_per_weight = 4.5;
    m.n_threads = 2;
    m.n_ctx = 64;
    m.warmup = 1;
    m.load_ms = 12.5;
    m.variant = "";
    static const int32_t cores[2] = {0, 1};
    m.cores_used = cores;
    m.n_cores_used = 2;
    m.thermal_before_json = "{\"temps_c\": {\"thermal_zone0:cpu\": 40.0}, \"cur_freq_khz\": {}}";
    char *j = fe_profile_json(runs, 3, &m);
    REQUIRE(j != NULL);
    CHECK(strstr(j, "\"tool\": \"test_device\"") != NULL);
    CHECK(strstr(j, "\"model_sha256\": \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"") != NULL);
    CHECK(jnum(j, "model_size_bytes") == 3);
    CHECK(strstr(j, "\"variant\": null") != NULL);
    CHECK(strstr(j, "\"tool_version\": \"") != NULL && strstr(j, fe_llama_version()) != NULL);
    CHECK(jnum(j, "repetitions") == 3 && jnum(j, "warmup") == 1 && jnum(j, "n_threads") == 2);
    CHECK(jnum(j, "ttft_ms") == 70.0 && jnum(j, "e2e_ms") == 140.0);              /* medians */
    CHECK(jnum(j, "prefill_tok_s") == 400.0);                                    /* 16 / 40 ms */
    CHECK(jnum(j, "prefill_tok_s_min") == 200.0 && jnum(j, "prefill_tok_s_max") == 800.0);
    CHECK(jnum(j, "decode_tok_s") == 100.0);                                     /* 3 / 30 ms */
    CHECK(jnum(j, "decode_tok_s_min") == 50.0 && jnum(j, "decode_tok_s_max") == 200.0);
    CHECK(jnum(j, "token_ms_p50") == 6.0);                                       /* pooled over 9 */
    CHECK(fabs(jnum(j, "token_ms_p90") - 22.0) < 1e-9);
    CHECK(strstr(j, "\"token_ms\": [20.0, 4.0, 6.0]") != NULL);                  /* the last run */
    CHECK(strstr(j, "\"cores_used\": [0, 1]") != NULL);
    CHECK(strstr(j, "\"thermal\": {\"before\": {\"temps_c\": {\"thermal_zone0:cpu\": 40.0}") != NULL);
    CHECK(strstr(j, "\"after\": {\"temps_c\": ") != NULL);
    fe_free(j);

    /* given sha, no thermal anywhere -> thermal null */
    char none[512];
    snprintf(none, sizeof none, "%s/nothing", g_tmp);
    CHECK(setenv("FE_SYSFS_ROOT", none, 1) == 0);
    m.thermal_before_json = NULL;
    m.model_sha256 = "00";
    j = fe_profile_json(runs, 1, &m);
    REQUIRE(j != NULL);
    CHECK(strstr(j, "\"thermal\": null") != NULL && strstr(j, "\"model_sha256\": \"00\"") != NULL);
    fe_free(j);
    unsetenv("FE_SYSFS_ROOT");

    /* bad input: NULL + a message, never a crash */
    m.model_sha256 = NULL;
    CHECK(fe_profile_json(NULL, 1, &m) == NULL && fe_test_mentions("no runs"));
    CHECK(fe_profile_json(runs, 0, &m) == NULL && fe_test_mentions("no runs"));
    CHECK(fe_profile_json(runs, 1, NULL) == NULL && fe_test_mentions("meta"));
    fe_run_timing bad = runs[0];
    bad.e2e_ms = NAN;
    CHECK(fe_profile_json(&bad, 1, &m) == NULL && fe_test_mentions("non-finite"));
    bad = runs[0];
    bad.token_ms = NULL;
    CHECK(fe_profile_json(&bad, 1, &m) == NULL && fe_test_mentions("token_ms is NULL"));
    static const double neg[1] = {-1.0};
    bad = runs[0];
    bad.token_ms = neg;
    bad.n_token_ms = 1;
    CHECK(fe_profile_json(&bad, 1, &m) == NULL && fe_test_mentions("token_ms[0]"));
    fe_profile_meta m2 = m;
    m2.n_ctx = 0;
    CHECK(fe_profile_json(runs, 1, &m2) == NULL && fe_test_mentions("n_ctx = 0"));
    m2 = m;
    m2.thermal_before_json = "{\"temps_c\": {";
    CHECK(fe_profile_json(runs, 1, &m2) == NULL && fe_test_mentions("not a JSON object"));
    m2.thermal_before_json = "[1, 2]";
    CHECK(fe_profile_json(runs, 1, &m2) == NULL && fe_test_mentions("not a JSON object"));
    m2 = m;
    m2.model_path = NULL;
    CHECK(fe_profile_json(runs, 1, &m2) == NULL && fe_test_mentions("no model path"));
    m2.model_path = g_tmp;  /* a directory cannot be hashed without model_sha256 */
    CHECK(fe_profile_json(runs, 1, &m2) == NULL && fe_test_mentions("not a regular file"));
    fe_free(NULL);
}

static void test_benchmark(const char *model_path) {
    fe_model *model = NULL;
    fe_model_params mp = fe_model_default_params();
    REQUIRE(fe_model_load(model_path, &mp, &model) == FE_OK);
    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = 64;
    sp.n_threads = 1;
    sp.n_threads_batch = 1;
    fe_session *s = NULL;
    REQUIRE(fe_session_create(model, &sp, &s) == FE_OK);

    fe_bench_params bp = fe_bench_default_params();
    CHECK(bp.n_prompt == 64 && bp.n_gen == 64 && bp.repetitions == 5 && bp.warmup == 1);
    CHECK(strstr(fe_bench_text(), "Quarterly revenue rose 12%") == fe_bench_text());
    bp.n_prompt = 20;
    bp.n_gen = 6;
    bp.repetitions = 2;
    bp.warmup = 1;
    fe_bench_result br;
    CHECK_STATUS(fe_benchmark(s, &bp, &br), FE_OK, NULL);
    CHECK(br.n_runs == 2 && br.thermal_before_json != NULL);
    for (size_t i = 0; i < br.n_runs; i++) {
        CHECK(br.runs[i].n_prompt == 20 && br.runs[i].n_gen == 6);
        CHECK(br.runs[i].n_token_ms == 5 && br.runs[i].token_ms != NULL);
        CHECK(br.runs[i].ttft_ms > 0 && br.runs[i].ttft_ms <= br.runs[i].e2e_ms && br.runs[i].prefill_ms > 0);
    }
    CHECK(br.n_runs < 2 || br.runs[0].token_ms != br.runs[1].token_ms);  /* owned copies */
    fe_profile_meta m = fe_profile_default_meta();
    m.tool = "test_device";
    m.model = model;
    m.n_threads = 1;
    m.n_ctx = 64;
    m.warmup = 1;
    m.thermal_before_json = br.thermal_before_json;
    char *j = fe_profile_json(br.runs, br.n_runs, &m);
    REQUIRE(j != NULL);
    CHECK(jnum(j, "n_prompt") == 20 && jnum(j, "n_gen") == 6 && jnum(j, "repetitions") == 2);
    CHECK(jnum(j, "load_ms") > 0 && jnum(j, "bits_per_weight") > 4);
    fe_model_info mi;
    REQUIRE(fe_model_get_info(model, &mi) == FE_OK);
    CHECK(strstr(j, mi.desc) != NULL);  /* model_type from the model itself (Q4_1 here, Q4_0 under qemu) */
    fe_free(j);
    fe_bench_result_free(&br);
    CHECK(br.runs == NULL && br.n_runs == 0 && br.thermal_before_json == NULL);
    fe_bench_result_free(&br);  /* twice */
    fe_bench_result_free(NULL);

    /* llama-bench's random prompt and a caller's text give the same shape */
    bp.random_tokens = true;
    bp.repetitions = 1;
    bp.warmup = 0;
    CHECK_STATUS(fe_benchmark(s, &bp, &br), FE_OK, NULL);
    CHECK(br.n_runs == 1 && br.runs[0].n_prompt == 20);
    fe_bench_result_free(&br);
    bp.random_tokens = false;
    bp.prompt_text = "Net income";
    CHECK_STATUS(fe_benchmark(s, &bp, &br), FE_OK, NULL);
    CHECK(br.n_runs == 1 && br.runs[0].n_prompt == 20);
    fe_bench_result_free(&br);

    /* bad input, checked before any work; *out stays empty */
    bp = fe_bench_default_params();
    bp.n_prompt = 60;
    bp.n_gen = 8;
    CHECK_STATUS(fe_benchmark(s, &bp, &br), FE_ERR_CONTEXT_OVERFLOW, "n_ctx = 64");
    CHECK(br.runs == NULL && br.n_runs == 0);
    bp = fe_bench_default_params();
    bp.n_prompt = 8;
    bp.n_gen = 8;
    bp.repetitions = 0;
    CHECK_STATUS(fe_benchmark(s, &bp, &br), FE_ERR_INVALID_ARG, "repetitions = 0");
    bp.repetitions = 1;
    bp.warmup = -1;
    CHECK_STATUS(fe_benchmark(s, &bp, &br), FE_ERR_INVALID_ARG, "warmup = -1");
    bp.warmup = 0;
    bp.prompt_text = "";
    CHECK_STATUS(fe_benchmark(s, &bp, &br), FE_ERR_INVALID_ARG, "empty");
    CHECK_STATUS(fe_benchmark(NULL, &bp, &br), FE_ERR_INVALID_ARG, "NULL");
    CHECK_STATUS(fe_benchmark(s, &bp, NULL), FE_ERR_INVALID_ARG, "NULL");

    fe_session_free(s);
    fe_model_free(model);
}

int main(int argc, char **argv) {
    const char *model = fe_test_model(argc, argv);
    snprintf(g_tmp, sizeof g_tmp, "%s/fe_test_device_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    unsetenv("FE_SYSFS_ROOT");
    RUN(test_sd865_uses_the_four_big_cores());
    RUN(test_three_clusters_keep_everything_but_the_little_cluster());
    RUN(test_affinity_mask_limits_the_choice());
    RUN(test_offline_cores_are_ignored());
    RUN(test_uniform_or_unreadable_frequencies_use_every_allowed_core());
    RUN(test_explicit_thread_count_reports_the_fastest_cores());
    RUN(test_default_n_threads_follows_fe_sysfs_root());
    RUN(test_thermal_and_device_blocks());
    RUN(test_sha256());
    RUN(test_hash_index());
    RUN(test_profile_json_on_synthetic_runs());
    RUN(test_benchmark(model));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return fe_test_finish();
}

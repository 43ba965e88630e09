/*
 * fe-dispatch - pick the CPU build variant of a finllm-edge tool at run time and exec it.
 *
 * Install this binary under the name of the tool (e.g. `fe-bench`), next to one build
 * per CPU variant named `<tool>-<variant>`:
 *
 *     fe-bench                                  <- this launcher (static)
 *     fe-bench-armv8.2-a+dotprod+fp16           <- Cortex-A75/A76/A77/A55 and newer
 *     fe-bench-armv8-a                          <- any ARMv8.0 core (A53, A57, A72, ...)
 *
 * `fe-bench ARGS...` then runs the best variant this CPU can execute with the same ARGS,
 * so no phone dies of SIGILL. The choice and its reason go to stderr and into the
 * environment of the tool (FE_VARIANT, FE_VARIANT_REASON), which records it in its
 * LatencyProfile.
 *
 * The variants, the features each needs (best first) and the reason texts come from
 * native/variants.json, the table finllm_edge/cpu_variant.py reads too (one rule, two
 * languages; tests/test_host_variants.py runs both on the same cpuinfo texts). On aarch64
 * features come from getauxval(AT_HWCAP) (bits from the table) and, when that yields
 * nothing, from the "Features" lines of /proc/cpuinfo; on x86-64 from its "flags" lines
 * (x86-64-avx512-vnni, x86-64-avx2). A feature counts only if every core lists it.
 *
 * Environment:
 *   FE_VARIANT_OVERRIDE=NAME  run NAME instead (refused if this CPU lacks its features)
 *   FE_DISPATCH_DRY_RUN=1     print "<variant>\t<path>\t<reason>" on stdout and exit 0
 *   FE_DISPATCH_QUIET=1       do not print the choice on stderr
 *   FE_DISPATCH_CPUINFO=PATH  read features from this cpuinfo text instead (tests)
 *   FE_DISPATCH_WRAPPER=PATH  if exec fails with ENOEXEC (an aarch64 binary on an x86
 *                             host under qemu-user without binfmt_misc), exec
 *                             `PATH <variant-binary> ARGS...` instead, e.g. PATH =
 *                             /usr/bin/qemu-aarch64 (it inherits QEMU_CPU).
 *
 * Exit status: that of the tool; 127 if no runnable variant is installed, 126 if exec fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/auxv.h>
#endif

/* The variant table, generated from native/variants.json (cmake/FeVariants.cmake): the
 * same table finllm_edge/cpu_variant.py reads. FE_DISPATCH_ARCH_* forces a table (tests
 * build an x86 launcher with the aarch64 table and feed it cpuinfo texts). */
#include "fe-variants.h"

#if defined(FE_DISPATCH_ARCH_AARCH64) || (!defined(FE_DISPATCH_ARCH_X86_64) && defined(__aarch64__))
#define FE_ARCH(x) FE_AARCH64_##x
#elif defined(FE_DISPATCH_ARCH_X86_64) || defined(__x86_64__)
#define FE_ARCH(x) FE_X86_64_##x
#else
#error "fe-dispatch: no variant table for this architecture (native/variants.json)"
#endif

#define CPUINFO_KEY FE_ARCH(CPUINFO_KEY)
#define FEATURES FE_ARCH(FEATURES)
#define N_FEATURES FE_ARCH(N_FEATURES)
#define VARIANTS FE_ARCH(VARIANTS)
#define N_VARIANTS FE_ARCH(N_VARIANTS)
#define HWCAP_BITS FE_ARCH(HWCAP)
#define N_HWCAP FE_ARCH(N_HWCAP)

typedef struct {
    int known;        /* features could be read at all */
    unsigned have;    /* bitmask over FEATURES: present on every core */
    const char *source;
} cpu_features;

static int quiet;

static void say(const char *tool, const char *fmt, const char *a, const char *b) {
    if (quiet) return;
    fprintf(stderr, "fe-dispatch: %s: ", tool);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

/* Whole-word search of `word` in a space-separated feature list. */
static int has_word(const char *list, const char *word) {
    size_t n = strlen(word);
    const char *p = list;
    while ((p = strstr(p, word)) != NULL) {
        int start_ok = (p == list) || p[-1] == ' ' || p[-1] == '\t' || p[-1] == ':';
        char end = p[n];
        int end_ok = end == '\0' || end == ' ' || end == '\t' || end == '\n' || end == '\r';
        if (start_ok && end_ok) return 1;
        p += n;
    }
    return 0;
}

/* Is `line` "<key><spaces or tabs>:" (case-insensitive key, as Python's partition+strip)? */
static const char *value_of(const char *line, const char *key) {
    size_t n = strlen(key);
    if (strncasecmp(line, key, n) != 0) return NULL;
    const char *p = line + n;
    while (*p == ' ' || *p == '\t') p++;
    return *p == ':' ? p + 1 : NULL;
}

static void features_from_cpuinfo(cpu_features *f, const char *path) {
    FILE *fp = fopen(path, "r");
    if (!fp) return;
    char line[8192];
    /* Every core must have a feature for us to use it (big.LITTLE: use the weakest). */
    int seen = 0;
    unsigned have = ~0u;
    while (fgets(line, sizeof line, fp)) {
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        const char *value = value_of(p, CPUINFO_KEY);
        if (!value) continue;
        seen = 1;
        unsigned here = 0;
        for (int i = 0; i < N_FEATURES; i++)
            if (has_word(value, FEATURES[i])) here |= 1u << i;
        have &= here;
    }
    fclose(fp);
    if (seen) {
        f->known = 1;
        f->have = have;
        f->source = "/proc/cpuinfo";
    }
}

static cpu_features read_features(void) {
    cpu_features f = {0, 0, "none"};
    const char *fake = getenv("FE_DISPATCH_CPUINFO"); /* tests: read this file instead */
    if (fake && *fake) {
        features_from_cpuinfo(&f, fake);
        return f;
    }
#if defined(__linux__) && defined(__aarch64__)
    unsigned long hw = N_HWCAP > 0 ? getauxval(AT_HWCAP) : 0;
    if (hw != 0) {
        f.known = 1;
        f.source = "AT_HWCAP";
        for (int i = 0; i < N_HWCAP; i++)
            if (hw & (1UL << HWCAP_BITS[i].bit)) f.have |= 1u << HWCAP_BITS[i].feature;
        return f;
    }
#endif
    features_from_cpuinfo(&f, "/proc/cpuinfo");
    return f;
}

static int supports(const cpu_features *f, const fe_variant_desc *v) {
    if (!v->needs) return 1;
    return f->known && (f->have & v->needs) == v->needs;
}

/* "<source>: f1=yes f2=no ..." over every feature of the table (as cpu_variant._describe). */
static void describe(const cpu_features *f, char *buf, size_t n) {
    if (!f->known) {
        snprintf(buf, n, "CPU features unreadable (%sno %s line in /proc/cpuinfo)", N_HWCAP > 0 ? "no AT_HWCAP, " : "",
                 CPUINFO_KEY);
        return;
    }
    size_t used = (size_t)snprintf(buf, n, "%s:", f->source);
    for (int i = 0; i < N_FEATURES && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, " %s=%s", FEATURES[i], (f->have >> i) & 1 ? "yes" : "no");
}

static void known_names(char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < N_VARIANTS && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? " | " : "", VARIANTS[i].name);
}

/* Directory of this executable (qemu-user reports the guest binary for /proc/self/exe). */
static void self_dir(const char *argv0, char *out, size_t n) {
    char path[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", path, sizeof path - 1);
    if (len > 0) {
        path[len] = '\0';
    } else {
        snprintf(path, sizeof path, "%s", argv0);
    }
    char *slash = strrchr(path, '/');
    if (slash) {
        *slash = '\0';
        snprintf(out, n, "%s", path[0] ? path : "/");
    } else {
        snprintf(out, n, ".");
    }
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int main(int argc, char **argv) {
    (void)argc;
    quiet = getenv("FE_DISPATCH_QUIET") && *getenv("FE_DISPATCH_QUIET") && strcmp(getenv("FE_DISPATCH_QUIET"), "0");
    const char *tool = base_name(argv[0]);
    char dir[PATH_MAX];
    self_dir(argv[0], dir, sizeof dir);

    cpu_features f = read_features();
    char feat[512];
    describe(&f, feat, sizeof feat);

    char reason[1024];
    char path[PATH_MAX + 64];
    const fe_variant_desc *chosen = NULL;

    const char *override = getenv("FE_VARIANT_OVERRIDE");
    if (override && *override) {
        for (int i = 0; i < N_VARIANTS; i++)
            if (strcmp(VARIANTS[i].name, override) == 0) chosen = &VARIANTS[i];
        if (!chosen) {
            char names[512];
            known_names(names, sizeof names);
            say(tool, "FE_VARIANT_OVERRIDE=%s is not a known variant (%s)", override, names);
            return 127;
        }
        if (!supports(&f, chosen)) {
            say(tool, "FE_VARIANT_OVERRIDE=%s refused: this CPU lacks its features (%s)", override, feat);
            return 127;
        }
        snprintf(path, sizeof path, "%s/%s-%s", dir, tool, chosen->name);
        if (access(path, X_OK) != 0) {
            say(tool, "FE_VARIANT_OVERRIDE=%s but %s is not installed", override, path);
            return 127;
        }
        snprintf(reason, sizeof reason, "FE_VARIANT_OVERRIDE (%s)", feat);
    } else {
        char skipped[256] = "";
        const fe_variant_desc *better_missing = NULL; /* first better variant this CPU lacks */
        for (int i = 0; i < N_VARIANTS && !chosen; i++) {
            const fe_variant_desc *v = &VARIANTS[i];
            if (!supports(&f, v)) {
                if (f.known && !better_missing) better_missing = v;
                continue;
            }
            snprintf(path, sizeof path, "%s/%s-%s", dir, tool, v->name);
            if (access(path, X_OK) == 0) {
                chosen = v;
            } else if (!skipped[0]) {
                snprintf(skipped, sizeof skipped, "; %s supported but not installed", v->name);
            }
        }
        if (!chosen) {
            say(tool, "no runnable variant installed next to the launcher in %s (%s)", dir, feat);
            return 127;
        }
        if (better_missing) {
            snprintf(reason, sizeof reason, "%s -> %s, %s%s", feat, better_missing->absent, chosen->present, skipped);
        } else {
            snprintf(reason, sizeof reason, "%s -> %s%s", feat, chosen->present, skipped);
        }
    }

    if (getenv("FE_DISPATCH_DRY_RUN") && strcmp(getenv("FE_DISPATCH_DRY_RUN"), "0") != 0) {
        printf("%s\t%s\t%s\n", chosen->name, path, reason);
        return 0;
    }

    say(tool, "variant %s (%s)", chosen->name, reason);
    setenv("FE_VARIANT", chosen->name, 1);
    setenv("FE_VARIANT_REASON", reason, 1);
    fflush(NULL);

    argv[0] = path;
    execv(path, argv);
    int err = errno;
    const char *wrapper = getenv("FE_DISPATCH_WRAPPER");
    if (err == ENOEXEC && wrapper && *wrapper) {
        char **wargv = calloc((size_t)argc + 2, sizeof *wargv);
        if (!wargv) return 126;
        wargv[0] = (char *)wrapper;
        for (int i = 0; i < argc; i++) wargv[i + 1] = argv[i];
        execv(wrapper, wargv);
        err = errno;
        path[0] = '\0';
        snprintf(path, sizeof path, "%s", wrapper);
    }
    say(tool, "cannot exec %s: %s", path, strerror(err));
    return 126;
}

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
 * Features come from getauxval(AT_HWCAP) (HWCAP_ASIMDDP, HWCAP_FPHP, HWCAP_ASIMDHP) and,
 * when that yields nothing, from the "Features" line of /proc/cpuinfo (asimddp, fphp,
 * asimdhp). The same rule lives in finllm_edge/cpu_variant.py (keep them in step).
 *
 * Environment:
 *   FE_VARIANT_OVERRIDE=NAME  run NAME instead (refused if this CPU lacks its features)
 *   FE_DISPATCH_DRY_RUN=1     print "<variant>\t<path>\t<reason>" on stdout and exit 0
 *   FE_DISPATCH_QUIET=1       do not print the choice on stderr
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
#include <unistd.h>

#if defined(__linux__)
#include <sys/auxv.h>
#endif

/* Linux arm64 HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h); defined here so the
 * launcher also builds against older or non-glibc headers (Android NDK). */
#define FE_HWCAP_FPHP    (1UL << 9)
#define FE_HWCAP_ASIMDHP (1UL << 10)
#define FE_HWCAP_ASIMDDP (1UL << 20)

#define FE_VARIANT_DOTPROD "armv8.2-a+dotprod+fp16"
#define FE_VARIANT_BASE    "armv8-a"

typedef struct {
    int known;      /* features could be read at all */
    int asimddp;    /* SDOT/UDOT (ARMv8.2 dot product) */
    int fphp;       /* scalar half-precision arithmetic */
    int asimdhp;    /* vector half-precision arithmetic */
    const char *source;
} cpu_features;

typedef struct {
    const char *name;
    int needs_dotprod_fp16;
} variant_desc;

/* Best first. */
static const variant_desc VARIANTS[] = {
    {FE_VARIANT_DOTPROD, 1},
    {FE_VARIANT_BASE, 0},
};
#define N_VARIANTS (sizeof VARIANTS / sizeof VARIANTS[0])

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
        int end_ok = end == '\0' || end == ' ' || end == '\t' || end == '\n';
        if (start_ok && end_ok) return 1;
        p += n;
    }
    return 0;
}

static void features_from_cpuinfo(cpu_features *f) {
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) return;
    char line[4096];
    /* Every core must have a feature for us to use it (big.LITTLE: use the weakest). */
    int seen = 0, dp = 1, fphp = 1, asimdhp = 1;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "Features", 8) != 0) continue;
        const char *colon = strchr(line, ':');
        if (!colon) continue;
        seen = 1;
        dp &= has_word(colon + 1, "asimddp");
        fphp &= has_word(colon + 1, "fphp");
        asimdhp &= has_word(colon + 1, "asimdhp");
    }
    fclose(fp);
    if (seen) {
        f->known = 1;
        f->asimddp = dp;
        f->fphp = fphp;
        f->asimdhp = asimdhp;
        f->source = "/proc/cpuinfo";
    }
}

static cpu_features read_features(void) {
    cpu_features f = {0, 0, 0, 0, "none"};
#if defined(__linux__) && defined(__aarch64__)
    unsigned long hw = getauxval(AT_HWCAP);
    if (hw != 0) {
        f.known = 1;
        f.asimddp = (hw & FE_HWCAP_ASIMDDP) != 0;
        f.fphp = (hw & FE_HWCAP_FPHP) != 0;
        f.asimdhp = (hw & FE_HWCAP_ASIMDHP) != 0;
        f.source = "AT_HWCAP";
        return f;
    }
#endif
    features_from_cpuinfo(&f);
    return f;
}

static int supports(const cpu_features *f, const variant_desc *v) {
    if (!v->needs_dotprod_fp16) return 1;
    return f->known && f->asimddp && f->fphp && f->asimdhp;
}

static void describe(const cpu_features *f, char *buf, size_t n) {
    if (!f->known) {
        snprintf(buf, n, "CPU features unreadable (no AT_HWCAP, no Features in /proc/cpuinfo)");
        return;
    }
    snprintf(buf, n, "%s: asimddp=%s fphp=%s asimdhp=%s", f->source, f->asimddp ? "yes" : "no",
             f->fphp ? "yes" : "no", f->asimdhp ? "yes" : "no");
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
    char feat[256];
    describe(&f, feat, sizeof feat);

    char reason[768];
    char path[PATH_MAX + 64];
    const variant_desc *chosen = NULL;

    const char *override = getenv("FE_VARIANT_OVERRIDE");
    if (override && *override) {
        for (size_t i = 0; i < N_VARIANTS; i++)
            if (strcmp(VARIANTS[i].name, override) == 0) chosen = &VARIANTS[i];
        if (!chosen) {
            say(tool, "FE_VARIANT_OVERRIDE=%s is not a known variant (%s)", override,
                FE_VARIANT_DOTPROD " | " FE_VARIANT_BASE);
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
        for (size_t i = 0; i < N_VARIANTS && !chosen; i++) {
            const variant_desc *v = &VARIANTS[i];
            if (!supports(&f, v)) continue;
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
        if (chosen->needs_dotprod_fp16) {
            snprintf(reason, sizeof reason, "%s -> dot product and fp16 present%s", feat, skipped);
        } else if (f.known && !(f.asimddp && f.fphp && f.asimdhp)) {
            snprintf(reason, sizeof reason, "%s -> missing dot product/fp16, baseline%s", feat, skipped);
        } else {
            snprintf(reason, sizeof reason, "%s -> baseline%s", feat, skipped);
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

/* Loads a JNI library of finllm-edge without a JVM (e.g. an aarch64 build under
 * qemu-aarch64, where an x86 JVM cannot load it) and calls the two bridge functions that
 * need nothing from the JVM but NewStringUTF: nativeVersion and nativeBuildVariant.
 * The JNIEnv is a real JNINativeInterface_ table from the JDK's jni.h with only
 * NewStringUTF filled in; it records the string instead of making a Java object.
 *
 *   jni_smoke <libfinllm_jni*.so>   -> prints "version: ..." and "variant: ...", exit 0
 */
#include <dlfcn.h>
#include <jni.h>
#include <stdio.h>
#include <string.h>

static char g_last[512];
static int g_calls;

static jstring JNICALL fake_new_string_utf(JNIEnv *env, const char *utf) {
    (void)env;
    snprintf(g_last, sizeof g_last, "%s", utf ? utf : "(null)");
    g_calls++;
    return (jstring)(void *)g_last;  /* any non-NULL value: the bridge only returns it */
}

typedef jstring(JNICALL *string_fn)(JNIEnv *, jclass);

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <libfinllm_jni*.so>\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 1;
    }
    struct JNINativeInterface_ table;
    memset(&table, 0, sizeof table);
    table.NewStringUTF = fake_new_string_utf;
    const struct JNINativeInterface_ *env_ptr = &table;
    JNIEnv *env = (JNIEnv *)&env_ptr;

    const char *names[2] = {"Java_io_finllm_edge_FinLlm_nativeVersion", "Java_io_finllm_edge_FinLlm_nativeBuildVariant"};
    const char *labels[2] = {"version", "variant"};
    for (int i = 0; i < 2; i++) {
        string_fn fn = (string_fn)dlsym(lib, names[i]);
        if (!fn) {
            fprintf(stderr, "missing symbol %s\n", names[i]);
            return 1;
        }
        int before = g_calls;
        if (fn(env, NULL) == NULL || g_calls != before + 1) {
            fprintf(stderr, "%s did not return a string\n", names[i]);
            return 1;
        }
        printf("%s: %s\n", labels[i], g_last);
    }
    /* Internal symbols must not leak out of the library. */
    if (dlsym(lib, "fe_model_load") || dlsym(lib, "llama_decode") || dlsym(lib, "ggml_init")) {
        fprintf(stderr, "fe_/llama_/ggml_ symbols are exported\n");
        return 1;
    }
    dlclose(lib);
    return 0;
}

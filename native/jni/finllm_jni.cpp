// JNI bridge of finllm-edge: io.finllm.edge.FinLlm over the C API (finllm_edge.h).
//
// Rules (shared/design/STYLE.md, "JNI and Android"):
//   - a FinLlm object owns one native handle, a `jlong` holding a JniSession*; no globals;
//   - Java strings are copied (GetStringRegion -> UTF-16 copy -> real UTF-8) before use;
//     modified UTF-8 (GetStringUTFChars) would hand the tokenizer surrogate pairs as
//     6-byte sequences and NUL as C0 80, so it is not used;
//   - every fe_status error and every NULL becomes a FinLlmException carrying
//     fe_status_str() and fe_last_error();
//   - one session per thread at a time (the Java class and the Kotlin executor enforce
//     it); nativeCancel is the one call that may come from another thread;
//   - no C++ exception crosses into the JVM (each entry point catches them).
//
// Token pieces reach Java through FinLlm.TokenCallback.onToken(String) once per generated
// token, in order. A piece that ends inside a multi-byte UTF-8 character is held back and
// delivered with the next one, so Java never sees a broken character.

#include "finllm_edge.h"

#include <jni.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

namespace {

constexpr const char *kExceptionClass = "io/finllm/edge/FinLlmException";
constexpr uint32_t kMagicAlive = 0x46454a4eu;  // "FEJN"
constexpr uint32_t kMagicDead = 0xdeadfe00u;

struct JniSession {
    uint32_t magic = kMagicAlive;
    fe_model *model = nullptr;
    fe_session *session = nullptr;
    int32_t n_ctx = 0;
    int32_t n_threads = 0;
    fe_sampling_params sampling{};  // the core's defaults, with what FinLlm.open set
    std::vector<fe_adapter *> adapters;  // FinLlm.loadAdapter ids index this; freed before the model
};

// ------------------------------------------------------------------ exceptions

jstring utf8_jstring(JNIEnv *env, const std::string &s);

// Throws io.finllm.edge.FinLlmException(int status, String statusName, String message).
void throw_fe(JNIEnv *env, int status, const std::string &message) {
    if (env->ExceptionCheck()) return;  // keep the first exception
    const char *name = fe_status_str(static_cast<fe_status>(status));
    jclass cls = env->FindClass(kExceptionClass);
    if (!cls) return;  // NoClassDefFoundError is pending
    jmethodID ctor = env->GetMethodID(cls, "<init>", "(ILjava/lang/String;Ljava/lang/String;)V");
    if (!ctor) return;
    jstring jname = env->NewStringUTF(name);
    // Real UTF-8 (a model path may hold any character): not NewStringUTF, whose modified
    // UTF-8 rejects 4-byte sequences (Android's CheckJNI aborts on them).
    jstring jmsg = utf8_jstring(env, message);
    if (!jname || !jmsg) return;
    auto *exc = static_cast<jthrowable>(env->NewObject(cls, ctor, static_cast<jint>(status), jname, jmsg));
    if (exc) env->Throw(exc);
}

// An fe_status error, with "what: <fe_last_error()>" as the message.
void throw_status(JNIEnv *env, fe_status st, const char *what) {
    std::string msg = what;
    const char *detail = fe_last_error();
    msg += ": ";
    msg += (detail && *detail) ? detail : fe_status_str(st);
    throw_fe(env, st, msg);
}

void throw_oom(JNIEnv *env, const char *where) {
    throw_fe(env, FE_ERR_OUT_OF_MEMORY, std::string(where) + ": out of memory in the JNI bridge");
}

// Catches C++ exceptions at the JNI boundary.
template <typename R, typename F>
R guarded(JNIEnv *env, const char *where, R fallback, F &&body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc &) {
        throw_oom(env, where);
    } catch (const std::exception &e) {
        throw_fe(env, FE_ERR_INTERNAL, std::string(where) + ": " + e.what());
    } catch (...) {
        throw_fe(env, FE_ERR_INTERNAL, std::string(where) + ": unknown C++ exception");
    }
    return fallback;
}

// The session behind a handle, or NULL with a FinLlmException pending.
JniSession *from_handle(JNIEnv *env, jlong handle, const char *where) {
    auto *s = reinterpret_cast<JniSession *>(static_cast<intptr_t>(handle));
    if (!s || s->magic != kMagicAlive) {
        throw_fe(env, FE_ERR_INVALID_ARG,
                 std::string(where) + ": the FinLlm handle was released (or never opened)");
        return nullptr;
    }
    return s;
}

// ------------------------------------------------------------------ text

void append_utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// UTF-16 (Java) -> UTF-8. Unpaired surrogates become U+FFFD.
std::string utf16_to_utf8(const jchar *s, size_t n) {
    std::string out;
    out.reserve(n * 3);
    for (size_t i = 0; i < n; ++i) {
        uint32_t c = s[i];
        if (c >= 0xD800 && c <= 0xDBFF && i + 1 < n && s[i + 1] >= 0xDC00 && s[i + 1] <= 0xDFFF) {
            c = 0x10000 + ((c - 0xD800) << 10) + (s[i + 1] - 0xDC00);
            ++i;
        } else if (c >= 0xD800 && c <= 0xDFFF) {
            c = 0xFFFD;
        }
        append_utf8(out, c);
    }
    return out;
}

// Copies a Java string into a std::string (real UTF-8). `ok` false with an exception
// pending when the string is null or memory runs out.
std::string copy_jstring(JNIEnv *env, jstring js, const char *what, bool *ok) {
    *ok = false;
    if (!js) {
        throw_fe(env, FE_ERR_INVALID_ARG, std::string(what) + " is null");
        return {};
    }
    jsize n = env->GetStringLength(js);
    std::vector<jchar> buf(static_cast<size_t>(n));
    if (n > 0) env->GetStringRegion(js, 0, n, buf.data());
    if (env->ExceptionCheck()) return {};
    *ok = true;
    return utf16_to_utf8(buf.data(), buf.size());
}

// Length of a complete UTF-8 sequence starting with lead byte b (1 for invalid leads,
// which then decode as U+FFFD).
size_t utf8_seq_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 1;
}

// Number of bytes at the end of `s` that form the beginning of a valid but incomplete
// UTF-8 sequence (to be held back until the next piece).
size_t incomplete_tail(const std::string &s) {
    size_t n = s.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        auto b = static_cast<unsigned char>(s[n - back]);
        if ((b & 0xC0) == 0x80) continue;  // continuation byte: look further back
        size_t need = utf8_seq_len(b);
        return need > back ? back : 0;
    }
    return 0;
}

// UTF-8 -> UTF-16 for NewString. Malformed input becomes U+FFFD (one per bad byte).
void utf8_to_utf16(const char *p, size_t n, std::u16string &out) {
    size_t i = 0;
    while (i < n) {
        auto b0 = static_cast<unsigned char>(p[i]);
        size_t len = utf8_seq_len(b0);
        uint32_t cp = 0xFFFD;
        bool ok = len == 1 ? b0 < 0x80 : i + len <= n;
        if (ok && len > 1) {
            cp = b0 & (0x7F >> len);
            for (size_t k = 1; k < len; ++k) {
                auto c = static_cast<unsigned char>(p[i + k]);
                if ((c & 0xC0) != 0x80) { ok = false; break; }
                cp = (cp << 6) | (c & 0x3F);
            }
            // overlong 3/4-byte forms, surrogates and > U+10FFFF are invalid
            if (ok && ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
                       (cp >= 0xD800 && cp <= 0xDFFF)))
                ok = false;
        } else if (ok) {
            cp = b0;
        }
        if (!ok) {
            out += static_cast<char16_t>(0xFFFD);
            i += 1;
            continue;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            out += static_cast<char16_t>(0xD800 + (cp >> 10));
            out += static_cast<char16_t>(0xDC00 + (cp & 0x3FF));
        } else {
            out += static_cast<char16_t>(cp);
        }
        i += len;
    }
}

jstring new_jstring(JNIEnv *env, const std::u16string &s) {
    return env->NewString(reinterpret_cast<const jchar *>(s.data()), static_cast<jsize>(s.size()));
}

jstring utf8_jstring(JNIEnv *env, const std::string &s) {
    std::u16string u;
    utf8_to_utf16(s.data(), s.size(), u);
    return new_jstring(env, u);
}

// ------------------------------------------------------------------ streaming

struct Stream {
    JNIEnv *env = nullptr;
    jobject callback = nullptr;       // FinLlm.TokenCallback or null
    jmethodID on_token = nullptr;
    std::string pending;              // bytes of an unfinished UTF-8 character
    std::u16string text;              // everything delivered so far
    std::vector<int32_t> tokens;
    bool java_failed = false;         // a Java exception is pending (callback threw, JNI OOM)
    bool oom = false;                 // std::bad_alloc inside the callback
};

// Delivers `piece` (UTF-16) to Java; false if Java asked to stop or threw.
bool deliver(Stream &st, const std::u16string &piece) {
    st.text += piece;
    if (!st.callback) return true;
    JNIEnv *env = st.env;
    jstring js = new_jstring(env, piece);
    if (!js) {
        st.java_failed = true;
        return false;
    }
    jboolean go = env->CallBooleanMethod(st.callback, st.on_token, js);
    env->DeleteLocalRef(js);  // one local ref per token would overflow the table (512 on Android)
    if (env->ExceptionCheck()) {
        st.java_failed = true;
        return false;
    }
    return go == JNI_TRUE;
}

bool on_token_cb(const char *piece, size_t piece_len, int32_t token, void *user_data) {
    auto &st = *static_cast<Stream *>(user_data);
    if (st.java_failed || st.oom) return false;  // never call into Java with an exception pending
    try {
        st.tokens.push_back(token);
        if (piece_len) st.pending.append(piece, piece_len);
        size_t hold = incomplete_tail(st.pending);
        std::u16string out;
        utf8_to_utf16(st.pending.data(), st.pending.size() - hold, out);
        st.pending.erase(0, st.pending.size() - hold);
        return deliver(st, out);
    } catch (...) {  // bad_alloc: stop; reported after fe_generate returns
        st.oom = true;
        return false;
    }
}

jintArray new_int_array(JNIEnv *env, const int32_t *v, size_t n) {
    jintArray arr = env->NewIntArray(static_cast<jsize>(n));
    if (arr && n) env->SetIntArrayRegion(arr, 0, static_cast<jsize>(n), reinterpret_cast<const jint *>(v));
    return arr;
}

}  // namespace

// ====================================================================== entry points

extern "C" {

JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlm_nativeVersion(JNIEnv *env, jclass) {
    std::string v = std::string("finllm-edge ") + fe_version() + "; llama.cpp " + fe_llama_version() +
                    "; variant " + (*fe_build_variant() ? fe_build_variant() : "host");
    return env->NewStringUTF(v.c_str());
}

JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlm_nativeBuildVariant(JNIEnv *env, jclass) {
    return env->NewStringUTF(fe_build_variant());
}

// Loads the model and creates one session. Returns the handle (never 0 without an exception).
JNIEXPORT jlong JNICALL Java_io_finllm_edge_FinLlm_nativeOpen(JNIEnv *env, jclass, jstring jpath,
                                                             jint n_ctx, jint n_batch, jint n_threads,
                                                             jint seed, jfloat temperature, jint top_k,
                                                             jfloat top_p, jfloat repeat_penalty,
                                                             jboolean use_mmap, jboolean prefix_reuse,
                                                             jboolean flash_attn, jboolean reuse_generated,
                                                             jstring jsha256) {
    return guarded<jlong>(env, "FinLlm.open", 0, [&]() -> jlong {
        bool ok = false;
        std::string path = copy_jstring(env, jpath, "FinLlm.open: modelPath", &ok);
        if (!ok) return 0;
        if (n_ctx < 0) {  // the core's rule (fe_session_params_check) sees it as an unsigned count
            throw_fe(env, FE_ERR_INVALID_ARG, "FinLlm.open: nCtx must be > 0, got " + std::to_string(n_ctx));
            return 0;
        }
        // the session's parameters and sampling are checked (by the core) before the model loads
        fe_session_params sp = fe_session_default_params();
        sp.n_ctx = static_cast<uint32_t>(n_ctx);
        if (n_batch > 0) sp.n_batch = static_cast<uint32_t>(n_batch);
        if (n_threads > 0) sp.n_threads = sp.n_threads_batch = n_threads;  // <= 0: the core's default
        sp.prefix_reuse = prefix_reuse == JNI_TRUE;
        sp.flash_attn = flash_attn == JNI_TRUE;
        sp.reuse_generated = reuse_generated == JNI_TRUE;
        fe_sampling_params sampling = fe_sampling_default_params();
        sampling.seed = static_cast<uint32_t>(seed);  // -1 = FE_SEED_RANDOM
        sampling.temperature = temperature;
        sampling.top_k = top_k;
        sampling.top_p = top_p;
        sampling.repeat_penalty = repeat_penalty;
        if (fe_session_params_check(&sp) != FE_OK || fe_sampling_check(&sampling) != FE_OK) {
            throw_status(env, FE_ERR_INVALID_ARG, "FinLlm.open");
            return 0;
        }
        fe_model_params mp = fe_model_default_params();
        mp.use_mmap = use_mmap == JNI_TRUE;
        fe_model *model = nullptr;
        fe_status st = fe_model_load(path.c_str(), &mp, &model);
        if (st != FE_OK || !model) {
            throw_status(env, st != FE_OK ? st : FE_ERR_INTERNAL, ("FinLlm.open(" + path + ")").c_str());
            return 0;
        }
        if (jsha256) {
            std::string sha = copy_jstring(env, jsha256, "FinLlm.open: modelSha256", &ok);
            st = ok ? fe_model_set_sha256(model, sha.c_str()) : FE_ERR_INVALID_ARG;
            if (st != FE_OK) {
                if (ok) throw_status(env, st, "FinLlm.open: modelSha256");
                fe_model_free(model);
                return 0;
            }
        }
        fe_session *session = nullptr;
        st = fe_session_create(model, &sp, &session);
        if (st != FE_OK || !session) {
            throw_status(env, st != FE_OK ? st : FE_ERR_INTERNAL, "FinLlm.open: fe_session_create");
            fe_model_free(model);
            return 0;
        }
        auto *s = new (std::nothrow) JniSession;
        if (!s) {
            fe_session_free(session);
            fe_model_free(model);
            throw_oom(env, "FinLlm.open");
            return 0;
        }
        s->model = model;
        s->session = session;
        s->n_ctx = n_ctx;
        s->n_threads = sp.n_threads;
        s->sampling = sampling;
        return static_cast<jlong>(reinterpret_cast<intptr_t>(s));
    });
}

// Frees the session and model. 0 is a no-op (release() twice is safe on the Java side too).
JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlm_nativeFree(JNIEnv *, jclass, jlong handle) {
    auto *s = reinterpret_cast<JniSession *>(static_cast<intptr_t>(handle));
    if (!s || s->magic != kMagicAlive) return;
    s->magic = kMagicDead;
    fe_session_free(s->session);
    for (fe_adapter *a : s->adapters) fe_adapter_free(a);
    fe_model_free(s->model);
    s->session = nullptr;
    s->model = nullptr;
    delete s;
}

// Any thread. The Java side holds its lock, so the handle cannot be freed meanwhile.
JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlm_nativeCancel(JNIEnv *, jclass, jlong handle) {
    auto *s = reinterpret_cast<JniSession *>(static_cast<intptr_t>(handle));
    if (!s || s->magic != kMagicAlive) return;
    fe_session_cancel(s->session);
}

// Generates from a raw prompt (already chat-formatted if needed). Returns
// Object[]{String text, int[]{stopReason, nPrompt, nGenerated}, int[] tokens}.
// grammar (GBNF) / json_schema: null = none (the core checks and converts them).
JNIEXPORT jobjectArray JNICALL Java_io_finllm_edge_FinLlm_nativeGenerate(JNIEnv *env, jclass, jlong handle,
                                                                        jstring jprompt, jint max_tokens,
                                                                        jobjectArray jstop, jobject callback,
                                                                        jstring jgrammar, jstring jschema) {
    return guarded<jobjectArray>(env, "FinLlm.generate", nullptr, [&]() -> jobjectArray {
        JniSession *s = from_handle(env, handle, "FinLlm.generate");
        if (!s) return nullptr;
        bool ok = false;
        std::string prompt = copy_jstring(env, jprompt, "FinLlm.generate: prompt", &ok);
        if (!ok) return nullptr;
        if (max_tokens <= 0) {
            throw_fe(env, FE_ERR_INVALID_ARG, "FinLlm.generate: maxTokens must be > 0, got " + std::to_string(max_tokens));
            return nullptr;
        }
        std::vector<std::string> stop_strings;
        if (jstop) {
            jsize n = env->GetArrayLength(jstop);
            for (jsize i = 0; i < n; ++i) {
                auto js = static_cast<jstring>(env->GetObjectArrayElement(jstop, i));
                stop_strings.push_back(copy_jstring(env, js, "FinLlm.generate: stop[i]", &ok));
                env->DeleteLocalRef(js);
                if (!ok) return nullptr;
            }
        }
        std::vector<const char *> stop_ptrs;
        for (const auto &x : stop_strings) stop_ptrs.push_back(x.c_str());
        std::string grammar, schema;
        if (jgrammar && (grammar = copy_jstring(env, jgrammar, "FinLlm.generate: grammar", &ok), !ok)) return nullptr;
        if (jschema && (schema = copy_jstring(env, jschema, "FinLlm.generate: jsonSchema", &ok), !ok)) return nullptr;

        Stream stream;
        stream.env = env;
        if (callback) {
            jclass cb_cls = env->GetObjectClass(callback);
            stream.on_token = env->GetMethodID(cb_cls, "onToken", "(Ljava/lang/String;)Z");
            env->DeleteLocalRef(cb_cls);
            if (!stream.on_token) return nullptr;  // NoSuchMethodError pending
            stream.callback = callback;
        }
        fe_generate_params gp = fe_generate_default_params();
        gp.max_tokens = max_tokens;
        gp.sampling = s->sampling;
        gp.sampling.grammar = jgrammar ? grammar.c_str() : nullptr;
        gp.sampling.json_schema = jschema ? schema.c_str() : nullptr;
        gp.stop = stop_ptrs.empty() ? nullptr : stop_ptrs.data();
        gp.n_stop = stop_ptrs.size();
        gp.on_token = on_token_cb;
        gp.user_data = &stream;
        fe_generate_result res{};
        fe_status st = fe_generate(s->session, prompt.c_str(), &gp, &res);
        if (stream.java_failed) return nullptr;  // the callback's exception propagates
        if (stream.oom) {
            throw_oom(env, "FinLlm.generate");
            return nullptr;
        }
        if (st == FE_ERR_CANCELLED) {
            // cancel() is a request, not a failure: return the partial answer.
            res.stop_reason = FE_STOP_CANCELLED;  // also when cancelled during prefill
        } else if (st != FE_OK) {
            throw_status(env, st, "FinLlm.generate");
            return nullptr;
        }
        if (!stream.pending.empty()) {
            // Generation ended inside a multi-byte character (e.g. maxTokens hit): deliver
            // the remaining bytes (as U+FFFD) so the streamed pieces still add up to the text.
            std::u16string rest;
            utf8_to_utf16(stream.pending.data(), stream.pending.size(), rest);
            stream.pending.clear();
            deliver(stream, rest);
            if (stream.java_failed) return nullptr;
        }
        jclass obj_cls = env->FindClass("java/lang/Object");
        if (!obj_cls) return nullptr;
        jobjectArray out = env->NewObjectArray(3, obj_cls, nullptr);
        jstring jtext = new_jstring(env, stream.text);
        int32_t stats[3] = {static_cast<int32_t>(res.stop_reason), res.n_prompt, res.n_generated};
        jintArray jstats = new_int_array(env, stats, 3);
        jintArray jtokens = new_int_array(env, stream.tokens.data(), stream.tokens.size());
        if (!out || !jtext || !jstats || !jtokens) return nullptr;  // OutOfMemoryError pending
        env->SetObjectArrayElement(out, 0, jtext);
        env->SetObjectArrayElement(out, 1, jstats);
        env->SetObjectArrayElement(out, 2, jtokens);
        return out;
    });
}

// The GBNF grammar the core makes of a JSON Schema (fe_json_schema_to_grammar).
JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlm_nativeJsonSchemaToGrammar(JNIEnv *env, jclass, jstring jschema) {
    return guarded<jstring>(env, "FinLlm.jsonSchemaToGrammar", nullptr, [&]() -> jstring {
        bool ok = false;
        std::string schema = copy_jstring(env, jschema, "FinLlm.jsonSchemaToGrammar: schema", &ok);
        if (!ok) return nullptr;
        size_t n = 0;
        fe_status st = fe_json_schema_to_grammar(schema.c_str(), nullptr, 0, &n);
        if (st != FE_OK && st != FE_ERR_BUFFER_TOO_SMALL) {
            throw_status(env, st, "FinLlm.jsonSchemaToGrammar");
            return nullptr;
        }
        std::string out(n + 1, '\0');
        st = fe_json_schema_to_grammar(schema.c_str(), &out[0], out.size(), &n);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.jsonSchemaToGrammar");
            return nullptr;
        }
        out.resize(n);
        return utf8_jstring(env, out);
    });
}

// Process-wide folder of the cross-process hash index (fe_set_hash_index_dir); null turns it off.
JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlm_nativeSetHashIndexDir(JNIEnv *env, jclass, jstring jdir) {
    guarded<int>(env, "FinLlm.setHashIndexDir", 0, [&]() -> int {
        std::string dir;
        if (jdir) {
            bool ok = false;
            dir = copy_jstring(env, jdir, "FinLlm.setHashIndexDir: dir", &ok);
            if (!ok) return 0;
        }
        fe_status st = fe_set_hash_index_dir(jdir ? dir.c_str() : nullptr);
        if (st != FE_OK) throw_status(env, st, "FinLlm.setHashIndexDir");
        return 0;
    });
}

// Renders chat messages with the model's own template.
JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlm_nativeChatFormat(JNIEnv *env, jclass, jlong handle,
                                                                     jobjectArray jroles, jobjectArray jcontents,
                                                                     jboolean add_assistant) {
    return guarded<jstring>(env, "FinLlm.formatChat", nullptr, [&]() -> jstring {
        JniSession *s = from_handle(env, handle, "FinLlm.formatChat");
        if (!s) return nullptr;
        if (!jroles || !jcontents || env->GetArrayLength(jroles) != env->GetArrayLength(jcontents)) {
            throw_fe(env, FE_ERR_INVALID_ARG, "FinLlm.formatChat: roles and contents must be non-null and of equal length");
            return nullptr;
        }
        jsize n = env->GetArrayLength(jroles);
        std::vector<std::string> roles, contents;
        bool ok = false;
        for (jsize i = 0; i < n; ++i) {
            auto r = static_cast<jstring>(env->GetObjectArrayElement(jroles, i));
            roles.push_back(copy_jstring(env, r, "FinLlm.formatChat: role", &ok));
            env->DeleteLocalRef(r);
            if (!ok) return nullptr;
            auto c = static_cast<jstring>(env->GetObjectArrayElement(jcontents, i));
            contents.push_back(copy_jstring(env, c, "FinLlm.formatChat: content", &ok));
            env->DeleteLocalRef(c);
            if (!ok) return nullptr;
        }
        std::vector<fe_chat_message> msgs(static_cast<size_t>(n));
        size_t total = 64;
        for (jsize i = 0; i < n; ++i) {
            msgs[i].role = roles[i].c_str();
            msgs[i].content = contents[i].c_str();
            total += roles[i].size() + contents[i].size() + 64;
        }
        std::vector<char> buf(total * 2);
        size_t len = 0;
        fe_status st = fe_chat_format(s->model, msgs.data(), msgs.size(), add_assistant == JNI_TRUE,
                                      buf.data(), buf.size(), &len);
        if (st == FE_ERR_BUFFER_TOO_SMALL) {
            buf.assign(len + 1, '\0');
            st = fe_chat_format(s->model, msgs.data(), msgs.size(), add_assistant == JNI_TRUE,
                                buf.data(), buf.size(), &len);
        }
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.formatChat");
            return nullptr;
        }
        std::u16string out;
        utf8_to_utf16(buf.data(), len, out);
        return new_jstring(env, out);
    });
}

JNIEXPORT jintArray JNICALL Java_io_finllm_edge_FinLlm_nativeTokenize(JNIEnv *env, jclass, jlong handle,
                                                                     jstring jtext, jboolean add_special,
                                                                     jboolean parse_special) {
    return guarded<jintArray>(env, "FinLlm.tokenize", nullptr, [&]() -> jintArray {
        JniSession *s = from_handle(env, handle, "FinLlm.tokenize");
        if (!s) return nullptr;
        bool ok = false;
        std::string text = copy_jstring(env, jtext, "FinLlm.tokenize: text", &ok);
        if (!ok) return nullptr;
        std::vector<int32_t> toks(text.size() + 8);
        int32_t n = 0;
        fe_status st = fe_tokenize(s->model, text.c_str(), add_special, parse_special, toks.data(),
                                   static_cast<int32_t>(toks.size()), &n);
        if (st == FE_ERR_BUFFER_TOO_SMALL) {
            toks.resize(static_cast<size_t>(n));
            st = fe_tokenize(s->model, text.c_str(), add_special, parse_special, toks.data(), n, &n);
        }
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.tokenize");
            return nullptr;
        }
        return new_int_array(env, toks.data(), static_cast<size_t>(n));
    });
}

JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlm_nativeDetokenize(JNIEnv *env, jclass, jlong handle,
                                                                     jintArray jtokens) {
    return guarded<jstring>(env, "FinLlm.detokenize", nullptr, [&]() -> jstring {
        JniSession *s = from_handle(env, handle, "FinLlm.detokenize");
        if (!s) return nullptr;
        if (!jtokens) {
            throw_fe(env, FE_ERR_INVALID_ARG, "FinLlm.detokenize: tokens is null");
            return nullptr;
        }
        jsize n = env->GetArrayLength(jtokens);
        std::vector<int32_t> toks(static_cast<size_t>(n));
        if (n) env->GetIntArrayRegion(jtokens, 0, n, reinterpret_cast<jint *>(toks.data()));
        std::vector<char> buf(static_cast<size_t>(n) * 16 + 16);
        size_t len = 0;
        fe_status st = fe_detokenize(s->model, toks.data(), n, false, buf.data(), buf.size(), &len);
        if (st == FE_ERR_BUFFER_TOO_SMALL) {
            buf.assign(len + 1, '\0');
            st = fe_detokenize(s->model, toks.data(), n, false, buf.data(), buf.size(), &len);
        }
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.detokenize");
            return nullptr;
        }
        std::u16string out;
        utf8_to_utf16(buf.data(), len, out);
        return new_jstring(env, out);
    });
}

// Profile of the last generation: double[]{load_ms, tokenize_ms, prefill_ms, ttft_ms,
// prefill_tok_s, decode_tok_s, token_ms_p50, token_ms_p90, token_ms_p99, e2e_ms,
// peak_rss_mb, n_prompt, n_gen, n_ctx, n_threads, n_prompt_reused, token_ms[0..]} (FinLlm.Profile
// parses it).
JNIEXPORT jdoubleArray JNICALL Java_io_finllm_edge_FinLlm_nativeProfile(JNIEnv *env, jclass, jlong handle) {
    return guarded<jdoubleArray>(env, "FinLlm.profile", nullptr, [&]() -> jdoubleArray {
        JniSession *s = from_handle(env, handle, "FinLlm.profile");
        if (!s) return nullptr;
        fe_profile p{};
        fe_status st = fe_session_get_profile(s->session, &p);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.profile");
            return nullptr;
        }
        std::vector<double> v = {p.load_ms,       p.tokenize_ms,  p.prefill_ms,   p.ttft_ms,
                                 p.prefill_tok_s, p.decode_tok_s, p.token_ms_p50, p.token_ms_p90,
                                 p.token_ms_p99,  p.e2e_ms,       p.peak_rss_mb,  double(p.n_prompt),
                                 double(p.n_gen), double(s->n_ctx), double(s->n_threads),
                                 double(p.n_prompt_reused)};
        if (p.token_ms && p.n_token_ms) v.insert(v.end(), p.token_ms, p.token_ms + p.n_token_ms);
        jdoubleArray arr = env->NewDoubleArray(static_cast<jsize>(v.size()));
        if (arr) env->SetDoubleArrayRegion(arr, 0, static_cast<jsize>(v.size()), v.data());
        return arr;
    });
}

// Saves the KV state of `prompt` (tokenized as generate() does) to `path`; returns its tokens.
JNIEXPORT jint JNICALL Java_io_finllm_edge_FinLlm_nativeSaveState(JNIEnv *env, jclass, jlong handle, jstring jpath,
                                                                  jstring jprompt) {
    return guarded<jint>(env, "FinLlm.saveState", 0, [&]() -> jint {
        JniSession *s = from_handle(env, handle, "FinLlm.saveState");
        if (!s) return 0;
        bool ok = false;
        std::string path = copy_jstring(env, jpath, "FinLlm.saveState: path", &ok);
        if (!ok) return 0;
        std::string prompt = copy_jstring(env, jprompt, "FinLlm.saveState: prompt", &ok);
        if (!ok) return 0;
        fe_status st = fe_session_save_prompt(s->session, prompt.c_str(), path.c_str());
        int32_t n = 0;
        if (st == FE_OK) st = fe_session_cached_tokens(s->session, nullptr, 0, &n);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.saveState");
            return 0;
        }
        return n;
    });
}

// Evaluates the last answer again as prompt rows (fe_session_settle); returns the tokens evaluated.
JNIEXPORT jint JNICALL Java_io_finllm_edge_FinLlm_nativeSettle(JNIEnv *env, jclass, jlong handle) {
    return guarded<jint>(env, "FinLlm.settle", 0, [&]() -> jint {
        JniSession *s = from_handle(env, handle, "FinLlm.settle");
        if (!s) return 0;
        int32_t n = 0;
        fe_status st = fe_session_settle(s->session, &n);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.settle");
            return 0;
        }
        return n;
    });
}

// Loads a state saved by saveState (refused files: FE_ERR_BAD_MODEL); returns its tokens.
JNIEXPORT jint JNICALL Java_io_finllm_edge_FinLlm_nativeLoadState(JNIEnv *env, jclass, jlong handle, jstring jpath) {
    return guarded<jint>(env, "FinLlm.loadState", 0, [&]() -> jint {
        JniSession *s = from_handle(env, handle, "FinLlm.loadState");
        if (!s) return 0;
        bool ok = false;
        std::string path = copy_jstring(env, jpath, "FinLlm.loadState: path", &ok);
        if (!ok) return 0;
        fe_status st = fe_session_load_state(s->session, path.c_str());
        int32_t n = 0;
        if (st == FE_OK) st = fe_session_cached_tokens(s->session, nullptr, 0, &n);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.loadState");
            return 0;
        }
        return n;
    });
}

// Model facts: Object[]{String desc, long[]{size_bytes, file_size_bytes, n_params, n_ctx_train,
// n_vocab, has_chat_template}, double[]{bits_per_weight, load_ms}}.
JNIEXPORT jobjectArray JNICALL Java_io_finllm_edge_FinLlm_nativeModelInfo(JNIEnv *env, jclass, jlong handle) {
    return guarded<jobjectArray>(env, "FinLlm.modelInfo", nullptr, [&]() -> jobjectArray {
        JniSession *s = from_handle(env, handle, "FinLlm.modelInfo");
        if (!s) return nullptr;
        fe_model_info mi{};
        fe_status st = fe_model_get_info(s->model, &mi);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlm.modelInfo");
            return nullptr;
        }
        mi.desc[sizeof mi.desc - 1] = '\0';
        std::u16string desc;
        utf8_to_utf16(mi.desc, std::strlen(mi.desc), desc);
        jlong longs[6] = {static_cast<jlong>(mi.size_bytes), static_cast<jlong>(mi.file_size_bytes),
                          static_cast<jlong>(mi.n_params), mi.n_ctx_train, mi.n_vocab, mi.has_chat_template ? 1 : 0};
        jdouble doubles[2] = {mi.bits_per_weight, mi.load_ms};
        jclass obj_cls = env->FindClass("java/lang/Object");
        if (!obj_cls) return nullptr;
        jobjectArray out = env->NewObjectArray(3, obj_cls, nullptr);
        jstring jdesc = new_jstring(env, desc);
        jlongArray jl = env->NewLongArray(6);
        jdoubleArray jd = env->NewDoubleArray(2);
        if (!out || !jdesc || !jl || !jd) return nullptr;
        env->SetLongArrayRegion(jl, 0, 6, longs);
        env->SetDoubleArrayRegion(jd, 0, 2, doubles);
        env->SetObjectArrayElement(out, 0, jdesc);
        env->SetObjectArrayElement(out, 1, jl);
        env->SetObjectArrayElement(out, 2, jd);
        return out;
    });
}

// ------------------------------------------------------------------ drift monitoring
// (finllm_edge.h "drift monitoring"; Java: FinLlm.enableDrift/driftStatus/driftStateJson/driftSampling and
// io.finllm.edge.DriftMonitor, a stand-alone monitor on a token stream). A status crosses as
// double[]{state, kl, watch_threshold, drift_threshold, window_tokens, n_window, n_requests, n_tokens,
// n_evaluations, n_watch, n_drift, first_drift_request, first_drift_tokens} (DriftStatus parses it).

static jdoubleArray drift_status_array(JNIEnv *env, const fe_drift_monitor *m, const char *what) {
    fe_drift_status ds{};
    fe_status st = fe_drift_get_status(m, &ds);
    if (st != FE_OK) {
        throw_status(env, st, what);
        return nullptr;
    }
    double v[13] = {double(ds.state), ds.kl, ds.watch_threshold, ds.drift_threshold, double(ds.window_tokens),
                    double(ds.n_window), double(ds.n_requests), double(ds.n_tokens), double(ds.n_evaluations),
                    double(ds.n_watch), double(ds.n_drift), double(ds.first_drift_request),
                    double(ds.first_drift_tokens)};
    jdoubleArray arr = env->NewDoubleArray(13);
    if (arr) env->SetDoubleArrayRegion(arr, 0, 13, v);
    return arr;
}

static jstring drift_json(JNIEnv *env, const fe_drift_monitor *m, const char *what) {
    char *json = fe_drift_monitor_json(m);
    if (!json) {
        throw_status(env, FE_ERR_OUT_OF_MEMORY, what);
        return nullptr;
    }
    jstring out = utf8_jstring(env, json);
    fe_free(json);
    return out;
}

// The session's monitor, or NULL with a FinLlmException pending.
static fe_drift_monitor *session_drift(JNIEnv *env, jlong handle, const char *what) {
    JniSession *s = from_handle(env, handle, what);
    if (!s) return nullptr;
    fe_drift_monitor *m = fe_session_drift_monitor(s->session);
    if (!m) throw_fe(env, FE_ERR_INVALID_ARG, std::string(what) + ": no drift monitor (call enableDrift first)");
    return m;
}

}  // extern "C"

// enableDrift of a session or a scheduler: `attach` gets the reference path (NULL: detach).
template <class Attach>
static void enable_drift(JNIEnv *env, jstring jpath, const char *what, Attach &&attach) {
    std::string path;
    bool ok = true;
    if (jpath) path = copy_jstring(env, jpath, (std::string(what) + ": referencePath").c_str(), &ok);
    if (!ok) return;
    fe_status st = attach(jpath ? path.c_str() : nullptr);
    if (st != FE_OK) throw_status(env, st, what);
}

extern "C" {

JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlm_nativeEnableDrift(JNIEnv *env, jclass, jlong handle, jstring jpath) {
    guarded<int>(env, "FinLlm.enableDrift", 0, [&]() -> int {
        JniSession *s = from_handle(env, handle, "FinLlm.enableDrift");
        if (s)
            enable_drift(env, jpath, "FinLlm.enableDrift",
                         [&](const char *p) { return fe_session_enable_drift(s->session, p); });
        return 0;
    });
}

JNIEXPORT jdoubleArray JNICALL Java_io_finllm_edge_FinLlm_nativeDriftStatus(JNIEnv *env, jclass, jlong handle) {
    return guarded<jdoubleArray>(env, "FinLlm.driftStatus", nullptr, [&]() -> jdoubleArray {
        fe_drift_monitor *m = session_drift(env, handle, "FinLlm.driftStatus");
        return m ? drift_status_array(env, m, "FinLlm.driftStatus") : nullptr;
    });
}

JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlm_nativeDriftStateJson(JNIEnv *env, jclass, jlong handle) {
    return guarded<jstring>(env, "FinLlm.driftStateJson", nullptr, [&]() -> jstring {
        fe_drift_monitor *m = session_drift(env, handle, "FinLlm.driftStateJson");
        return m ? drift_json(env, m, "FinLlm.driftStateJson") : nullptr;
    });
}

JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlm_nativeDriftSampling(JNIEnv *env, jclass, jlong handle,
                                                                     jint max_samples, jint every_n) {
    guarded<int>(env, "FinLlm.driftSampling", 0, [&]() -> int {
        fe_drift_monitor *m = session_drift(env, handle, "FinLlm.driftSampling");
        if (!m) return 0;
        fe_status st = fe_drift_monitor_set_sampling(m, max_samples, every_n);
        if (st != FE_OK) throw_status(env, st, "FinLlm.driftSampling");
        return 0;
    });
}

namespace {
constexpr uint32_t kDriftAlive = 0x4645444du;  // "FEDM"

struct JniDrift {
    uint32_t magic = kDriftAlive;
    fe_drift_monitor *monitor = nullptr;
};

fe_drift_monitor *drift_from_handle(JNIEnv *env, jlong handle, const char *what) {
    auto *d = reinterpret_cast<JniDrift *>(static_cast<intptr_t>(handle));
    if (!d || d->magic != kDriftAlive) {
        throw_fe(env, FE_ERR_INVALID_ARG, std::string(what) + ": the DriftMonitor was closed (or never opened)");
        return nullptr;
    }
    return d->monitor;
}
}  // namespace

JNIEXPORT jlong JNICALL Java_io_finllm_edge_DriftMonitor_nativeOpen(JNIEnv *env, jclass, jstring jpath) {
    return guarded<jlong>(env, "DriftMonitor.open", 0, [&]() -> jlong {
        bool ok = false;
        std::string path = copy_jstring(env, jpath, "DriftMonitor.open: referencePath", &ok);
        if (!ok) return 0;
        fe_drift_ref *ref = nullptr;
        fe_status st = fe_drift_ref_load(path.c_str(), &ref);
        if (st != FE_OK) {
            throw_status(env, st, "DriftMonitor.open");
            return 0;
        }
        fe_drift_monitor *m = nullptr;
        st = fe_drift_monitor_new(ref, &m);
        fe_drift_ref_free(ref);
        if (st != FE_OK) {
            throw_status(env, st, "DriftMonitor.open");
            return 0;
        }
        auto *d = new (std::nothrow) JniDrift;
        if (!d) {
            fe_drift_monitor_free(m);
            throw_oom(env, "DriftMonitor.open");
            return 0;
        }
        d->monitor = m;
        return static_cast<jlong>(reinterpret_cast<intptr_t>(d));
    });
}

JNIEXPORT void JNICALL Java_io_finllm_edge_DriftMonitor_nativeFree(JNIEnv *, jclass, jlong handle) {
    auto *d = reinterpret_cast<JniDrift *>(static_cast<intptr_t>(handle));
    if (!d || d->magic != kDriftAlive) return;
    d->magic = 0;
    fe_drift_monitor_free(d->monitor);
    delete d;
}

JNIEXPORT jdoubleArray JNICALL Java_io_finllm_edge_DriftMonitor_nativeObserve(JNIEnv *env, jclass, jlong handle,
                                                                             jintArray jtokens) {
    return guarded<jdoubleArray>(env, "DriftMonitor.observe", nullptr, [&]() -> jdoubleArray {
        fe_drift_monitor *m = drift_from_handle(env, handle, "DriftMonitor.observe");
        if (!m) return nullptr;
        if (!jtokens) {
            throw_fe(env, FE_ERR_INVALID_ARG, "DriftMonitor.observe: tokens is null");
            return nullptr;
        }
        jsize n = env->GetArrayLength(jtokens);
        std::vector<int32_t> toks(static_cast<size_t>(n));
        if (n) env->GetIntArrayRegion(jtokens, 0, n, reinterpret_cast<jint *>(toks.data()));
        fe_status st = fe_drift_observe(m, toks.data(), toks.size());
        if (st != FE_OK) {
            throw_status(env, st, "DriftMonitor.observe");
            return nullptr;
        }
        return drift_status_array(env, m, "DriftMonitor.observe");
    });
}

JNIEXPORT jdoubleArray JNICALL Java_io_finllm_edge_DriftMonitor_nativeStatus(JNIEnv *env, jclass, jlong handle) {
    return guarded<jdoubleArray>(env, "DriftMonitor.status", nullptr, [&]() -> jdoubleArray {
        fe_drift_monitor *m = drift_from_handle(env, handle, "DriftMonitor.status");
        return m ? drift_status_array(env, m, "DriftMonitor.status") : nullptr;
    });
}

JNIEXPORT jstring JNICALL Java_io_finllm_edge_DriftMonitor_nativeStateJson(JNIEnv *env, jclass, jlong handle) {
    return guarded<jstring>(env, "DriftMonitor.stateJson", nullptr, [&]() -> jstring {
        fe_drift_monitor *m = drift_from_handle(env, handle, "DriftMonitor.stateJson");
        return m ? drift_json(env, m, "DriftMonitor.stateJson") : nullptr;
    });
}

}  // extern "C"

// ====================================================================== the scheduler
//
// io.finllm.edge.FinLlmScheduler over fe_scheduler / fe_sched_* ("concurrent requests" in
// finllm_edge.h): a scheduler handle (JniScheduler*) and request handles (fe_sched_request*)
// cross as jlong. Every call may come from any thread (the core's scheduler is thread-safe); the
// Java class keeps a handle alive while a call on it runs. Event texts are valid UTF-8 already
// (the core's text stream never splits a character).

namespace {

constexpr uint32_t kSchedAlive = 0x46455343u;  // "FESC"

struct JniScheduler {
    uint32_t magic = kSchedAlive;
    fe_model *model = nullptr;
    fe_scheduler *sched = nullptr;
};

JniScheduler *sched_from(JNIEnv *env, jlong handle, const char *where) {
    auto *s = reinterpret_cast<JniScheduler *>(static_cast<intptr_t>(handle));
    if (!s || s->magic != kSchedAlive) {
        throw_fe(env, FE_ERR_INVALID_ARG, std::string(where) + ": the scheduler was closed (or never opened)");
        return nullptr;
    }
    return s;
}

fe_sched_request *request_from(JNIEnv *env, jlong handle, const char *where) {
    auto *r = reinterpret_cast<fe_sched_request *>(static_cast<intptr_t>(handle));
    if (!r) throw_fe(env, FE_ERR_INVALID_ARG, std::string(where) + ": the request was closed");
    return r;
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeOpen(JNIEnv *env, jclass, jstring jpath,
                                                                      jint n_slots, jint n_ctx, jint n_threads,
                                                                      jdouble p99_token_ms, jint max_queued,
                                                                      jboolean flash_attn, jboolean reuse_generated) {
    return guarded<jlong>(env, "FinLlmScheduler.open", 0, [&]() -> jlong {
        bool ok = false;
        std::string path = copy_jstring(env, jpath, "FinLlmScheduler.open: modelPath", &ok);
        if (!ok) return 0;
        fe_scheduler_params sp = fe_scheduler_default_params();
        sp.n_slots = n_slots;
        if (n_ctx < 0) {
            throw_fe(env, FE_ERR_INVALID_ARG, "FinLlmScheduler.open: nCtx must be > 0, got " + std::to_string(n_ctx));
            return 0;
        }
        sp.n_ctx = static_cast<uint32_t>(n_ctx);
        if (n_threads > 0) sp.n_threads = sp.n_threads_batch = n_threads;  // <= 0: the core's default
        sp.p99_token_ms = p99_token_ms;
        sp.max_queued = max_queued;
        sp.flash_attn = flash_attn == JNI_TRUE;
        sp.reuse_generated = reuse_generated == JNI_TRUE;
        fe_model *model = nullptr;
        fe_status st = fe_model_load(path.c_str(), nullptr, &model);
        if (st != FE_OK || !model) {
            throw_status(env, st != FE_OK ? st : FE_ERR_INTERNAL, ("FinLlmScheduler.open(" + path + ")").c_str());
            return 0;
        }
        fe_scheduler *sched = nullptr;
        st = fe_scheduler_create(model, &sp, &sched);
        if (st != FE_OK || !sched) {
            throw_status(env, st != FE_OK ? st : FE_ERR_INTERNAL, "FinLlmScheduler.open");
            fe_model_free(model);
            return 0;
        }
        auto *s = new (std::nothrow) JniScheduler;
        if (!s) {
            fe_scheduler_free(sched);
            fe_model_free(model);
            throw_oom(env, "FinLlmScheduler.open");
            return 0;
        }
        s->model = model;
        s->sched = sched;
        return static_cast<jlong>(reinterpret_cast<intptr_t>(s));
    });
}

// Ends every request (their handles stay valid), frees the scheduler and the model.
JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeFree(JNIEnv *, jclass, jlong handle) {
    auto *s = reinterpret_cast<JniScheduler *>(static_cast<intptr_t>(handle));
    if (!s || s->magic != kSchedAlive) return;
    s->magic = kMagicDead;
    fe_scheduler_free(s->sched);
    fe_model_free(s->model);
    delete s;
}

// Queues a request; returns its handle. temperature < 0: the core's default (greedy); seed -1: random.
JNIEXPORT jlong JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeSubmit(JNIEnv *env, jclass, jlong handle,
                                                                        jstring jprompt, jint max_tokens,
                                                                        jfloat temperature, jint seed,
                                                                        jobjectArray jstop) {
    return guarded<jlong>(env, "FinLlmScheduler.submit", 0, [&]() -> jlong {
        JniScheduler *s = sched_from(env, handle, "FinLlmScheduler.submit");
        if (!s) return 0;
        bool ok = false;
        std::string prompt = copy_jstring(env, jprompt, "FinLlmScheduler.submit: prompt", &ok);
        if (!ok) return 0;
        std::vector<std::string> stops;
        if (jstop) {
            jsize n = env->GetArrayLength(jstop);
            for (jsize i = 0; i < n; ++i) {
                auto js = static_cast<jstring>(env->GetObjectArrayElement(jstop, i));
                stops.push_back(copy_jstring(env, js, "FinLlmScheduler.submit: stop[i]", &ok));
                env->DeleteLocalRef(js);
                if (!ok) return 0;
            }
        }
        std::vector<const char *> stop_ptrs;
        for (const auto &x : stops) stop_ptrs.push_back(x.c_str());
        fe_generate_params gp = fe_generate_default_params();
        gp.max_tokens = max_tokens;
        if (temperature >= 0) gp.sampling.temperature = temperature;
        gp.sampling.seed = static_cast<uint32_t>(seed);  // -1 = FE_SEED_RANDOM
        gp.stop = stop_ptrs.empty() ? nullptr : stop_ptrs.data();
        gp.n_stop = stop_ptrs.size();
        fe_sched_request *rq = nullptr;
        fe_status st = fe_sched_submit(s->sched, prompt.c_str(), &gp, &rq);
        if (st != FE_OK || !rq) {
            throw_status(env, st != FE_OK ? st : FE_ERR_INTERNAL, "FinLlmScheduler.submit");
            return 0;
        }
        return static_cast<jlong>(reinterpret_cast<intptr_t>(rq));
    });
}

// Waits for the next event: Object[]{String text, int[]{token, done, stopReason}, String finishReason or null}.
JNIEXPORT jobjectArray JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeNext(JNIEnv *env, jclass, jlong rh) {
    return guarded<jobjectArray>(env, "FinLlmScheduler.Request.next", nullptr, [&]() -> jobjectArray {
        fe_sched_request *rq = request_from(env, rh, "FinLlmScheduler.Request.next");
        if (!rq) return nullptr;
        fe_token_event ev{};
        fe_status st = fe_sched_next(rq, &ev);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlmScheduler.Request.next");
            return nullptr;
        }
        jclass obj_cls = env->FindClass("java/lang/Object");
        if (!obj_cls) return nullptr;
        jobjectArray out = env->NewObjectArray(3, obj_cls, nullptr);
        jstring jtext = utf8_jstring(env, std::string(ev.text, ev.text_len));
        int32_t info[3] = {ev.token, ev.done ? 1 : 0, static_cast<int32_t>(ev.stop_reason)};
        jintArray jinfo = new_int_array(env, info, 3);
        if (!out || !jtext || !jinfo) return nullptr;  // OutOfMemoryError pending
        env->SetObjectArrayElement(out, 0, jtext);
        env->SetObjectArrayElement(out, 1, jinfo);
        if (ev.done) {
            jstring reason = env->NewStringUTF(fe_finish_reason(ev.stop_reason));
            if (!reason) return nullptr;
            env->SetObjectArrayElement(out, 2, reason);
        }
        return out;
    });
}

JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeCancel(JNIEnv *, jclass, jlong rh) {
    fe_sched_cancel(reinterpret_cast<fe_sched_request *>(static_cast<intptr_t>(rh)));
}

JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeRequestFree(JNIEnv *, jclass, jlong rh) {
    fe_sched_request_free(reinterpret_cast<fe_sched_request *>(static_cast<intptr_t>(rh)));
}

// int[]{nPrompt, nGenerated} of a finished request (usage counts).
JNIEXPORT jintArray JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeUsage(JNIEnv *env, jclass, jlong rh) {
    return guarded<jintArray>(env, "FinLlmScheduler.Request.usage", nullptr, [&]() -> jintArray {
        fe_sched_request *rq = request_from(env, rh, "FinLlmScheduler.Request.usage");
        if (!rq) return nullptr;
        fe_profile p{};
        fe_status st = fe_sched_request_get_profile(rq, &p);
        if (st != FE_OK) {
            throw_status(env, st, "FinLlmScheduler.Request.usage");
            return nullptr;
        }
        int32_t v[2] = {p.n_prompt, p.n_gen};
        return new_int_array(env, v, 2);
    });
}

JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeStats(JNIEnv *env, jclass, jlong handle) {
    return guarded<jstring>(env, "FinLlmScheduler.stats", nullptr, [&]() -> jstring {
        JniScheduler *s = sched_from(env, handle, "FinLlmScheduler.stats");
        if (!s) return nullptr;
        char *json = fe_scheduler_stats_json(s->sched);
        if (!json) {
            throw_status(env, FE_ERR_OUT_OF_MEMORY, "FinLlmScheduler.stats");
            return nullptr;
        }
        jstring out = env->NewStringUTF(json);
        fe_free(json);
        return out;
    });
}

// The scheduler's drift monitor (fe_scheduler_enable_drift): requests are counted when submitted;
// the monitor locks itself, so status and JSON may be read while other threads submit.
JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeEnableDrift(JNIEnv *env, jclass, jlong handle,
                                                                             jstring jpath) {
    guarded<int>(env, "FinLlmScheduler.enableDrift", 0, [&]() -> int {
        JniScheduler *s = sched_from(env, handle, "FinLlmScheduler.enableDrift");
        if (s)
            enable_drift(env, jpath, "FinLlmScheduler.enableDrift",
                         [&](const char *p) { return fe_scheduler_enable_drift(s->sched, p); });
        return 0;
    });
}

static fe_drift_monitor *scheduler_drift(JNIEnv *env, jlong handle, const char *what) {
    JniScheduler *s = sched_from(env, handle, what);
    if (!s) return nullptr;
    fe_drift_monitor *m = fe_scheduler_drift_monitor(s->sched);
    if (!m) throw_fe(env, FE_ERR_INVALID_ARG, std::string(what) + ": no drift monitor (call enableDrift first)");
    return m;
}

JNIEXPORT jdoubleArray JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeDriftStatus(JNIEnv *env, jclass,
                                                                                     jlong handle) {
    return guarded<jdoubleArray>(env, "FinLlmScheduler.driftStatus", nullptr, [&]() -> jdoubleArray {
        fe_drift_monitor *m = scheduler_drift(env, handle, "FinLlmScheduler.driftStatus");
        return m ? drift_status_array(env, m, "FinLlmScheduler.driftStatus") : nullptr;
    });
}

JNIEXPORT jstring JNICALL Java_io_finllm_edge_FinLlmScheduler_nativeDriftStateJson(JNIEnv *env, jclass,
                                                                                  jlong handle) {
    return guarded<jstring>(env, "FinLlmScheduler.driftStateJson", nullptr, [&]() -> jstring {
        fe_drift_monitor *m = scheduler_drift(env, handle, "FinLlmScheduler.driftStateJson");
        return m ? drift_json(env, m, "FinLlmScheduler.driftStateJson") : nullptr;
    });
}

// ------------------------------------------------------------------ runtime LoRA adapters

// Loads a GGUF LoRA adapter for this model; returns its id (0, 1, ...) for nativeSetAdapters.
JNIEXPORT jint JNICALL Java_io_finllm_edge_FinLlm_nativeLoadAdapter(JNIEnv *env, jclass, jlong handle, jstring jpath) {
    return guarded<jint>(env, "FinLlm.loadAdapter", -1, [&]() -> jint {
        JniSession *s = from_handle(env, handle, "FinLlm.loadAdapter");
        if (!s) return -1;
        bool ok = false;
        std::string path = copy_jstring(env, jpath, "FinLlm.loadAdapter: path", &ok);
        if (!ok) return -1;
        s->adapters.reserve(s->adapters.size() + 1);  // no throw after the adapter exists
        fe_adapter *a = nullptr;
        fe_status st = fe_adapter_load(s->model, path.c_str(), &a);
        if (st != FE_OK || !a) {
            throw_status(env, st != FE_OK ? st : FE_ERR_INTERNAL, ("FinLlm.loadAdapter(" + path + ")").c_str());
            return -1;
        }
        s->adapters.push_back(a);
        return static_cast<jint>(s->adapters.size() - 1);
    });
}

// Makes adapters ids[i] with scales[i] the active set (empty arrays: none).
JNIEXPORT void JNICALL Java_io_finllm_edge_FinLlm_nativeSetAdapters(JNIEnv *env, jclass, jlong handle, jintArray jids,
                                                                   jfloatArray jscales) {
    guarded<int>(env, "FinLlm.setAdapters", 0, [&]() -> int {
        JniSession *s = from_handle(env, handle, "FinLlm.setAdapters");
        if (!s) return 0;
        if (!jids || !jscales || env->GetArrayLength(jids) != env->GetArrayLength(jscales)) {
            throw_fe(env, FE_ERR_INVALID_ARG, "FinLlm.setAdapters: ids and scales must be arrays of the same length");
            return 0;
        }
        const jsize n = env->GetArrayLength(jids);
        std::vector<jint> ids(static_cast<size_t>(n));
        std::vector<float> scales(static_cast<size_t>(n));
        if (n) {
            env->GetIntArrayRegion(jids, 0, n, ids.data());
            env->GetFloatArrayRegion(jscales, 0, n, scales.data());
        }
        std::vector<fe_adapter *> handles;
        for (jsize i = 0; i < n; i++) {
            if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= s->adapters.size()) {
                throw_fe(env, FE_ERR_INVALID_ARG, "FinLlm.setAdapters: adapter id " + std::to_string(ids[i]) +
                                                      " was not returned by loadAdapter on this FinLlm");
                return 0;
            }
            handles.push_back(s->adapters[static_cast<size_t>(ids[i])]);
        }
        fe_status st = fe_session_set_adapters(s->session, handles.data(), scales.data(), handles.size());
        if (st != FE_OK) throw_status(env, st, "FinLlm.setAdapters");
        return 0;
    });
}

}  // extern "C"

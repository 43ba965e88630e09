package io.finllm.edge;

import java.io.BufferedReader;
import java.io.FileReader;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * A finance LLM on the device: one GGUF model and one generation session behind the
 * finllm-edge C API (native/include/finllm_edge.h), through the JNI bridge in native/jni/.
 *
 * <p>Plain Java (no Android classes), so the same source file runs in the Android app and
 * in the desktop JVM test (tests/jvm/FinLlmTest.java).
 *
 * <pre>{@code
 * FinLlm.loadLibrary();                                    // picks the CPU variant
 * try (FinLlm llm = FinLlm.open("/data/.../model.gguf", new FinLlm.Options().nCtx(2048))) {
 *     String prompt = llm.formatChat("You are a finance assistant.", "What is a bond coupon?");
 *     FinLlm.Result r = llm.generate(prompt, 128, piece -> { System.out.print(piece); return true; });
 *     System.out.println(llm.profile());                   // ttft_ms, decode_tok_s, ...
 * }
 * }</pre>
 *
 * <p>Threading: calls on one FinLlm run one at a time (the native session is not
 * thread-safe; a second thread waits for the first). Run them all on one thread, e.g. a
 * single-thread executor per session as the demo app does. {@link #cancel()} and
 * {@link #release()} may be called from any thread: cancel stops the generation in
 * progress, release cancels it, waits for it to return, then frees the native memory.
 * After release every call except cancel/release/close throws {@link FinLlmException}.
 */
public final class FinLlm implements AutoCloseable {

    /** Receives the answer while it is generated. */
    public interface TokenCallback {
        /**
         * Called on the generating thread once per generated token, in order. {@code piece}
         * is the token's text; it is empty when the token ends inside a multi-byte character
         * (those bytes arrive with the next piece). Return false to stop the generation.
         */
        boolean onToken(String piece);
    }

    /** Session settings; defaults are the C API's (fe_session_default_params), but greedy. */
    public static final class Options {
        int nCtx = 2048;
        int nBatch = 512;
        int nThreads = 0;
        int seed = -1;  // FE_SEED_RANDOM: a fresh seed per request, as in the core (set one to repeat)
        float temperature = 0f;
        int topK = 40;
        float topP = 0.95f;
        float repeatPenalty = 1.0f;
        boolean useMmap = true;
        boolean prefixReuse = true;
        boolean flashAttn = false;
        boolean reuseGenerated = false;
        String modelSha256 = null;

        /** Context length in tokens (prompt + answer), > 0. */
        public Options nCtx(int v) { nCtx = v; return this; }
        /** Prompt tokens per decode call. */
        public Options nBatch(int v) { nBatch = v; return this; }
        /** Threads; <= 0 means the core's default: one per performance core (4 on a Snapdragon 865). */
        public Options nThreads(int v) { nThreads = v; return this; }
        public Options seed(int v) { seed = v; return this; }
        /** <= 0: greedy. */
        public Options temperature(float v) { temperature = v; return this; }
        public Options topK(int v) { topK = v; return this; }
        public Options topP(float v) { topP = v; return this; }
        public Options repeatPenalty(float v) { repeatPenalty = v; return this; }
        public Options useMmap(boolean v) { useMmap = v; return this; }
        /**
         * Keep the KV cache between calls and evaluate only what follows the longest common
         * token prefix (system prompt, earlier turns); same output as without it. Default true.
         */
        public Options prefixReuse(boolean v) { prefixReuse = v; return this; }
        /** llama.cpp's flash attention: faster prefill of long prompts, coarser prefix reuse (see finllm_edge.h). */
        public Options flashAttn(boolean v) { flashAttn = v; return this; }
        /**
         * With prefixReuse: also reuse the model's own generated answers when the next prompt sends them
         * back (a chat evaluates only the new message), as llama.cpp's server does; the output is then no
         * longer token-identical to a fresh evaluation (see finllm_edge.h). Default false.
         */
        public Options reuseGenerated(boolean v) { reuseGenerated = v; return this; }
        /**
         * The model file's sha256 (64 hex digits) as the app already knows it (convert's manifest, its
         * check of the download): saved prompt state is then tagged and checked with it instead of
         * hashing the model at every launch (fe_model_set_sha256). The core trusts it. Default null.
         */
        public Options modelSha256(String v) { modelSha256 = v; return this; }
    }

    /** Why a generation ended (fe_stop_reason; same order as the C enum). */
    public enum StopReason {
        NONE, EOS, MAX_TOKENS, STOP_STRING, CALLBACK, CANCELLED, CONTEXT_FULL;

        static StopReason of(int code) {
            StopReason[] all = values();
            return code >= 0 && code < all.length ? all[code] : NONE;
        }
    }

    /** A finished (or cancelled) generation. */
    public static final class Result {
        /** The answer: exactly the streamed pieces joined. */
        public final String text;
        public final StopReason stopReason;
        public final int nPrompt;
        public final int nGenerated;
        /** Token ids, one per onToken call, in order. */
        public final int[] tokens;

        Result(String text, StopReason stopReason, int nPrompt, int nGenerated, int[] tokens) {
            this.text = text;
            this.stopReason = stopReason;
            this.nPrompt = nPrompt;
            this.nGenerated = nGenerated;
            this.tokens = tokens;
        }

        public boolean cancelled() {
            return stopReason == StopReason.CANCELLED;
        }
    }

    /**
     * Latency of the last generation (fe_profile; field meanings in shared/design/BENCHMARKS.md).
     * Times in ms, throughputs in tokens/s.
     */
    public static final class Profile {
        public final double loadMs;
        public final double tokenizeMs;
        public final double prefillMs;
        public final double ttftMs;
        public final double prefillTokS;
        public final double decodeTokS;
        public final double tokenMsP50;
        public final double tokenMsP90;
        public final double tokenMsP99;
        public final double e2eMs;
        public final double peakRssMb;
        public final int nPrompt;
        public final int nGen;
        public final int nCtx;
        public final int nThreads;
        /** Prompt tokens reused from the KV cache (prefix reuse), not evaluated; nPrompt counts them. */
        public final int nPromptReused;
        /** Per-token decode latency, one entry per token after the first, in order. */
        public final double[] tokenMs;

        static final int FIXED = 16;

        Profile(double[] v) {
            if (v == null || v.length < FIXED) {
                throw new FinLlmException(FinLlmException.FE_ERR_INTERNAL, "FE_ERR_INTERNAL",
                        "FinLlm.profile: malformed profile from the native library");
            }
            loadMs = v[0];
            tokenizeMs = v[1];
            prefillMs = v[2];
            ttftMs = v[3];
            prefillTokS = v[4];
            decodeTokS = v[5];
            tokenMsP50 = v[6];
            tokenMsP90 = v[7];
            tokenMsP99 = v[8];
            e2eMs = v[9];
            peakRssMb = v[10];
            nPrompt = (int) v[11];
            nGen = (int) v[12];
            nCtx = (int) v[13];
            nThreads = (int) v[14];
            nPromptReused = (int) v[15];
            tokenMs = Arrays.copyOfRange(v, FIXED, v.length);
        }

        /** The profile as readable text, metric names as in LatencyProfile JSON. */
        @Override
        public String toString() {
            StringBuilder sb = new StringBuilder();
            row(sb, "load_ms", loadMs);
            row(sb, "tokenize_ms", tokenizeMs);
            row(sb, "prefill_ms", prefillMs);
            row(sb, "ttft_ms", ttftMs);
            row(sb, "prefill_tok_s", prefillTokS);
            row(sb, "decode_tok_s", decodeTokS);
            row(sb, "token_ms_p50", tokenMsP50);
            row(sb, "token_ms_p90", tokenMsP90);
            row(sb, "token_ms_p99", tokenMsP99);
            row(sb, "e2e_ms", e2eMs);
            row(sb, "peak_rss_mb", peakRssMb);
            sb.append(String.format(Locale.ROOT, "%-14s %d%n", "n_prompt", nPrompt));
            sb.append(String.format(Locale.ROOT, "%-14s %d%n", "n_prompt_reused", nPromptReused));
            sb.append(String.format(Locale.ROOT, "%-14s %d%n", "n_gen", nGen));
            sb.append(String.format(Locale.ROOT, "%-14s %d%n", "n_ctx", nCtx));
            sb.append(String.format(Locale.ROOT, "%-14s %s%n", "n_threads", nThreads > 0 ? String.valueOf(nThreads) : "all"));
            return sb.toString();
        }

        private static void row(StringBuilder sb, String name, double v) {
            sb.append(String.format(Locale.ROOT, "%-14s %.2f%n", name, v));
        }
    }

    /** Facts about the loaded model (fe_model_info). */
    public static final class ModelInfo {
        public final String description;
        public final long sizeBytes;
        public final long fileSizeBytes;
        public final long nParams;
        public final int nCtxTrain;
        public final int nVocab;
        public final boolean hasChatTemplate;
        public final double bitsPerWeight;
        public final double loadMs;

        ModelInfo(Object[] raw) {
            long[] l = (long[]) raw[1];
            double[] d = (double[]) raw[2];
            description = (String) raw[0];
            sizeBytes = l[0];
            fileSizeBytes = l[1];
            nParams = l[2];
            nCtxTrain = (int) l[3];
            nVocab = (int) l[4];
            hasChatTemplate = l[5] != 0;
            bitsPerWeight = d[0];
            loadMs = d[1];
        }

        @Override
        public String toString() {
            return String.format(Locale.ROOT, "%s, %.1f M params, %.2f bits/weight, %.1f MiB, loaded in %.0f ms",
                    description, nParams / 1e6, bitsPerWeight, fileSizeBytes / 1048576.0, loadMs);
        }
    }

    // ------------------------------------------------------------------ library loading

    /** System property naming the library to System.loadLibrary() (overrides the CPU check). */
    public static final String LIBRARY_PROPERTY = "finllm.jni.library";
    /** Library of an x86-64 (or other non-ARM) desktop build. */
    public static final String LIB_HOST = "finllm_jni";
    /** arm64 build for ARMv8.2-A with dotprod and fp16 (Cortex-A55/A75/A76/A77..., Snapdragon 845 and later). */
    public static final String LIB_ARM_DOTPROD = "finllm_jni_dotprod";
    /** arm64 baseline ARMv8.0-A build: runs on every arm64 CPU (Cortex-A53 ...), slower. */
    public static final String LIB_ARM_BASELINE = "finllm_jni_armv8";

    private static String loadedLibrary;

    /**
     * Loads the JNI library once and returns its name. On arm64 the dotprod+fp16 variant is
     * chosen only when every CPU listed in /proc/cpuinfo has the asimddp, fphp and asimdhp
     * features (a big.LITTLE phone must not move the thread onto a core that lacks them);
     * otherwise the baseline, so no phone dies of SIGILL. Same rule as
     * finllm_edge/cpu_variant.py (tests/test_jni.py checks that they agree).
     */
    public static synchronized String loadLibrary() {
        if (loadedLibrary != null) return loadedLibrary;
        String name = System.getProperty(LIBRARY_PROPERTY);
        if (name == null || name.isEmpty()) {
            name = chooseLibrary(System.getProperty("os.arch", ""), readCpuinfo());
        }
        System.loadLibrary(name);
        loadedLibrary = name;
        return name;
    }

    /** The library for a CPU: {@link #LIB_HOST}, {@link #LIB_ARM_DOTPROD} or {@link #LIB_ARM_BASELINE}. */
    public static String chooseLibrary(String osArch, String cpuinfo) {
        String arch = osArch == null ? "" : osArch.toLowerCase(Locale.ROOT);
        if (!arch.equals("aarch64") && !arch.equals("arm64")) return LIB_HOST;
        Set<String> features = commonCpuFeatures(cpuinfo);
        boolean dotprod = features.contains("asimddp");
        boolean fp16 = features.contains("asimdhp") && features.contains("fphp");
        return dotprod && fp16 ? LIB_ARM_DOTPROD : LIB_ARM_BASELINE;
    }

    /** Features present on every CPU of a /proc/cpuinfo text (empty if none are listed). */
    public static Set<String> commonCpuFeatures(String cpuinfo) {
        Set<String> common = null;
        if (cpuinfo != null) {
            for (String line : cpuinfo.split("\n")) {
                int colon = line.indexOf(':');
                if (colon < 0 || !line.substring(0, colon).trim().equalsIgnoreCase("features")) continue;
                Set<String> these = new HashSet<>(Arrays.asList(line.substring(colon + 1).trim().split("\\s+")));
                if (common == null) common = these;
                else common.retainAll(these);
            }
        }
        return common == null ? new HashSet<String>() : common;
    }

    private static String readCpuinfo() {
        StringBuilder sb = new StringBuilder();
        try (BufferedReader r = new BufferedReader(new FileReader("/proc/cpuinfo"))) {
            String line;
            while ((line = r.readLine()) != null) sb.append(line).append('\n');
        } catch (IOException e) {
            return null;  // unreadable: the baseline library is the safe choice
        }
        return sb.toString();
    }

    /** "finllm-edge X; llama.cpp Y; variant Z" of the loaded library. */
    public static String version() {
        loadLibrary();
        return nativeVersion();
    }

    /** CPU variant the loaded library was built for ("" for a host build). */
    public static String buildVariant() {
        loadLibrary();
        return nativeBuildVariant();
    }

    // ------------------------------------------------------------------ instances

    private final Object lock = new Object();
    private long handle;          // guarded by lock; 0 once released
    private Thread busy;          // guarded by lock; the thread inside a native call
    private boolean releasing;    // guarded by lock; release() is waiting for `busy`
    private final String modelPath;

    private FinLlm(long handle, String modelPath) {
        this.handle = handle;
        this.modelPath = modelPath;
    }

    /** Loads a GGUF model with default options. */
    public static FinLlm open(String modelPath) {
        return open(modelPath, new Options());
    }

    /**
     * Loads a GGUF model and creates its session.
     *
     * @throws FinLlmException FE_ERR_FILE_NOT_FOUND, FE_ERR_BAD_MODEL, FE_ERR_INVALID_ARG, ...
     */
    public static FinLlm open(String modelPath, Options o) {
        loadLibrary();
        if (o == null) o = new Options();
        long h = nativeOpen(modelPath, o.nCtx, o.nBatch, o.nThreads, o.seed, o.temperature, o.topK,
                o.topP, o.repeatPenalty, o.useMmap, o.prefixReuse, o.flashAttn, o.reuseGenerated, o.modelSha256);
        return new FinLlm(h, modelPath);
    }

    public String modelPath() {
        return modelPath;
    }

    /** Takes the session for the calling thread; waits while another thread uses it. */
    private long enter(String what) {
        synchronized (lock) {
            boolean interrupted = false;
            try {
                while (true) {
                    if (handle == 0 || releasing) {
                        throw new FinLlmException(FinLlmException.FE_ERR_INVALID_ARG, "FE_ERR_INVALID_ARG",
                                "FinLlm." + what + ": the FinLlm handle was released");
                    }
                    if (busy == null) break;
                    if (busy == Thread.currentThread()) {
                        throw new IllegalStateException("FinLlm." + what + " called from inside onToken of the same session");
                    }
                    try {
                        lock.wait();
                    } catch (InterruptedException e) {
                        interrupted = true;
                    }
                }
            } finally {
                if (interrupted) Thread.currentThread().interrupt();
            }
            busy = Thread.currentThread();
            return handle;
        }
    }

    private void leave() {
        synchronized (lock) {
            busy = null;
            lock.notifyAll();
        }
    }

    /**
     * Generates an answer to {@code prompt} (a raw prompt: use {@link #formatChat} for chat
     * models), streaming it to {@code callback} (may be null). Each call is a new request;
     * with prefix reuse (the default) the cached start of the prompt is not evaluated again,
     * with the same output. A {@link #cancel()} returns the partial answer with
     * {@link StopReason#CANCELLED}; an exception thrown by the callback stops the
     * generation and propagates.
     *
     * @param stop stop strings (not included in the answer), may be null
     * @throws FinLlmException FE_ERR_CONTEXT_OVERFLOW, FE_ERR_DECODE, released handle, ...
     */
    public Result generate(String prompt, int maxTokens, String[] stop, TokenCallback callback) {
        return generate(prompt, maxTokens, stop, callback, null, null);
    }

    /**
     * Like {@link #generate(String, int, String[], TokenCallback)}, constrained by a GBNF
     * {@code grammar} or a JSON Schema {@code jsonSchema} (at most one; null = none): every token
     * keeps the answer a prefix of the grammar's language, and the answer ends when the grammar
     * is complete (the core converts the schema, on the phone too). Give maxTokens room for the
     * whole answer.
     *
     * @throws FinLlmException FE_ERR_INVALID_ARG for an invalid, unsupported or too large
     *         grammar/schema (the message names the problem), plus the errors of generate
     */
    public Result generate(String prompt, int maxTokens, String[] stop, TokenCallback callback, String grammar,
                           String jsonSchema) {
        long h = enter("generate");
        try {
            Object[] raw = nativeGenerate(h, prompt, maxTokens, stop, callback, grammar, jsonSchema);
            int[] stats = (int[]) raw[1];
            return new Result((String) raw[0], StopReason.of(stats[0]), stats[1], stats[2], (int[]) raw[2]);
        } finally {
            leave();
        }
    }

    public Result generate(String prompt, int maxTokens, TokenCallback callback) {
        return generate(prompt, maxTokens, null, callback);
    }

    /** One user turn whose answer is JSON valid against {@code jsonSchema} (see generate). */
    public Result chatJson(String system, String user, String jsonSchema, int maxTokens, TokenCallback callback) {
        return generate(formatChat(system, user), maxTokens, null, callback, null, jsonSchema);
    }

    /**
     * Remembers file hashes across app launches in {@code dir}/sha256-index.txt (pass
     * {@code context.getCacheDir().getPath()}): the model's sha256, which tags and checks saved
     * prompt state, is then computed once per model file, not at every launch (several hundred
     * ms for a 1B model). Entries are keyed by the file's path and stat stamp, so a changed or
     * replaced model is hashed again; a damaged index is ignored. Process-wide; null turns it
     * off (the default). Not needed when the app declares {@link Options#modelSha256}.
     */
    public static void setHashIndexDir(String dir) {
        loadLibrary();
        nativeSetHashIndexDir(dir);
    }

    /** The GBNF grammar the core makes of a JSON Schema (what chatJson decodes with). */
    public static String jsonSchemaToGrammar(String jsonSchema) {
        loadLibrary();
        return nativeJsonSchemaToGrammar(jsonSchema);
    }

    /** One user turn with the model's chat template (and an optional system message). */
    public Result chat(String system, String user, int maxTokens, TokenCallback callback) {
        return generate(formatChat(system, user), maxTokens, null, callback);
    }

    /**
     * Renders messages with the model's own chat template (llama.cpp's built-in template
     * engine) and appends the start of the assistant turn.
     *
     * @throws FinLlmException FE_ERR_TEMPLATE if the model has no usable template
     */
    public String formatChat(String system, String user) {
        List<String> roles = new ArrayList<>();
        List<String> contents = new ArrayList<>();
        if (system != null && !system.isEmpty()) {
            roles.add("system");
            contents.add(system);
        }
        roles.add("user");
        contents.add(user);
        return formatChat(roles.toArray(new String[0]), contents.toArray(new String[0]), true);
    }

    public String formatChat(String[] roles, String[] contents, boolean addAssistant) {
        long h = enter("formatChat");
        try {
            return nativeChatFormat(h, roles, contents, addAssistant);
        } finally {
            leave();
        }
    }

    public int[] tokenize(String text, boolean addSpecial, boolean parseSpecial) {
        long h = enter("tokenize");
        try {
            return nativeTokenize(h, text, addSpecial, parseSpecial);
        } finally {
            leave();
        }
    }

    /** Text of tokens (special tokens not rendered). */
    public String detokenize(int[] tokens) {
        long h = enter("detokenize");
        try {
            return nativeDetokenize(h, tokens);
        } finally {
            leave();
        }
    }

    /**
     * Saves the KV state of {@code prompt} (e.g. the formatted system prompt; tokenized as
     * {@link #generate} does) to {@code path}, written atomically, so that a later process can
     * {@link #loadState} it. Evaluates the prompt if it is not cached. Returns its token count.
     */
    public int saveState(String path, String prompt) {
        long h = enter("saveState");
        try {
            return nativeSaveState(h, path, prompt);
        } finally {
            leave();
        }
    }

    /**
     * Evaluates the answer just generated again, as a prompt would be (its tokens were decoded one
     * at a time, so exact prefix reuse cannot take them), so that a chat's next turn, which
     * repeats the answer, evaluates only the new message, with the same output as without reuse.
     * Call it while the user reads the answer, on the session's executor. Returns the tokens
     * evaluated (0: nothing to settle). {@link #cancel()} stops it (FinLlmException
     * FE_ERR_CANCELLED; the next turn then evaluates what is left).
     */
    public int settle() {
        long h = enter("settle");
        try {
            return nativeSettle(h);
        } finally {
            leave();
        }
    }

    /**
     * Replaces the KV cache with a state saved by {@link #saveState}; a later generate() whose
     * prompt starts with that prefix reuses it. Returns its token count.
     *
     * @throws FinLlmException FE_ERR_BAD_MODEL when the file is refused (made for another model
     *     or llama.cpp build, truncated, altered), FE_ERR_FILE_NOT_FOUND when it is missing
     */
    public int loadState(String path) {
        long h = enter("loadState");
        try {
            return nativeLoadState(h, path);
        } finally {
            leave();
        }
    }

    /**
     * Loads a GGUF LoRA adapter (written by {@code finllm-edge convert --adapter-gguf}) for this
     * model, without reloading the model; returns its id for {@link #setAdapters}. Adapters are
     * freed with the FinLlm.
     *
     * @throws FinLlmException FE_ERR_BAD_MODEL when the file is refused (made for another base model,
     *     corrupt, an unsupported adapter kind or tensor type), FE_ERR_FILE_NOT_FOUND when it is missing
     */
    public int loadAdapter(String path) {
        long h = enter("loadAdapter");
        try {
            return nativeLoadAdapter(h, path);
        } finally {
            leave();
        }
    }

    /**
     * Makes the adapters {@code ids} (from {@link #loadAdapter}) with {@code scales} (1 = as trained)
     * the active set for the next generations; empty arrays: the plain model. A different set
     * empties the KV cache (nothing computed under other weights is reused); saved states record
     * the set and load only with the same set active.
     *
     * @throws FinLlmException FE_ERR_INVALID_ARG for an unknown id, a duplicate, or a scale
     *     outside [-100, 100]
     */
    public void setAdapters(int[] ids, float[] scales) {
        long h = enter("setAdapters");
        try {
            nativeSetAdapters(h, ids, scales);
        } finally {
            leave();
        }
    }

    /** Latency profile of the last generation. */
    public Profile profile() {
        long h = enter("profile");
        try {
            return new Profile(nativeProfile(h));
        } finally {
            leave();
        }
    }

    // ------------------------------------------------------------------ drift monitoring

    /**
     * Monitors the prompts of this session against a drift reference ({@code drift-ref.fedrift}
     * from {@code finllm-edge convert}): each generate() counts its new prompt tokens (counts only,
     * no text) and updates {@link #driftStatus()}. null detaches.
     *
     * @throws FinLlmException FE_ERR_BAD_MODEL when the file is refused (made for another
     *     tokenizer, truncated, altered), FE_ERR_FILE_NOT_FOUND when it is missing
     */
    public void enableDrift(String referencePath) {
        long h = enter("enableDrift");
        try {
            nativeEnableDrift(h, referencePath);
        } finally {
            leave();
        }
    }

    /** The drift state after the last generate() (needs {@link #enableDrift}). */
    public DriftStatus driftStatus() {
        long h = enter("driftStatus");
        try {
            return new DriftStatus(nativeDriftStatus(h));
        } finally {
            leave();
        }
    }

    /** The drift monitor's state as JSON: save it for {@code finllm-edge drift report}. */
    public String driftStateJson() {
        long h = enter("driftStateJson");
        try {
            return nativeDriftStateJson(h);
        } finally {
            leave();
        }
    }

    /**
     * Opt-in: keep the prompt tokens of every {@code everyN}-th request (the last {@code maxSamples})
     * in the drift state, for {@code finllm-edge drift export}. 0 turns it off (the default).
     */
    public void driftSampling(int maxSamples, int everyN) {
        long h = enter("driftSampling");
        try {
            nativeDriftSampling(h, maxSamples, everyN);
        } finally {
            leave();
        }
    }

    public ModelInfo modelInfo() {
        long h = enter("modelInfo");
        try {
            return new ModelInfo(nativeModelInfo(h));
        } finally {
            leave();
        }
    }

    /**
     * Asks the generation in progress to stop (it returns with {@link StopReason#CANCELLED}).
     * Safe from any thread; a no-op when nothing is running or after release. A cancel
     * before a generation starts does not affect that generation.
     */
    public void cancel() {
        synchronized (lock) {
            if (handle != 0) nativeCancel(handle);
        }
    }

    /**
     * Frees the model and session. Safe to call twice and from any thread: a generation in
     * progress on another thread is cancelled and awaited first. Must not be called from
     * inside onToken.
     */
    public void release() {
        long h;
        synchronized (lock) {
            if (handle == 0) return;
            if (busy == Thread.currentThread()) {
                throw new IllegalStateException("FinLlm.release called from inside onToken of the same session");
            }
            boolean interrupted = false;
            releasing = true;  // new calls now fail as "released"
            while (busy != null && handle != 0) {
                nativeCancel(handle);
                try {
                    lock.wait();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) Thread.currentThread().interrupt();
            h = handle;
            handle = 0;
        }
        nativeFree(h);  // 0 (a concurrent release won) is a no-op
    }

    public boolean isReleased() {
        synchronized (lock) {
            return handle == 0;
        }
    }

    @Override
    public void close() {
        release();
    }

    // ------------------------------------------------------------------ native (finllm_jni.cpp)

    private static native String nativeVersion();
    private static native String nativeJsonSchemaToGrammar(String jsonSchema);
    private static native String nativeBuildVariant();
    private static native void nativeSetHashIndexDir(String dir);
    private static native long nativeOpen(String modelPath, int nCtx, int nBatch, int nThreads, int seed,
                                          float temperature, int topK, float topP, float repeatPenalty,
                                          boolean useMmap, boolean prefixReuse, boolean flashAttn,
                                          boolean reuseGenerated, String modelSha256);
    private static native void nativeFree(long handle);
    private static native void nativeCancel(long handle);
    private static native Object[] nativeGenerate(long handle, String prompt, int maxTokens, String[] stop,
                                                  TokenCallback callback,
                                                  String grammar, String jsonSchema);
    private static native String nativeChatFormat(long handle, String[] roles, String[] contents,
                                                  boolean addAssistant);
    private static native int[] nativeTokenize(long handle, String text, boolean addSpecial, boolean parseSpecial);
    private static native String nativeDetokenize(long handle, int[] tokens);
    private static native double[] nativeProfile(long handle);
    private static native int nativeSaveState(long handle, String path, String prompt);
    private static native int nativeLoadState(long handle, String path);
    private static native int nativeSettle(long handle);
    private static native Object[] nativeModelInfo(long handle);
    private static native void nativeEnableDrift(long handle, String referencePath);
    private static native double[] nativeDriftStatus(long handle);
    private static native String nativeDriftStateJson(long handle);
    private static native void nativeDriftSampling(long handle, int maxSamples, int everyN);
    private static native int nativeLoadAdapter(long handle, String path);
    private static native void nativeSetAdapters(long handle, int[] ids, float[] scales);
}

import io.finllm.edge.DriftMonitor;
import io.finllm.edge.DriftStatus;
import io.finllm.edge.FinLlm;
import io.finllm.edge.FinLlmException;
import io.finllm.edge.FinLlmScheduler;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Desktop-JVM test of io.finllm.edge.FinLlm and the JNI bridge, on a real GGUF model.
 * No JUnit (nothing is downloaded): each check prints "PASS <name>" or "FAIL <name>: why";
 * the exit status is the number of failures. Run by tests/test_jni.py:
 *
 *   javac -d out android_demo/app/src/main/java/io/finllm/edge/*.java tests/jvm/FinLlmTest.java
 *   java -Djava.library.path=<dir of libfinllm_jni.so> -cp out FinLlmTest <model.gguf> [expected-variant]
 */
public final class FinLlmTest {
    static final String SYSTEM = "You are a concise assistant for retail investors.";
    static final String QUESTION = "What is a bond coupon? Answer in two sentences.";
    static final FinLlm.Options OPTS = new FinLlm.Options().nCtx(512).nThreads(2);

    static String modelPath;
    static String expectedVariant = "";
    static int failures = 0;

    interface Check {
        void run() throws Exception;
    }

    static File hashIndexDir;

    public static void main(String[] args) throws Exception {
        if (args.length == 3 && args[0].equals("--choose")) {
            // FinLlmTest --choose <os.arch> <cpuinfo file>: print the library FinLlm would load.
            String cpuinfo = new String(java.nio.file.Files.readAllBytes(new File(args[2]).toPath()),
                    StandardCharsets.UTF_8);
            System.out.println(FinLlm.chooseLibrary(args[1], cpuinfo));
            return;
        }
        if (args.length >= 1 && args[0].equals("--hostile")) {
            // FinLlmTest --hostile FILE=FIELD...: each hostile model file must throw
            // FinLlmException(FE_ERR_BAD_MODEL) naming FIELD, never kill the JVM.
            for (int i = 1; i < args.length; i++) {
                final String path = args[i].substring(0, args[i].lastIndexOf('='));
                final String field = args[i].substring(args[i].lastIndexOf('=') + 1);
                check("hostile " + new File(path).getName(), () -> {
                    FinLlmException e = expectFinLlmException(() -> FinLlm.open(path, OPTS));
                    requireEq(FinLlmException.FE_ERR_BAD_MODEL, e.getStatus(), "status");
                    require(e.getMessage().contains("'" + field + "'"), "message names '" + field + "': " + e.getMessage());
                });
            }
            System.out.println(failures == 0 ? "ALL PASSED" : failures + " FAILED");
            System.exit(failures);
        }
        if (args.length >= 5 && args[0].equals("--drift")) {
            drift(args);
            return;
        }
        if (args.length < 1) {
            System.err.println("usage: FinLlmTest <model.gguf> [expected-variant] | --choose <os.arch> <cpuinfo> | --hostile FILE=FIELD...");
            System.exit(2);
        }
        modelPath = args[0];
        if (args.length > 1) expectedVariant = args[1];
        // the cross-process hash index, as an app sets it at start (context.getCacheDir())
        hashIndexDir = java.nio.file.Files.createTempDirectory("fehash").toFile();
        FinLlm.setHashIndexDir(hashIndexDir.getPath());

        check("library_loads_and_reports_versions", FinLlmTest::libraryLoads);
        check("cpu_variant_choice", FinLlmTest::cpuVariantChoice);
        check("missing_model_throws", FinLlmTest::missingModelThrows);
        check("non_gguf_file_throws", FinLlmTest::nonGgufThrows);
        check("model_info", FinLlmTest::modelInfo);
        check("utf8_round_trip", FinLlmTest::utf8RoundTrip);
        check("streamed_generation", FinLlmTest::streamedGeneration);
        check("profile_of_last_generation", FinLlmTest::profileOfLastGeneration);
        check("callback_false_stops", FinLlmTest::callbackFalseStops);
        check("callback_exception_propagates", FinLlmTest::callbackExceptionPropagates);
        check("reentrant_call_from_callback_rejected", FinLlmTest::reentrantCallRejected);
        check("cancel_from_another_thread", FinLlmTest::cancelFromAnotherThread);
        check("context_overflow_throws", FinLlmTest::contextOverflowThrows);
        check("concurrent_calls_are_serialized", FinLlmTest::concurrentCallsSerialized);
        check("release_twice_and_use_after_release", FinLlmTest::releaseTwiceAndUseAfterRelease);
        check("release_from_another_thread_during_generation", FinLlmTest::releaseDuringGeneration);
        check("prefix_reuse_and_saved_state", FinLlmTest::prefixReuseAndSavedState);
        check("grammar_and_json_schema", FinLlmTest::grammarAndJsonSchema);
        FinLlm.setHashIndexDir(null);
        new File(hashIndexDir, "sha256-index.txt").delete();
        hashIndexDir.delete();

        System.out.println(failures == 0 ? "ALL PASSED" : failures + " FAILED");
        System.exit(failures);
    }

    static void check(String name, Check c) {
        try {
            c.run();
            System.out.println("PASS " + name);
        } catch (Throwable t) {
            failures++;
            System.out.println("FAIL " + name + ": " + t);
            t.printStackTrace(System.out);
        }
    }

    static void require(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static void requireEq(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    static FinLlmException expectFinLlmException(Check c) throws Exception {
        try {
            c.run();
        } catch (FinLlmException e) {
            return e;
        }
        throw new AssertionError("no FinLlmException thrown");
    }

    // ------------------------------------------------------------------ checks

    static void libraryLoads() {
        String lib = FinLlm.loadLibrary();
        String version = FinLlm.version();
        System.out.println("  library " + lib + ": " + version);
        require(version.startsWith("finllm-edge 0."), "version: " + version);
        require(version.contains("llama.cpp 0.3.36 ("), "llama.cpp version in: " + version);
        requireEq(expectedVariant, FinLlm.buildVariant(), "build variant");
    }

    static void cpuVariantChoice() {
        String a77 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp";
        String a53 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid";
        StringBuilder sd865 = new StringBuilder();
        for (int i = 0; i < 8; i++) {
            sd865.append("processor\t: ").append(i).append("\nBogoMIPS\t: 38.40\nFeatures\t: ").append(a77)
                    .append("\nCPU implementer\t: 0x41\n\n");
        }
        requireEq(FinLlm.LIB_ARM_DOTPROD, FinLlm.chooseLibrary("aarch64", sd865.toString()), "Snapdragon 865");
        requireEq(FinLlm.LIB_ARM_BASELINE, FinLlm.chooseLibrary("aarch64", "processor\t: 0\nFeatures\t: " + a53 + "\n"),
                "Cortex-A53");
        // A big core with dotprod next to a little core without: the thread may migrate.
        String mixed = "processor\t: 0\nFeatures\t: " + a77 + "\n\nprocessor\t: 1\nFeatures\t: " + a53 + "\n";
        requireEq(FinLlm.LIB_ARM_BASELINE, FinLlm.chooseLibrary("aarch64", mixed), "mixed cores");
        // dotprod without fp16 arithmetic is not enough for armv8.2-a+dotprod+fp16.
        requireEq(FinLlm.LIB_ARM_BASELINE, FinLlm.chooseLibrary("aarch64", "Features\t: fp asimd asimddp\n"),
                "dotprod without fp16");
        requireEq(FinLlm.LIB_ARM_BASELINE, FinLlm.chooseLibrary("aarch64", null), "unreadable /proc/cpuinfo");
        requireEq(FinLlm.LIB_HOST, FinLlm.chooseLibrary("amd64", "flags : avx2"), "x86-64");
    }

    static void missingModelThrows() throws Exception {
        String missing = new File(System.getProperty("java.io.tmpdir"), "no-such-dir/no-such-model.gguf").getPath();
        FinLlmException e = expectFinLlmException(() -> FinLlm.open(missing, OPTS));
        System.out.println("  " + e.getMessage());
        requireEq(FinLlmException.FE_ERR_FILE_NOT_FOUND, e.getStatus(), "status");
        requireEq("FE_ERR_FILE_NOT_FOUND", e.getStatusName(), "status name");
        require(e.getMessage().contains("no-such-model.gguf"), "message names the file: " + e.getMessage());
        // Any character survives the trip Java -> C API -> exception text (real UTF-8 both ways).
        String odd = new File(System.getProperty("java.io.tmpdir"),
                "no-such-dir/Rendite \u20ac \uD83D\uDCC8 \u503a\u5238.gguf").getPath();
        FinLlmException u = expectFinLlmException(() -> FinLlm.open(odd, OPTS));
        requireEq(FinLlmException.FE_ERR_FILE_NOT_FOUND, u.getStatus(), "status (non-ASCII path)");
        require(u.getMessage().contains(odd), "message names the non-ASCII path exactly: " + u.getMessage());
        FinLlmException n = expectFinLlmException(() -> FinLlm.open(null, OPTS));
        requireEq(FinLlmException.FE_ERR_INVALID_ARG, n.getStatus(), "null path status");
    }

    static void nonGgufThrows() throws Exception {
        File f = File.createTempFile("finllm-not-a-model", ".gguf");
        f.deleteOnExit();
        try (FileOutputStream out = new FileOutputStream(f)) {
            byte[] junk = new byte[4096];
            Arrays.fill(junk, (byte) 'x');
            out.write(junk);
        }
        FinLlmException e = expectFinLlmException(() -> FinLlm.open(f.getPath(), OPTS));
        System.out.println("  " + e.getMessage());
        requireEq(FinLlmException.FE_ERR_BAD_MODEL, e.getStatus(), "status");
        require(e.getMessage().length() > "FE_ERR_BAD_MODEL: FinLlm.open(".length() + f.getPath().length() + 3,
                "message carries fe_last_error() text: " + e.getMessage());
    }

    static void modelInfo() {
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            FinLlm.ModelInfo mi = llm.modelInfo();
            System.out.println("  " + mi);
            require(mi.nParams > 100_000_000L && mi.nParams < 200_000_000L, "SmolLM2-135M params: " + mi.nParams);
            requireEq(new File(modelPath).length(), mi.fileSizeBytes, "file size");
            require(mi.bitsPerWeight > 4.0 && mi.bitsPerWeight < 6.5, "Q4_1 bits/weight: " + mi.bitsPerWeight);
            require(mi.hasChatTemplate, "chat template");
            require(mi.nVocab == 49152, "SmolLM2 vocabulary: " + mi.nVocab);
        }
    }

    static void utf8RoundTrip() {
        // Non-BMP (surrogate pairs in Java), CJK, the euro sign, and an embedded NUL-free mix.
        String text = "Yield 5.2 % p.a. \u2013 \u20ac100 \uD83D\uDCC8 \u503a\u5238 caf\u00e9";
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            int[] toks = llm.tokenize(text, false, false);
            require(toks.length > 5, "tokens: " + toks.length);
            requireEq(text, llm.detokenize(toks), "detokenize(tokenize(text))");
            // The UTF-8 bytes llama.cpp saw are the real ones (not Java's modified UTF-8):
            // the emoji must be 4 bytes, i.e. tokenizing it alone round-trips too.
            String emoji = "\uD83D\uDCC8";
            requireEq(emoji, llm.detokenize(llm.tokenize(emoji, false, false)), "emoji round trip");
            require(emoji.getBytes(StandardCharsets.UTF_8).length == 4, "sanity");
        }
    }

    static final class Collector implements FinLlm.TokenCallback {
        final List<String> pieces = Collections.synchronizedList(new ArrayList<String>());
        final List<Thread> threads = Collections.synchronizedList(new ArrayList<Thread>());

        @Override
        public boolean onToken(String piece) {
            pieces.add(piece);
            threads.add(Thread.currentThread());
            return true;
        }

        String joined() {
            StringBuilder sb = new StringBuilder();
            for (String p : pieces) sb.append(p);
            return sb.toString();
        }
    }

    static FinLlm.Result lastResult;
    static FinLlm.Profile lastProfile;

    static void streamedGeneration() {
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            String prompt = llm.formatChat(SYSTEM, QUESTION);
            require(prompt.contains(QUESTION) && prompt.contains("<|im_start|>assistant"), "chat template: " + prompt);
            Collector c = new Collector();
            FinLlm.Result r = llm.generate(prompt, 48, c);
            System.out.println("  answer (" + r.nGenerated + " tokens, " + r.stopReason + "): " + r.text.replace('\n', ' '));
            require(r.stopReason == FinLlm.StopReason.EOS || r.stopReason == FinLlm.StopReason.MAX_TOKENS,
                    "stop reason " + r.stopReason);
            require(r.nGenerated >= 8, "a real answer: " + r.nGenerated + " tokens");
            require(r.text.trim().length() >= 20, "answer text: '" + r.text + "'");
            requireEq(r.nGenerated, c.pieces.size(), "one onToken call per generated token");
            requireEq(r.tokens.length, c.pieces.size(), "token ids");
            requireEq(r.text, c.joined(), "joined pieces == returned text");
            for (Thread t : c.threads) require(t == Thread.currentThread(), "onToken runs on the generating thread");
            // Order: piece k is token k. The detokenized prefix of the first k+1 tokens equals
            // the first k+1 pieces joined (where the prefix ends on a whole character).
            StringBuilder prefix = new StringBuilder();
            for (int k = 0; k < r.tokens.length; k++) {
                prefix.append(c.pieces.get(k));
                String detok = llm.detokenize(Arrays.copyOf(r.tokens, k + 1));
                if (detok.indexOf('\uFFFD') < 0) requireEq(detok, prefix.toString(), "prefix after token " + k);
            }
            // Independent path: llama.cpp's detokenizer on all ids gives the same text.
            requireEq(r.text, llm.detokenize(r.tokens), "detokenize(tokens) == text");
            require(r.nPrompt > 10, "prompt tokens: " + r.nPrompt);
            // Greedy: the same request gives the same answer (fresh context each call).
            FinLlm.Result again = llm.generate(prompt, 48, null);
            requireEq(r.text, again.text, "greedy generation is repeatable");
            lastResult = again;
            lastProfile = llm.profile();
        }
    }

    static void profileOfLastGeneration() {
        require(lastResult != null && lastProfile != null, "streamed_generation ran first");
        FinLlm.Profile p = lastProfile;
        System.out.print(p.toString().replaceAll("(?m)^", "  "));
        requireEq(lastResult.nPrompt, p.nPrompt, "n_prompt");
        requireEq(lastResult.nGenerated, p.nGen, "n_gen");
        requireEq(512, p.nCtx, "n_ctx");
        requireEq(2, p.nThreads, "n_threads");
        require(p.loadMs > 0, "load_ms");
        require(p.prefillMs > 0 && p.prefillTokS > 0, "prefill");
        require(p.ttftMs >= p.prefillMs, "ttft_ms (" + p.ttftMs + ") >= prefill_ms (" + p.prefillMs + ")");
        require(p.e2eMs >= p.ttftMs, "e2e_ms >= ttft_ms");
        require(p.decodeTokS > 0, "decode_tok_s");
        // token_ms: one entry per sampled token after the first (an EOS sample may count).
        require(p.tokenMs.length == p.nGen - 1 || p.tokenMs.length == p.nGen,
                "token_ms entries: " + p.tokenMs.length + " for n_gen " + p.nGen);
        double sum = 0;
        for (double v : p.tokenMs) {
            require(v > 0, "token_ms > 0");
            sum += v;
        }
        require(Math.abs(p.decodeTokS - 1000.0 * p.tokenMs.length / sum) < 1e-6 * p.decodeTokS,
                "decode_tok_s = count / sum(token_ms)");
        require(p.tokenMsP50 <= p.tokenMsP90 && p.tokenMsP90 <= p.tokenMsP99, "percentiles ordered");
        require(p.peakRssMb > 50, "peak_rss_mb: " + p.peakRssMb);
        require(p.toString().contains("ttft_ms") && p.toString().contains("decode_tok_s"), "text form");
        System.out.println(String.format(java.util.Locale.ROOT,
                "  PROFILE {\"ttft_ms\": %.3f, \"decode_tok_s\": %.3f, \"prefill_tok_s\": %.3f, \"n_gen\": %d, \"n_prompt\": %d}",
                p.ttftMs, p.decodeTokS, p.prefillTokS, p.nGen, p.nPrompt));
    }

    static void callbackFalseStops() {
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            final int[] calls = {0};
            FinLlm.Result r = llm.chat(SYSTEM, QUESTION, 64, piece -> ++calls[0] < 3);
            requireEq(FinLlm.StopReason.CALLBACK, r.stopReason, "stop reason");
            requireEq(3, calls[0], "onToken calls");
            requireEq(3, r.tokens.length, "tokens");
        }
    }

    static void callbackExceptionPropagates() {
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            try {
                llm.chat(SYSTEM, QUESTION, 64, piece -> {
                    throw new IllegalArgumentException("stop right there");
                });
                throw new AssertionError("no exception");
            } catch (IllegalArgumentException e) {
                requireEq("stop right there", e.getMessage(), "the callback's own exception");
            }
            // The session is still usable.
            FinLlm.Result r = llm.chat(SYSTEM, QUESTION, 4, null);
            requireEq(4, r.nGenerated, "next generation");
        }
    }

    static void reentrantCallRejected() {
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            try {
                llm.chat(SYSTEM, QUESTION, 16, piece -> {
                    llm.profile();
                    return true;
                });
                throw new AssertionError("no exception");
            } catch (IllegalStateException e) {
                require(e.getMessage().contains("inside onToken"), e.getMessage());
            }
        }
    }

    static void cancelFromAnotherThread() throws Exception {
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            String prompt = llm.formatChat(SYSTEM, "Explain in detail how bond prices react to interest rate changes.");
            CountDownLatch firstToken = new CountDownLatch(1);
            CountDownLatch cancelled = new CountDownLatch(1);
            AtomicReference<Throwable> cancelError = new AtomicReference<>();
            Thread canceller = new Thread(() -> {
                try {
                    if (!firstToken.await(120, TimeUnit.SECONDS)) throw new AssertionError("no first token");
                    llm.cancel();  // from this thread, while generate() runs on the main thread
                } catch (Throwable t) {
                    cancelError.set(t);
                } finally {
                    cancelled.countDown();
                }
            }, "canceller");
            canceller.start();
            final int[] calls = {0};
            FinLlm.Result r = llm.generate(prompt, 400, piece -> {
                calls[0]++;
                if (calls[0] == 1) {
                    firstToken.countDown();
                    try {
                        cancelled.await(120, TimeUnit.SECONDS);  // hold generation until cancel() returned
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                return true;
            });
            canceller.join();
            if (cancelError.get() != null) throw new AssertionError("canceller failed", cancelError.get());
            requireEq(FinLlm.StopReason.CANCELLED, r.stopReason, "stop reason");
            requireEq(1, calls[0], "tokens after cancel");
            requireEq(1, r.tokens.length, "tokens in result");
            require(r.cancelled(), "cancelled()");
            require(llm.profile().nGen == 1, "profile of the cancelled generation");
            // The request does not stick: the next generation runs to its end.
            FinLlm.Result next = llm.generate(prompt, 6, null);
            requireEq(FinLlm.StopReason.MAX_TOKENS, next.stopReason, "next generation");
            // cancel() with nothing running is a no-op.
            llm.cancel();
            requireEq(FinLlm.StopReason.MAX_TOKENS, llm.generate(prompt, 3, null).stopReason, "after idle cancel");
        }
    }

    static void contextOverflowThrows() throws Exception {
        try (FinLlm llm = FinLlm.open(modelPath, new FinLlm.Options().nCtx(32).nThreads(2))) {
            StringBuilder longPrompt = new StringBuilder();
            for (int i = 0; i < 40; i++) longPrompt.append("The coupon is paid twice a year. ");
            FinLlmException e = expectFinLlmException(() -> llm.generate(longPrompt.toString(), 8, null));
            System.out.println("  " + e.getMessage());
            requireEq(FinLlmException.FE_ERR_CONTEXT_OVERFLOW, e.getStatus(), "status");
            require(e.getMessage().contains("n_ctx"), "fe_last_error() text: " + e.getMessage());
            FinLlmException z = expectFinLlmException(() -> llm.generate("hi", 0, null));
            requireEq(FinLlmException.FE_ERR_INVALID_ARG, z.getStatus(), "maxTokens 0");
        }
        FinLlmException bad = expectFinLlmException(() -> FinLlm.open(modelPath, new FinLlm.Options().nCtx(0)));
        requireEq(FinLlmException.FE_ERR_INVALID_ARG, bad.getStatus(), "nCtx 0");
    }

    static void concurrentCallsSerialized() throws Exception {
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            String prompt = llm.formatChat(SYSTEM, QUESTION);
            ExecutorService pool = Executors.newFixedThreadPool(3);
            try {
                List<Future<String>> fs = new ArrayList<>();
                for (int i = 0; i < 3; i++) fs.add(pool.submit(() -> llm.generate(prompt, 12, null).text));
                String first = fs.get(0).get(300, TimeUnit.SECONDS);
                for (Future<String> f : fs) requireEq(first, f.get(300, TimeUnit.SECONDS), "same greedy answer");
            } finally {
                pool.shutdownNow();
            }
        }
    }

    static void releaseTwiceAndUseAfterRelease() throws Exception {
        FinLlm llm = FinLlm.open(modelPath, OPTS);
        String prompt = llm.formatChat(SYSTEM, QUESTION);
        llm.release();
        require(llm.isReleased(), "isReleased");
        llm.release();  // second release: no-op
        llm.close();    // and via AutoCloseable
        llm.cancel();   // no-op after release
        FinLlmException e = expectFinLlmException(() -> llm.generate(prompt, 8, null));
        System.out.println("  " + e.getMessage());
        requireEq(FinLlmException.FE_ERR_INVALID_ARG, e.getStatus(), "status");
        require(e.getMessage().contains("released"), e.getMessage());
        expectFinLlmException(llm::profile);
        expectFinLlmException(llm::modelInfo);
        expectFinLlmException(() -> llm.tokenize("x", false, false));
        expectFinLlmException(() -> llm.formatChat(null, "x"));
    }

    static void grammarAndJsonSchema() throws Exception {
        String schema = "{\"type\":\"object\",\"properties\":{\"revenue\":{\"type\":\"number\"},"
                + "\"currency\":{\"enum\":[\"USD\",\"EUR\"]}},\"required\":[\"revenue\",\"currency\"]}";
        String grammar = FinLlm.jsonSchemaToGrammar(schema);
        require(grammar.contains("root ::="), "the core's grammar of the schema: " + grammar);
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            FinLlm.Result r = llm.chatJson(SYSTEM, "Revenue was 120 million dollars. Give it as JSON.", schema, 96, null);
            requireEq(FinLlm.StopReason.EOS, r.stopReason, "a complete JSON object ends the answer");
            String t = r.text.replaceAll("\\s", "");
            require(t.matches("\\{\"revenue\":-?[0-9][0-9.eE+-]*,\"currency\":\"(USD|EUR)\"\\}"), "JSON of the schema: " + r.text);
            FinLlm.Result yn = llm.generate(llm.formatChat(SYSTEM, "Is cash an asset?"), 8, null, null,
                    "root ::= \"yes\" | \"no\"", null);
            require(yn.text.equals("yes") || yn.text.equals("no"), "grammar answer: " + yn.text);
            requireEq(FinLlm.StopReason.EOS, yn.stopReason, "stop reason");
            FinLlmException bad = expectFinLlmException(() -> llm.generate("x", 8, null, null, "root ::= (", null));
            requireEq(FinLlmException.FE_ERR_INVALID_ARG, bad.getStatus(), "invalid GBNF status");
            require(bad.getMessage().contains("grammar"), "message: " + bad.getMessage());
            StringBuilder deep = new StringBuilder();
            for (int i = 0; i < 40; i++) deep.append("{\"type\":\"array\",\"items\":");
            deep.append("{}");
            for (int i = 0; i < 40; i++) deep.append("}");
            FinLlmException nested = expectFinLlmException(() -> llm.chatJson(null, "x", deep.toString(), 8, null));
            requireEq(FinLlmException.FE_ERR_INVALID_ARG, nested.getStatus(), "deep schema status");
            require(nested.getMessage().contains("nests deeper"), "message: " + nested.getMessage());
            FinLlmException both = expectFinLlmException(() -> llm.generate("x", 8, null, null, "root ::= \"a\"", schema));
            requireEq(FinLlmException.FE_ERR_INVALID_ARG, both.getStatus(), "grammar and schema status");
        }
    }

    static void prefixReuseAndSavedState() throws Exception {
        File dir = java.nio.file.Files.createTempDirectory("festate").toFile();
        File state = new File(dir, "system.festate");
        File bad = new File(dir, "bad.festate");
        String reference;
        int nState;
        try (FinLlm fresh = FinLlm.open(modelPath, new FinLlm.Options().nCtx(512).nThreads(2).prefixReuse(false))) {
            String prompt = fresh.formatChat(SYSTEM, QUESTION);
            reference = fresh.generate(prompt, 16, null).text;
            requireEq(0, fresh.profile().nPromptReused, "no reuse when prefixReuse(false)");
        }
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            String prompt = llm.formatChat(SYSTEM, QUESTION);
            requireEq(reference, llm.generate(prompt, 16, null).text, "first request");
            FinLlm.Result again = llm.generate(prompt, 16, null);
            requireEq(reference, again.text, "same answer with the prompt reused");
            requireEq(again.nPrompt - 2, llm.profile().nPromptReused, "all but the last 2 prompt tokens reused");
            // settle: the answer is evaluated again as prompt rows, so a next turn that repeats it reuses it
            FinLlm.Result first = llm.generate(prompt, 16, null);
            int settled = llm.settle();
            require(settled >= first.tokens.length - 1 && settled > 0, "settled the answer: " + settled);
            requireEq(0, llm.settle(), "nothing left to settle");
            String next = prompt + first.text + "<|im_end|>\n<|im_start|>user\nAnd its yield?<|im_end|>\n<|im_start|>assistant\n";
            String nextAnswer = llm.generate(next, 8, null).text;
            require(llm.profile().nPromptReused >= first.nPrompt + first.tokens.length - 2,
                    "the settled answer was reused: " + llm.profile().nPromptReused);
            try (FinLlm noReuse = FinLlm.open(modelPath, new FinLlm.Options().nCtx(512).nThreads(2).prefixReuse(false))) {
                requireEq(noReuse.generate(next, 8, null).text, nextAnswer, "same answer after settle as without reuse");
            }
            String systemPart = llm.formatChat(new String[] {"system"}, new String[] {SYSTEM}, false);
            nState = llm.saveState(state.getPath(), systemPart);
            require(nState > 5 && state.length() > 1000, "state saved: " + nState + " tokens");
            // the model's hash (the state file's tag) is in the index for the next launch
            String index = new String(java.nio.file.Files.readAllBytes(new File(hashIndexDir, "sha256-index.txt").toPath()),
                    StandardCharsets.UTF_8);
            require(index.startsWith("finllm-edge sha256-index 1\n")
                    && index.contains(" " + new File(modelPath).getCanonicalPath() + "\n"), "model in the hash index: " + index);
        }
        try (FinLlm llm = FinLlm.open(modelPath, OPTS)) {
            requireEq(nState, llm.loadState(state.getPath()), "tokens loaded");
            String prompt = llm.formatChat(SYSTEM, QUESTION);
            requireEq(reference, llm.generate(prompt, 16, null).text, "same answer after loadState");
            requireEq(nState, llm.profile().nPromptReused, "the loaded prefix was reused");
            byte[] all = java.nio.file.Files.readAllBytes(state.toPath());
            try (FileOutputStream out = new FileOutputStream(bad)) {
                out.write(all, 0, all.length / 2);
            }
            FinLlmException e = expectFinLlmException(() -> llm.loadState(bad.getPath()));
            requireEq(FinLlmException.FE_ERR_BAD_MODEL, e.getStatus(), "truncated state refused");
            require(e.getMessage().contains("refused"), "message: " + e.getMessage());
            e = expectFinLlmException(() -> llm.loadState(new File(dir, "none.festate").getPath()));
            requireEq(FinLlmException.FE_ERR_FILE_NOT_FOUND, e.getStatus(), "missing state file");
            requireEq(reference, llm.generate(prompt, 16, null).text, "still the same answer after a refused file");
            // a declared model sha256 (Options.modelSha256) is what a state file is checked against
            String declared = "ab".repeat(32);
            try (FinLlm other = FinLlm.open(modelPath, new FinLlm.Options().nCtx(512).nThreads(2).modelSha256(declared))) {
                FinLlmException d = expectFinLlmException(() -> other.loadState(state.getPath()));
                require(d.getMessage().contains("another model"), "declared hash checked: " + d.getMessage());
                int n = other.saveState(bad.getPath(), "What is a bond coupon?");
                requireEq(n, other.loadState(bad.getPath()), "a state made under the declared hash loads");
            }
            e = expectFinLlmException(() -> FinLlm.open(modelPath, new FinLlm.Options().nCtx(64).modelSha256("xyz")));
            requireEq(FinLlmException.FE_ERR_INVALID_ARG, e.getStatus(), "malformed modelSha256 refused");
        } finally {
            state.delete();
            bad.delete();
            dir.delete();
        }
    }

    static void releaseDuringGeneration() throws Exception {
        FinLlm llm = FinLlm.open(modelPath, OPTS);
        String prompt = llm.formatChat(SYSTEM, "Explain in detail how bond prices react to interest rate changes.");
        CountDownLatch generating = new CountDownLatch(1);
        AtomicReference<Object> outcome = new AtomicReference<>();
        Thread worker = new Thread(() -> {
            try {
                outcome.set(llm.generate(prompt, 400, piece -> {
                    generating.countDown();
                    return true;
                }));
            } catch (Throwable t) {
                outcome.set(t);
            }
        }, "generator");
        worker.start();
        require(generating.await(120, TimeUnit.SECONDS), "generation started");
        llm.release();  // cancels, waits for the generation to return, then frees
        require(llm.isReleased(), "released");
        worker.join(120_000);
        require(!worker.isAlive(), "worker finished");
        Object o = outcome.get();
        require(o instanceof FinLlm.Result, "generation returned normally: " + o);
        FinLlm.Result r = (FinLlm.Result) o;
        require(r.stopReason == FinLlm.StopReason.CANCELLED || r.stopReason == FinLlm.StopReason.EOS,
                "stopped by the release (or ended first): " + r.stopReason);
        require(r.nGenerated < 400, "did not run to maxTokens");
        expectFinLlmException(() -> llm.generate(prompt, 4, null));
    }

    private FinLlmTest() {}

    static {
        // Keep the JVM's default charset out of the picture when printing answers.
        try {
            System.setOut(new java.io.PrintStream(new FileOutputStream(java.io.FileDescriptor.out), true, "UTF-8"));
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    /**
     * FinLlmTest --drift REF STREAM MODEL PROMPTS [BAD_REF...] (tests/test_drift.py): the stand-alone
     * DriftMonitor on STREAM (one request of token ids per line) prints "S kl state"; a FinLlm session
     * with enableDrift(REF) generating one token for each line of PROMPTS prints "G kl state nTokens";
     * each BAD_REF must throw FinLlmException(FE_ERR_BAD_MODEL) from DriftMonitor.open and enableDrift.
     */
    static void drift(String[] args) throws Exception {
        String ref = args[1];
        try (DriftMonitor m = DriftMonitor.open(ref)) {
            for (String line : java.nio.file.Files.readAllLines(new File(args[2]).toPath(), StandardCharsets.UTF_8)) {
                String t = line.trim();
                String[] parts = t.isEmpty() ? new String[0] : t.split(" ");
                int[] ids = new int[parts.length];
                for (int i = 0; i < parts.length; i++) ids[i] = Integer.parseInt(parts[i]);
                DriftStatus s = m.observe(ids);
                System.out.println("S " + s.kl + " " + s.state.name().toLowerCase(java.util.Locale.ROOT));
            }
        }
        try (FinLlm llm = FinLlm.open(args[3], OPTS)) {
            llm.enableDrift(ref);
            for (String prompt : java.nio.file.Files.readAllLines(new File(args[4]).toPath(), StandardCharsets.UTF_8)) {
                llm.generate(prompt, 1, null);
                DriftStatus s = llm.driftStatus();
                System.out.println("G " + s.kl + " " + s.state.name().toLowerCase(java.util.Locale.ROOT) + " " + s.nTokens);
            }
            System.out.println("JSON " + llm.driftStateJson().replace("\n", " "));
        }
        // the scheduler's monitor counts the same prompts as the session's: "Q kl state nTokens"
        try (FinLlmScheduler sch = FinLlmScheduler.open(args[3], 2, 512, 1, 1e6, 8)) {
            FinLlmException none = expectFinLlmException(() -> sch.driftStatus());
            requireEq(FinLlmException.FE_ERR_INVALID_ARG, none.getStatus(), "driftStatus before enableDrift");
            sch.enableDrift(ref);
            for (String prompt : java.nio.file.Files.readAllLines(new File(args[4]).toPath(), StandardCharsets.UTF_8)) {
                try (FinLlmScheduler.Request r = sch.submit(prompt, 1, -1f, -1, null)) {
                    while (!r.next().done) { }
                }
                DriftStatus s = sch.driftStatus();
                System.out.println("Q " + s.kl + " " + s.state.name().toLowerCase(java.util.Locale.ROOT) + " " + s.nTokens);
            }
            System.out.println("QJSON " + sch.driftStateJson().replace("\n", " "));
            for (int i = 5; i < args.length; i++) {
                final String bad = args[i];
                check("sched_drift_hostile " + new File(bad).getName(), () -> {
                    FinLlmException e = expectFinLlmException(() -> sch.enableDrift(bad));
                    requireEq(FinLlmException.FE_ERR_BAD_MODEL, e.getStatus(), "FinLlmScheduler.enableDrift status");
                    sch.driftStatus();  // the attached monitor stays
                });
            }
        }
        try (FinLlm llm = FinLlm.open(args[3], OPTS)) {
            for (int i = 5; i < args.length; i++) {
                final String bad = args[i];
                check("drift_hostile " + new File(bad).getName(), () -> {
                    FinLlmException e = expectFinLlmException(() -> DriftMonitor.open(bad));
                    requireEq(FinLlmException.FE_ERR_BAD_MODEL, e.getStatus(), "DriftMonitor.open status");
                    FinLlmException e2 = expectFinLlmException(() -> llm.enableDrift(bad));
                    requireEq(FinLlmException.FE_ERR_BAD_MODEL, e2.getStatus(), "enableDrift status");
                });
            }
        }
        System.out.println(failures == 0 ? "ALL PASSED" : failures + " FAILED");
        System.exit(failures);
    }
}

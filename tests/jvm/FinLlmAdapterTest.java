import io.finllm.edge.FinLlm;
import io.finllm.edge.FinLlmException;

import java.util.Arrays;

/**
 * Desktop-JVM test of FinLlm's runtime LoRA adapters (loadAdapter / setAdapters) over the JNI
 * bridge. Run by tests/test_jni_adapters.py:
 *
 *   java -cp out FinLlmAdapterTest model.gguf a.gguf b.gguf other-arch.gguf
 *
 * Prints "PASS <name>" / "FAIL <name>: why", "TOKENS <set> <ids>" for the Python side to compare
 * with finllm_edge.Engine, and exits with the number of failures.
 */
public final class FinLlmAdapterTest {
    static final String PROMPT = "The debt-to-equity ratio of a bank measures";
    static int failures = 0;

    interface Check {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: FinLlmAdapterTest <model.gguf> <a.gguf> <b.gguf> <other-arch.gguf>");
            System.exit(2);
        }
        final String model = args[0], a = args[1], b = args[2], foreign = args[3];
        try (FinLlm llm = FinLlm.open(model, new FinLlm.Options().nCtx(512).nThreads(1))) {
            check("load_swap_and_clear", () -> {
                int ia = llm.loadAdapter(a), ib = llm.loadAdapter(b);
                requireEq(0, ia, "first adapter id");
                requireEq(1, ib, "second adapter id");
                int[] base = tokens(llm);
                llm.setAdapters(new int[] {ia}, new float[] {1f});
                int[] withA = tokens(llm);
                llm.setAdapters(new int[] {ib}, new float[] {1f});
                int[] withB = tokens(llm);
                llm.setAdapters(new int[0], new float[0]);
                int[] again = tokens(llm);
                require(!Arrays.equals(base, withA), "adapter a changes the output");
                require(Arrays.equals(base, again), "no adapter after a swap gives the base output again");
                print("none", base);
                print("a", withA);
                print("b", withB);
            });
            check("swap_empties_the_prefix_cache", () -> {
                llm.setAdapters(new int[] {0}, new float[] {1f});
                llm.generate(PROMPT, 4, null);
                llm.generate(PROMPT + " its leverage", 4, null);
                require(llm.profile().nPromptReused > 0, "the same set reuses the prefix");
                llm.setAdapters(new int[] {1}, new float[] {1f});
                llm.generate(PROMPT + " its leverage", 4, null);
                requireEq(0, llm.profile().nPromptReused, "prompt tokens reused after a swap");
                llm.setAdapters(new int[0], new float[0]);
            });
            check("bad_sets_throw", () -> {
                FinLlmException e = expect(() -> llm.setAdapters(new int[] {7}, new float[] {1f}));
                requireEq(FinLlmException.FE_ERR_INVALID_ARG, e.getStatus(), "unknown id");
                e = expect(() -> llm.setAdapters(new int[] {0}, new float[] {Float.NaN}));
                requireEq(FinLlmException.FE_ERR_INVALID_ARG, e.getStatus(), "NaN scale");
                require(e.getMessage().contains("scale"), e.getMessage());
                e = expect(() -> llm.setAdapters(new int[] {0, 0}, new float[] {1f, 1f}));
                requireEq(FinLlmException.FE_ERR_INVALID_ARG, e.getStatus(), "duplicate");
                e = expect(() -> llm.setAdapters(new int[] {0}, new float[0]));
                requireEq(FinLlmException.FE_ERR_INVALID_ARG, e.getStatus(), "length mismatch");
            });
            check("hostile_adapter_files_throw", () -> {
                FinLlmException e = expect(() -> llm.loadAdapter(foreign));
                requireEq(FinLlmException.FE_ERR_BAD_MODEL, e.getStatus(), "other architecture");
                require(e.getMessage().contains("architecture"), e.getMessage());
                e = expect(() -> llm.loadAdapter(model));
                requireEq(FinLlmException.FE_ERR_BAD_MODEL, e.getStatus(), "a model file as adapter");
                require(e.getMessage().contains("general.type"), e.getMessage());
                e = expect(() -> llm.loadAdapter(model + ".missing"));
                requireEq(FinLlmException.FE_ERR_FILE_NOT_FOUND, e.getStatus(), "missing file");
            });
        }
        System.out.println(failures == 0 ? "ALL PASSED" : failures + " FAILED");
        System.exit(failures);
    }

    static int[] tokens(FinLlm llm) {
        return llm.generate(PROMPT, 16, null).tokens;
    }

    static void print(String name, int[] t) {
        StringBuilder sb = new StringBuilder("TOKENS ").append(name).append(' ');
        for (int i = 0; i < t.length; i++) sb.append(i == 0 ? "" : ",").append(t[i]);
        System.out.println(sb);
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

    static FinLlmException expect(Check c) throws Exception {
        try {
            c.run();
        } catch (FinLlmException e) {
            return e;
        }
        throw new AssertionError("no FinLlmException thrown");
    }
}

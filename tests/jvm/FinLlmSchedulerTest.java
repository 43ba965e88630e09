import io.finllm.edge.FinLlmException;
import io.finllm.edge.FinLlmScheduler;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Desktop-JVM test of io.finllm.edge.FinLlmScheduler (the core's scheduler through JNI), on a real
 * GGUF model. Prints "PASS <name>" or "FAIL <name>: why"; the exit status is the number of
 * failures. Run by tests/test_jni_scheduler.py:
 *
 *   java -Djava.library.path=<dir of libfinllm_jni.so> -cp out FinLlmSchedulerTest <model.gguf>
 */
public final class FinLlmSchedulerTest {
    static String modelPath;
    static int failures = 0;

    interface Check {
        void run() throws Exception;
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

    static void expect(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static final class Out {
        final StringBuilder text = new StringBuilder();
        final List<Integer> tokens = new ArrayList<>();
        String finishReason;
    }

    static Out readAll(FinLlmScheduler.Request r, int cancelAfter) {
        Out o = new Out();
        for (;;) {
            FinLlmScheduler.Event e = r.next();
            o.text.append(e.text);
            if (e.token >= 0) o.tokens.add(e.token);
            if (cancelAfter > 0 && o.tokens.size() == cancelAfter) r.cancel();
            if (e.done) {
                o.finishReason = e.finishReason;
                return o;
            }
        }
    }

    static final String[] PROMPTS = {
        "The bond's coupon is", "Explain what EBITDA measures.", "List three risks of long-dated bonds:",
        "Q: What is a stock split?\nA:",
    };
    static final int[] MAX = {20, 12, 24, 16};

    static FinLlmScheduler.Request submit(FinLlmScheduler s, int i) {
        boolean sampled = i % 2 == 1;
        return s.submit(PROMPTS[i], MAX[i], sampled ? 0.8f : -1f, sampled ? 77 : -1, null);
    }

    public static void main(String[] args) throws Exception {
        modelPath = args[0];
        check("concurrent_requests_equal_solo_and_cancel", () -> {
            try (FinLlmScheduler s = FinLlmScheduler.open(modelPath, 4, 256, 1, 1e6, 16)) {
                Out[] solo = new Out[PROMPTS.length];
                for (int i = 0; i < PROMPTS.length; i++) {
                    try (FinLlmScheduler.Request r = submit(s, i)) {
                        solo[i] = readAll(r, 0);
                        int[] usage = r.usage();
                        expect(usage[1] == solo[i].tokens.size(), "usage counts the generated tokens");
                        expect(usage[0] > 0, "usage counts the prompt");
                    }
                }
                FinLlmScheduler.Request[] rs = new FinLlmScheduler.Request[PROMPTS.length];
                Out[] conc = new Out[PROMPTS.length];
                for (int i = 0; i < PROMPTS.length; i++) rs[i] = submit(s, i);
                Thread[] th = new Thread[PROMPTS.length];
                for (int i = 0; i < PROMPTS.length; i++) {
                    final int k = i;
                    th[i] = new Thread(() -> conc[k] = readAll(rs[k], k == 2 ? 4 : 0));
                    th[i].start();
                }
                for (Thread t : th) t.join(600_000);
                for (int i = 0; i < PROMPTS.length; i++) {
                    rs[i].close();
                    expect(conc[i] != null, "request " + i + " was read");
                    if (i == 2) {
                        expect("cancelled".equals(conc[i].finishReason), "the cancelled request says so");
                        expect(conc[i].tokens.equals(solo[i].tokens.subList(0, conc[i].tokens.size())),
                               "a cancelled request's tokens are a prefix of its solo run");
                    } else {
                        expect(conc[i].tokens.equals(solo[i].tokens), "request " + i + " tokens equal its solo run: "
                               + conc[i].tokens + " vs " + solo[i].tokens);
                        expect(conc[i].text.toString().equals(solo[i].text.toString()), "same text");
                        expect(conc[i].finishReason.equals(solo[i].finishReason), "same finish reason");
                    }
                }
                String stats = s.statsJson();
                expect(stats.contains("\"cancelled\": 1") && stats.contains("\"batch_size\""), stats);
            }
        });
        check("reuse_generated_keeps_the_answer", () -> {
            long[] reused = new long[2];
            for (int k = 0; k < 2; k++) {
                try (FinLlmScheduler s = FinLlmScheduler.open(modelPath, 2, 512, 1, 1e6, 4, false, k == 1)) {
                    String first;
                    try (FinLlmScheduler.Request r = s.submit(PROMPTS[0], 16, -1f, -1, null)) {
                        first = readAll(r, 0).text.toString();
                    }
                    // the next turn sends the answer back: with reuseGenerated its K/V is reused too
                    try (FinLlmScheduler.Request r = s.submit(PROMPTS[0] + first + "\nQ: Why?\nA:", 4, -1f, -1, null)) {
                        readAll(r, 0);
                    }
                    String stats = s.statsJson();
                    int at = stats.indexOf("\"prompt_tokens_reused\": ");
                    expect(at >= 0, stats);
                    reused[k] = Long.parseLong(stats.substring(at + 24).split("[,}]")[0].trim());
                }
            }
            expect(reused[1] > reused[0] + 5, "the answer's tokens were reused: " + reused[1] + " vs " + reused[0]);
        });
        check("queue_full_throws_busy_and_bad_params_throw", () -> {
            try {
                FinLlmScheduler.open(modelPath, 0, 256, 1, 150.0, 4).close();
                expect(false, "n_slots 0 accepted");
            } catch (FinLlmException e) {
                expect(e.getStatus() == FinLlmException.FE_ERR_INVALID_ARG && e.getMessage().contains("n_slots"),
                       e.getMessage());
            }
            try (FinLlmScheduler s = FinLlmScheduler.open(modelPath, 1, 128, 1, 150.0, 1)) {
                List<FinLlmScheduler.Request> ok = new ArrayList<>();
                int busy = 0;
                for (int i = 0; i < 5; i++) {
                    try {
                        ok.add(s.submit("Interest rates and", 100, -1f, -1, null));
                    } catch (FinLlmException e) {
                        expect(e.getStatus() == FinLlmException.FE_ERR_BUSY && e.getMessage().contains("queue is full"),
                               e.getMessage());
                        busy++;
                    }
                }
                expect(ok.size() <= 2 && busy == 5 - ok.size(), "1 slot + 1 queued at most: " + ok.size());
                try {
                    s.submit("word ".repeat(300), 4, -1f, -1, null);
                    expect(false, "an oversize prompt was accepted");
                } catch (FinLlmException e) {
                    expect(e.getStatus() == FinLlmException.FE_ERR_CONTEXT_OVERFLOW, e.getMessage());
                }
                for (FinLlmScheduler.Request r : ok) r.close();
            }
        });
        check("close_while_running_ends_requests", () -> {
            FinLlmScheduler s = FinLlmScheduler.open(modelPath, 2, 256, 1, 150.0, 8);
            FinLlmScheduler.Request a = s.submit(PROMPTS[0], 200, -1f, -1, new String[] {"never-appears"});
            FinLlmScheduler.Request b = s.submit(PROMPTS[1], 200, -1f, -1, null);
            a.next();
            s.close();
            s.close();
            Out oa = readAll(a, 0), ob = readAll(b, 0);
            expect("cancelled".equals(oa.finishReason) || "stop".equals(oa.finishReason), oa.finishReason);
            expect(ob.finishReason != null, "b ended");
            try {
                a.next();
                expect(false, "next after the last event");
            } catch (FinLlmException e) {
                expect(e.getMessage().contains("ended"), e.getMessage());
            }
            a.close();
            b.close();
            a.close();
            try {
                s.submit("x", 1, -1f, -1, null);
                expect(false, "submit after close");
            } catch (FinLlmException e) {
                expect(e.getMessage().contains("closed"), e.getMessage());
            }
        });
        System.out.println(failures == 0 ? "ALL PASSED" : failures + " FAILED");
        System.out.println(Arrays.toString(new int[] {failures}));
        System.exit(failures);
    }
}

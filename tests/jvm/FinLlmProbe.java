import io.finllm.edge.FinLlm;

/**
 * One request through the JNI class, printed for the differential test (tests/test_differential.py):
 *   java FinLlmProbe MODEL greedy|sampled PROMPT N
 * prints "TOKENS id,id,..." and "CHAT <hex of the UTF-8 bytes of formatChat(null, PROMPT)>".
 */
public final class FinLlmProbe {
    public static void main(String[] args) throws Exception {
        String model = args[0], mode = args[1], prompt = args[2];
        int n = Integer.parseInt(args[3]);
        FinLlm.Options o = new FinLlm.Options().nThreads(1).nCtx(512);
        if (mode.equals("sampled")) {
            o.temperature(0.8f).topK(40).topP(0.9f).repeatPenalty(1.1f).seed(1234);
        }
        try (FinLlm llm = FinLlm.open(model, o)) {
            FinLlm.Result r = llm.generate(prompt, n, piece -> true);
            StringBuilder sb = new StringBuilder();
            for (int i = 0; i < r.tokens.length; i++) sb.append(i == 0 ? "" : ",").append(r.tokens[i]);
            System.out.println("TOKENS " + sb);
            StringBuilder hex = new StringBuilder();
            for (byte b : llm.formatChat(null, prompt).getBytes(java.nio.charset.StandardCharsets.UTF_8)) {
                hex.append(String.format("%02x", b & 0xff));
            }
            System.out.println("CHAT " + hex);
        }
    }
}

package io.finllm.edge;

/**
 * A stand-alone drift monitor on a token stream: the same core code a {@link FinLlm} session
 * runs after {@link FinLlm#enableDrift}, for apps that count prompts tokenized elsewhere (and
 * for checking that every binding computes the same KL). Keeps bucket counts only.
 *
 * <pre>{@code
 * try (DriftMonitor m = DriftMonitor.open("/data/.../drift-ref.fedrift")) {
 *     DriftStatus s = m.observe(llm.tokenize(question, false, false));
 *     if (s.state == DriftStatus.State.DRIFT) { ... }
 * }
 * }</pre>
 * Calls are serialized on this object; {@link #close()} is idempotent.
 */
public final class DriftMonitor implements AutoCloseable {
    private long handle;

    private DriftMonitor(long handle) {
        this.handle = handle;
    }

    /**
     * Loads a drift reference (written by {@code finllm-edge convert}) and starts an empty monitor.
     *
     * @throws FinLlmException FE_ERR_BAD_MODEL when the file is refused (truncated, altered, foreign),
     *     FE_ERR_FILE_NOT_FOUND when it is missing
     */
    public static DriftMonitor open(String referencePath) {
        FinLlm.loadLibrary();
        return new DriftMonitor(nativeOpen(referencePath));
    }

    private long live(String what) {
        if (handle == 0) {
            throw new FinLlmException(FinLlmException.FE_ERR_INVALID_ARG, "FE_ERR_INVALID_ARG",
                    "DriftMonitor." + what + ": the monitor is closed");
        }
        return handle;
    }

    /** Counts one request's prompt tokens, then evaluates the KL and the state. */
    public synchronized DriftStatus observe(int[] tokens) {
        return new DriftStatus(nativeObserve(live("observe"), tokens));
    }

    public synchronized DriftStatus status() {
        return new DriftStatus(nativeStatus(live("status")));
    }

    /** The monitor's state as JSON, for {@code finllm-edge drift report}. */
    public synchronized String stateJson() {
        return nativeStateJson(live("stateJson"));
    }

    @Override
    public synchronized void close() {
        long h = handle;
        handle = 0;
        nativeFree(h);
    }

    private static native long nativeOpen(String referencePath);
    private static native void nativeFree(long handle);
    private static native double[] nativeObserve(long handle, int[] tokens);
    private static native double[] nativeStatus(long handle);
    private static native String nativeStateJson(long handle);
}

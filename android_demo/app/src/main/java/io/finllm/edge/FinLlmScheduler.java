package io.finllm.edge;

import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * Several requests at once on one model: the core's scheduler (fe_scheduler, "concurrent
 * requests" in finllm_edge.h) decodes the next token of every running request in one batch,
 * admits queued requests while the measured p99 inter-token latency stays under a bound, and
 * refuses submissions when its queue is full ({@link FinLlmException#FE_ERR_BUSY}). A request
 * gives the same tokens as when it runs alone (greedy and seeded).
 *
 * <pre>
 * FinLlm.loadLibrary();
 * try (FinLlmScheduler s = FinLlmScheduler.open(path, 4, 2048, 0, 150.0, 64)) {
 *     FinLlmScheduler.Request r = s.submit(prompt, 128, -1f, -1, null);   // any thread
 *     for (FinLlmScheduler.Event e = r.next(); ; e = r.next()) {          // blocks per token
 *         System.out.print(e.text);
 *         if (e.done) { System.out.println(" [" + e.finishReason + "]"); break; }
 *     }
 *     r.close();
 * }
 * </pre>
 *
 * <p>Every method may be called from any thread. {@link #close()} ends the running and queued
 * requests: their {@link Request#next()} then returns a last event with finishReason
 * "cancelled".
 */
public final class FinLlmScheduler implements AutoCloseable {
    /** One step of a request: text that became final (valid UTF-8, may be empty), the token. */
    public static final class Event {
        public final String text;
        public final int token;          // -1 when none (e.g. end of turn)
        public final boolean done;
        public final String finishReason; // "stop" | "length" | "cancelled" when done, else null

        Event(String text, int token, boolean done, String finishReason) {
            this.text = text;
            this.token = token;
            this.done = done;
            this.finishReason = finishReason;
        }
    }

    /** A submitted request. next() from one thread at a time; cancel() from any thread. */
    public static final class Request implements AutoCloseable {
        private final Object nextLock = new Object();
        private final Object handleLock = new Object();
        private long handle;

        Request(long handle) {
            this.handle = handle;
        }

        /** The next event, waiting for the decode thread. After the last one: FinLlmException. */
        public Event next() {
            synchronized (nextLock) {
                long h;
                synchronized (handleLock) {
                    h = handle;
                }
                if (h == 0) throw new FinLlmException(FinLlmException.FE_ERR_INVALID_ARG, "FE_ERR_INVALID_ARG",
                                                      "FinLlmScheduler.Request.next: the request was closed");
                Object[] r = nativeNext(h);
                int[] info = (int[]) r[1];
                Event e = new Event((String) r[0], info[0], info[1] != 0, (String) r[2]);
                return e;
            }
        }

        /** Stops the request at the next step (queued or running); the others are untouched. */
        public void cancel() {
            synchronized (handleLock) {
                if (handle != 0) nativeCancel(handle);
            }
        }

        /** {prompt tokens, generated tokens} once the request has ended. */
        public int[] usage() {
            synchronized (handleLock) {
                if (handle == 0) throw new FinLlmException(FinLlmException.FE_ERR_INVALID_ARG, "FE_ERR_INVALID_ARG",
                                                           "FinLlmScheduler.Request.usage: the request was closed");
                return nativeUsage(handle);
            }
        }

        /** Cancels the request if it still runs and frees it. Idempotent. */
        @Override
        public void close() {
            cancel();
            synchronized (nextLock) {  // a next() in progress returns once the cancel lands
                synchronized (handleLock) {
                    if (handle != 0) nativeRequestFree(handle);
                    handle = 0;
                }
            }
        }
    }

    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private long handle;

    private FinLlmScheduler(long handle) {
        this.handle = handle;
    }

    /**
     * Loads the model and starts the scheduler. nThreads &lt;= 0: the performance cores;
     * nCtx is per request; p99TokenMs bounds the p99 inter-token latency the batch size keeps;
     * maxQueued bounds the requests waiting for a slot. Out-of-range values throw
     * FinLlmException(FE_ERR_INVALID_ARG) naming the field.
     */
    public static FinLlmScheduler open(String modelPath, int nSlots, int nCtx, int nThreads, double p99TokenMs,
                                       int maxQueued) {
        return open(modelPath, nSlots, nCtx, nThreads, p99TokenMs, maxQueued, false);
    }

    /**
     * As above, with llama.cpp's flash attention on or off (fe_scheduler_params.flash_attn): on decodes
     * faster; a request then gives a session-with-flash-attention's tokens up to 256 cells of context
     * (at any length with one thread), see finllm_edge.h.
     */
    public static FinLlmScheduler open(String modelPath, int nSlots, int nCtx, int nThreads, double p99TokenMs,
                                       int maxQueued, boolean flashAttn) {
        return open(modelPath, nSlots, nCtx, nThreads, p99TokenMs, maxQueued, flashAttn, false);
    }

    /**
     * As above; reuseGenerated (fe_scheduler_params.reuse_generated): a slot also keeps its
     * answer's K/V, so a chat that sends the model's answers back evaluates only the new message
     * (tokens then match a session with FinLlm.Options.reuseGenerated, not one without reuse).
     */
    public static FinLlmScheduler open(String modelPath, int nSlots, int nCtx, int nThreads, double p99TokenMs,
                                       int maxQueued, boolean flashAttn, boolean reuseGenerated) {
        FinLlm.loadLibrary();
        return new FinLlmScheduler(nativeOpen(modelPath, nSlots, nCtx, nThreads, p99TokenMs, maxQueued, flashAttn,
                reuseGenerated));
    }

    /**
     * Queues a request. temperature &lt; 0: greedy (the core's default); seed -1: random;
     * stop may be null. A full queue throws FinLlmException(FE_ERR_BUSY); a prompt over
     * nCtx FE_ERR_CONTEXT_OVERFLOW.
     */
    public Request submit(String prompt, int maxTokens, float temperature, int seed, String[] stop) {
        return locked(h -> new Request(nativeSubmit(h, prompt, maxTokens, temperature, seed, stop)));
    }

    /** The scheduler now as JSON (queued, active, batch_size, tokens_per_s, token_ms_p99, ...). */
    public String statsJson() {
        return locked(FinLlmScheduler::nativeStats);
    }

    /**
     * Monitors what this scheduler's requests ask against a drift reference (made by {@code
     * finllm-edge convert --drift-ref}), as {@link FinLlm#enableDrift} does for a session: each
     * request is counted when it is submitted. May be called while requests run; null detaches.
     *
     * @throws FinLlmException FE_ERR_BAD_MODEL when the file is refused (made for another
     *     tokenizer, truncated, altered; the attached monitor stays), FE_ERR_FILE_NOT_FOUND when missing
     */
    public void enableDrift(String referencePath) {
        // the write lock: a driftStatus()/driftStateJson() on another thread may be using the
        // monitor this call replaces and frees
        lock.writeLock().lock();
        try {
            nativeEnableDrift(handle, referencePath);
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** The drift state after the requests submitted so far (needs {@link #enableDrift}); any thread. */
    public DriftStatus driftStatus() {
        return locked(h -> new DriftStatus(nativeDriftStatus(h)));
    }

    /** The drift monitor's state as JSON: save it for {@code finllm-edge drift report}. */
    public String driftStateJson() {
        return locked(FinLlmScheduler::nativeDriftStateJson);
    }

    /** Runs a native call on the handle while close() cannot free it (a closed one is 0: the core says so). */
    private <T> T locked(java.util.function.LongFunction<T> call) {
        lock.readLock().lock();
        try {
            return call.apply(handle);
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Ends every request ('cancelled'), frees the scheduler and the model. Idempotent. */
    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            if (handle != 0) nativeFree(handle);
            handle = 0;
        } finally {
            lock.writeLock().unlock();
        }
    }

    private static native long nativeOpen(String modelPath, int nSlots, int nCtx, int nThreads, double p99TokenMs,
                                          int maxQueued, boolean flashAttn, boolean reuseGenerated);
    private static native void nativeFree(long handle);
    private static native long nativeSubmit(long handle, String prompt, int maxTokens, float temperature, int seed,
                                            String[] stop);
    private static native Object[] nativeNext(long request);
    private static native void nativeCancel(long request);
    private static native void nativeRequestFree(long request);
    private static native int[] nativeUsage(long request);
    private static native String nativeStats(long handle);
    private static native void nativeEnableDrift(long handle, String referencePath);
    private static native double[] nativeDriftStatus(long handle);
    private static native String nativeDriftStateJson(long handle);
}

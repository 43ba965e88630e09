package io.finllm.edge;

import java.util.Locale;

/**
 * State of a drift monitor (finllm_edge.h fe_drift_status): how far the prompts of the last
 * {@link #windowTokens} tokens are from the text the model was tuned on, as KL divergence in
 * nats, against thresholds calibrated at convert time.
 */
public final class DriftStatus {
    /** NONE below the watch threshold (or before the window is full), WATCH, DRIFT. */
    public enum State { NONE, WATCH, DRIFT }

    public final State state;
    public final double kl;
    public final double watchThreshold;
    public final double driftThreshold;
    public final int windowTokens;
    public final int nWindow;
    public final long nRequests;
    public final long nTokens;
    public final long nEvaluations;
    public final long nWatch;
    public final long nDrift;
    /** Requests / tokens observed when DRIFT was first reached; -1 never. */
    public final long firstDriftRequest;
    public final long firstDriftTokens;

    DriftStatus(double[] v) {
        if (v == null || v.length != 13) {
            throw new FinLlmException(FinLlmException.FE_ERR_INTERNAL, "FE_ERR_INTERNAL",
                    "DriftStatus: malformed status from the native library");
        }
        int s = (int) v[0];
        state = s == 2 ? State.DRIFT : s == 1 ? State.WATCH : State.NONE;
        kl = v[1];
        watchThreshold = v[2];
        driftThreshold = v[3];
        windowTokens = (int) v[4];
        nWindow = (int) v[5];
        nRequests = (long) v[6];
        nTokens = (long) v[7];
        nEvaluations = (long) v[8];
        nWatch = (long) v[9];
        nDrift = (long) v[10];
        firstDriftRequest = (long) v[11];
        firstDriftTokens = (long) v[12];
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT,
                "{\"state\":\"%s\",\"kl\":%.17g,\"watch_threshold\":%.17g,\"drift_threshold\":%.17g,"
                        + "\"n_window\":%d,\"n_requests\":%d,\"n_tokens\":%d,\"n_evaluations\":%d,\"n_watch\":%d,"
                        + "\"n_drift\":%d,\"first_drift_request\":%d}",
                state.name().toLowerCase(Locale.ROOT), kl, watchThreshold, driftThreshold, nWindow, nRequests,
                nTokens, nEvaluations, nWatch, nDrift, firstDriftRequest);
    }
}

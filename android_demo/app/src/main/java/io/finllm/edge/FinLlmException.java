package io.finllm.edge;

/**
 * A failed finllm-edge call: the C API's {@code fe_status} code, its name and the text of
 * {@code fe_last_error()} on the thread that made the call.
 *
 * <p>Thrown by {@link FinLlm} for a missing or corrupt model file, a prompt that does not
 * fit the context, a released handle (status {@code FE_ERR_INVALID_ARG}), and so on. It is
 * unchecked, like {@link IllegalStateException}, so Kotlin and Java callers handle it
 * where they can do something about it.
 */
public class FinLlmException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** fe_status values of finllm_edge.h. */
    public static final int FE_ERR_INVALID_ARG = -1;
    public static final int FE_ERR_FILE_NOT_FOUND = -2;
    public static final int FE_ERR_BAD_MODEL = -3;
    public static final int FE_ERR_OUT_OF_MEMORY = -4;
    public static final int FE_ERR_CONTEXT_OVERFLOW = -5;
    public static final int FE_ERR_CANCELLED = -6;
    public static final int FE_ERR_DECODE = -7;
    public static final int FE_ERR_TEMPLATE = -8;
    public static final int FE_ERR_BUFFER_TOO_SMALL = -9;
    public static final int FE_ERR_INTERNAL = -10;
    public static final int FE_ERR_BUSY = -11;

    private final int status;
    private final String statusName;

    /** Called from native code (finllm_jni.cpp); keep the signature (ILjava/lang/String;Ljava/lang/String;)V. */
    public FinLlmException(int status, String statusName, String message) {
        super(statusName + ": " + message);
        this.status = status;
        this.statusName = statusName;
    }

    /** The fe_status code (negative). */
    public int getStatus() {
        return status;
    }

    /** The fe_status name, e.g. "FE_ERR_FILE_NOT_FOUND". */
    public String getStatusName() {
        return statusName;
    }
}

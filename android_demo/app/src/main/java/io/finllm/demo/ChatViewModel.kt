package io.finllm.demo

import android.app.Application
import android.os.SystemClock
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.LiveData
import androidx.lifecycle.MutableLiveData
import io.finllm.edge.FinLlm
import io.finllm.edge.FinLlmException
import java.io.File
import java.io.FileFilter
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/** What the screen shows. Immutable; the ViewModel publishes a new one on every change. */
data class ChatState(
    val models: List<File> = emptyList(),
    val modelDirs: List<File> = emptyList(),
    val loadedModel: String? = null,
    val status: String = "",
    val loading: Boolean = false,
    val generating: Boolean = false,
    val answer: String = "",
    val metrics: String = "",
    val profile: String? = null,
)

/**
 * Owns one FinLlm session. Every native call of that session (open, formatChat, generate,
 * profile, release) runs on [session], a single-thread executor, as the C API requires
 * ("one session per thread at a time"). Only [cancel] is called from the UI thread:
 * FinLlm.cancel() is the one call that is safe from any thread.
 */
class ChatViewModel(app: Application) : AndroidViewModel(app) {

    private val session: ExecutorService = Executors.newSingleThreadExecutor { r ->
        Thread(r, "finllm-session")
    }

    /** Touched only on the session thread. */
    private var llm: FinLlm? = null

    /** The same object, for cancel() from the UI thread. */
    @Volatile
    private var current: FinLlm? = null

    private val lock = Any()
    private var snapshot = ChatState()
    private val _state = MutableLiveData(snapshot)
    val state: LiveData<ChatState> = _state

    private fun update(change: (ChatState) -> ChatState) {
        synchronized(lock) {
            snapshot = change(snapshot)
            _state.postValue(snapshot)
        }
    }

    /** Where models are looked for: the app's external files dir (adb push target) and its internal files dir. */
    private fun modelDirs(): List<File> {
        val app = getApplication<Application>()
        return listOfNotNull(app.getExternalFilesDir(null), app.filesDir)
    }

    fun scanModels() {
        val dirs = modelDirs()
        val found = dirs.flatMap { dir ->
            dir.listFiles(FileFilter { f -> f.isFile && f.name.endsWith(".gguf", ignoreCase = true) })
                ?.toList().orEmpty()
        }.sortedBy { it.name }
        update { it.copy(models = found, modelDirs = dirs) }
    }

    fun load(file: File) {
        update { it.copy(loading = true, status = "Loading ${file.name}…", profile = null) }
        session.execute {
            try {
                current = null
                llm?.release()
                llm = null
                val lib = FinLlm.loadLibrary()
                // the model is hashed once, not per launch (its sha256 tags saved prompt state)
                FinLlm.setHashIndexDir(getApplication<Application>().cacheDir.path)
                val opened = FinLlm.open(
                    file.path,
                    FinLlm.Options().nCtx(N_CTX).nThreads(bigCoreCount()),
                )
                llm = opened
                current = opened
                val info = opened.modelInfo()
                val variant = FinLlm.buildVariant().ifEmpty { "host" }
                update {
                    it.copy(
                        loading = false,
                        loadedModel = file.name,
                        status = "lib$lib.so ($variant), ${bigCoreCount()} threads\n$info",
                    )
                }
            } catch (e: FinLlmException) {
                update { it.copy(loading = false, loadedModel = null, status = "Load failed: ${e.message}") }
            } catch (e: UnsatisfiedLinkError) {
                update { it.copy(loading = false, loadedModel = null, status = "Native library missing: ${e.message}") }
            }
        }
    }

    fun send(question: String) {
        if (current == null) {
            update { it.copy(status = "Load a model first.") }
            return
        }
        if (question.isBlank()) return
        val system = getApplication<Application>().getString(R.string.system_prompt)
        update { it.copy(generating = true, answer = "", metrics = "prefill…", profile = null) }
        session.execute {
            val s = llm
            if (s == null) {
                update { it.copy(generating = false, status = "Load a model first.") }
                return@execute
            }
            val text = StringBuilder()
            var tokens = 0
            var tFirst = 0L
            var lastPost = 0L
            try {
                val prompt = s.formatChat(system, question)
                val tStart = SystemClock.elapsedRealtimeNanos()
                val result = s.generate(prompt, MAX_TOKENS, null) { piece ->
                    val now = SystemClock.elapsedRealtimeNanos()
                    tokens++
                    if (tokens == 1) tFirst = now
                    text.append(piece)
                    // Publish at most every 50 ms; the UI thread renders the latest state.
                    if (tokens == 1 || now - lastPost > 50_000_000L) {
                        lastPost = now
                        val live = liveMetrics(tStart, tFirst, now, tokens)
                        val answer = text.toString()
                        update { it.copy(answer = answer, metrics = live) }
                    }
                    true
                }
                val p = s.profile()
                val summary = String.format(
                    Locale.ROOT, "TTFT %.0f ms · %.1f tok/s · %d tokens · %s",
                    p.ttftMs, p.decodeTokS, result.nGenerated, result.stopReason.name.lowercase(Locale.ROOT),
                )
                val profileText = "$p" + String.format(
                    Locale.ROOT, "%-14s %s%n%-14s %s%n%-14s %d",
                    "stop_reason", result.stopReason, "variant", FinLlm.buildVariant().ifEmpty { "host" },
                    "token_ms", p.tokenMs.size,
                )
                update { it.copy(generating = false, answer = result.text, metrics = summary, profile = profileText) }
            } catch (e: FinLlmException) {
                update { it.copy(generating = false, metrics = "", status = "Generation failed: ${e.message}") }
            }
        }
    }

    /** UI thread. Stops the answer being generated; it ends with stop reason CANCELLED. */
    fun cancel() {
        current?.cancel()
    }

    override fun onCleared() {
        current?.cancel()
        session.execute {
            current = null
            llm?.release()
            llm = null
        }
        session.shutdown()
    }

    private fun liveMetrics(tStart: Long, tFirst: Long, now: Long, tokens: Int): String {
        val ttftMs = (tFirst - tStart) / 1e6
        val decodeS = (now - tFirst) / 1e9
        val tokS = if (tokens > 1 && decodeS > 0) (tokens - 1) / decodeS else 0.0
        return String.format(Locale.ROOT, "TTFT %.0f ms · %.1f tok/s · %d tokens", ttftMs, tokS, tokens)
    }

    companion object {
        const val N_CTX = 2048
        const val MAX_TOKENS = 256

        /**
         * Decode threads: the "big" cores, i.e. those whose cpuinfo_max_freq is above the
         * slowest cluster's (4 on a Snapdragon 865: 1x A77 @ 2.84 GHz + 3x A77 @ 2.42 GHz;
         * its 4x A55 @ 1.8 GHz only slow decode down). Falls back to min(4, cores).
         */
        fun bigCoreCount(): Int {
            val cores = Runtime.getRuntime().availableProcessors()
            val freqs = (0 until cores).mapNotNull { i ->
                runCatching {
                    File("/sys/devices/system/cpu/cpu$i/cpufreq/cpuinfo_max_freq").readText().trim().toLong()
                }.getOrNull()
            }
            if (freqs.size == cores && freqs.isNotEmpty()) {
                val slowest = freqs.min()
                val big = freqs.count { it > slowest }
                if (big > 0) return big
            }
            return minOf(4, cores)
        }
    }
}

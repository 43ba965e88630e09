package io.finllm.demo

import android.os.Bundle
import android.view.View
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.viewModels

/** The chat screen. All model work happens in [ChatViewModel] on its session thread. */
class MainActivity : ComponentActivity() {

    private val vm: ChatViewModel by viewModels()
    private var profileVisible = false
    private var shownModels: List<String> = emptyList()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)

        val spinner = findViewById<Spinner>(R.id.model_spinner)
        val rescan = findViewById<Button>(R.id.rescan_button)
        val load = findViewById<Button>(R.id.load_button)
        val status = findViewById<TextView>(R.id.status_text)
        val prompt = findViewById<EditText>(R.id.prompt_input)
        val send = findViewById<Button>(R.id.send_button)
        val cancel = findViewById<Button>(R.id.cancel_button)
        val metrics = findViewById<TextView>(R.id.metrics_text)
        val answerScroll = findViewById<ScrollView>(R.id.answer_scroll)
        val answer = findViewById<TextView>(R.id.answer_text)
        val profileButton = findViewById<Button>(R.id.profile_button)
        val profile = findViewById<TextView>(R.id.profile_text)

        val adapter = ArrayAdapter<String>(this, android.R.layout.simple_spinner_item, mutableListOf())
        adapter.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item)
        spinner.adapter = adapter

        rescan.setOnClickListener { vm.scanModels() }
        load.setOnClickListener {
            vm.state.value?.models?.getOrNull(spinner.selectedItemPosition)?.let { vm.load(it) }
        }
        send.setOnClickListener { vm.send(prompt.text.toString()) }
        cancel.setOnClickListener { vm.cancel() }
        profileButton.setOnClickListener {
            profileVisible = !profileVisible
            vm.state.value?.let { render(it, profile, profileButton) }
        }

        vm.state.observe(this) { s ->
            val names = s.models.map { it.name }
            if (names != shownModels) {
                shownModels = names
                adapter.clear()
                adapter.addAll(names)
                adapter.notifyDataSetChanged()
            }
            status.text = when {
                s.status.isNotEmpty() -> s.status
                s.models.isEmpty() -> getString(
                    R.string.no_models,
                    s.modelDirs.firstOrNull()?.path ?: "/sdcard/Android/data/$packageName/files",
                )
                else -> ""
            }
            val idle = !s.loading && !s.generating
            load.isEnabled = idle && s.models.isNotEmpty()
            rescan.isEnabled = idle
            send.isEnabled = idle && s.loadedModel != null
            cancel.isEnabled = s.generating
            metrics.text = s.metrics
            if (answer.text.toString() != s.answer) {
                answer.text = s.answer
                answerScroll.post { answerScroll.fullScroll(View.FOCUS_DOWN) }
            }
            render(s, profile, profileButton)
        }

        if (savedInstanceState == null) vm.scanModels()
    }

    private fun render(s: ChatState, profile: TextView, button: Button) {
        button.isEnabled = s.profile != null
        val show = profileVisible && s.profile != null
        profile.visibility = if (show) View.VISIBLE else View.GONE
        profile.text = s.profile ?: ""
        button.setText(if (show) R.string.hide_profile else R.string.show_profile)
    }
}

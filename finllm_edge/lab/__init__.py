"""The lab part of finllm-edge: tools for people, not for apps.

The `finllm-edge` command line (run, bench, report, emulate, device), the qemu runner,
the adb device bench, the roofline estimate and host checks. The lab imports the runtime
(`finllm_edge`); the runtime never imports the lab (tests/test_layering.py checks it).
"""

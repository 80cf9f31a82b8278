"""Devices: target profiles, offline deploy bundles, deploy over SSH, emulated-ARM checks."""

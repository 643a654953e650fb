"""Accelerate config files shipped with hf_transfer: `hf-transfer accelerate-config [NAME]`."""

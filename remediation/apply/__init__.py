"""Applying an approved plan to the S1SPs: gateway, checkpoints, pacing and the per-device executor."""

"""What the fix means for the people who act on it: NO notification packs, the SRV 6.15.1 worklist, the
alert-routing impact summary, the cost and effort model and the manual S1SP change-request export.

Everything here reads finished artefacts (a plan or run directory) and writes new files; nothing here talks to an
S1SP. Per-device work is vectorised pandas over the few columns each output needs, read with Parquet filters, so a
national run's 10 million findings are never all held as Python objects.
"""

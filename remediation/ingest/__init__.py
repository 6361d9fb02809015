"""Edge adapters that read files into canonical tables (the only ingest code that touches the disk)."""

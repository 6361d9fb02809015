"""Evidence: hashes, the hash-chained journal and signed audit exports."""

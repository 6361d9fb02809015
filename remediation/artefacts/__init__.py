"""One owner per on-disk artefact: each module here owns a directory's file names, schema version, reading,
writing and checking. Everything else asks it, so a file name or a seal rule is spelled in exactly one place."""

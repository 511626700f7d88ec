"""Runs over many files: the batch engine (one path for one file or a folder), torchrun, allocator."""

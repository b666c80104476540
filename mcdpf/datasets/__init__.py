"""Data sets shipped with mcdpf (provenance in PROVENANCE.md)."""

"""Scratchpad memory (Notes-to-Self): per-episode notes and the `memory` observation group. Empty until that issue."""

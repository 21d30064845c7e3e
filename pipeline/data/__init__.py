"""Data stages: fetch sources (download or mirror, checksum-verified), prepare arrays, draw subsets."""

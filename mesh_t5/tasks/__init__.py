"""The registered task and mixture catalogue."""

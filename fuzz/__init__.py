"""Fuzzing of the pure core: shared targets (`fuzz.targets`) and the atheris runner (`fuzz.fuzz_pure`)."""

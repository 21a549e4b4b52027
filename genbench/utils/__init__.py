"""Infrastructure shared by every part of genbench and by nothing domain-specific:
errors, file I/O, names and digests, devices, distributed runs, progress reporting."""

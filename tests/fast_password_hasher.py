"""The tests' password hasher: Django's PBKDF2-SHA256 at 1,000 iterations instead of a million.

Tests create a user with a password for nearly every case, and at a million iterations each hash costs about 0.3 s
of CPU on a 2-core machine, several minutes over the suite. The hashes it writes are ordinary `pbkdf2_sha256`
hashes (the iteration count is stored in each), so a server started by a test with the production settings
checks them as it checks any other.
"""
from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1000
